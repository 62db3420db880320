#!/usr/bin/env bash
# Installs the Debian packages that the end-to-end tests (crates/e2e) run.
# Idempotent and quiet: prints nothing when everything is installed, the
# apt-get output only when something fails. Works as root, or with sudo.
set -euo pipefail

packages=(
    bash coreutils findutils tar gzip diffutils sed mawk util-linux procps
    sqlite3 git python3 iproute2
    qemu-system-x86 cpio file   # crates/vmm: VM domains, initramfs check
    e2fsprogs                   # vm backend: mkfs.ext4 for the storage image
    nginx-light redis-server redis-tools curl apache2-utils wrk   # e2e servers.rs
    autoconf automake make gcc perl   # conformance suite (pjdfstest, prove)
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    as_root=(env DEBIAN_FRONTEND=noninteractive)
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
else
    echo "setup-debian.sh: need root or sudo to install: ${missing[*]}" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
quiet() {
    if ! "$@" >>"$log" 2>&1; then
        cat "$log" >&2
        echo "setup-debian.sh: failed: $*" >&2
        exit 1
    fi
}

apt_install() { "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1; }

# Server packages (nginx, redis-server) start their system services when
# installed; the tests start their own instances. A policy-rc.d that says
# 101 ("action forbidden") keeps invoke-rc.d from starting anything during
# the install; it is removed again afterwards (only if we created it). With
# systemd running, the units are also disabled and stopped.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod 755 "$policy"
    trap 'rm -f "$log"; "${as_root[@]}" rm -f "$policy"' EXIT
fi
stop_services() {
    if [ -d /run/systemd/system ]; then
        "${as_root[@]}" systemctl disable --now nginx redis-server >/dev/null 2>&1 || true
    fi
}

# Update the package lists once if there are none, or if the install fails
# with the lists we have (stale lists name versions the mirror dropped).
if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
    quiet "${as_root[@]}" apt-get update -q
fi
if ! apt_install; then
    quiet "${as_root[@]}" apt-get update -q
    quiet apt_install
fi
stop_services
