//! Test helpers: an in-memory disk, a deterministic PRNG, chunked feeding.

use super::{DecodeSummary, Decoder, FormatError, Sink, SinkError};

/// Bytes never written by a decoder keep this value, so a test notices gaps.
pub const POISON: u8 = 0xee;

/// An in-memory disk that grows as written.
#[derive(Debug, Default)]
pub struct MemSink {
    pub disk: Vec<u8>,
    pub announced: Option<u64>,
    pub writes: usize,
    /// Refuse writes past this size, like a device.
    pub device_size: Option<u64>,
}

impl Sink for MemSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        let end = offset + data.len() as u64;
        if let Some(device_size) = self.device_size {
            if end > device_size {
                return Err(SinkError::TooLarge { end, device_size });
            }
        }
        if self.disk.len() < end as usize {
            self.disk.resize(end as usize, POISON);
        }
        self.disk[offset as usize..end as usize].copy_from_slice(data);
        self.writes += 1;
        Ok(())
    }

    fn announce_size(&mut self, disk_bytes: u64) -> Result<(), SinkError> {
        assert!(self.announced.is_none(), "size announced twice");
        assert_eq!(self.writes, 0, "size announced after a write");
        self.announced = Some(disk_bytes);
        Ok(())
    }
}

impl MemSink {
    /// The disk as the writer would leave it: zero ranges zeroed, sized to the image.
    pub fn image(&self, summary: &DecodeSummary) -> Vec<u8> {
        let mut disk = self.disk.clone();
        disk.resize(summary.disk_bytes as usize, POISON);
        let mut prev_end = 0;
        for &(off, len) in &summary.zero_ranges {
            assert!(off >= prev_end, "zero ranges unsorted or overlapping");
            assert!(off + len <= summary.disk_bytes, "zero range past the disk");
            prev_end = off + len;
            disk[off as usize..(off + len) as usize].fill(0);
        }
        disk
    }
}

/// xorshift64*: deterministic, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// How to cut the input.
#[derive(Debug, Clone, Copy)]
pub enum Chunking {
    Whole,
    Fixed(usize),
    /// Random sizes up to the given maximum, from the seed.
    Random(u64, usize),
}

/// Feeds `data` to `dec` cut as `chunking` says, then finishes.
pub fn decode(
    dec: &mut dyn Decoder,
    data: &[u8],
    chunking: Chunking,
    sink: &mut MemSink,
) -> Result<DecodeSummary, FormatError> {
    match chunking {
        Chunking::Whole => dec.feed(data, sink)?,
        Chunking::Fixed(n) => {
            for c in data.chunks(n) {
                dec.feed(c, sink)?;
            }
        }
        Chunking::Random(seed, max) => {
            let mut rng = Rng(seed | 1);
            let mut rest = data;
            while !rest.is_empty() {
                let n = (rng.below(max as u64) as usize + 1).min(rest.len());
                let (c, r) = rest.split_at(n);
                dec.feed(c, sink)?;
                rest = r;
            }
        }
    }
    dec.finish(sink)
}

/// Runs the auto decoder over `data` and returns the resulting disk image.
pub fn auto_decode(
    data: &[u8],
    chunking: Chunking,
) -> Result<(Vec<u8>, DecodeSummary), FormatError> {
    let mut sink = MemSink::default();
    let mut dec = super::AutoDecoder::new();
    let summary = decode(&mut dec, data, chunking, &mut sink)?;
    Ok((sink.image(&summary), summary))
}

/// A disk-like test pattern: random sectors, zero runs and repeated runs, deterministic.
pub fn disk_pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut out = vec![0u8; len];
    let mut at = 0;
    while at < len {
        let run = ((rng.below(64) + 1) * 4096).min((len - at) as u64) as usize;
        match rng.below(4) {
            0 | 1 => rng.fill(&mut out[at..at + run]),
            2 => {} // hole
            _ => out[at..at + run].fill(rng.below(256) as u8),
        }
        at += run;
    }
    out
}
