//! The lab speed benchmark (issue 6 "Speed"): power-on → provisioned for a 1 GiB image, per
//! phase, next to the floor the same run measures on VMs of the same kind on the same bridge.
//!
//! One lab (see [`crate::lab`]) in a namespace and directory of the benchmark's own holds:
//!
//! * `floor-ipxe`, `floor-copy`: VMs of the same libvirt XML as the hosts (TCG, SeaBIOS, virtio NIC,
//!   virtio disk), no BMC, no manifest, netbooted by the same ferrox-netboot from a static hosts
//!   file. `floor-ipxe` boots the real ramdisk: power-on → the kernel's first console line is
//!   the bare iPXE floor. `floor-copy` boots the floor ramdisk (hack/build-bench-lab.sh: the
//!   real one with a busybox /init appended): its first line after the kernel's is the bare
//!   kernel floor, its copy of the 1 GiB image onto its virtio disk (floorcopy: 4 MiB socket
//!   reads, O_DIRECT writes in a second thread, fsync) the raw copy floor; then it boots that disk, and power-on → the image's first `FERROX-LAB:` line
//!   is the reboot-into-disk floor. Inspection's floor is 0.
//! * Run A: one BIOS host provisioned with the 1 GiB image, timed per phase from its console
//!   (wall clock, 100 ms polling) and the controller's Events.
//! * Run B: three more BIOS hosts provisioned at once (run A's host switched off first).
//!
//! The floors and the runs share the machine's noise; the report gives ratios, not absolutes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::lab::{self, Dirs, Firmware, HostPlan, Image, Plan, Timeline};

/// The floor VM that boots the real ramdisk (bare iPXE floor).
pub const FLOOR_IPXE: &str = "floor-ipxe";
/// The floor VM that copies the image and boots it (kernel, copy and disk floors).
pub const FLOOR_COPY: &str = "floor-copy";
/// Run A's host.
pub const RUN_A: &str = "bench-a";
/// Run B's hosts.
pub const RUN_B: [&str; 3] = ["bench-b1", "bench-b2", "bench-b3"];

/// What `ferrox-lab bench` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// Working directory of the benchmark's lab.
    pub dir: PathBuf,
    /// Its network namespace (not the lab's).
    pub netns: String,
    /// Where ferrox-controller and ferrox-netboot are.
    pub bin: PathBuf,
    /// The Markdown report to write.
    pub out: PathBuf,
}

/// Something seen on a VM.
#[derive(Debug, Clone, PartialEq)]
pub enum Mark {
    /// Its QEMU started (libvirt's PID file appeared).
    PowerOn,
    /// Its QEMU ended.
    PowerOff,
    /// A console line.
    Line(String),
}

type Marks = Arc<Mutex<BTreeMap<String, Vec<(u64, Mark)>>>>;

