//! Disks from /sys/block, in metal3's `Storage` shape plus Ferrox's `DiskExtra`.
//!
//! Naming follows baremetal-operator's conversion of IPA's inventory: `name` is the
//! /dev/disk/by-path link when there is one, else `/dev/KNAME`; `alternateNames` starts with
//! `/dev/KNAME` and the by-path link (exactly what BMO emits), followed by the other
//! persistent names (ATA compat by-path, by-id). Since the ramdisk has no udev, missing
//! /dev/disk links are synthesized from sysfs the way udev would name them — so a `name` may
//! be a path that does not exist on the ramdisk: open `/dev/{ferrox_extra.disks[i].kname}`.
//!
//! Type follows BMO: HDD when rotational (even NVMe), else NVME for `nvme*`, else SSD.
//! `wwn` is what IPA's lsblk reports (ID_WWN_WITH_EXTENSION, falling back to ID_WWN).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agent_proto::{DiskExtra, DiskType, Storage};

use crate::bypath;
use crate::fsread::{self, link_basename, list_dir, read_limited, read_str, read_u64};
use crate::vpd::{self, Wwn};
use crate::Root;

/// Whether a /sys/block entry is a disk we report.
fn is_candidate(sys_block: &Path, kname: &str) -> bool {
    const SKIP: [&str; 7] = ["ram", "zram", "sr", "fd", "dm-", "md", "drbd"];
    if SKIP.iter().any(|p| kname.starts_with(p)) {
        return false;
    }
    if kname.starts_with("mmcblk") && (kname.contains("boot") || kname.contains("rpmb")) {
        return false;
    }
    let dir = sys_block.join(kname);
    // NVMe multipath paths (nvme0c0n1) are hidden; the head device is reported instead.
    if read_str(&dir.join("hidden")).as_deref() == Some("1") {
        return false;
    }
    // Loop devices are reported only while attached to a file, so operators (and tests on
    // dev machines) can target one like a disk; detached ones are noise.
    if kname.starts_with("loop") && !dir.join("loop/backing_file").exists() {
        return false;
    }
    // IPA ignores empty devices (unattached nbd, virtual floppies, card readers).
    read_u64(&dir.join("size")).is_some_and(|s| s > 0)
}

/// Real /dev/disk/<kind> links, as kname → link names.
fn dev_links(dev: &Path, kind: &str) -> Option<BTreeMap<String, Vec<String>>> {
    let dir = dev.join("disk").join(kind);
    let rd = std::fs::read_dir(&dir).ok()?;
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(target) = link_basename(&e.path()) {
            map.entry(target).or_default().push(name);
        }
    }
    for v in map.values_mut() {
        v.sort();
    }
    Some(map)
}

/// Transport, lsblk-style.
fn transport(components: &[&str], kname: &str) -> Option<&'static str> {
    if kname.starts_with("nvme") {
        Some("nvme")
    } else if components
        .iter()
        .any(|c| c.starts_with("ata") && c[3..].chars().all(|d| d.is_ascii_digit()) && c.len() > 3)
    {
        Some("sata")
    } else if components.iter().any(|c| c.starts_with("end_device-")) {
        Some("sas")
    } else if components.iter().any(|c| c.starts_with("usb")) {
        Some("usb")
    } else if kname.starts_with("vd") {
        Some("virtio")
    } else if kname.starts_with("sd") {
        Some("scsi")
    } else if kname.starts_with("mmcblk") {
        Some("mmc")
    } else {
        None
    }
}

fn underscore(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join("_")
}

