#!/usr/bin/env bash
# Builds what the lab speed benchmark (hack/bench-lab.sh, `ferrox-lab bench`) needs on top of
# the lab's image and the ramdisk:
#
#   target/lab-image/disk-1g.raw  the lab image (hack/build-lab-image.sh) grown to 1 GiB: its
#                                 ESP unchanged, plus partition 2 ("bench-fill") filled with
#                                 incompressible pseudo-random bytes (AES-CTR of zeros under a
#                                 fixed key: the same bytes every build), so no writer can skip
#                                 any of it as zeros or compress it away. Still boots under BIOS
#                                 and UEFI and prints its FERROX-LAB: lines.
#   target/lab-image/floor.img    the floor ramdisk: the real ramdisk (hack/build-initramfs.sh)
#                                 with a gzip cpio appended whose /init (busybox) replaces the
#                                 agent's. The kernel unpacks the same archive plus ~1 MB, so
#                                 iPXE fetches and the kernel unpacks what the agent's boot does.
#                                 /init prints its uptime at once (the bare kernel boot floor),
#                                 loads virtio_net + virtio_blk, takes a DHCP lease, then copies
#                                 http://172.22.0.1:8082/disk.raw onto /dev/vda with floorcopy
#                                 (hack/lab-image/floorcopy.c: 4 MiB socket reads, O_DIRECT
#                                 writes from a second thread, fsync: the raw copy floor), prints
#                                 the seconds it took; then streams the image once more through
#                                 the agent's own download and SHA-256 stages, writing nothing
#                                 (`ferrox-agent checksum-image`: the verified-copy floor, as a
#                                 verified write cannot beat its own hash), prints that and
#                                 powers off.
#
# Prints nothing on stdout; rebuilt when an input changes. Run as root after
# hack/build-initramfs.sh and hack/build-lab-image.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "build-bench-lab: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }

out=target/lab-image
base=$out/disk.raw
ramdisk=$(ls target/initramfs/ferrox-*.img 2>/dev/null | sort -V | tail -1)
[ -f "$base" ] || { log "$base is missing: run hack/build-lab-image.sh"; exit 1; }
[ -n "$ramdisk" ] || { log "target/initramfs/ferrox-*.img is missing: run hack/build-initramfs.sh"; exit 1; }
kver=$(basename "$ramdisk" .img)
kver=${kver#ferrox-}
exec 9>"$out/.bench-lock"
flock 9

# --- the 1 GiB image ---------------------------------------------------------------------------
key=$(cat "$0" "$base" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$out/disk-1g.inputs" 2>/dev/null)" != "$key" ] || [ ! -f "$out/disk-1g.raw" ]; then
  log "building $out/disk-1g.raw"
  tmp=$out/.disk-1g.raw.tmp
  cp "$base" "$tmp"
  truncate -s 1G "$tmp"
  # The backup GPT to the new end, then partition 2 over all the free space.
  sgdisk -e "$tmp" >/dev/null
  sgdisk -n 2:0:0 -t 2:8300 -u 2:7b1e2f00-4a5b-4c6d-8e7f-901a2b3c4d5e -c 2:bench-fill "$tmp" >/dev/null
  first=$(sgdisk -i 2 "$tmp" | awk '/^First sector:/ {print $3}')
  last=$(sgdisk -i 2 "$tmp" | awk '/^Last sector:/ {print $3}')
  bytes=$(((last - first + 1) * 512))
  # openssl dies of SIGPIPE when head has enough: not a failure.
  { openssl enc -aes-128-ctr -nosalt -K 4645525230582d42454e43482d46494c -iv 0 </dev/zero 2>/dev/null || true; } |
    head -c "$bytes" | dd of="$tmp" bs=4M seek="$((first * 512))" oflag=seek_bytes conv=notrunc status=none
  verify=$(sgdisk -v "$tmp")
  grep -q "No problems found" <<<"$verify" || { log "sgdisk -v: $verify"; exit 1; }
  mv -f "$tmp" "$out/disk-1g.raw"
  echo "$key" >"$out/disk-1g.inputs"
  log "disk-1g.raw: $(stat -c %s "$out/disk-1g.raw") bytes, partition 2 $bytes pseudo-random bytes"
fi

# --- the floor ramdisk ---------------------------------------------------------------------------
agent=$(hack/build-static-agent.sh)
key=$(cat "$0" "$ramdisk" /bin/busybox hack/lab-image/floorcopy.c "$agent" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$out/floor.inputs" 2>/dev/null)" != "$key" ] || [ ! -f "$out/floor.img" ]; then
  log "building $out/floor.img (kernel $kver)"
  work=$(mktemp -d "$out/.floor.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  root=$work/root
  mkdir -p "$root"/{bin,floor}
  cp /bin/busybox "$root/bin/busybox"
  cp "$agent" "$root/floor/ferrox-agent"
  musl-gcc -static -O2 -Wall -Werror -o "$root/bin/floorcopy" hack/lab-image/floorcopy.c -lpthread
  : >"$root/floor/load-order"
  modprobe -S "$kver" -a --show-depends virtio_net virtio_blk virtio_pci | awk '$1 == "insmod" {print $2}' |
    while read -r ko; do
      name=$(basename "${ko%.xz}")
      grep -qx "$name" "$root/floor/load-order" && continue
      case $ko in
        *.xz) xz -dc "$ko" >"$root/floor/$name" ;;
        *) cp "$ko" "$root/floor/$name" ;;
      esac
      echo "$name" >>"$root/floor/load-order"
    done
  cat >"$root/floor/udhcpc.script" <<'EOF'
