//! `write_image` against a local hyper server with fault injection, on regular-file targets
//! (allow_regular_file). Loop-device tests are in `loop_device.rs`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_image::http::FetchError;
use agent_image::{write_image, ChecksumSpec, ImageError, WriteRequest};
use common::*;

const MIB: usize = 1 << 20;

fn request(url: &str, checksum: &str, target: &std::path::Path) -> WriteRequest {
    let mut req = WriteRequest::new(url, checksum.parse::<ChecksumSpec>().unwrap(), target);
    req.guard.allow_regular_file = true;
    req.max_retries = 3;
    req.stall_timeout = Duration::from_secs(5);
    req
}

/// The full error chain on one line, as the CLI prints it.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn assert_head_zero(disk: &[u8]) {
    assert!(
        disk[..MIB].iter().all(|&b| b == 0),
        "the first MiB must be zero after a failed write"
    );
}

#[test]
fn raw_image_reads_back_exactly() {
    let image = Arc::new(pattern(5 * MIB + 123, 1));
    let srv = Server::http();
    srv.file("/disk.img", image.clone(), Faults::default());
    let target = target_file(8 * MIB, 0xAA);
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let mut req = request(&srv.url("/disk.img"), &sha256_hex(&image), target.path());
    req.progress = Some(Arc::new(move |p| ev.lock().unwrap().push(p)));
    let report = write_image(&req).unwrap();
    let disk = read(target.path());
    assert_eq!(&disk[..image.len()], &image[..]);
    assert!(disk[image.len()..].iter().all(|&b| b == 0xAA));
    assert_eq!(report.format, "raw");
    assert_eq!(report.bytes_downloaded, image.len() as u64);
    assert_eq!(report.disk_bytes, image.len() as u64);
    assert_eq!(report.resumes, 0);
    assert_eq!(report.checksum, sha256_hex(&image));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["checksumAlgo"], "sha256");
    let events = events.lock().unwrap();
    let phases: Vec<&str> = events.iter().map(|p| p.phase.as_str()).collect();
    assert!(phases.contains(&"downloading"), "{phases:?}");
    assert_eq!(phases.last(), Some(&"done"));
    assert!(events
        .iter()
        .all(|p| p.bytes_total == Some(image.len() as u64) && p.operation == "write-image"));
}

#[test]
fn image_smaller_than_a_mib_and_no_content_length() {
    let image = Arc::new(pattern(300_000, 2));
    let srv = Server::http();
    srv.file(
        "/small.img",
        image.clone(),
        Faults {
            no_length: true,
            ..Default::default()
        },
    );
    let target = target_file(4 * MIB, 0xAA);
    let req = request(&srv.url("/small.img"), &sha256_hex(&image), target.path());
    write_image(&req).unwrap();
    let disk = read(target.path());
    assert_eq!(&disk[..image.len()], &image[..]);
    // The held first MiB is written whole: image bytes over zeros.
    assert!(disk[image.len()..MIB].iter().all(|&b| b == 0));
    assert!(disk[MIB..].iter().all(|&b| b == 0xAA));
}

#[test]
fn dropped_connections_resume_with_range() {
    let image = Arc::new(pattern(9 * MIB + 7, 3));
    let srv = Server::http();
    let drops = vec![3 * MIB as u64 + 5, 7 * MIB as u64 + 11];
    srv.file(
        "/disk.img",
        image.clone(),
        Faults {
            drop_at: drops.clone(),
            etag: Some("\"v1\"".into()),
            ..Default::default()
        },
    );
    let target = target_file(10 * MIB, 0xAA);
    let req = request(&srv.url("/disk.img"), &sha256_hex(&image), target.path());
    let report = write_image(&req).unwrap();
    assert_eq!(&read(target.path())[..image.len()], &image[..]);
    assert_eq!(report.resumes, 2);
    let seen = srv.seen();
    let ranges: Vec<_> = seen.iter().map(|s| s.range.clone()).collect();
    assert_eq!(
        ranges,
        vec![
            None,
            Some(format!("bytes={}-", drops[0])),
            Some(format!("bytes={}-", drops[1]))
        ]
    );
    assert!(seen[1..]
        .iter()
        .all(|s| s.if_range.as_deref() == Some("\"v1\"")));
}

