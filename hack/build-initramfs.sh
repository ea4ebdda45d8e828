#!/usr/bin/env bash
# Builds Ferrox's ramdisk for Debian's kernel: the static agent (hack/build-static-agent.sh),
# then ferrox-mkinitramfs with the default module set. Prints the ramdisk's path on stdout;
# the size summary (with the kernel's size, for the issue's budget) goes to stderr.
#
#   hack/build-initramfs.sh [extra ferrox-mkinitramfs options...]
#
# Output: target/initramfs/ferrox-<kernel version>.img, its report (.json) and the kernel it
# is for (vmlinuz-<kernel version>, copied so the pair can be served together).
# Run as root on Debian bookworm (installs linux-image-amd64 when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "build-initramfs: $*" >&2; }

[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
if ! ls /lib/modules/*/modules.dep >/dev/null 2>&1; then
  log "installing linux-image-amd64 (the kernel and modules the ramdisk is built for)"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
    --no-install-recommends linux-image-amd64 >/dev/null
fi

agent=$(hack/build-static-agent.sh)
cargo build --release -p ferrox-mkinitramfs >&2
mk=target/release/ferrox-mkinitramfs

kver=$(ls -d /lib/modules/*/modules.dep | xargs -n1 dirname | xargs -n1 basename | sort -V | tail -1)
out=target/initramfs
mkdir -p "$out"
"$mk" --agent "$agent" --kernel-version "$kver" -o "$out/ferrox-$kver.img" \
  --report "$out/ferrox-$kver.json" "$@" >&2
if [ -f "/boot/vmlinuz-$kver" ]; then
  cp -p "/boot/vmlinuz-$kver" "$out/vmlinuz-$kver"
  log "kernel /boot/vmlinuz-$kver: $(stat -c %s "/boot/vmlinuz-$kver") bytes;" \
    "ramdisk: $(stat -c %s "$out/ferrox-$kver.img") bytes"
fi
echo "$PWD/$out/ferrox-$kver.img"
