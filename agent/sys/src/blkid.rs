//! A safe binding to the part of libblkid that `wipefs` uses: probe a device (or a byte range
//! of it, such as a partition) for superblocks and partition tables, and erase each magic found.
//!
//! Declared by hand (no bindgen) so the static musl build needs only `libblkid.a`.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

#[allow(non_camel_case_types)]
mod ffi {
    use libc::{c_char, c_int, size_t};
    pub type blkid_loff_t = i64;
    #[repr(C)]
    pub struct blkid_struct_probe {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct blkid_struct_partlist {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct blkid_struct_partition {
        _private: [u8; 0],
    }
    pub type blkid_probe = *mut blkid_struct_probe;
    pub type blkid_partlist = *mut blkid_struct_partlist;
    pub type blkid_partition = *mut blkid_struct_partition;

    // From <blkid/blkid.h> (util-linux 2.38).
    /// `#define BLKID_SUBLKS_LABEL (1 << 1)`
    pub const BLKID_SUBLKS_LABEL: c_int = 1 << 1;
    /// `#define BLKID_SUBLKS_UUID (1 << 3)`
    pub const BLKID_SUBLKS_UUID: c_int = 1 << 3;
    /// `#define BLKID_SUBLKS_TYPE (1 << 5)`
    pub const BLKID_SUBLKS_TYPE: c_int = 1 << 5;
    /// `#define BLKID_SUBLKS_USAGE (1 << 7)`
    pub const BLKID_SUBLKS_USAGE: c_int = 1 << 7;
    /// `#define BLKID_SUBLKS_MAGIC (1 << 9)`
    pub const BLKID_SUBLKS_MAGIC: c_int = 1 << 9;
    /// `#define BLKID_SUBLKS_BADCSUM (1 << 10)`
    pub const BLKID_SUBLKS_BADCSUM: c_int = 1 << 10;
    /// `#define BLKID_PARTS_FORCE_GPT (1 << 1)`
    pub const BLKID_PARTS_FORCE_GPT: c_int = 1 << 1;
    /// `#define BLKID_PARTS_MAGIC (1 << 3)`
    pub const BLKID_PARTS_MAGIC: c_int = 1 << 3;

    extern "C" {
        pub fn blkid_new_probe() -> blkid_probe;
        pub fn blkid_free_probe(pr: blkid_probe);
        pub fn blkid_probe_set_device(
            pr: blkid_probe,
            fd: c_int,
            off: blkid_loff_t,
            size: blkid_loff_t,
        ) -> c_int;
        pub fn blkid_probe_enable_superblocks(pr: blkid_probe, enable: c_int) -> c_int;
        pub fn blkid_probe_set_superblocks_flags(pr: blkid_probe, flags: c_int) -> c_int;
        pub fn blkid_probe_enable_partitions(pr: blkid_probe, enable: c_int) -> c_int;
        pub fn blkid_probe_set_partitions_flags(pr: blkid_probe, flags: c_int) -> c_int;
        pub fn blkid_do_probe(pr: blkid_probe) -> c_int;
        pub fn blkid_do_wipe(pr: blkid_probe, dryrun: c_int) -> c_int;
        pub fn blkid_probe_lookup_value(
            pr: blkid_probe,
            name: *const c_char,
            data: *mut *const c_char,
            len: *mut size_t,
        ) -> c_int;
        pub fn blkid_probe_get_partitions(pr: blkid_probe) -> blkid_partlist;
        pub fn blkid_partlist_numof_partitions(ls: blkid_partlist) -> c_int;
        pub fn blkid_partlist_get_partition(ls: blkid_partlist, n: c_int) -> blkid_partition;
        pub fn blkid_partition_get_start(par: blkid_partition) -> blkid_loff_t;
        pub fn blkid_partition_get_size(par: blkid_partition) -> blkid_loff_t;
        pub fn blkid_partition_get_partno(par: blkid_partition) -> c_int;
        pub fn blkid_do_safeprobe(pr: blkid_probe) -> c_int;
    }
}

/// Errors from libblkid calls; the caller adds which device.
#[derive(Debug, thiserror::Error)]
pub enum BlkidError {
    #[error("libblkid could not allocate a probe")]
    Alloc,
    #[error("libblkid {call} failed")]
    Call {
        call: &'static str,
        #[source]
        source: io::Error,
    },
}

fn call_err(call: &'static str) -> BlkidError {
    BlkidError::Call {
        call,
        source: io::Error::last_os_error(),
    }
}

/// One signature found by the prober.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `TYPE` for superblocks (ext4, xfs, swap, crypto_LUKS, linux_raid_member, LVM2_member...)
    /// or `PTTYPE` for partition tables (gpt, dos, PMBR).
    pub kind: String,
    /// `USAGE`: filesystem, raid, crypto, other; `partition table` for tables.
    pub usage: String,
    /// Byte offset of the magic, relative to the probed range.
    pub offset: u64,
    /// The magic bytes, hex-encoded.
    pub magic_hex: String,
}

/// One partition from the partition table libblkid parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    pub number: i32,
    /// Start, in bytes from the start of the disk.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
}