/// One disk, both views, and the synthesized by-id names (for tests).
pub(crate) fn inspect_disk(root: &Root, kname: &str, links: &Links) -> (Storage, DiskExtra) {
    let sys_block = root.sys.join("block");
    let dir = sys_block.join(kname);
    let device = dir.join("device");
    let canon_devices = fsread::canonical(&root.sys.join("devices"));
    let real = fsread::canonical(&dir);
    let under_devices = |p: &Option<PathBuf>| -> Option<PathBuf> {
        match (p, &canon_devices) {
            (Some(r), Some(d)) => r.strip_prefix(d).ok().map(Path::to_path_buf),
            _ => None,
        }
    };
    let mut rel = under_devices(&real);
    // NVMe native multipath: the namespace head lives under
    // virtual/nvme-subsystem/nvme-subsysN/, next to links to its controllers. Like udev's
    // path_id, name it after a controller (the first) so it still gets a PCI path.
    if rel
        .as_ref()
        .is_some_and(|r| r.starts_with("virtual/nvme-subsystem"))
    {
        let subsys = real
            .as_ref()
            .and_then(|r| r.parent())
            .map(Path::to_path_buf);
        let ctrl = subsys.as_ref().and_then(|d| {
            list_dir(d).into_iter().find_map(|n| {
                let is_ctrl = n.len() > 4
                    && n.starts_with("nvme")
                    && n[4..].chars().all(|c| c.is_ascii_digit());
                is_ctrl
                    .then(|| under_devices(&fsread::canonical(&d.join(&n))))
                    .flatten()
            })
        });
        if let Some(ctrl_path) = ctrl {
            rel = Some(ctrl_path.join(kname));
        }
    }
    let rel_s = rel
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let components: Vec<&str> = rel_s.split('/').filter(|s| !s.is_empty()).collect();
    let tran = transport(&components, kname);

    let size = read_u64(&dir.join("size")).map(|s| s.saturating_mul(512));
    let rotational = read_u64(&dir.join("queue/rotational")).map(|r| r == 1);
    let page = |n: &str| read_limited(&device.join(n), 4096).ok();
    let ata = if tran == Some("sata") {
        page("vpd_pg89").and_then(|p| vpd::parse_vpd89(&p))
    } else {
        None
    };
    let vpd83 = page("vpd_pg83");

    let vendor = read_str(&device.join("vendor"));
    let model = ata
        .as_ref()
        .and_then(|a| a.model.clone())
        .or_else(|| read_str(&device.join("model")));
    let serial = match tran {
        Some("nvme") => read_str(&device.join("serial")),
        Some("virtio") => read_str(&dir.join("serial")),
        _ => ata
            .as_ref()
            .and_then(|a| a.serial.clone())
            .or_else(|| page("vpd_pg80").and_then(|p| vpd::parse_vpd80(&p))),
    };
    let nvme_wwid = if tran == Some("nvme") {
        read_str(&dir.join("wwid")).or_else(|| read_str(&device.join("wwid")))
    } else {
        None
    };
    let wwn: Option<Wwn> = if tran == Some("nvme") {
        None
    } else {
        vpd83
            .as_deref()
            .and_then(vpd::wwn_from_vpd83)
            .or_else(|| read_str(&device.join("wwid")).and_then(|w| vpd::wwn_from_wwid(&w)))
            .or_else(|| {
                ata.as_ref().and_then(|a| a.wwn.clone()).map(|w| Wwn {
                    wwn: w.clone(),
                    vendor_extension: None,
                    with_extension: w,
                })
            })
    };
    let hctl = list_dir(&device.join("scsi_device"))
        .into_iter()
        .next()
        .or_else(|| {
            let d = fsread::canonical(&device)?;
            let n = d.file_name()?.to_string_lossy().into_owned();
            (n.split(':').count() == 4 && n.split(':').all(|p| p.parse::<u32>().is_ok()))
                .then_some(n)
        });

    // by-path: udev's links when present, else computed.
    let attr = |i: usize, file: &str| -> Option<String> {
        let base = canon_devices.as_ref()?.join(components[..=i].join("/"));
        if file.is_empty() {
            Some(list_dir(&base).join("\n"))
        } else {
            read_str(&base.join(file))
        }
    };
    let synth = bypath::synthesize(&components, &attr);
    let (by_path_primary, by_path_rest): (Option<String>, Vec<String>) =
        match links.by_path.as_ref() {
            Some(map) => {
                let mut names = map.get(kname).cloned().unwrap_or_default();
                let primary = match &synth.primary {
                    Some(p) if names.contains(p) => Some(p.clone()),
                    _ => names.first().cloned(),
                };
                names.retain(|n| Some(n) != primary.as_ref());
                (primary, names)
            }
            None => (
                synth.primary.clone(),
                synth.compat.clone().into_iter().collect(),
            ),
        };
    let by_id: Vec<String> = match links.by_id.as_ref() {
        Some(map) => map.get(kname).cloned().unwrap_or_default(),
        None => {
            let mut ids = Vec::new();
            match tran {
                Some("sata") => {
                    if let (Some(m), Some(s)) = (&model, &serial) {
                        ids.push(format!("ata-{}_{}", underscore(m), underscore(s)));
                    }
                }
                Some("nvme") => {
                    if let (Some(m), Some(s)) = (&model, &serial) {
                        ids.push(format!("nvme-{}_{}", underscore(m), underscore(s)));
                    }
                    if let Some(w) = &nvme_wwid {
                        ids.push(format!("nvme-{}", underscore(w)));
                    }
                }
                Some("virtio") => {
                    if let Some(s) = &serial {
                        ids.push(format!("virtio-{}", underscore(s)));
                    }
                }
                Some(_) => {
                    if let Some(id) = vpd83.as_deref().and_then(vpd::scsi_id_serial) {
                        ids.push(format!("scsi-{id}"));
                    }
                }
                None => {}
            }
            if let Some(w) = &wwn {
                if tran != Some("nvme") {
                    ids.push(format!("wwn-{}", w.with_extension));
                }
            }
            ids.sort();
            ids
        }
    };

    let dev_name = format!("/dev/{kname}");
    let mut alternate = vec![dev_name.clone()];
    alternate.extend(
        by_path_primary
            .iter()
            .map(|p| format!("/dev/disk/by-path/{p}")),
    );
    alternate.extend(
        by_path_rest
            .iter()
            .map(|p| format!("/dev/disk/by-path/{p}")),
    );
    alternate.extend(by_id.iter().map(|p| format!("/dev/disk/by-id/{p}")));
    let name = by_path_primary
        .as_ref()
        .map(|p| format!("/dev/disk/by-path/{p}"))
        .unwrap_or(dev_name);

    let disk_type = if rotational == Some(true) {
        DiskType::Hdd
    } else if kname.starts_with("nvme") {
        DiskType::Nvme
    } else {
        DiskType::Ssd
    };
    let (wwn_s, wwn_ext, wwn_with) = match (&wwn, &nvme_wwid) {
        (Some(w), _) => (
            Some(w.with_extension.clone()),
            w.vendor_extension.clone(),
            Some(w.with_extension.clone()),
        ),
        (None, Some(id)) => (Some(id.clone()), None, None),
        (None, None) => (None, None, None),
    };
    let storage = Storage {
        name: Some(name),
        alternate_names: alternate,
        rotational,
        disk_type: Some(disk_type),
        size_bytes: size.and_then(|s| i64::try_from(s).ok()),
        vendor,
        model,
        serial_number: serial,
        wwn: wwn_s,
        wwn_vendor_extension: wwn_ext,
        wwn_with_extension: wwn_with,
        hctl,
    };
    let partitions = list_dir(&dir)
        .into_iter()
        .filter(|p| dir.join(p).join("partition").exists())
        .collect();
    let extra = DiskExtra {
        kname: kname.to_string(),
        removable: read_u64(&dir.join("removable")) == Some(1),
        read_only: read_u64(&dir.join("ro")) == Some(1),
        logical_block_size: read_u64(&dir.join("queue/logical_block_size"))
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(512),
        physical_block_size: read_u64(&dir.join("queue/physical_block_size"))
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(512),
        transport: tran.map(str::to_string),
        holders: list_dir(&dir.join("holders")),
        partitions,
        discard: read_u64(&dir.join("queue/discard_max_bytes")).is_some_and(|d| d > 0),
    };
    (storage, extra)
}

/// Existing /dev/disk links (None: the directory doesn't exist, so names are synthesized).
pub(crate) struct Links {
    by_path: Option<BTreeMap<String, Vec<String>>>,
    by_id: Option<BTreeMap<String, Vec<String>>>,
}

/// All disks, in natural kernel-name order; `Storage` and `DiskExtra` index-aligned.
pub fn scan(root: &Root) -> (Vec<Storage>, Vec<DiskExtra>) {
    let sys_block = root.sys.join("block");
    let links = Links {
        by_path: dev_links(&root.dev, "by-path"),
        by_id: dev_links(&root.dev, "by-id"),
    };
    let mut storage = Vec::new();
    let mut extra = Vec::new();
    for kname in list_dir(&sys_block) {
        if !is_candidate(&sys_block, &kname) {
            tracing::debug!(device = %kname, "not a disk we report");
            continue;
        }
        let (s, e) = inspect_disk(root, &kname, &links);
        storage.push(s);
        extra.push(e);
    }
    (storage, extra)
}
