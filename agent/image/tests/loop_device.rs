//! `write_image` onto real loop devices (O_DIRECT, O_EXCL, BLKZEROOUT), with images made by
//! the real tools (zstd, gzip, xz, qemu-img). Needs root: run with `--ignored`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use agent_image::{write_image, ImageError, WriteRequest};
use common::*;

const MIB: usize = 1 << 20;

/// A loop device over a file in a temporary directory on a real filesystem.
struct Loop {
    dev: PathBuf,
    _lo: tests::loopdev::Loop,
    _dir: tempfile::TempDir,
}

impl Loop {
    fn new(len: usize, fill: u8, sector_size: u32) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ferrox-image-test")
            .tempdir_in("/var/tmp")
            .unwrap();
        let backing = dir.path().join("disk");
        std::fs::write(&backing, vec![fill; len]).unwrap();
        let lo =
            tests::loopdev::Loop::attach(&backing, &["--sector-size", &sector_size.to_string()])
                .unwrap();
        Self {
            dev: lo.path.clone(),
            _lo: lo,
            _dir: dir,
        }
    }

    fn read(&self) -> Vec<u8> {
        std::fs::read(&self.dev).unwrap()
    }
}

fn request(url: &str, image: &[u8], dev: &Path) -> WriteRequest {
    let mut req = WriteRequest::new(url, sha256_hex(image).parse().unwrap(), dev);
    req.max_retries = 2;
    req.stall_timeout = Duration::from_secs(10);
    req
}

/// A raw disk with data, long zero runs and an unaligned tail.
fn raw_disk() -> Vec<u8> {
    let mut d = pattern(20 * MIB + 1536, 42);
    d[3 * MIB..9 * MIB].fill(0);
    d[12 * MIB + 4096..15 * MIB].fill(0);
    d[16 * MIB + 700..16 * MIB + 5000].fill(0);
    d
}

/// Runs `tool args... input` and returns the file it wrote.
fn convert(raw: &[u8], make: impl Fn(&Path, &Path) -> Command) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("disk.raw");
    let output = dir.path().join("disk.out");
    std::fs::write(&input, raw).unwrap();
    let status = make(&input, &output).status().unwrap();
    assert!(status.success());
    std::fs::read(&output).unwrap()
}

fn shell(script: &str, input: &Path, output: &Path) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script).arg("sh").arg(input).arg(output);
    c
}

fn write_and_compare(raw: &[u8], served: Vec<u8>, expect_format: &str, sector_size: u32) {
    let lo = Loop::new(24 * MIB, 0xAA, sector_size);
    let srv = Server::http();
    let served = Arc::new(served);
    srv.file(
        "/disk",
        served.clone(),
        Faults {
            drop_at: vec![served.len() as u64 / 2],
            ..Default::default()
        },
    );
    let report = write_image(&request(&srv.url("/disk"), &served, &lo.dev)).unwrap();
    assert_eq!(report.format, expect_format);
    assert_eq!(report.resumes, 1);
    if expect_format != "qcow2" {
        // The 64 KiB-aligned stretches of raw_disk's zero runs are zeroed, not written:
        // [3, 9) MiB whole, [12 MiB + 64 KiB, 15 MiB).
        assert_eq!(report.zeroed_bytes, (9 * MIB - 64 * 1024) as u64);
    }
    let disk = lo.read();
    assert!(
        disk[..raw.len()] == raw[..],
        "{expect_format}: disk differs from the image"
    );
    if expect_format != "qcow2" {
        assert!(disk[raw.len()..].iter().all(|&b| b == 0xAA));
    }
}

#[test]
#[ignore = "needs root and loop devices"]
fn raw_on_loop_devices() {
    let raw = raw_disk();
    write_and_compare(&raw, raw.clone(), "raw", 512);
    // 4 KiB logical blocks: the unaligned tail is read, merged and written back.
    write_and_compare(&raw, raw.clone(), "raw", 4096);
}

#[test]
#[ignore = "needs root and loop devices"]
fn compressed_images_on_loop_devices() {
    let raw = raw_disk();
    let zst = convert(&raw, |i, o| shell("zstd -q -3 -o \"$2\" \"$1\"", i, o));
    write_and_compare(&raw, zst, "zstd", 512);
    let gz = convert(&raw, |i, o| shell("gzip -c \"$1\" > \"$2\"", i, o));
    write_and_compare(&raw, gz, "gzip", 512);
    let xz = convert(&raw, |i, o| shell("xz -T1 -c \"$1\" > \"$2\"", i, o));
    write_and_compare(&raw, xz, "xz", 4096);
}

#[test]
#[ignore = "needs root and loop devices"]
fn qcow2_images_on_loop_devices() {
    let raw = raw_disk();
    for (opts, sector) in [
        ("", 512),
        ("-o cluster_size=512", 512),
        ("-o cluster_size=512", 4096),
        ("-c", 512),
    ] {
        let script = format!("qemu-img convert -q -f raw -O qcow2 {opts} \"$1\" \"$2\"");
        let q = convert(&raw, |i, o| shell(&script, i, o));
        // The 0xAA fill must be zeroed where the image has unallocated clusters.
        write_and_compare(&raw, q, "qcow2", sector);
    }
}

#[test]
#[ignore = "needs root and loop devices"]
fn failures_on_a_loop_device() {
    let raw = raw_disk();
    let srv = Server::http();
    srv.file("/disk", Arc::new(raw.clone()), Faults::default());

    // Wrong checksum: written, but the first MiB stays zero.
    let lo = Loop::new(24 * MIB, 0xAA, 512);
    let mut req = request(&srv.url("/disk"), b"not the image", &lo.dev);
    let err = write_image(&req).unwrap_err();
    assert!(
        matches!(err, ImageError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    assert!(lo.read()[..MIB].iter().all(|&b| b == 0));

    // Too large: refused from Content-Length, the device untouched.
    let small = Loop::new(16 * MIB, 0xAA, 512);
    req = request(&srv.url("/disk"), &raw, &small.dev);
    let err = write_image(&req).unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { .. }), "{err:?}");
    assert!(small.read().iter().all(|&b| b == 0xAA));

    // Held open exclusively elsewhere (as when mounted): O_EXCL refuses.
    let held = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_excl()
        .open(&lo.dev)
        .unwrap();
    req = request(&srv.url("/disk"), &raw, &lo.dev);
    let err = write_image(&req).unwrap_err();
    assert!(
        matches!(err, ImageError::Open { .. } | ImageError::Guard { .. }),
        "{err:?}"
    );
    drop(held);
}

trait ExclExt {
    fn custom_flags_excl(&mut self) -> &mut Self;
}

impl ExclExt for std::fs::OpenOptions {
    fn custom_flags_excl(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        // O_EXCL on a block device: an exclusive claim, like a mount's.
        self.custom_flags(0o200)
    }
}
