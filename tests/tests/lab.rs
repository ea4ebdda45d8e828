//! The lab end to end (issue 6): a UEFI and a BIOS host, each a QEMU VM under libvirtd with
//! sushy-tools (libvirt driver) as its Redfish BMC, go from BareMetalHost manifests through
//! registering → inspecting → available → provisioning → provisioned via ferrox-controller,
//! ferrox-netboot and the ramdisk agent; boot from their own disk into the lab OS, which shows
//! on the serial console that it read its hostname and userData from the config drive; then
//! are deprovisioned (automatedCleaningMode metadata) back to available, powered off, and
//! their disks carry no signature any more, checked from outside with wipefs and blkid.
//!
//! Needs root, libvirtd, QEMU, the ramdisk (hack/build-initramfs.sh) and the lab image
//! (hack/build-lab-image.sh): run by hack/test.sh.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tests::lab::{self, Dirs, Firmware, Phases, Plan, Timeline};
use tests::ramdisk::workspace;

fn binaries() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .current_dir(workspace())
        // The same build hack/lab.sh does (features unified the same way: no rebuild).
        .args(["build", "-q", "--workspace", "--bins"])
        .status()
        .unwrap();
    assert!(
        st.success(),
        "building ferrox-controller and ferrox-netboot"
    );
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("debug")
}

/// Tears the lab down however the test ends.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        if let Err(e) = lab::down(&self.0) {
            eprintln!("lab down: {e:#}");
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d");
    std::fs::write(&f, data).unwrap();
    let out = tests::run("sha256sum", &[&f.to_string_lossy()]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// GPT partitions of a disk image file, as (first byte, length), read by sgdisk.
fn partitions(disk: &Path) -> Vec<(u64, u64)> {
    let out = tests::run("sgdisk", &["-p", &disk.to_string_lossy()]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Number"))
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (a, b): (u64, u64) = (f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?);
            Some((a * 512, (b - a + 1) * 512))
        })
        .collect()
}

/// What wipefs and blkid find on a file or device (empty: nothing).
fn signatures(target: &str) -> String {
    let w = tests::run("wipefs", &["--no-act", target]).unwrap();
    let (code, b) = tests::status("blkid", &["-p", target]).unwrap();
    let mut s = String::from_utf8_lossy(&w.stdout).trim().to_string();
    if code != 2 {
        s.push_str(&format!("\nblkid -p (exit {code}): {b}"));
    }
    s.trim().to_string()
}

fn get(dirs: &Dirs, plan: &Plan, args: &[&str]) -> String {
    lab::ctl(dirs, &plan.netns, &plan.controller, args).unwrap()
}

/// Applies the manifests with `online: false` (and the image or not), waits until every host
/// is in `state` and powered off, checks that libvirt too says each VM is shut off (really
/// off, not just believed off), and returns the controller's Events.
#[allow(clippy::too_many_arguments)]
fn offline(
    dirs: &Dirs,
    netns: &str,
    plan: &Plan,
    tl: &mut Timeline,
    show: &mut dyn FnMut(&str),
    image: bool,
    state: &'static str,
    limit_s: u64,
) -> Vec<lab::LabEvent> {
    lab::apply(dirs, &lab::manifests_with(plan, image, false)).unwrap();
    lab::watch(
        dirs,
        netns,
        &plan.controller,
        tl,
        Duration::from_secs(limit_s),
        show,
        &|_, s, _| s.state == state && !s.powered_on,
    )
    .unwrap();
    for h in &plan.hosts {
        assert_eq!(
            lab::domain_state(dirs, &h.name).unwrap(),
            "shut off",
            "{}",
            h.name
        );
    }
    lab::events(dirs, netns, &plan.controller).unwrap()
}

