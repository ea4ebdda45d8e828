//! `ferrox-lab`: virtual bare metal provisioned by Ferrox on one machine (see tests::lab).
//!
//!   ferrox-lab up [--hosts N] [--dir DIR]   bring it up, apply the manifests, show each host
//!                                           going to provisioned, then leave it running
//!   ferrox-lab status [--dir DIR]           `ferrox-controller get bmh -o wide` in the lab
//!   ferrox-lab down [--dir DIR]             stop everything it started, delete the namespace
//!   ferrox-lab bench [--dir DIR] [--netns NAME] [--out FILE]
//!                                           the speed benchmark (tests::lab_bench): floors,
//!                                           one host with a 1 GiB image, three at once; writes
//!                                           FILE (docs/bench-lab.md); its own lab in
//!                                           /var/tmp/ferrox-bench, namespace ferrox-bench
//!
//! `--netns` names the lab's network namespace (default ferrox-lab; `down` reads it from DIR).
//! Run by `hack/lab.sh` and `hack/bench-lab.sh`, which install and build what they need first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tests::lab::{self, Dirs, Plan, Timeline};

const DEFAULT_DIR: &str = "/var/tmp/ferrox-lab";
const NETNS: &str = "ferrox-lab";
const BENCH_DIR: &str = "/var/tmp/ferrox-bench";
const BENCH_NETNS: &str = "ferrox-bench";

fn main() {
    if let Err(e) = real_main() {
        eprintln!("ferrox-lab: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_else(|| "up".into());
    let bench = cmd == "bench";
    let mut dir = PathBuf::from(if bench { BENCH_DIR } else { DEFAULT_DIR });
    let mut netns = String::from(if bench { BENCH_NETNS } else { NETNS });
    let mut out = tests::ramdisk::workspace().join("docs/bench-lab.md");
    let mut hosts = 2usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().context("--dir needs a value")?.into(),
            "--netns" => netns = args.next().context("--netns needs a value")?,
            "--out" => out = args.next().context("--out needs a value")?.into(),
            "--hosts" => {
                hosts = args
                    .next()
                    .context("--hosts needs a value")?
                    .parse()
                    .context("--hosts: a number")?
            }
            other => {
                bail!("unknown argument {other:?} (see the top of tests/src/bin/ferrox-lab.rs)")
            }
        }
    }
    let bin = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let controller = bin.join("ferrox-controller");
    match cmd.as_str() {
        "up" => up(&dir, &netns, hosts, &bin),
        "bench" => {
            let opts = tests::lab_bench::Options {
                dir,
                netns,
                bin,
                out,
            };
            let report = tests::lab_bench::run(&opts)?;
            println!("\n{}", tests::lab_bench::markdown(&report));
            println!("bench: written to {}", opts.out.display());
            Ok(())
        }
        "down" => {
            lab::down(&dir)?;
            println!("lab in {} is down", dir.display());
            Ok(())
        }
        "status" => {
            let st = std::process::Command::new("ip")
                .args(["netns", "exec", &netns])
                .arg(&controller)
                .args(["get", "bmh", "-o", "wide", "--state"])
                .arg(dir.join("state"))
                .status()?;
            std::process::exit(st.code().unwrap_or(1));
        }
        other => bail!("unknown command {other:?}: up, status, down or bench"),
    }
}

fn up(dir: &Path, netns: &str, hosts: usize, bin: &Path) -> Result<()> {
    if !(1..=32).contains(&hosts) {
        bail!("--hosts: 1 to 32");
    }
    let plan = Plan::standard(dir, netns, hosts, bin)?;
    println!("ferrox-lab: bringing up {hosts} hosts in {}", dir.display());
    let dirs = match lab::up(&plan) {
        Ok(d) => d,
        Err(e) => {
            let _ = lab::down(dir);
            return Err(e);
        }
    };
    println!(
        "ferrox-lab: up (namespace {netns}, BMCs at http://{}:{}, logs in {}); manifests applied:",
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
        netns,
        &plan.controller,
        &mut tl,
        Duration::from_secs(3600),
        &mut |l| println!("{l}"),
        &|name, s, tl| s.state == "provisioned" && tl.os_seen.contains_key(name),
    )?;
    report(&dirs, netns, &plan, &tl)?;
    println!(
        "\nThe lab stays up: `hack/lab.sh status`, consoles in {}/vms/*.console, `hack/lab.sh down` to stop it.",
        dirs.root.display()
    );
    Ok(())
}

fn report(dirs: &Dirs, netns: &str, plan: &Plan, tl: &Timeline) -> Result<()> {
    let get = |args: &[&str]| lab::ctl(dirs, netns, &plan.controller, args);
    println!("\n{}", get(&["get", "bmh", "-o", "wide"])?);
    if let Some(h) = plan.hosts.first() {
        println!(
            "Inspection report of {} (`ferrox-controller get hardwaredata {} -o yaml`):\n{}",
            h.name,
            h.name,
            get(&["get", "hardwaredata", &h.name, "-o", "yaml"])?
        );
    }
    for h in &plan.hosts {
        let (_, lines) = lab::wait_os(dirs, &h.name, Duration::from_secs(90));
        println!(
            "{} console (the provisioned OS, booted from its disk):",
            h.name
        );
        for l in lines {
            println!("  {l}");
        }
    }
    let evs = lab::events(dirs, netns, &plan.controller)?;
    println!("\nPer-phase timings, seconds (from the controller's Events):");
    println!("{}", lab::Phases::header());
    for h in &plan.hosts {
        let p = lab::Phases::of(&evs, &h.name, tl.os_seen.get(&h.name).copied());
        println!("{}", p.row(&h.name, h.firmware));
    }
    Ok(())
}
