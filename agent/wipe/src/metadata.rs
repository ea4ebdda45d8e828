//! **Destroys data.** The metadata wipe: after it, nothing — installer, udev, md, LVM,
//! cryptsetup, the kernel — recognises anything on the disk or on any partition it had.
//!
//! 1. Read the partition table (libblkid), before anything is erased.
//! 2. On each partition's byte range, then on the whole disk: erase every signature libblkid
//!    finds (filesystems, swap, RAID, LVM, LUKS, nested tables; on the disk also the GPT, its
//!    backup header and the protective MBR), probing again after each erasure. Probing byte
//!    ranges of the disk works even where the kernel has no partition devices.
//! 3. Zero the first and last MiB of every partition and of the disk: md 0.90/1.0 superblocks
//!    near a partition's end, LVM labels, LUKS2's second header and whatever libblkid has no
//!    prober for all live there.
//! 4. fsync, drop the kernel's caches, BLKRRPART.
//! 5. Probe everything again: anything still found fails the wipe.

use std::fs::File;
use std::path::{Path, PathBuf};

use agent_sys::blkid::{PartitionRange, Probe};
use agent_sys::block;

use crate::guard::{self, Target};
use crate::progress::Reporter;
use crate::zero::{self, MIB};
use crate::{DeviceReport, ErasedSignature, FormerPartition, WipeError, WipeOptions};

/// Erasures per byte range before giving up. Most ranges hold a handful of signatures, but
/// libblkid reports some formats one magic at a time (ZFS keeps up to 4 labels × 128
/// uberblocks), and each erasure is one small write, so the bound is generous.
const MAX_ERASURES: usize = 1024;

/// A byte range to clean: the whole disk or one partition.
#[derive(Debug, Clone)]
pub(crate) struct Region {
    pub start: u64,
    /// Length in bytes (0 = to the end of the device).
    pub len: u64,
    pub partition: Option<i32>,
}

impl Region {
    fn disk() -> Self {
        Self {
            start: 0,
            len: 0,
            partition: None,
        }
    }
    fn of(p: &PartitionRange) -> Self {
        Self {
            start: p.start,
            len: p.size,
            partition: Some(p.number),
        }
    }
    pub fn location(&self) -> String {
        match self.partition {
            Some(n) => format!("partition {n}"),
            None => "disk".into(),
        }
    }
}

pub(crate) fn check_and_open(
    device: &Path,
    opts: &WipeOptions,
) -> Result<(Target, File, u64), WipeError> {
    let target = guard::check_target(device, &opts.guard).map_err(|source| WipeError::Refused {
        device: device.into(),
        source,
    })?;
    // O_EXCL on a block device: the kernel refuses it (EBUSY) while anything holds the device
    // or a partition of it — a mount, md, dm, swap, another wipe.
    let mode = block::OpenMode {
        write: true,
        direct: false,
        exclusive: target.is_block_device,
    };
    let file = block::open(&target.resolved, mode).map_err(|source| WipeError::Open {
        device: device.into(),
        source,
    })?;
    let size = block::size_bytes(&file).map_err(|source| WipeError::Geometry {
        device: device.into(),
        source,
    })?;
    Ok((target, file, size))
}

/// The partitions of the table on the disk, as libblkid reads it (GPT with a fallback to its
/// backup header, MBR with logical partitions, BSD/Sun/... labels).
pub(crate) fn read_partitions(
    file: &File,
    device: &Path,
) -> Result<Vec<PartitionRange>, WipeError> {
    let perr = |source| WipeError::Probe {
        device: device.into(),
        location: "partition table".into(),
        source,
    };
    let mut probe = Probe::new(file, 0, 0).map_err(perr)?;
    probe.partitions().map_err(perr)
}

