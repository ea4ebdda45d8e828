//! Root device hints: which disk the image goes to.
//!
//! Same hints and semantics as metal3's `BareMetalHost.spec.rootDeviceHints`, as
//! baremetal-operator translates them for Ironic (`pkg/hardwareutils/devicehints`,
//! `MakeHintMap`) and as Ironic Python Agent matches them (`device_hints.find_devices_by_hints`):
//!
//! | metal3 hint | Ironic hint | match |
//! |---|---|---|
//! | `deviceName` | `by_path` if it starts with `/dev/disk/by-path/`, else `name` | equal (`s==`) |
//! | `hctl` | `hctl` | equal |
//! | `model`, `vendor` | same | the hint is a substring of the disk's value (`<in>`) |
//! | `serialNumber` | `serial` | equal |
//! | `wwn`, `wwnWithExtension`, `wwnVendorExtension` | same (snake case) | equal |
//! | `minSizeGigabytes` (0 = unset) | `size` | `>=`, in GiB (2^30 bytes) |
//! | `rotational` | same | equal |
//!
//! Ironic lower-cases and trims both sides before comparing strings, so matching is
//! case-insensitive; so is ours. A disk lacking the attribute a hint asks about never matches.
//! Empty strings are unset hints (Go's `omitempty`).
//!
//! Two deliberate differences from Ironic, both failing safe:
//! - several matching disks are an error listing the candidates (Ironic takes the first in
//!   its listing order, which depends on probe order);
//! - `deviceName` matches any of the disk's names (kernel name, by-path, the inventory's
//!   alternate names such as by-id links), not only the kernel name or by-path link.
//!
//! Without hints, [`default_root_device`] picks like IPA's `guess_root_disk`: the smallest disk
//! of at least 4 GiB, ties broken by name.

use std::fmt;

use agent_proto::Storage;
use serde::{Deserialize, Serialize};

const GIB: u64 = 1 << 30;
/// IPA's minimum size for a root disk picked without hints.
pub const DEFAULT_MIN_ROOT_BYTES: u64 = 4 * GIB;

/// metal3 `RootDeviceHints`. All hints given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RootDeviceHints {
    /// A Linux device name like `/dev/vda`, or a by-path link like
    /// `/dev/disk/by-path/pci-0000:01:00.0-scsi-0:2:0:0`; exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// SCSI address like `0:0:0:0`; exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hctl: Option<String>,
    /// Substring of the disk's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Substring of the disk's vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Exact serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Minimum size in GiB; 0 means no minimum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size_gigabytes: Option<u64>,
    /// Exact WWN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// Exact WWN with the vendor extension appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn_with_extension: Option<String>,
    /// Exact WWN vendor extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn_vendor_extension: Option<String>,
    /// Spinning media (true) or solid state (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
}

/// Why no single disk could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HintError {
    #[error("no disk matches the root device hints {hints}: {reasons}")]
    NoMatch { hints: String, reasons: String },
    #[error("{} disks match the root device hints {hints} ({}): add a hint that tells them apart, such as serialNumber, wwn or a by-path deviceName", candidates.len(), candidates.join(", "))]
    Ambiguous {
        hints: String,
        candidates: Vec<String>,
    },
    #[error("no root device hints, and no disk has at least 4 GiB (disks: {disks})")]
    NoDefault { disks: String },
}

/// One string hint after Ironic's normalisation (trimmed, lower-cased); `None` when unset.
fn norm(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Equal,
    Contains,
}

impl RootDeviceHints {
    /// True when no hint is set (after treating empty strings and a 0 size as unset).
    pub fn is_empty(&self) -> bool {
        self.string_hints().all(|(_, _, v)| v.is_none())
            && self.min_size_gigabytes.unwrap_or(0) == 0
            && self.rotational.is_none()
    }

