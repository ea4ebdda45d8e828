//! The configuration of `ferrox-netboot`: one struct, read from the command line or (with
//! `--config FILE`) from a YAML file with the same field names.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, ValueEnum};
use serde::Deserialize;

/// DHCP, TFTP and HTTP that boot servers into the Ferrox ramdisk through iPXE.
///
/// In `full` mode ferrox-netboot is the network's DHCP server (addresses from `--pool`, or the
/// reservations in `--hosts`). In `proxy` mode another DHCP server hands out addresses and
/// ferrox-netboot answers PXE and iPXE clients with boot information only (ports 67 and 4011).
/// Only the iPXE binaries found in `--ipxe-dir`, the `--kernel` and the `--initramfs` are ever
/// served: no request path reaches the filesystem.
#[derive(Debug, Clone, Parser, Deserialize)]
#[command(name = "ferrox-netboot", version)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Read every setting from this YAML file instead (keys are the long flag names with `_`
    /// for `-`); no other flag may be given with it.
    #[arg(long, env = "FERROX_NETBOOT_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// DHCP mode: `full` (hand out addresses) or `proxy` (boot information only, beside
    /// another DHCP server).
    #[arg(long, value_enum, default_value_t = Mode::Full)]
    pub mode: Mode,

    /// YAML file of known hosts: MAC → reserved address, what it boots (see the README).
    #[arg(long)]
    pub hosts: Option<PathBuf>,

    /// Follow ferrox-controller's host list (its netboot feed, e.g. `http://127.0.0.1:9445`):
    /// the hosts it is booting into the ramdisk, each with its one-time token. The `--hosts`
    /// file, if any, is consulted first.
    #[arg(long)]
    pub controller_hosts: Option<String>,

    /// File holding the bearer token of the controller's netboot feed (the controller writes
    /// it as `api.token` in its state directory).
    #[arg(long)]
    pub controller_token_file: Option<PathBuf>,

    /// What to do with a MAC the hosts file does not know: `ignore` it, or boot it into the
    /// ramdisk for `discovery`.
    #[arg(long, value_enum, default_value_t = UnknownPolicy::Ignore)]
    pub unknown: UnknownPolicy,

    /// Address pool for full mode, `SUBNET/PREFIX,FIRST-LAST[,router=IP]`, e.g.
    /// `10.0.0.0/24,10.0.0.100-10.0.0.200,router=10.0.0.1`. Repeat for relayed subnets: a
    /// request is served from the pool whose subnet holds its relay address (giaddr), or the
    /// address of the interface it arrived on.
    #[arg(long = "pool")]
    pub pools: Vec<Pool>,

    /// DNS server announced to clients (repeatable).
    #[arg(long)]
    pub dns: Vec<Ipv4Addr>,

    /// Lease time in seconds (full mode).
    #[arg(long, default_value_t = 3600)]
    pub lease_time: u32,

    /// Answer IPv6 router solicitations with "no router, no prefixes, M=O=0", so iPXE's IPv6
    /// configuration ends at once instead of timing out (~15 s per boot on IPv4-only
    /// networks). `auto`: in full mode only (in proxy mode the network has its own routers).
    #[arg(long, value_enum, default_value_t = Toggle::Auto)]
    pub ipv6_ra: Toggle,

    /// Serve DHCP only on this interface (SO_BINDTODEVICE); default: every interface.
    #[arg(long)]
    pub interface: Option<String>,

    /// UDP port for DHCP.
    #[arg(long, default_value_t = 67)]
    pub dhcp_port: u16,

    /// UDP port for TFTP (0: no TFTP).
    #[arg(long, default_value_t = 69)]
    pub tftp_port: u16,

    /// TCP port for HTTP (iPXE scripts, kernel, initramfs, UEFI HTTP boot, /metrics).
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,

    /// Directory holding the iPXE binaries (Debian's `ipxe` package); read once at start.
    #[arg(long, default_value = "/usr/lib/ipxe")]
    pub ipxe_dir: PathBuf,

    /// iPXE binary for x86-64 UEFI clients: `ipxe.efi` (own drivers) or `snponly.efi` (the
    /// firmware's network driver).
    #[arg(long, default_value = "ipxe.efi")]
    pub uefi_binary: String,

    /// iPXE binary for arm64 UEFI clients (looked for in --ipxe-dir).
    #[arg(long, default_value = "ipxe-arm64.efi")]
    pub arm64_binary: String,

    /// Kernel served at /files/kernel (read once at start).
    #[arg(long)]
    pub kernel: Option<PathBuf>,

    /// Initramfs served at /files/initramfs (read once at start).
    #[arg(long)]
    pub initramfs: Option<PathBuf>,

    /// Controller URL for the agent's kernel command line, unless a host sets its own.
    #[arg(long)]
    pub controller_url: Option<String>,

    /// Controller CA fingerprint for the agent's kernel command line, unless a host sets its own.
    #[arg(long)]
    pub ca_fingerprint: Option<String>,

    /// Extra kernel command line words for every host (e.g. `console=ttyS0`).
    #[arg(long)]
    pub cmdline: Option<String>,

    /// Largest TFTP block size granted (RFC 2348); 1468 fills a 1500-byte Ethernet frame.
    #[arg(long, default_value_t = 1468)]
    pub tftp_max_blksize: u16,

    /// Largest TFTP window granted (RFC 7440).
    #[arg(long, default_value_t = 64)]
    pub tftp_max_window: u16,

    /// TFTP transfers served at once; further requests wait in the socket's buffer until one
    /// ends (a PXE ROM treats an error packet as a failed boot).
    #[arg(long, default_value_t = 512)]
    pub tftp_max_transfers: usize,

    /// DHCP packets handled at once; more wait in the socket's buffer.
    #[arg(long, default_value_t = 64)]
    pub dhcp_max_inflight: usize,

    /// HTTP connections served at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 1024)]
    pub http_max_connections: usize,

    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
}

