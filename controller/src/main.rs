//! `ferrox-controller`: thin dispatch. `run` reconciles the BareMetalHosts of a manifest
//! directory, or with `--kube` those of a Kubernetes cluster (after taking the leader Lease);
//! state is in the embedded store either way. `get` prints hosts as `kubectl get bmh` would.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use controller_agentapi::{AgentApi, Ca, Options};
use ferrox_controller::kubestore::{self, lease};
use ferrox_controller::machine::Limits;
use ferrox_controller::reconciler::{Config, Reconciler};
use ferrox_controller::store::{EventRecord, HostRecord, Store};
use ferrox_controller::{agents, bmc, configdrive, feed, manifests, view};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Reconciles metal3 BareMetalHosts: Redfish BMCs, netboot, and the ramdisk agent over mTLS.
#[derive(Debug, Parser)]
#[command(name = "ferrox-controller", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Reconcile the BareMetalHosts (and Secrets) in a directory of manifests (--manifests) or in
    /// a Kubernetes cluster (--kube), keeping state in an embedded database under --state. Runs
    /// until SIGINT/SIGTERM (or, with --kube, until the leader Lease is lost).
    Run(Box<RunArgs>),
    /// Print hosts like `kubectl get bmh` (or their HardwareData, or Events).
    Get(GetArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Directory of BareMetalHost and Secret manifests (the YAML you would `kubectl apply`).
    /// Re-read every second: edit, add or remove files to change what the controller does.
    #[arg(long, required_unless_present = "kube", conflicts_with = "kube")]
    manifests: Option<PathBuf>,
    /// Reconcile the BareMetalHosts of a Kubernetes cluster instead (in-cluster service account,
    /// else KUBECONFIG): watches hosts and their Secrets, adds metal3's finalizer, writes status
    /// through the status subresource, HardwareData and Events. Only the replica holding the
    /// leader Lease acts; --state must then be a volume that follows the leader.
    #[arg(long)]
    kube: bool,
    /// With --kube: watch only this namespace (default: every namespace).
    #[arg(long, requires = "kube")]
    namespace: Option<String>,
    /// With --kube: namespace of the leader-election Lease (the controller's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "ferrox-system")]
    lease_namespace: String,
    /// With --kube: name of the leader-election Lease.
    #[arg(long, default_value = "ferrox-controller")]
    lease_name: String,
    /// With --kube: this replica's identity in the Lease and in Events (default: the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// State directory: the database (hosts, tokens, CA), the local API's address and token.
    #[arg(long, default_value = "/var/lib/ferrox")]
    state: PathBuf,
    /// Where the agent API (mTLS) listens.
    #[arg(long, default_value = "0.0.0.0:9443")]
    agent_listen: SocketAddr,
    /// The agent API's URL as agents reach it (goes on their kernel command line), e.g.
    /// `https://172.22.0.1:9443`. Its host name or IP is put in the server certificate.
    #[arg(long)]
    agent_url: String,
    /// Where the local API listens: netboot's host feed (`ferrox-netboot --controller-hosts`)
    /// and `ferrox-controller get`. Bearer-token protected; keep it on loopback or a trusted net.
    #[arg(long, default_value = "127.0.0.1:9445")]
    api_listen: SocketAddr,
    /// Hosts provisioning at once; the others wait with operationalStatus `delayed`.
    #[arg(long, default_value_t = 20)]
    provisioning_limit: usize,
    /// Concurrent reconciles.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Seconds a host may take from power-on to the agent's enrollment.
    #[arg(long, default_value_t = 600)]
    boot_timeout: u64,
    /// Seconds the OS gets to shut down after a graceful shutdown request (spec.online: false)
    /// before the host is powered off hard (Ironic's soft power-off timeout is 600 s).
    #[arg(long, default_value_t = 180)]
    soft_power_off_timeout: u64,
    /// Extra kernel command line for the ramdisk, e.g. `console=ttyS0`.
    #[arg(long)]
    ramdisk_cmdline: Option<String>,
    /// Logs as JSON lines.
    #[arg(long)]
    log_json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    /// kubectl's columns.
    Table,
    /// kubectl's `-o wide` columns.
    Wide,
    /// The objects as YAML.
    Yaml,
    /// The objects as JSON.
    Json,
}

