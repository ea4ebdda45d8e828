#!/usr/bin/env bash
# Runs each netboot fuzz target for SECONDS (default 60) with cargo-fuzz, growing the corpora
# committed under netboot/fuzz/corpus/ (seeded, when empty, with the packets real clients send:
# PXE ROM, UEFI, iPXE and OS DISCOVER/REQUEST, relayed requests; TFTP requests with options).
# The toolchain is stable; RUSTC_BOOTSTRAP lets cargo-fuzz use the sanitizer flags.
# netboot/tests/fuzz_corpus.rs replays the corpora in a plain `cargo test`.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
mkdir -p corpus/dhcp_decide corpus/tftp_request
if [ -z "$(ls corpus/dhcp_decide)" ]; then
  python3 - <<'PY'
import struct
def dhcp(sel, mtype, mac_last, opts=b"", giaddr=b"\0"*4, ciaddr=b"\0"*4):
    hdr = struct.pack("!BBBBIHH", 1, 1, 6, 0, 0x1234 + mac_last, 0, 0x8000)
    hdr += ciaddr + b"\0"*4 + b"\0"*4 + giaddr
    hdr += bytes([0x52, 0x54, 0, 0, 0, mac_last]) + b"\0"*10 + b"\0"*192
    body = hdr + bytes([99, 130, 83, 99, 53, 1, mtype]) + opts + b"\xff"
    return bytes([sel]) + body
pxe_bios = bytes([60, 32]) + b"PXEClient:Arch:00000:UNDI:002001" + bytes([93, 2, 0, 0])
pxe_uefi = bytes([60, 32]) + b"PXEClient:Arch:00007:UNDI:003016" + bytes([93, 2, 0, 7])
http = bytes([60, 33]) + b"HTTPClient:Arch:00016:UNDI:003001" + bytes([93, 2, 0, 16])
ipxe = bytes([77, 4]) + b"iPXE" + bytes([175, 3, 0xb1, 1, 1])
req50 = bytes([50, 4, 10, 0, 0, 50, 54, 4, 10, 0, 0, 1])
seeds = {
    "full-bios-discover": dhcp(0, 1, 1, pxe_bios),
    "full-uefi-discover-unknown": dhcp(2, 1, 9, pxe_uefi),
    "full-http-discover": dhcp(0, 1, 2, http),
    "full-ipxe-discover": dhcp(0, 1, 1, ipxe),
    "full-request": dhcp(0, 3, 1, req50),
    "full-renew": dhcp(0, 3, 1, b"", ciaddr=bytes([10, 0, 0, 50])),
    "full-release": dhcp(0, 7, 2, b"", ciaddr=bytes([10, 0, 0, 100])),
    "full-decline": dhcp(0, 4, 2, bytes([50, 4, 10, 0, 0, 100])),
    "full-inform": dhcp(0, 8, 2, b"", ciaddr=bytes([10, 0, 0, 7])),
    "relayed-discover": dhcp(2, 1, 5, pxe_bios, giaddr=bytes([10, 9, 0, 1])),
    "proxy-discover": dhcp(1, 1, 1, pxe_bios),
    "proxy-4011-request": dhcp(5, 3, 1, pxe_uefi, ciaddr=bytes([10, 0, 0, 77])),
    "long-options": dhcp(0, 1, 1, bytes([224, 255]) + b"\xab"*255 + bytes([224, 10]) + b"\xcd"*10 + bytes([55, 4, 1, 3, 6, 67])),
}
for name, b in seeds.items():
    open(f"corpus/dhcp_decide/{name}", "wb").write(b)
def tftp(op, name, mode=b"octet", opts=()):
    b = struct.pack("!H", op) + name + b"\0" + mode + b"\0"
    for k, v in opts:
        b += k + b"\0" + v + b"\0"
    return b
tseeds = {
    "plain": tftp(1, b"undionly.kpxe"),
    "options": tftp(1, b"ipxe.efi", opts=[(b"blksize", b"1468"), (b"tsize", b"0"), (b"windowsize", b"16"), (b"timeout", b"2")]),
    "wrq": tftp(2, b"x"),
    "traversal": tftp(1, b"../../etc/passwd", b"netascii"),
    "absurd": tftp(1, b"a", opts=[(b"blksize", b"0"), (b"windowsize", b"99999999")]),
    "ack": b"\0\x04\0\x01",
}
for name, b in tseeds.items():
    open(f"corpus/tftp_request/{name}", "wb").write(b)
PY
fi
for t in dhcp_decide tftp_request; do
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=1024 -max_len=4096
done
