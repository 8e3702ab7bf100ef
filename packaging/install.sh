#!/bin/sh
# Installs Gantry from an unpacked release tarball. Works offline: it uses
# only the files next to it and the base system (sh, sha256sum, install).
#
#   sudo ./install.sh [--prefix DIR] [--destdir DIR] [--no-systemd]
#
#   --prefix DIR   where bin/gantry and share/doc/gantry go (default /usr/local)
#   --destdir DIR  stage everything under DIR instead of / (packaging, tests)
#   --no-systemd   do not install the units or reload systemd
#
# It checks SHA256SUMS first and changes nothing if a file does not match.
# Existing /etc/gantry/*.env files are kept (the new examples land next to
# them as *.env.example). Services are not enabled or started: see
# share/doc/gantry/runbooks/install-vm.md for the next steps.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
prefix=/usr/local
destdir=
systemd=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --destdir) destdir="$2"; shift 2 ;;
        --no-systemd) systemd=no; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$here"
if ! sha256sum --quiet -c SHA256SUMS; then
    echo "install.sh: SHA256SUMS does not match; the release is damaged or altered. Nothing installed." >&2
    exit 1
fi
if ! ./gantry --version >/dev/null 2>&1; then
    echo "install.sh: ./gantry does not run on this machine ($(uname -m))." >&2
    exit 1
fi

bin="$destdir$prefix/bin"
doc="$destdir$prefix/share/doc/gantry"
etc="$destdir/etc/gantry"
install -d -m 0755 "$bin" "$doc"
install -m 0755 gantry "$bin/gantry"
cp -R ops/runbooks ops/grafana ops/kubernetes "$doc/"
install -m 0644 README.md LICENSE "$doc/"
echo "installed $prefix/bin/gantry ($(./gantry --version))"

if [ "$systemd" = yes ]; then
    units="$destdir/etc/systemd/system"
    install -d -m 0755 "$units"
    install -d -m 0755 "$etc"
    install -d -m 0700 "$etc/pki"
    for unit in gantry-server.service gantry-operator.service; do
        sed -e "s#/usr/local/bin/gantry#$prefix/bin/gantry#" \
            -e "s#/usr/local/share/doc/gantry#$prefix/share/doc/gantry#" \
            "systemd/$unit" > "$units/$unit"
        chmod 0644 "$units/$unit"
    done
    for env in server.env operator.env; do
        if [ -e "$etc/$env" ]; then
            install -m 0644 "systemd/$env" "$etc/$env.example"
            echo "kept /etc/gantry/$env (new example: /etc/gantry/$env.example)"
        else
            install -m 0644 "systemd/$env" "$etc/$env"
        fi
    done
    echo "installed units gantry-server.service and gantry-operator.service; settings in /etc/gantry/"
    if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
fi
echo "next: $prefix/share/doc/gantry/runbooks/install-vm.md"
