//! The agent's own DHCPv4 client (dhcproto): DISCOVER → OFFER → REQUEST → ACK on one
//! interface, with the broadcast flag set so the answers reach a socket of an interface that
//! has no address yet. Message building and reply checking are pure functions; the socket
//! shell around them is small.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use dhcproto::v4::{self, DhcpOption, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use crate::cmdline::Mac;

/// An address lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lease {
    /// Our address.
    pub address: Ipv4Addr,
    /// Prefix length from the subnet mask (24 when the server sent none).
    pub prefix: u8,
    /// The first router, if any.
    pub router: Option<Ipv4Addr>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// The server that granted it.
    pub server: Ipv4Addr,
    /// Lease time in seconds (None = infinite or not given).
    pub lease_seconds: Option<u32>,
    /// Host name the server gave, if any.
    pub hostname: Option<String>,
}

/// Why no lease was obtained.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// The socket could not be set up on the interface.
    #[error("DHCP on {ifname}: setting up the socket")]
    Socket {
        /// Interface.
        ifname: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Nobody answered.
    #[error("DHCP on {ifname}: no {waiting_for} from any server after {attempts} attempts ({seconds} s)")]
    NoAnswer {
        /// Interface.
        ifname: String,
        /// OFFER or ACK.
        waiting_for: &'static str,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        seconds: u64,
    },
    /// The server said no.
    #[error("DHCP on {ifname}: server {server} refused the address (NAK)")]
    Nak {
        /// Interface.
        ifname: String,
        /// Who refused.
        server: Ipv4Addr,
    },
}

const PARAMS: [OptionCode; 5] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::Hostname,
    OptionCode::AddressLeaseTime,
];

/// An empty BOOTREQUEST from `mac` in transaction `xid`, made by decoding its fixed header.
/// Not with dhcproto's constructors: every one of them starts from `Message::default()`, whose
/// xid is `rand::random()` — rand's thread generator, seeded by getrandom(2) without
/// GRND_NONBLOCK, which blocks until the kernel's RNG is seeded. That is about a second after
/// boot on a machine without RDRAND or virtio-rng (QEMU's default CPU): the first DISCOVER
/// waited for it, on every lab boot.
fn header(mac: Mac, xid: u32) -> v4::Message {
    let mut b = [0u8; 241];
    b[0] = 1; // BOOTREQUEST
    b[1] = 1; // Ethernet
    b[2] = 6; // hardware address length
    b[4..8].copy_from_slice(&xid.to_be_bytes());
    b[28..34].copy_from_slice(&mac.0);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]); // the magic cookie
    b[240] = 255; // end of options
    v4::Message::decode(&mut Decoder::new(&b)).expect("a well-formed BOOTP header decodes")
}

fn base(mac: Mac, xid: u32, kind: MessageType) -> v4::Message {
    let mut m = header(mac, xid);
    m.set_flags(v4::Flags::default().set_broadcast());
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(&mac.0);
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    opts.insert(DhcpOption::ParameterRequestList(PARAMS.to_vec()));
    opts.insert(DhcpOption::ClassIdentifier(b"ferrox-agent".to_vec()));
    m
}

fn encode(m: &v4::Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(320);
    // Encoding our own well-formed message into a Vec cannot fail.
    let _ = m.encode(&mut Encoder::new(&mut buf));
    buf
}

/// The DISCOVER for `mac`.
pub fn discover(mac: Mac, xid: u32) -> Vec<u8> {
    encode(&base(mac, xid, MessageType::Discover))
}

/// The REQUEST taking `offer`.
pub fn request(mac: Mac, xid: u32, offer: &Lease) -> Vec<u8> {
    let mut m = base(mac, xid, MessageType::Request);
    m.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.address));
    m.opts_mut()
        .insert(DhcpOption::ServerIdentifier(offer.server));
    encode(&m)
}

/// What a received datagram is to a client waiting for `want` in transaction `xid`.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Not for us (other xid or MAC, not a reply, not DHCP, malformed).
    Ignore,
    /// The awaited OFFER or ACK.
    Lease(Lease),
    /// A NAK from this server.
    Nak(Ipv4Addr),
}

