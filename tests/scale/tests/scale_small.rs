//! The scale harness at a small size, as a test: forty hosts through a real ferrox-controller
//! (the debug build `cargo build --workspace --bins` made), a provisioning limit of eight.
//! Asserts the whole life of every host and what the machines saw — not speed (that is
//! `hack/bench-scale.sh`).

use std::path::PathBuf;
use std::time::Duration;

use ferrox_scale::bench::{self, Options};
use ferrox_scale::bmc::{Booted, Timings};

fn controller() -> PathBuf {
    // target/debug/deps/scale_small-HASH → target/debug/ferrox-controller
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("ferrox-controller");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (hack/test.sh does)",
        bin.display()
    );
    bin
}

#[test]
fn forty_hosts_go_from_manifest_to_provisioned_within_the_provisioning_limit() {
    const HOSTS: usize = 40;
    const LIMIT: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        hosts: HOSTS,
        controller: controller(),
        dir: dir.path().join("run"),
        provisioning_limit: LIMIT,
        workers: None,
        deadline: Duration::from_secs(240),
        poll: Duration::from_millis(500),
        timings: Timings {
            boot: Duration::from_millis(300),
            pxe_patience: Duration::from_secs(60),
            inspect: Duration::from_millis(100),
            wipe: Duration::from_millis(50),
            write: Duration::from_millis(800),
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(bench::run(&o)).unwrap();
    let log = || std::fs::read_to_string(o.dir.join("controller.log")).unwrap_or_default();
    assert!(
        r.stuck.is_empty(),
        "hosts not provisioned: {:?}\ncontroller log tail: {}",
        r.stuck,
        log().lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    assert!(r.all.provisioned.is_some());
    assert!(r.all.registered <= r.all.inspected && r.all.inspected <= r.all.provisioned);
    assert_eq!(r.per_host_provisioned.len(), HOSTS);

    let count = |name: &str| {
        r.counters
            .iter()
            .find(|(k, _)| *k == name)
            .unwrap_or_else(|| panic!("no counter {name}"))
            .1
    };
    // One ramdisk boot per host: inspected, then provisioned by the same agent (fast-track).
    assert_eq!(count("PXE boots (ramdisk)"), HOSTS as u64);
    assert_eq!(count("agent enrollments"), HOSTS as u64);
    assert_eq!(count("PXE boots with no netboot entry"), 0);
    assert_eq!(count("agent calls refused"), 0);
    assert_eq!(count("Redfish requests refused"), 0);
    // Inspect and write-image per host, each once.
    assert_eq!(count("commands run"), 2 * HOSTS as u64);
    assert_eq!(count("images written"), HOSTS as u64);
    // The limit holds: never more than LIMIT hosts writing at once.
    let most = count("most images written at once");
    assert!(
        (1..=LIMIT as u64).contains(&most),
        "{most} images were written at once with a limit of {LIMIT}"
    );
    // Every machine ends on, booted from its own disk, with exactly one image written.
    assert_eq!(r.machines.len(), HOSTS);
    for (id, (on, booted, writes)) in &r.machines {
        assert!(*on, "{id} is off");
        assert_eq!(*booted, Booted::Disk, "{id} did not boot its disk last");
        assert_eq!(*writes, 1, "{id} had {writes} images written");
    }
    assert!(r.controller_peak_rss > 0 && r.controller_cpu > 0.0);
}
