//! What each machine boots: the static hosts file, and the [`HostSource`] seam through which the
//! controller will later supply the same records.
//!
//! A host record is keyed by MAC address. It may reserve an address (full DHCP mode) and says
//! what the machine boots: the Ferrox ramdisk by default (kernel, initramfs and the kernel
//! command line the agent needs), with an optional per-host architecture → iPXE binary override.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::Deserialize;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `52-54-00-12-34-56`: the form used in URLs and in `BOOTIF=01-…`.
    pub fn dashed(&self) -> String {
        let b = self.0;
        format!(
            "{:02x}-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a MAC address did not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex octets separated by ':' or '-'")]
pub struct BadMac(String);

impl FromStr for MacAddr {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Self, BadMac> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for o in &mut out {
            let p = parts.next().ok_or_else(|| BadMac(s.to_owned()))?;
            if p.len() != 2 {
                return Err(BadMac(s.to_owned()));
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| BadMac(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(BadMac(s.to_owned()));
        }
        Ok(MacAddr(out))
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The client's pre-boot environment, from DHCP option 93 (RFC 4578 and IANA's registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Legacy BIOS (type 0): undionly.kpxe.
    Bios,
    /// x86-64 UEFI (types 7 and 9).
    UefiX64,
    /// arm64 UEFI (type 11).
    UefiArm64,
}

impl Arch {
    /// The name used in hosts files (`arch_binary` keys).
    pub fn as_str(&self) -> &'static str {
        match self {
            Arch::Bios => "bios",
            Arch::UefiX64 => "uefi_x64",
            Arch::UefiArm64 => "uefi_arm64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a host boots into. Every field is optional: what is missing comes from the server's
/// defaults (its own `/files/kernel` and `/files/initramfs`, `--controller-url`, …).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSpec {
    /// Kernel URL (default: this server's `/files/kernel`).
    pub kernel_url: Option<String>,
    /// Initramfs URL (default: this server's `/files/initramfs`).
    pub initramfs_url: Option<String>,
    /// Controller URL the agent enrolls with (`ferrox.controller=`).
    pub controller_url: Option<String>,
    /// Fingerprint of the controller's CA (`ferrox.ca=`), e.g. `sha256:…`.
    pub ca_fingerprint: Option<String>,
    /// One-time boot token (`ferrox.token=`); minted by the controller per power-on.
    pub token: Option<String>,
    /// Extra kernel command line words (e.g. `console=ttyS0`).
    pub cmdline: Option<String>,
}

/// One machine.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// The MAC of the NIC that PXE-boots.
    pub mac: MacAddr,
    /// Reserved address (full mode). Without it the host gets one from the pool.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// Sent as DHCP option 12.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Whether this host is sent boot information at all (false: an address only).
    #[serde(default = "yes")]
    pub netboot: bool,
    /// What it boots.
    #[serde(default)]
    pub boot: BootSpec,
    /// Per-host override of the iPXE binary for an architecture, e.g. `uefi_x64: snponly.efi`.
    #[serde(default)]
    pub arch_binary: HashMap<Arch, String>,
}

fn yes() -> bool {
    true
}

impl Host {
    /// A host the server knows nothing about, booted for discovery (`--unknown discovery`).
    pub fn discovery(mac: MacAddr) -> Host {
        Host {
            mac,
            ip: None,
            hostname: None,
            netboot: true,
            boot: BootSpec::default(),
            arch_binary: HashMap::new(),
        }
    }
}

/// Where host records come from. The static file implements it now; the controller will
/// (through a cache it keeps current), so the lookup is synchronous and cheap.
pub trait HostSource: Send + Sync {
    /// The record for `mac`, if the source knows it.
    fn lookup(&self, mac: &MacAddr) -> Option<Arc<Host>>;
}

/// Hosts from a YAML file, read once at start.
#[derive(Debug, Default)]
pub struct StaticHosts {
    by_mac: HashMap<MacAddr, Arc<Host>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    hosts: Vec<Host>,
}

/// Why the hosts file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// Reading the file.
    #[error("reading hosts file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Its YAML.
    #[error("parsing hosts file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_yaml::Error,
    },
    /// A MAC listed twice or an address reserved twice.
    #[error("hosts file {path}: {what} appears twice")]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The MAC or IP.
        what: String,
    },
}

