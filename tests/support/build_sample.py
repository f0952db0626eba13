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


def build_sample(dest: Path, version: str | None = None) -> list[Path]:
    """Build into a scratch folder and copy only the packages to `dest`.

    rattler-build also writes repodata and logs into its output folder; a CI workspace
    holds packages only. `version` replaces the recipe's (the demo's HTTPS upload is a
    second release of the sample).
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        recipe = RECIPE
        if version is not None:
            text = RECIPE.read_text()
            if text.count("version: 1.0.0\n") != 1:
                raise SystemExit(f"cannot find the version line in {RECIPE}")
            recipe = Path(scratch) / "recipe" / "recipe.yaml"
            recipe.parent.mkdir()
            recipe.write_text(text.replace("version: 1.0.0\n", f"version: {version}\n"))
        output = Path(scratch) / "output"
        rattler_build.build_recipes([recipe], test="skip", output_dir=output)
        built = sorted(output.glob("*/*.conda"))
        if not built:
            raise SystemExit(f"rattler-build produced no package from {RECIPE}")
        copies = []
        for package in built:
            target = dest / package.name
            shutil.copy2(package, target)
            copies.append(target)
    return copies


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(f"usage: {argv[0]} DEST_DIR [VERSION]", file=sys.stderr)
        return 2
    for path in build_sample(Path(argv[1]), argv[2] if len(argv) == 3 else None):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
