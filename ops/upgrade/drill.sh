#!/usr/bin/env bash
# Rolling-upgrade drill: the runbook (ops/runbooks/rolling-upgrade.md) carried
# out on a three-node cluster on loopback, under load, with two builds of
# this tree: the default one ("old") and one with the `upgrade-drill`
# feature ("new"), which knows one command kind more and has a route that
# proposes it.
#
# It starts three `gantry server --local-backend` on the old build, keeps
# submitting one-task workflows through the CLI (all three URLs, as users
# do), and replaces the members one at a time — the leader first, the order
# version gating makes safe — with the new build. After each step it asks
# an upgraded member to propose the new kind: refused (503, naming the
# members still behind) while any member runs the old build, accepted once
# none does. Then it stops the load and checks that every submit was
# answered, every acknowledged workflow exists once and COMPLETED, and
# every member is healthy on the new build. It ends with a one-line
# verdict.
#
# Usage: ops/upgrade/drill.sh
# Env: GANTRY_OLD_BIN / GANTRY_NEW_BIN use those binaries instead of
#      building them; DRILL_PORT (first of 20 ports, default 18700);
#      DRILL_KEEP=1 keeps the scratch directory.
set -euo pipefail
cd "$(dirname "$0")/../.."

tmp=$(mktemp -d)
pids=()
load_pid=
cleanup() {
    local status=$?
    [[ -z $load_pid ]] || kill "$load_pid" 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ ${DRILL_KEEP:-} == 1 ]]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "drill: $*" >&2
    for i in 1 2 3; do
        echo "--- last lines of node $i's log" >&2
        tail -n 20 "$tmp/gantry$i.log" >&2 || true
    done
    echo "verdict: FAIL ($*)"
    exit 1
}

wait_for() { # SECONDS WHAT COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "timed out waiting for $what"
}

old=${GANTRY_OLD_BIN:-}
new=${GANTRY_NEW_BIN:-}
if [[ -z $old ]]; then
    cargo build --quiet --bin gantry
    cp "${CARGO_TARGET_DIR:-target}/debug/gantry" "$tmp/gantry-old"
    old=$tmp/gantry-old
fi
if [[ -z $new ]]; then
    cargo build --quiet --bin gantry --features upgrade-drill
    cp "${CARGO_TARGET_DIR:-target}/debug/gantry" "$tmp/gantry-new"
    new=$tmp/gantry-new
    # Leave the default build in place for whatever runs next.
    [[ -n ${GANTRY_OLD_BIN:-} ]] || cp "$old" "${CARGO_TARGET_DIR:-target}/debug/gantry"
fi

base=${DRILL_PORT:-18700}
pki=$tmp/pki
"$old" tls ca create --out "$pki" >/dev/null
for i in 1 2 3; do
    "$old" tls cert create --ca "$pki" --name "node$i" --kind server --ip 127.0.0.1 --out "$pki" >/dev/null
done
export GANTRY_CA=$pki/ca.pem
urls=()
for i in 1 2 3; do urls+=("https://127.0.0.1:$((base + i))"); done
declare -A node_pid

start_node() { # I BINARY [--bootstrap | --join PEER]
    local i=$1 binary=$2
    shift 2
    GANTRY_LOG=warn "$binary" server --local-backend --data-dir "$tmp/gantry$i" \
        --listen "127.0.0.1:$((base + i))" --peer-listen "127.0.0.1:$((base + 10 + i))" \
        --tls-ca "$pki/ca.pem" --tls-cert "$pki/node$i.pem" --tls-key "$pki/node$i-key.pem" \
        --object-store "file://$tmp/shared-objects" "$@" >>"$tmp/gantry$i.log" 2>&1 &
    node_pid[$i]=$!
    pids+=($!)
    wait_for 60 "node $i to serve" curl -fsS --cacert "$GANTRY_CA" "${urls[$((i - 1))]}/healthz"
}

members() { "$new" cluster members -t json --url "$(IFS=,; echo "${urls[*]}")"; }
# Three voters, a leader, every member heard from within the last second.
settled() {
    members | jq -e '([.members[] | select(.voter and .reachable != false)] | length) == 3
        and .leader_id != null and .leader_view'
}
leader() { members | jq -r '.leader_id'; }
node_of() { # NODE-ID -> I (the member's index, by its API port)
    members | jq -r --arg id "$1" '.members[] | select((.id | tostring) == $id) | .api_url' |
        sed -E 's/.*:([0-9]+)$/\1/' | awk -v base="$base" '{ print $1 - base }'
}

drill_answer() { # I: the HTTP status of proposing the new kind at node I
    curl -sS -o "$tmp/drill.json" -w '%{http_code}' --cacert "$GANTRY_CA" \
        -X POST -H "Authorization: Bearer $GANTRY_TOKEN" "${urls[$(($1 - 1))]}/api/cluster/upgrade-drill"
}

