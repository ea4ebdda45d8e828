#!/usr/bin/env bash
# The controller's scale benchmark (issue 5 "Scale"): 1000 BareMetalHosts from manifests through
# one ferrox-controller (embedded store, real agent API over mTLS), with simulated Redfish BMCs
# and simulated agents that use the real agent's client and protocol (tests/scale). Goal on a
# 2-core machine: all provisioned in ≤ 120 s, controller RSS ≤ 200 MB, no host stuck.
# Three runs; writes docs/bench-scale.md.
#
#   hack/bench-scale.sh [ferrox-scale arguments, e.g. --hosts 500 --reps 1]
#
# Loopback only (each simulated BMC on its own 127.1.x.y address). Needs no root. About
# 3 minutes after the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
if [ "$(id -u)" = 0 ]; then hack/deps.sh; fi
cargo build -q --release -p ferrox-controller -p ferrox-scale
exec target/release/ferrox-scale --reps 3 --out docs/bench-scale.md "$@"
