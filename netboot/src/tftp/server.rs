//! The TFTP sockets: the request port, and one ephemeral socket per transfer (the transfer's
//! TID, RFC 1350). Transfers are bounded by `--tftp-max-transfers`, owned by a `JoinSet`, and
//! end when the token fires.
//!
//! At the limit the next request is not refused but left in the socket's buffer until a
//! transfer ends (dnsmasq does the same): a PXE ROM treats a TFTP error as a failed boot, so in
//! a boot storm a "busy" refusal lost the machine, where a wait of a few milliseconds costs
//! nothing. A request that waits longer than the client's timeout is simply retransmitted.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{error, negotiate, oack, op, parse_request, Negotiated, ParseError, MAX_REQUEST};
use crate::{udp, Netboot};

/// Retransmissions of one window (or OACK) before the transfer is abandoned.
pub const MAX_RETRIES: u32 = 5;

/// Serves TFTP read requests on `sock` until `token` fires.
pub async fn serve(
    ctx: Arc<Netboot>,
    sock: Arc<UdpSocket>,
    token: CancellationToken,
) -> io::Result<()> {
    let sem = Arc::new(Semaphore::new(ctx.cfg.tftp_max_transfers));
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; MAX_REQUEST + 1];
    loop {
        // A request is read only when its transfer can start (see the module's header).
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
                    warn!(error = %e, suppressed, "tftp: receive failed");
                }
                continue;
            }
        };
        while tasks.try_join_next().is_some() {}
        let peer = rx.src;
        // Refusals come from a fresh port, as a transfer would (RFC 1350 TIDs): answered from
        // port 69, clients send their own ERROR back to the request port.
        let reply = |code: u16, msg: &str| {
            let pkt = error(code, msg);
            async move {
                if let Ok(s) = UdpSocket::bind(SocketAddr::from((rx.info.local, 0))).await {
                    let _ = s.send_to(&pkt, SocketAddr::V4(peer)).await;
                }
            }
        };
        let req = match if rx.truncated {
            Err(ParseError::TooLong)
        } else {
            parse_request(&buf[..rx.len])
        } {
            Ok(r) => r,
            Err(e) => {
                ctx.metrics.inc("tftp", "malformed");
                if let Some(suppressed) = ctx.bad_input.allow() {
                    warn!(peer = %peer, why = %e, suppressed, "tftp: dropped malformed request");
                }
                if matches!(e, ParseError::UnknownOpcode(_)) {
                    reply(4, "illegal TFTP operation").await;
                }
                continue;
            }
        };
        if req.write {
            ctx.metrics.inc("tftp", "refused_write");
            if let Some(suppressed) = ctx.bad_input.allow() {
                warn!(peer = %peer, file = %req.filename, suppressed, "tftp: refused write request");
            }
            reply(2, "read-only server").await;
            continue;
        }
        let (name, data) = match ctx.files.resolve(&req.filename) {
            Ok((n, d)) => (n.to_owned(), d),
            Err(why) => {
                ctx.metrics.inc("tftp", "refused");
                if let Some(suppressed) = ctx.bad_input.allow() {
                    warn!(peer = %peer, file = ?req.filename, why = %why, suppressed, "tftp: refused read request");
                }
                reply(why.code(), &why.to_string()).await;
                continue;
            }
        };
        let n = negotiate(
            &req.options,
            ctx.cfg.tftp_max_blksize,
            ctx.cfg.tftp_max_window,
        );
        let ctx = ctx.clone();
        let token = token.clone();
        let local = rx.info.local;
        tasks.spawn(async move {
            let started = Instant::now();
            let r = tokio::select! {
                _ = token.cancelled() => Err(TransferError::Cancelled),
                r = transfer(data.clone(), peer, local, n) => r,
            };
            let ms = started.elapsed().as_millis() as u64;
            match r {
                Ok(()) => {
                    ctx.metrics.inc("tftp", "sent");
                    info!(peer = %peer, file = %name, bytes = data.len(), blksize = n.blksize, windowsize = n.windowsize, ms, outcome = "sent", "tftp transfer");
                }
                // A client ends transfers early as often as it likes (a valid request, then an
                // ERROR): these lines are rate-limited like bad input.
                Err(e @ TransferError::AbortedAfterOack(_)) => {
                    ctx.metrics.inc("tftp", e.label());
                    if let Some(suppressed) = ctx.bad_input.allow() {
                        info!(peer = %peer, file = %name, ms, outcome = e.label(), suppressed, "tftp transfer ended after the OACK (size probe)");
                    }
                }
                Err(e) => {
                    ctx.metrics.inc("tftp", e.label());
                    if let Some(suppressed) = ctx.bad_input.allow() {
                        warn!(peer = %peer, file = %name, ms, outcome = e.label(), error = %e, suppressed, "tftp transfer failed");
                    }
                }
            }
            drop(permit);
        });
    }
    tasks.shutdown().await;
    Ok(())
}

