#![no_main]
use agent_ramdisk::cmdline::Mac;
use agent_ramdisk::dhcp::{check, Reply};
use dhcproto::v4::MessageType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mac = Mac([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]);
    for want in [MessageType::Offer, MessageType::Ack] {
        if let Reply::Lease(l) = check(data, 7, mac, want) {
            assert!(l.prefix <= 32 && !l.address.is_unspecified());
        }
    }
});
