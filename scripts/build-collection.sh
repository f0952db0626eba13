#!/usr/bin/env bash
# Builds the condaport.channels collection artifact into artifacts/collection/: the roles,
# playbooks and module of this checkout, with the host package's wheel built into
# roles/condaport_tools/files/wheels/ (reproducibly: SOURCE_DATE_EPOCH, as the role does in
# a checkout, so the artifact's wheel and a checkout's have the same sha256).
# Works on a copy: the checkout itself never holds a built wheel, which would shadow its
# source.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
out="${1:-artifacts/collection}"
staging="$(mktemp -d)"
trap 'rm -rf "${staging}"' EXIT

# The tracked files and any new ones not ignored: what a commit of this tree would hold.
git ls-files -z --cached --others --exclude-standard \
  | tar --null --no-recursion --ignore-failed-read -c -f - --files-from=- \
  | tar -x -f - -C "${staging}"
(cd host && SOURCE_DATE_EPOCH=315532800 "${python}" -m hatchling build --target wheel \
  --directory "${staging}/roles/condaport_tools/files/wheels" >/dev/null)
mkdir -p "${out}"
ansible-galaxy collection build "${staging}" --output-path "${out}" --force
