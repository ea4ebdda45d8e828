//! The `ferrox-agent` binary as operators and the controller use it: what goes to stdout, the
//! exit status, the errors. Tests marked `#[ignore]` need root, loop devices and the real disk
//! tools; `hack/test.sh` runs them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrox-agent"))
}

fn run(args: &[&str]) -> Output {
    agent().args(args).output().expect("ferrox-agent runs")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `spec.hardware` schema of metal3's HardwareData CRD, the compatibility contract.
fn hardware_schema() -> serde_yaml::Value {
    let path = repo().join("../shared/metal3/metal3.io_hardwaredata.yaml");
    let crd: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(&path).expect("metal3 CRD present")).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["hardware"]
        .clone()
}

/// Checks `v` against an OpenAPI v3 schema fragment: every key known, every type right, enums
/// respected. Returns the problems found, with their JSON paths.
fn validate(v: &Value, schema: &serde_yaml::Value, path: &str, errs: &mut Vec<String>) {
    let ty = schema["type"].as_str().unwrap_or("");
    match v {
        Value::Object(map) => {
            if ty != "object" {
                errs.push(format!("{path}: object where schema says {ty}"));
                return;
            }
            for (k, val) in map {
                let sub = &schema["properties"][k.as_str()];
                if sub.is_null() {
                    errs.push(format!("{path}.{k}: not in metal3's schema"));
                } else {
                    validate(val, sub, &format!("{path}.{k}"), errs);
                }
            }
        }
        Value::Array(items) => {
            if ty != "array" {
                errs.push(format!("{path}: array where schema says {ty}"));
                return;
            }
            for (i, item) in items.iter().enumerate() {
                validate(item, &schema["items"], &format!("{path}[{i}]"), errs);
            }
        }
        Value::String(s) => {
            if ty != "string" {
                errs.push(format!("{path}: string where schema says {ty}"));
            }
            if let Some(allowed) = schema["enum"].as_sequence() {
                if !allowed.iter().any(|a| a.as_str() == Some(s)) {
                    errs.push(format!("{path}: {s:?} not one of {allowed:?}"));
                }
            }
        }
        Value::Number(n) => {
            let ok = match ty {
                "integer" => n.is_i64() || n.is_u64(),
                "number" => true,
                _ => false,
            };
            if !ok {
                errs.push(format!("{path}: number {n} where schema says {ty}"));
            }
        }
        Value::Bool(_) if ty != "boolean" => {
            errs.push(format!("{path}: boolean where schema says {ty}"))
        }
        Value::Null => errs.push(format!("{path}: null is not allowed by metal3's schema")),
        _ => {}
    }
}

fn assert_fits_metal3(json: &Value) {
    let mut errs = Vec::new();
    validate(json, &hardware_schema(), "hardware", &mut errs);
    assert!(
        errs.is_empty(),
        "inspect output does not fit HardwareData spec.hardware:\n{}",
        errs.join("\n")
    );
}

#[test]
fn schema_validator_catches_what_metal3_rejects() {
    // The validator itself must be able to fail, or the fit tests below prove nothing.
    let bad =
        serde_json::json!({"cpu": {"count": "2"}, "storage": [{"type": "FLOPPY"}], "gpus": []});
    let mut errs = Vec::new();
    validate(&bad, &hardware_schema(), "hardware", &mut errs);
    assert_eq!(errs.len(), 3, "{errs:?}");
}

#[test]
fn inspect_prints_only_metal3_hardware_details_on_stdout() {
    let out = run(&["inspect"]);
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_fits_metal3(&json);
    let cpus = fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    assert_eq!(json["cpu"]["count"].as_u64(), Some(cpus as u64));
    assert!(json["ramMebibytes"].as_u64().unwrap() > 0);
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(json["hostname"].as_str(), Some(hostname.trim()));
}

#[test]
fn inspect_full_keeps_metal3_document_separate_from_extras() {
    let out = run(&["inspect", "--full"]);
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_fits_metal3(&json["hardware"]);
    assert!(json["ferroxExtra"]["boot"].is_object());
    let plain: Value = serde_json::from_slice(&run(&["inspect"]).stdout).unwrap();
    assert_eq!(plain["cpu"], json["hardware"]["cpu"]);
}

