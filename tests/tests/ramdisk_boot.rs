//! The ramdisk booted for real: Debian's kernel and the initramfs hack/build-initramfs.sh
//! makes (the static agent as PID 1), under QEMU (TCG), in a network namespace this test
//! creates with a bridge, dnsmasq as the DHCP server and a stand-in for the controller that
//! records the agent's hello. Needs root; hack/test.sh builds the ramdisk first and runs these.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::ip;
use tests::ramdisk::{artifacts, CONTROLLER_STAND_IN};

/// A network namespace with a bridge at 10.79.N.1/24 and two taps on it; optional dnsmasq and
/// a controller stand-in. Processes killed by PID and the namespace deleted on drop.
struct Lab {
    ns: String,
    net: u8,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Lab {
    fn new(net: u8, dhcp: bool) -> Lab {
        let ns = format!("fxrd{}n{net}", std::process::id() % 100_000);
        ip(&["netns", "add", &ns]);
        let mut lab = Lab {
            ns,
            net,
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        };
        let ns = lab.ns.clone();
        let gw = format!("10.79.{net}.1/24");
        ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &ns, "link", "set", "br0", "up"]);
        ip(&["-n", &ns, "addr", "add", &gw, "dev", "br0"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        for tap in ["tap0", "tap1"] {
            ip(&["-n", &ns, "tuntap", "add", tap, "mode", "tap"]);
            ip(&["-n", &ns, "link", "set", tap, "master", "br0"]);
            ip(&["-n", &ns, "link", "set", tap, "up"]);
        }
        if dhcp {
            let range = format!("--dhcp-range=10.79.{net}.50,10.79.{net}.99,255.255.255.0,10m");
            let router = format!("--dhcp-option=3,10.79.{net}.1");
            lab.spawn(&[
                "dnsmasq",
                "--no-daemon",
                "--port=0",
                "--interface=br0",
                "--bind-interfaces",
                "--no-ping",
                "--leasefile-ro",
                &range,
                &router,
            ]);
        }
        let listener = lab.dir.path().join("listen.py");
        std::fs::write(&listener, CONTROLLER_STAND_IN).unwrap();
        let hello = lab.dir.path().join("hello.json");
        let addr = format!("10.79.{net}.1");
        lab.spawn(&[
            "python3",
            listener.to_str().unwrap(),
            &addr,
            "8089",
            hello.to_str().unwrap(),
        ]);
        std::thread::sleep(Duration::from_millis(500));
        lab
    }

    fn spawn(&mut self, argv: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(argv)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    fn controller(&self) -> String {
        format!("http://10.79.{}.1:8089", self.net)
    }

    /// Boots the VM with `append` and `devices`; returns when `done(console)` holds (or after
    /// `limit`), with the console text and the hello, if one came.
    fn boot(
        &self,
        append: &str,
        devices: &[&str],
        limit: Duration,
        done: impl Fn(&str) -> bool,
    ) -> (String, Option<Value>) {
        self.boot_with_monitor(append, devices, &[], limit, done)
    }

    /// As [`Lab::boot`], sending `monitor` commands (e.g. `set_link n0 off`) to QEMU's human
    /// monitor right after it starts.
    fn boot_with_monitor(
        &self,
        append: &str,
        devices: &[&str],
        monitor: &[&str],
        limit: Duration,
        done: impl Fn(&str) -> bool,
    ) -> (String, Option<Value>) {
        let (kernel, initrd) = artifacts();
        let serial = self.dir.path().join("serial.log");
        let mon = self.dir.path().join("monitor.sock");
        let mut qemu = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "qemu-system-x86_64",
                "-accel",
                "tcg",
                "-m",
                "256",
                "-nographic",
                "-no-reboot",
                "-nodefaults",
                "-serial",
            ])
            .arg(format!("file:{}", serial.display()))
            .arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", mon.display()))
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .arg("-append")
            .arg(format!("console=ttyS0 {append}"))
            .args(devices)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kept open until the VM is gone: QEMU may drop what a client sent before it hung up.
        let _monitor = (!monitor.is_empty()).then(|| {
            use std::io::{Read, Write};
            let t = Instant::now();
            let mut sock = loop {
                match std::os::unix::net::UnixStream::connect(&mon) {
                    Ok(s) => break s,
                    Err(e) if t.elapsed() > Duration::from_secs(10) => panic!("QEMU monitor: {e}"),
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            };
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let prompt = |sock: &mut std::os::unix::net::UnixStream| {
                let mut seen = Vec::new();
                let mut b = [0u8; 256];
                while !String::from_utf8_lossy(&seen).contains("(qemu)") {
                    let n = sock.read(&mut b).expect("QEMU monitor prompt");
                    assert!(n > 0, "QEMU monitor closed");
                    seen.extend_from_slice(&b[..n]);
                }
                String::from_utf8_lossy(&seen).into_owned()
            };
            prompt(&mut sock);
            for cmd in monitor {
                sock.write_all(format!("{cmd}\n").as_bytes()).unwrap();
                let answer = prompt(&mut sock);
                assert!(!answer.contains("Error"), "monitor {cmd}: {answer}");
            }
            sock
        });
        let hello_path = self.dir.path().join("hello.json");
        let start = Instant::now();
        let console = loop {
            std::thread::sleep(Duration::from_millis(500));
            let console =
                String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
            if done(&console) || start.elapsed() > limit {
                break console;
            }
        };
        let _ = qemu.kill();
        let _ = qemu.wait();
        let hello = std::fs::read(&hello_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        (console, hello)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn disk(dir: &Path, name: &str, size: u64) -> String {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
#[ignore = "needs root, QEMU and the built ramdisk"]
fn ramdisk_boots_and_reports_exactly_the_vms_hardware() {
    let lab = Lab::new(1, true);
    let d = lab.dir.path();
    let (vblk, nvme, sata) = (
        disk(d, "vblk.img", 1 << 30),
        disk(d, "nvme.img", 2 << 30),
        disk(d, "sata.img", 3 << 30),
    );
    let devices: Vec<String> = vec![
        "-netdev".into(),
        "tap,id=n0,ifname=tap0,script=no,downscript=no".into(),
        "-device".into(),
        "virtio-net-pci,netdev=n0,mac=52:54:00:fe:01:01".into(),
        "-netdev".into(),
        "tap,id=n1,ifname=tap1,script=no,downscript=no".into(),
        "-device".into(),
        "e1000,netdev=n1,mac=52:54:00:fe:01:02".into(),
        "-drive".into(),
        format!("file={vblk},if=none,id=d0,format=raw"),
        "-device".into(),
        "virtio-blk-pci,drive=d0,serial=FX-VBLK-1".into(),
        "-drive".into(),
        format!("file={nvme},if=none,id=d1,format=raw"),
        "-device".into(),
        "nvme,drive=d1,serial=FX-NVME-2".into(),
        "-device".into(),
        "ich9-ahci,id=ahci".into(),
        "-drive".into(),
        format!("file={sata},if=none,id=d2,format=raw"),
        "-device".into(),
        "ide-hd,drive=d2,bus=ahci.0,serial=FX-SATA-3".into(),
    ];
    let devices: Vec<&str> = devices.iter().map(String::as_str).collect();
    // BOOTIF names the e1000, not the first NIC: the agent must take that one.
    let append = format!(
        "BOOTIF=01-52-54-00-fe-01-02 ferrox.controller={} ferrox.token=t0k3n",
        lab.controller()
    );
    let (console, hello) = lab.boot(&append, &devices, Duration::from_secs(150), |c| {
        c.contains("waiting for commands") || c.contains("FATAL")
    });
    let agent_lines: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("ferrox-agent:"))
        .collect();
    let hello = hello.unwrap_or_else(|| panic!("no hello; console:\n{}", agent_lines.join("\n")));
    assert_eq!(
        hello["mac"],
        "52:54:00:fe:01:02",
        "{}",
        agent_lines.join("\n")
    );
    assert_eq!(hello["token"], "t0k3n");
    assert!(hello["address"].as_str().unwrap().starts_with("10.79.1."));
    let hw = &hello["inventory"]["hardware"];
    let mut disks: Vec<(String, u64)> = hw["storage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["serialNumber"].as_str().unwrap_or("").to_string(),
                s["sizeBytes"].as_u64().unwrap(),
            )
        })
        .collect();
    disks.sort();
    assert_eq!(
        disks,
        [
            ("FX-NVME-2".to_string(), 2 << 30),
            ("FX-SATA-3".to_string(), 3 << 30),
            ("FX-VBLK-1".to_string(), 1 << 30)
        ],
        "{hw}"
    );
    let mut macs: Vec<&str> = hw["nics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["mac"].as_str())
        .collect();
    macs.sort();
    macs.dedup();
    assert_eq!(macs, ["52:54:00:fe:01:01", "52:54:00:fe:01:02"], "{hw}");
    let ready = hello["readyAfterSeconds"].as_f64().unwrap();
    println!("ramdisk: ready {ready:.2} s after kernel start (guest clock, TCG)");
    for l in agent_lines {
        println!("{l}");
    }
}

#[test]
#[ignore = "needs root, QEMU and the built ramdisk"]
fn no_dhcp_answer_is_reported_and_retried() {
    let lab = Lab::new(2, false);
    let devices = [
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device",
        "virtio-net-pci,netdev=n0,mac=52:54:00:fe:02:01",
    ];
    let append = format!("ferrox.controller={}", lab.controller());
    let (console, hello) = lab.boot(&append, &devices, Duration::from_secs(120), |c| {
        c.contains("retrying in")
    });
    assert!(hello.is_none());
    assert!(
        console.contains("FATAL: DHCP on eth0: no OFFER from any server after 6 attempts"),
        "{console}"
    );
    assert!(console.contains("retrying in 2 s"), "{console}");
    assert!(!console.contains("Kernel panic"), "{console}");
}

#[test]
#[ignore = "needs root, QEMU and the built ramdisk"]
fn garbage_on_the_kernel_command_line_is_named_and_nothing_panics() {
    let lab = Lab::new(3, true);
    let devices = [
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device",
        "virtio-net-pci,netdev=n0,mac=52:54:00:fe:03:01",
    ];
    let append = "ferrox.vlan=abc ferrox.controller=ftp://x BOOTIF=zz \u{1}\u{7f}garbage=";
    let (console, hello) = lab.boot(append, &devices, Duration::from_secs(90), |c| {
        c.contains("retrying in")
    });
    assert!(hello.is_none());
    for want in [
        "ERROR: kernel command line: ferrox.vlan=abc: expected a VLAN id 1..4094",
        "ERROR: kernel command line: ferrox.controller=ftp://x: expected an http:// or https:// URL",
        "ERROR: kernel command line: BOOTIF=zz: expected 01-aa-bb-cc-dd-ee-ff",
        "FATAL: 3 bad parameter(s) on the kernel command line",
        "retrying in 2 s",
    ] {
        assert!(console.contains(want), "missing {want:?} in:\n{console}");
    }
    assert!(
        !console.contains("Kernel panic") && !console.contains("PANIC"),
        "{console}"
    );
}

/// Frames on `tap` (in `ns`) for `seconds`, as the hex of each, via an AF_PACKET socket. The
/// kernel moves a received frame's 802.1Q tag into metadata before packet sockets see it, so
/// the tag is read from PACKET_AUXDATA and put back in place.
const CAPTURE: &str = r#"
import socket, struct, sys, time
SOL_PACKET, PACKET_AUXDATA, TP_STATUS_VLAN_VALID = 263, 8, 0x10
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
s.bind((sys.argv[1], 0))
s.settimeout(0.5)
end = time.time() + float(sys.argv[2])
out = open(sys.argv[3], 'w')
while time.time() < end:
    try:
        data, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(32))
    except socket.timeout:
        continue
    for level, kind, val in anc:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(val) >= 20:
            status, _, _, _, _, tci, tpid = struct.unpack("IIIHHHH", val[:20])
            if status & TP_STATUS_VLAN_VALID:
                data = data[:12] + struct.pack("!HH", tpid or 0x8100, tci) + data[12:]
    out.write(data.hex() + "\n"); out.flush()
"#;

#[test]
#[ignore = "needs root, QEMU and the built ramdisk"]
fn vlan_from_the_command_line_tags_the_dhcp_traffic() {
    // This machine's own kernel has no 8021q, so nothing here can answer on a VLAN: the test
    // reads the wire instead. The agent must load 8021q, create eth0.100 and send its
    // DISCOVERs tagged with VLAN 100 (and none untagged).
    let mut lab = Lab::new(4, true);
    let capture = lab.dir.path().join("capture.py");
    let frames = lab.dir.path().join("frames.txt");
    std::fs::write(&capture, CAPTURE).unwrap();
    lab.spawn(&[
        "python3",
        capture.to_str().unwrap(),
        "tap0",
        "100",
        frames.to_str().unwrap(),
    ]);
    let devices = [
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device",
        "virtio-net-pci,netdev=n0,mac=52:54:00:fe:04:01",
    ];
    let append = format!("ferrox.vlan=100 ferrox.controller={}", lab.controller());
    let (console, hello) = lab.boot(&append, &devices, Duration::from_secs(100), |c| {
        c.contains("no OFFER") || c.contains("network:")
    });
    assert!(hello.is_none(), "nothing answers on VLAN 100 here");
    assert!(
        console.contains(" 8021q"),
        "8021q loaded by coldplug: {console}"
    );
    assert!(
        console.contains("FATAL: DHCP on eth0.100: no OFFER"),
        "{console}"
    );
    let frames = std::fs::read_to_string(&frames).unwrap_or_default();
    // dst ff:ff:ff:ff:ff:ff, src our MAC, 802.1Q (8100) with VID 100 (0064), IPv4, ..., UDP 68→67.
    let from_us = "ffffffffffff525400fe0401";
    let tagged = frames
        .lines()
        .filter(|f| {
            f.starts_with(from_us) && f[24..].starts_with("81000064") && f[32..].starts_with("0800")
        })
        .filter(|f| f.contains("00440043"))
        .count();
    let untagged_dhcp = frames
        .lines()
        .filter(|f| f.starts_with(from_us) && f[24..].starts_with("0800") && f.contains("00440043"))
        .count();
    assert!(tagged >= 2, "tagged DISCOVERs: {tagged}\n{frames}");
    assert_eq!(untagged_dhcp, 0, "{frames}");
}

#[test]
#[ignore = "needs root, QEMU and the built ramdisk"]
fn a_nic_without_its_driver_is_named_as_the_likely_cause() {
    // rtl8139's driver (8139too) is not in the default module set.
    let lab = Lab::new(5, true);
    let devices = [
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device",
        "rtl8139,netdev=n0,mac=52:54:00:fe:05:01",
    ];
    let (console, hello) = lab.boot("", &devices, Duration::from_secs(90), |c| {
        c.contains("retrying in")
    });
    assert!(hello.is_none());
    assert!(
        console.contains(
            "FATAL: no Ethernet interface at all: is the NIC's driver module in the initramfs?"
        ),
        "{console}"
    );
    assert!(console.contains("retrying in 2 s"), "{console}");
}

#[test]
#[ignore = "needs root, QEMU and the built ramdisk"]
fn no_carrier_is_reported_and_retried() {
    let lab = Lab::new(6, true);
    let devices = [
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device",
        "virtio-net-pci,netdev=n0,mac=52:54:00:fe:06:01",
    ];
    // The cable is out from power-on: QEMU's link state for the NIC, set through its monitor.
    let (console, hello) = lab.boot_with_monitor(
        "",
        &devices,
        &["set_link n0 off"],
        Duration::from_secs(120),
        |c| c.contains("retrying in"),
    );
    assert!(hello.is_none());
    assert!(
        console.contains("FATAL: no carrier on eth0 after 30 s"),
        "{console}"
    );
    assert!(!console.contains("Kernel panic"), "{console}");
}
