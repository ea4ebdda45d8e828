//! Replays the committed cargo-fuzz corpora of agent/fuzz (image_decode, checksum_file,
//! root_device_hints; grown by hack/fuzz.sh) the way the fuzz targets run them, so every input
//! the fuzzer found interesting is re-checked by a plain `cargo test`: errors are fine, panics
//! are not.

use std::path::Path;

use agent_image::format::{AutoDecoder, Decoder, Sink, SinkError};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    tests::fuzz_corpus(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target),
    )
}

/// A disk of a fixed size that keeps nothing.
struct Bounded(u64);

impl Sink for Bounded {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        let end = offset + data.len() as u64;
        if end > self.0 {
            return Err(SinkError::TooLarge {
                end,
                device_size: self.0,
            });
        }
        Ok(())
    }
    fn announce_size(&mut self, n: u64) -> Result<(), SinkError> {
        if n > self.0 {
            return Err(SinkError::TooLarge {
                end: n,
                device_size: self.0,
            });
        }
        Ok(())
    }
}

#[test]
fn image_decode_corpus() {
    let mut decoded = 0;
    for data in corpus("image_decode") {
        let split = data
            .first()
            .map(|&b| b as usize % (data.len() + 1))
            .unwrap_or(0);
        let mut sink = Bounded(64 << 20);
        let mut dec = AutoDecoder::new();
        if dec.feed(&data[..split], &mut sink).is_ok()
            && dec.feed(&data[split..], &mut sink).is_ok()
            && dec.finish(&mut sink).is_ok()
        {
            decoded += 1;
        }
    }
    assert!(decoded > 0, "the seeds made by the real tools decode");
}

#[test]
fn checksum_file_corpus() {
    for data in corpus("checksum_file") {
        let text = String::from_utf8_lossy(&data);
        let _ = agent_image::checksum::parse_checksum_file(&text, "disk.qcow2", None);
        let _ = text.parse::<agent_image::ChecksumSpec>();
    }
}

#[test]
fn root_device_hints_corpus() {
    let disks = vec![agent_proto::Storage {
        name: Some("/dev/sda".into()),
        size_bytes: Some(1 << 40),
        ..Default::default()
    }];
    for data in corpus("root_device_hints") {
        if let Ok(h) = serde_json::from_slice::<agent_image::hints::RootDeviceHints>(&data) {
            let _ = agent_image::hints::select_device(&h, &disks);
        }
    }
}
