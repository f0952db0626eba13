#!/usr/bin/env bash
# Runs the Molecule scenarios in lanes: each argument is one lane, a space-separated list
# of entries run one after another; the lanes run side by side. An entry is a scenario,
# optionally with the Debian release its hosts run (`default@13`: CONDAPORT_DEBIAN=13, which
# the scenarios' molecule.yml put into their image names; a bare `default` runs on
# CONDAPORT_DEBIAN, else 12). A converge spends most of its time waiting on round trips, so
# two lanes on two cores take little more than the longer lane. Each entry's output goes to
# artifacts/molecule-logs/<entry>.log; a failed entry's log is printed whole, and a table
# of times ends the run.
#   molecule/resources/run-scenarios.sh "default@12 edges@12" "publishing@12 default@13"
set -uo pipefail
cd "$(dirname "$0")/../.."
logs=artifacts/molecule-logs
mkdir -p "${logs}"
rm -f "${logs}"/*.log "${logs}"/*.result

for lane in "$@"; do
  for entry in ${lane}; do
    if [[ ! ${entry} =~ ^[a-z0-9_-]+(@[0-9]+)?$ ]]; then
      echo "not a scenario or scenario@release: '${entry}'" >&2
      exit 2
    fi
  done
done

run_lane() {
  local entry scenario release started status
  for entry in $1; do
    scenario="${entry%@*}"
    release="${CONDAPORT_DEBIAN:-12}"
    [[ ${entry} != *@* ]] || release="${entry#*@}"
    # A scenario's container names and published ports are fixed, so one scenario never
    # runs on two releases at once: the lanes are arranged so that it does not happen,
    # and this lock makes a lane wait (untimed) should one run long.
    exec {lock}>"${logs}/${scenario}.lock"
    flock "${lock}"
    started=$(date +%s)
    echo "[$(date +%T)] ${entry}: started (Debian ${release})"
    # The lock stays with this lane: nothing molecule starts (podman keeps helpers) gets it.
    if CONDAPORT_DEBIAN="${release}" molecule test --scenario-name "${scenario}" \
      >"${logs}/${entry}.log" 2>&1 {lock}>&-; then
      status=passed
    else
      status=FAILED
    fi
    exec {lock}>&-
    echo "${entry} ${status} $(($(date +%s) - started))" >"${logs}/${entry}.result"
    echo "[$(date +%T)] ${entry}: ${status}"
    # A failed scenario leaves its lane: what comes after it would be judged on a host
    # nobody looked at.
    [[ ${status} == passed ]] || return 1
  done
}

pids=()
for lane in "$@"; do
  run_lane "${lane}" &
  pids+=("$!")
done
failed=0
for pid in "${pids[@]}"; do
  wait "${pid}" || failed=1
done

for lane in "$@"; do
  for entry in ${lane}; do
    [[ -f "${logs}/${entry}.result" ]] || continue
    read -r _ status _ <"${logs}/${entry}.result"
    if [[ ${status} == FAILED ]]; then
      echo "===== ${entry}: full log"
      cat "${logs}/${entry}.log"
    fi
  done
done

echo "===== Molecule scenarios (lanes run side by side)"
lane_number=0
printf '%-5s %-16s %-8s %s\n' lane scenario result minutes
for lane in "$@"; do
  lane_number=$((lane_number + 1))
  for entry in ${lane}; do
    if [[ -f "${logs}/${entry}.result" ]]; then
      read -r _ status seconds <"${logs}/${entry}.result"
      printf '%-5s %-16s %-8s %d:%02d\n' "${lane_number}" "${entry}" "${status}" $((seconds / 60)) $((seconds % 60))
    else
      printf '%-5s %-16s %-8s %s\n' "${lane_number}" "${entry}" "not run" "-"
    fi
  done
done
exit "${failed}"
