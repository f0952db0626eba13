#!/usr/bin/env bash
# Builds the Debian images the Molecule scenarios and the demo run on, one pair per
# supported release (12 bookworm, 13 trixie): a host as a provider hands it over
# (systemd, sudo, python3). Both releases are made by the same recipe.
# No container registry is reachable from CI, so the base image is made with
# debootstrap and a systemd layer is built on top. Existing images are reused.
#   molecule/resources/build-images.sh          # every supported release
#   molecule/resources/build-images.sh 13       # only Debian 13
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=molecule/resources/podman-env.sh
source "${here}/podman-env.sh"

mirror="${CONDAPORT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# The debootstrap suite of each supported Debian release (the images' tag is the number).
declare -A codenames=([12]=bookworm [13]=trixie)

build_release() {
  local release="$1" codename="${codenames[$1]:-}"
  local base_image="localhost/condaport-debian:${release}"
  local systemd_image="localhost/condaport-debian-systemd:${release}"
  if [[ -z ${codename} ]]; then
    echo "unsupported Debian release '${release}' (supported: ${!codenames[*]})" >&2
    return 1
  fi

  if ! podman image exists "${base_image}"; then
    local rootfs
    rootfs="$(mktemp -d)"
    # shellcheck disable=SC2064 # the path is fixed now, on purpose
    trap "rm -rf '${rootfs}'" EXIT
    debootstrap --variant=minbase --include=python3,python3-apt,ca-certificates \
      "${codename}" "${rootfs}" "${mirror}"
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
    rm -rf "${rootfs}"
    trap - EXIT
  fi

  if ! podman image exists "${systemd_image}"; then
    podman build --tag "${systemd_image}" --build-arg "BASE=${base_image}" \
      --file "${here}/Containerfile.systemd" "${here}"
  fi
}

releases=("$@")
[[ ${#releases[@]} -gt 0 ]] || releases=(12 13)
for release in "${releases[@]}"; do
  build_release "${release}"
done
