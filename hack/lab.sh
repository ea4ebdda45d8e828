#!/usr/bin/env bash
# The lab — Ferrox's main job on one machine: virtual bare metal (QEMU VMs under libvirtd, with
# sushy-tools as their Redfish BMCs) provisioned from BareMetalHost manifests by
# ferrox-controller and ferrox-netboot, all inside a network namespace of its own.
#
#   hack/lab.sh [up] [--hosts N]   install, build, bring it up and show each host going
#                                  registering → inspecting → available → provisioning →
#                                  provisioned, then the inspection report, what each host's
#                                  OS printed after booting from its disk, per-phase timings
#   hack/lab.sh status             the hosts, as `kubectl get bmh -o wide` shows them
#   hack/lab.sh down               stop everything the lab started, delete its namespace
#
# Installs what it needs itself (hack/deps.sh, sushy-tools, the ramdisk and the lab's OS
# image), idempotently. Run as root on Debian bookworm. State, logs, disks and consoles are in
# /var/tmp/ferrox-lab (--dir to change).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "hack/lab.sh: run as root (network namespaces, libvirtd)" >&2; exit 1; }
cmd=${1:-up}
[ $# -gt 0 ] && shift
if [ "$cmd" = up ]; then
  hack/deps.sh
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  # The builds' chatter goes to a log, shown only when a step fails.
  log=/var/tmp/ferrox-lab-build.log
  : >"$log"
  step() {
    "$@" >>"$log" 2>&1 || { echo "lab: '$*' failed:" >&2; tail -n 60 "$log" >&2; exit 1; }
  }
  echo "lab: installing sushy-tools, building the ramdisk, the OS image and the binaries (cached; log: $log)"
  step hack/sushy-tools.sh --libvirt
  step hack/build-initramfs.sh
  step hack/build-lab-image.sh
  step cargo build --workspace --bins
fi
exec target/debug/ferrox-lab "$cmd" "$@"
