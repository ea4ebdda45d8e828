#!/usr/bin/env bash
# The lab speed benchmark (issue 6 "Speed"): power-on → provisioned for a 1 GiB image, per
# phase (firmware + iPXE, kernel + agent, inspection, image write, reboot into disk), next to
# the floor the same run measures on VMs of the same kind on the same bridge (a bare iPXE boot,
# a bare kernel boot, a raw copy of the image (hack/lab-image/floorcopy.c), a boot of that image from disk);
# then three hosts provisioned at once against one. Writes docs/bench-lab.md.
#
#   hack/bench-lab.sh [--dir DIR] [--netns NAME] [--out FILE]
#
# Its own lab (default /var/tmp/ferrox-bench, namespace ferrox-bench): never the one
# hack/lab.sh or the tests bring up. Installs and builds what it needs (cached), like
# hack/lab.sh, plus the 1 GiB image and the floor ramdisk (hack/build-bench-lab.sh). Takes
# 10–20 minutes on 2 busy cores. Run as root on Debian bookworm.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "hack/bench-lab.sh: run as root (network namespaces, libvirtd)" >&2; exit 1; }
hack/deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
hack/sushy-tools.sh --libvirt >/dev/null
echo "bench-lab: building the ramdisk, the OS images and the binaries (cached)" >&2
hack/build-initramfs.sh >/dev/null
hack/build-lab-image.sh >/dev/null
hack/build-bench-lab.sh
cargo build -q --workspace --bins
exec target/debug/ferrox-lab bench "$@"
