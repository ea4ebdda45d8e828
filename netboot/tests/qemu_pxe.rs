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

/// Creates bridge `br0` with tap `tap0` in `ns`.
fn bridge_with_tap(ns: &Ns) {
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&["link", "set", "br0", "up"]);
    ns.ip(&["tuntap", "add", "tap0", "mode", "tap"]);
    ns.ip(&["link", "set", "tap0", "master", "br0"]);
    ns.ip(&["link", "set", "tap0", "up"]);
}

/// ferrox-netboot in `ns` serving the Debian kernel and a test initramfs to [`KNOWN_MAC`].
fn netboot(ns: &Ns, dir: &Path, extra: &[&str]) -> Proc {
    let kernel = debian_kernel();
    let initrd = initramfs(dir);
    fs::write(
        dir.join("hosts.yaml"),
        format!("hosts:\n  - mac: \"{KNOWN_MAC}\"\n    ip: 10.77.0.50\n    boot:\n      token: vm-token-1\n"),
    )
    .unwrap();
    let mut cmd = ns.cmd(env!("CARGO_BIN_EXE_ferrox-netboot"));
    cmd.args(["--hosts", dir.join("hosts.yaml").to_str().unwrap()])
        .args([
            "--kernel",
            kernel.to_str().unwrap(),
            "--initramfs",
            initrd.to_str().unwrap(),
        ])
        .args(["--cmdline", "console=ttyS0 panic=-1 quiet"])
        .args(["--controller-url", "https://10.77.0.1:8443"])
        .args(extra);
    let mut p = Proc::spawn(cmd, &dir.join("server.log"));
    p.wait_log("listening", Duration::from_secs(10));
    p
}

/// Powers on a BIOS VM with an e1000 (its iPXE ROM) on `ns`'s tap0 and waits for the marker.
/// Returns the time from power-on and the marker line.
fn boot_vm(ns: &Ns, dir: &Path, server: &mut Proc) -> (Duration, String) {
    let nic = format!("e1000,netdev=n0,mac={KNOWN_MAC}");
    boot_vm_with(
        ns,
        dir,
        server,
        &["-device", &nic],
        Duration::from_secs(150),
    )
}

