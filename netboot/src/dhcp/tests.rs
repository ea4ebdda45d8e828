//! Table-driven tests of [`decide`]: one row per situation a boot network produces.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{Architecture, DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Encodable, Encoder};

use super::*;
use crate::hosts::StaticHosts;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn hosts() -> StaticHosts {
    StaticHosts::parse(
        r#"
hosts:
  - mac: "52:54:00:00:00:01"
    ip: 10.0.0.50
    hostname: node-1
  - mac: "52:54:00:00:00:02"
    arch_binary: { uefi_x64: snponly.efi }
  - mac: "52:54:00:00:00:03"
    netboot: false
  - mac: "52:54:00:00:00:04"
    ip: 10.9.0.77
"#,
    )
    .unwrap()
}

fn cfg(mode: Mode) -> Config {
    Config {
        mode,
        pools: vec![
            "10.0.0.0/24,10.0.0.100-10.0.0.101,router=10.0.0.1"
                .parse()
                .unwrap(),
            "10.9.0.0/24,10.9.0.100-10.9.0.200,router=10.9.0.1"
                .parse()
                .unwrap(),
        ],
        dns: vec![ip("10.0.0.53")],
        lease_time: 600,
        ..Config::default()
    }
}

#[derive(Clone, Default)]
struct Req {
    mtype: Option<MessageType>,
    mac: u8,
    giaddr: Option<Ipv4Addr>,
    ciaddr: Option<Ipv4Addr>,
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
    class: Option<&'static str>,
    arch: Option<u16>,
    ipxe: bool,
}

impl Req {
    fn new(mtype: MessageType, mac: u8) -> Req {
        Req {
            mtype: Some(mtype),
            mac,
            ..Req::default()
        }
    }
    fn pxe(mut self, arch: u16) -> Req {
        self.class = Some("PXEClient:Arch:00000:UNDI:002001");
        self.arch = Some(arch);
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut m = Message::default();
        m.set_xid(0x1234_5678)
            .set_chaddr(&[0x52, 0x54, 0, 0, 0, self.mac]);
        if let Some(g) = self.giaddr {
            m.set_giaddr(g);
        }
        if let Some(c) = self.ciaddr {
            m.set_ciaddr(c);
        }
        let o = m.opts_mut();
        if let Some(t) = self.mtype {
            o.insert(DhcpOption::MessageType(t));
        }
        if let Some(r) = self.requested {
            o.insert(DhcpOption::RequestedIpAddress(r));
        }
        if let Some(s) = self.server_id {
            o.insert(DhcpOption::ServerIdentifier(s));
        }
        if let Some(c) = self.class {
            o.insert(DhcpOption::ClassIdentifier(c.as_bytes().to_vec()));
        }
        if let Some(a) = self.arch {
            o.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(a)));
        }
        if self.ipxe {
            o.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        }
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    }
}

fn ingress(port: u16) -> Ingress {
    Ingress {
        ifindex: 3,
        server_ip: SERVER,
        local_port: port,
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT),
    }
}

/// What a row expects of the reply.
#[derive(Default)]
struct Want {
    yiaddr: Option<&'static str>,
    dest: Option<&'static str>,
    file: Option<&'static str>,
    class: Option<&'static str>,
    no_boot: bool,
}

fn check(name: &str, d: &Decision, want: &Want) {
    let Some(r) = &d.reply else {
        assert!(
            want.yiaddr.is_none() && want.dest.is_none() && want.file.is_none(),
            "{name}: expected a reply"
        );
        return;
    };
    let m = &r.msg;
    assert_eq!(m.xid(), 0x1234_5678, "{name}");
    assert_eq!(
        m.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER)),
        "{name}"
    );
    if let Some(y) = want.yiaddr {
        assert_eq!(m.yiaddr(), ip(y), "{name}: yiaddr");
    }
    if let Some(dst) = want.dest {
        assert_eq!(
            r.dest,
            dst.parse::<SocketAddrV4>().unwrap(),
            "{name}: destination"
        );
    }
    let file = match m.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(f)) => Some(String::from_utf8(f.clone()).unwrap()),
        _ => None,
    };
    if let Some(f) = want.file {
        assert_eq!(file.as_deref(), Some(f), "{name}: boot file");
        assert_eq!(m.siaddr(), SERVER, "{name}: next-server");
    }
    if want.no_boot {
        assert_eq!(file, None, "{name}: no boot file");
    }
    if let Some(c) = want.class {
        assert_eq!(
            m.opts().get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(c.as_bytes().to_vec())),
            "{name}: option 60"
        );
    }
    // Whatever we build must encode and decode again.
    let bytes = r.encode();
    assert!(bytes.len() >= 240, "{name}: reply encodes");
}

