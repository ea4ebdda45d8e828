//! Replays the committed cargo-fuzz corpus of agent/fuzz's `smbios` target (SMBIOS entry
//! points and tables, SCSI VPD pages, the kernel command line) through the parsers, as the
//! fuzz target does: errors are fine, panics are not.

use std::path::Path;

#[test]
fn smbios_vpd_cmdline_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/smbios");
    for data in tests::fuzz_corpus(&dir) {
        let _ = agent_inspect::smbios::parse_entry_point(&data);
        let _ = agent_inspect::smbios::parse_table(&data, Some((3, 2)));
        let _ = agent_inspect::smbios::parse_table(&data, None);
        let _ = agent_inspect::vpd::parse_vpd83(&data);
        let _ = agent_inspect::vpd::parse_vpd80(&data);
        let _ = agent_inspect::cmdline::parse(&String::from_utf8_lossy(&data));
    }
}