/// [`boot_vm`] with other firmware/NIC arguments and deadline.
fn boot_vm_with(
    ns: &Ns,
    dir: &Path,
    server: &mut Proc,
    extra: &[&str],
    deadline: Duration,
) -> (Duration, String) {
    let serial = dir.join("serial.log");
    let mut qemu = ns.cmd("qemu-system-x86_64");
    qemu.args(["-machine", "pc", "-accel", "tcg", "-m", "512", "-smp", "1"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .args(["-serial", &format!("file:{}", serial.display())])
        .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
        .args(extra)
        .args(["-boot", "n"]);
    let started = Instant::now();
    let mut vm = Proc::spawn(qemu, &dir.join("qemu.log"));
    loop {
        let s = fs::read_to_string(&serial).unwrap_or_default();
        if let Some(line) = s.lines().find(|l| l.contains(MARKER)) {
            let took = started.elapsed();
            if std::env::var_os("FERROX_TEST_VERBOSE").is_some() {
                eprintln!(
                    "power-on at {:?}\nserver:\n{}\nserial:\n{s}",
                    std::time::SystemTime::now() - took,
                    server.log()
                );
            }
            return (took, line.to_owned());
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
}

fn check_cmdline(line: &str) {
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
}

#[test]
#[ignore = "needs root and network namespaces"]
fn qemu_bios_pxe_boots_kernel_and_initramfs_through_full_mode() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::new("vm");
    bridge_with_tap(&ns);
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "br0"]);
    let mut server = netboot(&ns, dir.path(), &["--pool", POOL]);
    let (took, line) = boot_vm(&ns, dir.path(), &mut server);
    eprintln!("full mode: QEMU power-on to test initramfs running: {took:?}");
    check_cmdline(&line);
    let log = server.log();
    for want in [
        "outcome=\"offer\"",
        "outcome=\"ack\"",
        "outcome=\"script\"",
        "outcome=\"kernel\"",
        "outcome=\"initramfs\"",
        // iPXE's IPv6 router solicitation answered: no ~15 s wait before the script.
        "answered a router solicitation",
    ] {
        assert!(log.contains(want), "{want} not in the server log:\n{log}");
    }
    assert!(server.alive());
}

#[test]
#[ignore = "needs root and network namespaces"]
fn qemu_bios_pxe_boots_through_proxy_mode_beside_dnsmasq() {
    // The VM's bridge in one namespace; dnsmasq (the only address server) and ferrox-netboot
    // (proxy mode) each in their own, joined to the bridge by veth pairs.
    let dir = tempfile::tempdir().unwrap();
    let vm_ns = Ns::new("vm");
    bridge_with_tap(&vm_ns);
    let dm = Ns::new("dm");
    let fx = Ns::new("fx");
    veth(&vm_ns, "to-dm", &dm, "dm0");
    veth(&vm_ns, "to-fx", &fx, "fx0");
    vm_ns.ip(&["link", "set", "to-dm", "master", "br0"]);
    vm_ns.ip(&["link", "set", "to-fx", "master", "br0"]);
    dm.ip(&["addr", "add", "10.77.0.2/24", "dev", "dm0"]);
    fx.ip(&["addr", "add", "10.77.0.1/24", "dev", "fx0"]);
    let mut dnsmasq = dm.cmd("dnsmasq");
    dnsmasq.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",
        "--no-ping",
        "--leasefile-ro",
        "--interface=dm0",
        "--bind-interfaces",
        "--dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,1h",
        "--dhcp-option=3,10.77.0.2",
        "--log-dhcp",
    ]);
    let mut dnsmasq = Proc::spawn(dnsmasq, &dir.path().join("dnsmasq.log"));
    let mut server = netboot(&fx, dir.path(), &["--mode", "proxy"]);
    assert!(dnsmasq.alive(), "{}", dnsmasq.log());
    let (took, line) = boot_vm(&vm_ns, dir.path(), &mut server);
    eprintln!("proxy mode beside dnsmasq: QEMU power-on to test initramfs running: {took:?}");
    check_cmdline(&line);
    let log = server.log();
    assert!(log.contains("outcome=\"proxy_offer\""), "{log}");
    assert!(log.contains("outcome=\"script\""), "{log}");
    assert!(
        !log.contains("outcome=\"offer\""),
        "proxy mode hands out no addresses: {log}"
    );
    assert!(
        dnsmasq.log().contains("DHCPACK"),
        "dnsmasq gave the address: {}",
        dnsmasq.log()
    );
}

#[test]
#[ignore = "needs root and network namespaces"]
fn qemu_uefi_firmware_pxe_fetches_ipxe_efi_by_tftp() {
    // OVMF's own virtio-net driver and PXE (the NIC's option ROM disabled): DHCP with arch 7,
    // ipxe.efi over TFTP, then iPXE's own DHCP, the script over HTTP, the kernel as an EFI stub.
    let ovmf = ["/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF_CODE.fd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("OVMF (apt-get install ovmf)");
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::new("uefi");
    bridge_with_tap(&ns);
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "br0"]);
    let mut server = netboot(&ns, dir.path(), &["--pool", POOL]);
    let nic = format!("virtio-net-pci,netdev=n0,mac={KNOWN_MAC},romfile=");
    let (took, line) = boot_vm_with(
        &ns,
        dir.path(),
        &mut server,
        &["-bios", ovmf, "-device", &nic],
        Duration::from_secs(240),
    );
    eprintln!(
        "UEFI (OVMF PXE -> TFTP ipxe.efi): QEMU power-on to test initramfs running: {took:?}"
    );
    check_cmdline(&line);
    let log = server.log();
    for want in [
        "detail=10.77.0.50",
        "file=ipxe.efi",
        "outcome=\"sent\"",
        "outcome=\"script\"",
        "outcome=\"initramfs\"",
    ] {
        assert!(log.contains(want), "{want} not in the server log:\n{log}");
    }
}