impl StaticHosts {
    /// Reads and checks a hosts file.
    pub fn load(path: &Path) -> Result<StaticHosts, HostsError> {
        let text = std::fs::read_to_string(path).map_err(|source| HostsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ParseError::Yaml(source) => HostsError::Parse {
                path: path.to_owned(),
                source,
            },
            ParseError::Duplicate(what) => HostsError::Duplicate {
                path: path.to_owned(),
                what,
            },
        })
    }

    /// Parses the YAML text of a hosts file.
    pub fn parse(text: &str) -> Result<StaticHosts, ParseError> {
        let file: HostsFile = serde_yaml::from_str(text).map_err(ParseError::Yaml)?;
        Self::from_hosts(file.hosts)
    }

    /// Builds the table from records.
    pub fn from_hosts(hosts: Vec<Host>) -> Result<StaticHosts, ParseError> {
        let mut by_mac = HashMap::new();
        let mut ips = std::collections::HashSet::new();
        for h in hosts {
            if let Some(ip) = h.ip {
                if !ips.insert(ip) {
                    return Err(ParseError::Duplicate(format!("address {ip}")));
                }
            }
            let mac = h.mac;
            if by_mac.insert(mac, Arc::new(h)).is_some() {
                return Err(ParseError::Duplicate(format!("MAC {mac}")));
            }
        }
        Ok(StaticHosts { by_mac })
    }

    /// How many hosts.
    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }

    /// Every MAC in the file.
    pub fn macs(&self) -> impl Iterator<Item = MacAddr> + '_ {
        self.by_mac.keys().copied()
    }

    /// Every address reserved in the file (the pool never hands these to others).
    pub fn reserved(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.by_mac.values().filter_map(|h| h.ip)
    }
}

/// Why hosts text did not parse.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// YAML.
    #[error("invalid hosts YAML")]
    Yaml(#[source] serde_yaml::Error),
    /// Duplicates.
    #[error("{0} appears twice")]
    Duplicate(String),
}

impl HostSource for StaticHosts {
    fn lookup(&self, mac: &MacAddr) -> Option<Arc<Host>> {
        self.by_mac.get(mac).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_forms() {
        let m: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!(m.dashed(), "52-54-00-ab-cd-0f");
        assert_eq!("52-54-00-ab-cd-0f".parse::<MacAddr>().unwrap(), m);
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:00",
            "5:54:00:ab:cd:0f",
            "zz:54:00:ab:cd:0f",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_file() {
        let h = StaticHosts::parse(
            r#"
hosts:
  - mac: "52:54:00:00:00:01"
    ip: 10.0.0.10
    hostname: node-1
    boot:
      token: t0k3n
      controller_url: https://ctl:8443
      cmdline: console=ttyS0
    arch_binary:
      uefi_x64: snponly.efi
  - mac: "52:54:00:00:00:02"
    netboot: false
"#,
        )
        .unwrap();
        assert_eq!(h.len(), 2);
        let a = h.lookup(&"52:54:00:00:00:01".parse().unwrap()).unwrap();
        assert_eq!(a.ip, Some(Ipv4Addr::new(10, 0, 0, 10)));
        assert_eq!(a.boot.token.as_deref(), Some("t0k3n"));
        assert_eq!(a.arch_binary.get(&Arch::UefiX64).unwrap(), "snponly.efi");
        assert!(
            !h.lookup(&"52:54:00:00:00:02".parse().unwrap())
                .unwrap()
                .netboot
        );
        assert!(h.lookup(&"52:54:00:00:00:03".parse().unwrap()).is_none());
    }

    #[test]
    fn hosts_file_rejects_duplicates_and_typos() {
        let dup_mac = "hosts:\n  - mac: 52:54:00:00:00:01\n  - mac: 52-54-00-00-00-01\n";
        assert!(matches!(
            StaticHosts::parse(dup_mac),
            Err(ParseError::Duplicate(_))
        ));
        let dup_ip = "hosts:\n  - {mac: 52:54:00:00:00:01, ip: 10.0.0.1}\n  - {mac: 52:54:00:00:00:02, ip: 10.0.0.1}\n";
        assert!(matches!(
            StaticHosts::parse(dup_ip),
            Err(ParseError::Duplicate(_))
        ));
        let typo = "hosts:\n  - {mac: 52:54:00:00:00:01, hostnme: x}\n";
        assert!(matches!(StaticHosts::parse(typo), Err(ParseError::Yaml(_))));
    }
}
