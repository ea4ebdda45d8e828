//! UDP sockets that know, per datagram, which interface it came in on and which local address
//! it was sent to (IP_PKTINFO), and can send a reply out of that same interface from that same
//! address — so one socket bound to 0.0.0.0 serves every interface with the right server
//! identifier, like dnsmasq does.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;

use nix::sys::socket::{self, sockopt, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Where a datagram arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PktInfo {
    /// Interface index.
    pub ifindex: u32,
    /// Local address it was for (for a broadcast: the interface's primary address).
    pub local: Ipv4Addr,
}

/// A received datagram.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Bytes written into the buffer.
    pub len: usize,
    /// The datagram was longer than the buffer.
    pub truncated: bool,
    /// Sender.
    pub src: SocketAddrV4,
    /// Arrival information.
    pub info: PktInfo,
}

/// Receive buffer of the request sockets. In a boot storm every machine asks at once: with the
/// kernel's default (~200 KiB) a thousand simultaneous DISCOVERs overflowed it and 635 of them
/// were dropped, each costing its client a 4 s retransmission (tests/bench.rs). 4 MiB holds
/// thousands of requests; the memory is only used while they wait.
pub const RECV_BUFFER: usize = 4 << 20;

/// Binds a non-blocking UDP socket with IP_PKTINFO on, SO_REUSEADDR, a [`RECV_BUFFER`]
/// receive buffer, and optionally SO_BROADCAST and SO_BINDTODEVICE.
pub fn bind(addr: SocketAddrV4, broadcast: bool, device: Option<&str>) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    // SO_RCVBUFFORCE (CAP_NET_ADMIN) goes past net.core.rmem_max, which is 208 KiB on a stock
    // Debian; without the capability SO_RCVBUF gets what rmem_max allows.
    if socket::setsockopt(&s, sockopt::RcvBufForce, &RECV_BUFFER).is_err() {
        s.set_recv_buffer_size(RECV_BUFFER)?;
    }
    if broadcast {
        s.set_broadcast(true)?;
    }
    if let Some(dev) = device {
        s.bind_device(Some(dev.as_bytes()))?;
    }
    socket::setsockopt(&s, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Receives one datagram with its arrival information.
pub async fn recv(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    loop {
        let r = sock
            .async_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(buf)];
                let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
                let msg = socket::recvmsg::<SockaddrIn>(
                    sock.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::empty(),
                )
                .map_err(io::Error::from)?;
                let mut info = None;
                for c in msg.cmsgs().map_err(io::Error::from)? {
                    if let ControlMessageOwned::Ipv4PacketInfo(p) = c {
                        info = Some(PktInfo {
                            ifindex: u32::try_from(p.ipi_ifindex).unwrap_or(0),
                            local: Ipv4Addr::from(u32::from_be(p.ipi_spec_dst.s_addr)),
                        });
                    }
                }
                let src = msg.address.map(|a| SocketAddrV4::new(a.ip(), a.port()));
                Ok((
                    msg.bytes,
                    msg.flags.contains(MsgFlags::MSG_TRUNC),
                    src,
                    info,
                ))
            })
            .await?;
        // Without a source or pktinfo (never on Linux for AF_INET) the datagram is unusable.
        if let (len, truncated, Some(src), Some(info)) = r {
            return Ok(Received {
                len,
                truncated,
                src,
                info,
            });
        }
    }
}

/// Sends `buf` to `dest` out of interface `ifindex` from address `src` (0 / unspecified: let
/// the kernel choose).
pub async fn send(
    sock: &UdpSocket,
    buf: &[u8],
    dest: SocketAddrV4,
    ifindex: u32,
    src: Ipv4Addr,
) -> io::Result<usize> {
    let pi = libc::in_pktinfo {
        ipi_ifindex: i32::try_from(ifindex).unwrap_or(0),
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(src).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let to = SockaddrIn::from(dest);
    sock.async_io(Interest::WRITABLE, || {
        let iov = [IoSlice::new(buf)];
        let cmsgs = [ControlMessage::Ipv4PacketInfo(&pi)];
        socket::sendmsg(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), Some(&to))
            .map_err(io::Error::from)
    })
    .await
}
