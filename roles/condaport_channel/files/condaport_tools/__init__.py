"""condaport's host-side tools: the channel indexer and the package publisher.

They run in the venv the condaport_channel role installs (py-rattler is their one
dependency) and print one JSON object on stdout, which the playbooks read.
"""
