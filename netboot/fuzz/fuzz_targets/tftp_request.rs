#![no_main]
//! Any datagram at the TFTP request port: parse, resolve against the allow-list, negotiate
//! and build the OACK. Nothing may panic; only allow-listed names ever resolve.
use bytes::Bytes;
use ferrox_netboot::tftp::{negotiate, oack, parse_request, Files};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse_request(data) else { return };
    let mut files = Files::default();
    files.insert("undionly.kpxe", Bytes::from_static(b"x"));
    files.insert("ipxe.efi", Bytes::from_static(b"y"));
    if let Ok((name, _)) = files.resolve(&req.filename) {
        assert!(name == "undionly.kpxe" || name == "ipxe.efi");
        assert_eq!(name, req.filename);
    }
    let n = negotiate(&req.options, 1468, 64);
    assert!((8..=1468).contains(&n.blksize) && (1..=64).contains(&n.windowsize) && n.timeout >= 1);
    let o = oack(&n, 850_528);
    assert!(o.len() >= 2);
});
