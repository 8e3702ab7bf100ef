#!/usr/bin/env bash
# Log-ingest benchmark: Gantry vs Redis in the same run.
#
# Gantry: one `gantry server` node (the single-node path, fsync on) and
# `gantry-bench operator --log-lines N`, which acts as backend `local`'s
# operator over the real stream (mutual TLS, HTTP/2) and sends N lines of
# synthetic training log for one task. A line counts once it is durable:
# written in a zstd chunk to the object store (a directory, fsynced) and its
# chunk indexed through Raft, which is when the operator is acknowledged.
#
# Redis: Debian's `redis-server` (7.x, default persistence settings, data
# in a temporary directory) fed the same lines as `XADD` commands shaped like
# OSMO's log records through `redis-cli --pipe`, the fastest way in. Redis
# acknowledges from memory: its lines are not durable when it answers.
#
# Prints lines/s for each, the ratio (goal >= 1) and Gantry's compression
# ratio, raw bytes / stored bytes (goal >= 5:1). Everything it starts is
# stopped and removed on exit.
#
# Usage: ops/bench/logs.sh [LINES]
# Env: GANTRY_BENCH_PORT (first of 10 ports, default 18700), GANTRY_BENCH_KEEP=1,
#      GANTRY_BIN=PATH uses that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/../.."
lines=${1:-1000000}
base=${GANTRY_BENCH_PORT:-18700}
for tool in redis-server redis-cli jq curl zstd; do
    command -v "$tool" >/dev/null || {
        echo "needs $tool (Debian: apt-get install redis-server jq curl zstd)" >&2
        exit 1
    }
done
# shellcheck source=ops/bench/lib.sh
source ops/bench/lib.sh

pki=$tmp/pki
$gantry tls ca create --out "$pki" >/dev/null
$gantry tls cert create --ca "$pki" --name node1 --kind server --ip 127.0.0.1 --out "$pki" >/dev/null
$gantry tls cert create --ca "$pki" --name bench-operator --kind operator --out "$pki" >/dev/null
export GANTRY_CA=$pki/ca.pem

echo "== starting a one-node Gantry server"
url="https://127.0.0.1:$((base + 1))"
GANTRY_LOG=warn $gantry server --data-dir "$tmp/gantry" --bootstrap \
    --listen "127.0.0.1:$((base + 1))" --peer-listen "127.0.0.1:$((base + 2))" \
    --tls-ca "$pki/ca.pem" --tls-cert "$pki/node1.pem" --tls-key "$pki/node1-key.pem" \
    >>"$tmp/gantry.log" 2>&1 &
pids+=($!)
wait_for "gantry" curl -fsS --cacert "$GANTRY_CA" "$url/health"
wait_for "the bootstrap token" test -s "$tmp/gantry/bootstrap-admin-token"
GANTRY_TOKEN=$(cat "$tmp/gantry/bootstrap-admin-token")
export GANTRY_TOKEN

echo "== Gantry: $lines lines of one task, durable before acknowledged"
$bench operator --url "$url" --ca "$pki/ca.pem" \
    --cert "$pki/bench-operator.pem" --key "$pki/bench-operator-key.pem" \
    --workflows 1 --tasks 1 --log-lines "$lines" --redis-resp "$tmp/xadd.resp" |
    tee "$tmp/gantry-bench.out"
gantry_rate=$(sed -n 's/^log ingest: .* = \([0-9]*\) lines\/s$/\1/p' "$tmp/gantry-bench.out")
raw_bytes=$(find "$tmp/gantry/objects" -name '*.jsonl.zst' -print0 |
    xargs -0 cat | zstd -dc 2>/dev/null | wc -c || true)
stored_bytes=$(find "$tmp/gantry/objects" -name '*.jsonl.zst' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
chunks=$(find "$tmp/gantry/objects" -name '*.jsonl.zst' | wc -l)
text_bytes=$(sed -n 's/^log ingest: [0-9]* lines (\([0-9.]*\) MiB).*/\1/p' "$tmp/gantry-bench.out")

echo "== Redis: the same $lines lines as XADD through redis-cli --pipe"
redis_port=$((base + 5))
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$tmp" --daemonize no \
    --save "3600 1 300 100 60 10000" --appendonly no >"$tmp/redis.log" 2>&1 &
pids+=($!)
wait_for "redis" redis-cli -p "$redis_port" ping
started=$(date +%s.%N)
redis-cli -p "$redis_port" --pipe <"$tmp/xadd.resp" >"$tmp/redis-pipe.out"
ended=$(date +%s.%N)
stored=$(redis-cli -p "$redis_port" --scan --pattern '*-logs' |
    xargs -n1 redis-cli -p "$redis_port" xlen | awk '{s += $1} END {print s + 0}')
if [[ $stored != "$lines" ]]; then
    echo "redis holds $stored entries, expected $lines" >&2
    exit 1
fi
redis_rate=$(awk -v n="$lines" -v a="$started" -v b="$ended" 'BEGIN {printf "%.0f", n / (b - a)}')
redis_mem=$(redis-cli -p "$redis_port" info memory | sed -n 's/^used_memory_human:\(.*\)\r$/\1/p')

echo
echo "== results ($lines lines, ${text_bytes} MiB of text)"
printf '%-44s %12s lines/s\n' "Gantry (zstd chunks, fsynced, Raft index)" "$gantry_rate"
printf '%-44s %12s lines/s   (memory: %s)\n' "Redis XADD (in memory, not yet durable)" "$redis_rate" "$redis_mem"
awk -v g="$gantry_rate" -v r="$redis_rate" 'BEGIN {printf "ratio Gantry / Redis: %.2f (goal >= 1)\n", g / r}'
awk -v text="$text_bytes" -v raw="$raw_bytes" -v st="$stored_bytes" -v c="$chunks" 'BEGIN {
    printf "compression: %d bytes of text (%d as stored JSON lines) -> %d bytes in %d chunks = %.1f:1 of text, %.1f:1 of records (goal >= 5:1)\n",
        text * 1048576, raw, st, c, text * 1048576 / st, raw / st
}'
