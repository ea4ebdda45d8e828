//! The disk side of an image write. **Everything here destroys data on the target.**
//!
//! [`DiskSink`] runs in the decoder's thread: it checks every write against the device size,
//! keeps the image's first MiB in memory ([`HOLD`]), and packs the rest into a small pool of
//! page-aligned buffers that it hands to the writer thread ([`run_writer`]). The writer does
//! `pwrite` with `O_DIRECT` on block devices; writes that start or end inside a logical block
//! (qcow2 512-byte clusters, an image's unaligned tail) read the block first and merge
//! (read-modify-write). Jobs run in order in one thread, so a merge always sees earlier writes.
//!
//! The writer also flushes the device every [`FLUSH_EVERY`] bytes from a second thread, without
//! waiting for it: the device's write cache (or, under a loop device or a VM's virtual disk, the
//! host's page cache) drains while the image still streams, so the final sync is short.
//!
//! Order of destruction: the disk's first MiB is zeroed (and synced) before the first image
//! byte reaches it; the held first MiB is written only once the checksum has verified, so a
//! failed write leaves a disk that does not boot.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};

use agent_sys::{block, AlignedBuf};

use crate::format::{Sink, SinkError};

/// The head of the disk held back until the checksum verifies (partition tables, boot code).
pub const HOLD: u64 = 1 << 20;
/// Size of one write buffer.
pub const BUF_SIZE: usize = 4 << 20;
/// Buffers in flight between the decoder and the writer.
pub const POOL: usize = 4;
/// Zero detection works on stretches this long, aligned on the disk: an all-zero one is not
/// written but zeroed (BLKZEROOUT, which devices do without transferring the zeros; a hole in
/// a regular file).
pub const ZERO_GRAIN: usize = 64 << 10;
/// Image bytes written between background flushes.
pub const FLUSH_EVERY: u64 = 256 << 20;
/// Largest logical block size handled (buffers carry this much slack for rounding up).
const MAX_ALIGN: usize = 4096;

/// An opened target.
pub struct Disk {
    file: File,
    /// Writes must be aligned to this (the logical block size with `O_DIRECT`, else 1).
    align: u64,
    size: u64,
    is_block: bool,
}

impl Disk {
    /// **Opens the target for writing.** Block devices: `O_EXCL` (fails if mounted or held)
    /// and `O_DIRECT`. Regular files (tests, image files): buffered.
    pub fn open(path: &Path) -> io::Result<Self> {
        let probe = block::open(path, block::OpenMode::default())?;
        let is_block = block::is_block_device(&probe)?;
        drop(probe);
        let file = block::open(
            path,
            block::OpenMode {
                write: true,
                direct: is_block,
                exclusive: is_block,
            },
        )?;
        let size = block::size_bytes(&file)?;
        let align = if is_block {
            u64::from(block::logical_block_size(&file)?)
        } else {
            1
        };
        if !align.is_power_of_two() || align as usize > MAX_ALIGN {
            return Err(io::Error::other(format!(
                "unsupported logical block size {align}"
            )));
        }
        Ok(Self {
            file,
            align,
            size,
            is_block,
        })
    }

