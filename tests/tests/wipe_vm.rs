//! Wipes against what this machine cannot show, inside a QEMU VM (TCG) running Debian's
//! kernel: the metadata wipe against real md RAID arrays made by the real mdadm, on GPT
//! partitions the kernel itself scanned; the full wipe against a real NVMe controller (QEMU's
//! emulation, through the agent's own NVMe admin commands) and a virtio disk. The static ferrox-agent, mdadm, sgdisk, wipefs and blkid go into a
//! small ramdisk (built with ferrox-mkinitramfs) whose /init is a busybox script; it reports on
//! the serial console. Then the disks are checked again from outside, on this machine, with
//! wipefs and blkid over the whole disk and over every partition the disk had.
//!
//! Needs root, QEMU and the static agent: hack/test.sh builds it (hack/build-initramfs.sh) and
//! runs this.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::loopdev::Loop;
use tests::ramdisk::{artifacts, workspace};

/// What every test's /init starts with: busybox's applets, the pseudo filesystems, quiet
/// kernel messages (the script's lines must not be cut by them), `say` and `fail`.
const PRELUDE: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /run/mdadm /tmp
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo 1 > /proc/sys/kernel/printk
say() { echo "WIPE-VM: $*"; }
fail() { say "FAIL $*"; sync; poweroff -f; }
"#;

/// The md test's /init, after [`PRELUDE`]. Two 64 MiB virtio disks, each with a GPT of two partitions; md0 (metadata
/// 1.2, superblock near the start, ext2 on top) over the first partitions, md1 (metadata 0.90,
/// superblock at the end, so the swap area on top sits at the very start of each member) over
/// the second ones.
const INIT: &str = r#"
modprobe -a virtio_pci virtio_blk md_mod raid1 || fail "modprobe"
for i in $(seq 100); do [ -b /dev/vdb ] && break; sleep 0.1; done
[ -b /dev/vdb ] || fail "no /dev/vdb"
U=/usr/local/sbin
for d in vda vdb; do
  $U/sgdisk -n1:2048:+24M -t1:fd00 -n2:0:0 -t2:fd00 /dev/$d >/dev/null || fail "sgdisk $d"
done
for p in vda1 vdb1 vda2 vdb2; do
  for i in $(seq 50); do [ -b /dev/$p ] && break; sleep 0.1; done
  [ -b /dev/$p ] || fail "the kernel did not scan /dev/$p"
done
$U/mdadm --create /dev/md0 --run --assume-clean --level=1 --raid-devices=2 --metadata=1.2 \
  /dev/vda1 /dev/vdb1 </dev/null >/dev/null 2>&1 || fail "mdadm create md0"
$U/mdadm --create /dev/md1 --run --assume-clean --level=1 --raid-devices=2 --metadata=0.90 \
  /dev/vda2 /dev/vdb2 </dev/null >/dev/null 2>&1 || fail "mdadm create md1"
mke2fs -q /dev/md0 >/dev/null 2>&1 || fail "mke2fs md0"
mkswap /dev/md1 >/dev/null 2>&1 || fail "mkswap md1"
sync
say "mdstat $(grep -c '^md' /proc/mdstat) arrays"

/bin/ferrox-agent wipe --mode metadata /dev/vda >/tmp/held.json 2>/tmp/held.err
say "held rc=$? $(tr '\n' ' ' </tmp/held.err | tail -c 600)"

$U/mdadm --stop /dev/md0 >/dev/null 2>&1 || fail "mdadm stop md0"
$U/mdadm --stop /dev/md1 >/dev/null 2>&1 || fail "mdadm stop md1"
for p in vda1 vda2 vdb1 vdb2; do
  say "before $p [$($U/wipefs --no-act --noheadings --output TYPE /dev/$p 2>&1 | tr '\n' ' ')]"
