#!/usr/bin/env bash
# Installs everything Ferrox's build, tests, demo and benchmarks need on a fresh Debian
# bookworm machine. Idempotent: installs only what is missing. Run as root.
set -euo pipefail

PKGS=(
  # build
  gcc pkg-config libblkid-dev musl-tools
  # real tools the tests prepare and check disks with
  util-linux fdisk gdisk e2fsprogs xfsprogs dosfstools cryptsetup-bin lvm2 mdadm
  # image formats and serving
  qemu-utils zstd xz-utils gzip curl python3 python3-venv
  # measuring
  time psmisc
  # netboot: the iPXE binaries it serves, real DHCP/TFTP clients, the NIC ROMs VMs PXE-boot with
  ipxe busybox-static isc-dhcp-client isc-dhcp-relay tftp-hpa atftp ipxe-qemu ovmf dnsmasq-base
  # the ramdisk: static agent build (hack/build-static-agent.sh), a kernel and its modules to
  # build from, the real cpio to check the archive with, QEMU to boot it
  dpkg-dev make file cpio kmod linux-image-amd64 qemu-system-x86
  # the agent's DHCP client against the real peer, in network namespaces
  dnsmasq-base iproute2
  # config drives: mtools reads the FAT image; cloud-init's reader (unpacked, not installed, by
  # hack/cloud-init-read-config-drive.sh) needs these Python modules
  mtools python3-yaml python3-jinja2 python3-jsonpatch python3-jsonschema
  # the lab: libvirtd runs the VMs, sushy-tools' libvirt driver (libvirt-python, built by pip
  # against libvirt-dev) is their BMC
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev python3-dev
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || { echo "deps: cargo (Rust stable) is required" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true
exit 0
