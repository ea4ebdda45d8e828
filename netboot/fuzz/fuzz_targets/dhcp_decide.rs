#![no_main]
//! Any datagram through the whole DHCP decision, in every mode and on both ports, with a
//! lease table that carries state across the run: nothing may panic, and every reply must
//! encode.
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{LazyLock, Mutex};

use ferrox_netboot::config::{Config, Mode, UnknownPolicy};
use ferrox_netboot::dhcp::{decide, leases::Leases, Ingress, PXE_PORT, SERVER_PORT};
use ferrox_netboot::hosts::StaticHosts;
use libfuzzer_sys::fuzz_target;

static HOSTS: LazyLock<StaticHosts> = LazyLock::new(|| {
    StaticHosts::parse(
        "hosts:\n  - {mac: '52:54:00:00:00:01', ip: 10.0.0.50, hostname: n1}\n  - {mac: '52:54:00:00:00:02', arch_binary: {uefi_x64: snponly.efi}}\n  - {mac: '52:54:00:00:00:03', netboot: false}\n",
    )
    .unwrap()
});
static LEASES: LazyLock<Mutex<Leases>> =
    LazyLock::new(|| Mutex::new(Leases::new([Ipv4Addr::new(10, 0, 0, 50)])));

fn cfg(mode: Mode, unknown: UnknownPolicy) -> Config {
    Config {
        mode,
        unknown,
        pools: vec![
            "10.0.0.0/24,10.0.0.100-10.0.0.103,router=10.0.0.1"
                .parse()
                .unwrap(),
            "10.9.0.0/16,10.9.0.10-10.9.255.250".parse().unwrap(),
        ],
        ..Config::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, packet)) = data.split_first() else {
        return;
    };
    let mode = if sel & 1 == 0 {
        Mode::Full
    } else {
        Mode::Proxy
    };
    let unknown = if sel & 2 == 0 {
        UnknownPolicy::Ignore
    } else {
        UnknownPolicy::Discovery
    };
    let port = if sel & 4 == 0 { SERVER_PORT } else { PXE_PORT };
    let ingress = Ingress {
        ifindex: 2,
        server_ip: Ipv4Addr::new(10, 0, 0, 1),
        local_port: port,
        src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 77), 68),
    };
    let c = cfg(mode, unknown);
    let mut leases = LEASES.lock().unwrap();
    let d = decide(
        packet,
        &ingress,
        &c,
        &*HOSTS,
        &mut leases,
        u64::from(sel >> 3) * 30,
    );
    if let Some(r) = d.reply {
        assert!(r.encode().len() >= 240, "a reply always encodes");
    }
});
