//! Raw images: the downloaded bytes are the disk, written in order.

use super::{DecodeSummary, Decoder, FormatError, Sink};

/// Writes its input sequentially from byte 0 of the disk.
#[derive(Debug, Default)]
pub struct RawDecoder {
    pos: u64,
}

impl RawDecoder {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Decoder for RawDecoder {
    fn feed(&mut self, input: &[u8], sink: &mut dyn Sink) -> Result<(), FormatError> {
        if input.is_empty() {
            return Ok(());
        }
        sink.write_at(self.pos, input)?;
        self.pos += input.len() as u64;
        Ok(())
    }

    fn finish(&mut self, _sink: &mut dyn Sink) -> Result<DecodeSummary, FormatError> {
        if self.pos == 0 {
            // An empty download is never a disk image; succeeding would leave the disk blank.
            return Err(FormatError::Truncated("the image is empty".into()));
        }
        Ok(DecodeSummary {
            disk_bytes: self.pos,
            zero_ranges: Vec::new(),
        })
    }
}
