//! Block-device ioctls (`<linux/fs.h>`) and the open flags the agent needs.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

// From <uapi/linux/fs.h>. `_IO(type, nr)` is `(type << 8) | nr`; `_IOR(type, nr, size)` adds
// `(2 << 30) | (size << 16)`.
/// `#define BLKROGET _IO(0x12,94)` — get read-only status (int).
const BLKROGET: libc::c_ulong = 0x125e;
/// `#define BLKRRPART _IO(0x12,95)` — re-read the partition table.
const BLKRRPART: libc::c_ulong = 0x125f;
/// `#define BLKFLSBUF _IO(0x12,97)` — flush the buffer cache.
const BLKFLSBUF: libc::c_ulong = 0x1261;
/// `#define BLKSSZGET _IO(0x12,104)` — logical block size (int).
const BLKSSZGET: libc::c_ulong = 0x1268;
/// `#define BLKGETSIZE64 _IOR(0x12,114,size_t)` — device size in bytes (u64).
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
/// `#define BLKDISCARD _IO(0x12,119)` — discard a range `{start, len}` (u64[2]).
const BLKDISCARD: libc::c_ulong = 0x1277;
/// `#define BLKPBSZGET _IO(0x12,123)` — physical block size (unsigned int).
const BLKPBSZGET: libc::c_ulong = 0x127b;
/// `#define BLKSECDISCARD _IO(0x12,125)` — secure discard of a range (u64[2]).
const BLKSECDISCARD: libc::c_ulong = 0x127d;
/// `#define BLKZEROOUT _IO(0x12,127)` — zero a range (u64[2]), via write-zeroes or writes.
const BLKZEROOUT: libc::c_ulong = 0x127f;

/// How to open a device.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenMode {
    pub write: bool,
    /// `O_DIRECT`: bypass the page cache (buffers and offsets must be block-aligned).
    pub direct: bool,
    /// `O_EXCL` on a block device: fails with EBUSY when the device is mounted or held by md,
    /// dm or another exclusive opener. The kernel's own answer to "is anyone using this?".
    pub exclusive: bool,
}

/// Opens a file or block device with the given mode.
pub fn open(path: &Path, mode: OpenMode) -> io::Result<File> {
    let mut flags = libc::O_CLOEXEC;
    if mode.direct {
        flags |= libc::O_DIRECT;
    }
    if mode.exclusive {
        flags |= libc::O_EXCL;
    }
    OpenOptions::new()
        .read(true)
        .write(mode.write)
        .custom_flags(flags)
        .open(path)
}

/// Whether `file` is a block device (as opposed to a regular file used as a stand-in).
pub fn is_block_device(file: &File) -> io::Result<bool> {
    Ok(file.metadata()?.file_type().is_block_device())
}

fn ioctl_none(file: &File, req: libc::c_ulong) -> io::Result<()> {
    // SAFETY: `req` is one of the argument-less block ioctls above (BLKRRPART, BLKFLSBUF);
    // the kernel reads no pointer argument for them; the fd is valid for the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), req as _, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ioctl_int(file: &File, req: libc::c_ulong) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    // SAFETY: BLKROGET/BLKSSZGET/BLKPBSZGET write one int through the pointer, which points
    // to a live, properly aligned c_int on our stack.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), req as _, &mut v as *mut libc::c_int) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

fn ioctl_range(file: &File, req: libc::c_ulong, start: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [start, len];
    // SAFETY: BLKDISCARD/BLKSECDISCARD/BLKZEROOUT read a `uint64_t range[2]` through the
    // pointer, which points to a live array on our stack.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), req as _, range.as_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Size in bytes: BLKGETSIZE64 for a block device, the length for a regular file.
pub fn size_bytes(file: &File) -> io::Result<u64> {
    if !is_block_device(file)? {
        return Ok(file.metadata()?.len());
    }
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to a live u64.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Whether the block device is read-only (BLKROGET). Regular files: from their permissions.
pub fn is_read_only(file: &File) -> io::Result<bool> {
    if !is_block_device(file)? {
        return Ok(file.metadata()?.permissions().readonly());
    }
    Ok(ioctl_int(file, BLKROGET)? != 0)
}

/// Logical block size (BLKSSZGET); 512 for regular files.
pub fn logical_block_size(file: &File) -> io::Result<u32> {
    if !is_block_device(file)? {
        return Ok(512);
    }
    Ok(ioctl_int(file, BLKSSZGET)? as u32)
}

/// Physical block size (BLKPBSZGET); 4096 for regular files.
pub fn physical_block_size(file: &File) -> io::Result<u32> {
    if !is_block_device(file)? {
        return Ok(4096);
    }
    Ok(ioctl_int(file, BLKPBSZGET)? as u32)
}

/// Asks the kernel to re-read the partition table (BLKRRPART). Fails with EINVAL on devices
/// that have no partition support (e.g. loop devices without partscan) and EBUSY when a
/// partition is in use.
pub fn reread_partitions(file: &File) -> io::Result<()> {
    ioctl_none(file, BLKRRPART)
}

/// Flushes and invalidates the device's buffer cache (BLKFLSBUF).
pub fn flush_buffers(file: &File) -> io::Result<()> {
    ioctl_none(file, BLKFLSBUF)
}

/// **Destroys data.** Discards `len` bytes at `start` (BLKDISCARD).
pub fn discard(file: &File, start: u64, len: u64) -> io::Result<()> {
    ioctl_range(file, BLKDISCARD, start, len)
}

/// **Destroys data.** Secure discard (BLKSECDISCARD): the device must make the data
/// unrecoverable, including copies it made internally.
pub fn secure_discard(file: &File, start: u64, len: u64) -> io::Result<()> {
    ioctl_range(file, BLKSECDISCARD, start, len)
}

/// **Destroys data.** Zeroes `len` bytes at `start` (BLKZEROOUT): uses the device's
/// write-zeroes command where it has one, else the kernel writes zero pages.
pub fn zero_out(file: &File, start: u64, len: u64) -> io::Result<()> {
    ioctl_range(file, BLKZEROOUT, start, len)
}

/// **Destroys data.** Zeroes a range of a regular file by punching a hole (keeps the size).
pub fn punch_hole(file: &File, start: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate takes plain integers; the fd is valid for the call.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            start as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Major and minor number of a block device (`st_rdev`).
pub fn dev_numbers(file: &File) -> io::Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let rdev = file.metadata()?.rdev();
    Ok((libc::major(rdev), libc::minor(rdev)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn regular_file_fallbacks() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[1u8; 8192]).unwrap();
        let file = open(
            f.path(),
            OpenMode {
                write: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!is_block_device(&file).unwrap());
        assert_eq!(size_bytes(&file).unwrap(), 8192);
        assert_eq!(logical_block_size(&file).unwrap(), 512);
        punch_hole(&file, 0, 4096).unwrap();
        let data = std::fs::read(f.path()).unwrap();
        assert!(data[..4096].iter().all(|&b| b == 0));
        assert!(data[4096..].iter().all(|&b| b == 1));
    }
}