struct Row {
    name: &'static str,
    mode: Mode,
    unknown: UnknownPolicy,
    port: u16,
    req: Req,
    outcome: Outcome,
    want: Want,
}

fn row(name: &'static str, mode: Mode, req: Req, outcome: Outcome, want: Want) -> Row {
    Row {
        name,
        mode,
        unknown: UnknownPolicy::Ignore,
        port: SERVER_PORT,
        req,
        outcome,
        want,
    }
}

#[test]
fn decisions() {
    use MessageType::*;
    use Mode::*;
    let relayed = |mut r: Req| {
        r.giaddr = Some(RELAY);
        r
    };
    let mut ipxe = Req::new(Discover, 1);
    ipxe.ipxe = true;
    let mut http = Req::new(Discover, 2);
    http.class = Some("HTTPClient:Arch:00016:UNDI:003001");
    http.arch = Some(16);
    let rows = vec![
        row(
            "reserved BIOS PXE gets its address and undionly.kpxe",
            Full,
            Req::new(Discover, 1).pxe(0),
            Outcome::Offer,
            Want {
                yiaddr: Some("10.0.0.50"),
                dest: Some("255.255.255.255:68"),
                file: Some("undionly.kpxe"),
                ..Want::default()
            },
        ),
        row(
            "UEFI x64 (type 7) gets ipxe.efi",
            Full,
            Req::new(Discover, 1).pxe(7),
            Outcome::Offer,
            Want {
                file: Some("ipxe.efi"),
                ..Want::default()
            },
        ),
        row(
            "UEFI x64 (type 9) with a per-host override gets snponly.efi",
            Full,
            Req::new(Discover, 2).pxe(9),
            Outcome::Offer,
            Want {
                yiaddr: Some("10.0.0.100"),
                file: Some("snponly.efi"),
                ..Want::default()
            },
        ),
        row(
            "arm64 UEFI gets the arm64 binary",
            Full,
            Req::new(Discover, 1).pxe(11),
            Outcome::Offer,
            Want {
                file: Some("ipxe-arm64.efi"),
                ..Want::default()
            },
        ),
        row(
            "iPXE gets its script URL",
            Full,
            ipxe.clone(),
            Outcome::Offer,
            Want {
                file: Some("http://10.0.0.1:8080/ipxe/52-54-00-00-00-01.ipxe"),
                ..Want::default()
            },
        ),
        row(
            "UEFI HTTP boot gets a binary URL and HTTPClient",
            Full,
            http.clone(),
            Outcome::Offer,
            Want {
                file: Some("http://10.0.0.1:8080/ipxe/snponly.efi"),
                class: Some("HTTPClient"),
                ..Want::default()
            },
        ),
        row(
            "an OS DHCP client gets an address only",
            Full,
            Req::new(Discover, 2),
            Outcome::Offer,
            Want {
                yiaddr: Some("10.0.0.100"),
                no_boot: true,
                ..Want::default()
            },
        ),
        row(
            "netboot: false gets an address only",
            Full,
            Req::new(Discover, 3).pxe(0),
            Outcome::Offer,
            Want {
                no_boot: true,
                ..Want::default()
            },
        ),
        row(
            "unsupported arch (IA32 UEFI) gets an address only",
            Full,
            Req::new(Discover, 1).pxe(6),
            Outcome::Offer,
            Want {
                no_boot: true,
                ..Want::default()
            },
        ),
        row(
            "unknown MAC is ignored by default",
            Full,
            Req::new(Discover, 9).pxe(0),
            Outcome::IgnoredUnknownMac,
            Want::default(),
        ),
        Row {
            unknown: UnknownPolicy::Discovery,
            ..row(
                "unknown MAC boots for discovery when asked",
                Full,
                Req::new(Discover, 9).pxe(0),
                Outcome::Offer,
                Want {
                    yiaddr: Some("10.0.0.100"),
                    file: Some("undionly.kpxe"),
                    ..Want::default()
                },
            )
        },
        row(
            "REQUEST for the reservation is ACKed",
            Full,
            Req {
                requested: Some(ip("10.0.0.50")),
                server_id: Some(SERVER),
                ..Req::new(Request, 1)
            },
            Outcome::Ack,
            Want {
                yiaddr: Some("10.0.0.50"),
                dest: Some("255.255.255.255:68"),
                ..Want::default()
            },
        ),
        row(
            "REQUEST for another address is NAKed",
            Full,
            Req {
                requested: Some(ip("10.0.0.51")),
                ..Req::new(Request, 1)
            },
            Outcome::Nak,
            Want {
                dest: Some("255.255.255.255:68"),
                ..Want::default()
            },
        ),
        row(
            "REQUEST naming another server is ignored",
            Full,
            Req {
                requested: Some(ip("10.0.0.50")),
                server_id: Some(ip("10.0.0.2")),
                ..Req::new(Request, 1)
            },
            Outcome::IgnoredOtherServer,
            Want::default(),
        ),
        row(
            "RENEW (ciaddr) is ACKed by unicast",
            Full,
            Req {
                ciaddr: Some(ip("10.0.0.50")),
                ..Req::new(Request, 1)
            },
            Outcome::Ack,
            Want {
                yiaddr: Some("10.0.0.50"),
                dest: Some("10.0.0.50:68"),
                ..Want::default()
            },
        ),
        row(
            "INIT-REBOOT for a free pool address is ACKed",
            Full,
            Req {
                requested: Some(ip("10.0.0.101")),
                ..Req::new(Request, 2)
            },
            Outcome::Ack,
            Want {
                yiaddr: Some("10.0.0.101"),
                ..Want::default()
            },
        ),
        row(
            "REQUEST outside the pool is NAKed",
            Full,
            Req {
                requested: Some(ip("192.168.1.5")),
                ..Req::new(Request, 2)
            },
            Outcome::Nak,
            Want::default(),
        ),
        row(
            "REQUEST without an address is NAKed",
            Full,
            Req::new(Request, 2),
            Outcome::Nak,
            Want::default(),
        ),
        row(
            "relayed DISCOVER: pool by giaddr, reply to the relay",
            Full,
            relayed(Req::new(Discover, 2).pxe(0)),
            Outcome::Offer,
            Want {
                yiaddr: Some("10.9.0.100"),
                dest: Some("10.9.0.1:67"),
                file: Some("undionly.kpxe"),
                ..Want::default()
            },
        ),
        row(
            "relayed reservation in the relay's subnet",
            Full,
            relayed(Req::new(Discover, 4)),
            Outcome::Offer,
            Want {
                yiaddr: Some("10.9.0.77"),
                dest: Some("10.9.0.1:67"),
                ..Want::default()
            },
        ),
        row(
            "reservation outside the request's subnet is not offered",
            Full,
            Req::new(Discover, 4),
            Outcome::IgnoredNoPool,
            Want::default(),
        ),
        row(
            "relay from a subnet without a pool",
            Full,
            Req {
                giaddr: Some(ip("172.16.0.1")),
                ..Req::new(Discover, 2)
            },
            Outcome::IgnoredNoPool,
            Want::default(),
        ),
        row(
            "RELEASE",
            Full,
            Req {
                ciaddr: Some(ip("10.0.0.100")),
                ..Req::new(Release, 2)
            },
            Outcome::Release,
            Want::default(),
        ),
        row(
            "DECLINE",
            Full,
            Req {
                requested: Some(ip("10.0.0.100")),
                ..Req::new(Decline, 2)
            },
            Outcome::Decline,
            Want::default(),
        ),
        row(
            "INFORM is ACKed to ciaddr",
            Full,
            Req {
                ciaddr: Some(ip("10.0.0.7")),
                ..Req::new(Inform, 2)
            },
            Outcome::Ack,
            Want {
                dest: Some("10.0.0.7:68"),
                yiaddr: Some("0.0.0.0"),
                ..Want::default()
            },
        ),
        row(
            "proxy: PXE DISCOVER gets boot info, no address",
            Proxy,
            Req::new(Discover, 1).pxe(0),
            Outcome::ProxyOffer,
            Want {
                yiaddr: Some("0.0.0.0"),
                dest: Some("255.255.255.255:68"),
                file: Some("undionly.kpxe"),
                class: Some("PXEClient"),
                ..Want::default()
            },
        ),
        row(
            "proxy: iPXE gets its script",
            Proxy,
            ipxe.clone(),
            Outcome::ProxyOffer,
            Want {
                yiaddr: Some("0.0.0.0"),
                file: Some("http://10.0.0.1:8080/ipxe/52-54-00-00-00-01.ipxe"),
                class: Some("PXEClient"),
                ..Want::default()
            },
        ),
        row(
            "proxy: an OS client is left to the real DHCP server",
            Proxy,
            Req::new(Discover, 1),
            Outcome::IgnoredNotPxe,
            Want::default(),
        ),
        row(
            "proxy: REQUEST to the real server is not ours",
            Proxy,
            Req {
                requested: Some(ip("10.0.0.50")),
                server_id: Some(ip("10.0.0.2")),
                ..Req::new(Request, 1).pxe(0)
            },
            Outcome::IgnoredType,
            Want::default(),
        ),
        Row {
            port: PXE_PORT,
            ..row(
                "proxy: REQUEST on 4011 is ACKed back to its source",
                Proxy,
                Req {
                    ciaddr: Some(ip("10.0.0.60")),
                    ..Req::new(Request, 1).pxe(7)
                },
                Outcome::ProxyAck,
                Want {
                    dest: Some("10.0.0.60:4011"),
                    file: Some("ipxe.efi"),
                    class: Some("PXEClient"),
                    ..Want::default()
                },
            )
        },
        row(
            "proxy: relayed PXE DISCOVER goes back to the relay",
            Proxy,
            relayed(Req::new(Discover, 1).pxe(0)),
            Outcome::ProxyOffer,
            Want {
                dest: Some("10.9.0.1:67"),
                file: Some("undionly.kpxe"),
                ..Want::default()
            },
        ),
        row(
            "proxy: netboot: false is not answered",
            Proxy,
            Req::new(Discover, 3).pxe(0),
            Outcome::IgnoredNotPxe,
            Want::default(),
        ),
        row(
            "no message type (BOOTP)",
            Full,
            Req {
                mtype: None,
                mac: 1,
                ..Req::default()
            },
            Outcome::Malformed,
            Want::default(),
        ),
        row(
            "an OFFER sent to the server is ignored",
            Full,
            Req::new(Offer, 1),
            Outcome::IgnoredType,
            Want::default(),
        ),
    ];
    for r in rows {
        let mut c = cfg(r.mode);
        c.unknown = r.unknown;
        let h = hosts();
        let mut leases = Leases::new(h.reserved());
        let mut ing = ingress(r.port);
        if r.port == PXE_PORT {
            ing.src = SocketAddrV4::new(ip("10.0.0.60"), 4011);
        }
        let d = decide(&r.req.bytes(), &ing, &c, &h, &mut leases, 1000);
        assert_eq!(d.outcome, r.outcome, "{}: {}", r.name, d.detail);
        check(r.name, &d, &r.want);
    }
}