#[test]
fn repeated_drops_within_the_retry_budget() {
    let image = Arc::new(pattern(6 * MIB, 4));
    let srv = Server::http();
    let drops: Vec<u64> = (1..6).map(|i| (i * MIB) as u64 - 1000).collect();
    srv.file(
        "/disk.img",
        image.clone(),
        Faults {
            drop_at: drops,
            ..Default::default()
        },
    );
    let target = target_file(6 * MIB, 0xAA);
    let mut req = request(&srv.url("/disk.img"), &sha256_hex(&image), target.path());
    req.max_retries = 5;
    let report = write_image(&req).unwrap();
    assert_eq!(report.resumes, 5);
    assert_eq!(read(target.path()), *image);
}

#[test]
fn server_ignoring_range_fails_clearly() {
    let image = Arc::new(pattern(6 * MIB, 5));
    let srv = Server::http();
    srv.file(
        "/disk.img",
        image.clone(),
        Faults {
            no_range: true,
            drop_at: vec![2 * MIB as u64],
            ..Default::default()
        },
    );
    let target = target_file(8 * MIB, 0xAA);
    let req = request(&srv.url("/disk.img"), &sha256_hex(&image), target.path());
    let err = write_image(&req).unwrap_err();
    assert!(
        matches!(&err, ImageError::Download { source: FetchError::RangeIgnored(n), .. } if *n == 2 * MIB as u64),
        "{err:?}"
    );
    assert!(
        chain(&err).contains("ignored the Range request"),
        "{}",
        chain(&err)
    );
    assert_head_zero(&read(target.path()));
}

#[test]
fn stalled_server_fails_after_retries() {
    let image = Arc::new(pattern(6 * MIB, 6));
    let srv = Server::http();
    srv.file(
        "/disk.img",
        image.clone(),
        Faults {
            stall_at: Some(2 * MIB as u64),
            ..Default::default()
        },
    );
    let target = target_file(8 * MIB, 0xAA);
    let mut req = request(&srv.url("/disk.img"), &sha256_hex(&image), target.path());
    req.stall_timeout = Duration::from_millis(300);
    req.max_retries = 2;
    let started = std::time::Instant::now();
    let err = write_image(&req).unwrap_err();
    assert!(
        matches!(
            &err,
            ImageError::Download {
                source: FetchError::Stalled(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The two resumes asked for the stalled byte.
    let seen = srv.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen[1..]
        .iter()
        .all(|s| s.range.as_deref() == Some(&*format!("bytes={}-", 2 * MIB))));
    assert_head_zero(&read(target.path()));
}

#[test]
fn wrong_checksum_leaves_the_disk_unbootable() {
    let image = Arc::new(pattern(3 * MIB, 7));
    let srv = Server::http();
    srv.file("/disk.img", image.clone(), Faults::default());
    let target = target_file(4 * MIB, 0xAA);
    let wrong = sha256_hex(b"something else");
    let req = request(&srv.url("/disk.img"), &wrong, target.path());
    let err = write_image(&req).unwrap_err();
    match &err {
        ImageError::ChecksumMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &sha256_hex(&image));
        }
        e => panic!("{e:?}"),
    }
    assert_head_zero(&read(target.path()));
}

#[test]
fn truncated_download_fails() {
    let image = Arc::new(pattern(6 * MIB, 8));
    let srv = Server::http();
    srv.file(
        "/disk.img",
        image.clone(),
        Faults {
            truncate_at: Some(3 * MIB as u64 + 100),
            ..Default::default()
        },
    );
    let target = target_file(8 * MIB, 0xAA);
    let mut req = request(&srv.url("/disk.img"), &sha256_hex(&image), target.path());
    req.max_retries = 2;
    let err = write_image(&req).unwrap_err();
    let msg = chain(&err);
    assert!(msg.contains("503"), "{msg}");
    assert!(msg.contains(&srv.url("/disk.img")), "{msg}");
    assert_head_zero(&read(target.path()));
}

#[test]
fn image_larger_than_the_target_is_refused_before_writing() {
    let image = Arc::new(pattern(9 * MIB, 9));
    let srv = Server::http();
    srv.file("/disk.img", image.clone(), Faults::default());
    let target = target_file(8 * MIB, 0xAA);
    let req = request(&srv.url("/disk.img"), &sha256_hex(&image), target.path());
    let err = write_image(&req).unwrap_err();
    assert!(
        matches!(&err, ImageError::TooLarge { image_bytes, device_bytes, .. }
            if *image_bytes == 9 * MIB as u64 && *device_bytes == 8 * MIB as u64),
        "{err:?}"
    );
    // Content-Length said so before any byte was written: the target is untouched.
    assert!(read(target.path()).iter().all(|&b| b == 0xAA));
}

#[test]
fn image_larger_than_the_target_without_length_never_writes_past_the_end() {
    let image = Arc::new(pattern(9 * MIB, 10));
    let srv = Server::http();
    srv.file(
        "/disk.img",
        image.clone(),
        Faults {
            no_length: true,
            ..Default::default()
        },
    );
    let target = target_file(8 * MIB, 0xAA);
    let req = request(&srv.url("/disk.img"), &sha256_hex(&image), target.path());
    let err = write_image(&req).unwrap_err();
    assert!(matches!(&err, ImageError::TooLarge { .. }), "{err:?}");
    let disk = read(target.path());
    assert_eq!(disk.len(), 8 * MIB);
    assert_head_zero(&disk);
}

#[test]
fn unreachable_url_is_a_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = target_file(4 * MIB, 0xAA);
    let url = format!("http://127.0.0.1:{port}/disk.img");
    let mut req = request(&url, &sha256_hex(b"x"), target.path());
    req.max_retries = 1;
    let err = write_image(&req).unwrap_err();
    assert!(
        matches!(
            &err,
            ImageError::Download {
                source: FetchError::Connect(_),
                ..
            }
        ),
        "{err:?}"
    );
    let msg = chain(&err);
    assert!(
        msg.starts_with(&format!("downloading {url}: cannot connect")),
        "{msg}"
    );
    assert!(read(target.path()).iter().all(|&b| b == 0xAA));
}

