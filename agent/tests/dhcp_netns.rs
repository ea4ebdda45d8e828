//! The ramdisk's DHCP client (`ferrox-agent dhcp`) against the real peer, dnsmasq, across a
//! veth pair between two network namespaces this test creates (and removes). Needs root.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tests::ip;

const AGENT: &str = env!("CARGO_BIN_EXE_ferrox-agent");

/// Two namespaces joined by a veth pair; deleted on drop.
struct Pair {
    srv: String,
    cli: String,
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let id = format!("{}{}", tag, std::process::id() % 100_000);
        let p = Pair {
            srv: format!("fxs{id}"),
            cli: format!("fxc{id}"),
        };
        ip(&["netns", "add", &p.srv]);
        ip(&["netns", "add", &p.cli]);
        ip(&[
            "-n", &p.srv, "link", "add", "vs", "type", "veth", "peer", "name", "vc", "netns",
            &p.cli,
        ]);
        ip(&[
            "-n",
            &p.cli,
            "link",
            "set",
            "vc",
            "address",
            "52:54:00:fe:00:07",
        ]);
        ip(&["-n", &p.srv, "addr", "add", "10.77.0.1/24", "dev", "vs"]);
        ip(&["-n", &p.srv, "link", "set", "vs", "up"]);
        ip(&["-n", &p.srv, "link", "set", "lo", "up"]);
        p
    }

    fn in_cli(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.cli])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.srv])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.cli])
            .status();
    }
}

/// dnsmasq in the server namespace; killed (by its PID) on drop.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(ns: &str, dir: &Path) -> Dnsmasq {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "dnsmasq",
                "--no-daemon",
                "--port=0",
                "--interface=vs",
                "--bind-interfaces",
            ])
            .arg("--dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0,10m")
            .arg("--dhcp-host=52:54:00:fe:00:07,10.77.0.42,node-7")
            .arg("--dhcp-option=3,10.77.0.1")
            .arg("--dhcp-option=6,10.77.0.53")
            .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg("--log-dhcp")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (dnsmasq-base) is installed by hack/deps.sh");
        std::thread::sleep(Duration::from_millis(300));
        Dnsmasq(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        // `ip netns exec` execs dnsmasq, so this PID is dnsmasq's own.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs root and network namespaces"]
fn lease_from_dnsmasq_is_taken_and_configured() {
    let dir = tempfile::tempdir().unwrap();
    let pair = Pair::new("a");
    let _dnsmasq = Dnsmasq::start(&pair.srv, dir.path());
    let out = pair.in_cli(&[AGENT, "dhcp", "--interface", "vc", "--configure"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lease: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(lease["address"], "10.77.0.42", "{lease}");
    assert_eq!(lease["prefix"], 24);
    assert_eq!(lease["router"], "10.77.0.1");
    assert_eq!(lease["dns"][0], "10.77.0.53");
    assert_eq!(lease["server"], "10.77.0.1");
    assert_eq!(lease["lease_seconds"], 600);
    assert_eq!(lease["hostname"], "node-7");

    let addr = String::from_utf8(
        pair.in_cli(&["ip", "-4", "addr", "show", "dev", "vc"])
            .stdout,
    )
    .unwrap();
    assert!(addr.contains("inet 10.77.0.42/24"), "{addr}");
    let route = String::from_utf8(
        pair.in_cli(&["ip", "-4", "route", "show", "default"])
            .stdout,
    )
    .unwrap();
    assert!(route.contains("default via 10.77.0.1 dev vc"), "{route}");
    // The configured address really works: the server answers a ping from it.
    let ping = pair.in_cli(&["busybox", "ping", "-c", "1", "-W", "2", "10.77.0.1"]);
    assert!(
        ping.status.success(),
        "ping: {}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );
}

#[test]
#[ignore = "needs root and network namespaces"]
fn no_server_is_a_clear_error_after_the_attempts() {
    let pair = Pair::new("b");
    let t = std::time::Instant::now();
    let out = pair.in_cli(&[AGENT, "dhcp", "--interface", "vc", "--attempts", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DHCP on vc: no OFFER from any server after 2 attempts"),
        "{err}"
    );
    // 1 s + 2 s of waiting, not a hang.
    assert!(t.elapsed() < Duration::from_secs(20));
}
