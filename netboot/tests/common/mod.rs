//! Test lab: network namespaces joined by veth pairs, a ferrox-netboot server inside one of
//! them, real clients inside the others. Everything is torn down by Drop guards (namespaces
//! deleted, processes we started killed by PID), also when a test fails. Traffic never leaves
//! the namespaces the test created.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ip ARGS...`.
pub fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// A network namespace, deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(tag: &str) -> Ns {
        let name = format!(
            "fxnb-{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name]);
        let ns = Ns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// A command run inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// `ip -n NS ARGS...`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Joins `a`'s `a_if` to `b`'s `b_if` with a veth pair.
pub fn veth(a: &Ns, a_if: &str, b: &Ns, b_if: &str) {
    ip(&[
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// A child process killed (by its PID) and reaped on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let f = fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Proc {
            child,
            log: log.to_owned(),
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log().contains(needle) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "process exited ({st}) before logging {needle:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no {needle:?} within {timeout:?}:\n{}", self.log());
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `path` until it contains `needle`.
pub fn wait_file(path: &Path, needle: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let s = fs::read_to_string(path).unwrap_or_default();
        if s.contains(needle) {
            return s;
        }
        if start.elapsed() > timeout {
            panic!(
                "{} has no {needle:?} within {timeout:?}: {s:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub const SERVER_IP: &str = "10.77.0.1";
pub const KNOWN_MAC: &str = "52:54:00:aa:00:01";

/// Server and client namespaces on one link (server 10.77.0.1/24 on `srv0`, client `cli0`
/// with MAC [`KNOWN_MAC`]), a hosts file, a fake kernel and initramfs.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub server_ns: Ns,
    pub client: Ns,
}

impl Lab {
    pub fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let server_ns = Ns::new("srv");
        let client = Ns::new("cli");
        veth(&server_ns, "srv0", &client, "cli0");
        server_ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "srv0"]);
        client.ip(&["link", "set", "cli0", "address", KNOWN_MAC]);
        fs::write(
            dir.path().join("hosts.yaml"),
            format!(
                "hosts:\n  - mac: \"{KNOWN_MAC}\"\n    ip: 10.77.0.50\n    hostname: node-1\n    boot:\n      token: tok-123\n      controller_url: https://10.77.0.1:8443\n"
            ),
        )
        .unwrap();
        let kernel: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(dir.path().join("kernel"), &kernel).unwrap();
        fs::write(dir.path().join("initramfs"), b"initramfs bytes").unwrap();
        Lab {
            dir,
            server_ns,
            client,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts ferrox-netboot in the server namespace with `extra` flags and waits until it
    /// listens.
    pub fn server(&self, extra: &[&str]) -> Proc {
        let mut c = self.server_ns.cmd(env!("CARGO_BIN_EXE_ferrox-netboot"));
        c.args(["--hosts", self.path("hosts.yaml").to_str().unwrap()])
            .args(["--kernel", self.path("kernel").to_str().unwrap()])
            .args(["--initramfs", self.path("initramfs").to_str().unwrap()])
            .args(extra)
            .env("RUST_LOG", "debug");
        let mut p = Proc::spawn(c, &self.path("server.log"));
        p.wait_log("listening", Duration::from_secs(10));
        p
    }

    /// Gives the client a static address (10.77.0.9/24), for tests that are not about DHCP.
    pub fn client_addr(&self) {
        self.client
            .ip(&["addr", "add", "10.77.0.9/24", "dev", "cli0"]);
    }

    /// curl from the client namespace: (status, body).
    pub fn curl(&self, args: &[&str]) -> (u16, Vec<u8>) {
        self.curl_in(&self.client, args)
    }

    /// curl from `ns`: (status, body).
    pub fn curl_in(&self, ns: &Ns, args: &[&str]) -> (u16, Vec<u8>) {
        let body = self.path(&format!("curl-{}", SEQ.fetch_add(1, Ordering::SeqCst)));
        let out = run(ns
            .cmd("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-o",
                body.to_str().unwrap(),
                "-w",
                "%{http_code}",
            ])
            .args(args));
        let code = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        (code, fs::read(&body).unwrap_or_default())
    }

    pub fn metrics(&self) -> String {
        let (code, body) = self.curl_in(&self.server_ns, &["http://127.0.0.1:8080/metrics"]);
        assert_eq!(code, 200);
        String::from_utf8(body).unwrap()
    }
}

/// The value of `ferrox_netboot_{proto}_total{outcome="…"}` in a metrics page.
pub fn counter(metrics: &str, proto: &str, outcome: &str) -> u64 {
    let key = format!("ferrox_netboot_{proto}_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |v| v.trim().parse().unwrap())
}

pub const POOL: &str = "10.77.0.0/24,10.77.0.100-10.77.0.199,router=10.77.0.1";
