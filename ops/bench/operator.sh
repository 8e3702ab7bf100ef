#!/usr/bin/env bash
# Operator status-ingest benchmark: a three-node Gantry cluster on loopback
# and `gantry-bench operator`, which acts as backend `local`'s operator over
# the real stream (mutual TLS, HTTP/2, acknowledgements after commit). It
# submits WORKFLOWS workflows of GROUPS groups of TASKS tasks, answers every
# job with JobDone and four status messages per task, and prints the messages
# acknowledged per second at the one server the stream is on (the leader)
# and the time from submit to the last acknowledgement.
#
# `shapes` runs, for each SIZE (default 1000 and 10000), one workflow of one
# group of SIZE tasks and one workflow of SIZE groups of one task, on the
# same cluster, and ends with a one-line verdict against GOAL_SECONDS (10):
# every shape must complete within it. A shape that does not finish within
# LIMIT_SECONDS (600) counts as failed. Everything it starts is stopped and
# removed on exit.
#
# Usage: ops/bench/operator.sh [WORKFLOWS [TASKS [GROUPS]]]
#        ops/bench/operator.sh shapes [SIZE...]
# Env: GANTRY_BENCH_PORT (first of 20 ports, default 18600), GANTRY_BENCH_KEEP=1,
#      GANTRY_BIN=PATH and GANTRY_BENCH_BIN=PATH use those binaries
#      instead of building them, GOAL_SECONDS, LIMIT_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes=()
if [[ ${1:-} == shapes ]]; then
    shift
    sizes=("${@:-1000}")
    [[ $# -gt 0 ]] || sizes=(1000 10000)
else
    workflows=${1:-400}
    tasks=${2:-25}
    groups=${3:-1}
fi
# The WORKFLOW config lets workflows have as many tasks as the largest run has.
max_tasks=100
for size in "${sizes[@]}" $((${tasks:-0} * ${groups:-0})); do
    ((size <= max_tasks)) || max_tasks=$size
done
goal=${GOAL_SECONDS:-10}
limit=${LIMIT_SECONDS:-600}
base=${GANTRY_BENCH_PORT:-18600}
# shellcheck source=ops/bench/lib.sh
source ops/bench/lib.sh

pki=$tmp/pki
$gantry tls ca create --out "$pki" >/dev/null
for i in 1 2 3; do
    $gantry tls cert create --ca "$pki" --name "node$i" --kind server --ip 127.0.0.1 --out "$pki" >/dev/null
done
$gantry tls cert create --ca "$pki" --name bench-operator --kind operator --out "$pki" >/dev/null
export GANTRY_CA=$pki/ca.pem

start_gantry() { # I [--bootstrap | --join PEER]
    local i=$1
    shift
    GANTRY_LOG=warn $gantry server --data-dir "$tmp/gantry$i" \
        --listen "127.0.0.1:$((base + i))" --peer-listen "127.0.0.1:$((base + 10 + i))" \
        --tls-ca "$pki/ca.pem" --tls-cert "$pki/node$i.pem" --tls-key "$pki/node$i-key.pem" \
        --object-store "file://$tmp/shared-objects" \
        "$@" >>"$tmp/gantry$i.log" 2>&1 &
    pids+=($!)
    wait_for "gantry node $i" curl -fsS --cacert "$GANTRY_CA" "https://127.0.0.1:$((base + i))/health"
}
three_voters() {
    $gantry cluster members -t json --url "https://127.0.0.1:$((base + 1))" |
        jq -e '([.members[] | select(.voter)] | length) == 3 and .leader_id != null'
}

echo "== starting a 3-node Gantry cluster"
start_gantry 1 --bootstrap
GANTRY_TOKEN=$(cat "$tmp/gantry1/bootstrap-admin-token")
export GANTRY_TOKEN
for i in 2 3; do
    start_gantry "$i" --join "127.0.0.1:$((base + 11))"
done
wait_for "three voters" three_voters
echo "{\"max_num_tasks\": $max_tasks}" >"$tmp/workflow-config.json"
$gantry config update WORKFLOW --file "$tmp/workflow-config.json" \
    --url "https://127.0.0.1:$((base + 1))" >/dev/null
urls=$(for i in 1 2 3; do echo -n "https://127.0.0.1:$((base + i)),"; done)

run_bench() { # WORKFLOWS GROUPS TASKS
    $bench operator --url "${urls%,}" --ca "$pki/ca.pem" \
        --cert "$pki/bench-operator.pem" --key "$pki/bench-operator-key.pem" \
        --workflows "$1" --groups "$2" --tasks "$3" --limit-seconds "$limit"
}

if [[ ${#sizes[@]} -eq 0 ]]; then
    echo "== operator ingest: $workflows workflows x $groups groups x $tasks tasks"
    run_bench "$workflows" "$groups" "$tasks"
    exit 0
fi

results=()
verdict=PASS
for size in "${sizes[@]}"; do
    for shape in "1 $size" "$size 1"; do
        read -r groups tasks <<<"$shape"
        label="$groups group(s) x $tasks task(s)"
        echo "== shape: one workflow of $label"
        if run_bench 1 "$groups" "$tasks" | tee "$tmp/run.out"; then
            seconds=$(sed -n 's/^completion_seconds=//p' "$tmp/run.out")
            completed=$(grep -c '^workflows COMPLETED: 1/1$' "$tmp/run.out" || true)
        else
            seconds="" completed=0
        fi
        if [[ -z $seconds || $completed != 1 ]]; then
            results+=("$label: did not complete within ${limit} s")
            verdict=FAIL
        else
            results+=("$label: ${seconds} s")
            awk -v s="$seconds" -v g="$goal" 'BEGIN { exit !(s <= g) }' || verdict=FAIL
        fi
    done
done
echo "== completion times (three servers, submit acknowledged to last status acknowledged)"
printf '   %s\n' "${results[@]}"
echo "verdict: $verdict (goal: every shape completes in <= ${goal} s)"
