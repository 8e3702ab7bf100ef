#!/usr/bin/env bash
# Port-forward benchmark: bulk throughput through the router's whole path
# (client → `gantry workflow port-forward` → server over TLS → the remote
# operator's HTTP/2 session request over mutual TLS → the task's port in
# its network namespace), against a direct loopback TCP copy between the
# same two programs in the same run; then CONNECTIONS connections at once,
# each fetching and checking its own bytes.
#
# The task runs a small python3 server: a client sends a byte count and a
# newline, the server sends that many bytes and closes. The same server on
# the host's loopback is the direct copy. Prints MiB/s of both, their
# ratio (the issue's goal: at least 50%), and the concurrent run's errors
# (goal: 0). Everything it starts is stopped and removed on exit.
#
# Usage: ops/bench/portforward.sh [MIB [CONNECTIONS [MIB_EACH]]]
#        (defaults: 2048 MiB in one connection; 100 connections of 16 MiB)
# Env: GANTRY_BENCH_PORT (first of 4 ports, default 18850), GANTRY_BIN=PATH
#      uses that gantry binary instead of building one, GANTRY_BENCH_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
mib=${1:-2048}
connections=${2:-100}
mib_each=${3:-16}
base=${GANTRY_BENCH_PORT:-18850}
command -v python3 >/dev/null && command -v curl >/dev/null || {
    echo "needs python3 and curl" >&2
    exit 1
}
# This benchmark needs no load generator of its own.
GANTRY_BENCH_BIN=${GANTRY_BENCH_BIN:-/bin/true}
# shellcheck source=ops/bench/lib.sh
source ops/bench/lib.sh

api_port=$base
direct_port=$((base + 1))
local_port=$((base + 2))
task_port=7000

cat >"$tmp/source.py" <<'EOF'
import socket, socketserver, sys
CHUNK = memoryview(bytes(1 << 20))
class Source(socketserver.StreamRequestHandler):
    def handle(self):
        left = int(self.rfile.readline())
        while left > 0:
            sent = self.request.send(CHUNK[: min(left, len(CHUNK))])
            left -= sent
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
socketserver.ThreadingTCPServer.request_queue_size = 256
socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1])), Source).serve_forever()
EOF
cat >"$tmp/fetch.py" <<'EOF'
import socket, sys, threading, time
port, connections, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) << 20
errors, done = [], []
def fetch():
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
            s.sendall(b"%d\n" % size)
            buffer, got = bytearray(1 << 20), 0
            while True:
                n = s.recv_into(buffer)
                if n == 0:
                    break
                got += n
            if got != size:
                errors.append("got %d of %d bytes" % (got, size))
            else:
                done.append(got)
    except OSError as error:
        errors.append(str(error))
start = time.monotonic()
threads = [threading.Thread(target=fetch) for _ in range(connections)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
elapsed = time.monotonic() - start
total = sum(done) / (1 << 20)
print("%d %.1f %.3f %d" % (len(done), total / elapsed, elapsed, len(errors)))
for error in errors[:5]:
    print("  error: " + error, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF

cat >"$tmp/idle.py" <<'EOF'
import socket, sys, time
port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
time.sleep(seconds)
EOF

start_server_and_operator "$api_port" "$((base + 3))"

{
    echo "workflow:"
    echo "  name: source"
    echo "  tasks:"
    echo "  - name: serve"
    echo "    image: ubuntu"
    echo "    command: [python3, /app/source.py, \"$task_port\"]"
    echo "    files:"
    echo "    - path: /app/source.py"
    echo "      contents: |"
    sed 's/^/        /' "$tmp/source.py"
} >"$tmp/workflow.yaml"
id=$($gantry workflow submit "$tmp/workflow.yaml" -t json | python3 -c 'import json,sys; print(json.load(sys.stdin)["name"])')
running() { $gantry workflow query "$id" -t json | grep -q '"status": *"RUNNING"'; }
wait_for "the task to run" running

$gantry workflow port-forward "$id" serve --port "$local_port:$task_port" >>"$tmp/forward.log" 2>&1 &
pids+=("$!")
wait_for "the forward to serve" python3 "$tmp/fetch.py" "$local_port" 1 1
python3 "$tmp/source.py" "$direct_port" &
pids+=("$!")
wait_for "the direct server" python3 "$tmp/fetch.py" "$direct_port" 1 1

echo "== bulk: $mib MiB in one connection"
read -r _ direct _ _ < <(python3 "$tmp/fetch.py" "$direct_port" 1 "$mib" || true)
read -r _ forwarded _ forward_errors < <(python3 "$tmp/fetch.py" "$local_port" 1 "$mib" || true)
ratio=$(python3 -c "print('%.0f' % (100 * $forwarded / $direct))")
printf 'direct loopback copy:     %10.1f MiB/s\n' "$direct"
printf 'through the port-forward: %10.1f MiB/s (%s%% of direct, %s errors)\n' "$forwarded" "$ratio" "$forward_errors"

echo "== $connections connections at once, $mib_each MiB each"
read -r ok rate elapsed errors < <(python3 "$tmp/fetch.py" "$local_port" "$connections" "$mib_each" || true)
printf 'through the port-forward: %d of %d complete, %.1f MiB/s in all, %.2f s, %d errors\n' \
    "$ok" "$connections" "$rate" "$elapsed" "$errors"
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/${pids[0]}/status"; }
echo "server RSS after the run: $(($(rss_kib) / 1024)) MiB"

echo "== $connections idle sessions held open"
before=$(rss_kib)
python3 "$tmp/idle.py" "$local_port" "$connections" 8 &
idle=$!
sleep 5
held=$(rss_kib)
wait "$idle"
echo "server memory per idle session: $(((held - before) / connections)) KiB (RSS $((before / 1024)) -> $((held / 1024)) MiB)"
verdict=PASS
((ratio >= 50)) || verdict=FAIL
((errors == 0 && forward_errors == 0)) || verdict=FAIL
echo "verdict: $verdict (goal: >= 50% of direct, 0 errors)"