#[test]
fn dora_then_pool_exhaustion_and_release() {
    let c = cfg(Mode::Full);
    let h = StaticHosts::default();
    let mut c2 = c.clone();
    c2.unknown = UnknownPolicy::Discovery;
    let mut leases = Leases::new([]);
    let ing = ingress(SERVER_PORT);
    let mut got = vec![];
    for mac in 10..12 {
        let d = decide(
            &Req::new(MessageType::Discover, mac).bytes(),
            &ing,
            &c2,
            &h,
            &mut leases,
            0,
        );
        assert_eq!(d.outcome, Outcome::Offer);
        let offered = d.reply.unwrap().msg.yiaddr();
        let req = Req {
            requested: Some(offered),
            server_id: Some(SERVER),
            ..Req::new(MessageType::Request, mac)
        };
        let d = decide(&req.bytes(), &ing, &c2, &h, &mut leases, 1);
        assert_eq!(d.outcome, Outcome::Ack);
        got.push(offered);
    }
    assert_eq!(got, [ip("10.0.0.100"), ip("10.0.0.101")]);
    let d = decide(
        &Req::new(MessageType::Discover, 12).bytes(),
        &ing,
        &c2,
        &h,
        &mut leases,
        2,
    );
    assert_eq!(d.outcome, Outcome::PoolExhausted);
    // Another client cannot take a bound address.
    let steal = Req {
        requested: Some(got[0]),
        ..Req::new(MessageType::Request, 12)
    };
    assert_eq!(
        decide(&steal.bytes(), &ing, &c2, &h, &mut leases, 3).outcome,
        Outcome::Nak
    );
    let rel = Req {
        ciaddr: Some(got[0]),
        ..Req::new(MessageType::Release, 10)
    };
    assert_eq!(
        decide(&rel.bytes(), &ing, &c2, &h, &mut leases, 4).outcome,
        Outcome::Release
    );
    let d = decide(
        &Req::new(MessageType::Discover, 12).bytes(),
        &ing,
        &c2,
        &h,
        &mut leases,
        5,
    );
    assert_eq!(d.reply.unwrap().msg.yiaddr(), got[0]);
    // The unknown-MAC policy applies to the ignore default too.
    assert_eq!(
        decide(
            &Req::new(MessageType::Discover, 13).bytes(),
            &ing,
            &c,
            &h,
            &mut leases,
            6
        )
        .outcome,
        Outcome::IgnoredUnknownMac
    );
}

