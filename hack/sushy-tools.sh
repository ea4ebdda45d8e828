#!/usr/bin/env bash
# Installs sushy-tools (the Redfish BMC emulator Ironic's and metal3's CI use) into a venv at
# /opt/ferrox/sushy-venv and prints the path of its `sushy-emulator`. Idempotent: a venv that
# already holds the pinned version is left alone. The controller-redfish tests call this
# themselves, so they work on a fresh machine. Needs root (writes /opt) and python3-venv
# (hack/deps.sh). With --libvirt it also installs libvirt-python (pip builds it against
# libvirt-dev via pkg-config, hack/deps.sh), for the libvirt driver the lab uses.
set -euo pipefail

SUSHY_TOOLS_VERSION=2.2.0
LIBVIRT_PYTHON_VERSION=12.8.0
WITH_LIBVIRT=0
[ "${1:-}" = --libvirt ] && WITH_LIBVIRT=1
VENV=${FERROX_SUSHY_VENV:-/opt/ferrox/sushy-venv}
EMULATOR="$VENV/bin/sushy-emulator"

installed() {
  [ -x "$EMULATOR" ] &&
    [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("sushy-tools"))' 2>/dev/null)" = "$SUSHY_TOOLS_VERSION" ] &&
    "$VENV/bin/python" -c 'import bcrypt' 2>/dev/null &&
    { [ "$WITH_LIBVIRT" = 0 ] || "$VENV/bin/python" -c 'import libvirt' 2>/dev/null; }
}

if ! installed; then
  # Serialise concurrent installs (tests run in parallel threads, each may call this script).
  mkdir -p "$(dirname "$VENV")"
  exec 9>"$VENV.lock"
  flock 9
  if ! installed; then
    echo "sushy-tools: installing $SUSHY_TOOLS_VERSION into $VENV" >&2
    # Debian's interpreter when present (python3-venv is packaged for it), else whatever python3 is.
    PY=python3
    [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null && PY=/usr/bin/python3
    [ -x "$VENV/bin/pip" ] || "$PY" -m venv "$VENV"
    pkgs=("sushy-tools==$SUSHY_TOOLS_VERSION" bcrypt)
    [ "$WITH_LIBVIRT" = 1 ] && pkgs+=("libvirt-python==$LIBVIRT_PYTHON_VERSION")
    "$VENV/bin/pip" install -q --disable-pip-version-check "${pkgs[@]}" >&2
  fi
fi
echo "$EMULATOR"
