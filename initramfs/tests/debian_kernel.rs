//! Tests against Debian's real kernel (linux-image-amd64, installed by hack/deps.sh): the default
//! ramdisk's size and reproducibility with real modules, and a QEMU (TCG) boot of that kernel
//! with a ramdisk built by this crate, whose modules are loaded with finit_module by a tiny
//! static /init (tests/fixtures/test-init.c) that reports on the serial console.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrox_mkinitramfs::{modules, Options, DEFAULT_MAX_FIRMWARE_SIZE, DEFAULT_MODULES};

const MODULES: &str = "/lib/modules";

fn kernel_version() -> String {
    modules::newest_kernel_version(Path::new(MODULES))
        .expect("no /lib/modules/*/modules.dep: install linux-image-amd64 (hack/deps.sh)")
}

fn options(init: PathBuf, modules: &[&str]) -> Options {
    let kver = kernel_version();
    Options {
        init,
        modules_root: Path::new(MODULES).join(&kver),
        kernel_version: kver,
        modules: modules.iter().map(|s| s.to_string()).collect(),
        softdeps: true,
        firmware_dir: Some("/lib/firmware".into()),
        max_firmware_size: DEFAULT_MAX_FIRMWARE_SIZE,
        mtime: 0,
        compression_level: 19,
        extra_files: Vec::new(),
    }
}

/// A stand-in /init: the size goal is measured with the real agent by hack/build-initramfs.sh;
/// here a 6 MiB incompressible blob (the stripped static agent's size) stands in for it.
fn fake_agent(dir: &Path) -> PathBuf {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let blob: Vec<u8> = (0..6 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let p = dir.join("agent");
    std::fs::write(&p, blob).unwrap();
    p
}

#[test]
#[ignore = "needs linux-image-amd64 (hack/deps.sh)"]
fn default_set_resolves_fits_the_budget_and_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(fake_agent(dir.path()), DEFAULT_MODULES);
    let (a, r1) = ferrox_mkinitramfs::build(&opts).unwrap();
    let (b, r2) = ferrox_mkinitramfs::build(&opts).unwrap();
    assert!(a == b, "two builds differ");
    assert_eq!(r1, r2);
    eprintln!(
        "default set: {} modules, {} bytes compressed ({} cpio), firmware {} included, {} missing",
        r1.modules.len(),
        r1.compressed_bytes,
        r1.cpio_bytes,
        r1.firmware.len(),
        r1.firmware_missing.len()
    );
    assert!(r1.modules_missing.is_empty(), "{:?}", r1.modules_missing);
    for m in DEFAULT_MODULES {
        let n = modules::normalize(m);
        assert!(
            r1.modules.contains(&n) || r1.modules_builtin.contains(&n),
            "{m} neither included nor built in"
        );
    }
    // Dependencies came along (examples from Debian's modules.dep).
    for dep in [
        "nvme_core",
        "libahci",
        "libata",
        "scsi_mod",
        "virtio_ring",
        "llc",
        "mrp",
    ] {
        assert!(r1.modules.contains(&dep.to_string()), "{dep} missing");
    }
    assert!(
        r1.compressed_bytes <= 12_000_000,
        "over the 12 MB budget: {}",
        r1.compressed_bytes
    );
    // Firmware the default set declares is either included or reported, never silently lost.
    assert!(r1.firmware.len() + r1.firmware_missing.len() + r1.firmware_too_large.len() >= 5);
}

