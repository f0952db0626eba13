#!/usr/bin/env bash
# Builds the Debian 12 images the Molecule scenarios and the demo run on: a host as a
# provider hands it over (systemd, sudo, python3).
# No container registry is reachable from CI, so the base image is made with
# debootstrap and a systemd layer is built on top. Existing images are reused.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=molecule/resources/podman-env.sh
source "${here}/podman-env.sh"

base_image="localhost/condaport-debian:12"
systemd_image="localhost/condaport-debian-systemd:12"
mirror="${CONDAPORT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if ! podman image exists "${base_image}"; then
  rootfs="$(mktemp -d)"
  trap 'rm -rf "${rootfs}"' EXIT
  debootstrap --variant=minbase --include=python3,python3-apt,ca-certificates \
    bookworm "${rootfs}" "${mirror}"
  rm -rf "${rootfs}"/var/cache/apt/archives/*.deb "${rootfs}"/var/lib/apt/lists/*
  # An empty list directory with a fresh mtime makes apt's cache_valid_time
  # believe the cache is current, and then no package is found.
  touch -d @0 "${rootfs}/var/lib/apt/lists"
  # Hosts behind a TLS-intercepting egress proxy: trust what this machine trusts,
  # so that pip inside the container reaches PyPI as it does here.
  if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    cp /etc/ssl/certs/ca-certificates.crt "${rootfs}/usr/local/share/ca-certificates/build-host-bundle.crt"
    chroot "${rootfs}" update-ca-certificates >/dev/null 2>&1 || true
  fi
  tar -C "${rootfs}" -c . | podman import --change 'CMD=["/bin/bash"]' - "${base_image}"
fi

if ! podman image exists "${systemd_image}"; then
  podman build --tag "${systemd_image}" --build-arg "BASE=${base_image}" \
    --file "${here}/Containerfile.systemd" "${here}"
fi