#[test]
#[ignore = "needs root, libvirtd, QEMU, the ramdisk and the lab image: run by hack/test.sh"]
fn lab_provisions_a_uefi_and_a_bios_host_end_to_end() {
    let bin = binaries();
    let work = tempfile::Builder::new()
        .prefix("ferrox-lab-test")
        .tempdir_in("/var/tmp")
        .unwrap();
    let netns = format!("fxlab{}", std::process::id() % 100_000);
    let plan = Plan::standard(work.path(), &netns, 2, &bin).unwrap();
    assert_eq!(plan.hosts[0].firmware, Firmware::Uefi);
    assert_eq!(plan.hosts[1].firmware, Firmware::Bios);
    let _down = Down(work.path().to_path_buf());
    let dirs = lab::up(&plan).unwrap();
    let mut tl = Timeline::new();
    let mut show = |l: &str| println!("{l}");

    // Manifests → provisioned, and each OS up from its disk.
    lab::watch(
        &dirs,
        &netns,
        &plan.controller,
        &mut tl,
        Duration::from_secs(1500),
        &mut show,
        // Up to its last line: the config drive's lines come before it.
        &|n, s, _| s.state == "provisioned" && lab::os_ready(&dirs, n),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\ncontroller log:\n{}",
            std::fs::read_to_string(dirs.logs().join("controller.log")).unwrap_or_default()
        )
    });
    let evs = lab::events(&dirs, &netns, &plan.controller).unwrap();
    for h in &plan.hosts {
        assert_eq!(
            lab::path(&evs, &h.name),
            [
                "registering",
                "inspecting",
                "available",
                "provisioning",
                "provisioned"
            ],
            "{}",
            h.name
        );
        // What the OS on the disk printed: booted from disk in the host's firmware mode, with
        // the hostname and userData of the config drive the controller asked for.
        let report = lab::os_report(&dirs, &h.name).join("\n");
        let fw = match h.firmware {
            Firmware::Uefi => "firmware=uefi",
            Firmware::Bios => "firmware=bios",
        };
        assert!(
            report.contains("booted from disk") && report.contains(fw),
            "{}: {report}",
            h.name
        );
        assert!(
            report.contains(&format!("hostname={}", h.name)),
            "{}: {report}",
            h.name
        );
        let sum = sha256_hex(h.user_data().as_bytes());
        assert!(
            report.contains(&format!("user-data sha256={sum}")),
            "{}: want {sum}: {report}",
            h.name
        );
    }
    // The inspection report is the VM's hardware.
    for (i, h) in plan.hosts.iter().enumerate() {
        let hd: serde_json::Value = serde_json::from_str(&get(
            &dirs,
            &plan,
            &["get", "hardwaredata", &h.name, "-o", "json"],
        ))
        .unwrap();
        let hw = &hd["spec"]["hardware"];
        let disks = hw["storage"].as_array().unwrap();
        assert!(
            disks
                .iter()
                .any(|d| d["serialNumber"] == format!("FXLAB{i}")
                    && d["sizeBytes"] == h.disk_gib << 30),
            "{}: {disks:?}",
            h.name
        );
        let nics = hw["nics"].as_array().unwrap();
        assert!(
            nics.iter()
                .any(|n| n["mac"] == h.mac.as_str() && n["pxe"] == true),
            "{}: {nics:?}",
            h.name
        );
    }
    let parts: Vec<Vec<(u64, u64)>> = plan
        .hosts
        .iter()
        .map(|h| partitions(&dirs.disk(&h.name)))
        .collect();
    for (h, p) in plan.hosts.iter().zip(&parts) {
        assert!(
            p.len() >= 2,
            "{}: the image's partitions and the config drive: {p:?}",
            h.name
        );
    }

    // Offline while provisioned: the lab OS has no acpid and ignores the graceful shutdown
    // request, so after the lab's 20 s the controller powers it off hard, and says so.
    let evs = offline(
        &dirs,
        &netns,
        &plan,
        &mut tl,
        &mut show,
        true,
        "provisioned",
        300,
    );
    let forced = |evs: &[lab::LabEvent], host: &str| -> Vec<String> {
        evs.iter()
            .filter(|e| e.host == host && e.reason == "PowerOffForced")
            .map(|e| e.message.clone())
            .collect()
    };
    for h in &plan.hosts {
        let f = forced(&evs, &h.name);
        assert_eq!(f.len(), 1, "{}: {f:?}", h.name);
        assert!(f[0].contains("within 20 s"), "{}", f[0]);
    }

    // Deprovision (image removed from the manifest), still offline: the agent boots, cleans
    // the disk's metadata, the host is available; then the graceful shutdown reaches the
    // ramdisk, whose agent hears the ACPI power button and powers off: no second hard off.
    let evs = offline(
        &dirs,
        &netns,
        &plan,
        &mut tl,
        &mut show,
        false,
        "available",
        900,
    );
    for h in &plan.hosts {
        assert_eq!(forced(&evs, &h.name).len(), 1, "{}", h.name);
        let console = std::fs::read_to_string(dirs.console(&h.name)).unwrap_or_default();
        assert!(
            console.contains("power button pressed (graceful shutdown request): powering off"),
            "{}: the ramdisk did not power off on the ACPI request",
            h.name
        );
    }
    for (h, p) in plan.hosts.iter().zip(&parts) {
        let path = lab::path(&evs, &h.name);
        assert_eq!(
            &path[path.len() - 3..],
            ["provisioned", "deprovisioning", "available"],
            "{}",
            h.name
        );
        let disk = dirs.disk(&h.name);
        let found = signatures(&disk.to_string_lossy());
        assert!(found.is_empty(), "{}: whole disk: {found}", h.name);
        for (off, len) in p {
            let lo = tests::run(
                "losetup",
                &[
                    "-r",
                    "-f",
                    "--show",
                    "-o",
                    &off.to_string(),
                    "--sizelimit",
                    &len.to_string(),
                    &disk.to_string_lossy(),
                ],
            )
            .unwrap();
            let dev = String::from_utf8_lossy(&lo.stdout).trim().to_string();
            let found = signatures(&dev);
            tests::run("losetup", &["-d", &dev]).unwrap();
            assert!(
                found.is_empty(),
                "{}: partition at byte {off}: {found}",
                h.name
            );
        }
    }

    println!("\nPer-phase timings, seconds:\n{}", Phases::header());
    for h in &plan.hosts {
        println!(
            "{}",
            Phases::of(&evs, &h.name, tl.os_seen.get(&h.name).copied()).row(&h.name, h.firmware)
        );
    }

    // Down leaves nothing running.
    let pids = std::fs::read_to_string(dirs.root.join("pids")).unwrap();
    lab::down(&dirs.root).unwrap();
    for l in pids.lines() {
        let pid = l.split(' ').next().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "still running: {l}"
        );
    }
    assert!(!Path::new("/run/netns").join(&netns).exists());
}