#[derive(Debug, clap::Args)]
struct GetArgs {
    /// `baremetalhosts` (`bmh`), `hardwaredata` (`hd`) or `events`.
    #[arg(default_value = "bmh")]
    kind: String,
    /// One object, by name (`NAME` in any namespace, or `NAMESPACE/NAME`).
    name: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// The controller's state directory.
    #[arg(long, default_value = "/var/lib/ferrox")]
    state: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run(a) => run(*a),
        Cmd::Get(a) => get(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrox-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The local API's bearer token: owner read-write, group read — in a cluster, the netboot
/// container of the same pod reads it through the pod's fsGroup; no one else can.
fn read_or_create_secret(path: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640))
                .with_context(|| format!("setting the mode of {}", path.display()))?;
            return Ok(s);
        }
    }
    let token = controller_agentapi::mint_token()?;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut f, token.as_bytes())?;
    Ok(token)
}

fn load_ca(store: &Store) -> Result<Ca> {
    if let Some(b) = store.meta("ca")? {
        let (cert, key): (String, String) =
            serde_json::from_slice(&b).context("reading the stored CA")?;
        return Ca::from_pem(&cert, &key).context("loading the stored CA");
    }
    let ca = Ca::generate().context("creating the CA")?;
    let stored = store.meta_or_insert("ca", &serde_json::to_vec(&ca.to_pem())?)?;
    let (cert, key): (String, String) = serde_json::from_slice(&stored)?;
    Ok(Ca::from_pem(&cert, &key)?)
}

fn host_of_url(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("https://")
        .context("--agent-url must be an https:// URL (agents pin the CA)")?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("").to_string()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_string()
    };
    if host.is_empty() {
        bail!("--agent-url {url:?} has no host");
    }
    Ok(host)
}

fn run(a: RunArgs) -> Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if a.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init();
    }
    std::fs::create_dir_all(&a.state).with_context(|| format!("creating {}", a.state.display()))?;
    raise_open_files_limit();
    let first = match &a.manifests {
        Some(dir) => Some(
            manifests::read_dir(dir)
                .with_context(|| format!("reading the manifest directory {}", dir.display()))?,
        ),
        None => None,
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let cancel = CancellationToken::new();
        {
            let cancel = cancel.clone();
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                info!("shutting down");
                cancel.cancel();
            });
        }
        // In a cluster, the Lease comes first: the store is opened only by the leader.
        let cluster = if a.kube {
            let client = kube::Client::try_default().await.context(
                "connecting to the Kubernetes API (in-cluster service account, or KUBECONFIG)",
            )?;
            let identity = match &a.identity {
                Some(i) => i.clone(),
                None => hostname()?,
            };
            let elector = Arc::new(lease::Elector::new(
                client.clone(),
                lease::LeaseConfig::new(&a.lease_namespace, &a.lease_name, &identity),
            ));
            info!(lease = %format!("{}/{}", a.lease_namespace, a.lease_name), %identity, "waiting for the leader Lease");
            if !elector.acquire(&cancel).await {
                return Ok(());
            }
            Some((client, elector, identity))
        } else {
            None
        };

        let store = Arc::new(Store::open(&a.state.join("state.redb"))?);
        let ca = load_ca(&store)?;
        let fingerprint = ca.fingerprint();
        let api_token = read_or_create_secret(&a.state.join("api.token"))?;
        let server_name = host_of_url(&a.agent_url)?;
        let cfg = Config {
            limits: Limits {
                boot_timeout_ms: a.boot_timeout * 1000,
                soft_power_off_timeout_ms: a.soft_power_off_timeout * 1000,
                ..Limits::default()
            },
            provisioning_limit: a.provisioning_limit,
            workers: a.workers,
            agent_url: a.agent_url.clone(),
            ca_fingerprint: fingerprint.clone(),
            token_ttl: Duration::from_secs(a.boot_timeout + 300),
            ramdisk_cmdline: a.ramdisk_cmdline.clone(),
        };
        let rec = Reconciler::new(
            store,
            Arc::new(bmc::RedfishBmc::default()),
            Box::new(configdrive::render),
            cfg,
        );
        let api = AgentApi::new(
            ca,
            Arc::new(agents::Agents(rec.clone())),
            Options {
                server_names: vec![server_name],
                ..Options::default()
            },
        )?;
        agents::connect(&rec, &api);
        let agent_listener = tokio::net::TcpListener::bind(a.agent_listen)
            .await
            .with_context(|| format!("binding the agent API to {}", a.agent_listen))?;
        let api_listener = tokio::net::TcpListener::bind(a.api_listen)
            .await
            .with_context(|| format!("binding the local API to {}", a.api_listen))?;
        let api_addr = api_listener.local_addr()?;
        std::fs::write(a.state.join("api.address"), api_addr.to_string())?;

        if let Some(first) = &first {
            for (p, why) in manifests::sync(&rec, first) {
                tracing::error!(file = %p.display(), "manifest not applied: {why}");
            }
        }
        info!(
            agent_api = %a.agent_listen,
            agent_url = %a.agent_url,
            ca = %fingerprint,
            local_api = %api_addr,
            source = %match &a.manifests {
                Some(dir) => dir.display().to_string(),
                None => "kubernetes".to_string(),
            },
            hosts = first.as_ref().map_or(0, |m| m.hosts.len()),
            provisioning_limit = a.provisioning_limit,
            "ferrox-controller starting"
        );

        let mut tasks = tokio::task::JoinSet::new();
        {
            let c = cancel.clone();
            tasks.spawn(async move { api.serve(agent_listener, c).await });
        }
        tasks.spawn(feed::serve(
            api_listener,
            rec.clone(),
            api_token,
            cancel.clone(),
        ));
        let lost = Arc::new(std::sync::Mutex::new(None::<String>));
        let runner = match (&cluster, &a.manifests) {
            (Some((client, elector, identity)), _) => {
                let (c, e, l) = (cancel.clone(), elector.clone(), lost.clone());
                tasks.spawn(async move {
                    if let Err(why) = e.keep(&c).await {
                        tracing::error!("leadership lost: {why}; stopping");
                        *l.lock().unwrap() = Some(why);
                        c.cancel();
                    }
                });
                let settings = kubestore::Settings {
                    namespace: a.namespace.clone(),
                    identity: identity.clone(),
                };
                tokio::spawn(kubestore::serve(
                    client.clone(),
                    rec.clone(),
                    settings,
                    cancel.clone(),
                ))
            }
            (None, Some(dir)) => {
                tasks.spawn(manifests::watch(
                    rec.clone(),
                    dir.clone(),
                    Duration::from_secs(1),
                    cancel.clone(),
                ));
                tokio::spawn(rec.clone().run(cancel.clone()))
            }
            (None, None) => bail!("either --manifests or --kube is required"),
        };

        cancel.cancelled().await;
        while tasks.join_next().await.is_some() {}
        let ran = runner.await;
        if let Some((_, elector, _)) = &cluster {
            if let Err(e) = elector.release().await {
                tracing::warn!(error = %ferrox_controller::error_chain(&e), "could not release the Lease");
            }
        }
        ran??;
        if let Some(why) = lost.lock().unwrap().take() {
            bail!("{why}");
        }
        Ok(())
    })
}

