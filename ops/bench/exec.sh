#!/usr/bin/env bash
# Exec benchmark: keystroke round trips through the router's whole path
# (`gantry workflow exec` → server over TLS → the remote operator's HTTP/2
# session request over mutual TLS → `cat` running inside the task's
# sandbox → back). One byte is written, its echo read, ROUND_TRIPS times
# in one session; prints p50, p99 and the slowest round trip in ms (the
# issue's goal: p99 at most 5 ms on loopback), and the session's setup
# time (from starting the CLI to the first echo). Everything it starts is
# stopped and removed on exit.
#
# Usage: ops/bench/exec.sh [ROUND_TRIPS]   (default 2000)
# Env: GANTRY_BENCH_PORT (first of 2 ports, default 18860), GANTRY_BIN=PATH
#      uses that gantry binary instead of building one, GANTRY_BENCH_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
round_trips=${1:-2000}
base=${GANTRY_BENCH_PORT:-18860}
command -v python3 >/dev/null || {
    echo "needs python3" >&2
    exit 1
}
# This benchmark needs no load generator of its own.
GANTRY_BENCH_BIN=${GANTRY_BENCH_BIN:-/bin/true}
# shellcheck source=ops/bench/lib.sh
source ops/bench/lib.sh

api_port=$base
start_server_and_operator "$api_port" "$((base + 1))"

cat >"$tmp/workflow.yaml" <<'EOF'
workflow:
  name: shell
  tasks:
  - name: work
    image: ubuntu
    command: [sleep, "3600"]
EOF
id=$($gantry workflow submit "$tmp/workflow.yaml" -t json | python3 -c 'import json,sys; print(json.load(sys.stdin)["name"])')
running() { $gantry workflow query "$id" -t json | grep -q '"status": *"RUNNING"'; }
wait_for "the task to run" running

cat >"$tmp/round_trips.py" <<'EOF'
import os, subprocess, sys, time
gantry, workflow, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.monotonic()
child = subprocess.Popen([gantry, "workflow", "exec", workflow, "work", "-T", "--", "cat"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
def round_trip():
    child.stdin.write(b"x")
    if child.stdout.read(1) != b"x":
        sys.exit("no echo")
round_trip()
setup = time.monotonic() - start
times = []
for _ in range(count):
    t = time.monotonic()
    round_trip()
    times.append((time.monotonic() - t) * 1000)
child.stdin.close()
child.wait()
times.sort()
pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
print("round trips: %d  p50 %.2f ms  p99 %.2f ms  max %.2f ms  (session setup %.0f ms)"
      % (count, pick(0.50), pick(0.99), times[-1], setup * 1000))
EOF

echo "== $round_trips keystroke round trips through one exec session"
python3 "$tmp/round_trips.py" "$gantry" "$id" "$round_trips"