/// A libblkid probe over a byte range of an open file. Borrows the file, so the fd outlives it.
pub struct Probe<'f> {
    pr: NonNull<ffi::blkid_struct_probe>,
    _file: &'f File,
}

impl std::fmt::Debug for Probe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        // SAFETY: pr came from blkid_new_probe and is freed exactly once here. libblkid does
        // not close an fd given by blkid_probe_set_device (no BLKID_FL_PRIVATE_FD).
        unsafe { ffi::blkid_free_probe(self.pr.as_ptr()) }
    }
}

impl<'f> Probe<'f> {
    /// A probe over `size` bytes at `offset` of `file` (`size` 0 = to the end), looking for
    /// superblocks (all types, including ones with bad checksums) and partition tables (GPT
    /// even without a protective MBR), exactly as `wipefs` sets it up.
    pub fn new(file: &'f File, offset: u64, size: u64) -> Result<Self, BlkidError> {
        // SAFETY: blkid_new_probe takes no arguments and returns an owned probe or NULL.
        let raw = unsafe { ffi::blkid_new_probe() };
        let pr = NonNull::new(raw).ok_or(BlkidError::Alloc)?;
        let probe = Probe { pr, _file: file };
        let p = probe.pr.as_ptr();
        // SAFETY: p is a live probe; file's fd stays open for 'f, which outlives the probe.
        let rc =
            unsafe { ffi::blkid_probe_set_device(p, file.as_raw_fd(), offset as i64, size as i64) };
        if rc != 0 {
            return Err(call_err("blkid_probe_set_device"));
        }
        let sb_flags = ffi::BLKID_SUBLKS_MAGIC
            | ffi::BLKID_SUBLKS_TYPE
            | ffi::BLKID_SUBLKS_USAGE
            | ffi::BLKID_SUBLKS_LABEL
            | ffi::BLKID_SUBLKS_UUID
            | ffi::BLKID_SUBLKS_BADCSUM;
        // SAFETY: p is a live probe; these setters take plain ints.
        unsafe {
            ffi::blkid_probe_enable_superblocks(p, 1);
            ffi::blkid_probe_set_superblocks_flags(p, sb_flags);
            ffi::blkid_probe_enable_partitions(p, 1);
            ffi::blkid_probe_set_partitions_flags(
                p,
                ffi::BLKID_PARTS_MAGIC | ffi::BLKID_PARTS_FORCE_GPT,
            );
        }
        Ok(probe)
    }

