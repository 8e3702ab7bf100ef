#!/usr/bin/env bash
# Cold start to /health on a new data directory (gantry server --bootstrap)
# and the idle RSS of a server, with a release build (or the given binary,
# e.g. the static one from packaging/build.sh).
# Usage: ops/bench/startup.sh [BINARY] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
binary=${1:-}
if [ -z "$binary" ]; then
    cargo build --release --quiet -p gantry -p gantry-bench
    binary="${CARGO_TARGET_DIR:-target}/release/gantry"
else
    cargo build --release --quiet -p gantry-bench
fi
"${CARGO_TARGET_DIR:-target}/release/gantry-bench" startup --binary "$binary" --runs "${2:-10}" --idle-secs 5