/// The device's sysfs directory (`/sys/devices/.../block/sda`), resolved through
/// `dev/block/MAJ:MIN` under `sys_root`.
pub(crate) fn sysfs_dir(file: &File, sys_root: &Path) -> Option<PathBuf> {
    let (major, minor) = block::dev_numbers(file).ok()?;
    let dir = sys_root.join(format!("dev/block/{major}:{minor}"));
    Some(std::fs::canonicalize(&dir).unwrap_or(dir))
}

/// The partitions the kernel has for the disk (`<sysdir>/<kname>/{partition,start,size}`,
/// in 512-byte sectors). They normally match the on-disk table; they differ when the table
/// was rewritten without a re-read, and then both sets are wiped.
pub(crate) fn kernel_partitions(sysdir: &Path, knames: &[String]) -> Vec<PartitionRange> {
    let read = |dir: &Path, f: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    knames
        .iter()
        .filter_map(|k| {
            let dir = sysdir.join(k);
            Some(PartitionRange {
                number: read(&dir, "partition")? as i32,
                start: read(&dir, "start")? * 512,
                size: read(&dir, "size")? * 512,
            })
        })
        .collect()
}

/// Erases every signature libblkid finds in `region`, appending what it erased to `erased`.
pub(crate) fn erase_signatures(
    file: &File,
    device: &Path,
    region: &Region,
    erased: &mut Vec<ErasedSignature>,
) -> Result<(), WipeError> {
    let location = region.location();
    let perr = |source| WipeError::Probe {
        device: device.into(),
        location: location.clone(),
        source,
    };
    let mut probe = Probe::new(file, region.start, region.len).map_err(perr)?;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..MAX_ERASURES {
        let Some(sig) = probe.next_signature().map_err(perr)? else {
            return Ok(());
        };
        let offset = region.start + sig.offset;
        if !seen.insert((sig.kind.clone(), offset)) {
            // Found again where it was just erased: the write did not reach the device.
            return Err(WipeError::DidNotStick {
                device: device.into(),
                kind: sig.kind,
                offset,
                location,
            });
        }
        tracing::info!(device = %device.display(), kind = %sig.kind, offset, location = %location, "erasing signature");
        probe.wipe_current().map_err(|source| WipeError::Erase {
            device: device.into(),
            kind: sig.kind.clone(),
            offset,
            location: location.clone(),
            source,
        })?;
        erased.push(ErasedSignature {
            kind: sig.kind,
            usage: sig.usage,
            offset,
            location: location.clone(),
            partition: region.partition,
            magic: sig.magic_hex,
        });
    }
    Err(WipeError::TooManySignatures {
        device: device.into(),
        location,
        limit: MAX_ERASURES,
    })
}

/// What a fresh probe still finds in each region, `kind@offset (location)`-joined.
pub(crate) fn remaining(
    file: &File,
    device: &Path,
    regions: &[Region],
) -> Result<Vec<String>, WipeError> {
    let mut found = Vec::new();
    for region in regions {
        let location = region.location();
        let perr = |source| WipeError::Probe {
            device: device.into(),
            location: location.clone(),
            source,
        };
        let mut probe = Probe::new(file, region.start, region.len).map_err(perr)?;
        if let Some(sig) = probe.next_signature().map_err(perr)? {
            found.push(format!(
                "{} at byte {} ({location})",
                sig.kind,
                region.start + sig.offset
            ));
        }
    }
    Ok(found)
}

