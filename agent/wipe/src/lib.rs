//! Disk wipes, and the guard every destructive action passes first. **Everything here except
//! [`guard`] destroys data.**
//!
//! - [`guard`]: is this device safe to destroy? (read-only, mounted, held, removable, virtual)
//! - [`Mode::Metadata`]: erase every signature libblkid finds — on each partition of the
//!   partition table and on the whole disk — then zero the first and last MiB of the disk and
//!   of every partition, flush, and have the kernel re-read the (now empty) table.
//! - [`Mode::Full`]: the fastest erase the device really supports (NVMe crypto erase, sanitize
//!   or format; ATA security erase; secure discard; discard that reads back zeroes; offloaded
//!   write-zeroes; else a full overwrite with zeroes), chosen per device and reported.
//!
//! [`wipe_devices`] runs one thread per device; one device's failure never stops the others,
//! and each gets its own [`DeviceReport`].

pub mod guard;

mod error;
mod full;
mod metadata;
mod progress;
mod zero;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use error::WipeError;
pub use full::{plan, Capabilities, FullMethod, NvmeCaps, Plan};

/// What to erase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Signatures and partition tables only: fast (well under a second per disk), and enough
    /// that nothing (OS, installer, md, LVM, udev) recognises anything on the disk afterwards.
    Metadata,
    /// Every block: the data is unrecoverable through the device's interface afterwards.
    Full,
}

/// Called with progress events from the wipe threads.
pub type ProgressFn = Arc<dyn Fn(agent_proto::Progress) + Send + Sync>;

/// How to wipe.
#[derive(Clone)]
pub struct WipeOptions {
    pub mode: Mode,
    pub guard: guard::GuardPolicy,
    pub progress: Option<ProgressFn>,
}

impl fmt::Debug for WipeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WipeOptions")
            .field("mode", &self.mode)
            .field("guard", &self.guard)
            .field("progress", &self.progress.as_ref().map(|_| "callback"))
            .finish()
    }
}

/// One signature the metadata wipe erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErasedSignature {
    /// libblkid's TYPE or PTTYPE: `ext4`, `xfs`, `swap`, `crypto_LUKS`, `LVM2_member`,
    /// `linux_raid_member`, `vfat`, `gpt`, `PMBR`, `dos`...
    #[serde(rename = "type")]
    pub kind: String,
    /// libblkid's USAGE: `filesystem`, `raid`, `crypto`, `other`, `partition table`.
    pub usage: String,
    /// Byte offset of the magic from the start of the disk.
    pub offset: u64,
    /// `disk`, or `partition N` (N from the partition table).
    pub location: String,
    /// The partition number when the signature was inside a partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// The magic bytes that were erased, hex.
    pub magic: String,
}

/// A partition the disk had before the wipe, as the partition table said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FormerPartition {
    pub number: i32,
    /// Start in bytes from the start of the disk.
    pub start: u64,
    pub size: u64,
}

/// One erase method a full wipe considered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub method: FullMethod,
    /// `ok`, `failed` or `skipped`.
    pub outcome: String,
    /// Why it failed or was skipped (full error chain), or what it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The result for one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceReport {
    /// The device as given.
    pub device: PathBuf,
    pub ok: bool,
    pub mode: Mode,
    /// How the device was erased: `metadata` for a metadata wipe, the [`FullMethod`] name for
    /// a full one.
    pub method: Option<String>,
    pub size_bytes: Option<u64>,
    /// Signatures erased by a metadata wipe.
    pub erased: Vec<ErasedSignature>,
    /// Partitions the disk had (from its partition table) before a metadata wipe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<FormerPartition>,
    /// Methods a full wipe tried or skipped, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// Things worth knowing that are not failures (e.g. the kernel cannot re-read partitions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The full error chain on one line, when `ok` is false.
    pub error: Option<String>,
    pub seconds: f64,
}

impl DeviceReport {
    fn new(device: &Path, mode: Mode) -> Self {
        Self {
            device: device.to_path_buf(),
            ok: false,
            mode,
            method: None,
            size_bytes: None,
            erased: Vec::new(),
            partitions: Vec::new(),
            attempts: Vec::new(),
            notes: Vec::new(),
            error: None,
            seconds: 0.0,
        }
    }
}

/// The error and its sources, `: `-separated, on one line.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s.replace('\n', " ")
}

