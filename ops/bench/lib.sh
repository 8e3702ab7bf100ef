# Shared by the benchmark scripts (sourced, not run): the binaries (the
# product `gantry`, and `gantry-bench`, the load generators built from
# ops/bench/ and never shipped), a scratch directory removed on exit with
# every process started into `pids`, and polling.
#
# Env: GANTRY_BIN=PATH uses that gantry binary instead of building one;
#      GANTRY_BENCH_BIN=PATH likewise for gantry-bench (with both set,
#      nothing is built: e.g. binaries of an earlier commit, for a before
#      and after); GANTRY_BENCH_KEEP=1 keeps the scratch directory.

gantry=${GANTRY_BIN:-${CARGO_TARGET_DIR:-./target}/release/gantry}
bench=${GANTRY_BENCH_BIN:-${CARGO_TARGET_DIR:-./target}/release/gantry-bench}
to_build=()
[[ -n ${GANTRY_BIN:-} ]] || to_build+=(-p gantry)
[[ -n ${GANTRY_BENCH_BIN:-} ]] || to_build+=(-p gantry-bench)
if [[ ${#to_build[@]} -gt 0 ]]; then
    cargo build --release --quiet "${to_build[@]}"
fi

tmp=$(mktemp -d)
pids=()
bench_cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ ${GANTRY_BENCH_KEEP:-} == 1 ]]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
    exit "$status"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

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

# start_server_and_operator API_PORT PEER_PORT: a bootstrapped `gantry
# server` with TLS on API_PORT and a remote `gantry operator` (backend
# local) over mutual TLS, certificates under $tmp/pki; exports GANTRY_URL,
# GANTRY_CA, GANTRY_TOKEN and XDG_CONFIG_HOME for the CLI.
start_server_and_operator() {
    local api_port=$1 peer_port=$2
    local pki=$tmp/pki
    $gantry tls ca create --out "$pki" >/dev/null
    $gantry tls cert create --ca "$pki" --name node --kind server --ip 127.0.0.1 --out "$pki" >/dev/null
    $gantry tls cert create --ca "$pki" --name edge --kind operator --out "$pki" >/dev/null
    url="https://127.0.0.1:$api_port"
    export GANTRY_URL=$url GANTRY_CA=$pki/ca.pem XDG_CONFIG_HOME=$tmp/config
    echo "== gantry server (TLS) and a remote gantry operator (mutual TLS)"
    GANTRY_LOG=warn $gantry server --bootstrap --data-dir "$tmp/node" \
        --listen "127.0.0.1:$api_port" --peer-listen "127.0.0.1:$peer_port" \
        --tls-ca "$pki/ca.pem" --tls-cert "$pki/node.pem" --tls-key "$pki/node-key.pem" \
        >>"$tmp/server.log" 2>&1 &
    pids+=("$!")
    wait_for "the bootstrap token" test -s "$tmp/node/bootstrap-admin-token"
    GANTRY_TOKEN=$(cat "$tmp/node/bootstrap-admin-token")
    export GANTRY_TOKEN
    cp "$tmp/node/bootstrap-admin-token" "$tmp/operator-token"
    GANTRY_LOG=warn $gantry operator --servers "$url" --backend local --task-root host \
        --token-file "$tmp/operator-token" --work-dir "$tmp/operator" \
        --tls-ca "$pki/ca.pem" --tls-cert "$pki/edge.pem" --tls-key "$pki/edge-key.pem" \
        >>"$tmp/operator.log" 2>&1 &
    pids+=("$!")
}