fn build_test_init(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/test-init.c");
    let out = dir.join("test-init");
    let status = Command::new("musl-gcc")
        .args(["-static", "-Os", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("musl-gcc (musl-tools, hack/deps.sh)");
    assert!(status.success(), "compiling {}", src.display());
    out
}

/// Runs QEMU until it exits, `until` holds for the console output so far, or `timeout`;
/// returns the serial console output.
fn run_qemu(args: &[String], timeout: Duration, until: impl Fn(&str) -> bool) -> String {
    use std::sync::{Arc, Mutex};
    let mut child = Command::new("qemu-system-x86_64")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 (qemu-system-x86, hack/deps.sh)");
    let mut stdout = child.stdout.take().unwrap();
    let console = Arc::new(Mutex::new(Vec::new()));
    let sink = console.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let done = until(&String::from_utf8_lossy(&console.lock().unwrap()));
        if done || start.elapsed() > timeout {
            // Our own child, by handle.
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    reader.join().unwrap();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let out = String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
    format!("{out}\n[qemu stderr]\n{err}")
}

/// A built ramdisk booted under QEMU: the serial console, with `\r` dropped.
struct Boot {
    console: String,
}

impl Boot {
    fn lines(&self) -> Vec<&str> {
        self.console
            .lines()
            .filter(|l| l.contains("FERROX-INIT"))
            .collect()
    }

    fn has(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.console.lines().any(pred)
    }

    /// What the program run with ferrox_exec printed on stdout.
    fn output(&self) -> &str {
        let begin = self
            .console
            .find("FERROX-OUTPUT-BEGIN\n")
            .expect("no output")
            + 20;
        let end = self.console[begin..]
            .find("FERROX-OUTPUT-END")
            .expect("no output end");
        &self.console[begin..begin + end]
    }
}

/// Builds a ramdisk with the test init and the default module set (plus `extra`), boots
/// Debian's kernel with it under TCG with 256 MiB of RAM and the given QEMU device arguments;
/// the init loads `load` (and dependencies) and runs `exec` (comma-separated argv).
fn boot(
    dir: &Path,
    extra: Vec<ferrox_mkinitramfs::ExtraFile>,
    load: &[&str],
    exec: Option<&str>,
    devices: &[String],
) -> Boot {
    let init = build_test_init(dir);
    let mut opts = options(init, DEFAULT_MODULES);
    opts.extra_files = extra;
    let kver = opts.kernel_version.clone();
    let kernel = PathBuf::from(format!("/boot/vmlinuz-{kver}"));
    assert!(kernel.is_file(), "{} missing", kernel.display());
    let (img, report) = ferrox_mkinitramfs::build(&opts).unwrap();
    let initrd = dir.join("initrd.img");
    std::fs::write(&initrd, img).unwrap();

    // What a coldplug would load, in dependency order, as paths inside the ramdisk.
    let tree = modules::ModuleTree::load(&opts.modules_root).unwrap();
    let order = tree.load_order(load);
    for m in &order {
        assert!(report.modules.contains(m), "{m} not in the ramdisk");
    }
    let paths: Vec<String> = order
        .iter()
        .map(|m| modules::uncompressed_path(&tree.module(m).unwrap().path).to_owned())
        .collect();
    let mut append = format!(
        "console=ttyS0 panic=-1 quiet ferrox_load={}",
        paths.join(",")
    );
    if let Some(e) = exec {
        append.push_str(&format!(" ferrox_exec={e}"));
    }
    let mut args: Vec<String> = [
        "-accel",
        "tcg",
        "-m",
        "256",
        "-nographic",
        "-no-reboot",
        "-kernel",
        kernel.to_str().unwrap(),
        "-initrd",
        initrd.to_str().unwrap(),
        "-append",
        &append,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(devices.iter().cloned());
    let console = run_qemu(&args, Duration::from_secs(180), |_| false).replace('\r', "");
    let boot = Boot { console };
    for l in boot.lines() {
        eprintln!("{l}");
    }
    for p in &paths {
        assert!(
            boot.has(|l| l.ends_with(&format!("FERROX-INIT loaded {p}"))),
            "{p} not loaded\n{}",
            boot.console
        );
    }
    boot
}

fn disk(dir: &Path, name: &str, size: u64) -> String {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    format!("file={},if=none,id={name},format=raw", p.display())
}

#[test]
#[ignore = "needs linux-image-amd64 and qemu-system-x86 (hack/deps.sh); boots a VM (~10-30 s TCG)"]
fn debian_kernel_boots_the_ramdisk_and_loads_its_modules() {
    let dir = tempfile::tempdir().unwrap();
    let devices: Vec<String> = [
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-net-pci,netdev=n0,mac=52:54:00:fe:12:34",
        "-drive",
        &disk(dir.path(), "d0", 64 << 20),
        "-device",
        "virtio-blk-pci,drive=d0,serial=ferrox-disk0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let boot = boot(
        dir.path(),
        Vec::new(),
        &["virtio_pci", "virtio_net", "virtio_blk", "8021q"],
        None,
        &devices,
    );
    let ctx = || format!("console:\n{}", boot.console);
    assert!(
        boot.has(|l| l.contains("FERROX-INIT start pid=1")),
        "{}",
        ctx()
    );
    assert!(
        boot.has(|l| l.contains("FERROX-INIT net ") && l.ends_with("52:54:00:fe:12:34")),
        "no virtio NIC\n{}",
        ctx()
    );
    // 64 MiB = 131072 sectors.
    assert!(
        boot.has(|l| l.contains("FERROX-INIT block vda 131072")),
        "no virtio disk\n{}",
        ctx()
    );
    assert!(
        boot.has(|l| l.contains("FERROX-INIT done failed=0")),
        "{}",
        ctx()
    );
}

/// The static agent (hack/build-static-agent.sh, cached) runs `inspect` inside the booted
/// ramdisk, with no libc in it, and reports exactly the VM's NICs and disks.
#[test]
#[ignore = "needs root, linux-image-amd64, qemu-system-x86 and the static agent build (hack/build-static-agent.sh runs, cached)"]
fn static_agent_inspects_the_vm_from_the_ramdisk() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new("bash")
        .arg(repo.join("hack/build-static-agent.sh"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "hack/build-static-agent.sh failed");
    let agent = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let dir = tempfile::tempdir().unwrap();
    let devices: Vec<String> = [
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-net-pci,netdev=n0,mac=52:54:00:fe:00:01",
        "-netdev",
        "user,id=n1",
        "-device",
        "e1000,netdev=n1,mac=52:54:00:fe:00:02",
        "-drive",
        &disk(dir.path(), "vd", 64 << 20),
        "-device",
        "virtio-blk-pci,drive=vd,serial=ferrox-vd0",
        "-drive",
        &disk(dir.path(), "nv", 128 << 20),
        "-device",
        "nvme,drive=nv,serial=FERROXNVME01",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let extra = vec![ferrox_mkinitramfs::ExtraFile {
        source: agent.into(),
        dest: "bin/ferrox-agent".into(),
        executable: true,
    }];
    let boot = boot(
        dir.path(),
        extra,
        &["virtio_pci", "virtio_net", "virtio_blk", "e1000", "nvme"],
        Some("/bin/ferrox-agent,inspect"),
        &devices,
    );
    assert!(
        boot.has(|l| l.contains("FERROX-INIT exec status=0")),
        "inspect failed\n{}",
        boot.console
    );
    let inv: serde_json::Value = serde_json::from_str(boot.output())
        .unwrap_or_else(|e| panic!("inventory is not JSON ({e})\n{}", boot.console));
    let macs: Vec<&str> = inv["nics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["mac"].as_str())
        .collect();
    for mac in ["52:54:00:fe:00:01", "52:54:00:fe:00:02"] {
        assert!(macs.contains(&mac), "{mac} not in {macs:?}");
    }
    // (kernel name, size, serial): metal3's `name` is a /dev/disk/by-path link when the agent
    // can synthesise one, so the kernel name is looked for among all the names.
    let disks: Vec<(String, i64, String)> = inv["storage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let mut names = vec![d["name"].as_str().unwrap_or("").to_owned()];
            names.extend(
                d["alternateNames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str().map(str::to_owned)),
            );
            let kname = names
                .iter()
                .find(|n| n.starts_with("/dev/") && n.matches('/').count() == 2)
                .cloned()
                .unwrap_or_else(|| names.join("|"));
            (
                kname,
                d["sizeBytes"].as_i64().unwrap_or(-1),
                d["serialNumber"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    eprintln!("disks: {disks:?}");
    assert!(
        disks.contains(&("/dev/vda".into(), 64 << 20, "ferrox-vd0".into())),
        "{disks:?}"
    );
    assert!(
        disks.contains(&("/dev/nvme0n1".into(), 128 << 20, "FERROXNVME01".into())),
        "{disks:?}"
    );
    assert_eq!(disks.len(), 2, "{disks:?}");
}

/// The real thing: the static agent as /init of the default ramdisk. It must coldplug the
/// virtio NIC and disk from the ramdisk's modules.alias/modules.dep, get an address from
/// QEMU's user-mode DHCP server and say it is ready (it then retries the controller, which
/// does not exist here, so the VM is stopped once the agent is ready).
#[test]
#[ignore = "needs root, linux-image-amd64, qemu-system-x86 and the static agent build (hack/build-static-agent.sh runs, cached)"]
fn static_agent_as_init_coldplugs_and_gets_an_address() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new("bash")
        .arg(repo.join("hack/build-static-agent.sh"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "hack/build-static-agent.sh failed");
    let agent = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());

    let dir = tempfile::tempdir().unwrap();
    let opts = options(agent, DEFAULT_MODULES);
    let kernel = format!("/boot/vmlinuz-{}", opts.kernel_version);
    let (img, _) = ferrox_mkinitramfs::build(&opts).unwrap();
    let initrd = dir.path().join("initrd.img");
    std::fs::write(&initrd, img).unwrap();
    let mac = "52:54:00:fe:00:07";
    let append = format!(
        "console=ttyS0 panic=-1 quiet BOOTIF=01-{} ferrox.controller=http://10.0.2.2:9/ \
         ferrox.token=test ferrox.ca=sha256:{}",
        mac.replace(':', "-"),
        "0".repeat(64)
    );
    let args: Vec<String> = [
        "-accel",
        "tcg",
        "-m",
        "256",
        "-nographic",
        "-no-reboot",
        "-kernel",
        &kernel,
        "-initrd",
        initrd.to_str().unwrap(),
        "-append",
        &append,
        "-netdev",
        "user,id=n0",
        "-device",
        &format!("virtio-net-pci,netdev=n0,mac={mac}"),
        "-drive",
        &disk(dir.path(), "vd", 64 << 20),
        "-device",
        "virtio-blk-pci,drive=vd,serial=ferrox-vd0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ready = |c: &str| {
        c.lines()
            .any(|l| l.contains("ferrox-agent") && l.contains("ready"))
    };
    let console = run_qemu(&args, Duration::from_secs(180), ready).replace('\r', "");
    for l in console.lines().filter(|l| l.contains("ferrox-agent")) {
        eprintln!("{l}");
    }
    assert!(ready(&console), "the agent never got ready\n{console}");
    assert!(
        console
            .lines()
            .any(|l| l.contains("coldplug") && l.contains("virtio_net")),
        "virtio_net not coldplugged\n{console}"
    );
    assert!(
        console
            .lines()
            .any(|l| l.contains(mac) && l.contains("10.0.2.15")),
        "no DHCP address on {mac}\n{console}"
    );
    assert!(!console.contains("Kernel panic"), "{console}");
}
