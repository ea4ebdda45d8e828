#!/usr/bin/env python3
"""Ramdisk benchmark (issue 4): sizes, and kernel start -> agent ready in guest time.

In one run, same kernel, same QEMU (TCG, 256 MiB, 1 vCPU, virtio-net + virtio-blk + NVMe),
in a network namespace this script creates with dnsmasq as the DHCP server:

  floor:  the same ramdisk with a 3-line static /init that prints the uptime and powers off
          (what the kernel alone costs: decompressing and unpacking the archive, init start)
  ferrox: the real ramdisk, /init = ferrox-agent: mounts, coldplug, DHCP, inventory, ready

Times are the guest's own clock (CLOCK_BOOTTIME as /proc/uptime and the kernel's printk
stamps): under TCG wall time is several times longer and noisier. Writes docs/bench-ramdisk.md.
Run as root:  python3 hack/bench-ramdisk.py [--reps 3]
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = f"fxbench{os.getpid() % 100000}"

FLOOR_INIT = r"""
#include <stdio.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <unistd.h>
int main(void) {
    char buf[64] = "?";
    mount("proc", "/proc", "proc", 0, 0);
    FILE *f = fopen("/proc/uptime", "r");
    if (f) { if (!fgets(buf, sizeof buf, f)) buf[0] = 0; fclose(f); }
    printf("FLOOR-INIT uptime %s\n", buf);
    fflush(stdout);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
"""


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, text=True, capture_output=True, **kw).stdout


def boot(kernel, initrd, append, disks, limit, done):
    with tempfile.TemporaryDirectory() as d:
        serial = os.path.join(d, "serial")
        argv = ["ip", "netns", "exec", NS, "qemu-system-x86_64", "-accel", "tcg", "-m", "256",
                "-nographic", "-nodefaults", "-no-reboot", "-serial", f"file:{serial}",
                "-kernel", kernel, "-initrd", initrd, "-append", f"console=ttyS0 {append}",
                "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
                "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:fe:0b:01",
                "-drive", f"file={disks[0]},if=none,id=d0,format=raw",
                "-device", "virtio-blk-pci,drive=d0,serial=BENCH-VBLK",
                "-drive", f"file={disks[1]},if=none,id=d1,format=raw",
                "-device", "nvme,drive=d1,serial=BENCH-NVME"]
        t = time.monotonic()
        q = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        text = ""
        while time.monotonic() - t < limit:
            time.sleep(0.25)
            text = open(serial, errors="replace").read() if os.path.exists(serial) else ""
            if done(text) or q.poll() is not None:
                break
        wall = time.monotonic() - t
        q.kill()
        q.wait()
        return text, wall


def stamp(text, pattern):
    m = re.search(r"^\[\s*([0-9.]+)\][^\n]*" + pattern, text, re.M)
    return float(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--append", default="", help="extra kernel command line words, for both boots")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench-ramdisk.md"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench-ramdisk: run as root (network namespace, taps)")
    initrd = sh(f"{ROOT}/hack/build-initramfs.sh 2>/dev/null").strip()
    kver = os.path.basename(initrd)[len("ferrox-"):-len(".img")]
    kernel = os.path.join(os.path.dirname(initrd), f"vmlinuz-{kver}")
    work = tempfile.mkdtemp(prefix="fxbench")
    try:
        # The floor ramdisk: same modules, trivial init.
        src = os.path.join(work, "init.c")
        open(src, "w").write(FLOOR_INIT)
        sh(f"musl-gcc -static -Os -o {work}/floor-init {src}")
        floor = os.path.join(work, "floor.img")
        sh(f"{ROOT}/target/release/ferrox-mkinitramfs --agent {work}/floor-init --kernel-version {kver} -o {floor} 2>/dev/null")
        disks = []
        for name, size in (("vblk", 1 << 30), ("nvme", 2 << 30)):
            p = os.path.join(work, name)
            with open(p, "wb") as f:
                f.truncate(size)
            disks.append(p)

        sh(f"ip netns add {NS}")
        for c in ("link add br0 type bridge", "addr add 10.80.0.1/24 dev br0", "link set br0 up",
                  "link set lo up", "tuntap add tap0 mode tap", "link set tap0 master br0", "link set tap0 up"):
            sh(f"ip -n {NS} {c}")
        dns = subprocess.Popen(["ip", "netns", "exec", NS, "dnsmasq", "--no-daemon", "--port=0",
                                "--interface=br0", "--bind-interfaces", "--no-ping", "--leasefile-ro",
                                "--dhcp-range=10.80.0.50,10.80.0.99,255.255.255.0,10m"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            rows = {"floor": [], "ferrox": []}
            for _ in range(args.reps):
                text, wall = boot(kernel, floor, args.append, disks, 120, lambda t: "FLOOR-INIT" in t)
                m = re.search(r"FLOOR-INIT uptime ([0-9.]+)", text)
                rows["floor"].append({"init": float(m.group(1)) if m else None, "wall": wall,
                                      "unpack": stamp(text, "Trying to unpack rootfs"),
                                      "freeing": stamp(text, "Freeing unused kernel image \\(initmem\\)")})
                text, wall = boot(kernel, initrd, f"BOOTIF=01-52-54-00-fe-0b-01 {args.append}", disks, 180,
                                  lambda t: "waiting for commands" in t or "FATAL" in t)
                agent = lambda pat: (lambda m: float(m.group(1)) if m else None)(
                    re.search(r"^\[\s*([0-9.]+)\] ferrox-agent: " + pat, text, re.M))
                ready = re.search(r"ready at ([0-9.]+) s after kernel start", text)
                rows["ferrox"].append({"start": agent("starting"), "coldplug": agent("coldplug"),
                                       "network": agent("network"), "ready": float(ready.group(1)) if ready else None,
                                       "wall": wall, "modules": (re.search(r"coldplug: (\d+) modules", text) or [None, "?"])[1]})
        finally:
            dns.kill()
            dns.wait()
            subprocess.run(["ip", "netns", "del", NS])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(key, rs):
        v = [r[key] for r in rs if r[key] is not None]
        return statistics.median(v) if v else float("nan")

    f, a = rows["floor"], rows["ferrox"]
    size = os.path.getsize(initrd)
    lines = [
        "# Ramdisk benchmark", "",
        f"Generated by `python3 hack/bench-ramdisk.py --reps {args.reps}` (guest clock, QEMU TCG, 256 MiB, "
        "1 vCPU, virtio-net + virtio-blk + NVMe, dnsmasq in a network namespace). Medians.", "",
        "| what | value |", "|---|---|",
        f"| ramdisk (zstd cpio) | {size / 1e6:.1f} MB (goal ≤ 12 MB) |",
        f"| kernel (Debian {kver}) | {os.path.getsize(kernel) / 1e6:.1f} MB |",
        f"| floor: kernel start → trivial /init (same archive) | {med('init', f):.2f} s |",
        f"| floor: of which unpacking the archive | {med('freeing', f) - med('unpack', f):.2f} s |",
        f"| ferrox: kernel start → agent started | {med('start', a):.2f} s |",
        f"| ferrox: coldplug done ({a[0]['modules']} modules) | {med('coldplug', a):.2f} s |",
        f"| ferrox: network up (DHCP) | {med('network', a):.2f} s |",
        f"| ferrox: **agent ready** (network up, inventory taken) | **{med('ready', a):.2f} s** |",
        f"| ready / floor | {med('ready', a) / med('init', f):.2f}× |",
        f"| agent's own share (ready − agent started) | {med('ready', a) - med('start', a):.2f} s (goal: whole path ≤ 2 s) |",
        f"| wall time per boot, floor / ferrox | {med('wall', f):.1f} s / {med('wall', a):.1f} s |",
        "",
    ]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    open(args.out, "w").write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
