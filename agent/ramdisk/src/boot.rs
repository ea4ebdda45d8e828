//! PID 1: mount the pseudo filesystems, coldplug the modules, bring up the boot network, take
//! the inventory, enroll with the controller (mTLS; or the provisional plain-HTTP hello to an
//! http:// stand-in) and run its commands, and never die. Every fatal error is printed on
//! the console with its cause, then retried with backoff (or the machine powers off/reboots
//! when `ferrox.fatal=` says so). A panic is caught and handled the same way: if PID 1 exits,
//! the kernel panics and the operator sees nothing useful.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use agent_sys::system::{self, Shutdown};

use crate::cmdline::{self, BootParams, OnFatal};
use crate::coldplug::{self, ModuleDb};
use crate::net;
use crate::power_button;

/// Seconds since the kernel started (CLOCK_BOOTTIME, from /proc/uptime).
pub fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// One console line, also into the kernel log (so it carries the kernel's timestamp).
pub fn say(msg: &str) {
    let line = format!("ferrox-agent: {msg}");
    eprintln!("[{:9.3}] {line}", uptime());
    if let Ok(mut k) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        // Level 7 (debug): kept in the kernel log, not printed on the console a second time.
        let _ = k.write_all(format!("<7>{line}\n").as_bytes());
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Mounts /proc, /sys, /dev, /run and /tmp; one already mounted is fine.
fn mount_basics() {
    let m = |src: &str, target: &str, fs: &str, flags: libc::c_ulong, data: &str| {
        let _ = std::fs::create_dir_all(target);
        match system::mount(src, Path::new(target), fs, flags, data) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => say(&format!("mounting {fs} on {target}: {e}")),
        }
    };
    let nosuid = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
    m("proc", "/proc", "proc", nosuid, "");
    m("sysfs", "/sys", "sysfs", nosuid, "");
    m("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755");
    m(
        "tmpfs",
        "/run",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=0755",
    );
    m(
        "tmpfs",
        "/tmp",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
    );
}

/// The module directory of the running kernel.
fn module_dir() -> std::path::PathBuf {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    Path::new("/lib/modules").join(release.trim())
}

fn coldplug_modules(params: &BootParams) {
    let dir = module_dir();
    let db = match ModuleDb::load(&dir) {
        Ok(db) => db,
        Err(e) => {
            say(&format!(
                "no module database in {} ({e}): using only built-in drivers",
                dir.display()
            ));
            return;
        }
    };
    let t = Instant::now();
    // The power button's driver binds by modalias; evdev, which gives it an event device,
    // has none and is asked for by name.
    let always: &[&str] = if params.vlan.is_some() {
        &["button", "evdev", "8021q"]
    } else {
        &["button", "evdev"]
    };
    let report = coldplug::coldplug(&db, &dir, Path::new("/sys/devices"), always, |path| {
        let f = std::fs::File::open(path)?;
        system::finit_module(&f, "").map(drop)
    });
    say(&format!(
        "coldplug: {} modules loaded in {} rounds, {:.0} ms: {}",
        report.loaded.len(),
        report.rounds,
        t.elapsed().as_secs_f64() * 1e3,
        report.loaded.join(" ")
    ));
    for (m, e) in &report.failed {
        say(&format!("module {m} failed to load: {e}"));
    }
}

/// Gets the kernel's random number generator seeded while the boot goes on. TLS to the
/// controller needs it, and so, measured, does the first DHCP exchange (its socket setup or
/// first send waits for it; which call, not found). Without a hardware entropy source (a VM without
/// RDRAND or virtio-rng) seeding takes the kernel about 1.2 s of timing jitter; started before
/// coldplug, that overlaps module loading instead of stalling DHCP (under QEMU TCG, 1 vCPU:
/// DHCP 1043 ms → 86 ms, agent start → ready 1.69 s → 1.32 s). With RDRAND it returns at once.
fn seed_entropy_in_background() {
    std::thread::spawn(|| {
        let t = Instant::now();
        match system::wait_for_entropy() {
            Ok(()) => say(&format!(
                "kernel random number generator seeded ({:.0} ms waited)",
                t.elapsed().as_secs_f64() * 1e3
            )),
            Err(e) => say(&format!(
                "waiting for the kernel's random number generator: {e}"
            )),
        }
    });
}

