//! `write_config_drive` on real loop devices, against the real tools: tables made by
//! `sgdisk`/`sfdisk` (as a whole-disk image carries them: a 64 MiB image written to the
//! start of a 256 MiB disk), a FAT filesystem made by `mkfs.vfat` and `mcopy`, and the
//! result judged by `sgdisk -v`, `sgdisk -i`, `sfdisk -d`, `blkid -p` and `mtype` on an
//! offset loop device over the new partition (this kernel does not scan loop partitions).
//! Needs root: run with `--ignored` (hack/test.sh does).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use agent_image::configdrive::{
    write_config_drive, ConfigDriveError, PlanError, TableKind, PARTITION_BYTES,
};
use base64::Engine as _;
use sha2::Digest as _;
use tests::loopdev::Loop;
use tests::run;

const MIB: u64 = 1 << 20;
const META: &str =
    r#"{"uuid": "6a1c5b2e-0f3d-4c1e-9b7a-5d2e8f4a1c33", "local-hostname": "node-7"}"#;
const USER: &str = "#cloud-config\nhostname: node-7\n";

fn need_root_and(tools: &[&str]) {
    // /proc/self/status says who we are (no libc call needed).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid_root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"));
    assert!(uid_root, "needs root (loop devices)");
    for t in tools {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "{t} is missing (hack/deps.sh installs it)");
    }
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ferrox-configdrive")
        .tempdir_in("/var/tmp")
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A config drive made by the real tools: `mkfs.vfat -n config-2`, `mmd`, `mcopy`; then
/// gzip + base64 as Ironic sends it.
fn config_drive(dir: &Path) -> (Vec<u8>, String) {
    let img = dir.join("cd.img");
    run("mkfs.vfat", &["-n", "config-2", "-C", s(&img), "2048"]).unwrap();
    run("mmd", &["-i", s(&img), "::openstack", "::openstack/latest"]).unwrap();
    for (name, body) in [("meta_data.json", META), ("user_data", USER)] {
        let f = dir.join(name);
        std::fs::write(&f, body).unwrap();
        let dest = format!("::openstack/latest/{name}");
        run("mcopy", &["-i", s(&img), s(&f), &dest]).unwrap();
    }
    let fs = std::fs::read(&img).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&fs).unwrap();
    let enc = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    (fs, enc)
}

/// A 256 MiB disk file whose first bytes are `image` (dd of a whole-disk image).
fn disk_with(dir: &Path, image: &Path, disk_size: u64) -> PathBuf {
    let disk = dir.join("disk");
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len(disk_size).unwrap();
    drop(f);
    run(
        "dd",
        &[
            &format!("if={}", s(image)),
            &format!("of={}", s(&disk)),
            "bs=1M",
            "conv=notrunc,fsync",
            "status=none",
        ],
    )
    .unwrap();
    disk
}

fn stdout(cmd: &str, args: &[&str]) -> String {
    String::from_utf8(run(cmd, args).unwrap().stdout).unwrap()
}

/// The new partition, seen through an offset loop device: blkid finds a vfat labelled
/// config-2 and mtools reads our files back from it.
fn check_partition(disk: &Path, start: u64, size: u64) {
    let part = Loop::region(disk, start, size).unwrap();
    let probe = stdout("blkid", &["-p", "-o", "export", part.dev()]);
    assert!(probe.contains("LABEL=config-2\n"), "{probe}");
    assert!(probe.contains("TYPE=vfat\n"), "{probe}");
    let md = stdout(
        "mtype",
        &["-i", part.dev(), "::openstack/latest/meta_data.json"],
    );
    assert_eq!(md, META);
    let ud = stdout("mtype", &["-i", part.dev(), "::openstack/latest/user_data"]);
    assert_eq!(ud, USER);
}

