//! `ferrox-netboot`: DHCP (full and proxy), TFTP and HTTP that boot servers into the Ferrox
//! ramdisk through iPXE. One process, three protocols; the decisions are pure functions
//! ([`dhcp::decide`], [`tftp::parse_request`], [`ipxe::script`]) wrapped in thin socket shells
//! that take already-bound sockets and a cancellation token.

pub mod config;
pub mod controller;
pub mod dhcp;
pub mod hosts;
pub mod http;
pub mod interfaces;
pub mod ipxe;
pub mod metrics;
pub mod ra;
pub mod ratelimit;
pub mod tftp;
pub mod udp;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use config::{Config, Mode};
use dhcp::leases::Leases;
use hosts::{Arch, HostSource, MacAddr, StaticHosts};

/// Everything the servers share.
pub struct Netboot {
    /// Configuration.
    pub cfg: Config,
    /// Host records.
    pub hosts: Arc<dyn HostSource>,
    /// Allow-listed iPXE binaries (TFTP and HTTP).
    pub files: tftp::Files,
    /// `/files/kernel`.
    pub kernel: Option<Bytes>,
    /// `/files/initramfs`.
    pub initramfs: Option<Bytes>,
    /// Outcome counters.
    pub metrics: metrics::Metrics,
    /// Full-mode leases.
    pub leases: Mutex<Leases>,
    /// Rate limit for logging bad input.
    pub bad_input: ratelimit::LogLimiter,
}

impl Netboot {
    /// Builds the shared state; `reserved` are the addresses the hosts reserve.
    pub fn new(
        cfg: Config,
        hosts: Arc<dyn HostSource>,
        reserved: impl IntoIterator<Item = Ipv4Addr>,
        files: tftp::Files,
        kernel: Option<Bytes>,
        initramfs: Option<Bytes>,
    ) -> Netboot {
        Netboot {
            cfg,
            hosts,
            files,
            kernel,
            initramfs,
            metrics: metrics::Metrics::default(),
            leases: Mutex::new(Leases::new(reserved)),
            bad_input: ratelimit::LogLimiter::default(),
        }
    }

    /// The iPXE binary names the configuration and `extra` (per-host overrides) refer to.
    pub fn binary_names<'a>(
        cfg: &'a Config,
        extra: impl IntoIterator<Item = &'a str>,
    ) -> Vec<&'a str> {
        let mut v = vec![
            "undionly.kpxe",
            "ipxe.efi",
            "snponly.efi",
            cfg.uefi_binary.as_str(),
            cfg.arm64_binary.as_str(),
        ];
        v.extend(extra);
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Why the iPXE binaries cannot be served as configured.
#[derive(Debug, thiserror::Error)]
pub enum BinariesError {
    /// A host's `arch_binary` names a file `--ipxe-dir` does not hold (or not a plain file
    /// name): that host could never boot.
    #[error(
        "host {mac}: arch_binary {arch} is {name:?}, which is not a file in {dir} (--ipxe-dir)"
    )]
    MissingOverride {
        /// The host.
        mac: MacAddr,
        /// The architecture overridden.
        arch: Arch,
        /// The name it gives.
        name: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
}

