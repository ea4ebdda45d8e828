//! Any byte stream, fed in two pieces, through the sniffing decoder into a bounded in-memory
//! disk: errors are fine, panics and unbounded allocation are not.
#![no_main]
use agent_image::format::{AutoDecoder, Decoder, Sink, SinkError};
use libfuzzer_sys::fuzz_target;

struct Bounded(u64);
impl Sink for Bounded {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        let end = offset + data.len() as u64;
        if end > self.0 {
            return Err(SinkError::TooLarge { end, device_size: self.0 });
        }
        Ok(())
    }
    fn announce_size(&mut self, n: u64) -> Result<(), SinkError> {
        if n > self.0 {
            return Err(SinkError::TooLarge { end: n, device_size: self.0 });
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map(|&b| b as usize % (data.len() + 1)).unwrap_or(0);
    let mut sink = Bounded(64 << 20);
    let mut dec = AutoDecoder::new();
    if dec.feed(&data[..split], &mut sink).is_ok() && dec.feed(&data[split..], &mut sink).is_ok() {
        let _ = dec.finish(&mut sink);
    }
});
