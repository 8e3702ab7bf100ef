#!/usr/bin/env bash
# Log-flood benchmark: the load of tests/flood.rs with figures from a
# release build. Starts `gantry dev --auth` (one node, backend local, tasks
# in a bwrap sandbox) on a fresh data directory and runs `gantry-bench
# flood`: FLOODERS workflows whose task prints a training-log line without
# end (`yes`), FOLLOWERS followers per flooding workflow reading its logs
# each on its own connection, and SUBMITTERS clients submitting a quick
# workflow and querying it every 100 ms, for SECONDS.
#
# Prints the followers and the MiB they read, the submits, submit and query
# latency (p50/p90/p99/max), the server's peak RSS (VmHWM) and highest
# sampled RSS, and a verdict: PASS when query p99 < 100 ms and peak RSS
# < 1024 MiB. Everything it starts is stopped and removed on exit.
#
# Usage: ops/bench/flood.sh [SECONDS [FOLLOWERS [FLOODERS [SUBMITTERS]]]]
# Env: GANTRY_BENCH_PORT (default 18750), GANTRY_BENCH_KEEP=1 (keeps the
#      data directory and the server log), GANTRY_BIN / GANTRY_BENCH_BIN,
#      FLOOD_ARGS (more `gantry-bench flood` flags, e.g. --stale).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-30}
followers=${2:-10}
flooders=${3:-20}
submitters=${4:-20}
port=${GANTRY_BENCH_PORT:-18750}
command -v curl >/dev/null || {
    echo "needs curl" >&2
    exit 1
}
# shellcheck source=ops/bench/lib.sh
source ops/bench/lib.sh

echo "== starting gantry dev --auth (release)"
url="http://127.0.0.1:$port"
GANTRY_LOG=warn $gantry dev --listen "127.0.0.1:$port" --auth --data-dir "$tmp/dev" \
    >>"$tmp/gantry.log" 2>&1 &
server=$!
pids+=("$server")
wait_for "gantry dev" curl -fsS "$url/health"
wait_for "the bootstrap token" test -s "$tmp/dev/bootstrap-admin-token"
GANTRY_TOKEN=$(cat "$tmp/dev/bootstrap-admin-token")
export GANTRY_TOKEN

echo "== $flooders flooding workflows, $followers followers each, $submitters submitters, ${seconds} s"
# shellcheck disable=SC2086 # FLOOD_ARGS is split into flags on purpose
$bench flood --url "$url" --server-pid "$server" --seconds "$seconds" \
    --followers-per-workflow "$followers" --flooders "$flooders" --submitters "$submitters" \
    ${FLOOD_ARGS:-}