/// Checks a datagram against the transaction; never panics on any input.
pub fn check(datagram: &[u8], xid: u32, mac: Mac, want: MessageType) -> Reply {
    let Some(clean) = sanitize(datagram) else {
        return Reply::Ignore;
    };
    let Ok(m) = v4::Message::decode(&mut Decoder::new(&clean)) else {
        return Reply::Ignore;
    };
    if m.opcode() != v4::Opcode::BootReply
        || m.xid() != xid
        || m.chaddr().get(..6) != Some(&mac.0[..])
    {
        return Reply::Ignore;
    }
    let opts = m.opts();
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => m.siaddr(),
    };
    match opts.msg_type() {
        Some(MessageType::Nak) if want == MessageType::Ack => return Reply::Nak(server),
        Some(t) if t == want => {}
        _ => return Reply::Ignore,
    }
    let address = m.yiaddr();
    if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
        return Reply::Ignore;
    }
    let prefix = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => {
            let bits = u32::from(*mask);
            // A mask must be contiguous ones; anything else is garbage.
            if bits.leading_ones() + bits.trailing_zeros() != 32 || bits == 0 {
                return Reply::Ignore;
            }
            bits.leading_ones() as u8
        }
        _ => 24,
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => Vec::new(),
    };
    let lease_seconds = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) if *t != u32::MAX => Some(*t),
        _ => None,
    };
    let hostname = match opts.get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) if h.len() <= 253 => Some(h.clone()),
        _ => None,
    };
    Reply::Lease(Lease {
        address,
        prefix,
        router,
        dns,
        server,
        lease_seconds,
        hostname,
    })
}

/// The options a client reads; everything else is dropped before decoding.
const KEEP: [u8; 7] = [1, 3, 6, 12, 51, 53, 54];

/// A copy of `datagram` holding only the fixed header, the magic cookie and the options in
/// [`KEEP`], each checked to fit; None when the header or the option framing is broken.
///
/// dhcproto 0.14 panics on some hostile input in debug builds (`chaddr()` with hlen over 16;
/// `debug_assert!`s and an unchecked `len - 1` in option decoders), so nothing it has not
/// been proven to parse safely reaches it.
fn sanitize(datagram: &[u8]) -> Option<Vec<u8>> {
    const MAGIC: [u8; 4] = [99, 130, 83, 99];
    if datagram.len() < 240 || datagram[2] > 16 || datagram[236..240] != MAGIC {
        return None;
    }
    let mut out = datagram[..240].to_vec();
    let opts = &datagram[240..];
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => i += 1,
            255 => break,
            code => {
                let len = usize::from(*opts.get(i + 1)?);
                let value = opts.get(i + 2..i + 2 + len)?;
                if KEEP.contains(&code) {
                    out.extend_from_slice(&opts[i..i + 2]);
                    out.extend_from_slice(value);
                }
                i += 2 + len;
            }
        }
    }
    out.push(255);
    Some(out)
}