#[test]
fn inspect_of_every_recorded_fixture_fits_metal3() {
    let dir = repo().join("agent/inspect/fixtures");
    let mut seen = 0;
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        if !entry.path().join("sys").is_dir() {
            continue;
        }
        let out = agent()
            .arg("inspect")
            .arg("--root")
            .arg(entry.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            entry.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_fits_metal3(&serde_json::from_slice(&out.stdout).unwrap());
        seen += 1;
    }
    assert!(
        seen > 0,
        "no recorded fixture trees under {}",
        dir.display()
    );
}

#[test]
fn write_image_refuses_non_http_schemes_before_touching_anything() {
    let target = tempfile::NamedTempFile::new().unwrap();
    fs::write(target.path(), [7u8; 4096]).unwrap();
    let sum = "0".repeat(64);
    let out = run(&[
        "write-image",
        "--url",
        "file:///etc/passwd",
        "--checksum",
        &format!("sha256:{sum}"),
        "--device",
        target.path().to_str().unwrap(),
        "--allow-file",
    ]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("file"),
        "error names the refused scheme: {err}"
    );
    assert_eq!(
        fs::read(target.path()).unwrap(),
        vec![7u8; 4096],
        "target untouched"
    );
}

#[test]
fn wipe_reports_which_device_failed_and_why() {
    let out = run(&["wipe", "--mode", "metadata", "/dev/does-not-exist-ferrox"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report on stdout");
    assert_eq!(report[0]["device"], "/dev/does-not-exist-ferrox");
    assert_eq!(report[0]["ok"], false);
    assert!(report[0]["error"]
        .as_str()
        .unwrap()
        .contains("does-not-exist"));
}

#[test]
fn checksum_image_prints_the_digest_of_the_served_bytes_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // 3 MiB + 5 bytes of pseudo-random data: not a multiple of any buffer or block size.
    let data = tests::pattern((3 << 20) + 5, 7);
    fs::write(dir.path().join("img.raw"), &data).unwrap();
    let before: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    let http = Http::serve(dir.path());
    let url = http.url("img.raw");
    for (algo, tool) in [("sha256", "sha256sum"), ("sha512", "sha512sum")] {
        let out = run(&["checksum-image", "--url", &url, "--algo", algo]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
        let want = sh(&format!("{tool} {}", dir.path().join("img.raw").display()));
        assert_eq!(
            report["checksum"].as_str().unwrap(),
            want.split_whitespace().next().unwrap(),
            "{algo}"
        );
        assert_eq!(report["checksumAlgo"], algo);
        assert_eq!(report["bytesDownloaded"], data.len() as u64);
        assert!(report["cpuSeconds"]["hash"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        before.len(),
        "nothing written"
    );

    let out = run(&["checksum-image", "--url", &url, "--algo", "md5"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("md5 checksums are refused"));

    let out = run(&["checksum-image", "--url", &http.url("missing.raw")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("404"), "names the HTTP status: {err}");
}

// ---------------------------------------------------------------------------------------------
// Root: real loop devices, real mkfs/sgdisk, a real HTTP server (python3 -m http.server).

/// A loop device (its path, and the guard that detaches it when dropped), unmounted first.
struct Loop(String, #[allow(dead_code)] tests::loopdev::Loop);
impl Loop {
    fn attach(file: &Path, extra: &[&str]) -> Loop {
        let lo = tests::loopdev::Loop::attach(file, extra).unwrap();
        Loop(lo.dev().to_string(), lo)
    }
}
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

struct Http(Child, u16);
impl Http {
    fn serve(dir: &Path) -> Http {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Http(child, port)
    }
    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.1)
    }
}
impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sh(cmd: &str) -> String {
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A 64 MiB disk image with a GPT and an ext4 partition holding real files.
fn make_os_image(dir: &Path) -> PathBuf {
    let raw = dir.join("os.raw");
    sh(&format!(
        "truncate -s 64M {0} && sgdisk -o -n 1:2048:0 {0} >/dev/null",
        raw.display()
    ));
    let part = Loop::attach(&raw, &["-o", "1048576", "--sizelimit", "50331648"]);
    sh(&format!(
        "mkfs.ext4 -q -d {} {}",
        repo().join("agent/src").display(),
        part.0
    ));
    raw
}

#[test]
#[ignore = "needs root and loop devices"]
fn metadata_wipe_then_qcow2_write_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let raw = make_os_image(dir.path());
    sh(&format!(
        "qemu-img convert -f raw -O qcow2 {} {}/os.qcow2",
        raw.display(),
        dir.path().display()
    ));
    let sum = sh(&format!("sha256sum {}/os.qcow2", dir.path().display()));
    let sum = sum.split_whitespace().next().unwrap();

    let disk_file = dir.path().join("disk0");
    sh(&format!(
        "truncate -s 128M {0} && sgdisk -o -n 1:2048:+32M -n 2:0:+16M {0} >/dev/null",
        disk_file.display()
    ));
    {
        let p1 = Loop::attach(&disk_file, &["-o", "1048576", "--sizelimit", "33554432"]);
        sh(&format!("mkfs.ext4 -q {}", p1.0));
        let p2 = Loop::attach(
            &disk_file,
            &[
                "-o",
                &(1048576 + 33554432).to_string(),
                "--sizelimit",
                "16777216",
            ],
        );
        sh(&format!("mkswap -q {}", p2.0));
    }
    let disk = Loop::attach(&disk_file, &[]);
    assert!(!sh(&format!("wipefs --no-act --noheadings {}", disk.0)).is_empty());

    let out = run(&["wipe", "--mode", "metadata", "--progress", "none", &disk.0]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["ok"], true);
    assert_eq!(sh(&format!("wipefs --no-act --noheadings {}", disk.0)), "");

    let http = Http::serve(dir.path());
    let out = run(&[
        "write-image",
        "--url",
        &http.url("os.qcow2"),
        "--checksum",
        &format!("sha256:{sum}"),
        "--device",
        &disk.0,
        "--progress",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert!(report.is_object());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events.iter().any(|e| e["bytesDone"].as_u64().is_some()),
        "progress events on stderr: {stderr}"
    );
    sh(&format!("cmp -n 67108864 {} {}", raw.display(), disk.0));
}

#[test]
#[ignore = "needs root and loop devices"]
fn wrong_checksum_leaves_a_disk_that_cannot_boot() {
    let dir = tempfile::tempdir().unwrap();
    let raw = make_os_image(dir.path());
    let disk_file = dir.path().join("disk0");
    sh(&format!("truncate -s 96M {}", disk_file.display()));
    let disk = Loop::attach(&disk_file, &[]);
    sh(&format!(
        "dd if={} of={} bs=1M count=2 conv=notrunc status=none",
        raw.display(),
        disk.0
    )); // an old bootable header
    let http = Http::serve(dir.path());
    let out = run(&[
        "write-image",
        "--url",
        &http.url("os.raw"),
        "--checksum",
        &format!("sha256:{}", "ab".repeat(32)),
        "--device",
        &disk.0,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.to_lowercase().contains("checksum"),
        "error says checksum: {err}"
    );
    let head = sh(&format!(
        "dd if={} bs=1M count=1 status=none | tr -d '\\0' | wc -c",
        disk.0
    ));
    assert_eq!(
        head.trim(),
        "0",
        "first MiB must be zero after a failed write"
    );
    assert_eq!(
        sh(&format!("wipefs --no-act --noheadings {}", disk.0)),
        "",
        "no partition table left"
    );
}

#[test]
#[ignore = "needs root and loop devices"]
fn wipe_of_a_good_and_a_mounted_device_reports_each() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    sh(&format!("truncate -s 64M {} {}", a.display(), b.display()));
    let la = Loop::attach(&a, &[]);
    let lb = Loop::attach(&b, &[]);
    sh(&format!("mkfs.ext4 -q {0} && mkfs.ext4 -q {1}", la.0, lb.0));
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    sh(&format!("mount {} {}", lb.0, mnt.display()));
    let out = run(&[
        "wipe",
        "--mode",
        "metadata",
        "--progress",
        "none",
        &la.0,
        &lb.0,
    ]);
    sh(&format!("umount {}", mnt.display()));
    assert_eq!(
        out.status.code(),
        Some(3),
        "partial failure has its own exit status"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["ok"], true);
    assert_eq!(report[1]["ok"], false);
    assert!(
        report[1]["error"].as_str().unwrap().contains("mounted"),
        "{}",
        report[1]
    );
    assert_eq!(sh(&format!("wipefs --no-act --noheadings {}", la.0)), "");
    assert!(
        !sh(&format!("wipefs --no-act --noheadings {}", lb.0)).is_empty(),
        "mounted disk untouched"
    );
}
