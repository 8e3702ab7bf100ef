#!/usr/bin/env bash
# Checks that a gantry binary is static, stripped and reports its version.
#   packaging/check-static.sh BINARY
set -euo pipefail
binary="$1"
description="$(file -b "$binary")"
echo "file: $description"
case "$description" in
    *"statically linked"*|*"static-pie linked"*) ;;
    *) echo "error: $binary is not statically linked" >&2; exit 1 ;;
esac
case "$description" in
    *"not stripped"*|*"with debug_info"*) echo "error: $binary is not stripped" >&2; exit 1 ;;
esac
# ldd exits non-zero on a static binary; its message is what matters.
ldd_output="$(ldd "$binary" 2>&1 || true)"
echo "ldd: $ldd_output"
case "$ldd_output" in
    *"not a dynamic executable"*|*"statically linked"*) ;;
    *) echo "error: ldd lists shared libraries" >&2; exit 1 ;;
esac
if [ "$(uname -m)" = "$(file -b "$binary" | sed -n 's/.*\(x86-64\|aarch64\).*/\1/p' | sed 's/x86-64/x86_64/')" ]; then
    version="$("$binary" --version)"
    echo "version: $version"
    case "$version" in
        *"(unknown)"*) echo "warning: built without a git hash (set GANTRY_GIT_HASH)" >&2 ;;
    esac
fi
size_bytes="$(stat -c %s "$binary")"
echo "size: $size_bytes bytes ($((size_bytes / 1024 / 1024)) MiB)"
