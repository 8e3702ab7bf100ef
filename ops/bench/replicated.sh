#!/usr/bin/env bash
# Replicated-write benchmark: a three-node Gantry cluster against a
# three-node etcd cluster, both on loopback on this one machine, under the
# same load (K concurrent clients, round-robin over the three members; one
# write = one submitted one-task workflow for Gantry, one put of a value of
# that size for etcd). Prints for each: writes/s, p50/p99 latency, and the
# ratio Gantry/etcd; then Gantry's p99 at half its peak rate, and the time
# from SIGKILL of the Gantry leader to the first write acknowledged through
# a surviving node (FAILOVER_TRIALS times; the killed node is restarted in
# between). To show where Gantry's time goes it also runs validation-only
# submits (the API without Raft) and submits to the leader alone (no
# forwarding), and reports the servers' CPU time per write and when a new
# leader was named. Everything it starts is stopped and removed on exit.
#
# Installs Debian's etcd-server and etcd-client with apt-get if `etcd` is
# missing. Gantry speaks HTTPS (certificates from `gantry tls`); etcd plain
# HTTP on loopback. The load generator is `gantry-bench submit|etcd|failover`;
# it shares the machine with the six servers, so figures are relative.
#
# Usage: ops/bench/replicated.sh [COUNT] [CONCURRENCY] [VALUE_BYTES]
# Env: GANTRY_BENCH_PORT (first of 40 ports, default 18500),
#      FAILOVER_TRIALS (default 3), GANTRY_BENCH_KEEP=1 keeps the temp dir,
#      FAILOVER_ONLY=1 skips etcd and the load runs (failover trials only),
#      GANTRY_BIN=PATH uses that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/../.."
count=${1:-20000}
concurrency=${2:-64}
value_bytes=${3:-200}
base=${GANTRY_BENCH_PORT:-18500}
trials=${FAILOVER_TRIALS:-3}
gantry=${GANTRY_BIN:-${CARGO_TARGET_DIR:-./target}/release/gantry}
bench=${CARGO_TARGET_DIR:-./target}/release/gantry-bench

if ! command -v etcd >/dev/null; then
    echo "== installing etcd (Debian packages etcd-server, etcd-client)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
if [[ -n ${GANTRY_BIN:-} ]]; then
    cargo build --release --quiet -p gantry-bench
else
    cargo build --release --quiet -p gantry -p gantry-bench
fi

