//! The DHCP socket shell: receive, [`decide`](super::decide), log and count, send. Handlers are
//! bounded by a semaphore and owned by a `JoinSet`; everything stops when the token fires.

use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{decide, Outcome, MAX_PACKET, PXE_PORT, SERVER_PORT};
use crate::{udp, Netboot};

/// Serves DHCP on `sock` until `token` fires. `pxe_port` says the socket is the PXE
/// boot-server port (4011) rather than the DHCP server port.
pub async fn serve(
    ctx: Arc<Netboot>,
    sock: Arc<UdpSocket>,
    pxe_port: bool,
    token: CancellationToken,
) -> io::Result<()> {
    let sem = Arc::new(Semaphore::new(ctx.cfg.dhcp_max_inflight));
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; MAX_PACKET];
    let local_port = if pxe_port { PXE_PORT } else { SERVER_PORT };
    loop {
        let permit = tokio::select! {
            _ = token.cancelled() => break,
            p = sem.clone().acquire_owned() => p.map_err(io::Error::other)?,
        };
        let rx = tokio::select! {
            _ = token.cancelled() => break,
            r = udp::recv(&sock, &mut buf) => r,
        };
        let rx = match rx {
            Ok(rx) => rx,
            Err(e) => {
                if let Some(suppressed) = ctx.bad_input.allow() {
                    warn!(error = %e, suppressed, "dhcp: receive failed");
                }
                continue;
            }
        };
        if rx.truncated {
            ctx.metrics.inc("dhcp", Outcome::Malformed.as_str());
            if let Some(suppressed) = ctx.bad_input.allow() {
                warn!(src = %rx.src, suppressed, "dhcp: dropped oversized datagram");
            }
            continue;
        }
        let packet = buf[..rx.len].to_vec();
        let ctx = ctx.clone();
        let sock = sock.clone();
        tasks.spawn(async move {
            handle(&ctx, &sock, &packet, rx, local_port).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    tasks.shutdown().await;
    Ok(())
}

async fn handle(
    ctx: &Netboot,
    sock: &UdpSocket,
    packet: &[u8],
    rx: udp::Received,
    local_port: u16,
) {
    let ingress = super::Ingress {
        ifindex: rx.info.ifindex,
        server_ip: rx.info.local,
        local_port,
        src: rx.src,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let d = {
        let mut leases = ctx.leases.lock().unwrap_or_else(|e| e.into_inner());
        decide(
            packet,
            &ingress,
            &ctx.cfg,
            ctx.hosts.as_ref(),
            &mut leases,
            now,
        )
    };
    ctx.metrics.inc("dhcp", d.outcome.as_str());
    let outcome = d.outcome.as_str();
    let mac = d.mac.map_or_else(String::new, |m| m.to_string());
    match d.outcome {
        Outcome::Malformed => {
            if let Some(suppressed) = ctx.bad_input.allow() {
                warn!(src = %rx.src, why = %d.detail, suppressed, "dhcp: dropped malformed packet");
            }
        }
        Outcome::IgnoredUnknownMac | Outcome::IgnoredType | Outcome::IgnoredNotPxe => {
            debug!(mac = %mac, xid = d.xid, outcome, detail = %d.detail, ifindex = ingress.ifindex, "dhcp decision");
        }
        _ => {
            info!(mac = %mac, xid = d.xid, outcome, detail = %d.detail, ifindex = ingress.ifindex, server = %ingress.server_ip, "dhcp decision");
        }
    }
    let Some(reply) = d.reply else { return };
    let bytes = reply.encode();
    if bytes.is_empty() {
        return;
    }
    // Broadcasts must leave through the interface the request came in on; unicasts (relays,
    // renewing clients) follow the routing table.
    let ifindex = if reply.dest.ip() == &Ipv4Addr::BROADCAST {
        reply.ifindex
    } else {
        0
    };
    if let Err(e) = udp::send(sock, &bytes, reply.dest, ifindex, reply.src_ip).await {
        ctx.metrics.inc("dhcp", "send_failed");
        // A client can make sends fail (an unreachable relay address, a flood filling the
        // queue): rate-limited like bad input.
        if let Some(suppressed) = ctx.bad_input.allow() {
            warn!(mac = %mac, xid = d.xid, dest = %reply.dest, error = %e, suppressed, "dhcp: sending reply failed");
        }
    }
}