echo "== three members on the old build"
start_node 1 "$old" --bootstrap
GANTRY_TOKEN=$(cat "$tmp/gantry1/bootstrap-admin-token")
export GANTRY_TOKEN
for i in 2 3; do start_node "$i" "$old" --join "127.0.0.1:$((base + 11))"; done
wait_for 60 "three voters" settled
# The old build has no such route.
[[ $(drill_answer 1) == 404 ]] || fail "the old build answered the drill route"

cat >"$tmp/hello.yaml" <<'EOF'
workflow:
  name: drill
  tasks:
  - name: hello
    image: ubuntu:24.04
    command: [sh, -c]
    args: [echo upgraded]
EOF

echo "== load: one workflow submitted after another, through the CLI"
(
    n=0
    while [[ ! -e $tmp/stop-load ]]; do
        n=$((n + 1))
        # Each submit starts at another member, as a fleet of users would.
        first=$((n % 3))
        order=("${urls[@]:first}" "${urls[@]:0:first}")
        if out=$("$old" workflow submit "$tmp/hello.yaml" -t json \
            --url "$(IFS=,; echo "${order[*]}")" 2>>"$tmp/submit-errors.log"); then
            jq -r '.name' <<<"$out" >>"$tmp/submitted"
        else
            echo "submit $n failed" >>"$tmp/submit-errors.log"
            echo x >>"$tmp/failed"
        fi
        sleep 0.2
    done
) &
load_pid=$!
sleep 3

upgraded=()
upgrade() { # I
    local i=$1
    echo "== node $i: stop, replace with the new build, start"
    kill -TERM "${node_pid[$i]}"
    wait "${node_pid[$i]}" 2>/dev/null || true
    start_node "$i" "$new"
    upgraded+=("$i")
    wait_for 90 "node $i back among three voters" settled
    sleep 2
}

# The leader first: with version gating the order does not matter.
first=$(node_of "$(leader)")
order=("$first")
for i in 1 2 3; do [[ $i == "$first" ]] || order+=("$i"); done
steps=0
for i in "${order[@]}"; do
    upgrade "$i"
    steps=$((steps + 1))
    status=$(drill_answer "$i")
    if ((steps < 3)); then
        [[ $status == 503 ]] || fail "a new command kind was accepted while a member ran the old build ($status: $(cat "$tmp/drill.json"))"
        jq -e '.message | contains("not every member understands it")' "$tmp/drill.json" >/dev/null ||
            fail "the refusal does not say why: $(cat "$tmp/drill.json")"
        echo "   new kind refused while $((3 - steps)) member(s) run the old build: $(jq -r .message "$tmp/drill.json")"
    else
        # The leader trusts an announcement for up to 5 s, so the last
        # member's new build may take that long to be noticed.
        for _ in $(seq 20); do
            [[ $status == 200 ]] && break
            sleep 0.5
            status=$(drill_answer "$i")
        done
        [[ $status == 200 ]] || fail "the new kind was refused with every member upgraded ($status: $(cat "$tmp/drill.json"))"
        echo "   new kind accepted once every member runs the new build"
    fi
done

echo "== load stops; every workflow must complete"
sleep 3
touch "$tmp/stop-load"
wait "$load_pid" || true
load_pid=
submitted=$(sort -u "$tmp/submitted" | wc -l)
answered=$(wc -l <"$tmp/submitted")
failed=0
[[ ! -e $tmp/failed ]] || failed=$(wc -l <"$tmp/failed")
((failed == 0)) || fail "$failed submit(s) failed: $(tail -n 5 "$tmp/submit-errors.log")"
((submitted == answered)) || fail "a workflow ID was answered twice"
((submitted > 0)) || fail "no workflow was submitted"
all_completed() {
    local listed
    listed=$("$new" workflow list -t json -c 100000 --url "$(IFS=,; echo "${urls[*]}")")
    jq -e --slurpfile ids <(jq -R . "$tmp/submitted") '
        [.workflows[] | select(.name as $n | $ids | index($n)) | select(.status == "COMPLETED")]
        | length == ($ids | length)' <<<"$listed"
}
wait_for 120 "every submitted workflow to complete" all_completed
members >"$tmp/members.json"
jq -e '[.members[] | select(.command_kinds == null or .command_kinds != $kinds)] | length == 0' \
    --argjson kinds "$(jq '.members[0].command_kinds' "$tmp/members.json")" "$tmp/members.json" >/dev/null ||
    fail "the members do not all run the new build: $(cat "$tmp/members.json")"
jq -e '.warnings | length == 0' "$tmp/members.json" >/dev/null ||
    fail "warnings after the upgrade: $(jq -c .warnings "$tmp/members.json")"
for i in 1 2 3; do
    curl -fsS --cacert "$GANTRY_CA" "${urls[$((i - 1))]}/readyz" >/dev/null || fail "node $i is not ready"
done
echo "== $submitted workflows submitted during the upgrade, all COMPLETED, none lost or doubled; 0 failed submits"
echo "verdict: PASS (3 members upgraded one at a time under load; the new command kind waited for the last)"
