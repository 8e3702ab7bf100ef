#!/usr/bin/env bash
# Submit benchmark on one node with fsync on: starts a release `gantry server`
# on a fresh data directory (pool `default`, no operator draining it, so only
# the control plane is measured), runs `gantry-bench submit`, stops the server.
# Usage: ops/bench/submit.sh [COUNT] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/../.."
count=${1:-20000}
concurrency=${2:-64}
cargo build --release --quiet -p gantry -p gantry-bench
data=$(mktemp -d)
port=${GANTRY_BENCH_PORT:-18490}
GANTRY_LOG=warn ./target/release/gantry server --bootstrap --data-dir "$data" --listen "127.0.0.1:$port" --peer-listen "127.0.0.1:$((port + 1))" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
done
export GANTRY_TOKEN
GANTRY_TOKEN=$(cat "$data/bootstrap-admin-token")
./target/release/gantry-bench submit --url "http://127.0.0.1:$port" --count "$count" --concurrency "$concurrency"
