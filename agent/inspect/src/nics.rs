//! Network interfaces from /sys/class/net, addresses from /proc/net.
//!
//! Only interfaces with a `device` link (real hardware) are reported, as IPA does: no lo,
//! bridges, bonds, veth, tun, ifb. metal3's NIC list has one entry per interface and address
//! family — IPA reports one IPv4 and one IPv6 address per interface, and BMO emits an entry
//! for the IPv4 one (or an address-less entry when there is neither) plus one for the IPv6
//! one. We do the same; every address is in `NicExtra.ips`.
//!
//! IPv4 addresses come from /proc/net/fib_trie (local /32 host entries) matched to an
//! interface through its connected route in /proc/net/route — pure file reads, so fixtures
//! cover them. An address without a connected route (a /32, `noprefixroute`) can't be placed
//! this way and is missed, so on a live host getifaddrs (agent-sys) is used instead; it also
//! gives the kernel's order, primary address first, which is what IPA picks from.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use agent_proto::{Nic, NicExtra};

use crate::fsread::{canonical, link_basename, list_dir, read_i64, read_str, read_text, read_u64};
use crate::Root;

/// Local IPv4 addresses from /proc/net/fib_trie (the `/32 host LOCAL` leaves), loopback
/// excluded, deduplicated, in trie order.
pub fn parse_fib_trie_local(text: &str) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("|-- ") {
            last = rest.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(a) = last {
                if !a.is_loopback() && !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// One connected (gateway-less) route from /proc/net/route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub iface: String,
    pub dest: u32,
    pub mask: u32,
}

/// /proc/net/route: hex fields in host (little-endian) byte order.
pub fn parse_route(text: &str) -> Vec<Route> {
    const RTF_GATEWAY: u32 = 0x2;
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        let (Some(dest), Some(flags), Some(mask)) = (hex(f[1]), hex(f[3]), hex(f[7])) else {
            continue;
        };
        if flags & RTF_GATEWAY != 0 || mask == 0 {
            continue;
        }
        // The kernel prints the network-order word as a host integer.
        let num = |v: u32| u32::from_be_bytes(v.to_ne_bytes());
        out.push(Route {
            iface: f[0].to_string(),
            dest: num(dest),
            mask: num(mask),
        });
    }
    out
}

/// Which interface an address belongs to: the longest connected route containing it.
pub fn iface_for(addr: Ipv4Addr, routes: &[Route]) -> Option<&str> {
    let a = u32::from(addr);
    routes
        .iter()
        .filter(|r| a & r.mask == r.dest & r.mask)
        .max_by_key(|r| r.mask.count_ones())
        .map(|r| r.iface.as_str())
}

/// /proc/net/if_inet6 → interface → addresses, global scope first (the order getifaddrs
/// returns and IPA picks from), then site, then link-local.
pub fn parse_if_inet6(text: &str) -> BTreeMap<String, Vec<Ipv6Addr>> {
    let mut rows: Vec<(String, u8, usize, Ipv6Addr)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[0].len() != 32 {
            continue;
        }
        let Ok(bits) = u128::from_str_radix(f[0], 16) else {
            continue;
        };
        let scope = u8::from_str_radix(f[3], 16).unwrap_or(0xff);
        let rank = match scope {
            0x00 => 0,
            0x40 => 1,
            0x20 => 2,
            _ => 3,
        };
        let addr = Ipv6Addr::from(bits);
        if addr.is_loopback() {
            continue;
        }
        rows.push((f[5].to_string(), rank, i, addr));
    }
    rows.sort_by_key(|r| (r.1, r.2));
    let mut map: BTreeMap<String, Vec<Ipv6Addr>> = BTreeMap::new();
    for (name, _, _, addr) in rows {
        map.entry(name).or_default().push(addr);
    }
    map
}

/// `aa:bb:cc:dd:ee:ff`, lowercase, or None for anything else (including all zeros).
pub fn normalize_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return None;
    }
    let mac = parts.join(":").to_ascii_lowercase();
    (mac != "00:00:00:00:00:00").then_some(mac)
}

/// The nearest PCI address on a device path (virtio NICs sit one level below theirs).
fn pci_address(device: &Path) -> Option<String> {
    let real = canonical(device)?;
    real.iter()
        .rev()
        .map(|c| c.to_string_lossy().into_owned())
        .find(|c| {
            let b = c.as_bytes();
            b.len() == 12 && b[4] == b':' && b[7] == b':' && b[10] == b'.'
        })
}