#[test]
fn relay_agent_information_is_echoed_to_the_relay_only() {
    use dhcproto::v4::relay::{RelayAgentInformation, RelayInfo};
    let mut info = RelayAgentInformation::default();
    info.insert(RelayInfo::AgentCircuitId(b"rack7-port12".to_vec()));
    let opt82 = DhcpOption::RelayAgentInformation(info);
    let h = hosts();
    for (giaddr, echoed) in [(Some(ip("10.9.0.1")), true), (None, false)] {
        let mut r = Req::new(MessageType::Discover, 2).pxe(0);
        r.giaddr = giaddr;
        let mut m = dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(&r.bytes())).unwrap();
        m.opts_mut().insert(opt82.clone());
        let mut bytes = Vec::new();
        m.encode(&mut Encoder::new(&mut bytes)).unwrap();
        let d = decide(
            &bytes,
            &ingress(SERVER_PORT),
            &cfg(Mode::Full),
            &h,
            &mut Leases::new(h.reserved()),
            0,
        );
        let reply = d.reply.expect("an offer");
        let got = reply.msg.opts().get(OptionCode::RelayAgentInformation);
        assert_eq!(got, echoed.then_some(&opt82), "giaddr {giaddr:?}");
    }
}

#[test]
fn ipxe_full_mode_reply_says_no_proxydhcp_wait() {
    let mut r = Req::new(MessageType::Discover, 1);
    r.ipxe = true;
    let h = hosts();
    let d = decide(
        &r.bytes(),
        &ingress(SERVER_PORT),
        &cfg(Mode::Full),
        &h,
        &mut Leases::new(h.reserved()),
        0,
    );
    let opt = d
        .reply
        .unwrap()
        .msg
        .opts()
        .get(OptionCode::from(175u8))
        .cloned();
    assert_eq!(
        opt,
        Some(DhcpOption::Unknown(dhcproto::v4::UnknownOption::new(
            OptionCode::from(175u8),
            vec![176, 1, 1]
        )))
    );
}