tmp=$(mktemp -d)
declare -A pids=()
cleanup() {
    local status=$?
    for name in "${!pids[@]}"; do
        kill "${pids[$name]}" 2>/dev/null || true
    done
    for name in "${!pids[@]}"; do
        wait "${pids[$name]}" 2>/dev/null || true
    done
    if [[ ${GANTRY_BENCH_KEEP:-} == 1 ]]; then
        echo "kept $tmp"
    else
        rm -rf "$tmp"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Gantry node i: API on base+i, peers on base+10+i.
# etcd member i: clients on base+20+i, peers on base+30+i.
api_port() { echo $((base + $1)); }
peer_port() { echo $((base + 10 + $1)); }
etcd_client_port() { echo $((base + 20 + $1)); }
etcd_peer_port() { echo $((base + 30 + $1)); }

wait_for() { # WHAT COMMAND...: polls COMMAND for up to 30 s
    local what=$1
    shift
    for _ in $(seq 300); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "timed out waiting for $what" >&2
    return 1
}

# --- Gantry ---
pki=$tmp/pki
$gantry tls ca create --out "$pki" >/dev/null
for i in 1 2 3; do
    $gantry tls cert create --ca "$pki" --name "node$i" --kind server --ip 127.0.0.1 --out "$pki" >/dev/null
done
export GANTRY_CA=$pki/ca.pem

start_gantry() { # I [--bootstrap | --join PEER]
    local i=$1
    shift
    GANTRY_LOG=warn $gantry server --data-dir "$tmp/gantry$i" \
        --listen "127.0.0.1:$(api_port "$i")" --peer-listen "127.0.0.1:$(peer_port "$i")" \
        --tls-ca "$pki/ca.pem" --tls-cert "$pki/node$i.pem" --tls-key "$pki/node$i-key.pem" \
        --object-store "file://$tmp/shared-objects" \
        "$@" >>"$tmp/gantry$i.log" 2>&1 &
    pids[gantry$i]=$!
    wait_for "gantry node $i" curl -fsS --cacert "$GANTRY_CA" "https://127.0.0.1:$(api_port "$i")/health"
}
members() { # I: the member list as node I sees it (JSON)
    $gantry cluster members -t json --url "https://127.0.0.1:$(api_port "$1")"
}
three_voters() { # I: node I sees three voters and a leader
    members "$1" | jq -e '([.members[] | select(.voter)] | length) == 3 and .leader_id != null'
}

echo "== starting a 3-node Gantry cluster"
start_gantry 1 --bootstrap
GANTRY_TOKEN=$(cat "$tmp/gantry1/bootstrap-admin-token")
export GANTRY_TOKEN
for i in 2 3; do
    start_gantry "$i" --join "127.0.0.1:$(peer_port 1)"
done
for i in 1 2 3; do
    wait_for "node $i to see three voters" three_voters "$i"
done
gantry_urls=$(for i in 1 2 3; do echo -n "https://127.0.0.1:$(api_port "$i"),"; done)
gantry_urls=${gantry_urls%,}

field() { # KEY FILE: the number after "KEY:" in a bench report
    awk -v key="$1:" '$1 " " $2 == key || $1 == key { for (i = 2; i <= NF; i++) if ($i ~ /^[0-9.]+$/) { print $i; exit } }' "$2"
}

failover_only=${FAILOVER_ONLY:-}
if [[ -z $failover_only ]]; then
# --- etcd ---
echo "== starting a 3-node etcd cluster ($(etcd --version | head -1))"
initial=$(for i in 1 2 3; do echo -n "e$i=http://127.0.0.1:$(etcd_peer_port "$i"),"; done)
initial=${initial%,}
for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$tmp/etcd$i" \
        --listen-client-urls "http://127.0.0.1:$(etcd_client_port "$i")" \
        --advertise-client-urls "http://127.0.0.1:$(etcd_client_port "$i")" \
        --listen-peer-urls "http://127.0.0.1:$(etcd_peer_port "$i")" \
        --initial-advertise-peer-urls "http://127.0.0.1:$(etcd_peer_port "$i")" \
        --initial-cluster "$initial" --initial-cluster-state new \
        --initial-cluster-token gantry-bench --logger zap --log-level warn \
        >>"$tmp/etcd$i.log" 2>&1 &
    pids[etcd$i]=$!
done
etcd_healthy() { curl -fsS "http://127.0.0.1:$(etcd_client_port "$1")/health" | grep -q '"health":"true"'; }
for i in 1 2 3; do
    wait_for "etcd member $i" etcd_healthy "$i"
done
etcd_urls=$(for i in 1 2 3; do echo -n "http://127.0.0.1:$(etcd_client_port "$i"),"; done)
etcd_urls=${etcd_urls%,}

# --- load ---
warmup=$((count / 20))
echo "== warm-up ($warmup writes each)"
$bench submit --url "$gantry_urls" --count "$warmup" --concurrency "$concurrency" >/dev/null
$bench etcd --endpoints "$etcd_urls" --count "$warmup" --concurrency "$concurrency" --value-bytes "$value_bytes" >/dev/null

cpu_ticks() { # NAME-PREFIX: CPU ticks (user + system) of our servers so far
    local total=0 name
    for name in "${!pids[@]}"; do
        [[ $name == "$1"* ]] || continue
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/${pids[$name]}/stat")))
    done
    echo "$total"
}
cpu_per_write() { # TICKS-BEFORE TICKS-AFTER WRITES: server CPU ms per write
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) * 1000 / hz / n }'
}

echo "== Gantry: $count submits, $concurrency clients"
before=$(cpu_ticks gantry)
$bench submit --url "$gantry_urls" --count "$count" --concurrency "$concurrency" | tee "$tmp/gantry-peak.txt"
gantry_cpu=$(cpu_per_write "$before" "$(cpu_ticks gantry)" "$count")
echo "== etcd: $count puts of $value_bytes bytes, $concurrency clients"
before=$(cpu_ticks etcd)
$bench etcd --endpoints "$etcd_urls" --count "$count" --concurrency "$concurrency" --value-bytes "$value_bytes" | tee "$tmp/etcd-peak.txt"
etcd_cpu=$(cpu_per_write "$before" "$(cpu_ticks etcd)" "$count")

