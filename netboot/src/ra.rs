//! IPv6 router advertisements that tell iPXE there is nothing to configure.
//!
//! iPXE configures IPv4 (DHCP) and IPv6 (router discovery) in parallel and waits for both
//! before it runs the boot script. On an IPv4-only provisioning network no router ever
//! answers its solicitations, and every boot waits ~15 s for that to time out (measured in
//! tests/qemu_pxe.rs). Answering each Router Solicitation with an advertisement that announces
//! no router (lifetime 0), no prefixes and neither managed nor other configuration (M=O=0)
//! ends iPXE's IPv6 configuration at once, and changes nothing for any host: a zero-lifetime
//! router is never a default route, and without prefixes nobody autoconfigures an address.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{self, MsgFlags, SockaddrIn6};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Netboot;

const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// The advertisement: type 134, code 0, checksum (the kernel fills it in), hop limit 0
/// (unspecified), flags 0 (M=O=0), router lifetime 0, reachable time 0, retrans timer 0.
pub const ADVERTISEMENT: [u8; 16] = [
    ROUTER_ADVERTISEMENT,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
];

/// Opens the ICMPv6 socket and joins all-routers on every interface but loopback (or only
/// on `device`). Returns the socket and the interfaces joined.
pub fn bind(device: Option<&str>) -> io::Result<(Socket, Vec<String>)> {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    // RFC 4861: NDP messages are sent and accepted only with hop limit 255.
    s.set_multicast_hops_v6(255)?;
    s.set_unicast_hops_v6(255)?;
    s.set_nonblocking(true)?;
    if let Some(dev) = device {
        s.bind_device(Some(dev.as_bytes()))?;
    }
    let mut joined = Vec::new();
    for ifc in nix::net::if_::if_nameindex()
        .map_err(io::Error::from)?
        .iter()
    {
        let name = ifc.name().to_string_lossy().into_owned();
        if name == "lo" || device.is_some_and(|d| d != name) {
            continue;
        }
        if s.join_multicast_v6(&ALL_ROUTERS, ifc.index()).is_ok() {
            joined.push(name);
        }
    }
    Ok((s, joined))
}

/// Answers Router Solicitations on `sock` until `token` fires.
pub async fn serve(
    ctx: std::sync::Arc<Netboot>,
    sock: Socket,
    token: CancellationToken,
) -> io::Result<()> {
    // tokio's readiness machinery works on any datagram fd; the UdpSocket type is only the
    // safe way in (AsyncFd::register is unsafe). Every read and write below is nix's.
    let sock = UdpSocket::from_std(std::net::UdpSocket::from(sock))?;
    let mut buf = [0u8; 1500];
    loop {
        let r = tokio::select! {
            _ = token.cancelled() => return Ok(()),
            r = sock.async_io(Interest::READABLE, || {
                socket::recvfrom::<SockaddrIn6>(sock.as_raw_fd(), &mut buf).map_err(io::Error::from)
            }) => r,
        };
        let (len, src) = match r {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "ra: receive failed");
                continue;
            }
        };
        if len < 8 || buf[0] != ROUTER_SOLICITATION || buf[1] != 0 {
            continue;
        }
        // A link-local source tells the interface by its scope; a solicitation from an
        // unconfigured host (source ::) is answered to all nodes on that interface.
        let Some(src) = src else { continue };
        let scope = src.scope_id();
        if scope == 0 {
            debug!(src = %src.ip(), "ra: solicitation without an interface scope ignored");
            continue;
        }
        let dst = if src.ip().is_unspecified() {
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)
        } else {
            src.ip()
        };
        let to = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, scope));
        let sent = sock
            .async_io(Interest::WRITABLE, || {
                socket::sendto(sock.as_raw_fd(), &ADVERTISEMENT, &to, MsgFlags::empty())
                    .map_err(io::Error::from)
            })
            .await;
        match sent {
            Ok(_) => {
                ctx.metrics.inc("ra", "advertised");
                info!(to = %dst, ifindex = scope, "ra: answered a router solicitation (no router, no prefixes)");
            }
            Err(e) => {
                ctx.metrics.inc("ra", "send_failed");
                warn!(to = %dst, error = %e, "ra: sending the advertisement failed");
            }
        }
    }
}
