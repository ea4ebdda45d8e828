//! The run: manifests for N hosts, a real `ferrox-controller run --manifests` process, the
//! simulated BMCs and agents, and a watch through the controller's local API (`/v1/records`,
//! what `ferrox-controller get` reads) until every host is provisioned, one is stuck past the
//! deadline, or the controller dies. Measures the controller's wall time per milestone, its CPU
//! time and its memory (VmRSS sampled, VmHWM at the end) from /proc.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

use crate::bmc::{self, Booted, Counters, Sim, SimHost, Timings};
use crate::feed::{local_get, LocalClient, Table};

const BMC_USER: &str = "admin";
const BMC_PASSWORD: &str = "scale-bench-password";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many hosts.
    pub hosts: usize,
    /// The ferrox-controller binary.
    pub controller: PathBuf,
    /// Work directory (manifests, controller state, logs); emptied first.
    pub dir: PathBuf,
    /// `--provisioning-limit`.
    pub provisioning_limit: usize,
    /// `--workers`; `None`: the controller's default.
    pub workers: Option<usize>,
    /// Give up after this long.
    pub deadline: Duration,
    /// How often the local API is read.
    pub poll: Duration,
    /// Simulated work.
    pub timings: Timings,
}

/// Seconds from the controller's start until every host had reached a state.
#[derive(Debug, Clone, Default)]
pub struct Milestones {
    pub registered: Option<f64>,
    pub inspected: Option<f64>,
    pub provisioned: Option<f64>,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub hosts: usize,
    pub all: Milestones,
    /// Each host's seconds to provisioned, sorted.
    pub per_host_provisioned: Vec<f64>,
    /// Controller CPU seconds (user + system) over the run.
    pub controller_cpu: f64,
    /// Controller peak resident memory (VmHWM), bytes.
    pub controller_peak_rss: u64,
    /// Controller resident memory at the end, bytes.
    pub controller_end_rss: u64,
    /// The harness's own CPU seconds (simulated BMCs, agents' TLS, the watch).
    pub harness_cpu: f64,
    /// Wall seconds of the whole run.
    pub wall: f64,
    /// Hosts not provisioned at the end: name, state, operational status, error.
    pub stuck: Vec<(String, String, String, String)>,
    /// Counters: (name, value).
    pub counters: Vec<(&'static str, u64)>,
    /// Per host, from the simulated machine: (powered on, last boot, images written).
    pub machines: BTreeMap<String, (bool, Booted, u32)>,
    /// State file size at the end, bytes.
    pub store_bytes: u64,
}

/// The hosts' manifests, one file per host, as a metal3 user writes them: a BMC credentials
/// Secret, a userData Secret and the BareMetalHost with an image.
pub fn write_manifests(dir: &Path, hosts: &[SimHost], bmc_port: u16) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for h in hosts {
        let n = &h.id;
        let y = format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {n}-bmc-secret\n  namespace: scale\n\
             type: Opaque\nstringData:\n  username: {BMC_USER}\n  password: {BMC_PASSWORD}\n\
             ---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {n}-user-data\n  namespace: scale\n\
             type: Opaque\nstringData:\n  userData: \"#cloud-config\\nhostname: {n}\\n\"\n\
             ---\napiVersion: metal3.io/v1alpha1\nkind: BareMetalHost\nmetadata:\n  name: {n}\n  namespace: scale\n\
             spec:\n  online: true\n  bootMACAddress: \"{mac}\"\n  bootMode: legacy\n  \
             automatedCleaningMode: metadata\n  \
             bmc:\n    address: redfish+http://{ip}:{bmc_port}/redfish/v1/Systems/{n}\n    \
             credentialsName: {n}-bmc-secret\n  \
             rootDeviceHints:\n    deviceName: /dev/nvme0n1\n  \
             image:\n    url: http://images.invalid/ubuntu-24.04.qcow2\n    \
             checksum: {sum}\n    checksumType: sha256\n    format: qcow2\n  \
             userData:\n    name: {n}-user-data\n    namespace: scale\n",
            mac = h.mac,
            ip = h.bmc_ip,
            sum = "ab".repeat(32),
        );
        std::fs::write(dir.join(format!("{n}.yaml")), y)?;
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // USER_HZ: 100 in Linux's ABI on every architecture we run on.
    Some((utime + stime) / 100.0)
}

fn self_cpu_seconds() -> f64 {
    proc_cpu_seconds(std::process::id()).unwrap_or(0.0)
}

fn rank(state: &str) -> u8 {
    match state {
        "registering" => 1,
        "inspecting" => 2,
        "available" => 3,
        "provisioning" => 4,
        "provisioned" => 5,
        _ => 0,
    }
}