#[test]
fn http_errors_say_the_status() {
    let srv = Server::http();
    srv.route("/500", Route::Status(500));
    let target = target_file(4 * MIB, 0xAA);
    let err = write_image(&request(
        &srv.url("/missing"),
        &sha256_hex(b"x"),
        target.path(),
    ))
    .unwrap_err();
    assert!(
        chain(&err).contains("HTTP 404 Not Found"),
        "{}",
        chain(&err)
    );
    assert_eq!(srv.seen().len(), 1, "404 is not retried");
    let mut req = request(&srv.url("/500"), &sha256_hex(b"x"), target.path());
    req.max_retries = 2;
    let err = write_image(&req).unwrap_err();
    assert!(chain(&err).contains("HTTP 500"), "{}", chain(&err));
    assert_eq!(srv.seen().len(), 4, "500 is retried");
    assert!(read(target.path()).iter().all(|&b| b == 0xAA));
}

#[test]
fn redirects_are_followed() {
    let image = Arc::new(pattern(2 * MIB, 11));
    let srv = Server::http();
    srv.file("/real/disk.img", image.clone(), Faults::default());
    srv.route("/a", Route::Redirect("/b".into()));
    srv.route("/b", Route::Redirect(srv.url("/real/disk.img")));
    srv.route("/loop", Route::Redirect("/loop".into()));
    let target = target_file(2 * MIB, 0xAA);
    write_image(&request(&srv.url("/a"), &sha256_hex(&image), target.path())).unwrap();
    assert_eq!(read(target.path()), *image);
    let err = write_image(&request(
        &srv.url("/loop"),
        &sha256_hex(&image),
        target.path(),
    ))
    .unwrap_err();
    assert!(chain(&err).contains("redirects"), "{}", chain(&err));
}

#[test]
fn only_http_and_https() {
    let target = target_file(MIB, 0xAA);
    for url in ["file:///etc/passwd", "ftp://127.0.0.1/x", "/etc/passwd"] {
        let err = write_image(&request(url, &sha256_hex(b"x"), target.path())).unwrap_err();
        assert!(matches!(err, ImageError::Url { .. }), "{url}: {err:?}");
    }
    let err = write_image(&request("file:///x", &sha256_hex(b"x"), target.path())).unwrap_err();
    assert_eq!(
        chain(&err),
        "cannot fetch image file:///x: unsupported URL scheme \"file\": only http:// and https:// are fetched"
    );
}