fn sha(path: &Path) -> Vec<u8> {
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[test]
#[ignore = "needs root and sgdisk, blkid, mkfs.vfat, mtools: run by hack/test.sh"]
fn gpt_image_gets_a_config_drive_at_the_disk_end() {
    need_root_and(&["sgdisk", "blkid", "mkfs.vfat", "mcopy", "mtype"]);
    let dir = tmpdir();
    let (fs, enc) = config_drive(dir.path());
    let image = dir.path().join("image");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    run(
        "sgdisk",
        &["-o", "-n", "1:2048:+40M", "-c", "1:root", s(&image)],
    )
    .unwrap();
    let disk = disk_with(dir.path(), &image, 256 * MIB);
    // Stale bytes where the partition will be: a signature left there would make blkid doubt
    // the config drive, so all of it after the filesystem must read back as zeros.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.write_all_at(&vec![0xa5u8; (191 * MIB) as usize], 64 * MIB)
            .unwrap();
    }
    let lo = Loop::whole(&disk).unwrap();

    let part = write_config_drive(&lo.path, &enc).unwrap();
    assert_eq!(
        (part.table, part.number, part.reused),
        (TableKind::Gpt, 2, false)
    );
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&disk).unwrap();
        let mut rest = vec![1u8; (part.size_bytes - fs.len() as u64) as usize];
        f.read_exact_at(&mut rest, part.start_bytes + fs.len() as u64)
            .unwrap();
        assert!(
            rest.iter().all(|&b| b == 0),
            "the partition after the filesystem is zeroed"
        );
        let mut head = vec![0u8; fs.len()];
        f.read_exact_at(&mut head, part.start_bytes).unwrap();
        assert!(head == fs, "the filesystem is written whole");
    }
    assert_eq!(part.image_bytes, fs.len() as u64);
    assert!(part.size_bytes >= PARTITION_BYTES);

    let verify = stdout("sgdisk", &["-v", lo.dev()]);
    assert!(verify.contains("No problems found"), "{verify}");
    let table = stdout("sgdisk", &["-p", lo.dev()]);
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with("2 "))
        .unwrap_or_else(|| panic!("no partition 2:\n{table}"));
    assert!(line.ends_with("config-2"), "{line}");
    let info = stdout("sgdisk", &["-i", "2", lo.dev()]);
    let sectors = 256 * MIB / 512;
    for want in [
        "Partition GUID code: 0FC63DAF-8483-4772-8E79-3D69D8477DE4".to_string(),
        format!(
            "Partition unique GUID: {}",
            part.unique_guid.clone().unwrap()
        ),
        format!("First sector: {} ", part.start_bytes / 512),
        // Last usable LBA: the backup array (32 sectors) and header take the last 33.
        format!("Last sector: {} ", sectors - 34),
        "Partition name: 'config-2'".to_string(),
    ] {
        assert!(info.contains(&want), "{want:?} not in:\n{info}");
    }
    // Partition 1 is untouched.
    let p1 = stdout("sgdisk", &["-i", "1", lo.dev()]);
    assert!(p1.contains("First sector: 2048 "), "{p1}");
    assert!(p1.contains("Partition name: 'root'"), "{p1}");
    drop(lo);
    check_partition(&disk, part.start_bytes, part.size_bytes);
}

#[test]
#[ignore = "needs root and sfdisk, blkid, mkfs.vfat, mtools: run by hack/test.sh"]
fn mbr_image_gets_a_primary_config_drive_partition() {
    need_root_and(&["sfdisk", "blkid", "mkfs.vfat", "mcopy", "mtype"]);
    let dir = tmpdir();
    let (_, enc) = config_drive(dir.path());
    let image = dir.path().join("image");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    let script = dir.path().join("layout");
    std::fs::write(&script, "label: dos\nstart=2048, size=81920, type=83\n").unwrap();
    run(
        "sh",
        &["-c", &format!("sfdisk -q {} < {}", s(&image), s(&script))],
    )
    .unwrap();
    let disk = disk_with(dir.path(), &image, 256 * MIB);
    let lo = Loop::whole(&disk).unwrap();

    let part = write_config_drive(&lo.path, &enc).unwrap();
    assert_eq!((part.table, part.number), (TableKind::Mbr, 2));
    assert_eq!(part.unique_guid, None);

    let dump = stdout("sfdisk", &["-d", lo.dev()]);
    let p2 = format!(
        "{}p2 : start={:>12}, size={:>12}, type=c",
        lo.dev(),
        part.start_bytes / 512,
        part.size_bytes / 512
    );
    assert!(dump.contains(&p2), "{p2:?} not in:\n{dump}");
    assert!(
        dump.contains(&format!(
            "{}p1 : start=        2048, size=       81920, type=83",
            lo.dev()
        )),
        "{dump}"
    );
    assert_eq!(
        part.start_bytes + part.size_bytes,
        256 * MIB,
        "ends at the disk's end"
    );
    let verify = run("sfdisk", &["-V", lo.dev()]);
    assert!(verify.is_ok(), "{verify:?}");
    drop(lo);
    check_partition(&disk, part.start_bytes, part.size_bytes);
}