    /// (name, operator, normalised value) for each string hint.
    fn string_hints(&self) -> impl Iterator<Item = (&'static str, Op, Option<String>)> + '_ {
        [
            ("deviceName", Op::Equal, &self.device_name),
            ("hctl", Op::Equal, &self.hctl),
            ("model", Op::Contains, &self.model),
            ("vendor", Op::Contains, &self.vendor),
            ("serialNumber", Op::Equal, &self.serial_number),
            ("wwn", Op::Equal, &self.wwn),
            ("wwnWithExtension", Op::Equal, &self.wwn_with_extension),
            ("wwnVendorExtension", Op::Equal, &self.wwn_vendor_extension),
        ]
        .into_iter()
        .map(|(name, op, v)| (name, op, norm(v)))
    }

    /// Every hint this disk fails, described briefly; empty when the disk matches.
    pub fn mismatches(&self, disk: &Storage) -> Vec<String> {
        let mut out = Vec::new();
        for (name, op, hint) in self.string_hints() {
            let Some(hint) = hint else { continue };
            let values: Vec<String> = match name {
                "deviceName" => disk_names(disk).map(|n| n.trim().to_lowercase()).collect(),
                _ => norm(disk_value(disk, name)).into_iter().collect(),
            };
            let ok = values.iter().any(|v| match op {
                Op::Equal => *v == hint,
                Op::Contains => v.contains(&hint),
            });
            if !ok {
                let shown = match name {
                    "deviceName" => "its names differ".to_string(),
                    _ => match disk_value(disk, name).as_deref() {
                        Some(v) if !v.trim().is_empty() => format!("{name} is {v:?}"),
                        _ => format!("no {name}"),
                    },
                };
                out.push(shown);
            }
        }
        if let Some(min) = self.min_size_gigabytes.filter(|&m| m > 0) {
            match disk.size_bytes {
                Some(size) if size >= 0 && size as u64 >= min.saturating_mul(GIB) => {}
                Some(size) => out.push(format!("{} GiB < {min} GiB", size.max(0) as u64 / GIB)),
                None => out.push("size unknown".into()),
            }
        }
        if let Some(want) = self.rotational {
            match disk.rotational {
                Some(r) if r == want => {}
                Some(r) => out.push(format!("rotational is {r}")),
                None => out.push("rotational unknown".into()),
            }
        }
        out
    }

    /// Whether the disk satisfies every hint.
    pub fn matches(&self, disk: &Storage) -> bool {
        self.mismatches(disk).is_empty()
    }
}

impl fmt::Display for RootDeviceHints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (name, op, hint) in self.string_hints() {
            if let Some(hint) = hint {
                let op = match op {
                    Op::Equal => "=",
                    Op::Contains => " contains ",
                };
                parts.push(format!("{name}{op}{hint:?}"));
            }
        }
        if let Some(min) = self.min_size_gigabytes.filter(|&m| m > 0) {
            parts.push(format!("minSizeGigabytes={min}"));
        }
        if let Some(r) = self.rotational {
            parts.push(format!("rotational={r}"));
        }
        write!(f, "{{{}}}", parts.join(", "))
    }
}

fn disk_value<'a>(disk: &'a Storage, hint: &str) -> &'a Option<String> {
    match hint {
        "hctl" => &disk.hctl,
        "model" => &disk.model,
        "vendor" => &disk.vendor,
        "serialNumber" => &disk.serial_number,
        "wwn" => &disk.wwn,
        "wwnWithExtension" => &disk.wwn_with_extension,
        "wwnVendorExtension" => &disk.wwn_vendor_extension,
        _ => unreachable!("not a per-disk string hint: {hint}"),
    }
}

fn disk_names(disk: &Storage) -> impl Iterator<Item = &str> {
    disk.name
        .iter()
        .chain(disk.alternate_names.iter())
        .map(String::as_str)
}

/// The disk's kernel name (`/dev/sda`) when the inventory has it, else its first name.
pub fn disk_label(disk: &Storage) -> String {
    disk_names(disk)
        .find(|n| n.starts_with("/dev/") && !n.starts_with("/dev/disk/"))
        .or_else(|| disk_names(disk).next())
        .unwrap_or("(unnamed disk)")
        .to_string()
}

/// The one disk matching `hints` (IPA's `get_os_install_device`). Empty hints fall back to
/// [`default_root_device`]. No match, or several, is an error saying why.
pub fn select_device<'a>(
    hints: &RootDeviceHints,
    disks: &'a [Storage],
) -> Result<&'a Storage, HintError> {
    if hints.is_empty() {
        return default_root_device(disks);
    }
    let mut matching = Vec::new();
    let mut reasons = Vec::new();
    for disk in disks {
        let why = hints.mismatches(disk);
        if why.is_empty() {
            matching.push(disk);
        } else {
            reasons.push(format!("{}: {}", disk_label(disk), why.join(", ")));
        }
    }
    match matching.as_slice() {
        [one] => Ok(one),
        [] => Err(HintError::NoMatch {
            hints: hints.to_string(),
            reasons: if reasons.is_empty() {
                "no disks were found".into()
            } else {
                reasons.join("; ")
            },
        }),
        many => Err(HintError::Ambiguous {
            hints: hints.to_string(),
            candidates: many.iter().map(|d| disk_label(d)).collect(),
        }),
    }
}

/// The root disk when no hints are given, as IPA's `guess_root_disk`: the smallest disk of at
/// least 4 GiB, ties broken by name.
pub fn default_root_device(disks: &[Storage]) -> Result<&Storage, HintError> {
    disks
        .iter()
        .filter_map(|d| Some((d.size_bytes?, d)))
        .filter(|(size, _)| *size >= DEFAULT_MIN_ROOT_BYTES as i64)
        .min_by(|(sa, a), (sb, b)| sa.cmp(sb).then_with(|| disk_label(a).cmp(&disk_label(b))))
        .map(|(_, d)| d)
        .ok_or_else(|| HintError::NoDefault {
            disks: if disks.is_empty() {
                "none".into()
            } else {
                disks
                    .iter()
                    .map(|d| match d.size_bytes {
                        Some(s) => format!("{} {} bytes", disk_label(d), s),
                        None => format!("{} of unknown size", disk_label(d)),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}
