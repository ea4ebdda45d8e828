#!/usr/bin/env bash
# Reads a config drive directory with cloud-init's own reader (DataSourceConfigDrive's
# read_config_drive) and prints what it found as JSON (user data base64-encoded), so tests
# check Ferrox's config drives against the real consumer.
#
# cloud-init is NOT installed system-wide (its package enables boot services): Debian's
# package and its one missing Python dependency are unpacked into a cache directory
# (FERROX_CLOUD_INIT_CACHE, default /var/tmp/ferrox-cloud-init) with `apt-get download` +
# `dpkg -x`, once. Needs python3 with yaml, jinja2, jsonpatch, jsonschema (Debian's
# python3-* packages).
#
# usage: hack/cloud-init-read-config-drive.sh DIR   (DIR holds openstack/…)
set -euo pipefail
dir=${1:?usage: $0 DIR}
cache=${FERROX_CLOUD_INIT_CACHE:-/var/tmp/ferrox-cloud-init}
site=$cache/root/usr/lib/python3/dist-packages
if [ ! -d "$site/cloudinit" ] || [ ! -d "$site/configobj" ]; then
  mkdir -p "$cache"
  (
    cd "$cache"
    for p in cloud-init python3-configobj; do
      ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download -q "$p" >/dev/null 2>&1
      dpkg -x "${p}"_*.deb root
    done
  )
fi
PYTHONPATH=$site python3 - "$dir" <<'PY'
import base64, copy, json, sys
from cloudinit.sources.DataSourceConfigDrive import read_config_drive
from cloudinit.sources.helpers import openstack

res = read_config_drive(sys.argv[1])
ud = res.get("userdata") or b""
if isinstance(ud, str):
    ud = ud.encode()
out = {
    "metadata": res["metadata"],
    "userdata_b64": base64.b64encode(ud).decode(),
    # a copy: convert_net_json rewrites service types in place
    "networkdata": copy.deepcopy(res.get("networkdata")),
    "version": res.get("version"),
}
nd = res.get("networkdata")
if nd:
    macs = {l["ethernet_mac_address"].lower(): l.get("name", "eth%d" % i)
            for i, l in enumerate(nd.get("links", [])) if "ethernet_mac_address" in l}
    out["network_config"] = openstack.convert_net_json(nd, known_macs=macs)
print(json.dumps(out, default=str))
PY
