#!/usr/bin/env bash
# Runs the Molecule scenarios in lanes: each argument is one lane, a space-separated list
# of scenarios run one after another; the lanes run side by side. A converge spends most
# of its time waiting on round trips, so two lanes on two cores take little more than the
# longer lane. Each scenario's output goes to artifacts/molecule-logs/<scenario>.log; a
# failed scenario's log is printed whole, and a table of times ends the run.
#   molecule/resources/run-scenarios.sh "default edges" "publishing uploading clients"
set -uo pipefail
cd "$(dirname "$0")/../.."
logs=artifacts/molecule-logs
mkdir -p "${logs}"
rm -f "${logs}"/*.log "${logs}"/*.result

run_lane() {
  local scenario started status
  for scenario in $1; do
    started=$(date +%s)
    echo "[$(date +%T)] ${scenario}: started"
    if molecule test --scenario-name "${scenario}" >"${logs}/${scenario}.log" 2>&1; then
      status=passed
    else
      status=FAILED
    fi
    echo "${scenario} ${status} $(($(date +%s) - started))" >"${logs}/${scenario}.result"
    echo "[$(date +%T)] ${scenario}: ${status}"
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
  for scenario in ${lane}; do
    [[ -f "${logs}/${scenario}.result" ]] || continue
    read -r _ status _ <"${logs}/${scenario}.result"
    if [[ ${status} == FAILED ]]; then
      echo "===== ${scenario}: full log"
      cat "${logs}/${scenario}.log"
    fi
  done
done

echo "===== Molecule scenarios (lanes run side by side)"
printf '%-12s %-8s %s\n' scenario result minutes
for lane in "$@"; do
  for scenario in ${lane}; do
    if [[ -f "${logs}/${scenario}.result" ]]; then
      read -r _ status seconds <"${logs}/${scenario}.result"
      printf '%-12s %-8s %d:%02d\n' "${scenario}" "${status}" $((seconds / 60)) $((seconds % 60))
    else
      printf '%-12s %-8s %s\n' "${scenario}" "not run" "-"
    fi
  done
done
exit "${failed}"
