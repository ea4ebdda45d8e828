//! The lab's OS image (hack/build-lab-image.sh) provisioned the way Ferrox provisions a host,
//! then booted from its disk under QEMU: the image goes onto a larger disk, the agent's own
//! code (agent-image) adds the config drive the controller's code (controller-configdrive)
//! built from a hostname and userData, and the VM boots that disk under SeaBIOS and under OVMF,
//! from virtio-blk and from SATA (AHCI). The image's /init says on the serial console which
//! firmware booted it and what it read from the config drive; these tests check those lines.
//! Needs root (the image build installs packages and makes device nodes) and QEMU; run by
//! hack/test.sh.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_image::configdrive::{write_config_drive, TableKind};
use anyhow::{ensure, Context, Result};
use controller_configdrive::{build, encode, ConfigDriveInput};
use serde_json::Value;
use tests::ramdisk::workspace;
use tests::run;

const MIB: u64 = 1 << 20;
/// The VM's disk: larger than the image, so the agent has room for its 64 MiB partition.
const DISK_BYTES: u64 = 256 * MIB;
/// One boot under TCG, power-on to ready: ~50 s measured (SeaBIOS ~47-49 s, OVMF ~55 s) with
/// two VMs at once on a loaded 2-core machine; the limit leaves room for a busier one.
const BOOT_LIMIT: Duration = Duration::from_secs(180);
const USER_DATA: &str =
    "#cloud-config\nwrite_files:\n  - path: /etc/motd\n    content: provisioned by ferrox\n";
const READY: &str = "FERROX-LAB: ready";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Firmware {
    Bios,
    Uefi,
}

#[derive(Debug, Clone, Copy)]
enum Bus {
    VirtioBlk,
    Sata,
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// The image's directory, built (or found up to date) by hack/build-lab-image.sh.
fn image_dir() -> Result<PathBuf> {
    let script = workspace().join("hack/build-lab-image.sh");
    let out = run(s(&script), &[])?;
    let raw = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    ensure!(
        raw.is_file(),
        "build-lab-image.sh printed {}",
        raw.display()
    );
    Ok(raw
        .parent()
        .context("disk.raw has no directory")?
        .to_path_buf())
}

fn sha256(path: &Path) -> Result<String> {
    let out = run("sha256sum", &[s(path)])?;
    let text = String::from_utf8(out.stdout)?;
    Ok(text
        .split_whitespace()
        .next()
        .context("sha256sum printed nothing")?
        .to_owned())
}

/// A QEMU started by this test, killed (by its PID) when dropped.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one boot showed.
struct Boot {
    console: String,
    /// What QEMU itself said (a bad option, a missing firmware file).
    qemu_stderr: String,
    /// From QEMU's start to the image's "ready" line (host clock), if it came.
    ready_after: Option<Duration>,
}

/// A provisioned disk: the image on a [`DISK_BYTES`] disk with the config drive the agent adds.
fn provisioned_disk(dir: &Path, hostname: &str) -> Result<PathBuf> {
    let image = image_dir()?.join("disk.raw");
    let disk = dir.join("disk.raw");
    std::fs::copy(&image, &disk)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)?
        .set_len(DISK_BYTES)?;
    let input = ConfigDriveInput {
        uuid: "7d0b7c1e-4a8f-4f0e-9a51-2b6c3d4e5f60".into(),
        name: hostname.into(),
        namespace: "lab".into(),
        hostname: hostname.into(),
        user_data: Some(USER_DATA.as_bytes().to_vec()),
        network_data: None,
        meta_data: None,
    };
    let field = encode(&build(&input)?)?;
    // A plain file is written the way a disk is: the same table code, no loop device needed.
    let part = write_config_drive(&disk, &field)?;
    ensure!(
        part.table == TableKind::Gpt && part.number == 2 && !part.reused,
        "{part:?}"
    );
    // In the free space after the image, which the image leaves alone.
    let image_len = std::fs::metadata(&image)?.len();
    ensure!(
        part.start_bytes >= image_len && part.start_bytes + part.size_bytes <= DISK_BYTES,
        "{part:?} (image: {image_len} bytes)"
    );
    let verify = String::from_utf8(run("sgdisk", &["-v", s(&disk)])?.stdout)?;
    ensure!(verify.contains("No problems found"), "sgdisk -v:\n{verify}");
    Ok(disk)
}

/// Boots `disk` from `bus` under `firmware` until the image says it is ready, a panic shows,
/// or [`BOOT_LIMIT`].
fn boot(dir: &Path, disk: &Path, firmware: Firmware, bus: Bus) -> Result<Boot> {
    let serial = dir.join(format!("serial-{firmware:?}-{bus:?}.log"));
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg",
        "-m",
        "256",
        "-nographic",
        "-nodefaults",
        "-no-reboot",
        "-nic",
        "none",
        "-serial",
    ])
    .arg(format!("file:{}", serial.display()))
    .arg("-drive")
    .arg(format!("file={},if=none,id=d0,format=raw", disk.display()));
    match bus {
        Bus::VirtioBlk => cmd.args(["-device", "virtio-blk-pci,drive=d0,bootindex=0"]),
        Bus::Sata => cmd.args([
            "-device",
            "ahci,id=ahci",
            "-device",
            "ide-hd,drive=d0,bus=ahci.0,bootindex=0",
        ]),
    };
    if firmware == Firmware::Uefi {
        let vars = dir.join("OVMF_VARS.fd");
        std::fs::copy("/usr/share/OVMF/OVMF_VARS.fd", &vars)
            .context("copying OVMF_VARS.fd (package ovmf)")?;
        cmd.arg("-drive")
            .arg("if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd")
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()));
    }
    let qemu_log = dir.join(format!("qemu-{firmware:?}-{bus:?}.log"));
    let start = Instant::now();
    let vm = Vm(cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&qemu_log)?)
        .spawn()
        .context("starting qemu-system-x86_64")?);
    let mut ready_after = None;
    let console = loop {
        std::thread::sleep(Duration::from_millis(250));
        let console =
            String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
        if console.contains(READY) {
            ready_after = Some(start.elapsed());
            break console;
        }
        if console.contains("Kernel panic") || start.elapsed() > BOOT_LIMIT {
            break console;
        }
    };
    drop(vm);
    Ok(Boot {
        console,
        qemu_stderr: std::fs::read_to_string(&qemu_log).unwrap_or_default(),
        ready_after,
    })
}

