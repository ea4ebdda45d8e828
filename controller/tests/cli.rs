//! The binary as an operator runs it: `run` on a manifest directory, `get` while it runs (through
//! the local API) and after it stopped (from the store). The host's BMC address uses a driver
//! Ferrox does not support, so the host ends in a registration error without any network traffic.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferrox-controller");

const HOSTS: &str = "apiVersion: v1
kind: Secret
metadata:
  name: node-0-bmc
stringData:
  username: admin
  password: hunter2
---
apiVersion: metal3.io/v1alpha1
kind: BareMetalHost
metadata:
  name: node-0
spec:
  online: true
  bootMACAddress: 52:54:00:00:00:01
  bmc:
    address: ipmi://192.0.2.1:623
    credentialsName: node-0-bmc
";

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(state: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("get")
        .args(args)
        .arg("--state")
        .arg(state)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_then_get_shows_the_host_as_kubectl_would() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("hosts.yaml"), HOSTS).unwrap();
    let log = std::fs::File::create(dir.path().join("controller.log")).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--manifests"])
        .arg(&manifests)
        .arg("--state")
        .arg(&state)
        .args([
            "--agent-listen",
            "127.0.0.1:0",
            "--agent-url",
            "https://127.0.0.1:9443",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let running = Running(child);
    let logtext = || std::fs::read_to_string(dir.path().join("controller.log")).unwrap_or_default();

    let t0 = Instant::now();
    let host = loop {
        let (ok, out, _) = get(&state, &["bmh", "node-0", "-o", "json"]);
        if ok {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            if v["status"]["errorType"] == "registration error" {
                break v;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no registration error; log:\n{}",
            logtext()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(host["kind"], "BareMetalHost");
    assert_eq!(host["status"]["provisioning"]["state"], "registering");
    assert_eq!(host["status"]["operationalStatus"], "error");
    let msg = host["status"]["errorMessage"].as_str().unwrap();
    assert!(msg.contains("ipmi driver is not supported"), "{msg}");
    assert!(!msg.contains("hunter2"));
    let healthy = host["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Healthy")
        .unwrap();
    assert_eq!(healthy["status"], "False");

    let (ok, table, err) = get(&state, &[]);
    assert!(ok, "{err}");
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "STATE", "CONSUMER", "ONLINE", "ERROR", "AGE"]
    );
    let row = lines.next().unwrap();
    assert!(row.starts_with("node-0 "), "{table}");
    assert!(
        row.contains("registering") && row.contains("registration error") && row.contains("true"),
        "{table}"
    );
    let (_, wide, _) = get(&state, &["-o", "wide"]);
    assert!(
        wide.contains("ipmi://192.0.2.1:623") && wide.contains("error"),
        "{wide}"
    );
    let (_, events, _) = get(&state, &["events"]);
    assert!(events.contains("RegistrationError"), "{events}");
    let (ok, events, err) = get(&state, &["events", "-o", "json"]);
    assert!(ok, "{err}");
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let reg = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == "RegistrationError")
        .unwrap_or_else(|| panic!("{events}"));
    assert_eq!(reg["type"], "Warning");
    assert_eq!(reg["involvedObject"]["kind"], "BareMetalHost");
    assert_eq!(reg["involvedObject"]["name"], "node-0");
    assert!(
        reg["lastTimestamp"].as_str().unwrap().ends_with('Z'),
        "{reg}"
    );
    let (ok, _, err) = get(&state, &["bmh", "nope"]);
    assert!(!ok && err.contains("not found"), "{err}");

    // The local API (netboot's feed) wants the bearer token; with it, the (empty) host list.
    let addr = std::fs::read_to_string(state.join("api.address")).unwrap();
    let token = std::fs::read_to_string(state.join("api.token")).unwrap();
    let ask = |auth: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr.trim()).unwrap();
        write!(
            s,
            "GET /v1/netboot/hosts HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(ask("").starts_with("HTTP/1.1 401"));
    assert!(ask("Authorization: Bearer wrong\r\n").starts_with("HTTP/1.1 401"));
    let ok = ask(&format!("Authorization: Bearer {}\r\n", token.trim()));
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.contains(r#""hosts":[]"#),
        "{ok}"
    );

    // Stopped, `get` reads the store itself.
    drop(running);
    let (ok, out, err) = get(&state, &["bmh", "default/node-0", "-o", "yaml"]);
    assert!(ok, "{err}");
    assert!(out.contains("errorType: registration error"), "{out}");
}

/// The Deployment's arguments are ones the binary takes: outside a cluster (no service account,
/// no KUBECONFIG) it gets past argument parsing and stops at the API connection, in one line.
#[test]
fn the_deployments_args_parse_and_kube_mode_says_what_it_needs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/controller/deployment.yaml");
    let d: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let args: Vec<String> = d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("the controller container has args")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args[..2], ["run", "--kube"]);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(args.iter().filter(|a| !a.starts_with("--state=")))
        .arg("--state")
        .arg(dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", dir.path().join("none"))
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ferrox-controller: connecting to the Kubernetes API"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // And --manifests with --kube is refused.
    let out = Command::new(BIN)
        .args([
            "run",
            "--kube",
            "--manifests",
            "x",
            "--agent-url",
            "https://h:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
