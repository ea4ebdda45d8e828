//! Wipes of real loop devices prepared with the real tools (sgdisk, sfdisk, mkfs.*, mkswap,
//! cryptsetup, pvcreate), checked with the real tools (wipefs, blkid, cmp). Needs root and
//! loop devices: `#[ignore]`d in a plain `cargo test`; hack/test.sh runs them.
//!
//! This kernel has no partition scanning on loop devices, so partitions are written and
//! checked through loop devices at the partition's offset.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use agent_wipe::guard::GuardPolicy;
use agent_wipe::{wipe_device, wipe_device_with, wipe_devices, FullMethod, Mode, WipeOptions};
use anyhow::Result;
use common::*;

const MIB: u64 = 1 << 20;

/// A partition: (number, start byte, size in bytes).
type Part = (u32, u64, u64);

fn opts(mode: Mode) -> WipeOptions {
    WipeOptions {
        mode,
        guard: GuardPolicy::default(),
        progress: None,
    }
}

/// Formats the partition `(start, size)` of `img` through an offset loop device.
fn in_partition(
    img: &Path,
    start: u64,
    size: u64,
    f: impl FnOnce(&str) -> Result<()>,
) -> Result<()> {
    let part = Loop::region(img, start, size)?;
    f(part.dev())
}

