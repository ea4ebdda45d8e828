//! A real PXE boot: a QEMU VM (TCG) with an e1000 NIC and its default iPXE ROM (Debian's
//! ipxe-qemu) boots through ferrox-netboot in full mode — DHCP, the per-host iPXE script over
//! HTTP, Debian's kernel and a tiny busybox initramfs built here — and the initramfs prints a
//! marker on the serial console. Everything runs inside a network namespace the test creates
//! (bridge + tap); the VM has no other network.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const MARKER: &str = "FERROX-NETBOOT-TEST-INITRAMFS-RAN";

fn debian_kernel() -> PathBuf {
    let mut k: Vec<PathBuf> = fs::read_dir("/boot")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .collect();
    k.sort();
    k.pop()
        .expect("no /boot/vmlinuz-* (apt-get install linux-image-amd64)")
}

/// A gzip newc initramfs: static busybox and an /init that prints the marker and powers off.
fn initramfs(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in ["bin", "dev", "proc", "sys"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
    let init = root.join("init");
    fs::write(
        &init,
        format!(
            "#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs dev /dev\n/bin/busybox mount -t proc proc /proc\n\
             /bin/busybox echo \"{MARKER} cmdline: $(/bin/busybox cat /proc/cmdline)\" > /dev/ttyS0\n\
             /bin/busybox poweroff -f\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.join("initramfs.gz");
    run(Command::new("sh").arg("-c").arg(format!(
        "cd {} && find . | cpio -o -H newc --quiet | gzip -1 > {}",
        root.display(),
        out.display()
    )));
    out
}

#[test]
#[ignore = "needs root and network namespaces"]
fn qemu_bios_pxe_boots_kernel_and_initramfs_through_full_mode() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::new("vm");
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "br0"]);
    ns.ip(&["link", "set", "br0", "up"]);
    ns.ip(&["tuntap", "add", "tap0", "mode", "tap"]);
    ns.ip(&["link", "set", "tap0", "master", "br0"]);
    ns.ip(&["link", "set", "tap0", "up"]);

    let kernel = debian_kernel();
    let initrd = initramfs(dir.path());
    fs::write(
        dir.path().join("hosts.yaml"),
        format!("hosts:\n  - mac: \"{KNOWN_MAC}\"\n    ip: 10.77.0.50\n    boot:\n      token: vm-token-1\n"),
    )
    .unwrap();
    let mut server_cmd = ns.cmd(env!("CARGO_BIN_EXE_ferrox-netboot"));
    server_cmd
        .args([
            "--pool",
            POOL,
            "--hosts",
            dir.path().join("hosts.yaml").to_str().unwrap(),
        ])
        .args([
            "--kernel",
            kernel.to_str().unwrap(),
            "--initramfs",
            initrd.to_str().unwrap(),
        ])
        .args(["--cmdline", "console=ttyS0 panic=-1 quiet"])
        .args(["--controller-url", "https://10.77.0.1:8443"]);
    let mut server = Proc::spawn(server_cmd, &dir.path().join("server.log"));
    server.wait_log("listening", Duration::from_secs(10));

    let serial = dir.path().join("serial.log");
    let mut qemu = ns.cmd("qemu-system-x86_64");
    qemu.args(["-machine", "pc", "-accel", "tcg", "-m", "512", "-smp", "1"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .args(["-serial", &format!("file:{}", serial.display())])
        .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
        .args(["-device", &format!("e1000,netdev=n0,mac={KNOWN_MAC}")])
        .args(["-boot", "n"]);
    let started = Instant::now();
    let mut vm = Proc::spawn(qemu, &dir.path().join("qemu.log"));
    let deadline = Duration::from_secs(150);
    loop {
        let s = fs::read_to_string(&serial).unwrap_or_default();
        if s.contains(MARKER) {
            break;
        }
        assert!(
            started.elapsed() < deadline && vm.alive(),
            "no marker after {:?} (VM alive: {})\nserial:\n{s}\nqemu:\n{}\nserver:\n{}",
            started.elapsed(),
            vm.alive(),
            vm.log(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = started.elapsed();
    eprintln!("QEMU power-on to test initramfs running: {took:?}");
    let s = fs::read_to_string(&serial).unwrap();
    let line = s.lines().find(|l| l.contains(MARKER)).unwrap();
    for want in [
        "BOOTIF=01-52-54-00-aa-00-01",
        "ferrox.token=vm-token-1",
        "ferrox.controller=https://10.77.0.1:8443",
    ] {
        assert!(
            line.contains(want),
            "{want} not on the kernel command line: {line}"
        );
    }
    let log = server.log();
    for want in [
        "outcome=\"offer\"",
        "outcome=\"ack\"",
        "outcome=\"script\"",
        "outcome=\"kernel\"",
        "outcome=\"initramfs\"",
    ] {
        assert!(log.contains(want), "{want} not in the server log:\n{log}");
    }
    drop(vm);
    assert!(server.alive());
}