/// Watches VMs' QEMU PID files and serial console files every 100 ms, stamping what appears
/// with the wall clock (ms since the epoch), until dropped.
pub struct Watcher {
    marks: Marks,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Tail {
    running: bool,
    offset: u64,
    partial: Vec<u8>,
}

impl Watcher {
    /// Starts watching `vms` of the lab in `dirs` (from what their consoles hold now on).
    pub fn start(dirs: &Dirs, vms: &[&str]) -> Watcher {
        let marks: Marks = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (m, st, dirs) = (marks.clone(), stop.clone(), dirs.clone());
        let vms: Vec<String> = vms.iter().map(|v| v.to_string()).collect();
        let thread = std::thread::spawn(move || {
            let mut tails: Vec<Tail> = vms
                .iter()
                .map(|v| Tail {
                    running: false,
                    offset: std::fs::metadata(dirs.console(v)).map_or(0, |m| m.len()),
                    partial: Vec::new(),
                })
                .collect();
            while !st.load(Ordering::Relaxed) {
                for (v, t) in vms.iter().zip(&mut tails) {
                    let now = lab::now_ms();
                    let new = poll(&dirs, v, t, now);
                    if !new.is_empty() {
                        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
                        g.entry(v.clone()).or_default().extend(new);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Watcher {
            marks,
            stop,
            thread: Some(thread),
        }
    }

    /// The first mark of `vm` at or after `after` (ms since the epoch) that `pred` accepts.
    pub fn find(&self, vm: &str, after: u64, pred: impl Fn(&Mark) -> bool) -> Option<(u64, Mark)> {
        let g = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        g.get(vm)?
            .iter()
            .find(|(at, m)| *at >= after && pred(m))
            .cloned()
    }

    /// The last mark of `vm` in `after..=before` that `pred` accepts.
    pub fn find_last(
        &self,
        vm: &str,
        after: u64,
        before: u64,
        pred: impl Fn(&Mark) -> bool,
    ) -> Option<(u64, Mark)> {
        let g = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        g.get(vm)?
            .iter()
            .rev()
            .find(|(at, m)| (after..=before).contains(at) && pred(m))
            .cloned()
    }

    /// [`Watcher::find`], waiting up to `limit` for it.
    pub fn wait(
        &self,
        vm: &str,
        after: u64,
        limit: Duration,
        what: &str,
        pred: impl Fn(&Mark) -> bool,
    ) -> Result<(u64, Mark)> {
        let t0 = Instant::now();
        loop {
            if let Some(found) = self.find(vm, after, &pred) {
                return Ok(found);
            }
            ensure!(
                t0.elapsed() < limit,
                "{vm}: no {what} after {limit:?}; its console ends:\n{}",
                self.last_lines(vm, 15)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `n` console lines of `vm`.
    pub fn last_lines(&self, vm: &str, n: usize) -> String {
        let g = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        let lines: Vec<&str> = g
            .get(vm)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|(_, m)| match m {
                Mark::Line(l) => Some(l.as_str()),
                _ => None,
            })
            .collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn poll(dirs: &Dirs, vm: &str, t: &mut Tail, now: u64) -> Vec<(u64, Mark)> {
    let mut new = Vec::new();
    let running = dirs.qemu_pid_file(vm).exists();
    if running != t.running {
        t.running = running;
        new.push((
            now,
            if running {
                Mark::PowerOn
            } else {
                Mark::PowerOff
            },
        ));
    }
    let Ok(mut f) = std::fs::File::open(dirs.console(vm)) else {
        return new;
    };
    let len = f.metadata().map_or(0, |m| m.len());
    if len < t.offset {
        t.offset = 0;
    }
    if len > t.offset && f.seek(SeekFrom::Start(t.offset)).is_ok() {
        let mut buf = Vec::new();
        if f.take(len - t.offset).read_to_end(&mut buf).is_ok() {
            t.offset += buf.len() as u64;
            t.partial.extend(buf);
        }
        while let Some(i) = t.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = t.partial.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line);
            new.push((now, Mark::Line(line.trim_end().to_string())));
        }
    }
    new
}

fn line_has(m: &Mark, needle: &str) -> bool {
    matches!(m, Mark::Line(l) if l.contains(needle))
}

/// The kernel's first console line (printk replays its buffer once ttyS0 registers).
fn kernel_line(m: &Mark) -> bool {
    line_has(m, "Linux version")
}

/// The number after `key` in `line` (`ready at 1.23 s`).
pub fn number_after(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn text(m: &Mark) -> &str {
    match m {
        Mark::Line(l) => l,
        _ => "",
    }
}

fn virsh(dirs: &Dirs, args: &[&str]) -> Result<()> {
    let uri = dirs.libvirt_uri();
    let mut v = vec!["-c", uri.as_str()];
    v.extend_from_slice(args);
    crate::run("virsh", &v).map(|_| ())
}

/// A BIOS VM of the lab's kind, number `i` (its MAC, UUID and tap).
fn vm(name: &str, i: usize) -> HostPlan {
    HostPlan {
        name: name.into(),
        firmware: Firmware::Bios,
        ..HostPlan::nth(i)
    }
}

/// The floors, each in ms (the copy also in the guest's own seconds).
#[derive(Debug, Clone, Default)]
pub struct Floors {
    /// floor-ipxe: power-on → the real ramdisk kernel's first console line.
    pub ipxe_ms: u64,
    /// floor-copy: the same, with the floor ramdisk (a second sample).
    pub ipxe2_ms: u64,
    /// floor-copy: kernel's first line → busybox /init's first line.
    pub kernel_ms: u64,
    /// The floor /init's own "up X s after kernel start" (guest clock).
    pub init_guest_s: f64,
    /// When its DHCP lease came (guest clock).
    pub net_guest_s: f64,
    /// floorcopy of the image (guest clock, seconds).
    pub copy_s: f64,
    /// The same from the console (FLOOR-NET line → FLOOR-COPY line).
    pub copy_ms: u64,
    /// The FLOOR-COPY console line (what floorcopy said).
    pub copy_line: String,
    /// The verified-copy floor: the agent's download and SHA-256 stages alone streaming the
    /// image, writing nothing (`ferrox-agent checksum-image`; guest clock, seconds).
    pub hash_s: f64,
    /// The same from the console (FLOOR-COPY line → FLOOR-HASH line).
    pub hash_ms: u64,
    /// The FLOOR-HASH console line.
    pub hash_line: String,
    /// Power-on → the image's first FERROX-LAB line, booting from the copied disk.
    pub disk_ms: u64,
}

impl Floors {
    /// The floor of the whole path (inspection's is 0).
    pub fn total_ms(&self) -> u64 {
        self.ipxe_ms + self.kernel_ms + self.copy_ms + self.disk_ms
    }

    /// A verified write's floor: the slower of the raw copy and receiving plus hashing the
    /// image (a write that checks its checksum can beat neither).
    pub fn verified_write_ms(&self) -> u64 {
        self.copy_ms.max(self.hash_ms)
    }

    /// [`Floors::total_ms`] with the verified write's floor in place of the raw copy.
    pub fn verified_total_ms(&self) -> u64 {
        self.total_ms() - self.copy_ms + self.verified_write_ms()
    }
}

/// Measures the floors on the floor VMs. Leaves them off.
fn floors(dirs: &Dirs, w: &Watcher, image: &Image) -> Result<Floors> {
    let mut f = Floors::default();
    let t = lab::now_ms();
    virsh(dirs, &["start", FLOOR_IPXE])?;
    let (on, _) = w.wait(FLOOR_IPXE, t, Duration::from_secs(60), "power-on", |m| {
        *m == Mark::PowerOn
    })?;
    let (k, _) = w.wait(
        FLOOR_IPXE,
        on,
        Duration::from_secs(300),
        "kernel console line",
        kernel_line,
    )?;
    f.ipxe_ms = k - on;
    println!(
        "bench: floor bare iPXE boot {:.1} s",
        f.ipxe_ms as f64 / 1e3
    );
    virsh(dirs, &["destroy", FLOOR_IPXE])?;

    let t = lab::now_ms();
    virsh(dirs, &["start", FLOOR_COPY])?;
    let (on, _) = w.wait(FLOOR_COPY, t, Duration::from_secs(60), "power-on", |m| {
        *m == Mark::PowerOn
    })?;
    let (k, _) = w.wait(
        FLOOR_COPY,
        on,
        Duration::from_secs(300),
        "kernel console line",
        kernel_line,
    )?;
    f.ipxe2_ms = k - on;
    let (i, l) = w.wait(
        FLOOR_COPY,
        k,
        Duration::from_secs(120),
        "FLOOR-INIT line",
        |m| line_has(m, "FLOOR-INIT"),
    )?;
    f.kernel_ms = i - k;
    f.init_guest_s = number_after(text(&l), "up ").unwrap_or(f64::NAN);
    println!(
        "bench: floor bare kernel boot {:.1} s (guest {:.2} s)",
        f.kernel_ms as f64 / 1e3,
        f.init_guest_s
    );
    let (n, l) = w.wait(
        FLOOR_COPY,
        i,
        Duration::from_secs(120),
        "FLOOR-NET line",
        |m| line_has(m, "FLOOR-NET"),
    )?;
    f.net_guest_s = number_after(text(&l), "up ").unwrap_or(f64::NAN);
    // A timed step's result line ("KEY S s: …"): when it came, its text, its guest seconds.
    let result_line = |after: u64, key: &str| -> Result<(u64, String, f64)> {
        let (at, l) = w.wait(
            FLOOR_COPY,
            after,
            Duration::from_secs(1200),
            &format!("{key} line"),
            |m| line_has(m, key),
        )?;
        let secs = number_after(text(&l), &format!("{key} ")).unwrap_or(f64::NAN);
        Ok((at, text(&l).to_string(), secs))
    };
    let (c, line, secs) = result_line(n, "FLOOR-COPY")?;
    (f.copy_ms, f.copy_line, f.copy_s) = (c - n, line, secs);
    println!("bench: floor raw copy: {}", f.copy_line);
    let (h, line, secs) = result_line(c, "FLOOR-HASH")?;
    (f.hash_ms, f.hash_line, f.hash_s) = (h - c, line, secs);
    println!("bench: floor download + hash: {}", f.hash_line);
    // The floor hashed the image the hosts get (or it measured something else).
    ensure!(
        f.hash_line
            .contains(&format!("\"checksum\":\"{}\"", image.sha256)),
        "the floor's checksum-image did not report the image's SHA-256: {}",
        f.hash_line
    );
    if w.wait(FLOOR_COPY, h, Duration::from_secs(60), "power-off", |m| {
        *m == Mark::PowerOff
    })
    .is_err()
    {
        virsh(dirs, &["destroy", FLOOR_COPY])?;
    }
    // The copy is the image, byte for byte (or the floor is not a floor).
    let size = std::fs::metadata(&image.path)?.len().to_string();
    crate::run(
        "cmp",
        &[
            "-n",
            &size,
            &image.path.to_string_lossy(),
            &dirs.disk(FLOOR_COPY).to_string_lossy(),
        ],
    )
    .context("the floor's copy differs from the image")?;

    // Boot it from its disk, as the controller's host does after provisioning.
    let xml = lab::domain_xml(dirs, &vm(FLOOR_COPY, 5));
    let from_disk = xml.replace(
        "<boot dev='network'/>\n    <boot dev='hd'/>",
        "<boot dev='hd'/>",
    );
    ensure!(
        from_disk != xml,
        "domain XML: no network-then-disk boot order"
    );
    let path = dirs.root.join("vms").join("floor-copy-disk.xml");
    std::fs::write(&path, from_disk)?;
    virsh(dirs, &["define", &path.to_string_lossy()])?;
    let t = lab::now_ms();
    virsh(dirs, &["start", FLOOR_COPY])?;
    let (on, _) = w.wait(FLOOR_COPY, t, Duration::from_secs(60), "power-on", |m| {
        *m == Mark::PowerOn
    })?;
    let (os, _) = w.wait(
        FLOOR_COPY,
        on,
        Duration::from_secs(300),
        "FERROX-LAB line",
        |m| line_has(m, "FERROX-LAB:"),
    )?;
    f.disk_ms = os - on;
    println!(
        "bench: floor boot from disk {:.1} s",
        f.disk_ms as f64 / 1e3
    );
    virsh(dirs, &["destroy", FLOOR_COPY])?;
    Ok(f)
}

/// One host's provisioning, as wall-clock instants (ms since the epoch).
#[derive(Debug, Clone, Default)]
pub struct HostRun {
    /// Its QEMU started.
    pub power_on: u64,
    /// The ramdisk kernel's first console line.
    pub kernel: u64,
    /// AgentEnrolled Event.
    pub enrolled: u64,
    /// → available.
    pub available: u64,
    /// → provisioning.
    pub provisioning: u64,
    /// → provisioned.
    pub provisioned: u64,
    /// The OS on its disk printed its first FERROX-LAB line.
    pub os_up: u64,
    /// The agent's own "ready at X s after kernel start".
    pub agent_ready_guest_s: Option<f64>,
    /// The agent's own account of the image write (ImageWritten Event): time, CPU per stage.
    pub write_summary: Option<String>,
}

impl HostRun {
    /// From the watcher's marks and the controller's Events since `after`: the boot that
    /// enrolled the agent is the last power-on and kernel line before the enrollment.
    fn of(w: &Watcher, evs: &[lab::LabEvent], host: &str, after: u64) -> Result<HostRun> {
        let enrolled = evs
            .iter()
            .find(|e| e.host == host && e.reason == "AgentEnrolled" && e.at_ms >= after)
            .map(|e| e.at_ms)
            .with_context(|| format!("{host}: no AgentEnrolled Event"))?;
        let (kernel, _) = w
            .find_last(host, after, enrolled, kernel_line)
            .with_context(|| format!("{host}: no kernel console line before enrolling"))?;
        let (power_on, _) = w
            .find_last(host, after, kernel, |m| *m == Mark::PowerOn)
            .with_context(|| format!("{host}: never powered on"))?;
        let ready = w
            .find(host, kernel, |m| line_has(m, "ready at "))
            .and_then(|(_, l)| number_after(text(&l), "ready at "));
        let state = |s: &str| {
            let suffix = format!("-> {s}");
            evs.iter()
                .find(|e| {
                    e.host == host
                        && e.reason == "StateChanged"
                        && e.message.ends_with(&suffix)
                        && e.at_ms >= after
                })
                .map(|e| e.at_ms)
                .with_context(|| format!("{host}: never {s}"))
        };
        let provisioned = state("provisioned")?;
        let write_summary = evs
            .iter()
            .find(|e| e.host == host && e.reason == "ImageWritten" && e.at_ms >= after)
            .map(|e| e.message.clone());
        let (os_up, _) = w
            .find(host, provisioned, |m| line_has(m, "FERROX-LAB:"))
            .with_context(|| format!("{host}: its OS never printed a FERROX-LAB line"))?;
        Ok(HostRun {
            power_on,
            kernel,
            enrolled,
            available: state("available")?,
            provisioning: state("provisioning")?,
            provisioned,
            os_up,
            agent_ready_guest_s: ready,
            write_summary,
        })
    }

    /// Power-on → the OS up.
    pub fn total_ms(&self) -> u64 {
        self.os_up.saturating_sub(self.power_on)
    }
}

/// The benchmark's results.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The floors.
    pub floors: Floors,
    /// Run A's host.
    pub a: HostRun,
    /// Run B's hosts.
    pub b: Vec<(String, HostRun)>,
    /// Image size in bytes.
    pub image_bytes: u64,
    /// Load averages (1 min) when each part started, and at the end.
    pub load: Vec<(String, String)>,
    /// QEMU processes of others running when the benchmark started.
    pub other_qemus: usize,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// QEMU processes running on the machine (all of them: counted, never touched).
fn qemus() -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with("qemu-system"))
        })
        .count()
}

/// Runs the benchmark: brings its lab up, measures, brings it down, writes the report.
pub fn run(opts: &Options) -> Result<Report> {
    let ws = crate::ramdisk::workspace();
    let image = Image::of(&ws.join("target/lab-image/disk-1g.raw"))
        .context("the 1 GiB image: run hack/build-bench-lab.sh")?;
    let floor_img = ws.join("target/lab-image/floor.img");
    ensure!(
        floor_img.exists(),
        "{} is missing: run hack/build-bench-lab.sh",
        floor_img.display()
    );
    let mut plan = Plan::standard(&opts.dir, &opts.netns, 0, &opts.bin)?;
    plan.image = image.clone();
    plan.hosts = std::iter::once(RUN_A)
        .chain(RUN_B)
        .enumerate()
        .map(|(i, n)| vm(n, i))
        .collect();
    plan.extra_vms = vec![vm(FLOOR_IPXE, 4), vm(FLOOR_COPY, 5)];
    std::fs::create_dir_all(&opts.dir)?;
    let hosts_file = opts.dir.join("netboot-hosts.yaml");
    let floor_url = format!("http://{}:{}/floor.img", lab::GATEWAY, lab::IMAGE_PORT);
    std::fs::write(
        &hosts_file,
        format!(
            "hosts:\n  - mac: \"{}\"\n    hostname: {FLOOR_IPXE}\n    netboot: true\n    \
             boot:\n      cmdline: console=ttyS0\n  - mac: \"{}\"\n    hostname: {FLOOR_COPY}\n    \
             netboot: true\n    boot:\n      initramfs_url: {floor_url}\n      cmdline: console=ttyS0\n",
            plan.extra_vms[0].mac, plan.extra_vms[1].mac
        ),
    )?;
    plan.netboot_hosts = Some(hosts_file);

    let mut report = Report {
        image_bytes: std::fs::metadata(&image.path)?.len(),
        other_qemus: qemus(),
        ..Report::default()
    };
    report.load.push(("start".into(), loadavg()));
    println!(
        "bench: bringing up the benchmark's lab in {} (namespace {})",
        opts.dir.display(),
        opts.netns
    );
    let dirs = match lab::start(&plan) {
        Ok(d) => d,
        Err(e) => {
            let _ = lab::down(&opts.dir);
            return Err(e);
        }
    };
    let result = measure(opts, &plan, &dirs, &floor_img, &mut report);
    let down = lab::down(&opts.dir);
    result?;
    down?;
    std::fs::write(&opts.out, markdown(&report))
        .with_context(|| format!("writing {}", opts.out.display()))?;
    Ok(report)
}

fn measure(
    opts: &Options,
    plan: &Plan,
    dirs: &Dirs,
    floor_img: &Path,
    report: &mut Report,
) -> Result<()> {
    std::fs::copy(floor_img, dirs.root.join("images/floor.img"))?;
    let all: Vec<&str> = plan
        .hosts
        .iter()
        .chain(&plan.extra_vms)
        .map(|h| h.name.as_str())
        .collect();
    let w = Watcher::start(dirs, &all);
    let only = |names: &[&str]| Plan {
        hosts: plan
            .hosts
            .iter()
            .filter(|h| names.contains(&h.name.as_str()))
            .cloned()
            .collect(),
        ..plan.clone()
    };
    let ns = opts.netns.as_str();
    // lab::watch is done when every host it sees is: first let the controller see them all.
    let listed = |names: &[&str]| {
        let t0 = Instant::now();
        loop {
            let seen = lab::observe(dirs, ns, &plan.controller)?;
            if names.iter().all(|n| seen.contains_key(*n)) {
                return Ok(());
            }
            ensure!(
                t0.elapsed() < Duration::from_secs(60),
                "the controller does not list {names:?} after 60 s"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let done = |name: &str, s: &lab::Seen, tl: &Timeline| {
        s.state == "provisioned" && tl.os_seen.contains_key(name)
    };

    report.load.push(("floors".into(), loadavg()));
    println!("bench: floors (VMs {FLOOR_IPXE}, {FLOOR_COPY})");
    report.floors = floors(dirs, &w, &plan.image)?;

    report.load.push(("run A".into(), loadavg()));
    println!("bench: run A: {RUN_A} provisioned with the 1 GiB image");
    let t = lab::now_ms();
    lab::apply(dirs, &lab::manifests(&only(&[RUN_A])))?;
    listed(&[RUN_A])?;
    let mut tl = Timeline::new();
    lab::watch(
        dirs,
        ns,
        &plan.controller,
        &mut tl,
        Duration::from_secs(1800),
        &mut |l| println!("{l}"),
        &done,
    )?;
    w.wait(RUN_A, t, Duration::from_secs(60), "FERROX-LAB line", |m| {
        line_has(m, "FERROX-LAB:")
    })?;
    let evs = lab::events(dirs, ns, &plan.controller)?;
    report.a = HostRun::of(&w, &evs, RUN_A, t)?;
    println!("bench: run A: {:?}", report.a);

    // Run A's host off (spec.online false), so its idle OS does not share the CPUs with run B.
    // The controller asks the BMC for a graceful shutdown, which the lab OS (busybox, no ACPI
    // daemon) ignores: pulled after a while, as a datacenter hand would.
    let a_off = lab::manifests_with(&only(&[RUN_A]), true, false);
    let t = lab::now_ms();
    lab::apply(dirs, &a_off)?;
    if w.wait(RUN_A, t, Duration::from_secs(20), "power-off", |m| {
        *m == Mark::PowerOff
    })
    .is_err()
    {
        virsh(dirs, &["destroy", RUN_A])?;
        w.wait(RUN_A, t, Duration::from_secs(30), "power-off", |m| {
            *m == Mark::PowerOff
        })?;
    }

    report.load.push(("run B".into(), loadavg()));
    println!("bench: run B: {} provisioned at once", RUN_B.join(", "));
    let t = lab::now_ms();
    lab::apply(dirs, &format!("{a_off}{}", lab::manifests(&only(&RUN_B))))?;
    listed(&RUN_B)?;
    let mut tl = Timeline::new();
    lab::watch(
        dirs,
        ns,
        &plan.controller,
        &mut tl,
        Duration::from_secs(3600),
        &mut |l| println!("{l}"),
        &done,
    )?;
    for h in RUN_B {
        w.wait(h, t, Duration::from_secs(60), "FERROX-LAB line", |m| {
            line_has(m, "FERROX-LAB:")
        })?;
    }
    let evs = lab::events(dirs, ns, &plan.controller)?;
    for h in RUN_B {
        report.b.push((h.to_string(), HostRun::of(&w, &evs, h, t)?));
    }
    report.load.push(("end".into(), loadavg()));
    if report.a.total_ms() == 0 {
        bail!("run A measured nothing");
    }
    Ok(())
}

fn s(ms: u64) -> String {
    format!("{:.1}", ms as f64 / 1000.0)
}

fn mb_per_s(bytes: u64, ms: u64) -> f64 {
    bytes as f64 / 1e6 / (ms.max(1) as f64 / 1e3)
}

fn ratio(a: u64, floor: u64) -> String {
    if floor == 0 {
        "—".into()
    } else {
        format!("{:.2}×", a as f64 / floor as f64)
    }
}

/// The report, as docs/bench-lab.md.
pub fn markdown(r: &Report) -> String {
    let (a, f) = (&r.a, &r.floors);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# Lab speed: power-on → provisioned, against the floor\n\n\
         Generated by `hack/bench-lab.sh` (`ferrox-lab bench`), one run: the lab (hack/lab.sh) in a \
         namespace of its own, BIOS (SeaBIOS) VMs under TCG QEMU ({} vCPUs, 1 GiB, virtio NIC that \
         netboots through ferrox-netboot, virtio disk, libvirt XML `lab::domain_xml`), sushy-tools \
         as BMC, a {:.2} GiB raw image (the lab image plus a partition of pseudo-random bytes) \
         served by python http.server. Wall clock: consoles polled every 100 ms, states from the \
         controller's Events. The floors are measured in the same run on VMs of the same kind on \
         the same bridge (see tests/src/lab_bench.rs).\n",
        crate::lab::HostPlan::nth(1).vcpus,
        r.image_bytes as f64 / (1u64 << 30) as f64
    );
    let _ = writeln!(
        o,
        "Machine: {} cores, shared with other engineers' builds and tests. Load average (1/5/15 \
         min) {}; QEMU processes of others running at the start: {}. Expect several percent of \
         noise on every number; read the ratios.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        r.load
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; "),
        r.other_qemus
    );
    let _ = writeln!(
        o,
        "## One host (run A)\n\n\
         | phase | ferrox (s) | floor (s) | floor is | ratio |\n|---|---|---|---|---|"
    );
    let rows = [
        (
            "firmware + iPXE (power-on → ramdisk kernel's first console line)",
            a.kernel - a.power_on,
            f.ipxe_ms,
            "the same VM kind netbooting the same ramdisk through the same ferrox-netboot (static hosts entry)",
        ),
        (
            "kernel + agent (→ AgentEnrolled)",
            a.enrolled - a.kernel,
            f.kernel_ms,
            "kernel's first line → a busybox /init's first line, same ramdisk",
        ),
        (
            "inspection (→ available)",
            a.available - a.enrolled,
            0,
            "0",
        ),
        (
            "available → provisioning",
            a.provisioning - a.available,
            0,
            "0",
        ),
        (
            "image write (provisioning → provisioned)",
            a.provisioned - a.provisioning,
            f.copy_ms,
            "a plain copy of the same image (hack/lab-image/floorcopy.c: 4 MiB reads, O_DIRECT, fsync) in a VM of the same kind",
        ),
        (
            "image write, against a verified copy",
            a.provisioned - a.provisioning,
            f.verified_write_ms(),
            "the slower of that copy and the agent's own download + SHA-256 stages streaming the image in the same VM, writing nothing (`ferrox-agent checksum-image`)",
        ),
        (
            "reboot into disk (provisioned → first FERROX-LAB line)",
            a.os_up - a.provisioned,
            f.disk_ms,
            "power-on → first FERROX-LAB line of the same image on the floor VM's disk",
        ),
    ];
    for (name, ms, floor, what) in rows {
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {what} | {} |",
            s(ms),
            s(floor),
            ratio(ms, floor)
        );
    }
    let total = a.total_ms();
    let _ = writeln!(
        o,
        "| **total** (power-on → OS up) | **{}** | **{}** | sum of the floors | **{}** (goal ≤ 1.2×) |",
        s(total),
        s(f.total_ms()),
        ratio(total, f.total_ms())
    );
    let _ = writeln!(
        o,
        "| total against the verified-copy floor | {} | {} | the sum with the verified copy in place of the raw copy | {} |\n",
        s(total),
        s(f.verified_total_ms()),
        ratio(total, f.verified_total_ms())
    );
    let _ = writeln!(
        o,
        "Guest clock: the agent was ready {} s after kernel start; the floor /init ran {:.2} s \
         after kernel start and had its DHCP lease at {:.2} s. The floor copy took {:.1} s by the \
         guest's clock, {} s on the console (`{}`; afterwards the disk is compared byte for byte \
         with the image), {:.1} MB/s; the agent's image write (download, checksum, write, config \
         drive) {:.1} MB/s. A second floor iPXE sample (the floor ramdisk, ~1 MB larger): {} s. \
         Metal3 quotes 5–10 minutes per node.\n",
        a.agent_ready_guest_s
            .map_or("?".into(), |v| format!("{v:.2}")),
        f.init_guest_s,
        f.net_guest_s,
        f.copy_s,
        s(f.copy_ms),
        f.copy_line,
        mb_per_s(r.image_bytes, f.copy_ms),
        mb_per_s(r.image_bytes, a.provisioned - a.provisioning),
        s(f.ipxe2_ms)
    );
    let _ = writeln!(
        o,
        "The verified-copy floor, in the same floor VM after its copy: `{}` ({} s on the \
         console, {:.1} MB/s; the digest is checked against the image's).\n",
        f.hash_line,
        s(f.hash_ms),
        mb_per_s(r.image_bytes, f.hash_ms)
    );
    if let Some(w) = &a.write_summary {
        let _ = writeln!(
            o,
            "The agent's own account of the write (its ImageWritten Event): `{w}`. The hash \
             stage's CPU seconds against the write's seconds show whether the checksum bounds it.\n"
        );
    }
    let _ = writeln!(
        o,
        "## Three hosts at once (run B)\n\n\
         | host | power-on → OS up (s) | image write (s) |\n|---|---|---|"
    );
    let _ = writeln!(
        o,
        "| {RUN_A} (run A, alone) | {} | {} |",
        s(total),
        s(a.provisioned - a.provisioning)
    );
    for (h, b) in &r.b {
        let _ = writeln!(
            o,
            "| {h} | {} | {} |",
            s(b.total_ms()),
            s(b.provisioned - b.provisioning)
        );
    }
    let first = r.b.iter().map(|(_, b)| b.power_on).min().unwrap_or(0);
    let last = r.b.iter().map(|(_, b)| b.os_up).max().unwrap_or(0);
    let _ = writeln!(
        o,
        "\nThree hosts, first power-on → last OS up: {} s; against one host alone: **{}**. The \
         machine has {} cores and TCG is CPU-bound (one host thread per vCPU), so three guests \
         share two cores with the controller, netboot, sushy-tools and the image server.",
        s(last.saturating_sub(first)),
        ratio(last.saturating_sub(first), total),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let _ = writeln!(
        o,
        "\n## What the floors leave out\n\n\
         * The raw copy verifies nothing; the agent computes the image's SHA-256 while it writes \
           (ring's SHA-256 on a thread of its own, beside the download and the write; TCG's \
           emulated CPU has no SHA extensions, so it runs near 90 MB/s, measured above as the \
           verified-copy floor), adds the config drive partition and reports back to the \
           controller; the controller then sets the boot device and restarts the machine through \
           the BMC (sushy-tools: a new QEMU process): all inside the image write phase.\n\
         * The bare kernel floor is kernel → a busybox /init; the agent also loads the NIC and \
           disk drivers, takes a DHCP lease (the floor /init's lease time is given above), takes \
           its inventory and enrolls over mTLS.\n\
         * The floor VMs are driven with virsh; the hosts through sushy-tools (Redfish) by the \
           controller, whose reconcile and BMC round trips sit between the phases.\n\
         * One run, one sample per number: rerun `hack/bench-lab.sh` for more."
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_after_their_key() {
        let l = "[    3.1] ferrox-agent: ready at 2.84 s after kernel start";
        assert_eq!(number_after(l, "ready at "), Some(2.84));
        assert_eq!(
            number_after("FLOOR-COPY 31.50 s: 1073741824 bytes", "FLOOR-COPY "),
            Some(31.5)
        );
        assert_eq!(number_after("nothing here", "ready at "), None);
    }

    #[test]
    fn consoles_are_read_line_by_line_as_they_grow() {
        let d = tempfile::tempdir().unwrap();
        let dirs = Dirs {
            root: d.path().to_path_buf(),
        };
        std::fs::create_dir_all(d.path().join("vms")).unwrap();
        let mut t = Tail {
            running: false,
            offset: 0,
            partial: Vec::new(),
        };
        assert!(poll(&dirs, "h", &mut t, 1).is_empty());
        std::fs::write(dirs.console("h"), "Linux version 6\r\nhal").unwrap();
        assert_eq!(
            poll(&dirs, "h", &mut t, 2),
            [(2, Mark::Line("Linux version 6".into()))]
        );
        std::fs::write(dirs.console("h"), "Linux version 6\r\nhalf line\n").unwrap();
        assert_eq!(
            poll(&dirs, "h", &mut t, 3),
            [(3, Mark::Line("half line".into()))]
        );
        std::fs::create_dir_all(d.path().join("libvirt/run/qemu")).unwrap();
        std::fs::write(dirs.qemu_pid_file("h"), "42").unwrap();
        assert_eq!(poll(&dirs, "h", &mut t, 4), [(4, Mark::PowerOn)]);
    }
}
