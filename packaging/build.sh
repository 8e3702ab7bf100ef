#!/usr/bin/env bash
# Builds the static release of gantry and its tarball, and checks both.
#
#   packaging/build.sh [TARGET]      (default x86_64-unknown-linux-musl;
#                                      aarch64-unknown-linux-musl needs a
#                                      cross C compiler, see README.md)
#
# Needs: rustup, and musl-gcc for the C parts (ring, zstd): on Debian/Ubuntu
# `apt-get install musl-tools`. Output in dist/:
#   gantry-VERSION-ARCH-linux-musl/           the unpacked release
#   gantry-VERSION-ARCH-linux-musl.tar.gz     the tarball
#   gantry-VERSION-ARCH-linux-musl.tar.gz.sha256
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-x86_64-unknown-linux-musl}"
arch="${target%%-*}"

rustup target add "$target" >/dev/null
case "$target" in
    x86_64-unknown-linux-musl)
        export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}" ;;
    aarch64-unknown-linux-musl)
        export CC_aarch64_unknown_linux_musl="${CC_aarch64_unknown_linux_musl:-aarch64-linux-musl-gcc}"
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER:-$CC_aarch64_unknown_linux_musl}" ;;
esac

# No OpenSSL, no native-tls, no aws-lc (C code that defeats a plain static
# build): TLS is rustls over ring.
for crate in openssl-sys native-tls aws-lc-sys; do
    if cargo tree --locked --target "$target" -e normal -i "$crate" >/dev/null 2>&1; then
        echo "error: $crate is in the dependency tree" >&2
        exit 1
    fi
done

cargo build --release --locked --target "$target" --bin gantry
target_dir="${CARGO_TARGET_DIR:-target}"
binary="$target_dir/$target/release/gantry"

packaging/check-static.sh "$binary"

version="$(cargo metadata --no-deps --format-version 1 --locked \
    | sed -n 's/.*"name":"gantry","version":"\([^"]*\)".*/\1/p')"
packaging/make-tarball.sh "$binary" "$version" "$arch"
