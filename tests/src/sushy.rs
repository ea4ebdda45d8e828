//! sushy-tools, the Redfish emulator Ironic's and metal3's CI use, run for tests in its
//! fake-driver mode on 127.0.0.1 (systems kept in a SQLite file; power changes land 1-11 s after
//! they are asked for, like real hardware). Installed by `hack/sushy-tools.sh` into a venv under
//! /opt, hence root.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The first fake system's UUID.
pub const SYSTEM: &str = "27946b59-9e44-4fa7-8e91-f3527a1ef094";
/// The second fake system's UUID (with `two_systems`).
pub const SECOND: &str = "1b7a3a2e-6cb0-4c4e-9d2b-6a4f7f0c1a55";
/// The user of the htpasswd file (with `basic_auth`).
pub const USER: &str = "admin";
/// Its password.
pub const PASSWORD: &str = "s3cret-Pa55";

/// Installs sushy-tools if needed; returns the venv's `sushy-emulator`.
pub fn sushy_emulator() -> PathBuf {
    let out = Command::new("bash")
        .arg(crate::ramdisk::workspace().join("hack/sushy-tools.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running hack/sushy-tools.sh");
    assert!(out.status.success(), "hack/sushy-tools.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Installs sushy-tools with libvirt-python (for its libvirt driver) if needed; returns the
/// venv's `sushy-emulator`.
pub fn sushy_emulator_with_libvirt() -> PathBuf {
    let out = Command::new("bash")
        .arg(crate::ramdisk::workspace().join("hack/sushy-tools.sh"))
        .arg("--libvirt")
        .stderr(Stdio::inherit())
        .output()
        .expect("running hack/sushy-tools.sh --libvirt");
    assert!(out.status.success(), "hack/sushy-tools.sh --libvirt failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// How to run the emulator.
#[derive(Default)]
pub struct Setup {
    /// Require HTTP basic auth ([`USER`], [`PASSWORD`]).
    pub basic_auth: bool,
    /// Serve HTTPS with a self-signed certificate.
    pub tls: bool,
    /// Two systems instead of one.
    pub two_systems: bool,
    /// Refuse power-off (sushy's own setting).
    pub disable_power_off: bool,
}

/// A running emulator on 127.0.0.1; killed (by PID) when dropped.
pub struct Emulator {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    /// PEM of the self-signed certificate, with TLS.
    pub cert_pem: Option<String>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Emulator {
    /// Starts it and waits until it listens.
    pub fn start(setup: Setup) -> Emulator {
        let emulator = sushy_emulator();
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut systems = vec![format!(
            "{{'uuid': '{SYSTEM}', 'name': 'node-0', 'power_state': 'Off', 'nics': [{{'mac': '00:5c:52:31:3a:9c', 'ip': '172.22.0.100'}}]}}"
        )];
        if setup.two_systems {
            systems.push(format!(
                "{{'uuid': '{SECOND}', 'name': 'node-1', 'power_state': 'Off', 'nics': [{{'mac': '00:5c:52:31:3a:9d', 'ip': '172.22.0.101'}}]}}"
            ));
        }
        let mut conf = format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_FAKE_DRIVER = True\n\
             SUSHY_EMULATOR_STATE_DIR = '{state}'\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = [{systems}]\n",
            state = dir.path().join("state").display(),
            systems = systems.join(", "),
        );
        if setup.disable_power_off {
            conf.push_str("SUSHY_EMULATOR_DISABLE_POWER_OFF = True\n");
        }
        if setup.basic_auth {
            let python = emulator.with_file_name("python");
            let out = Command::new(python)
                .args([
                    "-c",
                    "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt()).decode())",
                    PASSWORD,
                ])
                .output()
                .unwrap();
            assert!(out.status.success(), "bcrypt in the venv");
            let hash = String::from_utf8(out.stdout).unwrap();
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{USER}:{}\n", hash.trim())).unwrap();
            conf.push_str(&format!(
                "SUSHY_EMULATOR_AUTH_FILE = '{}'\n",
                htpasswd.display()
            ));
        }
        let mut cert_pem = None;
        if setup.tls {
            let ck =
                rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                    .unwrap();
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&cert, ck.cert.pem()).unwrap();
            std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
            conf.push_str(&format!(
                "SUSHY_EMULATOR_SSL_CERT = '{}'\nSUSHY_EMULATOR_SSL_KEY = '{}'\n",
                cert.display(),
                key.display()
            ));
            cert_pem = Some(ck.cert.pem());
        }
        let conf_path = dir.path().join("emulator.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("emulator.log")).unwrap();
        let child = Command::new(&emulator)
            .arg("--config")
            .arg(&conf_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting sushy-emulator");
        let mut emu = Emulator {
            child,
            port,
            dir,
            cert_pem,
        };
        emu.wait_listening();
        emu
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sushy-emulator exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sushy-emulator not listening: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }

    /// `scheme://127.0.0.1:PORT[/redfish/v1/Systems/ID]`.
    pub fn address(&self, scheme: &str, system: Option<&str>) -> String {
        let path = system
            .map(|s| format!("/redfish/v1/Systems/{s}"))
            .unwrap_or_default();
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }
}
