//! Replays the committed cargo-fuzz corpora (netboot/fuzz/corpus) through the same code the
//! fuzz targets drive, in a plain `cargo test`: a regression found by fuzzing stays fixed.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use bytes::Bytes;
use ferrox_netboot::config::{Config, Mode, UnknownPolicy};
use ferrox_netboot::dhcp::{decide, leases::Leases, Ingress, Outcome, PXE_PORT, SERVER_PORT};
use ferrox_netboot::hosts::StaticHosts;
use ferrox_netboot::tftp::{negotiate, oack, parse_request, Files};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    assert!(
        v.len() >= 5,
        "{} holds only {} inputs",
        dir.display(),
        v.len()
    );
    v
}

#[test]
fn dhcp_corpus_replays() {
    let hosts = StaticHosts::parse(
        "hosts:\n  - {mac: '52:54:00:00:00:01', ip: 10.0.0.50, hostname: n1}\n  - {mac: '52:54:00:00:00:02', arch_binary: {uefi_x64: snponly.efi}}\n  - {mac: '52:54:00:00:00:03', netboot: false}\n",
    )
    .unwrap();
    let mut leases = Leases::new([Ipv4Addr::new(10, 0, 0, 50)]);
    let mut answered = 0;
    let inputs = corpus("dhcp_decide");
    for (name, data) in &inputs {
        let Some((&sel, packet)) = data.split_first() else {
            continue;
        };
        let cfg = Config {
            mode: if sel & 1 == 0 {
                Mode::Full
            } else {
                Mode::Proxy
            },
            unknown: if sel & 2 == 0 {
                UnknownPolicy::Ignore
            } else {
                UnknownPolicy::Discovery
            },
            pools: vec![
                "10.0.0.0/24,10.0.0.100-10.0.0.103,router=10.0.0.1"
                    .parse()
                    .unwrap(),
                "10.9.0.0/16,10.9.0.10-10.9.255.250".parse().unwrap(),
            ],
            ..Config::default()
        };
        let ingress = Ingress {
            ifindex: 2,
            server_ip: Ipv4Addr::new(10, 0, 0, 1),
            local_port: if sel & 4 == 0 { SERVER_PORT } else { PXE_PORT },
            src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 77), 68),
        };
        let d = decide(
            packet,
            &ingress,
            &cfg,
            &hosts,
            &mut leases,
            u64::from(sel >> 3) * 30,
        );
        if let Some(r) = d.reply {
            assert!(r.encode().len() >= 240, "{name}");
            answered += 1;
        } else {
            assert_ne!(d.outcome, Outcome::Offer, "{name}");
        }
    }
    assert!(answered > 0, "the seeds include packets that are answered");
    eprintln!("{} DHCP inputs replayed, {answered} answered", inputs.len());
}

#[test]
fn tftp_corpus_replays() {
    let mut files = Files::default();
    files.insert("undionly.kpxe", Bytes::from_static(b"x"));
    files.insert("ipxe.efi", Bytes::from_static(b"y"));
    let mut parsed = 0;
    for (name, data) in corpus("tftp_request") {
        let Ok(req) = parse_request(&data) else {
            continue;
        };
        parsed += 1;
        if let Ok((n, _)) = files.resolve(&req.filename) {
            assert_eq!(n, req.filename, "{name}");
        }
        let n = negotiate(&req.options, 1468, 64);
        assert!(
            (8..=1468).contains(&n.blksize) && (1..=64).contains(&n.windowsize),
            "{name}"
        );
        assert!(oack(&n, 850_528).len() >= 2);
    }
    assert!(parsed > 0);
}
