//! Running the controller's commands through the agent's libraries (inspection, wipe, image
//! write), and the command ledger that makes delivery idempotent: a command ID that was
//! started or finished is never run again — its state is reported instead — so a retried or
//! duplicated delivery never writes a disk twice. **Wipe and WriteImage destroy data.**

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use agent_image::hints::RootDeviceHints;
use agent_image::{ChecksumSpec, ImageError, WriteRequest};
use agent_inspect::Root;
use agent_proto::{Action, FullInventory, Outcome, Progress, WipeMode, WriteImage};
use agent_wipe::error_chain;
use agent_wipe::guard::GuardPolicy;

/// Receives progress from a running command (any thread).
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// What the ledger says about a command ID.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// New: run it (it is now marked running).
    Run,
    /// Already running: do not start it again.
    Running,
    /// Already finished: report this outcome again, do not run it.
    Done(Outcome),
}

/// Every command ID this agent has seen, and how it ended. Lives as long as the agent (a new
/// boot is a new token and a new enrollment, so IDs from before cannot arrive).
#[derive(Debug, Default)]
pub struct Ledger {
    entries: HashMap<String, Option<Outcome>>,
}

impl Ledger {
    /// Marks `id` running if it is new; otherwise says what it is.
    pub fn begin(&mut self, id: &str) -> Begin {
        match self.entries.get(id) {
            None => {
                self.entries.insert(id.to_string(), None);
                Begin::Run
            }
            Some(None) => Begin::Running,
            Some(Some(o)) => Begin::Done(o.clone()),
        }
    }

    /// Records how `id` ended.
    pub fn finish(&mut self, id: &str, outcome: Outcome) {
        self.entries.insert(id.to_string(), Some(outcome));
    }
}

/// Runs commands on this machine (or on a fixture root, for inspection in tests).
pub struct Executor {
    /// Where inspection reads /sys, /proc, /dev.
    pub root: Root,
    /// The guard every destructive command passes.
    pub guard: GuardPolicy,
    /// PEM bundle for image downloads (None: the built-in public roots).
    pub image_ca_bundle: Option<PathBuf>,
    ledger: Mutex<Ledger>,
    executed: AtomicUsize,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("root", &self.root)
            .field("executed", &self.executed())
            .finish_non_exhaustive()
    }
}

fn failed(reason: &str, message: impl Into<String>) -> Outcome {
    Outcome::Failed {
        reason: reason.into(),
        message: message.into(),
    }
}

/// The machine-readable class of an image write failure.
fn image_reason(e: &ImageError) -> &'static str {
    match e {
        ImageError::ChecksumMismatch { .. } => "checksum-mismatch",
        ImageError::Md5NotAllowed => "bad-command",
        ImageError::Url { .. }
        | ImageError::Download { .. }
        | ImageError::Tls(_)
        | ImageError::ChecksumFetch { .. }
        | ImageError::ChecksumFile { .. }
        | ImageError::ChecksumFileNotText { .. } => "image-download",
        _ => "write",
    }
}

/// DESTRUCTIVE: adds (or reuses) the config-2 partition at the end of `device` and writes the
/// config drive into it. Called only after the image was written and its checksum verified.
fn write_config_drive(device: &Path, gzip_base64: &str) -> Result<String, Outcome> {
    match agent_image::configdrive::write_config_drive(device, gzip_base64) {
        Ok(p) => Ok(format!(
            "config drive in partition {} ({} bytes at {})",
            p.number, p.size_bytes, p.start_bytes
        )),
        Err(e) => Err(failed("config-drive", error_chain(&e))),
    }
}

impl Executor {
    /// An executor for the live machine.
    pub fn host() -> Self {
        Self::new(Root::host(), GuardPolicy::default())
    }

    pub fn new(root: Root, guard: GuardPolicy) -> Self {
        Self {
            root,
            guard,
            image_ca_bundle: None,
            ledger: Mutex::new(Ledger::default()),
            executed: AtomicUsize::new(0),
        }
    }

    /// Asks the ledger about `id` (marking it running if new).
    pub fn begin(&self, id: &str) -> Begin {
        self.ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .begin(id)
    }

    /// Records how `id` ended.
    pub fn finish(&self, id: &str, outcome: Outcome) {
        self.ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .finish(id, outcome);
    }

