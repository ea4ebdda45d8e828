//! udev-style `/dev/disk/by-path` names computed from a block device's sysfs path, because the
//! ramdisk has no udev. Follows systemd's `path_id` builtin (v246+):
//!
//! | device | ID_PATH |
//! |---|---|
//! | SATA behind AHCI | `pci-0000:00:1f.2-ata-1.0` (compat link `pci-0000:00:1f.2-ata-1`) |
//! | NVMe namespace | `pci-0000:03:00.0-nvme-1` |
//! | virtio-blk | `pci-0000:00:05.0` (legacy link `virtio-pci-0000:00:05.0`) |
//! | SAS | `pci-0000:02:00.0-sas-0x5000c500a1b2c3d4-lun-0` |
//! | other SCSI (RAID HBA, virtio-scsi) | `pci-0000:02:00.0-scsi-0:2:0:0` |
//! | USB storage | `pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0` |
//!
//! Only the closest PCI device counts (bridges above it are skipped, as udev does). Devices with
//! no supported transport or no PCI parent (loop, ram, platform MMC) get no name.

/// Reads an attribute `file` of the device at `components[..=index]`.
pub type AttrFn<'a> = &'a dyn Fn(usize, &str) -> Option<String>;

/// The by-path names for a block device.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ByPath {
    /// ID_PATH: the link udev creates today.
    pub primary: Option<String>,
    /// Older-format link udev still creates (ATA only).
    pub compat: Option<String>,
}

