#!/usr/bin/env bash
# Ferrox's main job, for now (the lab replaces it later): build the agent and run it for real
# against loop devices — inspect this machine, metadata-wipe a disk that holds a GPT, ext4 and
# swap, then stream a qcow2 image over HTTP onto it and check the disk reads back the image.
# Installs what it needs (hack/deps.sh). Run as root. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "hack/demo.sh: run as root (it attaches loop devices)" >&2; exit 1; }
hack/deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

echo "== building ferrox-agent (release)"
cargo build --release --locked -p ferrox-agent
AGENT=$PWD/target/release/ferrox-agent
WORK=${FERROX_DEMO_DIR:-/tmp/ferrox-demo}
rm -rf "$WORK"; mkdir -p "$WORK"

LOOPS=(); HTTP_PID=
cleanup() {
  [ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null || true
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
}
trap cleanup EXIT
# A loop device can carry partitions the kernel kept from a file attached there before
# (added with BLKPG by partx/parted); drop them so tools see only our file.
attach() {
  local l; l=$(losetup --find --show "$@"); LOOPS+=("$l")
  if compgen -G "/sys/block/${l#/dev/}/${l#/dev/}p*" >/dev/null; then partx -d "$l"; fi
  echo "$l"
}

echo "== making an OS image: GPT disk, one ext4 partition (256 MiB raw, then qcow2)"
truncate -s 256M "$WORK/os.raw"
sgdisk -o -n 1:2048:0 -t 1:8300 -c 1:root "$WORK/os.raw" >/dev/null
P=$(attach -o $((2048 * 512)) --sizelimit $(((256 * 2048 - 2048 - 34) * 512)) "$WORK/os.raw")
mkdir -p "$WORK/rootfs/etc" && cp -r agent/src agent/proto "$WORK/rootfs/" && echo ferrox-demo > "$WORK/rootfs/etc/hostname"
mkfs.ext4 -q -L root -d "$WORK/rootfs" "$P"   # a real filesystem with some files in it
losetup -d "$P"
qemu-img convert -f raw -O qcow2 "$WORK/os.raw" "$WORK/os.qcow2"
( cd "$WORK" && sha256sum os.qcow2 > SHA256SUMS )

echo "== a target disk that holds old data: GPT, ext4, swap"
truncate -s 512M "$WORK/disk0.img"
sgdisk -o -n 1:2048:+200M -n 2:0:+100M "$WORK/disk0.img" >/dev/null
P=$(attach -o $((2048 * 512)) --sizelimit $((200 << 20)) "$WORK/disk0.img"); mkfs.ext4 -q "$P"; losetup -d "$P"
P=$(attach -o $(((2048 + 409600) * 512)) --sizelimit $((100 << 20)) "$WORK/disk0.img"); mkswap -q "$P" >/dev/null; losetup -d "$P"
DISK=$(attach "$WORK/disk0.img")

echo
echo "== ferrox-agent inspect   (metal3 HardwareDetails; first 40 lines)"
"$AGENT" inspect | tee "$WORK/inspect.json" | head -40
echo "   ... $(wc -l < "$WORK/inspect.json") lines in $WORK/inspect.json"

echo
echo "== before the wipe: wipefs --no-act $DISK (and the partitions, via offset loop devices)"
wipefs --no-act "$DISK" || true
echo
echo "== ferrox-agent wipe --mode metadata $DISK"
"$AGENT" wipe --mode metadata "$DISK"
echo "== after the wipe: wipefs --no-act and blkid -p find:"
wipefs --no-act "$DISK"; blkid -p "$DISK" || echo "   (blkid -p: nothing, exit $?)"

echo
echo "== ferrox-agent write-image (qcow2 over HTTP, sha256 from a checksum file URL)"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK" >"$WORK/http.log" 2>&1 &
HTTP_PID=$!
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/SHA256SUMS" && break; sleep 0.1; done
"$AGENT" write-image --url "http://127.0.0.1:$PORT/os.qcow2" \
  --checksum "sha256:http://127.0.0.1:$PORT/SHA256SUMS" --device "$DISK" --progress json
echo
echo "== check: the disk's first 256 MiB equal the image"
cmp -n $((256 << 20)) "$WORK/os.raw" "$DISK" && echo "   identical"
echo "== and the disk now carries:"
wipefs --no-act "$DISK"
echo
echo "demo done: inspect, metadata wipe and a qcow2 image write on $DISK"