impl Default for Config {
    fn default() -> Self {
        // The flags' defaults are the file's defaults.
        Config::parse_from(["ferrox-netboot"])
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading `--config`.
    #[error("reading config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Its YAML.
    #[error("parsing config file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_yaml::Error,
    },
    /// A setting that makes no sense.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Parses the command line, then `--config` if given, and checks the result.
    pub fn load() -> Result<Config, ConfigError> {
        Self::load_from(std::env::args_os())
    }

    /// [`Config::load`] from the given arguments (the first is the program name). `--help`
    /// and argument errors exit the process, as clap does.
    pub fn load_from<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let cmd = Config::command();
        let args_ids: Vec<String> = cmd
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        let matches = cmd.get_matches_from(args);
        let cli =
            Config::from_arg_matches(&matches).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let cfg = match &cli.config {
            Some(path) => {
                let given: Vec<String> = matches
                    .ids()
                    .map(|id| id.as_str())
                    .filter(|id| *id != "config" && args_ids.iter().any(|a| a == id))
                    .filter(|id| {
                        matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
                    })
                    .map(|id| format!("--{}", id.replace('_', "-")))
                    .collect();
                if !given.is_empty() {
                    return Err(ConfigError::Invalid(format!(
                        "--config {} cannot be combined with {}: put them in the file",
                        path.display(),
                        given.join(", ")
                    )));
                }
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let mut cfg: Config =
                    serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
                        path: path.clone(),
                        source,
                    })?;
                cfg.config = Some(path.clone());
                cfg
            }
            None => cli,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks settings that clap and serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mode == Mode::Full && self.pools.is_empty() {
            return Err(ConfigError::Invalid(
                "full mode needs at least one --pool (its subnet gives clients their mask and router)".into(),
            ));
        }
        if !(512..=65464).contains(&self.tftp_max_blksize) {
            return Err(ConfigError::Invalid(
                "--tftp-max-blksize must be 512..=65464".into(),
            ));
        }
        if self.tftp_max_window == 0 {
            return Err(ConfigError::Invalid(
                "--tftp-max-window must be at least 1".into(),
            ));
        }
        if self.dhcp_max_inflight == 0
            || self.tftp_max_transfers == 0
            || self.http_max_connections == 0
        {
            return Err(ConfigError::Invalid(
                "concurrency limits must be at least 1".into(),
            ));
        }
        for name in [&self.uefi_binary, &self.arm64_binary] {
            if name.is_empty() || name.contains(['/', '\\', '\0']) || name.starts_with('.') {
                return Err(ConfigError::Invalid(format!(
                    "binary name {name:?} must be a plain file name"
                )));
            }
        }
        Ok(())
    }
}

/// DHCP mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The network's DHCP server.
    Full,
    /// Boot information only, beside another DHCP server.
    Proxy,
}

/// On, off, or decided by the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    /// Decided by the mode.
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

impl Config {
    /// Whether router advertisements are answered.
    pub fn ipv6_ra_enabled(&self) -> bool {
        match self.ipv6_ra {
            Toggle::Auto => self.mode == Mode::Full,
            Toggle::On => true,
            Toggle::Off => false,
        }
    }
}

/// What to do with MACs the hosts file does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownPolicy {
    /// Never answer them.
    Ignore,
    /// Boot them into the ramdisk (no token), so the controller can discover them.
    Discovery,
}

/// An address pool: the subnet it belongs to, the range handed out, the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Network address.
    pub network: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// First address handed out.
    pub first: Ipv4Addr,
    /// Last address handed out.
    pub last: Ipv4Addr,
    /// Default gateway (option 3).
    pub router: Option<Ipv4Addr>,
}

impl Pool {
    /// The subnet mask (option 1).
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(prefix_mask(self.prefix))
    }

    /// Whether `ip` is inside the pool's subnet.
    pub fn subnet_contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & prefix_mask(self.prefix) == u32::from(self.network)
    }

    /// Whether `ip` is inside the handed-out range.
    pub fn range_contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(ip))
    }
}

fn prefix_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