#[test]
fn malformed_packets_are_dropped() {
    let good = Req::new(MessageType::Discover, 1).pxe(0).bytes();
    let h = hosts();
    let c = cfg(Mode::Full);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated header", good[..100].to_vec()),
        ("header without cookie", good[..236].to_vec()),
        ("oversized", vec![0; MAX_PACKET + 1]),
    ];
    let mut m = good.clone();
    m[236] = 0;
    cases.push(("wrong cookie", m));
    let mut m = good.clone();
    m[0] = 2;
    cases.push(("BOOTREPLY", m));
    let mut m = good.clone();
    m[2] = 200;
    cases.push(("hlen 200 (dhcproto would panic slicing chaddr)", m));
    let mut m = good.clone();
    m[1] = 6;
    cases.push(("token ring", m));
    let mut m = good[..240].to_vec();
    m.extend_from_slice(&[53, 200, 1]);
    cases.push(("option longer than the packet", m));
    let mut m = good[..240].to_vec();
    m.extend_from_slice(&[53, 1]);
    cases.push(("option cut short", m));
    for (name, opt) in [
        (
            "BLQ base time of 2 bytes (dhcproto debug-asserts 4)",
            vec![152u8, 2, 0, 0],
        ),
        (
            "BLQ status-code of 0 bytes (dhcproto underflows len - 1)",
            vec![151, 0],
        ),
        (
            "ClientFQDN of 1 byte (dhcproto underflows len - 3)",
            vec![81, 1, 0],
        ),
        ("RapidCommit with data", vec![80, 1, 0]),
        ("ClientNetworkInterface of 2 bytes", vec![94, 2, 1, 2]),
        ("message type of 2 bytes", vec![53, 2, 1, 1]),
        ("odd-length architecture list", vec![93, 3, 0, 0, 7]),
    ] {
        let mut m = good[..240].to_vec();
        m.extend_from_slice(&[53, 1, 1]);
        m.extend_from_slice(&opt);
        m.push(255);
        cases.push((name, m));
    }
    for (name, bytes) in cases {
        let d = decide(
            &bytes,
            &ingress(SERVER_PORT),
            &c,
            &h,
            &mut Leases::new([]),
            0,
        );
        assert!(d.reply.is_none(), "{name}");
        assert_eq!(d.outcome, Outcome::Malformed, "{name}: {}", d.detail);
    }
    // Oversized but well-formed options (255 bytes of a long option, unknown codes) are fine.
    let mut m = good[..good.len() - 1].to_vec(); // drop END
    for code in [224u8, 225, 226] {
        m.push(code);
        m.push(255);
        m.extend(std::iter::repeat_n(0xab, 255));
    }
    m.push(255);
    let d = decide(
        &m,
        &ingress(SERVER_PORT),
        &c,
        &h,
        &mut Leases::new(h.reserved()),
        0,
    );
    assert_eq!(d.outcome, Outcome::Offer);
}