/// Everything about one interface.
#[derive(Debug, Clone)]
pub struct Interface {
    pub extra: NicExtra,
    pub model: Option<String>,
    pub pci_address: Option<String>,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// Permanent MAC lookup for live hosts (the ETHTOOL_GPERMADDR ioctl).
pub type PermAddrFn<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What only a live host can answer (ioctls, getifaddrs); `None` for fixture trees.
pub struct Live<'a> {
    pub perm_addr: PermAddrFn<'a>,
    /// (interface, address) in the kernel's order, primary first — the order IPA picks from.
    pub ipv4: Option<Vec<(String, Ipv4Addr)>>,
}

/// All physical interfaces, sorted by name.
pub fn scan(root: &Root, live: Option<&Live<'_>>) -> Vec<Interface> {
    let net = root.sys.join("class/net");
    let live_v4 = live.and_then(|l| l.ipv4.as_ref());
    // fib_trie can be large on a router-like host: skip it when getifaddrs answered.
    let (v4_local, routes) = if live_v4.is_some() {
        (Vec::new(), Vec::new())
    } else {
        (
            read_text(&root.proc_.join("net/fib_trie"))
                .map(|t| parse_fib_trie_local(&t))
                .unwrap_or_default(),
            read_text(&root.proc_.join("net/route"))
                .map(|t| parse_route(&t))
                .unwrap_or_default(),
        )
    };
    let v6 = read_text(&root.proc_.join("net/if_inet6"))
        .map(|t| parse_if_inet6(&t))
        .unwrap_or_default();
    let mut out = Vec::new();
    for name in list_dir(&net) {
        let dir = net.join(&name);
        let device = dir.join("device");
        if !device.exists() {
            continue;
        }
        let current = read_str(&dir.join("address")).and_then(|a| normalize_mac(&a));
        // addr_assign_type 0 (NET_ADDR_PERM): `address` is the burned-in one. Otherwise it was
        // randomised/set/stolen (bond slaves): ask ethtool, or the bonding view.
        let assign = read_u64(&dir.join("addr_assign_type"));
        let permanent = if assign == Some(0) {
            current.clone()
        } else {
            read_str(&dir.join("bonding_slave/perm_hwaddr"))
                .and_then(|a| normalize_mac(&a))
                .or_else(|| {
                    live.and_then(|l| (l.perm_addr)(&name))
                        .and_then(|a| normalize_mac(&a))
                })
        };
        let v4: Vec<Ipv4Addr> = match live_v4 {
            Some(list) => list
                .iter()
                .filter(|(n, a)| *n == name && !a.is_loopback())
                .map(|(_, a)| *a)
                .collect(),
            None => v4_local
                .iter()
                .copied()
                .filter(|a| iface_for(*a, &routes) == Some(name.as_str()))
                .collect(),
        };
        let v6s = v6.get(&name).cloned().unwrap_or_default();
        let vendor = read_str(&device.join("vendor"));
        let product = read_str(&device.join("device"));
        let model = {
            let m = format!(
                "{} {}",
                vendor.unwrap_or_default(),
                product.unwrap_or_default()
            );
            let m = m.trim_start().to_string();
            (!m.trim().is_empty()).then_some(m)
        };
        // `speed` is -1 or unreadable (EINVAL) when the link is down.
        let speed = read_i64(&dir.join("speed"))
            .filter(|s| *s > 0)
            .map(|s| s as u64);
        let ips = v4
            .iter()
            .map(|a| a.to_string())
            .chain(v6s.iter().map(|a| a.to_string()))
            .collect();
        out.push(Interface {
            extra: NicExtra {
                name: name.clone(),
                permanent_mac: permanent,
                current_mac: current,
                driver: link_basename(&device.join("driver")),
                carrier: read_u64(&dir.join("carrier")).map(|c| c == 1),
                mtu: read_u64(&dir.join("mtu")).and_then(|m| u32::try_from(m).ok()),
                speed_mbps: speed,
                ips,
            },
            model,
            pci_address: pci_address(&device),
            v4,
            v6: v6s,
        });
    }
    out
}

