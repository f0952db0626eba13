# Sourced by the Makefile targets and .ci/run: points podman at this kit's settings.
# shellcheck shell=bash
_condaport_resources="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINERS_CONF="${_condaport_resources}/containers.conf"
unset _condaport_resources
