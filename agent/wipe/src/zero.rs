//! Writing zeroes and checking that a device reads back zeroes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use agent_sys::{block, AlignedBuf};

use crate::progress::Reporter;
use crate::{FullMethod, WipeError};

/// One MiB.
pub(crate) const MIB: u64 = 1 << 20;

/// Size of each `O_DIRECT` write of the overwrite: large enough to keep any disk streaming,
/// small enough for a ramdisk with many disks wiped at once.
const OVERWRITE_CHUNK: usize = 8 << 20;

/// **Destroys data.** Writes zeroes over `len` bytes at `offset` through `file` (buffered;
/// for the small edge regions of a metadata wipe).
pub(crate) fn zero_range(
    file: &File,
    device: &Path,
    offset: u64,
    len: u64,
) -> Result<(), WipeError> {
    let zeroes = vec![0u8; MIB as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(MIB);
        file.write_all_at(&zeroes[..n as usize], offset + done)
            .map_err(|source| WipeError::Write {
                device: device.into(),
                offset: offset + done,
                len: n,
                source,
            })?;
        done += n;
    }
    Ok(())
}

/// The first and last `edge` bytes of the range `[start, start + len)`, merged when they
/// overlap: `(offset, len)` pairs.
pub(crate) fn edges(start: u64, len: u64, edge: u64) -> Vec<(u64, u64)> {
    if len <= 2 * edge {
        return vec![(start, len)];
    }
    vec![(start, edge), (start + len - edge, edge)]
}

/// Opens the device a second time for `O_DIRECT` I/O (the first, exclusive, descriptor keeps
/// everyone else out). Falls back to buffered I/O where `O_DIRECT` is refused (regular files on
/// tmpfs).
pub(crate) fn open_direct(path: &Path, write: bool) -> std::io::Result<(File, bool)> {
    match block::open(
        path,
        block::OpenMode {
            write,
            direct: true,
            exclusive: false,
        },
    ) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((
            block::open(
                path,
                block::OpenMode {
                    write,
                    direct: false,
                    exclusive: false,
                },
            )?,
            false,
        )),
        Err(e) => Err(e),
    }
}

/// **Destroys data.** Overwrites the whole device with zeroes: sequential `O_DIRECT` writes of
/// [`OVERWRITE_CHUNK`] from one page-aligned zero buffer, progress as it goes, then fsync.
pub(crate) fn overwrite(
    path: &Path,
    device: &Path,
    size: u64,
    rep: &mut Reporter,
) -> Result<(), WipeError> {
    let (file, _direct) = open_direct(path, true).map_err(|source| WipeError::Open {
        device: device.into(),
        source,
    })?;
    let buf = AlignedBuf::zeroed(OVERWRITE_CHUNK);
    let mut done = 0u64;
    rep.phase(0, "zero-overwrite");
    while done < size {
        // The device size is a multiple of its logical block size, so the tail stays aligned.
        let n = (size - done).min(OVERWRITE_CHUNK as u64) as usize;
        file.write_all_at(&buf[..n], done)
            .map_err(|source| WipeError::Write {
                device: device.into(),
                offset: done,
                len: n as u64,
                source,
            })?;
        done += n as u64;
        rep.update(done, "zero-overwrite");
    }
    file.sync_all().map_err(|source| WipeError::Sync {
        device: device.into(),
        source,
    })?;
    Ok(())
}

/// A small xorshift generator: sample positions need to be spread, not secret.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Offsets of `samples` blocks of `block` bytes to check on a device of `size` bytes: the
/// first and the last block, then random aligned blocks.
pub(crate) fn sample_offsets(size: u64, block: u64, samples: usize, seed: u64) -> Vec<u64> {
    let blocks = size / block;
    if blocks == 0 {
        return Vec::new();
    }
    let mut out = vec![0, (blocks - 1) * block];
    let mut rng = XorShift(seed | 1);
    while out.len() < samples.max(2) && (out.len() as u64) < blocks {
        out.push((rng.next() % blocks) * block);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Reads `samples` blocks spread over the device (bypassing the page cache where it can) and
/// checks that each is all zeroes. Returns the first non-zero offset as an error.
pub(crate) fn verify_zero_samples(
    path: &Path,
    device: &Path,
    size: u64,
    samples: usize,
    method: FullMethod,
) -> Result<(), WipeError> {
    const BLOCK: u64 = 64 << 10;
    let (file, _) = open_direct(path, false).map_err(|source| WipeError::Open {
        device: device.into(),
        source,
    })?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9_7f4a_7c15)
        ^ size;
    // Sample 64 KiB blocks; a device smaller than that is checked in 4 KiB blocks.
    let block = if size >= BLOCK { BLOCK } else { 4096 };
    let mut buf = AlignedBuf::zeroed(block as usize);
    for off in sample_offsets(size, block, samples, seed) {
        buf.set_len(block as usize);
        file.read_exact_at(&mut buf, off)
            .map_err(|source| WipeError::Read {
                device: device.into(),
                offset: off,
                source,
            })?;
        if let Some(pos) = buf.iter().position(|&b| b != 0) {
            return Err(WipeError::NotZero {
                device: device.into(),
                offset: off + pos as u64,
                method,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_merge_when_small() {
        assert_eq!(edges(0, 10 * MIB, MIB), vec![(0, MIB), (9 * MIB, MIB)]);
        assert_eq!(edges(4096, MIB + 512, MIB), vec![(4096, MIB + 512)]);
        assert_eq!(edges(0, 2 * MIB, MIB), vec![(0, 2 * MIB)]);
    }

    #[test]
    fn samples_include_both_ends_and_stay_aligned() {
        let s = sample_offsets(1 << 30, 65536, 64, 42);
        assert_eq!(s[0], 0);
        assert_eq!(*s.last().unwrap(), (1 << 30) - 65536);
        assert!(s.len() > 32 && s.len() <= 64);
        assert!(s.iter().all(|o| o % 65536 == 0 && *o < 1 << 30));
        assert_eq!(sample_offsets(65536, 65536, 64, 1), vec![0]);
        assert!(sample_offsets(100, 65536, 64, 1).is_empty());
    }

    #[test]
    fn overwrite_and_verify_regular_file() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![0xa5u8; 3 << 20]).unwrap();
        let err = verify_zero_samples(f.path(), f.path(), 3 << 20, 16, FullMethod::ZeroOverwrite)
            .unwrap_err();
        assert!(matches!(err, WipeError::NotZero { offset: 0, .. }), "{err}");
        let mut rep = Reporter::new(None, f.path(), Some(3 << 20));
        overwrite(f.path(), f.path(), 3 << 20, &mut rep).unwrap();
        verify_zero_samples(f.path(), f.path(), 3 << 20, 16, FullMethod::ZeroOverwrite).unwrap();
        assert!(std::fs::read(f.path()).unwrap().iter().all(|&b| b == 0));
    }
}