done
/bin/ferrox-agent wipe --mode metadata /dev/vda /dev/vdb >/tmp/wipe.json 2>/tmp/wipe.err
say "wipe rc=$?"
say "report $(tr -d '\n' </tmp/wipe.json)"
for d in vda vdb; do
  say "partitions-left $d [$(cd /sys/block/$d && ls -d ${d}* 2>/dev/null | tr '\n' ' ')]"
  say "after $d [$($U/wipefs --no-act --noheadings --output TYPE /dev/$d 2>&1 | tr '\n' ' ')]"
  $U/blkid -p /dev/$d >/dev/null 2>&1
  say "blkid $d rc=$?"
  say "examine $d [$($U/mdadm --examine /dev/$d 2>&1 | grep -c 'Magic')]"
done
$U/mdadm --assemble --scan >/dev/null 2>&1
say "assembled $(grep -c '^md' /proc/mdstat)"
say "done"
sync
poweroff -f
"#;

/// The console lines the script printed, without the prefix.
fn said(console: &str) -> Vec<String> {
    console
        .lines()
        .filter_map(|l| l.split_once("WIPE-VM: ").map(|(_, s)| s.trim().to_string()))
        .collect()
}

fn line<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no '{prefix}' line in {lines:#?}"))
}

/// The shared libraries (and the loader) a dynamically linked program needs, from ldd.
fn libraries(program: &str) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(program).output().unwrap();
    assert!(out.status.success(), "ldd {program}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=> ") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A test ramdisk: [`PRELUDE`] and `script` as /init, busybox, the real `tools` (from /sbin, put in
/// /usr/local/sbin) and their libraries, the static agent as /bin/ferrox-agent, and `modules`
/// with their dependencies.
fn ramdisk(dir: &Path, kver: &str, script: &str, tools: &[&str], modules: &str) -> PathBuf {
    let ws = workspace();
    let agent = ws.join("target/static/ferrox-agent");
    let mk = ws.join("target/release/ferrox-mkinitramfs");
    for p in [&agent, &mk] {
        assert!(
            p.exists(),
            "{}: run hack/build-initramfs.sh (hack/test.sh does)",
            p.display()
        );
    }
    let init = dir.join("init");
    std::fs::write(&init, format!("{PRELUDE}{script}")).unwrap();
    let mut files = vec![
        "/bin/busybox:/bin/busybox".to_string(),
        format!("{}:/bin/ferrox-agent", agent.display()),
    ];
    let mut libs = Vec::new();
    for t in tools {
        let path = format!("/sbin/{t}");
        files.push(format!("{path}:/usr/local/sbin/{t}"));
        libs.extend(libraries(&path));
    }
    libs.sort();
    libs.dedup();
    for l in libs {
        files.push(format!("{}:{}", l.display(), l.display()));
    }
    let out = dir.join("wipe-vm.img");
    let mut cmd = Command::new(&mk);
    cmd.arg("--agent")
        .arg(&init)
        .args(["--kernel-version", kver])
        .args(["--modules", modules])
        .args(["--no-firmware", "--compression-level", "3", "-o"])
        .arg(&out);
    for f in &files {
        cmd.args(["--add-file", f]);
    }
    let st = cmd.stderr(Stdio::null()).status().unwrap();
    assert!(st.success(), "ferrox-mkinitramfs failed");
    out
}

/// Boots Debian's kernel with a test ramdisk (see [`ramdisk`]) and one 64 MiB raw disk per
/// entry of `devices` (a QEMU `-device` with `drive=dN`); returns the disk files and what the
/// script said, once the VM has powered off (at most 300 s) with no `FAIL` line and a `done`.
fn run_vm(
    dir: &Path,
    script: &str,
    tools: &[&str],
    modules: &str,
    devices: &[&str],
) -> (Vec<PathBuf>, Vec<String>) {
    let (kernel, _) = artifacts();
    let kver = kernel
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_string();
    let initrd = ramdisk(dir, &kver, script, tools, modules);
    let disks: Vec<PathBuf> = (0..devices.len())
        .map(|i| {
            let p = dir.join(format!("disk-{i}.raw"));
            std::fs::File::create(&p)
                .unwrap()
                .set_len(64 << 20)
                .unwrap();
            p
        })
        .collect();
    let console = dir.join("console");
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-m", "512", "-nographic", "-nodefaults"])
        .args(["-no-reboot", "-serial"])
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1"]);
    for (i, (d, dev)) in disks.iter().zip(devices).enumerate() {
        qemu.arg("-drive").arg(format!(
            "file={},if=none,id=d{i},format=raw,cache=unsafe",
            d.display()
        ));
        qemu.args(["-device", &format!("{dev},drive=d{i}")]);
    }
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let ended = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if t0.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    let lines = said(&text);
    let tail: String = text.lines().rev().take(40).collect::<Vec<_>>().join("\n");
    assert!(
        ended.is_some(),
        "the VM did not power off in 300 s: {lines:#?}\n{tail}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("FAIL")),
        "set-up failed in the VM: {lines:#?}\n{tail}"
    );
    assert!(lines.iter().any(|l| l == "done"), "{lines:#?}\n{tail}");
    eprintln!("{}", lines.join("\n"));
    (disks, lines)
}

/// The agent's JSON report on a `report ` line: one entry per device.
fn report(lines: &[String]) -> Vec<Value> {
    let text = line(lines, "report ");
    let v: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("wipe report is not JSON ({e}): {text}"));
    v.as_array()
        .cloned()
        .unwrap_or_else(|| panic!("not a list of devices: {v:#}"))
}