/// Flushes `file` to stable storage and, for a block device, drops the kernel's cached view:
/// the disk's and each partition device's buffer cache (a partition device caches
/// separately from its disk), then the partition table (BLKRRPART). A device without
/// partition support (EINVAL) is noted, not failed.
pub(crate) fn sync_and_reread(
    file: &File,
    device: &Path,
    target: &Target,
    report: &mut DeviceReport,
) -> Result<(), WipeError> {
    file.sync_all().map_err(|source| WipeError::Sync {
        device: device.into(),
        source,
    })?;
    if !target.is_block_device {
        return Ok(());
    }
    if let Err(e) = block::flush_buffers(file) {
        report
            .notes
            .push(format!("BLKFLSBUF on {} failed: {e}", device.display()));
    }
    for part in &target.partitions {
        let path = Path::new("/dev").join(part);
        let flushed =
            block::open(&path, block::OpenMode::default()).and_then(|f| block::flush_buffers(&f));
        if let Err(e) = flushed {
            report.notes.push(format!(
                "could not drop the cache of {}: {e}",
                path.display()
            ));
        }
    }
    match block::reread_partitions(file) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            report.notes.push(format!(
                "the kernel keeps no partitions for {} (BLKRRPART: EINVAL), so there was no table to re-read",
                device.display()
            ));
            Ok(())
        }
        Err(source) => Err(WipeError::Reread {
            device: device.into(),
            source,
        }),
    }
}

/// **Destroys data.** The metadata wipe of one device (see the module docs).
pub(crate) fn wipe(
    device: &Path,
    opts: &WipeOptions,
    report: &mut DeviceReport,
) -> Result<(), WipeError> {
    let (target, file, size) = check_and_open(device, opts)?;
    report.size_bytes = Some(size);
    let mut rep = Reporter::new(opts.progress.clone(), device, Some(size));
    rep.phase(0, "erasing signatures");

    let mut parts = read_partitions(&file, device)?;
    if let Some(sysdir) = target
        .is_block_device
        .then(|| sysfs_dir(&file, &opts.guard.sys_root))
        .flatten()
    {
        for k in kernel_partitions(&sysdir, &target.partitions) {
            if !parts.iter().any(|p| p.start == k.start && p.size == k.size) {
                report.notes.push(format!(
                    "partition {} (bytes {}+{}) is known to the kernel but not in the on-disk table; wiped too",
                    k.number, k.start, k.size
                ));
                parts.push(k);
            }
        }
    }
    report.partitions = parts
        .iter()
        .map(|p| FormerPartition {
            number: p.number,
            start: p.start,
            size: p.size,
        })
        .collect();
    // Partitions that lie (partly) beyond the end of the disk (a table copied from a bigger
    // disk) are clamped: libblkid refuses a probe past the end.
    let mut regions: Vec<Region> = parts
        .iter()
        .filter(|p| p.start < size)
        .map(|p| Region {
            len: p.size.min(size - p.start),
            ..Region::of(p)
        })
        .collect();
    regions.push(Region::disk());

    for region in &regions {
        erase_signatures(&file, device, region, &mut report.erased)?;
    }

    rep.update(0, "zeroing edges");
    for region in &regions {
        let len = if region.len == 0 { size } else { region.len };
        for (offset, len) in zero::edges(region.start, len, MIB) {
            zero::zero_range(&file, device, offset, len)?;
        }
    }

    sync_and_reread(&file, device, &target, report)?;

    let found = remaining(&file, device, &regions)?;
    if !found.is_empty() {
        return Err(WipeError::Remains {
            device: device.into(),
            found: found.join(", "),
        });
    }
    report.method = Some("metadata".into());
    rep.done(size);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_partitions_from_sysfs() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, n, start, size) in [("sdb1", 1, 2048, 4096), ("sdb2", 2, 6144, 100)] {
            let d = tmp.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("partition"), format!("{n}\n")).unwrap();
            std::fs::write(d.join("start"), format!("{start}\n")).unwrap();
            std::fs::write(d.join("size"), format!("{size}\n")).unwrap();
        }
        let parts = kernel_partitions(tmp.path(), &["sdb1".into(), "sdb2".into(), "sdb9".into()]);
        assert_eq!(
            parts,
            vec![
                PartitionRange {
                    number: 1,
                    start: 2048 * 512,
                    size: 4096 * 512
                },
                PartitionRange {
                    number: 2,
                    start: 6144 * 512,
                    size: 100 * 512
                },
            ]
        );
    }
}
