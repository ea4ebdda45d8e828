//! `ferrox-scale`: the controller's scale benchmark (see the crate's documentation).
//!
//!   ferrox-scale [--hosts N] [--reps R] [--provisioning-limit L] [--workers W]
//!                [--deadline SECONDS] [--dir DIR] [--out FILE] [--controller PATH]
//!
//! Defaults: 1000 hosts, 1 run, limit 100, deadline 300 s, DIR /var/tmp/ferrox-scale, the
//! ferrox-controller next to this binary, the report printed (and written to FILE when given).
//! Run by `hack/bench-scale.sh`, which builds both in release mode first.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferrox_scale::bench::{self, Options};
use ferrox_scale::bmc::Timings;

fn main() {
    if let Err(e) = real_main() {
        eprintln!("ferrox-scale: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut o = Options {
        hosts: 1000,
        controller: exe
            .parent()
            .context("no directory for this binary")?
            .join("ferrox-controller"),
        dir: PathBuf::from("/var/tmp/ferrox-scale"),
        provisioning_limit: 100,
        workers: None,
        deadline: Duration::from_secs(300),
        poll: Duration::from_secs(1),
        timings: Timings::default(),
    };
    let mut out: Option<PathBuf> = None;
    let mut reps = 1usize;
    let mut args = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> Result<u64> {
        v.with_context(|| format!("{what} needs a value"))?
            .parse()
            .with_context(|| format!("{what}: a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--hosts" => o.hosts = num(args.next(), "--hosts")? as usize,
            "--reps" => reps = num(args.next(), "--reps")?.max(1) as usize,
            "--provisioning-limit" => {
                o.provisioning_limit = num(args.next(), "--provisioning-limit")? as usize
            }
            "--workers" => o.workers = Some(num(args.next(), "--workers")? as usize),
            "--deadline" => o.deadline = Duration::from_secs(num(args.next(), "--deadline")?),
            "--dir" => o.dir = args.next().context("--dir needs a value")?.into(),
            "--out" => out = Some(args.next().context("--out needs a value")?.into()),
            "--controller" => {
                o.controller = args.next().context("--controller needs a value")?.into()
            }
            other => bail!("unknown argument {other:?} (see the top of tests/scale/src/main.rs)"),
        }
    }
    if !o.controller.exists() {
        bail!(
            "{} not found: build it first (hack/bench-scale.sh does)",
            o.controller.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    for i in 0..reps {
        eprintln!("ferrox-scale: run {} of {reps}", i + 1);
        runs.push(rt.block_on(bench::run(&o))?);
    }
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| format!("Linux {}", s.trim()))
            .unwrap_or_default()
    );
    let md = bench::markdown(&o, &runs, &machine, "hack/bench-scale.sh");
    print!("{md}");
    if let Some(out) = out {
        std::fs::write(&out, &md).with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(r) = runs.iter().find(|r| r.all.provisioned.is_none()) {
        bail!(
            "{} hosts were not provisioned in a run",
            r.stuck.len().max(1)
        );
    }
    Ok(())
}
