//! Decoder throughput, in memory, on a 256 MiB disk-like pattern (half random, a quarter
//! zeros, a quarter repeated runs) in every format the agent sniffs. A benchmark, not a test:
//!
//! ```text
//! cargo run --release -p agent-image --example decode_throughput
//! ```

use std::io::Write;

use agent_image::format::{AutoDecoder, Decoder, Sink, SinkError};

/// Counts what would be written.
struct Null(u64);

impl Sink for Null {
    fn write_at(&mut self, _offset: u64, data: &[u8]) -> Result<(), SinkError> {
        self.0 += data.len() as u64;
        Ok(())
    }
}

/// Deterministic disk-like content: 4 KiB..256 KiB runs of noise, zeros or one byte value.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = vec![0u8; len];
    let mut at = 0;
    while at < len {
        let run = (((next() % 64) + 1) as usize * 4096).min(len - at);
        match next() % 4 {
            0 | 1 => out[at..at + run]
                .chunks_mut(8)
                .for_each(|c| c.copy_from_slice(&next().to_le_bytes()[..c.len()])),
            2 => {}
            _ => out[at..at + run].fill(next() as u8),
        }
        at += run;
    }
    out
}

fn main() -> anyhow::Result<()> {
    let raw = pattern(256 << 20);
    let dir = tempfile::tempdir()?;
    let raw_path = dir.path().join("d.raw");
    std::fs::write(&raw_path, &raw)?;
    let qcow2 = |opts: &[&str]| -> anyhow::Result<Vec<u8>> {
        let out = dir.path().join("d.qcow2");
        let st = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .args(opts)
            .arg(&raw_path)
            .arg(&out)
            .status()?;
        anyhow::ensure!(st.success(), "qemu-img convert failed");
        Ok(std::fs::read(&out)?)
    };
    let mut xz6 = xz2::write::XzEncoder::new(Vec::new(), 6);
    xz6.write_all(&raw)?;
    let mut gz6 = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz6.write_all(&raw)?;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("raw", raw.clone()),
        ("zstd -3", zstd::bulk::compress(&raw, 3)?),
        ("gzip -6", gz6.finish()?),
        ("xz -6", xz6.finish()?),
        ("qcow2", qcow2(&[])?),
        ("qcow2 -c", qcow2(&["-c"])?),
    ];
    for (name, img) in &cases {
        let mut sink = Null(0);
        let mut dec = AutoDecoder::new();
        let t = std::time::Instant::now();
        for c in img.chunks(256 << 10) {
            dec.feed(c, &mut sink)?;
        }
        let summary = dec.finish(&mut sink)?;
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(summary.disk_bytes == raw.len() as u64, "{name}: wrong size");
        println!(
            "{name:>9}: {:>5} MiB in, {:>5} MiB written, {:6.0} MB/s of disk ({:6.0} MB/s of input)",
            img.len() >> 20,
            sink.0 >> 20,
            raw.len() as f64 / secs / 1e6,
            img.len() as f64 / secs / 1e6,
        );
    }
    Ok(())
}
