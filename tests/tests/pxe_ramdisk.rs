//! Netboot and the ramdisk together, as a server boots for real: a QEMU VM (TCG) with an e1000
//! and its iPXE ROM powers on in a network namespace this test creates; ferrox-netboot (full
//! mode, static hosts file) answers its DHCP, serves undionly.kpxe over TFTP, the per-host iPXE
//! script, Debian's kernel and the ramdisk hack/build-initramfs.sh built; the agent comes up as
//! PID 1, gets its address from ferrox-netboot with its own DHCP client, and says hello to the
//! controller URL the script put on the kernel command line (a stand-in that records it).
//! Needs root; hack/test.sh builds the ramdisk first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::ip;
use tests::ramdisk::{artifacts, workspace, CONTROLLER_STAND_IN};

const MAC: &str = "52:54:00:fe:10:01";

/// ferrox-netboot as the test profile builds it (built here if `cargo test -p tests` ran alone).
fn netboot_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .current_dir(workspace())
        .args([
            "build",
            "-q",
            "--profile",
            "test",
            "-p",
            "ferrox-netboot",
            "--bin",
            "ferrox-netboot",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "building ferrox-netboot");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    target.join("debug/ferrox-netboot")
}

/// The namespace and everything started in it; killed by PID and removed on drop.
struct Ns {
    name: String,
    children: Vec<Child>,
}

impl Ns {
    fn spawn(&mut self, argv: &[&str], log: &Path) {
        let f = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        self.children.push(child);
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
#[ignore = "needs root, QEMU, the built ramdisk and network namespaces"]
fn pxe_boot_through_ferrox_netboot_into_the_agent() {
    let netboot = netboot_binary();
    let (kernel, initrd) = artifacts();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut ns = Ns {
        name: format!("fxpxe{}", std::process::id() % 100_000),
        children: Vec::new(),
    };
    ip(&["netns", "add", &ns.name]);
    for c in [
        "link add br0 type bridge",
        "addr add 10.81.0.1/24 dev br0",
        "link set br0 up",
        "link set lo up",
        "tuntap add tap0 mode tap",
        "link set tap0 master br0",
        "link set tap0 up",
    ] {
        let mut args = vec!["-n", ns.name.as_str()];
        args.extend(c.split(' '));
        ip(&args);
    }
    std::fs::write(
        d.join("hosts.yaml"),
        format!("hosts:\n  - mac: \"{MAC}\"\n    ip: 10.81.0.50\n    hostname: node-pxe\n    boot:\n      token: pxe-token-1\n"),
    )
    .unwrap();
    let listener = d.join("listen.py");
    std::fs::write(&listener, CONTROLLER_STAND_IN).unwrap();
    let hello_path = d.join("hello.json");
    ns.spawn(
        &[
            "python3",
            listener.to_str().unwrap(),
            "10.81.0.1",
            "8089",
            hello_path.to_str().unwrap(),
        ],
        &d.join("listener.log"),
    );
    ns.spawn(
        &[
            netboot.to_str().unwrap(),
            "--pool",
            "10.81.0.0/24,10.81.0.100-10.81.0.150,router=10.81.0.1",
            "--hosts",
            d.join("hosts.yaml").to_str().unwrap(),
            "--kernel",
            kernel.to_str().unwrap(),
            "--initramfs",
            initrd.to_str().unwrap(),
            "--cmdline",
            "console=ttyS0",
            "--controller-url",
            "http://10.81.0.1:8089",
        ],
        &d.join("netboot.log"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let serial = d.join("serial.log");
    let nic = format!("e1000,netdev=n0,mac={MAC}");
    let serial_arg = format!("file:{}", serial.display());
    let started = Instant::now();
    ns.spawn(
        &[
            "qemu-system-x86_64",
            "-machine",
            "pc",
            "-accel",
            "tcg",
            "-m",
            "256",
            "-smp",
            "1",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-serial",
            &serial_arg,
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device",
            &nic,
            "-boot",
            "n",
        ],
        &d.join("qemu.log"),
    );
    let hello: Value = loop {
        if let Some(h) = std::fs::read(&hello_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            break h;
        }
        let console = std::fs::read_to_string(&serial).unwrap_or_default();
        assert!(
            started.elapsed() < Duration::from_secs(240) && !console.contains("FATAL"),
            "no hello after {:?}\nconsole:\n{console}\nnetboot:\n{}",
            started.elapsed(),
            std::fs::read_to_string(d.join("netboot.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let took = started.elapsed();
    // The reservation from the hosts file, given by ferrox-netboot to the agent's own client.
    assert_eq!(hello["address"], "10.81.0.50", "{hello}");
    assert_eq!(hello["mac"], MAC);
    assert_eq!(hello["token"], "pxe-token-1");
    let nics = hello["inventory"]["hardware"]["nics"].as_array().unwrap();
    assert!(
        nics.iter().any(|n| n["mac"] == MAC && n["pxe"] == true),
        "BOOTIF marks the PXE NIC: {nics:?}"
    );
    println!(
        "power-on → agent hello through ferrox-netboot: {took:.1?} wall; agent ready {:.2} s after kernel start",
        hello["readyAfterSeconds"].as_f64().unwrap()
    );
}
