//! Replays the committed cargo-fuzz corpora (agent/fuzz/corpus/, grown by hack/fuzz.sh)
//! through the parsers with the fuzz targets' own checks, so every input the fuzzer ever
//! found interesting is re-checked by a plain `cargo test`.

use std::path::Path;

use agent_ramdisk::cmdline::{parse, Mac};
use agent_ramdisk::dhcp::{check, Reply};
use dhcproto::v4::MessageType;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    tests::fuzz_corpus(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target),
    )
}

#[test]
fn kernel_command_line_corpus() {
    for data in corpus("cmdline") {
        let (params, problems) = parse(&String::from_utf8_lossy(&data));
        if let Some(c) = &params.controller {
            assert!(c.starts_with("http://") || c.starts_with("https://"), "{c}");
        }
        if let Some(v) = params.vlan {
            assert!((1..=4094).contains(&v));
        }
        for p in problems {
            assert!(p.to_string().len() < 400);
        }
    }
}

#[test]
fn dhcp_reply_corpus() {
    let mac = Mac([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]);
    let mut leases = 0;
    for data in corpus("dhcp_reply") {
        for want in [MessageType::Offer, MessageType::Ack] {
            if let Reply::Lease(l) = check(&data, 7, mac, want) {
                assert!(l.prefix <= 32 && !l.address.is_unspecified());
                leases += 1;
            }
        }
    }
    assert!(
        leases > 0,
        "the seeds (a real OFFER and ACK) are in the corpus"
    );
}