#[test]
fn md5_only_when_allowed() {
    use md5::Digest;
    let image = Arc::new(pattern(2 * MIB, 12));
    let md5: String = md5::Md5::digest(&image[..])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let srv = Server::http();
    srv.file("/disk.img", image.clone(), Faults::default());
    srv.file(
        "/MD5SUMS",
        Arc::new(format!("{md5}  disk.img\n").into_bytes()),
        Faults::default(),
    );
    let target = target_file(2 * MIB, 0xAA);
    for spec in [format!("md5:{md5}"), md5.clone(), srv.url("/MD5SUMS")] {
        let mut req = request(&srv.url("/disk.img"), &spec, target.path());
        let before = read(target.path());
        let err = write_image(&req).unwrap_err();
        assert!(matches!(err, ImageError::Md5NotAllowed), "{spec}: {err:?}");
        assert_eq!(
            read(target.path()),
            before,
            "refused before touching the target"
        );
        req.allow_md5 = true;
        let report = write_image(&req).unwrap();
        assert_eq!(report.checksum, md5);
    }
    assert_eq!(read(target.path()), *image);
}

#[test]
fn checksum_files() {
    use sha2::Digest;
    let image = Arc::new(pattern(2 * MIB, 13));
    let sha512: String = sha2::Sha512::digest(&image[..])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let sha256 = sha256_hex(&image);
    let srv = Server::http();
    srv.file("/images/disk.img", image.clone(), Faults::default());
    let gnu = format!("{}  other.img\n{sha256} *disk.img\n", "0".repeat(64));
    let bsd = format!(
        "SHA512 (other.img) = {}\nSHA512 (disk.img) = {sha512}\n",
        "1".repeat(128)
    );
    srv.file("/SHA256SUMS", Arc::new(gnu.into_bytes()), Faults::default());
    srv.file("/CHECKSUM", Arc::new(bsd.into_bytes()), Faults::default());
    srv.file(
        "/disk.img.sha256",
        Arc::new(format!("{sha256}\n").into_bytes()),
        Faults::default(),
    );
    srv.file(
        "/WRONG",
        Arc::new(format!("{sha256}  not-it.img\n").into_bytes()),
        Faults::default(),
    );
    let target = target_file(2 * MIB, 0xAA);
    let url = srv.url("/images/disk.img");
    for spec in [
        format!("sha256:{}", srv.url("/SHA256SUMS")),
        srv.url("/SHA256SUMS"),
        srv.url("/CHECKSUM"),
        format!("sha512:{}", srv.url("/CHECKSUM")),
        srv.url("/disk.img.sha256"),
    ] {
        let report = write_image(&request(&url, &spec, target.path())).unwrap();
        assert!(
            report.checksum == sha256 || report.checksum == sha512,
            "{spec}"
        );
    }
    assert_eq!(read(target.path()), *image);

    let fresh = target_file(2 * MIB, 0xAA);
    let err = write_image(&request(&url, &srv.url("/WRONG"), fresh.path())).unwrap_err();
    assert!(
        chain(&err).contains("has no entry for \"disk.img\""),
        "{}",
        chain(&err)
    );
    let err = write_image(&request(&url, &srv.url("/nope"), fresh.path())).unwrap_err();
    assert!(matches!(err, ImageError::ChecksumFetch { .. }), "{err:?}");
    // Checksum trouble is found before the target is touched.
    assert!(read(fresh.path()).iter().all(|&b| b == 0xAA));
}

#[test]
fn regular_files_only_when_allowed() {
    let image = Arc::new(pattern(MIB, 14));
    let srv = Server::http();
    srv.file("/disk.img", image.clone(), Faults::default());
    let target = target_file(2 * MIB, 0xAA);
    let mut req = request(&srv.url("/disk.img"), &sha256_hex(&image), target.path());
    req.guard.allow_regular_file = false;
    let err = write_image(&req).unwrap_err();
    assert!(matches!(err, ImageError::Guard { .. }), "{err:?}");
    assert!(chain(&err).contains("not a block device"));
}

