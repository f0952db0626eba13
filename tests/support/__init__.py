"""Support code shared by the tests, the demo and the benchmarks."""
