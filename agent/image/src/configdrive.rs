//! The config drive partition: after a whole-disk image is written, a new partition at the
//! end of the disk receives the config drive (a `config-2` filesystem the controller built),
//! so cloud-init on the provisioned OS finds its hostname, user data and network data.
//!
//! This is what IPA's `create_config_drive_partition` does with `sgdisk`/`parted`, done
//! here without external tools:
//!
//! * The drive arrives as Ironic's `configdrive` field: gzip, then base64. It is decoded
//!   with bounds ([`MAX_ENCODED`] in, [`MAX_DECODED`] out: IPA's 64 MiB limit).
//! * **GPT**: an image's backup header sits at the end of the *image*, not the disk. The
//!   backup entry array and header move to the disk's last LBAs, last-usable-LBA grows, the
//!   protective MBR is widened to the disk, and a new entry (type "Linux filesystem data",
//!   name `config-2`, a random unique GUID) takes the first free slot — both CRCs
//!   recomputed, both copies written (IPA: `sgdisk -e`, then `sgdisk -n 0:-64MB:0`).
//! * **MBR (dos)**: a primary partition (type 0x0C, as IPA's `parted mkpart primary fat32`)
//!   in the first free slot, after the last partition; below 2 TiB, as MBR can address no
//!   more. No free slot, or free space only inside an extended partition: an error (IPA
//!   refuses the same; it does not create logical partitions either).
//! * **No partition table** (a bare filesystem image): an error. IPA fails there too:
//!   `parted` reports an unrecognised label, IPA takes its MBR path and stops with "Failed
//!   to check the number of primary partitions … does not have a valid MBR partition
//!   table".
//! * The partition is [`PARTITION_BYTES`] (64 MiB, IPA's size) ending at the end of the
//!   usable space, starting on a 1 MiB boundary; it must not overlap any partition or GPT
//!   structure, else nothing is written and the error says how much room there was.
//! * A partition that already holds a `config-2` filesystem (or a GPT partition named
//!   `config-2`) is reused, as IPA does: a retried command does not add a second drive.
//!
//! Order of writes, so that a failure half-way leaves the old table valid: the filesystem
//! (into space no partition uses), the rest of the partition zeroed, sync; then the backup
//! GPT, the primary GPT (or sector 0), sync. The kernel is asked to re-read the table; the
//! write itself goes through the whole-disk device at byte offsets and never needs the new
//! partition's device node.

pub mod gpt;
pub mod mbr;

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use agent_sys::block;
use base64::Engine as _;

/// The label cloud-init looks for.
pub const LABEL: &str = "config-2";
/// Largest decoded (uncompressed) config drive: IPA's `MAX_CONFIG_DRIVE_SIZE_MB`.
pub const MAX_DECODED: usize = 64 << 20;
/// Largest encoded field accepted (base64 of a gzip of [`MAX_DECODED`] bytes, with margin).
pub const MAX_ENCODED: usize = 96 << 20;
/// Size of the partition created (IPA's 64 MiB).
pub const PARTITION_BYTES: u64 = 64 << 20;
/// Alignment of the partition's start.
pub const ALIGN_BYTES: u64 = 1 << 20;

/// A disk's geometry as the tables see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Logical block size in bytes (512 or 4096).
    pub lba: u64,
    /// Number of logical blocks.
    pub sectors: u64,
}

/// The partition table the drive went into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Gpt,
    Mbr,
}

impl std::fmt::Display for TableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TableKind::Gpt => "GPT",
            TableKind::Mbr => "MBR",
        })
    }
}

/// Where the config drive was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDrivePartition {
    pub device: PathBuf,
    pub table: TableKind,
    /// 1-based partition number (`/dev/sda2`, `nvme0n1p2`).
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// The new GPT partition's unique GUID (text form); `None` on MBR.
    pub unique_guid: Option<String>,
    /// An existing config drive partition was overwritten instead of a new one created.
    pub reused: bool,
    /// Bytes of the config drive filesystem written.
    pub image_bytes: u64,
    /// Things worth knowing that did not stop the write (the kernel's re-read, say).
    pub notes: Vec<String>,
}