    /// A value as raw bytes (binary values such as `SBMAGIC` are not UTF-8): `len` bytes,
    /// without a trailing NUL.
    fn lookup_bytes(&self, name: &str) -> Option<Vec<u8>> {
        let cname = CString::new(name).ok()?;
        let mut data: *const libc::c_char = std::ptr::null();
        let mut len: libc::size_t = 0;
        // SAFETY: as in `lookup`; libblkid sets len to the length of the value's data, which
        // data points to (owned by the probe); we copy it out immediately.
        let rc = unsafe {
            ffi::blkid_probe_lookup_value(self.pr.as_ptr(), cname.as_ptr(), &mut data, &mut len)
        };
        if rc != 0 || data.is_null() {
            return None;
        }
        // SAFETY: data points to `len` readable bytes owned by the probe (see above).
        let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, len) };
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        Some(bytes.to_vec())
    }

    fn lookup(&self, name: &str) -> Option<String> {
        let cname = CString::new(name).ok()?;
        let mut data: *const libc::c_char = std::ptr::null();
        let mut len: libc::size_t = 0;
        // SAFETY: p is live; cname is NUL-terminated; data/len point to live locals. On success
        // libblkid points data at a NUL-terminated string owned by the probe, valid until the
        // next probe call, and we copy it out immediately.
        let rc = unsafe {
            ffi::blkid_probe_lookup_value(self.pr.as_ptr(), cname.as_ptr(), &mut data, &mut len)
        };
        if rc != 0 || data.is_null() {
            return None;
        }
        // SAFETY: data is a NUL-terminated string owned by the probe (see above).
        Some(
            unsafe { CStr::from_ptr(data) }
                .to_string_lossy()
                .into_owned(),
        )
    }

    /// Probes for the next signature. `Ok(None)` when nothing (more) is found.
    pub fn next_signature(&mut self) -> Result<Option<Signature>, BlkidError> {
        // SAFETY: p is a live probe with a device set.
        let rc = unsafe { ffi::blkid_do_probe(self.pr.as_ptr()) };
        match rc {
            0 => {}
            1 => return Ok(None),
            _ => return Err(call_err("blkid_do_probe")),
        }
        Ok(Some(self.current()))
    }

    fn current(&self) -> Signature {
        let (kind, offset, magic_hex, usage) = if let Some(t) = self.lookup("TYPE") {
            (
                t,
                self.lookup("SBMAGIC_OFFSET"),
                self.lookup_bytes("SBMAGIC"),
                self.lookup("USAGE"),
            )
        } else {
            (
                self.lookup("PTTYPE").unwrap_or_else(|| "unknown".into()),
                self.lookup("PTMAGIC_OFFSET"),
                self.lookup_bytes("PTMAGIC"),
                Some("partition table".into()),
            )
        };
        Signature {
            kind,
            usage: usage.unwrap_or_default(),
            offset: offset.and_then(|o| o.parse().ok()).unwrap_or(0),
            magic_hex: magic_hex
                .map(|m| m.iter().map(|b| format!("{b:02x}")).collect())
                .unwrap_or_default(),
        }
    }

    /// **Destroys data.** Erases the magic of the signature the last `next_signature` found
    /// (libblkid's `blkid_do_wipe`, as `wipefs -a`), and steps the probe back so the next call
    /// looks again in the same place.
    pub fn wipe_current(&mut self) -> Result<(), BlkidError> {
        // SAFETY: p is a live probe; the fd was opened read-write by the caller.
        let rc = unsafe { ffi::blkid_do_wipe(self.pr.as_ptr(), 0) };
        if rc != 0 {
            return Err(call_err("blkid_do_wipe"));
        }
        Ok(())
    }

    /// The partitions of the partition table found in the probed range (empty when there is
    /// no table). Offsets are in bytes from the start of the probed range.
    pub fn partitions(&mut self) -> Result<Vec<PartitionRange>, BlkidError> {
        let p = self.pr.as_ptr();
        // SAFETY: p is a live probe. blkid_probe_get_partitions returns a list owned by the
        // probe (or NULL when there is no table), valid until the probe is reset or freed;
        // we copy every value out before returning.
        unsafe {
            let ls = ffi::blkid_probe_get_partitions(p);
            if ls.is_null() {
                return Ok(Vec::new());
            }
            let n = ffi::blkid_partlist_numof_partitions(ls);
            let mut out = Vec::new();
            for i in 0..n.max(0) {
                let par = ffi::blkid_partlist_get_partition(ls, i);
                if par.is_null() {
                    continue;
                }
                let start = ffi::blkid_partition_get_start(par);
                let size = ffi::blkid_partition_get_size(par);
                if start < 0 || size <= 0 {
                    continue;
                }
                out.push(PartitionRange {
                    number: ffi::blkid_partition_get_partno(par),
                    start: start as u64 * 512,
                    size: size as u64 * 512,
                });
            }
            Ok(out)
        }
    }

    /// A "safe" probe (as `blkid -p`): `Ok(true)` when exactly one unambiguous signature is found.
    pub fn safeprobe_finds_anything(&mut self) -> Result<bool, BlkidError> {
        // SAFETY: p is a live probe with a device set.
        let rc = unsafe { ffi::blkid_do_safeprobe(self.pr.as_ptr()) };
        match rc {
            0 | -2 => Ok(true), // found, or ambiguous (several signatures)
            1 => Ok(false),
            _ => Err(call_err("blkid_do_safeprobe")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    /// A hand-made ext2-style superblock magic (0xEF53 at 1024+56) is not a full ext
    /// superblock, so use swap's magic, which libblkid recognises from the signature alone.
    #[test]
    fn finds_and_wipes_swap_signature_in_regular_file() {
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(1 << 20).unwrap();
        // "SWAPSPACE2" at page_size - 10, with a version-1 header at 1024.
        f.seek(SeekFrom::Start(1024)).unwrap();
        f.write_all(&1u32.to_le_bytes()).unwrap(); // version
        f.write_all(&255u32.to_le_bytes()).unwrap(); // last_page
        f.seek(SeekFrom::Start(4096 - 10)).unwrap();
        f.write_all(b"SWAPSPACE2").unwrap();
        f.flush().unwrap();
        let mut probe = Probe::new(&f, 0, 0).unwrap();
        let sig = probe.next_signature().unwrap().expect("swap found");
        assert_eq!(sig.kind, "swap");
        assert_eq!(sig.offset, 4086);
        assert_eq!(sig.magic_hex, "53574150535041434532"); // "SWAPSPACE2"
        probe.wipe_current().unwrap();
        assert_eq!(probe.next_signature().unwrap(), None);
        drop(probe);
        let mut probe = Probe::new(&f, 0, 0).unwrap();
        assert_eq!(probe.next_signature().unwrap(), None);
    }
}
