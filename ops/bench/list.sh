#!/usr/bin/env bash
# How long a page of the workflow list takes from a state of N workflows of
# U users, filter by filter (one user's page, everyone's, a submit-time
# window, a label selector, a user and a pool), with a release build.
# Usage: ops/bench/list.sh [WORKFLOWS] [USERS]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p gantry-bench
"${CARGO_TARGET_DIR:-target}/release/gantry-bench" list --workflows "${1:-100000}" --users "${2:-100}"
