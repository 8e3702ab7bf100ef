#!/usr/bin/env bash
# Assembles the release tarball from a built binary.
#   packaging/make-tarball.sh BINARY VERSION ARCH
# Writes to $GANTRY_DIST_DIR (default dist/ in the repository):
#   gantry-VERSION-ARCH-linux-musl/ with gantry, install.sh, LICENSE,
#     README.md, Containerfile, SHA256SUMS, systemd/ (units and example env
#     files), ops/ (runbooks, dashboards, alert rules, Kubernetes manifests)
#   gantry-VERSION-ARCH-linux-musl.tar.gz and its .sha256
set -euo pipefail
binary="$(realpath "$1")" version="$2" arch="$3"
dist="$(realpath -m "${GANTRY_DIST_DIR:-$(dirname "$0")/../dist}")"
cd "$(dirname "$0")/.."
name="gantry-$version-$arch-linux-musl"
out="$dist/$name"
rm -rf "$out" "$dist/$name.tar.gz" "$dist/$name.tar.gz.sha256"
mkdir -p "$out/systemd" "$out/ops"
install -m 0755 "$binary" "$out/gantry"
install -m 0755 packaging/install.sh "$out/install.sh"
install -m 0644 LICENSE README.md packaging/Containerfile "$out/"
install -m 0644 systemd/gantry-server.service systemd/gantry-operator.service \
    systemd/server.env systemd/operator.env "$out/systemd/"
cp -r ops/runbooks ops/grafana ops/kubernetes "$out/ops/"
(cd "$out" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort \
    | xargs sha256sum > SHA256SUMS)
# Reproducible: fixed owner, order and mtime (the last commit's).
mtime="$(git log -1 --format=%ct 2>/dev/null || echo 0)"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
    -C "$dist" -czf "$dist/$name.tar.gz" "$name"
(cd "$dist" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "release: $dist/$name.tar.gz ($(stat -c %s "$dist/$name.tar.gz") bytes)"