/// Why a transfer stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// No acknowledgment after [`MAX_RETRIES`] retransmissions.
    #[error("client stopped acknowledging (block {0})")]
    Timeout(u64),
    /// The client sent an ERROR.
    #[error("client aborted: {0}")]
    ClientError(String),
    /// The client ended the transfer after the OACK (UEFI firmware's tsize probe).
    #[error("client stopped after the option acknowledgment: {0}")]
    AbortedAfterOack(String),
    /// Socket failure.
    #[error("socket")]
    Io(#[from] io::Error),
    /// Server shutting down.
    #[error("server shutting down")]
    Cancelled,
}

impl TransferError {
    fn label(&self) -> &'static str {
        match self {
            TransferError::Timeout(_) => "timeout",
            TransferError::ClientError(_) => "client_error",
            TransferError::AbortedAfterOack(_) => "size_probe",
            TransferError::Io(_) => "io_error",
            TransferError::Cancelled => "cancelled",
        }
    }
}

enum Incoming {
    Ack(u16),
    Error(String),
    Other,
}

fn incoming(b: &[u8]) -> Incoming {
    match b {
        [0, 4, hi, lo, ..] => Incoming::Ack(u16::from_be_bytes([*hi, *lo])),
        [0, 5, _, _, msg @ ..] => {
            let end = msg.iter().position(|&c| c == 0).unwrap_or(msg.len());
            Incoming::Error(String::from_utf8_lossy(&msg[..end]).into_owned())
        }
        _ => Incoming::Other,
    }
}

/// Waits up to `timeout` for an ACK (or ERROR) from the connected peer; other packets are
/// skipped without extending the deadline.
async fn wait(sock: &UdpSocket, timeout: Duration) -> Result<Option<u16>, TransferError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 516];
    loop {
        match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Err(_) => return Ok(None),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(TransferError::ClientError("port unreachable".into()))
            }
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(n)) => match incoming(&buf[..n]) {
                Incoming::Ack(b) => return Ok(Some(b)),
                Incoming::Error(m) => return Err(TransferError::ClientError(m)),
                Incoming::Other => {}
            },
        }
    }
}

/// Sends `data` to `peer` from a fresh socket on `local` with the negotiated options.
pub async fn transfer(
    data: Bytes,
    peer: SocketAddrV4,
    local: Ipv4Addr,
    n: Negotiated,
) -> Result<(), TransferError> {
    let sock = UdpSocket::bind(SocketAddr::from((local, 0))).await?;
    sock.connect(SocketAddr::V4(peer)).await?;
    let timeout = Duration::from_secs(u64::from(n.timeout));
    let bs = usize::from(n.blksize);
    // Always a last block shorter than bs (possibly empty).
    let total = (data.len() / bs + 1) as u64;

    if n.oack {
        let pkt = oack(&n, data.len() as u64);
        let mut tries = 0;
        loop {
            sock.send(&pkt).await?;
            // UEFI firmware asks for tsize alone, then aborts: that is a size probe.
            let acked = wait(&sock, timeout).await.map_err(|e| match e {
                TransferError::ClientError(m) => TransferError::AbortedAfterOack(m),
                e => e,
            })?;
            match acked {
                Some(0) => break,
                Some(_) => {}
                None => {
                    tries += 1;
                    if tries > MAX_RETRIES {
                        return Err(TransferError::Timeout(0));
                    }
                }
            }
        }
    }

    let window = u64::from(n.windowsize);
    let mut acked: u64 = 0; // highest block acknowledged
    let mut retries = 0;
    let mut send_from = 1; // next block to (re)send
    let mut pkt = Vec::with_capacity(bs + 4);
    while acked < total {
        let last = (acked + window).min(total);
        for blk in send_from..=last {
            let start = ((blk - 1) as usize) * bs;
            let end = (start + bs).min(data.len());
            pkt.clear();
            pkt.extend_from_slice(&op::DATA.to_be_bytes());
            pkt.extend_from_slice(&(blk as u16).to_be_bytes());
            pkt.extend_from_slice(&data[start.min(end)..end]);
            sock.send(&pkt).await?;
        }
        send_from = last + 1;
        match wait(&sock, timeout).await? {
            Some(b) => {
                // Map the 16-bit block number into [acked, last]; anything else is stale and
                // answered by nothing (no sorcerer's apprentice).
                let ahead = u64::from(b.wrapping_sub(acked as u16));
                if ahead > 0 && acked + ahead <= last {
                    acked += ahead;
                    retries = 0;
                    // A partial window ACK (RFC 7440): resend from the block after it.
                    send_from = acked + 1;
                }
            }
            None => {
                retries += 1;
                if retries > MAX_RETRIES {
                    return Err(TransferError::Timeout(acked + 1));
                }
                send_from = acked + 1;
            }
        }
    }
    Ok(())
}
