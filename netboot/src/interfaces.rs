//! The startup report's view of the machine: each interface, its IPv4 addresses, and what is
//! served on it. The sockets are bound to every address (DHCP may be limited to one device), so
//! "what is served where" is a question of the interfaces that exist at start; an operator
//! reads the answer in the log.

use std::net::Ipv4Addr;

use crate::config::{Config, Mode};

/// An interface and its IPv4 addresses (with prefix lengths), the primary one first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// IPv4 addresses.
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// Loopback.
    pub loopback: bool,
}

/// The interfaces of this network namespace, in the kernel's order.
pub fn list() -> std::io::Result<Vec<Interface>> {
    let mut out: Vec<Interface> = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)? {
        let i = match out.iter().position(|i| i.name == ifa.interface_name) {
            Some(i) => i,
            None => {
                out.push(Interface {
                    name: ifa.interface_name.clone(),
                    addrs: Vec::new(),
                    loopback: ifa
                        .flags
                        .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK),
                });
                out.len() - 1
            }
        };
        let v4 = |a: &Option<nix::sys::socket::SockaddrStorage>| {
            a.as_ref().and_then(|a| a.as_sockaddr_in()).map(|s| s.ip())
        };
        if let Some(ip) = v4(&ifa.address) {
            let prefix = v4(&ifa.netmask).map_or(32, |m| u32::from(m).count_ones() as u8);
            out[i].addrs.push((ip, prefix));
        }
    }
    Ok(out)
}

/// What the server does on `iface`, for the startup report: DHCP (and how), TFTP, HTTP.
pub fn served(cfg: &Config, iface: &Interface) -> String {
    let dhcp = if cfg.interface.as_deref().is_some_and(|d| d != iface.name) {
        "no DHCP (--interface)".to_string()
    } else if iface.loopback {
        "no DHCP (loopback)".to_string()
    } else {
        match (cfg.mode, iface.addrs.first()) {
            (_, None) => "no DHCP (no IPv4 address to answer from)".to_string(),
            (Mode::Proxy, Some(_)) => "proxy DHCP (ports 67 and 4011)".to_string(),
            // A broadcast request is served from the pool holding the interface's primary
            // address (dhcp::decide); relayed ones by giaddr, whichever interface they reach.
            (Mode::Full, Some((ip, _))) => {
                match cfg.pools.iter().find(|p| p.subnet_contains(*ip)) {
                    Some(p) => format!(
                        "DHCP from pool {}/{} ({}-{})",
                        p.network, p.prefix, p.first, p.last
                    ),
                    None => {
                        "DHCP for relayed requests only (no pool holds this subnet)".to_string()
                    }
                }
            }
        }
    };
    let tftp = match cfg.tftp_port {
        0 => String::new(),
        p => format!(", TFTP on {p}"),
    };
    format!("{dhcp}{tftp}, HTTP on {}", cfg.http_port)
}

/// `10.0.0.1/24 10.0.1.1/24`, or `none`.
pub fn addrs(iface: &Interface) -> String {
    if iface.addrs.is_empty() {
        return "none".into();
    }
    iface
        .addrs
        .iter()
        .map(|(ip, p)| format!("{ip}/{p}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_each_interface_serves() {
        let iface = |name: &str, addrs: &[(Ipv4Addr, u8)], loopback| Interface {
            name: name.into(),
            addrs: addrs.to_vec(),
            loopback,
        };
        let lan = iface("eth0", &[(Ipv4Addr::new(10, 77, 0, 1), 24)], false);
        let other = iface("eth1", &[(Ipv4Addr::new(192, 168, 5, 1), 24)], false);
        let bare = iface("eth2", &[], false);
        let lo = iface("lo", &[(Ipv4Addr::LOCALHOST, 8)], true);
        let mut cfg = Config {
            pools: vec!["10.77.0.0/24,10.77.0.100-10.77.0.199".parse().unwrap()],
            ..Config::default()
        };
        assert_eq!(addrs(&lan), "10.77.0.1/24");
        assert_eq!(addrs(&bare), "none");
        let cases = [
            (&lan, "DHCP from pool 10.77.0.0/24 (10.77.0.100-10.77.0.199), TFTP on 69, HTTP on 8080"),
            (&other, "DHCP for relayed requests only (no pool holds this subnet), TFTP on 69, HTTP on 8080"),
            (&bare, "no DHCP (no IPv4 address to answer from), TFTP on 69, HTTP on 8080"),
            (&lo, "no DHCP (loopback), TFTP on 69, HTTP on 8080"),
        ];
        for (i, want) in cases {
            assert_eq!(served(&cfg, i), want, "{}", i.name);
        }
        cfg.interface = Some("eth0".into());
        cfg.tftp_port = 0;
        assert_eq!(served(&cfg, &other), "no DHCP (--interface), HTTP on 8080");
        cfg.mode = Mode::Proxy;
        assert_eq!(
            served(&cfg, &lan),
            "proxy DHCP (ports 67 and 4011), HTTP on 8080"
        );
    }
}