/// Reads the iPXE binaries to serve from `cfg.ipxe_dir`: the defaults (`undionly.kpxe`,
/// `ipxe.efi`, `snponly.efi`, `--uefi-binary`, `--arm64-binary`) and every name a host's
/// `arch_binary` gives. Returns them and the defaults not found (only the clients that need
/// one fail: a warning). An override not found is an error, since it names a specific host
/// that could never boot.
pub fn load_binaries(
    cfg: &Config,
    hosts: &StaticHosts,
) -> Result<(tftp::Files, Vec<String>), BinariesError> {
    let mut overrides: Vec<(MacAddr, Arch, String)> = hosts
        .macs()
        .filter_map(|mac| hosts.lookup(&mac))
        .flat_map(|h| {
            let mac = h.mac;
            h.arch_binary
                .iter()
                .map(move |(arch, name)| (mac, *arch, name.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    overrides.sort_by(|a, b| (a.0, a.1.as_str()).cmp(&(b.0, b.1.as_str())));
    let names = Netboot::binary_names(cfg, overrides.iter().map(|o| o.2.as_str()));
    let (files, mut missing) = tftp::Files::load(&cfg.ipxe_dir, names);
    for (mac, arch, name) in overrides {
        if files.resolve(&name).is_err() {
            return Err(BinariesError::MissingOverride {
                mac,
                arch,
                name,
                dir: cfg.ipxe_dir.clone(),
            });
        }
        missing.retain(|m| *m != name);
    }
    Ok((files, missing))
}

/// The bound sockets the servers run on.
#[derive(Debug, Default)]
pub struct Sockets {
    /// DHCP server port (67).
    pub dhcp: Option<UdpSocket>,
    /// PXE boot-server port (4011), proxy mode.
    pub pxe: Option<UdpSocket>,
    /// TFTP request port (69).
    pub tftp: Option<UdpSocket>,
    /// HTTP.
    pub http: Option<TcpListener>,
    /// ICMPv6 for router advertisements, and the interfaces it listens on.
    pub ra: Option<(socket2::Socket, Vec<String>)>,
}

impl Sockets {
    /// Binds what `cfg` asks for on all addresses.
    pub async fn bind(cfg: &Config) -> io::Result<Sockets> {
        let any = Ipv4Addr::UNSPECIFIED;
        let dev = cfg.interface.as_deref();
        let with = |what: &str, port: u16, e: io::Error| {
            io::Error::new(e.kind(), format!("binding {what} port {port}: {e}"))
        };
        let dhcp = udp::bind(SocketAddrV4::new(any, cfg.dhcp_port), true, dev)
            .map_err(|e| with("DHCP", cfg.dhcp_port, e))?;
        let pxe = match cfg.mode {
            Mode::Proxy => Some(
                udp::bind(SocketAddrV4::new(any, dhcp::PXE_PORT), true, dev)
                    .map_err(|e| with("PXE", dhcp::PXE_PORT, e))?,
            ),
            Mode::Full => None,
        };
        let tftp = match cfg.tftp_port {
            0 => None,
            p => Some(
                udp::bind(SocketAddrV4::new(any, p), false, None)
                    .map_err(|e| with("TFTP", p, e))?,
            ),
        };
        let http = TcpListener::bind((any, cfg.http_port))
            .await
            .map_err(|e| with("HTTP", cfg.http_port, e))?;
        let ra = match (cfg.ipv6_ra_enabled(), ra::bind(dev)) {
            (false, _) => None,
            (true, Ok(r)) => Some(r),
            (true, Err(e)) if cfg.ipv6_ra == config::Toggle::On => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("opening the ICMPv6 socket for --ipv6-ra: {e}"),
                ))
            }
            (true, Err(e)) => {
                tracing::warn!(error = %e, "no IPv6 router advertisements (iPXE will wait for IPv6 configuration)");
                None
            }
        };
        Ok(Sockets {
            dhcp: Some(dhcp),
            pxe,
            tftp,
            http: Some(http),
            ra,
        })
    }
}

/// Runs every server on `sockets` until `token` fires (or one fails, which cancels the rest).
pub async fn serve(
    ctx: Arc<Netboot>,
    sockets: Sockets,
    token: CancellationToken,
) -> io::Result<()> {
    let mut set: JoinSet<io::Result<()>> = JoinSet::new();
    if let Some(s) = sockets.dhcp {
        set.spawn(dhcp::server::serve(
            ctx.clone(),
            Arc::new(s),
            false,
            token.clone(),
        ));
    }
    if let Some(s) = sockets.pxe {
        set.spawn(dhcp::server::serve(
            ctx.clone(),
            Arc::new(s),
            true,
            token.clone(),
        ));
    }
    if let Some(s) = sockets.tftp {
        set.spawn(tftp::server::serve(ctx.clone(), Arc::new(s), token.clone()));
    }
    if let Some(l) = sockets.http {
        set.spawn(http::serve(ctx.clone(), l, token.clone()));
    }
    if let Some((s, _)) = sockets.ra {
        set.spawn(ra::serve(ctx.clone(), s, token.clone()));
    }
    set.spawn(report_suppressed(ctx.clone(), token.clone()));
    let mut result = Ok(());
    while let Some(r) = set.join_next().await {
        let r = r.map_err(io::Error::other).and_then(|r| r);
        if let Err(e) = r {
            token.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}

/// Logs, every window of the bad-input limiter and once more at the end, how many of its lines
/// were suppressed and not yet reported by a later line: the count of a flood's last burst.
async fn report_suppressed(ctx: Arc<Netboot>, token: CancellationToken) -> io::Result<()> {
    let report = || {
        let n = ctx.bad_input.take_suppressed();
        if n > 0 {
            tracing::warn!(
                suppressed = n,
                limit = ctx.bad_input.per_window(),
                "bad input: log lines suppressed (rate limit per second)"
            );
        }
    };
    let mut tick = tokio::time::interval(ctx.bad_input.window());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tick.tick() => report(),
        }
    }
    report();
    Ok(())
}

/// An error and its causes on one line (`what: why: deeper cause`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_a_host_names_are_loaded_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("undionly.kpxe"), b"bios").unwrap();
        std::fs::write(dir.path().join("custom.efi"), b"custom").unwrap();
        let cfg = Config {
            ipxe_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let hosts = StaticHosts::parse(
            "hosts:\n  - mac: 52:54:00:00:00:01\n    arch_binary: { uefi_x64: custom.efi }\n",
        )
        .unwrap();
        let (files, missing) = load_binaries(&cfg, &hosts).unwrap();
        assert_eq!(&files.resolve("custom.efi").unwrap().1[..], b"custom");
        assert_eq!(&files.resolve("undionly.kpxe").unwrap().1[..], b"bios");
        // Defaults that are missing are only reported.
        assert_eq!(missing, ["ipxe-arm64.efi", "ipxe.efi", "snponly.efi"]);

        for name in ["absent.efi", "../custom.efi"] {
            let hosts = StaticHosts::parse(&format!(
                "hosts:\n  - mac: 52:54:00:00:00:01\n  - mac: 52:54:00:00:00:02\n    arch_binary: {{ bios: undionly.kpxe, uefi_arm64: {name:?} }}\n"
            ))
            .unwrap();
            let e = load_binaries(&cfg, &hosts).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "host 52:54:00:00:00:02: arch_binary uefi_arm64 is {name:?}, which is not a file in {} (--ipxe-dir)",
                    dir.path().display()
                )
            );
        }
    }
}
