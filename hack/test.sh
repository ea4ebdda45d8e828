#!/usr/bin/env bash
# Runs every Ferrox test: formatting, lints, unit tests and the tests that need root, loop
# devices and real disk tools (those are #[ignore]d in a plain `cargo test`; here they run).
# Installs what it needs first (hack/deps.sh). Run as root on Debian bookworm.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "hack/test.sh: run as root (the tests attach loop devices)" >&2; exit 1; }
hack/deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
# A one-shot run gains nothing from incremental compilation, and its cache is the biggest
# thing in target/.
export CARGO_INCREMENTAL=0

# The disk is shared with other machines' work: say how much there is, so a failure on a
# full disk (lld dies with SIGBUS, QEMU images fail to grow) reads as what it is.
free_gib() { df -B1G --output=avail . | tail -1 | tr -d ' '; }
echo "== disk: $(free_gib) GiB free at start"
[ "$(free_gib)" -ge 12 ] || echo "hack/test.sh: WARNING: under 12 GiB free; a cold build and the VM tests need about that" >&2
trap 'echo "== disk: $(free_gib) GiB free at the end"' EXIT

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== the ramdisk (static agent + initramfs for Debian's kernel; cached) for the boot tests"
hack/build-initramfs.sh >/dev/null
echo "== the lab's OS disk image (cached) for its boot tests"
hack/build-lab-image.sh >/dev/null
echo "== the binaries (the lab and PXE tests run them; built here once, with the features a"
echo "   plain build unifies, so those tests' own 'cargo build' finds them fresh)"
cargo build --workspace --bins --locked
echo "== tests (including the root/loop-device/netns/QEMU ones)"
cargo test --workspace --locked --no-fail-fast -- --include-ignored
