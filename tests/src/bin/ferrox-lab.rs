//! `ferrox-lab`: virtual bare metal provisioned by Ferrox on one machine (see tests::lab).
//!
//!   ferrox-lab up [--hosts N] [--dir DIR]   bring it up, apply the manifests, show each host
//!                                           going to provisioned, then leave it running
//!   ferrox-lab status [--dir DIR]           `ferrox-controller get bmh -o wide` in the lab
//!   ferrox-lab down [--dir DIR]             stop everything it started, delete the namespace
//!
//! Run by `hack/lab.sh`, which installs and builds what it needs first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tests::lab::{self, Dirs, HostPlan, Image, Plan, Timeline};

const DEFAULT_DIR: &str = "/var/tmp/ferrox-lab";
const NETNS: &str = "ferrox-lab";

fn main() {
    if let Err(e) = real_main() {
        eprintln!("ferrox-lab: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_else(|| "up".into());
    let mut dir = PathBuf::from(DEFAULT_DIR);
    let mut hosts = 2usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().context("--dir needs a value")?.into(),
            "--hosts" => {
                hosts = args
                    .next()
                    .context("--hosts needs a value")?
                    .parse()
                    .context("--hosts: a number")?
            }
            other => bail!("unknown argument {other:?} (see the top of tests/src/bin/ferrox-lab.rs)"),
        }
    }
    let bin = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let controller = bin.join("ferrox-controller");
    match cmd.as_str() {
        "up" => up(&dir, hosts, &bin),
        "down" => {
            lab::down(&dir)?;
            println!("lab in {} is down", dir.display());
            Ok(())
        }
        "status" => {
            let st = std::process::Command::new("ip")
                .args(["netns", "exec", NETNS])
                .arg(&controller)
                .args(["get", "bmh", "-o", "wide", "--state"])
                .arg(dir.join("state"))
                .status()?;
            std::process::exit(st.code().unwrap_or(1));
        }
        other => bail!("unknown command {other:?}: up, status or down"),
    }
}

fn up(dir: &Path, hosts: usize, bin: &Path) -> Result<()> {
    if !(1..=32).contains(&hosts) {
        bail!("--hosts: 1 to 32");
    }
    let image = tests::ramdisk::workspace().join("target/lab-image/disk.raw");
    if !image.exists() {
        bail!(
            "{} is missing: run hack/build-lab-image.sh (hack/lab.sh does)",
            image.display()
        );
    }
    let sum = tests::run("sha256sum", &[&image.to_string_lossy()])?;
    let sha256 = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let (kernel, initramfs) = tests::ramdisk::artifacts();
    let sushy = tests::sushy::sushy_emulator_with_libvirt();
    let plan = Plan {
        dir: dir.to_path_buf(),
        netns: NETNS.into(),
        hosts: (0..hosts).map(HostPlan::nth).collect(),
        image: Image {
            path: image,
            sha256,
        },
        controller: bin.join("ferrox-controller"),
        netboot: bin.join("ferrox-netboot"),
        kernel,
        initramfs,
        sushy,
    };
    println!("ferrox-lab: bringing up {hosts} hosts in {}", dir.display());
    let dirs = match lab::up(&plan) {
        Ok(d) => d,
        Err(e) => {
            let _ = lab::down(dir);
            return Err(e);
        }
    };
    println!(
        "ferrox-lab: up (namespace {NETNS}, BMCs at http://{}:{}, logs in {}); manifests applied:",
        lab::GATEWAY,
        lab::SUSHY_PORT,
        dirs.logs().display()
    );
    for h in &plan.hosts {
        println!(
            "  {:<8} {:<6} {}  BMC redfish+http://{}:{}/redfish/v1/Systems/{}",
            h.name,
            h.firmware.boot_mode(),
            h.mac,
            lab::GATEWAY,
            lab::SUSHY_PORT,
            h.uuid
        );
    }
    println!("\n   time  host     state          operational");
    let mut tl = Timeline::new();
    lab::watch(
        &dirs,
        NETNS,
        &plan.controller,
        &mut tl,
        Duration::from_secs(3600),
        &mut |l| println!("{l}"),
        &|s| s.state == "provisioned",
    )?;
    report(&dirs, &plan, &tl)?;
    println!(
        "\nThe lab stays up: `hack/lab.sh status`, consoles in {}/vms/*.console, `hack/lab.sh down` to stop it.",
        dirs.root.display()
    );
    Ok(())
}

fn report(dirs: &Dirs, plan: &Plan, tl: &Timeline) -> Result<()> {
    println!("\nPer-phase timings (seconds in each state):\n{}", tl.phases());
    let get = |args: &[&str]| -> Result<String> {
        let mut v = vec!["netns", "exec", NETNS];
        let c = plan.controller.to_string_lossy();
        v.push(&c);
        v.extend_from_slice(args);
        let s = dirs.state();
        let s = s.to_string_lossy();
        v.extend_from_slice(&["--state", &s]);
        Ok(String::from_utf8_lossy(&tests::run("ip", &v)?.stdout).into_owned())
    };
    println!("{}", get(&["get", "bmh", "-o", "wide"])?);
    if let Some(h) = plan.hosts.first() {
        println!(
            "Inspection report of {} (`ferrox-controller get hardwaredata {} -o yaml`):\n{}",
            h.name,
            h.name,
            get(&["get", "hardwaredata", &h.name, "-o", "yaml"])?
        );
    }
    // Give the provisioned OS a moment to print what it read from its config drive.
    for h in &plan.hosts {
        let t0 = std::time::Instant::now();
        while lab::os_report(dirs, &h.name).len() < 3 && t0.elapsed() < Duration::from_secs(90) {
            std::thread::sleep(Duration::from_millis(500));
        }
        println!("{} console:", h.name);
        for l in lab::os_report(dirs, &h.name) {
            println!("  {l}");
        }
    }
    Ok(())
}
