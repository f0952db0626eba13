"""Build the sample package (tests/packages/hello-condaport) into a folder.

Used by the demo and the Molecule scenarios, which then publish the folder exactly as a CI
job would. Output files keep rattler-build's 0600 mode on purpose: publishing must fix it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import rattler_build

RECIPE = Path(__file__).resolve().parents[1] / "packages" / "hello-condaport" / "recipe.yaml"


def build_sample(dest: Path) -> list[Path]:
    """Build into a scratch folder and copy only the packages to `dest`.

    rattler-build also writes repodata and logs into its output folder; a CI workspace
    holds packages only.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        rattler_build.build_recipes([RECIPE], test="skip", output_dir=scratch)
        built = sorted(Path(scratch).glob("*/*.conda"))
        if not built:
            raise SystemExit(f"rattler-build produced no package from {RECIPE}")
        copies = []
        for package in built:
            target = dest / package.name
            shutil.copy2(package, target)
            copies.append(target)
    return copies


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} DEST_DIR", file=sys.stderr)
        return 2
    for path in build_sample(Path(argv[1])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