/// metal3's NIC entries for one interface (see the module docs).
pub fn to_metal3(i: &Interface, pxe_mac: Option<&str>) -> Vec<Nic> {
    let mac = i
        .extra
        .permanent_mac
        .clone()
        .or_else(|| i.extra.current_mac.clone());
    // Compare with the reported (permanent) MAC only: bond slaves share a current MAC.
    let pxe = (pxe_mac.is_some() && pxe_mac == mac.as_deref()).then_some(true);
    let base = Nic {
        name: Some(i.extra.name.clone()),
        model: i.model.clone(),
        mac,
        ip: None,
        speed_gbps: i
            .extra
            .speed_mbps
            .map(|s| (s / 1000) as i64)
            .filter(|&g| g > 0),
        vlans: None,
        vlan_id: None,
        pxe,
        pci_address: i.pci_address.clone(),
        lldp: None,
    };
    let mut out = Vec::new();
    if !i.v4.is_empty() || i.v6.is_empty() {
        out.push(Nic {
            ip: i.v4.first().map(|a| a.to_string()),
            ..base.clone()
        });
    }
    if let Some(a) = i.v6.first() {
        out.push(Nic {
            ip: Some(a.to_string()),
            ..base
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const FIB_TRIE: &str = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n              /8 host LOCAL\n           |-- 127.0.0.1\n              /32 host LOCAL\n        |-- 127.255.255.255\n           /32 link BROADCAST\n     +-- 192.0.2.0/24 2 0 2\n        +-- 192.0.2.0/30 2 0 2\n           |-- 192.0.2.0\n              /24 link UNICAST\n           |-- 192.0.2.2\n              /32 host LOCAL\n        |-- 192.0.2.255\n           /32 link BROADCAST\n     |-- 10.1.0.7\n        /32 host LOCAL\nLocal:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 192.0.2.2\n        /32 host LOCAL\n";

    pub(crate) const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eno2\t0000010A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";

    #[test]
    fn fib_trie_locals() {
        let a = parse_fib_trie_local(FIB_TRIE);
        assert_eq!(a, [Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(10, 1, 0, 7)]);
        assert!(parse_fib_trie_local("garbage\n/32 host LOCAL\n|-- nope\n").is_empty());
    }

    #[test]
    fn routes_place_addresses() {
        let r = parse_route(ROUTE);
        // The default route (gateway) is skipped.
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            Route {
                iface: "eth0".into(),
                dest: 0xc000_0200,
                mask: 0xffff_ff00
            }
        );
        assert_eq!(iface_for(Ipv4Addr::new(192, 0, 2, 2), &r), Some("eth0"));
        assert_eq!(iface_for(Ipv4Addr::new(10, 1, 0, 7), &r), Some("eno2"));
        assert_eq!(iface_for(Ipv4Addr::new(172, 16, 0, 1), &r), None);
        assert!(parse_route("header\nshort line\n").is_empty());
    }

    #[test]
    fn if_inet6_global_first() {
        let t = "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n00000000000000000000000000000001 01 80 10 80       lo\nfd000000000000000000000000000002 04 40 00 82     eth0\nbad line\n";
        let m = parse_if_inet6(t);
        assert_eq!(m.len(), 1);
        assert_eq!(
            m["eth0"],
            [
                "fd00::2".parse::<Ipv6Addr>().unwrap(),
                "fe80::fc:ff:fe00:1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn macs() {
        assert_eq!(
            normalize_mac("AA:bb:CC:dd:ee:ff\n").as_deref(),
            Some("aa:bb:cc:dd:ee:ff")
        );
        assert_eq!(normalize_mac("00:00:00:00:00:00"), None);
        assert_eq!(normalize_mac("aa:bb:cc:dd:ee"), None);
        // InfiniBand's 20-byte addresses don't fit metal3's MAC pattern.
        assert_eq!(normalize_mac(&["00"; 20].join(":")), None);
    }

    fn iface(v4: &[&str], v6: &[&str]) -> Interface {
        Interface {
            extra: NicExtra {
                name: "eno1".into(),
                permanent_mac: Some("aa:bb:cc:dd:ee:01".into()),
                current_mac: Some("aa:bb:cc:dd:ee:01".into()),
                speed_mbps: Some(25000),
                ..NicExtra::default()
            },
            model: Some("0x8086 0x1572".into()),
            pci_address: Some("0000:18:00.0".into()),
            v4: v4.iter().map(|a| a.parse().unwrap()).collect(),
            v6: v6.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn one_entry_per_family_like_bmo() {
        let both = to_metal3(
            &iface(&["192.0.2.10", "192.0.2.11"], &["2001:db8::10"]),
            Some("aa:bb:cc:dd:ee:01"),
        );
        assert_eq!(both.len(), 2);
        assert_eq!(both[0].ip.as_deref(), Some("192.0.2.10"));
        assert_eq!(both[1].ip.as_deref(), Some("2001:db8::10"));
        assert!(both
            .iter()
            .all(|n| n.pxe == Some(true) && n.speed_gbps == Some(25)));
        let none = to_metal3(&iface(&[], &[]), None);
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].ip, None);
        assert_eq!(none[0].pxe, None);
        let v6only = to_metal3(&iface(&[], &["2001:db8::10"]), Some("00:00:00:00:00:01"));
        assert_eq!(v6only.len(), 1);
        assert_eq!(v6only[0].ip.as_deref(), Some("2001:db8::10"));
        assert_eq!(v6only[0].pxe, None);
    }
}