impl FromStr for Pool {
    type Err = String;
    fn from_str(s: &str) -> Result<Pool, String> {
        let bad = |why: &str| {
            format!("pool {s:?}: {why} (expected SUBNET/PREFIX,FIRST-LAST[,router=IP])")
        };
        let mut parts = s.split(',');
        let subnet = parts.next().ok_or_else(|| bad("empty"))?;
        let (net, prefix) = subnet.split_once('/').ok_or_else(|| bad("no /PREFIX"))?;
        let network: Ipv4Addr = net.trim().parse().map_err(|_| bad("bad subnet address"))?;
        let prefix: u8 = prefix.trim().parse().map_err(|_| bad("bad prefix"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("prefix must be 8..=30"));
        }
        if u32::from(network) & !prefix_mask(prefix) != 0 {
            return Err(bad("subnet address has host bits set"));
        }
        let range = parts.next().ok_or_else(|| bad("no FIRST-LAST range"))?;
        let (first, last) = range
            .split_once('-')
            .ok_or_else(|| bad("range needs FIRST-LAST"))?;
        let first: Ipv4Addr = first.trim().parse().map_err(|_| bad("bad first address"))?;
        let last: Ipv4Addr = last.trim().parse().map_err(|_| bad("bad last address"))?;
        let mut router = None;
        for p in parts {
            match p.trim().split_once('=') {
                Some(("router", ip)) => {
                    router = Some(ip.trim().parse().map_err(|_| bad("bad router"))?)
                }
                _ => return Err(bad(&format!("unknown setting {p:?}"))),
            }
        }
        let pool = Pool {
            network,
            prefix,
            first,
            last,
            router,
        };
        if u32::from(first) > u32::from(last)
            || !pool.subnet_contains(first)
            || !pool.subnet_contains(last)
        {
            return Err(bad("range must be ascending and inside the subnet"));
        }
        Ok(pool)
    }
}

impl<'de> Deserialize<'de> for Pool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_parses() {
        let p: Pool = "10.0.0.0/24,10.0.0.100-10.0.0.200,router=10.0.0.1"
            .parse()
            .unwrap();
        assert_eq!(p.mask(), Ipv4Addr::new(255, 255, 255, 0));
        assert!(p.subnet_contains(Ipv4Addr::new(10, 0, 0, 5)));
        assert!(!p.subnet_contains(Ipv4Addr::new(10, 0, 1, 5)));
        assert!(p.range_contains(Ipv4Addr::new(10, 0, 0, 150)));
        assert!(!p.range_contains(Ipv4Addr::new(10, 0, 0, 50)));
        assert_eq!(p.router, Some(Ipv4Addr::new(10, 0, 0, 1)));
        for bad in [
            "10.0.0.0,10.0.0.1-10.0.0.2",
            "10.0.0.1/24,10.0.0.1-10.0.0.2",
            "10.0.0.0/24,10.0.0.9-10.0.0.2",
            "10.0.0.0/24,10.0.0.1-10.0.1.2",
            "10.0.0.0/24,10.0.0.1-10.0.0.2,gw=1.2.3.4",
            "10.0.0.0/33,10.0.0.1-10.0.0.2",
        ] {
            assert!(bad.parse::<Pool>().is_err(), "{bad}");
        }
    }

    #[test]
    fn yaml_config_uses_flag_defaults() {
        let c: Config = serde_yaml::from_str(
            "mode: proxy\nunknown: discovery\npools: ['10.1.0.0/16,10.1.0.10-10.1.0.20']\n",
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Proxy);
        assert_eq!(c.unknown, UnknownPolicy::Discovery);
        assert_eq!(c.http_port, 8080);
        assert_eq!(c.uefi_binary, "ipxe.efi");
        assert_eq!(c.pools.len(), 1);
        assert!(serde_yaml::from_str::<Config>("mdoe: full\n").is_err());
    }

    #[test]
    fn config_file_replaces_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("netboot.yaml");
        std::fs::write(&f, "mode: proxy\nhttp_port: 9090\nipv6_ra: on\n").unwrap();
        let c = Config::load_from(["ferrox-netboot", "--config", f.to_str().unwrap()]).unwrap();
        assert_eq!(
            (c.mode, c.http_port, c.ipv6_ra),
            (Mode::Proxy, 9090, Toggle::On)
        );
        let e = Config::load_from([
            "ferrox-netboot",
            "--config",
            f.to_str().unwrap(),
            "--http-port",
            "1",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("--http-port"), "{e}");
        let c = Config::load_from([
            "ferrox-netboot",
            "--pool",
            "10.0.0.0/24,10.0.0.10-10.0.0.20",
            "--dns",
            "1.1.1.1",
            "--dns",
            "8.8.8.8",
        ])
        .unwrap();
        assert_eq!(c.dns.len(), 2);
        assert!(
            Config::load_from(["ferrox-netboot"]).is_err(),
            "full mode needs a pool"
        );
    }

    #[test]
    fn validation() {
        let mut c = Config::default();
        assert!(c.validate().is_err(), "full mode without a pool");
        c.mode = Mode::Proxy;
        c.validate().unwrap();
        c.uefi_binary = "../etc/passwd".into();
        assert!(c.validate().is_err());
    }
}
