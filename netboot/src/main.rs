//! `ferrox-netboot`: thin dispatch. Reads the configuration, the hosts file and the files it
//! serves, binds the sockets, reports what it will do, and serves until SIGINT/SIGTERM.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use ferrox_netboot::config::Config;
use ferrox_netboot::controller::{follow, ControllerHosts, Layered};
use ferrox_netboot::hosts::{HostSource, StaticHosts};
use ferrox_netboot::{interfaces, serve, Netboot, Sockets};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

fn main() -> ExitCode {
    let cfg = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrox-netboot: {}", ferrox_netboot::error_chain(&e));
            return ExitCode::from(2);
        }
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // A failed write to stderr (a closed pipe) is dropped: by default tracing-subscriber
    // reports it with eprintln!, which panics on that same closed stderr and took down the task
    // that logged — the SIGTERM handler among them, so the process never stopped.
    if cfg.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
            .init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &Option<std::path::PathBuf>, what: &str) -> anyhow::Result<Option<Bytes>> {
    match path {
        Some(p) => {
            Ok(Some(Bytes::from(std::fs::read(p).with_context(|| {
                format!("reading {what} {}", p.display())
            })?)))
        }
        None => Ok(None),
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let hosts = match &cfg.hosts {
        Some(p) => StaticHosts::load(p)?,
        None => StaticHosts::default(),
    };
    let (files, missing) = ferrox_netboot::load_binaries(&cfg, &hosts)?;
    let kernel = read(&cfg.kernel, "kernel")?;
    let initramfs = read(&cfg.initramfs, "initramfs")?;
    let sockets = Sockets::bind(&cfg).await?;
    // Installed before "listening" is logged: a SIGTERM after that line stops the server
    // cleanly (before, it could arrive ahead of the handler and kill the process outright).
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    info!(mode = ?cfg.mode, unknown = ?cfg.unknown, hosts = hosts.len(), dhcp_interface = cfg.interface.as_deref().unwrap_or("every interface"), "ferrox-netboot starting");
    match interfaces::list() {
        Ok(ifs) => {
            for i in &ifs {
                info!(interface = %i.name, addresses = %interfaces::addrs(i), serving = %interfaces::served(&cfg, i), "interface");
            }
        }
        Err(e) => warn!(error = %e, "cannot list the interfaces"),
    }
    for p in &cfg.pools {
        info!(subnet = %format!("{}/{}", p.network, p.prefix), first = %p.first, last = %p.last, router = ?p.router, "dhcp pool");
    }
    info!(
        dhcp = cfg.dhcp_port,
        pxe = matches!(cfg.mode, ferrox_netboot::config::Mode::Proxy),
        tftp = cfg.tftp_port,
        http = cfg.http_port,
        "listening"
    );
    match &sockets.ra {
        Some((_, ifs)) => {
            info!(interfaces = ?ifs, "answering IPv6 router solicitations (no router, no prefixes)")
        }
        None => info!("not answering IPv6 router solicitations"),
    }
    for (name, size) in files.list() {
        info!(
            file = name,
            bytes = size,
            "serving iPXE binary (TFTP and /ipxe/)"
        );
    }
    for m in &missing {
        warn!(file = %m, dir = %cfg.ipxe_dir.display(), "iPXE binary not found; clients that need it will fail");
    }
    info!(
        kernel = kernel.as_ref().map_or(0, Bytes::len),
        initramfs = initramfs.as_ref().map_or(0, Bytes::len),
        "serving /files/kernel and /files/initramfs (bytes; 0 = not served)"
    );

    let reserved: Vec<_> = hosts.reserved().collect();
    let token = CancellationToken::new();
    // Every task of this process, owned here; each ends when the token fires.
    let mut tasks = tokio::task::JoinSet::new();
    let source: Arc<dyn HostSource> = match &cfg.controller_hosts {
        Some(url) => {
            let bearer = match &cfg.controller_token_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("reading the controller token {}", p.display()))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let layered = Arc::new(Layered {
                file: Arc::new(hosts),
                controller: Arc::new(ControllerHosts::default()),
            });
            info!(controller = %url, "following the controller's host list");
            tasks.spawn(follow(layered.clone(), url.clone(), bearer, token.clone()));
            layered
        }
        None => Arc::new(hosts),
    };
    let ctx = Arc::new(Netboot::new(
        cfg, source, reserved, files, kernel, initramfs,
    ));
    let stop = token.clone();
    tasks.spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            // The servers ended on their own (an error): nothing to wait for.
            _ = stop.cancelled() => return,
        }
        // Cancel first: stopping never depends on logging.
        stop.cancel();
        info!("shutting down");
    });
    let served = serve(ctx, sockets, token.clone()).await.context("serving");
    token.cancel();
    while tasks.join_next().await.is_some() {}
    served
}