    /// How many commands were actually run (not answered from the ledger).
    pub fn executed(&self) -> usize {
        self.executed.load(Ordering::Relaxed)
    }

    /// Runs one action, blocking. **Wipe and WriteImage destroy data.** PowerOff and Reboot
    /// only acknowledge here: the caller reports the outcome first, then shuts down.
    pub fn execute(&self, action: &Action, progress: ProgressFn) -> Outcome {
        self.executed.fetch_add(1, Ordering::Relaxed);
        match action {
            Action::Inspect => match agent_inspect::inspect(&self.root) {
                Ok(inv) => Outcome::Inventory {
                    inventory: Box::new(inv),
                },
                Err(e) => failed("inspect", error_chain(&e)),
            },
            Action::Wipe { mode, devices } => self.wipe(*mode, devices, progress),
            Action::WriteImage(w) => self.write_image(w, progress),
            Action::PowerOff => Outcome::Ok {
                summary: "powering off".into(),
                device: None,
            },
            Action::Reboot => Outcome::Ok {
                summary: "rebooting".into(),
                device: None,
            },
        }
    }

    fn inventory(&self) -> Result<FullInventory, Outcome> {
        agent_inspect::inspect(&self.root).map_err(|e| failed("inspect", error_chain(&e)))
    }

    fn wipe(&self, mode: WipeMode, devices: &[String], progress: ProgressFn) -> Outcome {
        let paths: Vec<PathBuf> = if devices.is_empty() {
            let inv = match self.inventory() {
                Ok(i) => i,
                Err(o) => return o,
            };
            inv.hardware
                .storage
                .iter()
                .filter_map(|s| agent_inspect::kernel_device(&inv, s.name.as_deref()?))
                .collect()
        } else {
            devices.iter().map(PathBuf::from).collect()
        };
        if paths.is_empty() {
            return failed("wipe", "no disks to wipe");
        }
        let opts = agent_wipe::WipeOptions {
            mode: match mode {
                WipeMode::Metadata => agent_wipe::Mode::Metadata,
                WipeMode::Full => agent_wipe::Mode::Full,
            },
            guard: self.guard.clone(),
            progress: Some(progress),
        };
        let reports = agent_wipe::wipe_devices(&paths, &opts);
        let bad: Vec<String> = reports
            .iter()
            .filter(|r| !r.ok)
            .map(|r| {
                format!(
                    "{}: {}",
                    r.device.display(),
                    r.error.as_deref().unwrap_or("failed")
                )
            })
            .collect();
        if !bad.is_empty() {
            return failed("wipe", bad.join("; "));
        }
        let done: Vec<String> = reports
            .iter()
            .map(|r| {
                format!(
                    "{} ({}, {} signatures)",
                    r.device.display(),
                    r.method.as_deref().unwrap_or("?"),
                    r.erased.len()
                )
            })
            .collect();
        Outcome::Ok {
            summary: format!("wiped {}", done.join(", ")),
            device: None,
        }
    }

    /// The device the image goes to: the hints applied to this machine's disks.
    fn root_device(&self, hints: Option<&serde_json::Value>) -> Result<PathBuf, Outcome> {
        let hints: RootDeviceHints = match hints {
            None => RootDeviceHints::default(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| failed("bad-command", format!("root device hints {v}: {e}")))?,
        };
        let inv = self.inventory()?;
        let disk = agent_image::hints::select_device(&hints, &inv.hardware.storage)
            .map_err(|e| failed("no-root-device", error_chain(&e)))?;
        let name = disk
            .name
            .as_deref()
            .ok_or_else(|| failed("no-root-device", "the matching disk has no device name"))?;
        agent_inspect::kernel_device(&inv, name)
            .ok_or_else(|| failed("no-root-device", format!("no device node for {name}")))
    }