/// A 1 GiB GPT disk: ext4, xfs, swap, LUKS2, LVM PV, vfat, and an md 0.90 member.
fn gpt_disk(dir: &Path) -> Result<(PathBuf, Vec<Part>)> {
    let img = image(dir, "gpt.img", 1 << 30)?;
    run(
        "sgdisk",
        &[
            "-o",
            "-n",
            "1:2048:+64M",
            "-t",
            "1:8300",
            "-n",
            "2:0:+320M",
            "-t",
            "2:8300",
            "-n",
            "3:0:+32M",
            "-t",
            "3:8200",
            "-n",
            "4:0:+32M",
            "-t",
            "4:8309",
            "-n",
            "5:0:+16M",
            "-t",
            "5:8e00",
            "-n",
            "6:0:+32M",
            "-t",
            "6:0700",
            "-n",
            "7:0:+16M",
            "-t",
            "7:fd00",
            img.to_str().unwrap(),
        ],
    )?;
    let parts = partitions(&img)?;
    assert_eq!(parts.len(), 7);
    let key = dir.join("luks.key");
    std::fs::write(&key, b"0123456789abcdef0123456789abcdef")?;
    let key = key.to_str().unwrap().to_string();
    for &(n, start, size) in &parts {
        match n {
            1 => in_partition(&img, start, size, |d| {
                run("mkfs.ext4", &["-q", "-F", d]).map(drop)
            })?,
            2 => in_partition(&img, start, size, |d| {
                run("mkfs.xfs", &["-q", "-f", d]).map(drop)
            })?,
            3 => in_partition(&img, start, size, |d| run("mkswap", &[d]).map(drop))?,
            4 => in_partition(&img, start, size, |d| {
                run(
                    "cryptsetup",
                    &[
                        "luksFormat",
                        "--batch-mode",
                        "--pbkdf",
                        "pbkdf2",
                        "--pbkdf-force-iterations",
                        "1000",
                        "--key-file",
                        &key,
                        d,
                    ],
                )
                .map(drop)
            })?,
            5 => in_partition(&img, start, size, |d| {
                run(
                    "pvcreate",
                    &["--config", r#"devices{filter=["a|.*|"]}"#, "-ff", "-y", d],
                )
                .map(drop)
            })?,
            6 => in_partition(&img, start, size, |d| run("mkfs.vfat", &[d]).map(drop))?,
            7 => write_md090_superblock(&img, start, size)?,
            _ => unreachable!(),
        }
    }
    Ok((img, parts))
}

/// A 256 MiB MBR disk: ext4 on a primary partition, swap on a logical one.
fn dos_disk(dir: &Path) -> Result<(PathBuf, Vec<Part>)> {
    let img = image(dir, "dos.img", 256 * MIB)?;
    let script = "label: dos\n,64M,L\n,,E\n,32M,S\n";
    let mut child = std::process::Command::new("sfdisk")
        .args(["-q", img.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes())?;
    assert!(child.wait()?.success(), "sfdisk failed");
    let parts = partitions(&img)?;
    for &(n, start, size) in &parts {
        match n {
            1 => in_partition(&img, start, size, |d| {
                run("mkfs.ext4", &["-q", "-F", d]).map(drop)
            })?,
            5 => in_partition(&img, start, size, |d| run("mkswap", &[d]).map(drop))?,
            _ => {}
        }
    }
    Ok((img, parts))
}

/// Checks that the disk and every former partition look empty to wipefs and blkid.
fn assert_clean(img: &Path, disk: &Loop, parts: &[Part]) -> Result<()> {
    let mut problems = Vec::new();
    if let Err(e) = tools_find_nothing(disk.dev())? {
        problems.push(e);
    }
    for &(n, start, size) in parts {
        let part = Loop::region(img, start, size)?;
        if let Err(e) = tools_find_nothing(part.dev())? {
            problems.push(format!("partition {n}: {e}"));
        }
    }
    assert!(
        problems.is_empty(),
        "signatures remain:\n{}",
        problems.join("\n")
    );
    Ok(())
}

#[test]
#[ignore = "needs root and loop devices"]
fn metadata_wipe_of_gpt_disk_with_everything() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (img, parts) = gpt_disk(dir.path())?;
    let disk = Loop::whole(&img)?;
    let (_, before) = status("wipefs", &["--no-act", "--noheadings", disk.dev()])?;
    assert!(
        before.contains("gpt") && before.contains("PMBR"),
        "{before}"
    );

    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let mut o = opts(Mode::Metadata);
    o.progress = Some(Arc::new(move |p| sink.lock().unwrap().push(p)));
    let r = wipe_device(&disk.path, &o);
    println!("{}", serde_json::to_string_pretty(&r)?);
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(r.method.as_deref(), Some("metadata"));
    assert_eq!(r.partitions.len(), 7);
    let kinds: Vec<(&str, Option<i32>)> = r
        .erased
        .iter()
        .map(|s| (s.kind.as_str(), s.partition))
        .collect();
    for want in [
        ("ext4", Some(1)),
        ("xfs", Some(2)),
        ("swap", Some(3)),
        ("crypto_LUKS", Some(4)),
        ("LVM2_member", Some(5)),
        ("vfat", Some(6)),
        ("linux_raid_member", Some(7)),
        ("gpt", None),
        ("PMBR", None),
    ] {
        assert!(kinds.contains(&want), "{want:?} not erased: {kinds:?}");
    }
    // Both GPT headers: the primary at LBA 1 and the backup at the last LBA.
    let gpt: Vec<u64> = r
        .erased
        .iter()
        .filter(|s| s.kind == "gpt")
        .map(|s| s.offset)
        .collect();
    assert!(
        gpt.contains(&512) && gpt.contains(&((1 << 30) - 512)),
        "{gpt:?}"
    );
    assert!(
        r.notes.iter().any(|n| n.contains("BLKRRPART: EINVAL")),
        "{:?}",
        r.notes
    );
    assert!(events
        .lock()
        .unwrap()
        .last()
        .is_some_and(|p| p.phase == "done"));
    println!(
        "metadata wipe of a 1 GiB GPT disk with 7 partitions: {:.3} s",
        r.seconds
    );
    assert_clean(&img, &disk, &parts)
}

#[test]
#[ignore = "needs root and loop devices"]
fn metadata_wipe_of_dos_disk_and_whole_disk_filesystem() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (dos, dos_parts) = dos_disk(dir.path())?;
    let dos_disk = Loop::whole(&dos)?;
    let plain = image(dir.path(), "plain.img", 128 * MIB)?;
    let plain_disk = Loop::whole(&plain)?;
    run("mkfs.ext4", &["-q", "-F", plain_disk.dev()])?;

    let reports = wipe_devices(
        &[dos_disk.path.clone(), plain_disk.path.clone()],
        &opts(Mode::Metadata),
    );
    println!("{}", serde_json::to_string_pretty(&reports)?);
    assert!(reports.iter().all(|r| r.ok), "{reports:?}");
    let dos_kinds: Vec<&str> = reports[0].erased.iter().map(|s| s.kind.as_str()).collect();
    assert!(
        dos_kinds.contains(&"ext4") && dos_kinds.contains(&"swap") && dos_kinds.contains(&"dos"),
        "{dos_kinds:?}"
    );
    assert!(
        !reports[1].erased.is_empty() && reports[1].erased.iter().all(|s| s.location == "disk")
    );
    assert_clean(&dos, &dos_disk, &dos_parts)?;
    assert_clean(&plain, &plain_disk, &[])
}

