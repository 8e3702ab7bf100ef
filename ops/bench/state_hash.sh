#!/usr/bin/env bash
# Time to hash a member's whole state (what each state check asks of every
# member), and apply latency with and without a hash running, on a state
# of N workflows, with a release build.
# Usage: ops/bench/state_hash.sh [WORKFLOWS] [SPEC_BYTES]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p gantry-bench
"${CARGO_TARGET_DIR:-target}/release/gantry-bench" state-hash --workflows "${1:-100000}" --spec-bytes "${2:-1000}"