/// Raises the soft limit on open files to the hard one, as Go programs do at start: every agent
/// holds a connection (its long poll) and every BMC one more, and the usual soft limit, 1024,
/// is below what a thousand hosts need.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "open files limit raised"),
            Err(e) => tracing::warn!(soft, hard, "could not raise the open files limit: {e}"),
        },
        Ok((soft, _)) if soft < 4096 => {
            tracing::warn!(
                soft,
                "the open files limit is low: each agent and BMC holds a connection"
            )
        }
        _ => {}
    }
}

/// This machine's host name (a pod's name, in a cluster).
fn hostname() -> Result<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the host name (or pass --identity)")?;
    Ok(h.trim().to_string())
}

/// Records and events: from the running controller's local API, else from the store directly.
fn fetch(state: &Path) -> Result<(Vec<HostRecord>, Vec<EventRecord>)> {
    if let (Ok(addr), Ok(token)) = (
        std::fs::read_to_string(state.join("api.address")),
        std::fs::read_to_string(state.join("api.token")),
    ) {
        if let Ok(r) = local_api(addr.trim(), token.trim(), "/v1/records") {
            let ev = local_api(addr.trim(), token.trim(), "/v1/events")?;
            return Ok((serde_json::from_slice(&r)?, serde_json::from_slice(&ev)?));
        }
    }
    let db = state.join("state.redb");
    if !db.exists() {
        bail!(
            "no controller state in {} (is --state right?)",
            state.display()
        );
    }
    let store =
        Store::open(&db).context("the controller is not answering and its store is locked")?;
    Ok((
        store.hosts()?.into_iter().map(|(_, r)| r).collect(),
        store.events(None)?,
    ))
}

