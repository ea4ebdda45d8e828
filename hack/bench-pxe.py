#!/usr/bin/env python3
"""Real PXE boot, ferrox-netboot vs dnsmasq, same VM, same run (issue 3's last speed goal).

A QEMU VM (TCG, SeaBIOS, e1000 with its iPXE ROM) powers on in a network namespace this script
creates and PXE-boots Debian's kernel and a tiny initramfs whose /init prints a marker; the time
is power-on -> marker on the serial console (wall clock). Served by:

  ferrox-netboot: full mode, defaults (DHCP, TFTP undionly.kpxe, per-host iPXE script over HTTP,
                  kernel + initramfs over HTTP, IPv6 RA answered)
  dnsmasq tuned:  Debian's dnsmasq as the shared/peers/dnsmasq notes tune it: --no-ping, an IPv6
                  RA (ra-only), iPXE option 175.176=1, its own TFTP for undionly.kpxe, and
                  `python3 -m http.server` for the script, kernel and initramfs

Runs alternate (A B A B ...). Writes docs/bench-pxe.md. Run as root: python3 hack/bench-pxe.py
"""

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = f"fxpxeb{os.getpid() % 100000}"
MAC = "52:54:00:fe:20:01"
MARKER = "FERROX-BENCH-PXE-INIT"
INIT_C = r"""
#include <stdio.h>
#include <sys/reboot.h>
#include <unistd.h>
int main(void) { printf("\n%s\n", "FERROX-BENCH-PXE-INIT"); fflush(stdout); sync(); reboot(RB_POWER_OFF); return 0; }
"""


def sh(cmd):
    return subprocess.run(cmd, shell=True, check=True, text=True, capture_output=True).stdout


def spawn(argv, log):
    return subprocess.Popen(["ip", "netns", "exec", NS] + argv, stdin=subprocess.DEVNULL,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def stop(p):
    p.kill()
    p.wait()


def boot(work, tag, limit=180):
    serial = os.path.join(work, f"serial-{tag}.log")
    if os.path.exists(serial):
        os.unlink(serial)
    t = time.monotonic()
    q = spawn(["qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", "256", "-smp", "1",
               "-display", "none", "-monitor", "none", "-no-reboot", "-serial", f"file:{serial}",
               "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
               "-device", f"e1000,netdev=n0,mac={MAC}", "-boot", "n"], os.path.join(work, "qemu.log"))
    took = None
    while time.monotonic() - t < limit:
        time.sleep(0.1)
        if os.path.exists(serial) and MARKER in open(serial, errors="replace").read():
            took = time.monotonic() - t
            break
    stop(q)
    return took


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench-pxe.md"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench-pxe: run as root")
    sh(f"cd {ROOT} && cargo build --release -q -p ferrox-netboot -p ferrox-mkinitramfs")
    kernel = sorted(glob.glob("/boot/vmlinuz-*"))[-1]
    kver = os.path.basename(kernel)[len("vmlinuz-"):]
    work = tempfile.mkdtemp(prefix="fxbenchpxe")
    procs = []
    try:
        open(f"{work}/init.c", "w").write(INIT_C)
        sh(f"musl-gcc -static -Os -o {work}/init {work}/init.c")
        www = os.path.join(work, "www")
        os.makedirs(www)
        initrd = os.path.join(www, "initrd.img")
        sh(f"{ROOT}/target/release/ferrox-mkinitramfs --agent {work}/init --kernel-version {kver} "
           f"--modules e1000 -o {initrd} 2>/dev/null")
        shutil.copy(kernel, os.path.join(www, "vmlinuz"))
        cmdline = "console=ttyS0 quiet panic=-1"
        open(os.path.join(www, "boot.ipxe"), "w").write(
            "#!ipxe\nkernel http://10.82.0.1:8081/vmlinuz initrd=initrd.img " + cmdline +
            "\ninitrd http://10.82.0.1:8081/initrd.img\nboot\n")
        open(os.path.join(work, "hosts.yaml"), "w").write(f'hosts:\n  - mac: "{MAC}"\n    ip: 10.82.0.50\n')

        sh(f"ip netns add {NS}")
        for c in ("link add br0 type bridge", "addr add 10.82.0.1/24 dev br0", "addr add fd82::1/64 dev br0",
                  "link set br0 up", "link set lo up", "tuntap add tap0 mode tap",
                  "link set tap0 master br0", "link set tap0 up"):
            sh(f"ip -n {NS} {c}")
        time.sleep(2)  # IPv6 DAD on br0

        def ferrox():
            return [spawn([f"{ROOT}/target/release/ferrox-netboot", "--pool",
                           "10.82.0.0/24,10.82.0.100-10.82.0.150,router=10.82.0.1",
                           "--hosts", f"{work}/hosts.yaml", "--kernel", os.path.join(www, "vmlinuz"),
                           "--initramfs", initrd, "--cmdline", cmdline], f"{work}/ferrox.log")]

        def dnsmasq():
            return [
                spawn(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--interface=br0",
                       "--bind-interfaces", "--no-ping", "--leasefile-ro",
                       "--dhcp-range=10.82.0.100,10.82.0.150,255.255.255.0,1h",
                       "--enable-ra", "--dhcp-range=::,constructor:br0,ra-only",
                       "--enable-tftp", "--tftp-root=/usr/lib/ipxe",
                       "--dhcp-userclass=set:ipxe,iPXE",
                       "--dhcp-boot=tag:!ipxe,undionly.kpxe",
                       "--dhcp-boot=tag:ipxe,http://10.82.0.1:8081/boot.ipxe",
                       "--dhcp-option=tag:ipxe,encap:175,176,1b"], f"{work}/dnsmasq.log"),
                spawn(["python3", "-m", "http.server", "8081", "--bind", "10.82.0.1", "--directory", www],
                      f"{work}/http.log"),
            ]

        results = {"ferrox-netboot": [], "dnsmasq tuned": []}
        for _ in range(args.reps):
            for name, start in (("ferrox-netboot", ferrox), ("dnsmasq tuned", dnsmasq)):
                procs = start()
                time.sleep(1)
                took = boot(work, name.split()[0])
                for p in procs:
                    stop(p)
                procs = []
                results[name].append(took)
                print(f"{name}: {took if took is None else round(took, 2)} s", flush=True)
    finally:
        for p in procs:
            stop(p)
        subprocess.run(["ip", "netns", "del", NS])
        shutil.rmtree(work, ignore_errors=True)

    def med(v):
        v = [x for x in v if x is not None]
        return statistics.median(v) if v else float("nan")

    f, d = results["ferrox-netboot"], results["dnsmasq tuned"]
    fmt = lambda v: ", ".join("fail" if x is None else f"{x:.1f}" for x in v)
    lines = ["# Real PXE boot: ferrox-netboot vs dnsmasq", "",
             f"Generated by `python3 hack/bench-pxe.py --reps {args.reps}`: QEMU TCG, SeaBIOS, e1000 iPXE ROM, "
             "power-on → tiny initramfs /init running (wall clock), alternating runs in one session.", "",
             "| server | runs (s) | median (s) |", "|---|---|---|",
             f"| ferrox-netboot (defaults) | {fmt(f)} | {med(f):.1f} |",
             f"| dnsmasq tuned (no-ping, RA, 175.176=1) + python http.server | {fmt(d)} | {med(d):.1f} |",
             "", f"ferrox / dnsmasq: **{med(f) / med(d):.2f}×** (goal ≤ 1.0×).", ""]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    open(args.out, "w").write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