    fn write_image(&self, w: &WriteImage, progress: ProgressFn) -> Outcome {
        let checksum: ChecksumSpec = match w.checksum.parse() {
            Ok(c) => c,
            Err(e) => {
                return failed(
                    "bad-command",
                    format!("checksum {:?}: {}", w.checksum, error_chain(&e)),
                )
            }
        };
        if let Some(f) = w.format.as_deref() {
            if !["raw", "qcow2"].contains(&f) {
                return failed(
                    "bad-command",
                    format!("image format {f:?}: expected raw or qcow2"),
                );
            }
        }
        let device = match self.root_device(w.root_device_hints.as_ref()) {
            Ok(d) => d,
            Err(o) => return o,
        };
        let mut req = WriteRequest::new(w.url.clone(), checksum, device.clone());
        req.ca_bundle = self.image_ca_bundle.clone();
        req.guard = self.guard.clone();
        req.progress = Some(progress);
        let report = match agent_image::write_image(&req) {
            Ok(r) => r,
            Err(e) => return failed(image_reason(&e), error_chain(&e)),
        };
        let drive = match w.config_drive.as_deref() {
            Some(cd) => match write_config_drive(&device, cd) {
                Ok(s) => format!("; {s}"),
                Err(o) => return o,
            },
            None => String::new(),
        };
        let cpu = report.cpu_seconds;
        Outcome::Ok {
            summary: format!(
                "wrote {} ({} bytes, {}) to {}, {} verified, in {:.1} s (CPU s per stage: \
                 download {:.1}, hash {:.1}, decode {:.1}, write {:.1}){drive}",
                report.url,
                report.disk_bytes,
                report.format,
                report.device.display(),
                report.checksum_algo,
                report.seconds,
                cpu.download,
                cpu.hash,
                cpu.decode,
                cpu.write
            ),
            device: Some(device.display().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Outcome {
        Outcome::Ok {
            summary: "s".into(),
            device: None,
        }
    }

    #[test]
    fn ledger_runs_each_id_once() {
        let mut l = Ledger::default();
        let steps: Vec<(&str, Option<Outcome>, Begin)> = vec![
            ("a", None, Begin::Run),
            ("a", None, Begin::Running),
            ("b", None, Begin::Run),
            ("a", Some(ok()), Begin::Done(ok())),
            ("a", None, Begin::Done(ok())),
            ("b", None, Begin::Running),
        ];
        for (i, (id, finish_first, want)) in steps.into_iter().enumerate() {
            if let Some(o) = finish_first {
                l.finish(id, o);
            }
            assert_eq!(l.begin(id), want, "step {i}");
        }
    }

    fn noop() -> ProgressFn {
        Arc::new(|_| {})
    }

    fn fixture() -> Root {
        Root::at(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../inspect/fixtures/firecracker-vm"
        ))
    }

    #[test]
    fn inspect_on_a_fixture_reports_its_inventory() {
        let e = Executor::new(fixture(), GuardPolicy::default());
        match e.execute(&Action::Inspect, noop()) {
            Outcome::Inventory { inventory } => {
                assert!(!inventory.hardware.nics.is_empty());
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(e.executed(), 1);
    }

    #[test]
    fn bad_write_image_commands_fail_before_touching_anything() {
        let e = Executor::new(fixture(), GuardPolicy::default());
        let w = |checksum: &str, format: Option<&str>, hints: Option<serde_json::Value>| {
            Action::WriteImage(WriteImage {
                url: "http://127.0.0.1:9/img".into(),
                checksum: checksum.into(),
                format: format.map(str::to_string),
                root_device_hints: hints,
                config_drive: None,
            })
        };
        let sha = format!("sha256:{}", "a".repeat(64));
        let cases = [
            (w("nope", None, None), "bad-command"),
            (w(&sha, Some("vmdk"), None), "bad-command"),
            (
                w(&sha, None, Some(serde_json::json!({"size": 1}))),
                "bad-command",
            ),
            (
                w(
                    &sha,
                    None,
                    Some(serde_json::json!({"serialNumber": "no-such-disk"})),
                ),
                "no-root-device",
            ),
        ];
        for (action, reason) in cases {
            match e.execute(&action, noop()) {
                Outcome::Failed { reason: r, message } => {
                    assert_eq!(r, reason, "{message}");
                    assert!(!message.is_empty());
                }
                o => panic!("{o:?}"),
            }
        }
    }

    #[test]
    fn a_config_drive_that_does_not_decode_fails_with_its_reason() {
        match write_config_drive(Path::new("/dev/null"), "not base64!") {
            Err(Outcome::Failed { reason, message }) => {
                assert_eq!(reason, "config-drive");
                assert!(!message.is_empty());
            }
            o => panic!("{o:?}"),
        }
    }
}
