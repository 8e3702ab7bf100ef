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