#[test]
#[ignore = "needs root and sgdisk, mkfs.vfat, mtools: run by hack/test.sh"]
fn a_disk_without_room_or_table_is_refused_and_left_unchanged() {
    need_root_and(&["sgdisk", "mkfs.vfat", "mcopy"]);
    let dir = tmpdir();
    let (_, enc) = config_drive(dir.path());

    // GPT whose partition fills the disk.
    let image = dir.path().join("image");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(128 * MIB)
        .unwrap();
    run("sgdisk", &["-o", "-n", "1:2048:0", s(&image)]).unwrap();
    let disk = disk_with(dir.path(), &image, 128 * MIB);
    let before = sha(&disk);
    {
        let lo = Loop::whole(&disk).unwrap();
        let err = write_config_drive(&lo.path, &enc).unwrap_err();
        assert!(
            matches!(
                &err,
                ConfigDriveError::Plan {
                    source: PlanError::NoRoom { .. },
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert_eq!(sha(&disk), before, "disk changed");

    // No partition table at all: a bare filesystem on the whole disk.
    let bare = dir.path().join("bare");
    run("mkfs.vfat", &["-C", s(&bare), &(128 * 1024).to_string()]).unwrap();
    let before = sha(&bare);
    {
        let lo = Loop::whole(&bare).unwrap();
        let err = write_config_drive(&lo.path, &enc).unwrap_err();
        assert!(
            matches!(
                &err,
                ConfigDriveError::Plan {
                    source: PlanError::NoPartitionTable,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert_eq!(sha(&bare), before, "disk changed");
}

/// 4 KiB logical blocks (4Kn disks, many NVMe namespaces): every LBA in the tables counts
/// 4096 bytes, the entry array takes 4 sectors, and sgdisk on such a device agrees.
#[test]
#[ignore = "needs root and sgdisk, blkid, mkfs.vfat, mtools: run by hack/test.sh"]
fn gpt_on_4k_sectors() {
    need_root_and(&["sgdisk", "blkid", "mkfs.vfat", "mcopy", "mtype"]);
    let dir = tmpdir();
    let (_, enc) = config_drive(dir.path());
    let image = dir.path().join("image");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    {
        // sgdisk takes the sector size from the device, so the table is made on one.
        let lo = Loop::attach(&image, &["--sector-size", "4096"]).unwrap();
        run("sgdisk", &["-o", "-n", "1:256:+40M", lo.dev()]).unwrap();
    }
    let disk = disk_with(dir.path(), &image, 256 * MIB);
    let lo = Loop::attach(&disk, &["--sector-size", "4096"]).unwrap();
    let part = write_config_drive(&lo.path, &enc).unwrap();
    assert_eq!((part.table, part.number), (TableKind::Gpt, 2));
    let verify = stdout("sgdisk", &["-v", lo.dev()]);
    assert!(verify.contains("No problems found"), "{verify}");
    let info = stdout("sgdisk", &["-i", "2", lo.dev()]);
    let sectors = 256 * MIB / 4096;
    for want in [
        format!("First sector: {} ", part.start_bytes / 4096),
        format!("Last sector: {} ", sectors - 6),
        "Partition name: 'config-2'".to_string(),
    ] {
        assert!(info.contains(&want), "{want:?} not in:\n{info}");
    }
    drop(lo);
    check_partition(&disk, part.start_bytes, part.size_bytes);
}