#[test]
#[ignore = "needs root and loop devices"]
fn full_wipe_discard_path_reads_zero() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let img = image(dir.path(), "full.img", 64 * MIB)?;
    let disk = Loop::whole(&img)?;
    fill(disk.dev(), 64 * MIB)?;
    let r = wipe_device(&disk.path, &opts(Mode::Full));
    println!("{}", serde_json::to_string_pretty(&r)?);
    assert!(r.ok, "{:?}", r.error);
    // A loop device has no secure discard; its discard punches holes, which read zeroes.
    assert_eq!(r.method.as_deref(), Some("discard"));
    assert_eq!(r.attempts[0].method, FullMethod::SecureDiscard);
    assert_eq!(r.attempts[0].outcome, "failed");
    assert!(all_zero(disk.dev(), 64 * MIB)?);
    Ok(())
}

#[test]
#[ignore = "needs root and loop devices"]
fn full_wipe_forced_overwrite_and_write_zeroes_read_zero() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let img = image(dir.path(), "ow.img", 96 * MIB)?;
    let disk = Loop::whole(&img)?;
    for method in [FullMethod::ZeroOverwrite, FullMethod::WriteZeroes] {
        fill(disk.dev(), 96 * MIB)?;
        assert!(!all_zero(disk.dev(), 96 * MIB)?);
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let mut o = opts(Mode::Full);
        o.progress = Some(Arc::new(move |p| sink.lock().unwrap().push(p)));
        let r = wipe_device_with(&disk.path, &o, Some(&[method]));
        println!("{}", serde_json::to_string_pretty(&r)?);
        assert!(r.ok, "{:?}", r.error);
        assert_eq!(r.method.as_deref(), Some(method.name()));
        assert!(
            all_zero(disk.dev(), 96 * MIB)?,
            "{method} left non-zero data"
        );
        let ev = events.lock().unwrap();
        assert_eq!(ev.last().unwrap().bytes_done, 96 * MIB);
        println!("{method}: 96 MiB in {:.3} s", r.seconds);
    }
    Ok(())
}

#[test]
#[ignore = "needs root and loop devices"]
fn refuses_mounted_and_read_only_and_carries_on() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mounted_img = image(dir.path(), "mounted.img", 64 * MIB)?;
    let mounted = Loop::whole(&mounted_img)?;
    run("mkfs.ext4", &["-q", "-F", mounted.dev()])?;
    let _mount = Mount::new(mounted.dev())?;
    let ro_img = image(dir.path(), "ro.img", 16 * MIB)?;
    let ro = Loop::attach(&ro_img, &["-r"])?;
    let good_img = image(dir.path(), "good.img", 64 * MIB)?;
    let good = Loop::whole(&good_img)?;
    run("mkfs.ext4", &["-q", "-F", good.dev()])?;
    let missing = dir.path().join("no-such-disk");

    let devices = [
        mounted.path.clone(),
        ro.path.clone(),
        missing.clone(),
        good.path.clone(),
    ];
    for mode in [Mode::Metadata, Mode::Full] {
        let reports = wipe_devices(&devices, &opts(mode));
        println!("{}", serde_json::to_string_pretty(&reports)?);
        let err = |i: usize| reports[i].error.clone().unwrap_or_default();
        assert!(
            !reports[0].ok && err(0).contains("is mounted"),
            "{}",
            err(0)
        );
        assert!(
            !reports[1].ok && err(1).contains("is read-only"),
            "{}",
            err(1)
        );
        assert!(
            !reports[2].ok && err(2).contains("no-such-disk"),
            "{}",
            err(2)
        );
        assert!(reports[3].ok, "{}", err(3));
    }
    // The mounted filesystem is untouched.
    let (code, out) = status("blkid", &["-p", mounted.dev()])?;
    assert!(code == 0 && out.contains("ext4"), "{out}");
    assert!(tools_find_nothing(good.dev())?.is_ok());
    Ok(())
}