/// Why a partition cannot be added (the pure part: the table and the disk's geometry).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("reading the partition table")]
    Read(#[source] io::Error),
    #[error("no partition table (neither GPT nor MBR): a config drive needs one to add its partition to (IPA fails here too)")]
    NoPartitionTable,
    #[error("invalid GPT")]
    Gpt(#[source] gpt::GptError),
    #[error("protective MBR but no valid GPT header")]
    ProtectiveWithoutGpt(#[source] gpt::GptError),
    #[error("{table} has no free partition slot ({used} used)")]
    NoFreeSlot { table: TableKind, used: u32 },
    #[error("the only free space is inside extended partition {number}; logical partitions are not created")]
    InsideExtended { number: u32 },
    #[error("partition {number} ends at LBA {last}, past the disk's {sectors} sectors")]
    BeyondDisk {
        number: u32,
        last: u64,
        sectors: u64,
    },
    #[error("no room for a {need}-byte partition at the end of the disk: {free} bytes free after the last partition")]
    NoRoom { need: u64, free: u64 },
    #[error("existing config drive partition {number} holds {size} bytes, the drive needs {need}")]
    ExistingTooSmall { number: u32, size: u64, need: u64 },
    #[error("unsupported logical block size {0}")]
    BlockSize(u64),
}

/// Why writing a config drive failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    #[error("config drive field is {size} bytes, more than {limit}")]
    EncodedTooLarge { size: usize, limit: usize },
    #[error("config drive field is not base64")]
    Base64(#[source] base64::DecodeError),
    #[error("config drive is not valid gzip data")]
    Gzip(#[source] io::Error),
    #[error("config drive decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("config drive is empty")]
    Empty,
    #[error("opening {device}")]
    Open {
        device: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{device}: cannot add a config drive partition")]
    Plan {
        device: PathBuf,
        #[source]
        source: PlanError,
    },
    #[error("reading random bytes for the partition GUID")]
    Random(#[source] io::Error),
    #[error("{what} on {device}")]
    Io {
        what: &'static str,
        device: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Decodes Ironic's `configdrive` field (gzip, then base64; whitespace ignored, several
/// gzip members accepted as Python's gzip module does), bounded.
pub fn decode(gzip_base64: &str) -> Result<Vec<u8>, ConfigDriveError> {
    if gzip_base64.len() > MAX_ENCODED {
        return Err(ConfigDriveError::EncodedTooLarge {
            size: gzip_base64.len(),
            limit: MAX_ENCODED,
        });
    }
    let cleaned: Vec<u8> = gzip_base64
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let gz = base64::engine::general_purpose::STANDARD
        .decode(cleaned)
        .map_err(ConfigDriveError::Base64)?;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz[..])
        .take(MAX_DECODED as u64 + 1)
        .read_to_end(&mut out)
        .map_err(ConfigDriveError::Gzip)?;
    if out.len() > MAX_DECODED {
        return Err(ConfigDriveError::TooLarge { limit: MAX_DECODED });
    }
    if out.is_empty() {
        return Err(ConfigDriveError::Empty);
    }
    Ok(out)
}

/// What to write: the partition, and the table sectors to write once the filesystem is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub table: TableKind,
    pub number: u32,
    pub first_lba: u64,
    pub last_lba: u64,
    pub unique_guid: Option<[u8; 16]>,
    pub reused: bool,
    /// `(byte offset, bytes)`, in the order to write them.
    pub writes: Vec<(u64, Vec<u8>)>,
}

/// Reads `len` bytes at a byte offset.
pub type ReadAt<'a> = dyn FnMut(u64, usize) -> io::Result<Vec<u8>> + 'a;

/// Decides where the config drive goes and what the table becomes (pure: reads through
/// `read`, writes nothing). `guid` is the new GPT partition's unique GUID.
pub fn plan(
    read: &mut ReadAt<'_>,
    layout: Layout,
    fs_len: u64,
    guid: [u8; 16],
) -> Result<Plan, PlanError> {
    if !matches!(layout.lba, 512 | 1024 | 2048 | 4096) {
        return Err(PlanError::BlockSize(layout.lba));
    }
    if layout.sectors < 64 {
        return Err(PlanError::NoRoom {
            need: PARTITION_BYTES,
            free: 0,
        });
    }
    let sector0 = read(0, layout.lba as usize).map_err(PlanError::Read)?;
    let header = read(layout.lba, layout.lba as usize).map_err(PlanError::Read)?;
    match gpt::Header::decode(&header) {
        Ok(h) => plan_gpt(read, layout, &sector0, h, fs_len, guid),
        Err(e) => match mbr::classify(&sector0) {
            mbr::Sector0::Protective => Err(PlanError::ProtectiveWithoutGpt(e)),
            mbr::Sector0::Dos(entries) => plan_mbr(read, layout, &sector0, entries, fs_len),
            mbr::Sector0::None => Err(PlanError::NoPartitionTable),
        },
    }
}

/// Where the partition goes: `PARTITION_BYTES` ending at `end`, starting aligned, after
/// `max_end` (the last used LBA).
fn place(layout: Layout, end: u64, max_end: u64) -> Result<(u64, u64), PlanError> {
    let part = PARTITION_BYTES / layout.lba;
    let align = (ALIGN_BYTES / layout.lba).max(1);
    let free = end.saturating_sub(max_end) * layout.lba;
    if end + 1 < part {
        return Err(PlanError::NoRoom {
            need: PARTITION_BYTES,
            free,
        });
    }
    let start = (end + 1 - part) / align * align;
    if start <= max_end {
        return Err(PlanError::NoRoom {
            need: PARTITION_BYTES,
            free,
        });
    }
    Ok((start, end))
}

/// The label of the filesystem starting at `offset`, if it is FAT or ISO 9660.
fn fs_label(read: &mut ReadAt<'_>, offset: u64) -> Option<String> {
    let boot = read(offset, 512).ok()?;
    if boot[510..512] == [0x55, 0xAA] {
        // FAT32 has no 16-bit sectors-per-FAT; its extended boot record sits further on.
        let fat32 = boot[22] == 0 && boot[23] == 0;
        let (sig, at) = if fat32 { (66, 71) } else { (38, 43) };
        if boot[sig] == 0x29 {
            return Some(
                String::from_utf8_lossy(&boot[at..at + 11])
                    .trim()
                    .to_owned(),
            );
        }
    }
    let pvd = read(offset + 32768, 2048).ok()?;
    if pvd[0] == 1 && &pvd[1..6] == b"CD001" {
        return Some(String::from_utf8_lossy(&pvd[40..72]).trim().to_owned());
    }
    None
}

fn is_config_drive(read: &mut ReadAt<'_>, layout: Layout, first_lba: u64) -> bool {
    fs_label(read, first_lba * layout.lba).is_some_and(|l| l.eq_ignore_ascii_case(LABEL))
}

fn reuse(number: u32, first: u64, last: u64, layout: Layout, fs_len: u64) -> Result<(), PlanError> {
    let size = (last - first + 1) * layout.lba;
    if size < fs_len {
        return Err(PlanError::ExistingTooSmall {
            number,
            size,
            need: fs_len,
        });
    }
    Ok(())
}

fn plan_gpt(
    read: &mut ReadAt<'_>,
    layout: Layout,
    sector0: &[u8],
    h: gpt::Header,
    fs_len: u64,
    guid: [u8; 16],
) -> Result<Plan, PlanError> {
    h.check_primary(&layout).map_err(PlanError::Gpt)?;
    let mut array = read(h.entries_lba * layout.lba, h.entries_len()).map_err(PlanError::Read)?;
    let used = gpt::used_entries(&h, &array).map_err(PlanError::Gpt)?;

    let es = h.entries_sectors(&layout);
    let new_last = layout.sectors - 1;
    let new_backup_entries = new_last - es;
    let new_last_usable = new_backup_entries - 1;
    if new_last_usable <= h.first_usable {
        return Err(PlanError::NoRoom {
            need: PARTITION_BYTES,
            free: 0,
        });
    }
    for (n, e) in &used {
        if e.last_lba > new_last_usable {
            return Err(PlanError::BeyondDisk {
                number: *n,
                last: e.last_lba,
                sectors: layout.sectors,
            });
        }
    }

    let existing = used
        .iter()
        .find(|(_, e)| e.name() == LABEL || is_config_drive(read, layout, e.first_lba));
    let (number, first, last, unique_guid, reused) = match existing {
        Some((n, e)) => {
            reuse(*n, e.first_lba, e.last_lba, layout, fs_len)?;
            (*n, e.first_lba, e.last_lba, None, true)
        }
        None => {
            let es_size = h.entry_size as usize;
            let slot = array[..h.entries_len()]
                .chunks_exact(es_size)
                .position(|s| !gpt::Entry::decode(s).is_used())
                .ok_or(PlanError::NoFreeSlot {
                    table: TableKind::Gpt,
                    used: used.len() as u32,
                })?;
            let max_end = used
                .iter()
                .map(|(_, e)| e.last_lba)
                .max()
                .unwrap_or(h.first_usable - 1);
            let (first, last) = place(layout, new_last_usable, max_end)?;
            let entry = gpt::Entry {
                type_guid: gpt::LINUX_FS,
                unique_guid: guid,
                first_lba: first,
                last_lba: last,
                attributes: 0,
                name: gpt::Entry::encode_name(LABEL),
            };
            entry.encode_into(&mut array[slot * es_size..(slot + 1) * es_size]);
            (slot as u32 + 1, first, last, Some(guid), false)
        }
    };

    let mut primary = h.clone();
    primary.alternate_lba = new_last;
    primary.last_usable = new_last_usable;
    primary.entries_crc = crc32fast::hash(&array[..h.entries_len()]);
    let mut backup = primary.clone();
    backup.my_lba = new_last;
    backup.alternate_lba = 1;
    backup.entries_lba = new_backup_entries;

    let mut writes = Vec::new();
    // The image's old backup (entries and header at the image's end): zeroed so that no
    // tool finds a stale "EFI PART" mid-disk, unless it lies in a partition (the new
    // partition is zero-filled anyway) or is the new backup's place.
    let old = h.alternate_lba;
    if old != new_last && old < layout.sectors && old > es {
        let (from, to) = (old - es, old);
        let max_end = used.iter().map(|(_, e)| e.last_lba).max().unwrap_or(0);
        let clear_of_new = to < first || from > last;
        if from > max_end && to < new_backup_entries && clear_of_new {
            writes.push((
                from * layout.lba,
                vec![0u8; ((to - from + 1) * layout.lba) as usize],
            ));
        }
    }
    writes.push((new_backup_entries * layout.lba, array.clone()));
    writes.push((new_last * layout.lba, backup.encode(layout.lba as usize)));
    writes.push((h.entries_lba * layout.lba, array));
    writes.push((layout.lba, primary.encode(layout.lba as usize)));
    if let Some(pmbr) = mbr::grow_protective(sector0, layout.sectors) {
        if pmbr != sector0 {
            writes.push((0, pmbr));
        }
    }
    Ok(Plan {
        table: TableKind::Gpt,
        number,
        first_lba: first,
        last_lba: last,
        unique_guid,
        reused,
        writes,
    })
}

fn plan_mbr(
    read: &mut ReadAt<'_>,
    layout: Layout,
    sector0: &[u8],
    entries: [mbr::Entry; 4],
    fs_len: u64,
) -> Result<Plan, PlanError> {
    let used: Vec<(u32, mbr::Entry)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_used())
        .map(|(i, e)| (i as u32 + 1, *e))
        .collect();
    for (n, e) in &used {
        if e.last_lba() >= layout.sectors {
            return Err(PlanError::BeyondDisk {
                number: *n,
                last: e.last_lba(),
                sectors: layout.sectors,
            });
        }
    }
    let existing = used
        .iter()
        .find(|(_, e)| !e.is_extended() && is_config_drive(read, layout, u64::from(e.first_lba)));
    if let Some((n, e)) = existing {
        reuse(*n, u64::from(e.first_lba), e.last_lba(), layout, fs_len)?;
        return Ok(Plan {
            table: TableKind::Mbr,
            number: *n,
            first_lba: u64::from(e.first_lba),
            last_lba: e.last_lba(),
            unique_guid: None,
            reused: true,
            writes: Vec::new(),
        });
    }
    let slot = entries
        .iter()
        .position(|e| !e.is_used())
        .ok_or(PlanError::NoFreeSlot {
            table: TableKind::Mbr,
            used: 4,
        })?;
    let (last_n, last_e) = used
        .iter()
        .max_by_key(|(_, e)| e.last_lba())
        .copied()
        .expect("a dos table has a used entry");
    // MBR addresses 2^32 sectors; on bigger disks the drive ends there (as IPA does).
    let end = layout.sectors.min(1 << 32) - 1;
    let (first, last) = place(layout, end, last_e.last_lba()).map_err(|e| {
        if last_e.is_extended() && last_e.last_lba() + 1 >= end {
            PlanError::InsideExtended { number: last_n }
        } else {
            e
        }
    })?;
    let entry = mbr::Entry {
        status: 0,
        kind: mbr::FAT32_LBA,
        first_lba: first as u32,
        sectors: (last - first + 1) as u32,
    };
    let mut s0 = sector0.to_vec();
    let at = mbr::TABLE_AT + 16 * slot;
    s0[at..at + 16].copy_from_slice(&entry.encode());
    Ok(Plan {
        table: TableKind::Mbr,
        number: slot as u32 + 1,
        first_lba: first,
        last_lba: last,
        unique_guid: None,
        reused: false,
        writes: vec![(0, s0)],
    })
}

/// What to zero of a `part_len`-byte partition after a `fs_len`-byte filesystem: the rest
/// of a new (64 MiB) partition, so no stale signature there makes `blkid` doubt what it
/// sees; of a bigger reused partition, up to 64 MiB and its last MiB (where end-of-device
/// signatures such as md 1.0 and GPT backups live), not gigabytes.
pub fn zero_ranges(fs_len: u64, part_len: u64) -> Vec<(u64, u64)> {
    let head_end = part_len.min(PARTITION_BYTES + ALIGN_BYTES);
    let mut out = Vec::new();
    if fs_len < head_end {
        out.push((fs_len, head_end));
    }
    let tail = part_len
        .saturating_sub(ALIGN_BYTES)
        .max(head_end)
        .max(fs_len);
    if tail < part_len {
        out.push((tail, part_len));
    }
    out
}

fn random_guid() -> io::Result<[u8; 16]> {
    let mut raw = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut raw)?;
    Ok(gpt::random_guid(raw))
}

/// **DESTROYS DATA. Writes a partition table and 64 MiB at the end of `device`.**
///
/// Decodes `gzip_base64` (Ironic's `configdrive` field: a gzip-compressed, base64-encoded
/// filesystem image), adds a partition at the end of the disk for it (or reuses an
/// existing config drive partition) and writes the filesystem there. Meant to run right
/// after a whole-disk image was written to `device`; see the module docs for what happens
/// to GPT and MBR tables, and when it refuses (no table, no free slot, no room) — in which
/// case nothing has been written.
///
/// `device` is a whole disk (opened `O_EXCL`: it fails when the disk or a partition of it
/// is in use) or a regular file holding a disk image.
pub fn write_config_drive(
    device: &Path,
    gzip_base64: &str,
) -> Result<ConfigDrivePartition, ConfigDriveError> {
    let fs = decode(gzip_base64)?;
    let io_err = |what: &'static str| {
        move |source: io::Error| ConfigDriveError::Io {
            what,
            device: device.to_path_buf(),
            source,
        }
    };
    let open_err = |source| ConfigDriveError::Open {
        device: device.to_path_buf(),
        source,
    };
    let probe = block::open(device, block::OpenMode::default()).map_err(open_err)?;
    let is_block = block::is_block_device(&probe).map_err(open_err)?;
    drop(probe);
    let file = block::open(
        device,
        block::OpenMode {
            write: true,
            direct: false,
            exclusive: is_block,
        },
    )
    .map_err(open_err)?;
    let size = block::size_bytes(&file).map_err(io_err("reading the size"))?;
    let lba =
        u64::from(block::logical_block_size(&file).map_err(io_err("reading the block size"))?);
    if is_block {
        // The image was written with O_DIRECT; drop any page cache from before it.
        block::flush_buffers(&file).map_err(io_err("flushing the buffer cache"))?;
    }
    let layout = Layout {
        lba,
        sectors: size / lba,
    };
    let guid = random_guid().map_err(ConfigDriveError::Random)?;
    let mut read = |offset: u64, len: usize| -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    };
    let plan = plan(&mut read, layout, fs.len() as u64, guid).map_err(|source| {
        ConfigDriveError::Plan {
            device: device.to_path_buf(),
            source,
        }
    })?;
    let start = plan.first_lba * lba;
    let part_len = (plan.last_lba - plan.first_lba + 1) * lba;
    tracing::info!(
        device = %device.display(),
        table = %plan.table,
        number = plan.number,
        start,
        size = part_len,
        image = fs.len(),
        reused = plan.reused,
        "writing config drive"
    );

    file.write_all_at(&fs, start)
        .map_err(io_err("writing the config drive"))?;
    // The rest of the partition: BLKZEROOUT (Write Zeroes where the device has it) or a hole,
    // not tens of MiB of zeros written through memory.
    let zeroing = crate::writer::Disk::from_open(
        file.try_clone()
            .map_err(io_err("zeroing the config drive partition"))?,
        size,
        is_block,
        lba,
    );
    for (from, to) in zero_ranges(fs.len() as u64, part_len) {
        zeroing
            .zero_range(start + from, to - from)
            .map_err(io_err("zeroing the config drive partition"))?;
    }
    file.sync_data()
        .map_err(io_err("syncing the config drive"))?;
    for (offset, bytes) in &plan.writes {
        file.write_all_at(bytes, *offset)
            .map_err(io_err("writing the partition table"))?;
    }
    file.sync_all()
        .map_err(io_err("syncing the partition table"))?;

    let mut notes = Vec::new();
    if is_block {
        if let Err(e) = block::flush_buffers(&file) {
            notes.push(format!("BLKFLSBUF failed: {e}"));
        }
        match block::reread_partitions(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => notes.push(
                "the kernel keeps no partitions for this device (BLKRRPART: EINVAL); the new partition shows after a reboot".into(),
            ),
            Err(e) => notes.push(format!(
                "the kernel could not re-read the partition table ({e}); the new partition shows after a reboot"
            )),
        }
    }
    for n in &notes {
        tracing::warn!(device = %device.display(), note = %n, "config drive");
    }
    Ok(ConfigDrivePartition {
        device: device.to_path_buf(),
        table: plan.table,
        number: plan.number,
        start_bytes: start,
        size_bytes: part_len,
        unique_guid: plan.unique_guid.as_ref().map(gpt::format_guid),
        reused: plan.reused,
        image_bytes: fs.len() as u64,
        notes,
    })
}

#[cfg(test)]
mod tests;
