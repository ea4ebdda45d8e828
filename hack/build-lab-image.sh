#!/usr/bin/env bash
# Builds the lab's bootable OS disk image: the "operating system" the lab's BareMetalHosts are
# provisioned with. It boots under legacy BIOS (SeaBIOS) and UEFI (OVMF), then its /init
# (hack/lab-image/init) prints on the serial console that it booted from disk and what it read
# from the config drive (partition labelled config-2) the Ferrox agent added, and stays up.
# Prints the path of disk.raw on stdout; everything else goes to stderr.
#
#   hack/build-lab-image.sh
#
# Output, in target/lab-image/:
#   disk.raw, disk.qcow2   the same disk (qemu-img compare agrees), 32 MiB
#   manifest.json          kernel version, size and sha256 of each (for a BareMetalHost's
#                          spec.image.checksum)
#   SHA256SUMS             the same digests as a checksum file (spec.image.checksum as a URL)
#
# Layout: GPT with one EFI System Partition (FAT16, LBA 2048 to the last usable LBA, "legacy
# BIOS bootable" attribute). BIOS: syslinux's gptmbr.bin in the protective MBR's boot code
# loads the ESP's boot sector, which syslinux's installer made load /syslinux/ldlinux.sys.
# UEFI: syslinux.efi as \EFI\BOOT\BOOTX64.EFI (the removable-media path, no NVRAM entry
# needed). Both read the same syslinux.cfg and boot /vmlinuz (Debian's kernel) with /initrd.img
# (busybox, the disk and FAT drivers, /init) and `console=ttyS0 ferrox.lab.boot=disk`.
# The backup GPT sits at the end of the image; the agent moves it to the end of the (larger)
# disk when it adds the config drive partition in the free space after the ESP.
#
# Nothing is mounted (this machine's kernel has no vfat and no loop partition scanning): the
# filesystem is made and filled with mtools at the partition's byte offset, the table with
# sgdisk. The result is rebuilt only when an input changes (this script, the init, the kernel,
# busybox, the module tree, the tools' package versions); set FERROX_LAB_IMAGE_REBUILD=1 to
# force it. Installs its Debian packages when missing. Run as root on Debian bookworm.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "build-lab-image: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "run as root (installs packages, makes device nodes)"; exit 1; }

pkgs=(syslinux syslinux-efi syslinux-common mtools gdisk busybox-static linux-image-amd64
  qemu-utils cpio gzip kmod)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

out=target/lab-image
mkdir -p "$out"
# One build at a time: tests may call this in parallel.
exec 9>"$out/.lock"
flock 9