/// A transaction id for this boot. It must not wait for the kernel's random number generator
/// (at boot that takes a second or more), and it only has to tell our transactions apart
/// (anyone on the segment sees it anyway): `GRND_INSECURE`, explicitly. Falls back to the MAC
/// and the clock on kernels older than 5.6.
fn random_xid(mac: Mac) -> u32 {
    let mut b = [0u8; 4];
    if agent_sys::system::random_bytes_nonblocking(&mut b).is_ok() {
        return u32::from_ne_bytes(b);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let m = mac.0;
    u32::from_be_bytes([m[2], m[3], m[4], m[5]]) ^ nanos.rotate_left(16)
}

/// Gets a lease on `ifname` (already up) for `mac`: up to `attempts` DISCOVERs with waits
/// doubling from 250 ms (capped at 8 s: 0.25, 0.5, 1, 2, 4, 8 s), then the REQUEST, retried the
/// same way. The first waits are short so a lost datagram costs little at boot; a slow server
/// only sees the same transaction (same xid) again.
pub fn acquire(ifname: &str, mac: Mac, attempts: u32) -> Result<Lease, DhcpError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock_err = |source| DhcpError::Socket {
        ifname: ifname.to_string(),
        source,
    };
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(sock_err)?;
    sock.set_reuse_address(true).map_err(sock_err)?;
    sock.set_broadcast(true).map_err(sock_err)?;
    sock.bind_device(Some(ifname.as_bytes()))
        .map_err(sock_err)?;
    sock.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())
        .map_err(sock_err)?;
    let sock: std::net::UdpSocket = sock.into();
    let server = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let started = Instant::now();
    let xid = random_xid(mac);

    let exchange = |msg: &[u8], want: MessageType| -> Result<Lease, DhcpError> {
        let mut buf = vec![0u8; 1500];
        for attempt in 0..attempts {
            let wait = Duration::from_millis(250 << attempt.min(5));
            let _ = sock.send_to(msg, server);
            let deadline = Instant::now() + wait;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                let _ = sock.set_read_timeout(Some(left.max(Duration::from_millis(1))));
                let Ok((n, _)) = sock.recv_from(&mut buf) else {
                    break;
                };
                match check(&buf[..n], xid, mac, want) {
                    Reply::Ignore => continue,
                    Reply::Lease(l) => return Ok(l),
                    Reply::Nak(server) => {
                        return Err(DhcpError::Nak {
                            ifname: ifname.to_string(),
                            server,
                        })
                    }
                }
            }
        }
        Err(DhcpError::NoAnswer {
            ifname: ifname.to_string(),
            waiting_for: if want == MessageType::Offer {
                "OFFER"
            } else {
                "ACK"
            },
            attempts,
            seconds: started.elapsed().as_secs(),
        })
    };
    let offer = exchange(&discover(mac, xid), MessageType::Offer)?;
    exchange(&request(mac, xid, &offer), MessageType::Ack)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]);

    fn reply(xid: u32, mac: &[u8], kind: MessageType, f: impl FnOnce(&mut v4::Message)) -> Vec<u8> {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = v4::Message::new_with_id(xid, z, Ipv4Addr::new(10, 9, 0, 50), z, z, mac);
        m.set_opcode(v4::Opcode::BootReply);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 9, 0, 1)));
        m.opts_mut()
            .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        m.opts_mut()
            .insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 9, 0, 254)]));
        m.opts_mut().insert(DhcpOption::AddressLeaseTime(600));
        f(&mut m);
        encode(&m)
    }

    #[test]
    fn the_header_is_what_dhcprotos_constructor_makes() {
        let z = Ipv4Addr::UNSPECIFIED;
        let want = v4::Message::new_with_id(0x1234_5678, z, z, z, z, &MAC.0);
        assert_eq!(encode(&header(MAC, 0x1234_5678)), encode(&want));
    }

    #[test]
    fn discover_and_request_carry_what_servers_need() {
        let d = v4::Message::decode(&mut Decoder::new(&discover(MAC, 7))).unwrap();
        assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(d.xid(), 7);
        assert_eq!(d.chaddr(), &MAC.0);
        assert!(d.flags().broadcast());
        let Reply::Lease(offer) = check(
            &reply(7, &MAC.0, MessageType::Offer, |_| {}),
            7,
            MAC,
            MessageType::Offer,
        ) else {
            panic!("offer not taken");
        };
        let r = v4::Message::decode(&mut Decoder::new(&request(MAC, 7, &offer))).unwrap();
        assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            r.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 9, 0, 50)))
        );
        assert_eq!(
            r.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 9, 0, 1)))
        );
    }

    #[test]
    fn offer_becomes_a_lease() {
        let got = check(
            &reply(7, &MAC.0, MessageType::Offer, |_| {}),
            7,
            MAC,
            MessageType::Offer,
        );
        assert_eq!(
            got,
            Reply::Lease(Lease {
                address: Ipv4Addr::new(10, 9, 0, 50),
                prefix: 24,
                router: Some(Ipv4Addr::new(10, 9, 0, 254)),
                dns: vec![],
                server: Ipv4Addr::new(10, 9, 0, 1),
                lease_seconds: Some(600),
                hostname: None,
            })
        );
    }

    #[test]
    fn what_is_not_ours_is_ignored() {
        let other_mac = [0x52, 0x54, 0, 1, 2, 3];
        let cases: Vec<(&str, Vec<u8>, MessageType)> = vec![
            (
                "other xid",
                reply(8, &MAC.0, MessageType::Offer, |_| {}),
                MessageType::Offer,
            ),
            (
                "other mac",
                reply(7, &other_mac, MessageType::Offer, |_| {}),
                MessageType::Offer,
            ),
            (
                "ack while waiting for offer",
                reply(7, &MAC.0, MessageType::Ack, |_| {}),
                MessageType::Offer,
            ),
            (
                "nak while waiting for offer",
                reply(7, &MAC.0, MessageType::Nak, |_| {}),
                MessageType::Offer,
            ),
            (
                "a request (our own broadcast)",
                discover(MAC, 7),
                MessageType::Offer,
            ),
            (
                "zero address",
                reply(7, &MAC.0, MessageType::Offer, |m| {
                    m.set_yiaddr(Ipv4Addr::UNSPECIFIED);
                }),
                MessageType::Offer,
            ),
            (
                "non-contiguous mask",
                reply(7, &MAC.0, MessageType::Offer, |m| {
                    m.opts_mut()
                        .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)));
                }),
                MessageType::Offer,
            ),
            ("empty", vec![], MessageType::Offer),
            (
                "truncated",
                reply(7, &MAC.0, MessageType::Offer, |_| {})[..100].to_vec(),
                MessageType::Offer,
            ),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(check(&bytes, 7, MAC, want), Reply::Ignore, "{name}");
        }
        assert_eq!(
            check(
                &reply(7, &MAC.0, MessageType::Nak, |_| {}),
                7,
                MAC,
                MessageType::Ack
            ),
            Reply::Nak(Ipv4Addr::new(10, 9, 0, 1))
        );
    }

    #[test]
    fn garbage_never_panics() {
        let good = reply(7, &MAC.0, MessageType::Offer, |_| {});
        let mut x: u32 = 12345;
        for _ in 0..20_000 {
            let mut b = good.clone();
            for _ in 0..4 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (x as usize >> 8) % b.len();
                b[i] = (x >> 16) as u8;
            }
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            b.truncate(((x >> 8) as usize % b.len()) + 1);
            let _ = check(&b, 7, MAC, MessageType::Offer);
        }
    }
}