    /// A target its caller opened itself, buffered (the config drive writer): `align` is the
    /// logical block size, the unit [`Disk::zero_range`] hands to BLKZEROOUT.
    pub fn from_open(file: File, size: u64, is_block: bool, align: u64) -> Self {
        Self {
            file,
            align: if is_block { align } else { 1 },
            size,
            is_block,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn align(&self) -> u64 {
        self.align
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn is_block(&self) -> bool {
        self.is_block
    }

    fn round_down(&self, x: u64) -> u64 {
        x - x % self.align
    }

    fn round_up(&self, x: u64) -> u64 {
        x.div_ceil(self.align) * self.align
    }

    /// Reads one aligned block at `off` into `scratch` (zeros past the end of a file).
    fn read_block(&self, off: u64, scratch: &mut AlignedBuf) -> io::Result<()> {
        let len = self.align as usize;
        scratch.set_len(len);
        let mut done = 0;
        while done < len {
            match self.file.read_at(&mut scratch[done..], off + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        scratch[done..].fill(0);
        Ok(())
    }

    /// Writes `buf[..data_end]` whose byte 0 is disk byte `start` (aligned) and whose bytes
    /// `head_pad..data_end` are the new data: merges the old contents of partial blocks, then
    /// writes whole blocks. `buf` starts block-aligned in memory and has `align` bytes of
    /// slack past `data_end`.
    fn write_merged(
        &self,
        start: u64,
        head_pad: usize,
        data_end: usize,
        buf: &mut [u8],
    ) -> io::Result<()> {
        debug_assert_eq!(start % self.align, 0);
        let align = self.align as usize;
        let end = start + data_end as u64;
        let write_end = self.round_up(end).min(self.size.max(end));
        let len = (write_end - start) as usize;
        if self.align > 1 && (head_pad > 0 || !data_end.is_multiple_of(align)) {
            let mut scratch = AlignedBuf::zeroed(align);
            if head_pad > 0 {
                self.read_block(start, &mut scratch)?;
                buf[..head_pad].copy_from_slice(&scratch[..head_pad]);
            }
            if !data_end.is_multiple_of(align) {
                let block_start = data_end - data_end % align;
                self.read_block(start + block_start as u64, &mut scratch)?;
                let from = data_end - block_start;
                buf[data_end..block_start + align].copy_from_slice(&scratch[from..]);
            }
        }
        self.file.write_all_at(&buf[..len], start)
    }

    /// Writes `data` at `offset`, any alignment (small writes: edges of zeroed ranges, the
    /// held first MiB).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let start = self.round_down(offset);
        let head_pad = (offset - start) as usize;
        let mut buf = AlignedBuf::zeroed(head_pad + data.len() + MAX_ALIGN);
        buf[head_pad..head_pad + data.len()].copy_from_slice(data);
        buf.set_len(buf.capacity());
        self.write_merged(start, head_pad, head_pad + data.len(), &mut buf)
    }

    /// **Zeroes** the disk's first MiB and syncs: the disk no longer boots.
    pub fn zero_head(&self) -> io::Result<()> {
        let len = HOLD.min(self.size) as usize;
        self.write_at(0, &vec![0u8; len])?;
        self.file.sync_data()
    }

    /// **Zeroes** `len` bytes at `offset`: BLKZEROOUT on block devices (edges that are not
    /// block-aligned by read-modify-write), a punched hole in regular files.
    pub fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = (offset + len).min(self.size);
        if end <= offset {
            return Ok(());
        }
        if !self.is_block {
            return block::punch_hole(&self.file, offset, end - offset);
        }
        let inner_start = self.round_up(offset);
        let inner_end = self.round_down(end);
        if inner_start >= inner_end {
            return self.write_at(offset, &vec![0u8; (end - offset) as usize]);
        }
        if inner_start > offset {
            self.write_at(offset, &vec![0u8; (inner_start - offset) as usize])?;
        }
        if end > inner_end {
            self.write_at(inner_end, &vec![0u8; (end - inner_end) as usize])?;
        }
        block::zero_out(&self.file, inner_start, inner_end - inner_start)
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// Work for the writer thread, done in order.
pub enum Job {
    /// Zero the disk's first MiB (sent before the first image byte).
    ZeroHead,
    /// `buf[head_pad..data_end]` goes to disk byte `start + head_pad`.
    Write {
        start: u64,
        head_pad: usize,
        data_end: usize,
        buf: AlignedBuf,
    },
}

/// A fresh buffer pool: `(free-buffer sender for the writer, receiver for the sink)`.
pub fn buffer_pool() -> (SyncSender<AlignedBuf>, Receiver<AlignedBuf>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(POOL);
    for _ in 0..POOL {
        tx.send(AlignedBuf::zeroed(BUF_SIZE + MAX_ALIGN))
            .expect("the pool's receiver is alive");
    }
    (tx, rx)
}

/// The writer thread: runs jobs until the sink hangs up, returning buffers to the pool.
/// Stops at the first error (the sink then sees [`SinkError::Closed`]). Returns what it did
/// with the image data outside the held first MiB.
///
/// Every [`FLUSH_EVERY`] bytes it asks a flusher thread to sync the device, unless the last
/// flush is still running. A failed background flush fails the write: the kernel reports a
/// writeback error to one sync only, so the final sync might not see it again.
pub fn run_writer(
    disk: &Disk,
    jobs: Receiver<Job>,
    free: SyncSender<AlignedBuf>,
) -> io::Result<WriterStats> {
    let (flush_tx, flush_rx) = std::sync::mpsc::sync_channel::<()>(0);
    std::thread::scope(|s| {
        let flusher = std::thread::Builder::new()
            .name("image-flusher".into())
            .spawn_scoped(s, move || -> io::Result<u32> {
                let mut flushes = 0;
                for () in flush_rx {
                    disk.file.sync_data()?;
                    flushes += 1;
                }
                Ok(flushes)
            })?;
        let mut written = 0u64;
        let mut zeroed = 0u64;
        let mut unflushed = 0u64;
        // The zero stretch being gathered: zeroed when data follows it, or at the end.
        let mut zeros = ZeroRun::default();
        let result = jobs.iter().try_for_each(|job| {
            match job {
                Job::ZeroHead => disk.zero_head()?,
                Job::Write {
                    start,
                    head_pad,
                    data_end,
                    mut buf,
                } => {
                    let n = write_job(disk, start, head_pad, data_end, &mut buf, &mut zeros)?;
                    written += n.written;
                    zeroed += n.zeroed;
                    unflushed += n.written;
                    // The sink may have finished already; then the buffer is simply freed.
                    let _ = free.send(buf);
                    // A rendezvous channel: this succeeds only when the flusher is idle.
                    if unflushed >= FLUSH_EVERY && flush_tx.try_send(()).is_ok() {
                        unflushed = 0;
                    }
                }
            }
            Ok::<_, io::Error>(())
        });
        let result = result.and_then(|()| zeros.flush(disk));
        drop(flush_tx);
        let flushed = flusher
            .join()
            .map_err(|_| io::Error::other("the flusher thread panicked"))?;
        result?;
        let flushes =
            flushed.map_err(|e| io::Error::new(e.kind(), format!("background flush: {e}")))?;
        tracing::debug!(written, zeroed, flushes, "image data written");
        Ok(WriterStats { written, zeroed })
    })
}

/// What the writer did with the image data (outside the held first MiB).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Bytes written.
    pub written: u64,
    /// Bytes that were zeros in the image and were zeroed on the disk instead of written.
    pub zeroed: u64,
}

/// A stretch of zeros gathered across jobs, so that one BLKZEROOUT covers it.
#[derive(Default)]
struct ZeroRun {
    start: u64,
    len: u64,
}

impl ZeroRun {
    fn add(&mut self, disk: &Disk, start: u64, len: u64) -> io::Result<()> {
        if self.len > 0 && self.start + self.len != start {
            self.flush(disk)?;
        }
        if self.len == 0 {
            self.start = start;
        }
        self.len += len;
        Ok(())
    }

    fn flush(&mut self, disk: &Disk) -> io::Result<()> {
        if self.len > 0 {
            disk.zero_range(self.start, self.len)?;
            self.len = 0;
        }
        Ok(())
    }
}

/// Whether every byte is zero (ORs a page at a time, which vectorises, and stops at the first
/// page that is not).
fn all_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Writes one job: the [`ZERO_GRAIN`]-aligned stretches of it that are all zeros go to
/// `zeros`, the rest is written (a stretch of data first zeroes the run gathered before it,
/// so the disk is changed in order).
fn write_job(
    disk: &Disk,
    start: u64,
    head_pad: usize,
    data_end: usize,
    buf: &mut AlignedBuf,
    zeros: &mut ZeroRun,
) -> io::Result<WriterStats> {
    buf.set_len(buf.capacity());
    let grain = ZERO_GRAIN as u64;
    let mut stats = WriterStats::default();
    // Data bytes [from, i) of `buf` not yet written; `from` is `head_pad` or a grain boundary.
    let mut from = head_pad;
    let mut i = head_pad;
    while i < data_end {
        let disk_at = start + i as u64;
        let next = ((disk_at / grain + 1) * grain - start) as usize;
        let grain_end = next.min(data_end);
        let whole = disk_at.is_multiple_of(grain) && grain_end == next;
        if whole && all_zero(&buf[i..grain_end]) {
            if from < i {
                stats.written += write_span(disk, zeros, start, from, i, buf)?;
            }
            zeros.add(disk, disk_at, grain)?;
            stats.zeroed += grain;
            from = grain_end;
        }
        i = grain_end;
    }
    if from < data_end {
        stats.written += write_span(disk, zeros, start, from, data_end, buf)?;
    }
    Ok(stats)
}

/// Writes `buf[from..to]` (disk byte `start + from`) after zeroing the run gathered before it,
/// so the disk changes in order; returns the bytes written. `from` is the job's `head_pad` or
/// a grain boundary, so the span starts on a block boundary in memory and on the disk, or is
/// the job's own start.
fn write_span(
    disk: &Disk,
    zeros: &mut ZeroRun,
    start: u64,
    from: usize,
    to: usize,
    buf: &mut [u8],
) -> io::Result<u64> {
    zeros.flush(disk)?;
    let base = from - (start + from as u64) as usize % disk.align as usize;
    disk.write_merged(
        start + base as u64,
        from - base,
        to - base,
        &mut buf[base..],
    )?;
    Ok((to - from) as u64)
}

struct Pending {
    buf: AlignedBuf,
    start: u64,
    head_pad: usize,
    /// End of the data in `buf`.
    data_end: usize,
}

impl Pending {
    fn disk_end(&self) -> u64 {
        self.start + self.data_end as u64
    }
}

/// The decoder's [`Sink`]: bounds-checks, holds the first MiB, batches the rest for the writer.
pub struct DiskSink {
    device_size: u64,
    align: u64,
    held: Vec<u8>,
    pending: Option<Pending>,
    free: Receiver<AlignedBuf>,
    jobs: SyncSender<Job>,
    started: bool,
}

impl DiskSink {
    pub fn new(
        device_size: u64,
        align: u64,
        free: Receiver<AlignedBuf>,
        jobs: SyncSender<Job>,
    ) -> Self {
        Self {
            device_size,
            align,
            held: vec![0u8; HOLD.min(device_size) as usize],
            pending: None,
            free,
            jobs,
            started: false,
        }
    }

    pub fn device_size(&self) -> u64 {
        self.device_size
    }

    /// Whether any image byte was accepted (so the disk's first MiB was zeroed).
    pub fn started(&self) -> bool {
        self.started
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if let Some(p) = self.pending.take() {
            self.jobs
                .send(Job::Write {
                    start: p.start,
                    head_pad: p.head_pad,
                    data_end: p.data_end,
                    buf: p.buf,
                })
                .map_err(|_| SinkError::Closed)?;
        }
        Ok(())
    }

    /// Sends what is buffered and hangs up; returns the held first MiB (image bytes over
    /// zeros), to be written after verification.
    pub fn finish(mut self) -> Result<Vec<u8>, SinkError> {
        self.flush()?;
        Ok(std::mem::take(&mut self.held))
    }
}

impl Sink for DiskSink {
    fn write_at(&mut self, mut offset: u64, mut data: &[u8]) -> Result<(), SinkError> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset + data.len() as u64;
        if end > self.device_size {
            return Err(SinkError::TooLarge {
                end,
                device_size: self.device_size,
            });
        }
        if !self.started {
            self.started = true;
            self.jobs
                .send(Job::ZeroHead)
                .map_err(|_| SinkError::Closed)?;
        }
        if offset < HOLD {
            let n = (end.min(HOLD) - offset) as usize;
            self.held[offset as usize..offset as usize + n].copy_from_slice(&data[..n]);
            offset += n as u64;
            data = &data[n..];
        }
        while !data.is_empty() {
            if let Some(p) = &mut self.pending {
                if p.disk_end() == offset && p.data_end < BUF_SIZE {
                    let n = (BUF_SIZE - p.data_end).min(data.len());
                    p.buf[p.data_end..p.data_end + n].copy_from_slice(&data[..n]);
                    p.data_end += n;
                    offset += n as u64;
                    data = &data[n..];
                    continue;
                }
            }
            self.flush()?;
            let mut buf = self.free.recv().map_err(|_| SinkError::Closed)?;
            buf.set_len(buf.capacity());
            let start = offset - offset % self.align;
            let head_pad = (offset - start) as usize;
            self.pending = Some(Pending {
                buf,
                start,
                head_pad,
                data_end: head_pad,
            });
        }
        Ok(())
    }

    fn announce_size(&mut self, disk_bytes: u64) -> Result<(), SinkError> {
        if disk_bytes > self.device_size {
            return Err(SinkError::TooLarge {
                end: disk_bytes,
                device_size: self.device_size,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `writes` through a sink and writer to `disk`, returning the held MiB.
    fn run(disk: &Disk, writes: &[(u64, Vec<u8>)]) -> Result<Vec<u8>, SinkError> {
        run_stats(disk, writes).map(|(held, _)| held)
    }

    /// [`run`], also returning what the writer did.
    fn run_stats(
        disk: &Disk,
        writes: &[(u64, Vec<u8>)],
    ) -> Result<(Vec<u8>, WriterStats), SinkError> {
        let (free_tx, free_rx) = buffer_pool();
        let (jobs_tx, jobs_rx) = std::sync::mpsc::sync_channel(POOL);
        std::thread::scope(|s| {
            let w = s.spawn(|| run_writer(disk, jobs_rx, free_tx));
            let mut sink = DiskSink::new(disk.size(), disk.align(), free_rx, jobs_tx);
            let res = writes
                .iter()
                .try_for_each(|(off, d)| sink.write_at(*off, d))
                .and_then(|_| sink.finish());
            let stats = w.join().unwrap().unwrap();
            res.map(|held| (held, stats))
        })
    }

    /// `image` in pieces of `piece` bytes, as a decoder hands them over.
    fn pieces(image: &[u8], piece: usize) -> Vec<(u64, Vec<u8>)> {
        image
            .chunks(piece)
            .enumerate()
            .map(|(i, c)| ((i * piece) as u64, c.to_vec()))
            .collect()
    }

    fn file_disk(content: &[u8]) -> (tempfile::NamedTempFile, Disk) {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), content).unwrap();
        let d = Disk::open(f.path()).unwrap();
        (f, d)
    }

    #[test]
    fn first_mib_held_back_until_written() {
        let size = 12 << 20;
        let (f, disk) = file_disk(&vec![0xAA; size]);
        let image: Vec<u8> = (0..9 << 20).map(|i| (i % 251) as u8).collect();
        let held = run(&disk, &pieces(&image, 100_000)).unwrap();
        // Before the held MiB is written (as after a failed checksum): the head is zero.
        let on_disk = std::fs::read(f.path()).unwrap();
        assert!(on_disk[..HOLD as usize].iter().all(|&b| b == 0));
        assert_eq!(
            &on_disk[HOLD as usize..image.len()],
            &image[HOLD as usize..]
        );
        assert!(on_disk[image.len()..].iter().all(|&b| b == 0xAA));
        assert_eq!(&held[..], &image[..HOLD as usize]);
        // After verification: the whole image.
        disk.write_at(0, &held).unwrap();
        let on_disk = std::fs::read(f.path()).unwrap();
        assert_eq!(&on_disk[..image.len()], &image[..]);
    }

    #[test]
    fn aligned_stretches_of_zeros_are_zeroed_not_written() {
        let size = 12 << 20;
        let (f, disk) = file_disk(&vec![0xAA; size]);
        // No zero byte anywhere but in [z0, z1), which starts and ends inside a grain.
        let mut image: Vec<u8> = (0..10 << 20).map(|i| (i % 251) as u8 | 1).collect();
        let (z0, z1) = ((3 << 20) + 1000, (5 << 20) + 100_000);
        image[z0..z1].fill(0);
        let (held, stats) = run_stats(&disk, &pieces(&image, 100_000)).unwrap();
        // Only the whole grains inside the run, [3 MiB + 64 KiB, 5 MiB + 64 KiB), are zeroed;
        // the partial grains at its edges are written with the data around them.
        let zeroed = 2 << 20;
        assert_eq!(
            stats,
            WriterStats {
                written: image.len() as u64 - HOLD - zeroed,
                zeroed,
            }
        );
        disk.write_at(0, &held).unwrap();
        let on_disk = std::fs::read(f.path()).unwrap();
        assert!(
            on_disk[..image.len()] == image[..],
            "disk differs from the image"
        );
        assert!(on_disk[image.len()..].iter().all(|&b| b == 0xAA));
        // Zeroed, not written: a regular file gets a hole there.
        use std::os::unix::fs::MetadataExt;
        let allocated = std::fs::metadata(f.path()).unwrap().blocks() * 512;
        assert_eq!(allocated, size as u64 - zeroed);
    }

    #[test]
    fn all_zero_finds_a_single_set_byte() {
        let mut b = vec![0u8; 3 * 4096 + 17];
        assert!(all_zero(&b));
        assert!(all_zero(&[]));
        for i in [0, 4095, 4096, 3 * 4096 + 16] {
            b[i] = 0x80;
            assert!(!all_zero(&b), "byte {i}");
            b[i] = 0;
        }
    }

    #[test]
    fn refuses_writes_past_the_end_and_keeps_the_disk() {
        let (f, disk) = file_disk(&vec![0xAA; 3 << 20]);
        let err = run(&disk, &[(3 << 20, vec![1; 1])]).unwrap_err();
        assert!(
            matches!(err, SinkError::TooLarge { end, device_size } if end == (3 << 20) + 1 && device_size == 3 << 20)
        );
        // Nothing was accepted: nothing was written, not even the zeroed head.
        assert!(std::fs::read(f.path()).unwrap().iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn scattered_writes_and_zero_ranges() {
        let (f, disk) = file_disk(&vec![0xAA; 8 << 20]);
        let writes = vec![
            ((5 << 20) + 512, vec![1u8; 512]),
            (2 << 20, vec![2u8; 65536]),
            ((2 << 20) + 65536, vec![3u8; 100]),
            (100, vec![4u8; 10]),
        ];
        let held = run(&disk, &writes).unwrap();
        disk.zero_range(6 << 20, 4096 + 3).unwrap();
        disk.write_at(0, &held).unwrap();
        let d = std::fs::read(f.path()).unwrap();
        assert!(d[..100].iter().all(|&b| b == 0));
        assert_eq!(&d[100..110], &[4u8; 10]);
        assert!(d[110..HOLD as usize].iter().all(|&b| b == 0));
        assert!(d[HOLD as usize..2 << 20].iter().all(|&b| b == 0xAA));
        assert!(d[2 << 20..(2 << 20) + 65536].iter().all(|&b| b == 2));
        assert!(d[(2 << 20) + 65536..(2 << 20) + 65636]
            .iter()
            .all(|&b| b == 3));
        assert_eq!(d[(2 << 20) + 65636], 0xAA);
        assert!(d[(5 << 20) + 512..(5 << 20) + 1024].iter().all(|&b| b == 1));
        assert_eq!(d[(5 << 20) + 511], 0xAA);
        assert!(d[6 << 20..(6 << 20) + 4099].iter().all(|&b| b == 0));
        assert_eq!(d[(6 << 20) + 4099], 0xAA);
    }
}
