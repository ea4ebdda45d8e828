#!/usr/bin/env bash
# Runs each fuzz target of agent/fuzz for SECONDS (default 60) with cargo-fuzz, growing the
# committed corpora under agent/fuzz/corpus/, then minimizes them (cargo fuzz cmin) so what
# is committed stays small (inputs up to 64 KiB: a whole qcow2 with its tables fits). The toolchain is stable; RUSTC_BOOTSTRAP lets
# cargo-fuzz use the sanitizer flags. Seeds come from real tools (qemu-img, zstd, gzip, xz).
set -euo pipefail
cd "$(dirname "$0")/../agent/fuzz"
SECONDS_EACH=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
TARGETS=(image_decode checksum_file root_device_hints smbios cmdline dhcp_reply)
for t in "${TARGETS[@]}"; do mkdir -p "corpus/$t"; done
if [ -z "$(ls corpus/image_decode)" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  head -c 12000 /dev/urandom > "$tmp/r.raw"; truncate -s 64K "$tmp/r.raw"
  qemu-img convert -f raw -O qcow2 -o cluster_size=4096 "$tmp/r.raw" corpus/image_decode/small.qcow2
  qemu-img convert -c -f raw -O qcow2 -o cluster_size=4096 "$tmp/r.raw" corpus/image_decode/deflate.qcow2
  head -c 8000 "$tmp/r.raw" | zstd -q -c > corpus/image_decode/a.zst
  head -c 8000 "$tmp/r.raw" | gzip -c > corpus/image_decode/a.gz
  head -c 8000 "$tmp/r.raw" | xz -c > corpus/image_decode/a.xz
  printf 'SHA256 (disk.qcow2) = %064d\n' 0 > corpus/checksum_file/bsd
  printf '%064d  disk.qcow2\n%064d *other\n' 1 2 > corpus/checksum_file/gnu
  echo '{"deviceName":"/dev/sda","minSizeGigabytes":10,"rotational":false}' > corpus/root_device_hints/a.json
  cp /sys/firmware/dmi/tables/DMI corpus/smbios/host 2>/dev/null || true
fi
[ -n "$(ls corpus/cmdline)" ] || echo 'initrd=initramfs BOOTIF=01-52-54-00-12-34-56 ferrox.controller=https://10.0.0.1:8443 ferrox.ca=sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0 ferrox.token=3q2-7Fz_k9 ferrox.vlan=7 ferrox.fatal=poweroff' > corpus/cmdline/netboot
for t in "${TARGETS[@]}"; do
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=512 -max_len=65536
  cargo fuzz cmin "$t" "corpus/$t"
done