#!/bin/busybox sh
[ "$1" = bound ] && ifconfig "$interface" "$ip" netmask "$subnet" up
exit 0
EOF
  cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
up=$(cut -d' ' -f1 /proc/uptime)
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo "FLOOR-INIT up $up s after kernel start"
while read -r m; do insmod "/floor/$m"; done </floor/load-order
ifconfig eth0 up
udhcpc -i eth0 -q -f -n -t 30 -T 1 -s /floor/udhcpc.script >/dev/null 2>&1
echo "FLOOR-NET up $(cut -d' ' -f1 /proc/uptime) s after kernel start ($(ifconfig eth0 | grep -o 'inet addr:[0-9.]*'))"
t0=$(cut -d' ' -f1 /proc/uptime)
floorcopy 172.22.0.1 8082 disk.raw /dev/vda >/tmp/copy 2>&1
t1=$(cut -d' ' -f1 /proc/uptime)
echo "FLOOR-COPY $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') s: floorcopy says $(cat /tmp/copy) (bytes, seconds)"
t0=$(cut -d' ' -f1 /proc/uptime)
/floor/ferrox-agent checksum-image --url http://172.22.0.1:8082/disk.raw --algo sha256 >/tmp/sum 2>/tmp/sum.err
t1=$(cut -d' ' -f1 /proc/uptime)
echo "FLOOR-HASH $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') s: $(tr -d ' \n' </tmp/sum | grep -o '"checksum":"[0-9a-f]*"\|"hash":[0-9.]*' | tr '\n' ' ')$([ -s /tmp/sum ] || tail -c 300 /tmp/sum.err)"
poweroff -f
EOF
  chmod 0755 "$root/init" "$root/floor/udhcpc.script" "$root/bin/busybox" "$root/bin/floorcopy" "$root/floor/ferrox-agent"
  find "$root" -exec touch -h -d @0 {} +
  (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) |
    gzip -9 -n >"$work/overlay.cpio.gz"
  cat "$ramdisk" "$work/overlay.cpio.gz" >"$work/floor.img"
  mv -f "$work/floor.img" "$out/floor.img"
  echo "$key" >"$out/floor.inputs"
  log "floor.img: $(stat -c %s "$out/floor.img") bytes ($(stat -c %s "$work/overlay.cpio.gz") appended)"
fi