fn is_pci_addr(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

fn hctl(s: &str) -> Option<[u32; 4]> {
    let parts: Vec<u32> = s
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<Vec<_>>>()?;
    <[u32; 4]>::try_from(parts).ok()
}

fn numbered(s: &str, prefix: &str) -> Option<u32> {
    s.strip_prefix(prefix)?.parse().ok()
}

/// A USB interface name like `1-1.2:1.0`.
fn is_usb_interface(s: &str) -> bool {
    let Some((bus, rest)) = s.split_once('-') else {
        return false;
    };
    bus.chars().all(|c| c.is_ascii_digit()) && !bus.is_empty() && rest.contains(':')
}

/// Computes by-path names from the device's path under /sys/devices, split into components
/// (e.g. `["pci0000:00", "0000:00:1f.2", "ata1", "host0", "target0:0:0", "0:0:0:0", "block",
/// "sda"]`), the kernel name last. `attr(i, file)` reads `file` in the directory of
/// `components[..=i]`; `attr(i, "")` lists that directory, one name per line.
pub fn synthesize(c: &[&str], attr: AttrFn<'_>) -> ByPath {
    // `…/DEVICE/block/KNAME`, except NVMe namespaces which sit right under the controller
    // (`…/nvme/nvme0/nvme0n1`).
    let n = c.len();
    if n < 3 {
        return ByPath::default();
    }
    let kname_at = n - 1;
    let kname = c[kname_at];
    let dev = if c[n - 2] == "block" { n - 3 } else { n - 2 };
    let mut suffix = String::new();
    let mut compat_suffix: Option<String> = None;
    // Index from which to search upwards for usb/pci parents.
    let above;
    let virtio_blk = numbered(c[dev], "virtio").is_some();
    if virtio_blk {
        above = dev;
    } else if numbered(c[dev], "nvme").is_some() && dev >= 1 && c[dev - 1] == "nvme" {
        let nsid = attr(kname_at, "nsid")
            .or_else(|| kname.rsplit_once('n').map(|(_, n)| n.to_string()))
            .filter(|n| n.chars().all(|ch| ch.is_ascii_digit()) && !n.is_empty());
        let Some(nsid) = nsid else {
            return ByPath::default();
        };
        suffix = format!("-nvme-{nsid}");
        above = dev - 1;
    } else if let Some([host, bus, target, lun]) = hctl(c[dev]) {
        if let Some(ata) = c[..dev].iter().rposition(|x| numbered(x, "ata").is_some()) {
            let Some(port) = attr(ata, &format!("ata_port/{}/port_no", c[ata])) else {
                return ByPath::default();
            };
            suffix = if bus != 0 {
                format!("-ata-{port}.{bus}.0")
            } else {
                format!("-ata-{port}.{target}")
            };
            compat_suffix = Some(format!("-ata-{port}"));
            above = ata;
        } else if let Some(end) = c[..dev].iter().rposition(|x| x.starts_with("end_device-")) {
            let Some(addr) = attr(end, &format!("sas_device/{}/sas_address", c[end])) else {
                return ByPath::default();
            };
            suffix = format!("-sas-{addr}-lun-{lun}");
            // Skip the whole SAS topology (phys, ports, expanders) down to the HBA's host.
            let Some(h) = c[..end].iter().rposition(|x| numbered(x, "host").is_some()) else {
                return ByPath::default();
            };
            above = h;
        } else {
            // handle_scsi_default: host numbers are made relative to the lowest-numbered host
            // on the same parent, so they survive other HBAs probing first.
            let Some(h) = c[..dev].iter().rposition(|x| numbered(x, "host").is_some()) else {
                return ByPath::default();
            };
            let base = attr(h.saturating_sub(1), "")
                .and_then(|listing| {
                    listing
                        .split('\n')
                        .filter_map(|n| numbered(n, "host"))
                        .min()
                })
                .unwrap_or(host)
                .min(host);
            suffix = format!("-scsi-{}:{bus}:{target}:{lun}", host - base);
            above = h;
        }
    } else {
        return ByPath::default();
    }
    // Walk up: at most one usb segment, then the closest PCI device.
    let mut middle = String::new();
    for i in (0..above).rev() {
        let comp = c[i];
        if is_usb_interface(comp) && middle.is_empty() {
            let port = comp.split_once('-').map(|(_, p)| p).unwrap_or_default();
            middle = format!("-usb-0:{port}");
        } else if is_pci_addr(comp) {
            let head = format!("pci-{comp}{middle}");
            let primary = format!("{head}{suffix}");
            // 60-persistent-storage.rules keeps a legacy `virtio-pci-…` link for virtio-blk.
            let compat = match compat_suffix {
                Some(s) => Some(format!("{head}{s}")),
                None if virtio_blk => Some(format!("virtio-{primary}")),
                None => None,
            };
            return ByPath {
                primary: Some(primary),
                compat,
            };
        }
    }
    ByPath::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(p: &str) -> Vec<&str> {
        p.split('/').collect()
    }

    fn attrs(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(usize, &str) -> Option<String> {
        move |_, file| {
            pairs
                .iter()
                .find(|(f, _)| *f == file)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn ahci_sata() {
        let c = split("pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0/block/sdb");
        let a = attrs(&[("ata_port/ata3/port_no", "3")]);
        let p = synthesize(&c, &a);
        assert_eq!(p.primary.as_deref(), Some("pci-0000:00:1f.2-ata-3.0"));
        assert_eq!(p.compat.as_deref(), Some("pci-0000:00:1f.2-ata-3"));
        // Behind a port multiplier (bus != 0).
        let c = split("pci0000:00/0000:00:1f.2/ata3/host2/target2:1:0/2:1:0:0/block/sdc");
        assert_eq!(
            synthesize(&c, &a).primary.as_deref(),
            Some("pci-0000:00:1f.2-ata-3.1.0")
        );
        // No port_no recorded: no guess.
        assert_eq!(synthesize(&c, &attrs(&[])), ByPath::default());
    }

    #[test]
    fn nvme_behind_bridge() {
        let c = split("pci0000:00/0000:00:01.1/0000:03:00.0/nvme/nvme0/nvme0n2");
        assert_eq!(
            synthesize(&c, &attrs(&[("nsid", "2")])).primary.as_deref(),
            Some("pci-0000:03:00.0-nvme-2")
        );
        assert_eq!(
            synthesize(&c, &attrs(&[])).primary.as_deref(),
            Some("pci-0000:03:00.0-nvme-2")
        );
    }

    #[test]
    fn virtio_blk_and_scsi() {
        let c = split("pci0000:00/0000:00:02.0/virtio1/block/vda");
        assert_eq!(
            synthesize(&c, &attrs(&[])).primary.as_deref(),
            Some("pci-0000:00:02.0")
        );
        let c = split("pci0000:00/0000:00:05.0/virtio3/host2/target2:0:1/2:0:1:0/block/sda");
        let listing =
            |i: usize, f: &str| (i == 2 && f.is_empty()).then(|| "host2\nhost3\n".to_string());
        assert_eq!(
            synthesize(&c, &listing).primary.as_deref(),
            Some("pci-0000:00:05.0-scsi-0:0:1:0")
        );
    }

    #[test]
    fn raid_hba_relative_host_number() {
        let c = split("pci0000:00/0000:00:02.0/0000:02:00.0/host4/target4:2:0/4:2:0:0/block/sda");
        let listing = |i: usize, f: &str| {
            (i == 2 && f.is_empty()).then(|| "host4\npower\nhost5\n".to_string())
        };
        let p = synthesize(&c, &listing);
        assert_eq!(p.primary.as_deref(), Some("pci-0000:02:00.0-scsi-0:2:0:0"));
        assert_eq!(p.compat, None);
        // Without a listing the host number is used as is… relative to itself.
        assert_eq!(
            synthesize(&c, &attrs(&[])).primary.as_deref(),
            Some("pci-0000:02:00.0-scsi-0:2:0:0")
        );
    }

    #[test]
    fn sas_and_usb() {
        let c = split("pci0000:00/0000:00:03.0/0000:05:00.0/host0/port-0:0/end_device-0:0/target0:0:0/0:0:0:0/block/sda");
        let a = attrs(&[(
            "sas_device/end_device-0:0/sas_address",
            "0x5000c500a1b2c3d5",
        )]);
        assert_eq!(
            synthesize(&c, &a).primary.as_deref(),
            Some("pci-0000:05:00.0-sas-0x5000c500a1b2c3d5-lun-0")
        );
        let c =
            split("pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdd");
        let listing = |i: usize, f: &str| (f.is_empty() && i == 4).then(|| "host6".to_string());
        assert_eq!(
            synthesize(&c, &listing).primary.as_deref(),
            Some("pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0")
        );
    }

    #[test]
    fn unsupported() {
        for p in [
            "virtual/block/loop0",
            "platform/fe330000.mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0",
            "virtual/nvme-subsystem/nvme-subsys0/nvme0n1",
            "",
            "block",
        ] {
            assert_eq!(synthesize(&split(p), &attrs(&[])), ByPath::default(), "{p}");
        }
        assert!(is_pci_addr("0000:00:1f.2"));
        assert!(!is_pci_addr("pci0000:00"));
    }
}