#[test]
fn https_with_a_custom_ca() {
    let pki = test_pki();
    let image = Arc::new(pattern(3 * MIB, 15));
    let srv = Server::https(pki.server);
    srv.file("/disk.img", image.clone(), Faults::default());
    srv.file(
        "/SHA256SUMS",
        Arc::new(format!("{}  disk.img\n", sha256_hex(&image)).into_bytes()),
        Faults::default(),
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let target = target_file(4 * MIB, 0xAA);

    // Without the CA (built-in roots): a TLS error, not retried, target untouched.
    let mut req = request(&srv.url("/disk.img"), &sha256_hex(&image), target.path());
    let err = write_image(&req).unwrap_err();
    assert!(
        matches!(
            &err,
            ImageError::Download {
                source: FetchError::Tls(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        chain(&err).contains("TLS handshake failed"),
        "{}",
        chain(&err)
    );
    assert!(read(target.path()).iter().all(|&b| b == 0xAA));

    req.ca_bundle = Some(ca.clone());
    req.checksum = srv.url("/SHA256SUMS").parse().unwrap();
    write_image(&req).unwrap();
    assert_eq!(&read(target.path())[..image.len()], &image[..]);

    let bad = dir.path().join("empty.pem");
    std::fs::write(&bad, "not a pem").unwrap();
    req.ca_bundle = Some(bad);
    let err = write_image(&req).unwrap_err();
    assert!(matches!(err, ImageError::Tls(_)), "{err:?}");
}

/// A qcow2 that `qemu-img resize` and `qemu-io` left with its L1 table after the data it maps
/// (what a running VM's image looks like), and the disk it stands for (qemu-img's own raw
/// conversion).
fn qcow2_needing_random_access() -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vm.qcow2");
    let raw = dir.path().join("vm.raw");
    let p = img.to_str().unwrap();
    let run = |cmd: &str, args: &[&str]| {
        let st = std::process::Command::new(cmd).args(args).status().unwrap();
        assert!(st.success(), "{cmd} {args:?}");
    };
    // Small clusters, so growing the disk moves the L1 table to the end of the file.
    let small = [
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4096",
        p,
        "1M",
    ];
    run("qemu-img", &small);
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x5a 8192 600000", p],
    );
    run("qemu-img", &["resize", "-q", p, "24M"]);
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0xa5 20000000 70000", p],
    );
    run(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "qcow2",
            "-O",
            "raw",
            p,
            raw.to_str().unwrap(),
        ],
    );
    (std::fs::read(&img).unwrap(), std::fs::read(&raw).unwrap())
}

#[test]
fn qcow2_needing_random_access_is_completed_with_range_requests() {
    let (image, disk_image) = qcow2_needing_random_access();
    let image = Arc::new(image);
    let srv = Server::http();
    let etag = "\"v1\"".to_string();
    srv.file(
        "/vm.qcow2",
        image.clone(),
        Faults {
            etag: Some(etag.clone()),
            ..Default::default()
        },
    );
    let target = target_file(32 * MIB, 0xAA);
    let req = request(&srv.url("/vm.qcow2"), &sha256_hex(&image), target.path());
    let report = write_image(&req).unwrap();
    assert_eq!(report.format, "qcow2");
    assert!(report.refetched_bytes > 0, "{report:?}");
    let disk = read(target.path());
    assert!(
        disk[..disk_image.len()] == disk_image[..],
        "disk differs from the image"
    );
    // The refetches were bounded Range requests, conditional on the download's ETag.
    let seen = srv.seen();
    let ranged: Vec<_> = seen.iter().filter(|s| s.range.is_some()).collect();
    assert!(!ranged.is_empty());
    for s in ranged {
        let r = s.range.as_deref().unwrap();
        assert!(r.starts_with("bytes=") && !r.ends_with('-'), "{r}");
        assert_eq!(s.if_range.as_deref(), Some(etag.as_str()));
    }
}

#[test]
fn other_bytes_on_a_range_request_fail_before_anything_is_written() {
    let (image, _) = qcow2_needing_random_access();
    let image = Arc::new(image);
    let srv = Server::http();
    srv.file(
        "/vm.qcow2",
        image.clone(),
        Faults {
            lie_in_ranges: true,
            ..Default::default()
        },
    );
    let target = target_file(32 * MIB, 0xAA);
    let req = request(&srv.url("/vm.qcow2"), &sha256_hex(&image), target.path());
    let err = write_image(&req).unwrap_err();
    let msg = chain(&err);
    assert!(
        matches!(
            err,
            ImageError::Download {
                source: FetchError::RangeMismatch { .. },
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("differ from what the download sent"), "{msg}");
    // The L1 table is the first thing refetched, so no image byte was written: the disk is
    // untouched (a failure after the first write leaves its first MiB zero instead).
    assert!(read(target.path()).iter().all(|&b| b == 0xAA));
}
