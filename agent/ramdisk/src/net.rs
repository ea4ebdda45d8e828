//! Bringing the boot network up: find the NIC named by BOOTIF (or every Ethernet NIC), set it
//! up, wait for carrier, optionally put it on a VLAN, get a lease and configure it.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cmdline::Mac;
use crate::dhcp::{self, DhcpError, Lease};

/// A configured interface.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Configured {
    /// The interface carrying the address (`eth0` or `eth0.100`).
    pub ifname: String,
    /// Its MAC.
    pub mac: String,
    /// The lease it got.
    pub lease: Lease,
    /// Milliseconds from link up to carrier and an operational link.
    pub carrier_ms: u64,
    /// Milliseconds the DHCP exchange took.
    pub dhcp_ms: u64,
}

/// Why the network could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No NIC at all (missing driver module?).
    #[error("no network interface with MAC {0} (BOOTIF); the NICs present are: {1}")]
    NoBootif(String, String),
    /// No Ethernet NIC.
    #[error("no Ethernet interface at all: is the NIC's driver module in the initramfs?")]
    NoNic,
    /// None had carrier in time.
    #[error("no carrier on {0} after {1} s: is the cable in, the switch port up?")]
    NoCarrier(String, u64),
    /// An interface operation failed.
    #[error("setting up {ifname}: {what}")]
    Setup {
        /// Interface.
        ifname: String,
        /// What.
        what: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// DHCP failed on every candidate.
    #[error(transparent)]
    Dhcp(#[from] DhcpError),
}

/// An Ethernet interface under `sys_class_net` (`/sys/class/net`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Name.
    pub name: String,
    /// MAC as the kernel shows it.
    pub mac: Mac,
}

/// The Ethernet NICs (type 1, not loopback, not virtual-without-device), sorted by name.
pub fn nics(sys_class_net: &Path) -> Vec<Nic> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(sys_class_net) else {
        return out;
    };
    for e in rd.flatten() {
        let dir = e.path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        if read("type").trim() != "1" || !dir.join("device").exists() {
            continue;
        }
        if let (Some(name), Some(mac)) = (
            e.file_name().to_str().map(str::to_string),
            Mac::parse(read("address").trim()),
        ) {
            out.push(Nic { name, mac });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The interfaces to try: the BOOTIF one if given, else all.
pub fn candidates(all: &[Nic], bootif: Option<Mac>) -> Result<Vec<Nic>, NetError> {
    if all.is_empty() {
        return Err(NetError::NoNic);
    }
    match bootif {
        Some(mac) => {
            let found: Vec<Nic> = all.iter().filter(|n| n.mac == mac).cloned().collect();
            if found.is_empty() {
                let present: Vec<String> = all
                    .iter()
                    .map(|n| format!("{} ({})", n.name, n.mac))
                    .collect();
                return Err(NetError::NoBootif(mac.to_string(), present.join(", ")));
            }
            Ok(found)
        }
        None => Ok(all.to_vec()),
    }
}

/// Whether `name` has carrier. Not also operstate "up": the kernel sets that from its link
/// watcher, which runs at most once a second, so a NIC with carrier before it was brought up
/// (virtio-net) shows "down" for up to a second while it already sends. Its queue is live
/// from the moment it is up with carrier; a NIC that gains carrier later (e1000 after
/// autonegotiation) gets its queue within milliseconds, and a DISCOVER lost in between is
/// resent 250 ms later.
fn carrier(sys_class_net: &Path, name: &str) -> bool {
    std::fs::read_to_string(sys_class_net.join(name).join("carrier")).is_ok_and(|c| c.trim() == "1")
}

/// Brings up the boot network: every candidate is set up, the first to get carrier within
/// `carrier_wait` gets DHCP (on `VLAN` if asked).
pub fn bring_up(
    sys_class_net: &Path,
    bootif: Option<Mac>,
    vlan: Option<u16>,
    carrier_wait: Duration,
    dhcp_attempts: u32,
) -> Result<Configured, NetError> {
    let cands = candidates(&nics(sys_class_net), bootif)?;
    for n in &cands {
        agent_sys::netif::set_up(&n.name).map_err(|source| NetError::Setup {
            ifname: n.name.clone(),
            what: "link up",
            source,
        })?;
    }
    let start = Instant::now();
    let with_carrier = loop {
        if let Some(n) = cands.iter().find(|n| carrier(sys_class_net, &n.name)) {
            break n.clone();
        }
        if start.elapsed() > carrier_wait {
            let names: Vec<&str> = cands.iter().map(|n| n.name.as_str()).collect();
            return Err(NetError::NoCarrier(
                names.join(", "),
                carrier_wait.as_secs(),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let ifname = match vlan {
        Some(vid) => {
            let v = agent_sys::netif::add_vlan(&with_carrier.name, vid).map_err(|source| {
                NetError::Setup {
                    ifname: with_carrier.name.clone(),
                    what: "creating the VLAN interface (is 8021q loaded?)",
                    source,
                }
            })?;
            agent_sys::netif::set_up(&v).map_err(|source| NetError::Setup {
                ifname: v.clone(),
                what: "link up",
                source,
            })?;
            v
        }
        None => with_carrier.name.clone(),
    };
    let carrier_ms = start.elapsed().as_millis() as u64;
    let t = Instant::now();
    let lease = dhcp::acquire(&ifname, with_carrier.mac, dhcp_attempts)?;
    let dhcp_ms = t.elapsed().as_millis() as u64;
    configure(&ifname, &lease)?;
    Ok(Configured {
        ifname,
        mac: with_carrier.mac.to_string(),
        lease,
        carrier_ms,
        dhcp_ms,
    })
}

/// Puts `lease` on `ifname`: address, prefix, default route.
pub fn configure(ifname: &str, lease: &Lease) -> Result<(), NetError> {
    agent_sys::netif::set_ipv4(ifname, lease.address, lease.prefix).map_err(|source| {
        NetError::Setup {
            ifname: ifname.into(),
            what: "setting the address",
            source,
        }
    })?;
    if let Some(gw) = lease.router {
        agent_sys::netif::add_default_route(ifname, gw).map_err(|source| NetError::Setup {
            ifname: ifname.into(),
            what: "adding the default route",
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_net(nics: &[(&str, &str, &str, bool)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, ty, mac, device) in nics {
            let dir = d.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("type"), format!("{ty}\n")).unwrap();
            std::fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
            if *device {
                std::fs::create_dir(dir.join("device")).unwrap();
            }
        }
        d
    }

    #[test]
    fn bootif_picks_its_nic_and_says_which_exist_when_absent() {
        let d = fake_net(&[
            ("lo", "772", "00:00:00:00:00:00", false),
            ("eth1", "1", "52:54:00:00:00:02", true),
            ("eth0", "1", "52:54:00:00:00:01", true),
            ("br0", "1", "52:54:00:00:00:09", false),
        ]);
        let all = nics(d.path());
        assert_eq!(
            all.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["eth0", "eth1"]
        );
        let c = candidates(&all, Mac::parse("52:54:00:00:00:02")).unwrap();
        assert_eq!(c[0].name, "eth1");
        assert_eq!(candidates(&all, None).unwrap().len(), 2);
        let e = candidates(&all, Mac::parse("52:54:00:00:00:07"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("52:54:00:00:00:07") && e.contains("eth0 (52:54:00:00:00:01)"),
            "{e}"
        );
        assert!(matches!(candidates(&[], None), Err(NetError::NoNic)));
    }
}