# Where Gantry's time goes: the API and spec handling alone (validation
# only: no Raft), and submits to the leader alone (no forwarding).
leader_now=$(members 1 | jq -r '.leader_id')
leader_api=$(members 1 | jq -r --argjson id "$leader_now" '.members[] | select(.id == $id) | .api_url')
echo "== Gantry breakdown: validation only (no Raft), all nodes"
$bench submit --url "$gantry_urls" --count "$count" --concurrency "$concurrency" --validate-only | tee "$tmp/gantry-validate.txt"
echo "== Gantry breakdown: submits to the leader only (no forwarding)"
$bench submit --url "$leader_api" --count "$count" --concurrency "$concurrency" | tee "$tmp/gantry-leader.txt"

gantry_peak=$(field throughput "$tmp/gantry-peak.txt")
etcd_peak=$(field throughput "$tmp/etcd-peak.txt")
half=$(awk -v peak="$gantry_peak" 'BEGIN { printf "%.0f", peak / 2 }')
half_count=$((count / 2))
echo "== Gantry at half its peak: $half writes/s, $half_count submits"
$bench submit --url "$gantry_urls" --count "$half_count" --concurrency "$concurrency" --rate "$half" | tee "$tmp/gantry-half.txt"
echo "== etcd at the same rate, for comparison"
$bench etcd --endpoints "$etcd_urls" --count "$half_count" --concurrency "$concurrency" --value-bytes "$value_bytes" --rate "$half" | tee "$tmp/etcd-half.txt"

fi # failover_only

# --- failover ---
failovers=()
elections=()
for trial in $(seq "$trials"); do
    leader=$(members 1 | jq -r '.leader_id')
    leader_url=$(members 1 | jq -r --argjson id "$leader" '.members[] | select(.id == $id) | .api_url')
    victim=0
    for i in 1 2 3; do
        [[ $leader_url == "https://127.0.0.1:$(api_port "$i")" ]] && victim=$i
    done
    [[ $victim != 0 ]] || { echo "leader $leader ($leader_url) is not one of ours" >&2; exit 1; }
    survivors=$(for i in 1 2 3; do [[ $i == "$victim" ]] || echo -n "https://127.0.0.1:$(api_port "$i"),"; done)
    echo "== failover $trial/$trials: SIGKILL of the leader, node $victim"
    since=$(date +%s%3N)
    kill -9 "${pids[gantry$victim]}"
    wait "${pids[gantry$victim]}" 2>/dev/null || true
    unset "pids[gantry$victim]"
    $bench failover --url "${survivors%,}" --since-ms "$since" --killed-id "$leader" | tee "$tmp/failover$trial.txt"
    elections+=("$(field 'new leader' "$tmp/failover$trial.txt")")
    failovers+=("$(field failover "$tmp/failover$trial.txt")")
    if ((trial < trials)); then
        start_gantry "$victim"
        for i in 1 2 3; do
            wait_for "node $i to see three voters" three_voters "$i"
        done
        # Let the restarted node catch up and the cluster settle.
        sleep 3
    fi
done

# --- summary ---
row() { # NAME FILE
    printf '%-8s %10s %10s %10s\n' "$1" "$(field throughput "$2")" "$(field 'latency p50' "$2")" "$(field 'latency p99' "$2")"
}
if [[ -n $failover_only ]]; then
    echo "failover, SIGKILL of the leader to the first acknowledged write: ${failovers[*]} ms (goal <= 2000); to a new leader being named: ${elections[*]} ms"
    exit 0
fi
echo
echo "== summary ($count writes, $concurrency clients, $value_bytes-byte etcd values, one machine)"
printf '%-8s %10s %10s %10s\n' "" "writes/s" "p50 ms" "p99 ms"
row gantry "$tmp/gantry-peak.txt"
row etcd "$tmp/etcd-peak.txt"
row "validate" "$tmp/gantry-validate.txt"
row "leader" "$tmp/gantry-leader.txt"
echo "server CPU per write (three servers together): Gantry $gantry_cpu ms, etcd $etcd_cpu ms; machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "throughput ratio Gantry/etcd: $(awk -v g="$gantry_peak" -v e="$etcd_peak" 'BEGIN { printf "%.2f", g / e }') (goal >= 1.5)"
echo "Gantry p99 at half peak ($half/s): $(field 'latency p99' "$tmp/gantry-half.txt") ms (goal <= 10); etcd at that rate: $(field 'latency p99' "$tmp/etcd-half.txt") ms"
echo "failover, SIGKILL of the leader to the first acknowledged write: ${failovers[*]} ms (goal <= 2000); to a new leader being named: ${elections[*]} ms"
