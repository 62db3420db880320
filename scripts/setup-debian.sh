#!/usr/bin/env bash
# Installs the Debian packages that the end-to-end tests (crates/e2e) run.
# Idempotent and quiet: prints nothing when everything is installed, the
# apt-get output only when something fails. Works as root, or with sudo.
set -euo pipefail

packages=(
    bash coreutils findutils tar gzip diffutils sed mawk util-linux procps
    sqlite3 git python3 iproute2
    qemu-system-x86 cpio file   # crates/vmm: VM domains, initramfs check
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

# Update the package lists once if there are none, or if the install fails
# with the lists we have (stale lists name versions the mirror dropped).
if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
    quiet "${as_root[@]}" apt-get update -q
fi
if ! apt_install; then
    quiet "${as_root[@]}" apt-get update -q
    quiet apt_install
fi