# The newest kernel that has both an image in /boot and a module tree.
kver=
for d in $(ls -d /lib/modules/*/ 2>/dev/null | xargs -rn1 basename | sort -V); do
  [ -f "/boot/vmlinuz-$d" ] && [ -f "/lib/modules/$d/modules.dep" ] && kver=$d
done
[ -n "$kver" ] || { log "no /boot/vmlinuz-* with a /lib/modules tree (linux-image-amd64)"; exit 1; }
kernel=/boot/vmlinuz-$kver
moddir=/lib/modules/$kver

SYSLINUX_MBR=/usr/lib/syslinux/mbr/gptmbr.bin
SYSLINUX_EFI=/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi
LDLINUX_E64=/usr/lib/syslinux/modules/efi64/ldlinux.e64
BUSYBOX=/bin/busybox
INIT=hack/lab-image/init
# The disk controllers a VM (or a small server) boots from, and what reads the config drive.
MODULES=(virtio_pci virtio_blk virtio_scsi ahci ata_piix sd_mod nvme vfat nls_cp437 nls_ascii
  nls_iso8859_1 isofs)
IMAGE_MIB=32
CMDLINE="console=tty0 console=ttyS0,115200 ferrox.lab.boot=disk"
# Fixed identities, so the same inputs give the same image.
DISK_GUID=5a1f3c2e-6b7d-4e8f-9a0b-1c2d3e4f5a6b
ESP_GUID=c12a7328-f81f-11d2-ba4b-00a0c93ec93b
ESP_PART_GUID=0f3e5d7c-2b4a-4968-8e1d-6c5b4a392817
FAT_SERIAL=46455852
# 1980-01-02, the FAT epoch (FAT cannot date anything earlier).
export SOURCE_DATE_EPOCH=315619200 TZ=UTC

key=$(
  {
    sha256sum "$0" "$INIT" "$kernel" "$BUSYBOX" "$SYSLINUX_MBR" "$SYSLINUX_EFI" "$LDLINUX_E64" \
      "$moddir/modules.dep" | cut -d' ' -f1
    dpkg-query -W -f='${Package} ${Version}\n' syslinux mtools gdisk qemu-utils cpio gzip
    echo "$kver ${MODULES[*]}"
  } | sha256sum | cut -d' ' -f1
)
if [ -z "${FERROX_LAB_IMAGE_REBUILD:-}" ] && [ "$(cat "$out/inputs.sha256" 2>/dev/null)" = "$key" ] \
  && [ -f "$out/disk.raw" ] && [ -f "$out/disk.qcow2" ] && [ -f "$out/manifest.json" ]; then
  log "up to date ($out, kernel $kver)"
  echo "$PWD/$out/disk.raw"
  exit 0
fi
log "building for kernel $kver"

work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- the initramfs: busybox, the modules in load order, /init -------------------------------
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,mnt,etc,tmp,lib/modules}
cp "$BUSYBOX" "$root/bin/busybox"
cp "$INIT" "$root/init"
chmod 0755 "$root/init" "$root/bin/busybox"
# The kernel opens /dev/console for init before anything mounts devtmpfs.
mknod -m 600 "$root/dev/console" c 5 1
mknod -m 666 "$root/dev/null" c 1 3

# modules.dep lists a module's whole dependency closure, in an order that modprobe loads from
# the end: so each module's dependencies, reversed, then the module; first load wins.
declare -A seen=()
order=()
add_module_file() {
  local rel=$1
  [ -n "${seen[$rel]:-}" ] && return 0
  seen[$rel]=1
  order+=("$rel")
}
for m in "${MODULES[@]}"; do
  line=$(awk -v want="$m" '{
      f = $1; sub(":$", "", f); n = f; sub(".*/", "", n); sub("\\.ko(\\.(xz|zst|gz))?$", "", n)
      gsub("-", "_", n); if (n == want) { print; exit } }' "$moddir/modules.dep")
  if [ -z "$line" ]; then
    if grep -qE "/${m//_/[-_]}\.ko$" "$moddir/modules.builtin" 2>/dev/null; then
      log "module $m is built into the kernel"
      continue
    fi
    log "module $m is neither in $moddir/modules.dep nor built in"
    exit 1
  fi
  read -r -a fields <<<"$line"
  self=${fields[0]%:}
  for ((i = ${#fields[@]} - 1; i >= 1; i--)); do add_module_file "${fields[$i]}"; done
  add_module_file "$self"
done
: >"$root/lib/modules/load-order"
for rel in "${order[@]}"; do
  plain=${rel%.xz}; plain=${plain%.zst}; plain=${plain%.gz}
  name=$(basename "$plain")
  case $rel in
    *.xz) xz -dc "$moddir/$rel" >"$root/lib/modules/$name" ;;
    *.zst) zstd -qdc "$moddir/$rel" >"$root/lib/modules/$name" ;;
    *.gz) gzip -dc "$moddir/$rel" >"$root/lib/modules/$name" ;;
    *) cp "$moddir/$rel" "$root/lib/modules/$name" ;;
  esac
  echo "$name" >>"$root/lib/modules/load-order"
done
log "initramfs modules: $(tr '\n' ' ' <"$root/lib/modules/load-order")"

find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
  cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9 -n >"$work/initrd.img"

# --- the boot loader configuration -------------------------------------------------------------
cat >"$work/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT lab
PROMPT 0
TIMEOUT 0
LABEL lab
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND $CMDLINE
EOF

