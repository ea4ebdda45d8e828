#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = agent_image::checksum::parse_checksum_file(&text, "disk.qcow2", None);
    let _ = text.parse::<agent_image::ChecksumSpec>();
});