#[test]
fn classify_table() {
    let cases: &[(Option<&str>, Option<u16>, bool, Client)] = &[
        (None, None, false, Client::Plain),
        (Some("MSFT 5.0"), None, false, Client::Plain),
        (Some("PXEClient"), None, false, Client::Pxe(Arch::Bios)),
        (
            Some("PXEClient:Arch:00007"),
            Some(7),
            false,
            Client::Pxe(Arch::UefiX64),
        ),
        (
            Some("PXEClient:Arch:00009"),
            Some(9),
            false,
            Client::Pxe(Arch::UefiX64),
        ),
        (
            Some("PXEClient:Arch:00011"),
            Some(11),
            false,
            Client::Pxe(Arch::UefiArm64),
        ),
        (
            Some("HTTPClient:Arch:00016"),
            Some(16),
            false,
            Client::Http(Arch::UefiX64),
        ),
        (
            Some("HTTPClient:Arch:00019"),
            Some(19),
            false,
            Client::Http(Arch::UefiArm64),
        ),
        (
            Some("PXEClient:Arch:00006"),
            Some(6),
            false,
            Client::UnsupportedArch(6),
        ),
        (Some("PXEClient"), Some(0), true, Client::Ipxe),
        (None, None, true, Client::Ipxe),
    ];
    for (class, arch, ipxe, want) in cases {
        let r = Req {
            class: *class,
            arch: *arch,
            ipxe: *ipxe,
            ..Req::new(MessageType::Discover, 1)
        };
        let m = Message::decode(&mut Decoder::new(&r.bytes())).unwrap();
        assert_eq!(classify(&m), *want, "{class:?} {arch:?} {ipxe}");
    }
}