/// A plain HTTP/1.1 GET to the loopback local API.
fn local_api(addr: &str, token: &str, path: &str) -> Result<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.take(256 << 20).read_to_end(&mut buf)?;
    let text_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header")?;
    let head = String::from_utf8_lossy(&buf[..text_end]).to_string();
    if !head.starts_with("HTTP/1.1 200") {
        bail!("local API {path}: {}", head.lines().next().unwrap_or(""));
    }
    let body = &buf[text_end + 4..];
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_vec())
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(p) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..p]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        let start = p + 2;
        out.extend_from_slice(&b[start..(start + n).min(b.len())]);
        b = &b[(start + n + 2).min(b.len())..];
    }
    out
}

fn matches_name(r: &HostRecord, want: &Option<String>) -> bool {
    let Some(w) = want else { return true };
    let name = r.object["metadata"]["name"].as_str().unwrap_or("");
    let ns = r.object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    match w.split_once('/') {
        Some((n, m)) => n == ns && m == name,
        None => w == name,
    }
}

fn get(a: GetArgs) -> Result<()> {
    let (records, events) = fetch(&a.state)?;
    let records: Vec<HostRecord> = records
        .into_iter()
        .filter(|r| matches_name(r, &a.name))
        .collect();
    if a.name.is_some() && records.is_empty() {
        bail!(
            "baremetalhost {:?} not found",
            a.name.as_deref().unwrap_or("")
        );
    }
    let now = k8s_openapi::jiff::Timestamp::now();
    let print = |v: &serde_json::Value| -> Result<()> {
        match a.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(v)?),
            _ => print!("{}", serde_yaml::to_string(v)?),
        }
        Ok(())
    };
    let list = |items: Vec<serde_json::Value>| {
        if items.len() == 1 && a.name.is_some() {
            items.into_iter().next().unwrap_or_default()
        } else {
            serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
        }
    };
    match a.kind.as_str() {
        "bmh" | "baremetalhost" | "baremetalhosts" => match a.output {
            Output::Table | Output::Wide => {
                let hosts = records
                    .iter()
                    .map(view::host)
                    .collect::<Result<Vec<_>, _>>()?;
                print!(
                    "{}",
                    controller_api::printing::table(&hosts, now, matches!(a.output, Output::Wide))
                );
            }
            _ => print(&list(records.iter().map(view::object_json).collect()))?,
        },
        "hd" | "hardwaredata" => {
            let items: Vec<serde_json::Value> = records
                .iter()
                .filter_map(view::hardware_data)
                .map(|h| serde_json::to_value(h).unwrap_or_default())
                .collect();
            match a.output {
                Output::Table | Output::Wide => {
                    println!("NAME");
                    for h in &items {
                        println!("{}", h["metadata"]["name"].as_str().unwrap_or(""));
                    }
                }
                _ => print(&list(items))?,
            }
        }
        "events" | "ev" => {
            let stamp = |ms: u64| {
                k8s_openapi::jiff::Timestamp::from_millisecond(ms as i64)
                    .unwrap_or(now)
                    .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string()
            };
            let shown = events.iter().filter(|e| {
                a.name
                    .as_ref()
                    .is_none_or(|n| *n == e.host.name || *n == e.host.to_string())
            });
            match a.output {
                Output::Table | Output::Wide => {
                    println!(
                        "{:<24} {:<8} {:<22} {:<25} MESSAGE",
                        "HOST", "TYPE", "REASON", "TIME"
                    );
                    for e in shown {
                        println!(
                            "{:<24} {:<8} {:<22} {:<25} {}",
                            e.host.to_string(),
                            if e.warning { "Warning" } else { "Normal" },
                            e.reason,
                            stamp(e.at_ms),
                            e.message
                        );
                    }
                }
                // core/v1 Events, as `kubectl get events -o json` shows them (always a List).
                _ => print(&serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": shown
                        .map(|e| {
                            serde_json::json!({
                                "apiVersion": "v1",
                                "kind": "Event",
                                "metadata": {"namespace": e.host.namespace},
                                "involvedObject": {
                                    "apiVersion": "metal3.io/v1alpha1",
                                    "kind": "BareMetalHost",
                                    "namespace": e.host.namespace,
                                    "name": e.host.name,
                                },
                                "type": if e.warning { "Warning" } else { "Normal" },
                                "reason": e.reason,
                                "message": e.message,
                                "lastTimestamp": stamp(e.at_ms),
                                "source": {"component": "ferrox-controller"},
                            })
                        })
                        .collect::<Vec<_>>(),
                }))?,
            }
        }
        other => bail!("unknown kind {other:?}: use bmh, hardwaredata or events"),
    }
    Ok(())
}
