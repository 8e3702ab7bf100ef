#!/usr/bin/env bash
# Operator status-ingest benchmark: a three-node Gantry cluster on loopback
# and `gantry-bench operator`, which acts as backend `local`'s operator over
# the real stream (mutual TLS, HTTP/2, acknowledgements after commit). It
# submits WORKFLOWS workflows of TASKS tasks, answers every job with JobDone
# and four status messages per task, and prints the messages acknowledged
# per second at the one server the stream is on (the leader). Everything it
# starts is stopped and removed on exit.
#
# Usage: ops/bench/operator.sh [WORKFLOWS] [TASKS]
# Env: GANTRY_BENCH_PORT (first of 20 ports, default 18600), GANTRY_BENCH_KEEP=1,
#      GANTRY_BIN=PATH uses that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/../.."
workflows=${1:-400}
tasks=${2:-25}
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
urls=$(for i in 1 2 3; do echo -n "https://127.0.0.1:$((base + i)),"; done)

echo "== operator ingest: $workflows workflows x $tasks tasks"
$bench operator --url "${urls%,}" --ca "$pki/ca.pem" \
    --cert "$pki/bench-operator.pem" --key "$pki/bench-operator-key.pem" \
    --workflows "$workflows" --tasks "$tasks"