#[test]
#[ignore = "needs root and loop devices"]
fn exclusive_open_refuses_a_device_someone_holds() -> Result<()> {
    // The guard sees nothing (no mount, no holder), but another exclusive opener (as mkfs,
    // or a second wipe) makes O_EXCL fail with EBUSY.
    let dir = tempfile::tempdir()?;
    let img = image(dir.path(), "held.img", 16 * MIB)?;
    let disk = Loop::whole(&img)?;
    let _held = agent_sys::block::open(
        &disk.path,
        agent_sys::block::OpenMode {
            exclusive: true,
            ..Default::default()
        },
    )?;
    let r = wipe_device(&disk.path, &opts(Mode::Metadata));
    assert!(!r.ok);
    let e = r.error.unwrap();
    assert!(
        e.contains("read-write and exclusively") && e.contains("busy"),
        "{e}"
    );
    Ok(())
}

#[test]
#[ignore = "needs root and loop devices"]
fn metadata_wipe_finds_partitions_through_the_backup_gpt() -> Result<()> {
    // The primary GPT header (LBA 1) and the protective MBR are gone, as after a wipe that
    // stopped half-way; the backup header at the end of the disk still describes the
    // partitions, and their filesystems must still be found and erased.
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir()?;
    let img = image(dir.path(), "backup.img", 256 * MIB)?;
    run(
        "sgdisk",
        &[
            "-o",
            "-n",
            "1:2048:+64M",
            "-n",
            "2:0:+64M",
            img.to_str().unwrap(),
        ],
    )?;
    let parts = partitions(&img)?;
    for &(n, start, size) in &parts {
        in_partition(&img, start, size, |d| match n {
            1 => run("mkfs.ext4", &["-q", "-F", d]).map(drop),
            _ => run("mkswap", &[d]).map(drop),
        })?;
    }
    let f = std::fs::OpenOptions::new().write(true).open(&img)?;
    f.write_all_at(&[0u8; 1024], 0)?;
    f.sync_all()?;
    let disk = Loop::whole(&img)?;
    let r = wipe_device(&disk.path, &opts(Mode::Metadata));
    println!("{}", serde_json::to_string_pretty(&r)?);
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(
        r.partitions.len(),
        2,
        "backup GPT not used: {:?}",
        r.partitions
    );
    let kinds: Vec<&str> = r.erased.iter().map(|s| s.kind.as_str()).collect();
    assert!(
        kinds.contains(&"ext4") && kinds.contains(&"swap") && kinds.contains(&"gpt"),
        "{kinds:?}"
    );
    assert_clean(&img, &disk, &parts)
}

#[test]
#[ignore = "needs root and loop devices"]
fn timing_metadata_and_overwrite_on_one_gib() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (img, _) = gpt_disk(dir.path())?;
    let disk = Loop::whole(&img)?;
    let r = wipe_device(&disk.path, &opts(Mode::Metadata));
    assert!(r.ok, "{:?}", r.error);
    println!(
        "timing: metadata wipe, 1 GiB GPT disk with 7 partitions: {:.3} s",
        r.seconds
    );
    let r = wipe_device(&disk.path, &opts(Mode::Metadata));
    assert!(r.ok, "{:?}", r.error);
    println!(
        "timing: metadata wipe, 1 GiB empty disk: {:.3} s",
        r.seconds
    );
    let r = wipe_device_with(
        &disk.path,
        &opts(Mode::Full),
        Some(&[FullMethod::ZeroOverwrite]),
    );
    assert!(r.ok, "{:?}", r.error);
    println!(
        "timing: zero overwrite, 1 GiB loop device: {:.3} s ({:.0} MiB/s)",
        r.seconds,
        1024.0 / r.seconds
    );
    let r = wipe_device(&disk.path, &opts(Mode::Full));
    assert!(r.ok, "{:?}", r.error);
    println!(
        "timing: full wipe ({}), 1 GiB loop device: {:.3} s",
        r.method.unwrap(),
        r.seconds
    );
    Ok(())
}
