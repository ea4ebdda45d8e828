#!/usr/bin/env bash
# Runs every Ferrox test: formatting, lints, unit tests and the tests that need root, loop
# devices and real disk tools (those are #[ignore]d in a plain `cargo test`; here they run).
# Installs what it needs first (hack/deps.sh). Run as root on Debian bookworm.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "hack/test.sh: run as root (the tests attach loop devices)" >&2; exit 1; }
hack/deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== the ramdisk (static agent + initramfs for Debian's kernel; cached) for the boot tests"
hack/build-initramfs.sh >/dev/null
echo "== the lab's OS disk image (cached) for its boot tests"
hack/build-lab-image.sh >/dev/null
echo "== tests (including the root/loop-device/netns/QEMU ones)"
cargo test --workspace --locked -- --include-ignored
