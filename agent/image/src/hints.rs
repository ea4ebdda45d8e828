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

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(kname: &str, by_path: &str, size_gib: i64, rotational: bool) -> Storage {
        Storage {
            name: Some(by_path.to_string()),
            alternate_names: vec![kname.to_string(), format!("/dev/disk/by-id/wwn-{kname}")],
            rotational: Some(rotational),
            size_bytes: Some(size_gib * GIB as i64),
            vendor: Some("ATA".into()),
            model: Some(format!("Samsung SSD 870 {kname}")),
            serial_number: Some(format!("S5-{}", kname.trim_start_matches("/dev/"))),
            wwn: Some(format!("0x5002538e{}", kname.len())),
            hctl: Some(format!("{}:0:0:0", kname.len() % 3)),
            ..Default::default()
        }
    }

    fn disks() -> Vec<Storage> {
        vec![
            disk(
                "/dev/sda",
                "/dev/disk/by-path/pci-0000:00:17.0-ata-1",
                480,
                false,
            ),
            disk(
                "/dev/sdb",
                "/dev/disk/by-path/pci-0000:00:17.0-ata-2",
                4000,
                true,
            ),
            Storage {
                name: Some("/dev/disk/by-path/pci-0000:01:00.0-nvme-1".into()),
                alternate_names: vec!["/dev/nvme0n1".into()],
                rotational: Some(false),
                size_bytes: Some(960 * GIB as i64),
                model: Some("Dell Ent NVMe".into()),
                serial_number: Some("NV123".into()),
                wwn: Some("eui.0025".into()),
                ..Default::default()
            },
            disk("/dev/sdc", "/dev/disk/by-path/usb-0:1", 2, false),
        ]
    }

    fn hints(json: &str) -> RootDeviceHints {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn table() {
        let disks = disks();
        // (hints, expected kernel name or an error substring)
        let cases: &[(&str, Result<&str, &str>)] = &[
            (r#"{"deviceName": "/dev/sdb"}"#, Ok("/dev/sdb")),
            (r#"{"deviceName": "/dev/nvme0n1"}"#, Ok("/dev/nvme0n1")),
            (
                r#"{"deviceName": "/dev/disk/by-path/pci-0000:00:17.0-ata-1"}"#,
                Ok("/dev/sda"),
            ),
            (
                r#"{"deviceName": "/dev/disk/by-id/wwn-/dev/sdc"}"#,
                Ok("/dev/sdc"),
            ),
            (r#"{"deviceName": "/dev/sdz"}"#, Err("no disk matches")),
            (r#"{"deviceName": "sda"}"#, Err("no disk matches")),
            (r#"{"serialNumber": "nv123"}"#, Ok("/dev/nvme0n1")),
            (r#"{"serialNumber": " NV123 "}"#, Ok("/dev/nvme0n1")),
            (
                r#"{"serialNumber": "NV12"}"#,
                Err("serialNumber is \"NV123\""),
            ),
            (r#"{"model": "nvme"}"#, Ok("/dev/nvme0n1")),
            (r#"{"model": "Samsung"}"#, Err("3 disks match")),
            (
                r#"{"model": "Samsung", "rotational": true}"#,
                Ok("/dev/sdb"),
            ),
            (
                r#"{"model": "Samsung", "minSizeGigabytes": 100, "rotational": false}"#,
                Ok("/dev/sda"),
            ),
            (
                r#"{"vendor": "ata", "minSizeGigabytes": 1000}"#,
                Ok("/dev/sdb"),
            ),
            (r#"{"vendor": "Dell"}"#, Err("no vendor")),
            (r#"{"minSizeGigabytes": 960}"#, Err("2 disks match")),
            (
                r#"{"minSizeGigabytes": 961, "rotational": false}"#,
                Err("960 GiB < 961 GiB"),
            ),
            (r#"{"minSizeGigabytes": 4000}"#, Ok("/dev/sdb")),
            (r#"{"wwn": "EUI.0025"}"#, Ok("/dev/nvme0n1")),
            (r#"{"wwnWithExtension": "x"}"#, Err("no wwnWithExtension")),
            (r#"{"hctl": "2:0:0:0"}"#, Err("3 disks match")),
            (
                r#"{"hctl": "2:0:0:0", "deviceName": "/dev/sdc"}"#,
                Ok("/dev/sdc"),
            ),
            (r#"{"rotational": true}"#, Ok("/dev/sdb")),
            // Unset hints (empty strings, size 0) fall back to the default choice.
            (r#"{"model": "", "minSizeGigabytes": 0}"#, Ok("/dev/sda")),
            (r#"{}"#, Ok("/dev/sda")),
        ];
        for (json, want) in cases {
            let h = hints(json);
            match (select_device(&h, &disks), want) {
                (Ok(d), Ok(name)) => assert_eq!(disk_label(d), *name, "{json}"),
                (Err(e), Err(text)) => {
                    assert!(e.to_string().contains(text), "{json}: {e}")
                }
                (got, want) => panic!("{json}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn errors_explain_each_disk() {
        let disks = disks();
        let e =
            select_device(&hints(r#"{"model": "intel", "rotational": true}"#), &disks).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                r#"no disk matches the root device hints {model contains "intel", rotational=true}"#
            ),
            "{msg}"
        );
        assert!(
            msg.contains(r#"/dev/sda: model is "Samsung SSD 870 /dev/sda", rotational is false"#),
            "{msg}"
        );
        assert!(msg.contains(r#"/dev/sdb: model is"#), "{msg}");
        let e = select_device(&hints(r#"{"rotational": false}"#), &disks).unwrap_err();
        assert_eq!(
            e,
            HintError::Ambiguous {
                hints: "{rotational=false}".into(),
                candidates: vec!["/dev/sda".into(), "/dev/nvme0n1".into(), "/dev/sdc".into()],
            }
        );
        assert!(select_device(&hints(r#"{"rotational": false}"#), &[])
            .unwrap_err()
            .to_string()
            .contains("no disks were found"));
    }

    #[test]
    fn unknown_fields_refused_and_metal3_shape_accepted() {
        assert!(serde_json::from_str::<RootDeviceHints>(r#"{"size": 10}"#).is_err());
        assert!(serde_json::from_str::<RootDeviceHints>(r#"{"serial": "x"}"#).is_err());
        let h = hints(
            r#"{"deviceName":"/dev/sda","hctl":"0:0:0:0","model":"m","vendor":"v","serialNumber":"s",
                "minSizeGigabytes":20,"wwn":"w","wwnWithExtension":"we","wwnVendorExtension":"wv","rotational":false}"#,
        );
        assert_eq!(h.min_size_gigabytes, Some(20));
        assert_eq!(h.wwn_vendor_extension.as_deref(), Some("wv"));
        assert!(!h.is_empty());
        assert!(hints(r#"{"deviceName": null, "model": ""}"#).is_empty());
    }

    #[test]
    fn default_root_device_like_ipa() {
        let mut disks = disks();
        assert_eq!(disk_label(default_root_device(&disks).unwrap()), "/dev/sda");
        // Ties on size: the name decides.
        disks.push(disk("/dev/sd0", "/dev/disk/by-path/x", 480, true));
        assert_eq!(disk_label(default_root_device(&disks).unwrap()), "/dev/sd0");
        // Exactly 4 GiB qualifies; anything smaller or of unknown size does not.
        let small = vec![
            Storage {
                size_bytes: Some(4 * GIB as i64 - 1),
                name: Some("/dev/a".into()),
                ..Default::default()
            },
            Storage {
                size_bytes: None,
                name: Some("/dev/b".into()),
                ..Default::default()
            },
            Storage {
                size_bytes: Some(4 * GIB as i64),
                name: Some("/dev/c".into()),
                ..Default::default()
            },
        ];
        assert_eq!(disk_label(default_root_device(&small).unwrap()), "/dev/c");
        let e = default_root_device(&small[..2]).unwrap_err().to_string();
        assert!(
            e.contains("/dev/a 4294967295 bytes, /dev/b of unknown size"),
            "{e}"
        );
        assert!(default_root_device(&[]).is_err());
    }
}