#[test]
#[ignore = "needs root, QEMU and the static agent: run by hack/test.sh"]
fn metadata_wipe_erases_real_md_arrays_on_kernel_scanned_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let (disks, lines) = run_vm(
        dir.path(),
        INIT,
        &["mdadm", "sgdisk", "wipefs", "blkid"],
        "virtio_pci,virtio_blk,md_mod,raid1",
        &["virtio-blk-pci", "virtio-blk-pci"],
    );

    // The set-up is what it says: both arrays ran, and (once stopped) each member carries the
    // md superblock; md1's members (metadata at the end) also show the swap area at their
    // start.
    assert_eq!(line(&lines, "mdstat "), "2 arrays");
    for p in ["vda1", "vdb1", "vda2", "vdb2"] {
        assert!(
            line(&lines, &format!("before {p} ")).contains("linux_raid_member"),
            "{p}: {lines:#?}"
        );
    }
    for p in ["vda2", "vdb2"] {
        assert!(line(&lines, &format!("before {p} ")).contains("swap"));
    }

    // While the arrays run, the disk is refused (exit status 1: every device failed), naming
    // who holds it.
    let held = line(&lines, "held ");
    assert!(held.starts_with("rc=1 "), "{held}");
    assert!(
        held.contains("held by md") && held.contains("(via vda1)"),
        "{held}"
    );

    // Stopped, the metadata wipe succeeds on both disks ...
    assert_eq!(line(&lines, "wipe "), "rc=0");
    let devices = report(&lines);
    assert_eq!(devices.len(), 2, "{devices:#?}");
    let mut former: Vec<(usize, u64, u64)> = Vec::new();
    for (i, dev) in devices.iter().enumerate() {
        assert_eq!(dev["ok"], true, "{dev:#}");
        let erased: Vec<(String, String)> = dev["erased"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["type"].as_str().unwrap().to_string(),
                    s["location"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        for (kind, at) in [
            ("linux_raid_member", "partition 1"),
            ("linux_raid_member", "partition 2"),
            ("swap", "partition 2"),
            ("gpt", "disk"),
            ("PMBR", "disk"),
        ] {
            assert!(
                erased.iter().any(|(k, l)| k == kind && l == at),
                "{kind} on {at} not erased: {erased:?}"
            );
        }
        let parts = dev["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), 2, "{dev:#}");
        for p in parts {
            former.push((i, p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap()));
        }
    }
    // ... the kernel has dropped the partitions, nothing is found on the disks, and mdadm
    // finds no superblock to assemble.
    for d in ["vda", "vdb"] {
        assert_eq!(line(&lines, &format!("partitions-left {d} ")), "[]");
        assert_eq!(line(&lines, &format!("after {d} ")), "[]");
        assert_eq!(
            line(&lines, &format!("blkid {d} ")),
            "rc=2",
            "blkid -p finds nothing"
        );
        assert_eq!(line(&lines, &format!("examine {d} ")), "[0]");
    }
    assert_eq!(line(&lines, "assembled "), "0");

    // From outside, with this machine's tools: the whole disk and every region that was a
    // partition hold no signature.
    for d in &disks {
        let out = Command::new("wipefs")
            .args(["--no-act", "--noheadings"])
            .arg(d)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "",
            "{}",
            d.display()
        );
    }
    for (i, start, size) in former {
        let region = Loop::region(&disks[i], start, size).unwrap();
        let out = Command::new("wipefs")
            .args(["--no-act", "--noheadings", region.dev()])
            .output()
            .unwrap();
        assert!(out.status.success(), "wipefs on {}", region.dev());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "",
            "disk {i} at {start}"
        );
        let st = Command::new("blkid")
            .args(["-p", region.dev()])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(
            st.code(),
            Some(2),
            "blkid -p finds nothing at {start} on disk {i}"
        );
    }
}

/// The full wipe test's /init, after [`PRELUDE`]. The full wipe's own choice, on a real NVMe controller (QEMU's emulation, which implements
/// Format NVM but neither cryptographic erase nor sanitize) and a virtio disk, both at once:
/// each device gets the fastest erase it really supports, says which and why the faster ones
/// were skipped, and afterwards every byte of both disks reads zero from outside.
const FULL: &str = r#"
modprobe -a virtio_pci virtio_blk nvme || fail "modprobe"
for d in nvme0n1 vda; do
  for i in $(seq 100); do [ -b /dev/$d ] && break; sleep 0.1; done
  [ -b /dev/$d ] || fail "no /dev/$d"
  dd if=/dev/urandom of=/dev/$d bs=1M count=64 conv=fsync 2>/dev/null || fail "filling $d"
done
/bin/ferrox-agent wipe --mode full /dev/nvme0n1 /dev/vda >/tmp/wipe.json 2>/tmp/wipe.err
say "wipe rc=$?"
say "report $(tr -d '\n' </tmp/wipe.json)"
say "done"
sync
poweroff -f
"#;

#[test]
#[ignore = "needs root, QEMU and the static agent: run by hack/test.sh"]
fn full_wipe_formats_a_real_nvme_controller_and_zeroes_a_virtio_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (disks, lines) = run_vm(
        dir.path(),
        FULL,
        &[],
        "virtio_pci,virtio_blk,nvme",
        &["nvme,serial=FERROX-NVME", "virtio-blk-pci"],
    );
    assert_eq!(line(&lines, "wipe "), "rc=0");
    let devices = report(&lines);
    let of = |dev: &str| {
        devices
            .iter()
            .find(|d| d["device"] == dev)
            .unwrap_or_else(|| panic!("{dev} not in {devices:#?}"))
    };
    let nvme = of("/dev/nvme0n1");
    assert_eq!(nvme["ok"], true, "{nvme:#}");
    assert_eq!(nvme["method"], "nvme-format-user-data-erase", "{nvme:#}");
    let tried: Vec<(&str, &str)> = nvme["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["method"].as_str().unwrap(),
                a["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tried,
        [
            ("nvme-format-crypto-erase", "skipped"),
            ("nvme-sanitize-crypto-erase", "skipped"),
            ("nvme-sanitize-block-erase", "skipped"),
            ("nvme-format-user-data-erase", "ok"),
        ],
        "{nvme:#}"
    );
    let vda = of("/dev/vda");
    assert_eq!(vda["ok"], true, "{vda:#}");
    // QEMU's virtio-blk offers Write Zeroes, and discard only with discard=unmap (not here):
    // the agent takes the device's own zeroing (after secure discard and discard are found
    // missing) over writing the zeros itself.
    assert_eq!(vda["method"], "write-zeroes", "{vda:#}");
    // From outside: both disks were full of random bytes, and now hold nothing but zeros.
    for d in &disks {
        let bytes = std::fs::read(d).unwrap();
        assert_eq!(bytes.len(), 64 << 20);
        let left = bytes.iter().filter(|b| **b != 0).count();
        assert_eq!(
            left,
            0,
            "{} has {left} non-zero bytes after a full wipe",
            d.display()
        );
    }
}
