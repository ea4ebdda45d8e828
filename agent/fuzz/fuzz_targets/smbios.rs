#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = agent_inspect::smbios::parse_entry_point(data);
    let _ = agent_inspect::smbios::parse_table(data, Some((3, 2)));
    let _ = agent_inspect::smbios::parse_table(data, None);
    let _ = agent_inspect::vpd::parse_vpd83(data);
    let _ = agent_inspect::vpd::parse_vpd80(data);
    let _ = agent_inspect::cmdline::parse(&String::from_utf8_lossy(data));
});