# --- the disk ------------------------------------------------------------------------------------
touch -d "@$SOURCE_DATE_EPOCH" "$work/initrd.img" "$work/syslinux.cfg"
disk=$work/disk.raw
truncate -s "${IMAGE_MIB}M" "$disk"
sgdisk -o -U "$DISK_GUID" \
  -n 1:2048:0 -t "1:$ESP_GUID" -u "1:$ESP_PART_GUID" -c 1:"EFI System" -A 1:set:2 "$disk" >/dev/null
start=$(sgdisk -i 1 "$disk" | awk '/^First sector:/ {print $3}')
end=$(sgdisk -i 1 "$disk" | awk '/^Last sector:/ {print $3}')
[ -n "$start" ] && [ -n "$end" ] || { log "sgdisk made no partition 1"; exit 1; }
sectors=$((end - start + 1))
offset=$((start * 512))
# gptmbr.bin: the 440 bytes of boot code before the disk signature and the protective entry.
dd if="$SYSLINUX_MBR" of="$disk" bs=440 count=1 conv=notrunc status=none

img="$disk@@$offset"
export MTOOLS_SKIP_CHECK=1
# -H: the partition's start (hidden sectors), which the boot sector adds to its own LBAs.
mformat -i "$img" -T "$sectors" -h 64 -s 32 -H "$start" -v FERROXLAB -N "$FAT_SERIAL" ::
mmd -i "$img" ::/syslinux ::/EFI ::/EFI/BOOT
mcopy -i "$img" -m "$kernel" ::/vmlinuz
mcopy -i "$img" -m "$work/initrd.img" ::/initrd.img
mcopy -i "$img" -m "$work/syslinux.cfg" ::/syslinux/syslinux.cfg
mcopy -i "$img" -m "$work/syslinux.cfg" ::/EFI/BOOT/syslinux.cfg
mcopy -i "$img" -m "$SYSLINUX_EFI" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$img" -m "$LDLINUX_E64" ::/EFI/BOOT/ldlinux.e64
# The BIOS side: the boot sector and /syslinux/ldlinux.sys + ldlinux.c32.
syslinux --install --offset "$offset" --directory /syslinux "$disk" >&2
mdir -i "$img" -/ -a :: >&2

verify=$(sgdisk -v "$disk")
grep -q "No problems found" <<<"$verify" || { log "sgdisk -v: $verify"; exit 1; }

qemu-img convert -q -f raw -O qcow2 "$disk" "$work/disk.qcow2"
qemu-img compare -q -f raw -F qcow2 "$disk" "$work/disk.qcow2"

# --- the manifest, then everything into place at once ---------------------------------------------
raw_sha=$(sha256sum "$disk" | cut -d' ' -f1)
qcow_sha=$(sha256sum "$work/disk.qcow2" | cut -d' ' -f1)
raw_size=$(stat -c %s "$disk")
qcow_size=$(stat -c %s "$work/disk.qcow2")
cat >"$work/manifest.json" <<EOF
{
  "kernel": "$kver",
  "cmdline": "$CMDLINE",
  "initrd": {"size": $(stat -c %s "$work/initrd.img")},
  "raw": {"path": "disk.raw", "format": "raw", "size": $raw_size, "sha256": "$raw_sha"},
  "qcow2": {"path": "disk.qcow2", "format": "qcow2", "size": $qcow_size, "sha256": "$qcow_sha",
            "virtual_size": $raw_size}
}
EOF
printf '%s  disk.raw\n%s  disk.qcow2\n' "$raw_sha" "$qcow_sha" >"$work/SHA256SUMS"
for f in disk.raw disk.qcow2 manifest.json SHA256SUMS; do mv -f "$work/$f" "$out/$f"; done
echo "$key" >"$out/inputs.sha256"
log "disk.raw $raw_size bytes (sha256 $raw_sha); disk.qcow2 $qcow_size bytes;" \
  "initrd $(stat -c %s "$work/initrd.img") bytes, kernel $(stat -c %s "$kernel") bytes"
echo "$PWD/$out/disk.raw"