/// **Destroys data on every device.** Wipes all `devices` in parallel, one thread each, and
/// returns one report per device in the order given. A device that fails (refused by the
/// guard, busy, an I/O error) gets `ok: false` and its error; the others carry on. A device
/// listed twice (by any path resolving to the same node) is wiped once; the repeat fails.
pub fn wipe_devices(devices: &[PathBuf], opts: &WipeOptions) -> Vec<DeviceReport> {
    let mut first_of: HashMap<PathBuf, usize> = HashMap::new();
    let duplicate_of: Vec<Option<usize>> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let key = std::fs::canonicalize(d).unwrap_or_else(|_| d.clone());
            match first_of.get(&key) {
                Some(&j) => Some(j),
                None => {
                    first_of.insert(key, i);
                    None
                }
            }
        })
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .iter()
            .zip(&duplicate_of)
            .map(|(dev, dup)| {
                let dup = dup.map(|j| devices[j].clone());
                let handle = dup
                    .is_none()
                    .then(|| s.spawn(move || wipe_device(dev, opts)));
                (dev, dup, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(dev, dup, handle)| {
                if let Some(first) = dup {
                    let mut r = DeviceReport::new(dev, opts.mode);
                    r.error = Some(error_chain(&WipeError::Duplicate {
                        device: dev.clone(),
                        first,
                    }));
                    return r;
                }
                match handle.expect("spawned for non-duplicates").join() {
                    Ok(r) => r,
                    Err(_) => {
                        let mut r = DeviceReport::new(dev, opts.mode);
                        r.error = Some(error_chain(&WipeError::Panicked {
                            device: dev.clone(),
                        }));
                        r
                    }
                }
            })
            .collect()
    })
}

/// **Destroys data.** Wipes one device with the options' mode; for a full wipe, the methods
/// are chosen from what the device supports.
pub fn wipe_device(device: &Path, opts: &WipeOptions) -> DeviceReport {
    wipe_device_with(device, opts, None)
}

/// **Destroys data.** As [`wipe_device`]; for a full wipe, `only` restricts the methods to
/// those listed (in the usual order of preference). Tests and operators use it to force a
/// path, e.g. `Some(&[FullMethod::ZeroOverwrite])`.
pub fn wipe_device_with(
    device: &Path,
    opts: &WipeOptions,
    only: Option<&[FullMethod]>,
) -> DeviceReport {
    let start = Instant::now();
    let mut report = DeviceReport::new(device, opts.mode);
    let result = match opts.mode {
        Mode::Metadata => metadata::wipe(device, opts, &mut report),
        Mode::Full => full::wipe(device, opts, only, &mut report),
    };
    report.seconds = start.elapsed().as_secs_f64();
    match result {
        Ok(()) => {
            report.ok = true;
            tracing::info!(device = %device.display(), method = report.method.as_deref().unwrap_or(""), seconds = report.seconds, "wipe done");
        }
        Err(e) => {
            let chain = error_chain(&e);
            tracing::error!(device = %device.display(), error = %chain, "wipe failed");
            report.error = Some(chain);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_is_lowercase() {
        assert_eq!(
            serde_json::to_string(&Mode::Metadata).unwrap(),
            "\"metadata\""
        );
        assert_eq!(
            serde_json::from_str::<Mode>("\"full\"").unwrap(),
            Mode::Full
        );
    }

    #[test]
    fn error_chain_is_one_line() {
        let e = WipeError::Open {
            device: "/dev/sdb".into(),
            source: std::io::Error::from_raw_os_error(libc::EBUSY),
        };
        let s = error_chain(&e);
        assert!(
            s.starts_with("cannot open /dev/sdb read-write and exclusively: "),
            "{s}"
        );
        assert!(!s.contains('\n'));
    }

    #[test]
    fn missing_device_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("disk.img");
        std::fs::write(&good, vec![0u8; 4 << 20]).unwrap();
        let opts = WipeOptions {
            mode: Mode::Metadata,
            guard: guard::GuardPolicy {
                allow_regular_file: true,
                ..Default::default()
            },
            progress: None,
        };
        let reports = wipe_devices(
            &[dir.path().join("nope"), good.clone(), good.clone()],
            &opts,
        );
        assert_eq!(reports.len(), 3);
        assert!(!reports[0].ok);
        assert!(
            reports[0].error.as_deref().unwrap().contains("nope"),
            "{:?}",
            reports[0].error
        );
        assert!(reports[1].ok, "{:?}", reports[1].error);
        assert!(!reports[2].ok);
        assert!(reports[2]
            .error
            .as_deref()
            .unwrap()
            .contains("listed twice"));
        let json = serde_json::to_value(&reports[1]).unwrap();
        assert_eq!(json["mode"], "metadata");
        assert_eq!(json["method"], "metadata");
    }
}