/// The console lines of the image's /init.
fn lab_lines(console: &str) -> Vec<&str> {
    console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with("FERROX-LAB:"))
        .collect()
}

/// Provisions a disk for `hostname`, boots it, and checks every line the image must print.
fn provision_and_boot(firmware: Firmware, bus: Bus, hostname: &str) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("ferrox-lab-image")
        .tempdir_in("/var/tmp")?;
    let disk = provisioned_disk(dir.path(), hostname)?;
    let ud = dir.path().join("user_data");
    std::fs::write(&ud, USER_DATA)?;
    let ud_sha = sha256(&ud)?;

    let b = boot(dir.path(), &disk, firmware, bus)?;
    let lines = lab_lines(&b.console);
    let tail = b
        .console
        .chars()
        .rev()
        .take(3000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<String>()
        + "\n-- qemu stderr:\n"
        + &b.qemu_stderr;
    let fw = match firmware {
        Firmware::Bios => "bios",
        Firmware::Uefi => "uefi",
    };
    let want = [
        format!("FERROX-LAB: booted from disk (firmware={fw}, cmdline marker present)"),
        format!("FERROX-LAB: hostname={hostname}"),
        format!("FERROX-LAB: user-data sha256={ud_sha} first-line=#cloud-config"),
    ];
    for w in &want {
        assert!(
            lines.contains(&w.as_str()),
            "{firmware:?}/{bus:?}: no line {w:?}; its lines: {lines:#?}\nconsole tail:\n{tail}"
        );
    }
    let ready = b.ready_after.unwrap_or_else(|| {
        panic!("{firmware:?}/{bus:?}: not ready within {BOOT_LIMIT:?}; console tail:\n{tail}")
    });
    // The kernel takes the table as the agent left it: backup GPT at the disk's end.
    assert!(
        !b.console
            .contains("GPT:Alternate GPT header not at the end"),
        "{firmware:?}/{bus:?}: the kernel found the backup GPT misplaced:\n{tail}"
    );
    println!(
        "{fw}/{bus:?}: power-on to ready {:.1} s (host clock, TCG)",
        ready.as_secs_f64()
    );
    for l in lines {
        println!("  {l}");
    }
    Ok(())
}

#[test]
#[ignore = "needs root, QEMU and the lab image (hack/build-lab-image.sh): run by hack/test.sh"]
fn seabios_boots_the_image_from_virtio_blk_and_reads_the_config_drive() -> Result<()> {
    provision_and_boot(Firmware::Bios, Bus::VirtioBlk, "lab-bios-vblk")
}

#[test]
#[ignore = "needs root, QEMU, OVMF and the lab image (hack/build-lab-image.sh): run by hack/test.sh"]
fn ovmf_boots_the_image_from_virtio_blk_and_reads_the_config_drive() -> Result<()> {
    provision_and_boot(Firmware::Uefi, Bus::VirtioBlk, "lab-uefi-vblk")
}

#[test]
#[ignore = "needs root, QEMU and the lab image (hack/build-lab-image.sh): run by hack/test.sh"]
fn seabios_boots_the_image_from_sata_and_reads_the_config_drive() -> Result<()> {
    provision_and_boot(Firmware::Bios, Bus::Sata, "lab-bios-sata")
}

#[test]
#[ignore = "needs root, QEMU, OVMF and the lab image (hack/build-lab-image.sh): run by hack/test.sh"]
fn ovmf_boots_the_image_from_sata_and_reads_the_config_drive() -> Result<()> {
    provision_and_boot(Firmware::Uefi, Bus::Sata, "lab-uefi-sata")
}

#[test]
#[ignore = "needs root and qemu-img (the image build installs packages): run by hack/test.sh"]
fn qcow2_holds_the_same_disk_as_raw_and_the_manifest_names_both() -> Result<()> {
    let dir = image_dir()?;
    let (raw, qcow2) = (dir.join("disk.raw"), dir.join("disk.qcow2"));
    run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "qcow2", s(&raw), s(&qcow2)],
    )?;
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)?;
    for (key, path) in [("raw", &raw), ("qcow2", &qcow2)] {
        assert_eq!(manifest[key]["sha256"], sha256(path)?.as_str(), "{key}");
        assert_eq!(
            manifest[key]["size"],
            std::fs::metadata(path)?.len(),
            "{key}"
        );
    }
    let raw_size = std::fs::metadata(&raw)?.len();
    assert!(raw_size <= 64 * MIB, "disk.raw is {raw_size} bytes");
    assert_eq!(manifest["qcow2"]["virtual_size"], raw_size);
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS"))?;
    assert_eq!(
        sums,
        format!(
            "{}  disk.raw\n{}  disk.qcow2\n",
            sha256(&raw)?,
            sha256(&qcow2)?
        )
    );
    Ok(())
}