struct Controller {
    child: Child,
}

impl Drop for Controller {
    fn drop(&mut self) {
        // SIGTERM: the controller's orderly stop.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the watch reads of a host record (the rest of it is skipped, not decoded).
#[derive(Debug, Default, serde::Deserialize)]
struct Seen {
    #[serde(default)]
    object: SeenObject,
    #[serde(default)]
    status: SeenStatus,
}

#[derive(Debug, Default, serde::Deserialize)]
struct SeenObject {
    #[serde(default)]
    metadata: SeenMeta,
}

#[derive(Debug, Default, serde::Deserialize)]
struct SeenMeta {
    #[serde(default)]
    name: String,
}

#[derive(Debug, Default, serde::Deserialize)]
struct SeenStatus {
    #[serde(default)]
    state: String,
    #[serde(default)]
    operational: String,
    #[serde(default)]
    error: Option<SeenError>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct SeenError {
    #[serde(default)]
    message: String,
}

async fn get_records(client: &LocalClient, base: &str, bearer: &str) -> Result<Vec<Seen>> {
    Ok(serde_json::from_slice(
        &local_get(client, base, bearer, "/v1/records", 512 << 20).await?,
    )?)
}

/// Runs the benchmark.
pub async fn run(o: &Options) -> Result<Report> {
    let started = Instant::now();
    let cpu0 = self_cpu_seconds();
    let _ = std::fs::remove_dir_all(&o.dir);
    let manifests = o.dir.join("manifests");
    let state = o.dir.join("state");
    std::fs::create_dir_all(&state)?;
    let hosts = bmc::hosts(o.hosts);
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();

    let feed = Arc::new(Table::default());
    let sim = Sim::new(
        &hosts,
        BMC_USER,
        BMC_PASSWORD,
        o.timings.clone(),
        feed.clone(),
    );
    let (listeners, bmc_port) = bmc::bind(&hosts).await?;
    sim.serve_all(listeners, &cancel);
    write_manifests(&manifests, &hosts, bmc_port)?;

    let agent_port = free_port()?;
    let mut args: Vec<String> = [
        "run",
        "--manifests",
        &manifests.to_string_lossy(),
        "--state",
        &state.to_string_lossy(),
        "--agent-listen",
        &format!("127.0.0.1:{agent_port}"),
        "--agent-url",
        &format!("https://127.0.0.1:{agent_port}"),
        "--api-listen",
        "127.0.0.1:0",
        "--provisioning-limit",
        &o.provisioning_limit.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(w) = o.workers {
        args.extend(["--workers".into(), w.to_string()]);
    }
    let log = std::fs::File::create(o.dir.join("controller.log"))?;
    let t0 = Instant::now();
    let child = Command::new(&o.controller)
        .args(&args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", o.controller.display()))?;
    let mut controller = Controller { child };
    let pid = controller.child.id();

    let (api, bearer) = loop {
        if let (Ok(a), Ok(t)) = (
            std::fs::read_to_string(state.join("api.address")),
            std::fs::read_to_string(state.join("api.token")),
        ) {
            if !a.trim().is_empty() && !t.trim().is_empty() {
                break (format!("http://{}", a.trim()), t.trim().to_string());
            }
        }
        if let Some(st) = controller.child.try_wait()? {
            bail!(
                "the controller exited ({st}) before it served: see {}",
                o.dir.join("controller.log").display()
            );
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("the controller did not start its local API within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    {
        let (feed, api, bearer, cancel) =
            (feed.clone(), api.clone(), bearer.clone(), cancel.clone());
        tokio::spawn(async move { feed.follow(&api, &bearer, cancel).await });
    }

    let client: LocalClient = Client::builder(TokioExecutor::new()).build_http();
    let mut report = Report {
        hosts: o.hosts,
        ..Report::default()
    };
    let mut reached: BTreeMap<String, f64> = BTreeMap::new();
    let mut last: Vec<Seen>;
    loop {
        tokio::time::sleep(o.poll).await;
        let t = t0.elapsed().as_secs_f64();
        if let Some(st) = controller.child.try_wait()? {
            bail!(
                "the controller exited ({st}) during the run: see {}",
                o.dir.join("controller.log").display()
            );
        }
        let records = match get_records(&client, &api, &bearer).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("ferrox-scale: reading the hosts: {e:#}");
                continue;
            }
        };
        let mut least = u8::MAX;
        for r in &records {
            let state = r.status.state.as_str();
            if state == "provisioned" && r.status.error.is_none() {
                reached.entry(r.object.metadata.name.clone()).or_insert(t);
            }
            least = least.min(rank(state));
        }
        if records.len() < o.hosts {
            least = 0;
        }
        let all = &mut report.all;
        if least >= 2 && all.registered.is_none() {
            all.registered = Some(t);
        }
        if least >= 3 && all.inspected.is_none() {
            all.inspected = Some(t);
        }
        eprintln!(
            "ferrox-scale: {t:6.1} s: {} hosts known, {} provisioned, controller RSS {} MiB",
            records.len(),
            reached.len(),
            proc_status_kb(pid, "VmRSS:").unwrap_or(0) / 1024
        );
        last = records;
        if reached.len() >= o.hosts {
            all.provisioned = Some(t);
            break;
        }
        if t0.elapsed() > o.deadline {
            break;
        }
    }
    report.controller_cpu = proc_cpu_seconds(pid).unwrap_or(0.0);
    report.controller_peak_rss = proc_status_kb(pid, "VmHWM:").unwrap_or(0) * 1024;
    report.controller_end_rss = proc_status_kb(pid, "VmRSS:").unwrap_or(0) * 1024;
    report.per_host_provisioned = reached.values().copied().collect();
    report
        .per_host_provisioned
        .sort_by(|a, b| a.partial_cmp(b).unwrap());
    for r in last {
        if !reached.contains_key(&r.object.metadata.name) {
            report.stuck.push((
                r.object.metadata.name,
                r.status.state,
                r.status.operational,
                r.status.error.map(|e| e.message).unwrap_or_default(),
            ));
        }
    }
    report.machines = sim.snapshot().into_iter().collect();
    cancel.cancel();
    drop(controller);
    report.store_bytes = std::fs::metadata(state.join("state.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    let c = &sim.counters;
    report.counters = vec![
        ("Redfish requests", Counters::get(&c.redfish_requests)),
        (
            "Redfish requests refused",
            Counters::get(&c.redfish_refused),
        ),
        ("Redfish sessions opened", Counters::get(&c.sessions)),
        ("PXE boots (ramdisk)", Counters::get(&c.pxe_boots)),
        (
            "PXE boots with no netboot entry",
            Counters::get(&c.pxe_no_token),
        ),
        ("boots from disk", Counters::get(&c.disk_boots)),
        ("agent enrollments", Counters::get(&c.enrollments)),
        (
            "agent calls (mTLS connections)",
            Counters::get(&c.agent_calls),
        ),
        (
            "agent calls failed (retried)",
            Counters::get(&c.agent_call_errors),
        ),
        ("agent calls refused", Counters::get(&c.agent_refusals)),
        ("commands run", Counters::get(&c.commands)),
        ("images written", Counters::get(&c.images_written)),
        ("most images written at once", Counters::get(&c.writing_max)),
        (
            "netboot feed answers",
            feed.answers.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "netboot feed bytes",
            feed.bytes.load(std::sync::atomic::Ordering::Relaxed),
        ),
    ];
    report.harness_cpu = self_cpu_seconds() - cpu0;
    report.wall = started.elapsed().as_secs_f64();
    Ok(report)
}

fn pct(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    Some(v[i])
}

fn secs(v: Option<f64>) -> String {
    v.map_or("not reached".into(), |s| format!("{s:.1} s"))
}

/// The least time any controller needs for the simulated work: one boot, one inspection, then
/// the writes in waves of `provisioning_limit`.
pub fn floor(o: &Options) -> f64 {
    let waves = o.hosts.div_ceil(o.provisioning_limit.max(1)) as f64;
    let t = &o.timings;
    t.boot.as_secs_f64() + t.inspect.as_secs_f64() + waves * t.write.as_secs_f64()
}

/// The report as Markdown (docs/bench-scale.md): every run's headline, then the median run
/// (by time to all provisioned) in detail.
pub fn markdown(o: &Options, runs: &[Report], machine: &str, command: &str) -> String {
    let mut m = String::new();
    let mut order: Vec<&Report> = runs.iter().collect();
    order.sort_by(|a, b| {
        let t = |r: &Report| r.all.provisioned.unwrap_or(f64::INFINITY);
        t(a).partial_cmp(&t(b)).unwrap()
    });
    let r = order[order.len() / 2];
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let _ = writeln!(m, "# Controller scale benchmark\n");
    let _ = writeln!(
        m,
        "Generated by `{command}` ({machine}). {n} BareMetalHosts, each with a BMC Secret, a userData \
         Secret and an image, applied at once as manifests to one `ferrox-controller run --manifests` \
         process (embedded store on disk, its real agent API with mTLS, its real local API). Every \
         host goes registering → inspecting → available → provisioning → provisioned.\n",
        n = r.hosts
    );
    let _ = writeln!(
        m,
        "The machines are simulated in the benchmark process: {n} Redfish BMCs, each on its own \
         loopback address (sessions, ETags, one-time boot overrides, reset actions), the netboot \
         decision taken from the controller's netboot feed (the long poll ferrox-netboot follows), and \
         a ramdisk agent per PXE boot that uses the real agent's client: enrollment with the one-time \
         token and a CSR, then heartbeats, progress and results over mTLS with its own certificate. Only \
         the work is simulated: boot {boot:.1} s, inspection {ins:.1} s, image write {write:.1} s with \
         four progress events. The controller runs with `--provisioning-limit {lim}`{workers}. The \
         floor is what the simulated work alone takes: a boot, an inspection, then the writes in \
         waves of {lim}: **{floor:.1} s**.\n",
        n = r.hosts,
        boot = o.timings.boot.as_secs_f64(),
        ins = o.timings.inspect.as_secs_f64(),
        write = o.timings.write.as_secs_f64(),
        lim = o.provisioning_limit,
        workers = o.workers.map_or(String::new(), |w| format!(" --workers {w}")),
        floor = floor(o),
    );
    let _ = writeln!(
        m,
        "| run | all provisioned after | ÷ floor | controller peak RSS | controller CPU | stuck |\n|---|---|---|---|---|---|"
    );
    for (i, run) in runs.iter().enumerate() {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {:.0} MiB | {:.1} s | {} |",
            i + 1,
            secs(run.all.provisioned),
            run.all
                .provisioned
                .map_or("–".into(), |t| format!("{:.2}×", t / floor(o))),
            mib(run.controller_peak_rss),
            run.controller_cpu,
            run.stuck.len()
        );
    }
    let _ = writeln!(m, "\nThe median run:\n");
    let goal_time = r.all.provisioned.is_some_and(|t| t <= 120.0);
    let goal_rss = r.controller_peak_rss <= 200 << 20;
    let _ = writeln!(m, "| measurement | value | goal |\n|---|---|---|");
    let _ = writeln!(
        m,
        "| all {n} provisioned after | **{}** | ≤ 120 s: {} |",
        secs(r.all.provisioned),
        if goal_time { "met" } else { "**not met**" },
        n = r.hosts
    );
    let _ = writeln!(
        m,
        "| controller peak RSS (VmHWM) | **{:.0} MiB** | ≤ 200 MB: {} |",
        mib(r.controller_peak_rss),
        if goal_rss { "met" } else { "**not met**" }
    );
    let _ = writeln!(
        m,
        "| hosts stuck | **{}** | none: {} |",
        r.stuck.len(),
        if r.stuck.is_empty() {
            "met"
        } else {
            "**not met**"
        }
    );
    let _ = writeln!(
        m,
        "| all past registering after | {} | |",
        secs(r.all.registered)
    );
    let _ = writeln!(
        m,
        "| all inspected (available or beyond) after | {} | |",
        secs(r.all.inspected)
    );
    let v = &r.per_host_provisioned;
    let _ = writeln!(
        m,
        "| one host to provisioned: median / p90 / max | {} / {} / {} | |",
        secs(pct(v, 0.5)),
        secs(pct(v, 0.9)),
        secs(pct(v, 1.0))
    );
    let _ = writeln!(
        m,
        "| controller CPU (user + system) | {:.1} s ({:.1} ms per host) | |",
        r.controller_cpu,
        r.controller_cpu * 1000.0 / r.hosts.max(1) as f64
    );
    let _ = writeln!(
        m,
        "| controller RSS at the end | {:.0} MiB | |",
        mib(r.controller_end_rss)
    );
    let _ = writeln!(
        m,
        "| store file at the end | {:.1} MiB | |",
        mib(r.store_bytes)
    );
    let _ = writeln!(
        m,
        "| benchmark process CPU (simulated BMCs and agents, TLS, the watch) | {:.1} s | |",
        r.harness_cpu
    );
    let _ = writeln!(
        m,
        "\nWhat the simulated side saw:\n\n| count | value |\n|---|---|"
    );
    for (k, v) in &r.counters {
        let _ = writeln!(m, "| {k} | {v} |");
    }
    let disk = r
        .machines
        .values()
        .filter(|(on, b, w)| *on && *b == Booted::Disk && *w == 1)
        .count();
    let _ = writeln!(
        m,
        "\nAt the end {disk} of {} machines were on, booted from their disk, with exactly one image \
         written.",
        r.hosts
    );
    if !r.stuck.is_empty() {
        let _ = writeln!(m, "\nNot provisioned (first 20):\n\n| host | state | operational | error |\n|---|---|---|---|");
        for (n, s, op, e) in r.stuck.iter().take(20) {
            let _ = writeln!(m, "| {n} | {s} | {op} | {e} |");
        }
    }
    m
}