/// Powers off when the ACPI power button is pressed (a BMC's graceful shutdown), from a thread
/// of its own, whatever the agent is doing.
fn watch_power_button() {
    std::thread::spawn(|| {
        // devtmpfs creates the event node shortly after evdev binds.
        let (sys, dev) = (Path::new("/sys/class/input"), Path::new("/dev/input"));
        let mut found = Vec::new();
        for _ in 0..30 {
            found = power_button::find(sys, dev);
            if !found.is_empty() && found.iter().all(|d| d.exists()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if found.is_empty() {
            say("no ACPI power button found: a graceful shutdown request will go unheard (a hard power-off still works)");
            return;
        }
        for d in found {
            say(&format!(
                "power button {}: a graceful shutdown request powers off",
                d.display()
            ));
            std::thread::spawn(move || match power_button::wait_press(&d) {
                Ok(()) => {
                    say("power button pressed (graceful shutdown request): powering off");
                    let e = system::shutdown(Shutdown::PowerOff);
                    say(&format!("power-off failed: {e}"));
                }
                Err(e) => say(&format!("power button {}: {e}", d.display())),
            });
        }
    });
}

/// A fatal error of one attempt.
type Fatal = Box<dyn std::error::Error + Send + Sync>;

/// One attempt from parameters to hello; returns once the controller knows the agent.
fn attempt(params: &BootParams) -> Result<(), Fatal> {
    let up = net::bring_up(
        Path::new("/sys/class/net"),
        params.bootif,
        params.vlan,
        Duration::from_secs(30),
        6,
    )?;
    say(&format!(
        "network: {} ({}) has {}/{}{} (carrier after {} ms, DHCP {} ms)",
        up.ifname,
        up.mac,
        up.lease.address,
        up.lease.prefix,
        up.lease
            .router
            .map(|r| format!(", router {r}"))
            .unwrap_or_default(),
        up.carrier_ms,
        up.dhcp_ms
    ));
    let t = Instant::now();
    let inventory = agent_inspect::inspect(&agent_inspect::Root::host())?;
    let ready = uptime();
    let disks: Vec<String> = inventory
        .hardware
        .storage
        .iter()
        .map(|s| {
            format!(
                "{}:{}:{}",
                s.name.as_deref().unwrap_or("?"),
                s.size_bytes.unwrap_or(0),
                s.serial_number.as_deref().unwrap_or("")
            )
        })
        .collect();
    let nics: Vec<String> = inventory
        .hardware
        .nics
        .iter()
        .map(|n| {
            format!(
                "{}:{}",
                n.name.as_deref().unwrap_or("?"),
                n.mac.as_deref().unwrap_or("")
            )
        })
        .collect();
    say(&format!(
        "ready at {ready:.3} s after kernel start (inventory {:.0} ms): disks {} nics {}",
        t.elapsed().as_secs_f64() * 1e3,
        disks.join(","),
        nics.join(",")
    ));
    let Some(controller) = &params.controller else {
        say(
            "no ferrox.controller= on the kernel command line: staying up with nobody to report to",
        );
        return Ok(());
    };
    if controller.starts_with("https://") {
        let (Some(ca), Some(token)) = (&params.ca_sha256, &params.token) else {
            return Err(
                "ferrox.controller= is https:// but ferrox.ca= or ferrox.token= is missing".into(),
            );
        };
        return serve_controller(controller, ca, token, &up, &inventory, ready);
    }
    let hello = agent_proto::Hello {
        protocol: agent_proto::PROTOCOL_VERSION,
        token: params.token.clone(),
        mac: up.mac.clone(),
        address: up.lease.address.to_string(),
        ready_after_seconds: ready,
        inventory,
    };
    let url = format!("{controller}/v1/agent/hello");
    crate::report::post_json(&url, &serde_json::to_vec(&hello)?)?;
    say(&format!("hello sent to {url}"));
    Ok(())
}

/// The agent API (mTLS, the CA pinned by `ferrox.ca=`): enroll with the boot token, then take
/// commands until one powers the machine off or reboots it. Returns only on failure.
fn serve_controller(
    url: &str,
    ca: &str,
    token: &str,
    up: &net::Configured,
    inventory: &agent_proto::FullInventory,
    ready: f64,
) -> Result<(), Fatal> {
    use std::sync::Arc;

    use crate::client::{Client, Identity};
    use crate::heartbeat::{self, Ended, LoopOptions};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = Arc::new(Client::new(url, ca)?);
    let id = Identity {
        boot_mac: up.mac.clone(),
        address: up.lease.address.to_string(),
        macs: inventory
            .hardware
            .nics
            .iter()
            .filter_map(|n| n.mac.clone())
            .collect(),
        system_uuid: inventory
            .ferrox_extra
            .system
            .as_ref()
            .and_then(|s| s.uuid.clone()),
        system_serial: inventory
            .hardware
            .system_vendor
            .as_ref()
            .and_then(|v| v.serial_number.clone()),
        ready_after_seconds: ready,
    };
    let enrolled = rt.block_on(client.enroll(token, &id))?;
    say(&format!("enrolled with {url} as {}", enrolled.host));
    let ended = rt.block_on(heartbeat::run(
        client,
        Arc::new(crate::exec::Executor::host()),
        LoopOptions::default(),
        tokio_util::sync::CancellationToken::new(),
    ))?;
    let how = match ended {
        Ended::PowerOff => Shutdown::PowerOff,
        Ended::Reboot => Shutdown::Reboot,
        Ended::Cancelled => return Err("the command loop ended".into()),
    };
    say(&format!("{how:?} as the controller asked"));
    Err(Box::new(system::shutdown(how)))
}

/// Runs as PID 1; never returns.
pub fn pid1() -> ! {
    mount_basics();
    std::thread::spawn(|| loop {
        system::reap_children();
        std::thread::sleep(Duration::from_secs(1));
    });
    std::panic::set_hook(Box::new(|info| say(&format!("PANIC: {info}"))));
    let raw = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let (params, problems) = cmdline::parse(&raw);
    say(&format!("starting at {:.3} s after kernel start", uptime()));
    for p in &problems {
        say(&format!("ERROR: {p}"));
    }
    seed_entropy_in_background();
    coldplug_modules(&params);
    watch_power_button();
    let mut wait = Duration::from_secs(2);
    loop {
        let result = if problems.is_empty() {
            std::panic::catch_unwind(|| attempt(&params))
                .unwrap_or_else(|_| Err("the agent panicked (see PANIC above)".into()))
        } else {
            Err(format!(
                "{} bad parameter(s) on the kernel command line (see ERROR above); fix the boot script",
                problems.len()
            )
            .into())
        };
        match result {
            Ok(()) => {
                say("waiting for commands");
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            Err(e) => {
                say(&format!("FATAL: {}", chain(&*e)));
                match params.on_fatal {
                    OnFatal::Retry => {
                        say(&format!("retrying in {} s", wait.as_secs()));
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(Duration::from_secs(60));
                    }
                    OnFatal::PowerOff | OnFatal::Reboot => {
                        let how = if params.on_fatal == OnFatal::PowerOff {
                            Shutdown::PowerOff
                        } else {
                            Shutdown::Reboot
                        };
                        say(&format!("{how:?} in 10 s (ferrox.fatal=)"));
                        std::thread::sleep(Duration::from_secs(10));
                        let e = system::shutdown(how);
                        say(&format!("{how:?} failed: {e}; retrying instead"));
                        std::thread::sleep(wait);
                    }
                }
            }
        }
    }
}
