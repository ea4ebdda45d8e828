//! HTTP: per-host iPXE scripts, the kernel and initramfs (Content-Length, single Range), the
//! iPXE binaries for UEFI HTTP boot, and `/metrics`. Only these paths exist: nothing in a
//! request ever reaches the filesystem.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::UnknownPolicy;
use crate::hosts::{Host, MacAddr};
use crate::{ipxe, Netboot};

type Resp = Response<Full<Bytes>>;

/// Serves HTTP on `listener` until `token` fires.
pub async fn serve(
    ctx: Arc<Netboot>,
    listener: TcpListener,
    token: CancellationToken,
) -> io::Result<()> {
    let sem = Arc::new(Semaphore::new(ctx.cfg.http_max_connections));
    let mut tasks = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = token.cancelled() => break,
            p = sem.clone().acquire_owned() => p.map_err(io::Error::other)?,
        };
        let (stream, peer) = tokio::select! {
            _ = token.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while tasks.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let svc = service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(&ctx, local, peer, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(peer = %peer, error = %e, "http: connection ended with an error");
            }
            drop(permit);
        });
    }
    tasks.shutdown().await;
    Ok(())
}

fn status(code: StatusCode, body: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// Answers one request. Public for tests.
pub fn handle<B>(ctx: &Netboot, local: SocketAddr, peer: SocketAddr, req: &Request<B>) -> Resp {
    let path = req.uri().path();
    let (label, resp) = route(ctx, local, req);
    ctx.metrics.inc("http", label);
    let code = resp.status().as_u16();
    if resp.status().is_client_error() {
        if let Some(suppressed) = ctx.bad_input.allow() {
            warn!(peer = %peer, method = %req.method(), path = %path.escape_debug(), status = code, suppressed, "http request refused");
        }
    } else if label != "metrics" {
        info!(peer = %peer, method = %req.method(), path, status = code, outcome = label, "http request");
    }
    resp
}

fn route<B>(ctx: &Netboot, local: SocketAddr, req: &Request<B>) -> (&'static str, Resp) {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = status(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return ("method_not_allowed", r);
    }
    let head = req.method() == Method::HEAD;
    let path = req.uri().path();
    if path == "/metrics" {
        let mut r = Response::new(Full::new(Bytes::from(ctx.metrics.render())));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        return ("metrics", r);
    }
    if let Some(rest) = path.strip_prefix("/files/") {
        let data = match rest {
            "kernel" => ctx.kernel.as_ref(),
            "initramfs" => ctx.initramfs.as_ref(),
            _ => None,
        };
        return match data {
            Some(d) => {
                let label = if rest == "kernel" {
                    "kernel"
                } else {
                    "initramfs"
                };
                file(d, req, head, label)
            }
            None => ("not_found", status(StatusCode::NOT_FOUND, "not served\n")),
        };
    }
    if let Some(rest) = path.strip_prefix("/ipxe/") {
        if let Some(mac) = rest.strip_suffix(".ipxe") {
            return script(ctx, local, mac);
        }
        return match ctx.files.resolve(rest) {
            Ok((_, d)) => file(&d, req, head, "binary"),
            Err(_) => ("not_found", status(StatusCode::NOT_FOUND, "not served\n")),
        };
    }
    ("not_found", status(StatusCode::NOT_FOUND, "not served\n"))
}

fn script(ctx: &Netboot, local: SocketAddr, mac: &str) -> (&'static str, Resp) {
    let Ok(mac) = mac.parse::<MacAddr>() else {
        return (
            "not_found",
            status(StatusCode::NOT_FOUND, "not a MAC address\n"),
        );
    };
    let (host, label) = match ctx.hosts.lookup(&mac) {
        Some(h) => (h, "script"),
        None if ctx.cfg.unknown == UnknownPolicy::Discovery => {
            (Arc::new(Host::discovery(mac)), "discovery_script")
        }
        None => return ("not_found", status(StatusCode::NOT_FOUND, "unknown host\n")),
    };
    if !host.netboot {
        return (
            "not_found",
            status(StatusCode::NOT_FOUND, "host does not netboot\n"),
        );
    }
    match ipxe::script(&host, &ctx.cfg, local) {
        Ok(s) => {
            let mut r = Response::new(Full::new(Bytes::from(s)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            (label, r)
        }
        Err(e) => {
            warn!(error = %e, "http: cannot render iPXE script");
            (
                "script_error",
                status(StatusCode::INTERNAL_SERVER_ERROR, "bad host record\n"),
            )
        }
    }
}

/// A Range that selects nothing of the file (416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// An inclusive byte range.
pub type ByteRange = (u64, u64);

/// Parses a single `bytes=` range against `len`. `Ok(None)`: no (usable) Range, serve all.
pub fn parse_range(value: &str, len: u64) -> Result<Option<ByteRange>, Unsatisfiable> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multiple ranges: answering with the whole file is allowed
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| Unsatisfiable)?;
        if n == 0 || len == 0 {
            return Err(Unsatisfiable);
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| Unsatisfiable)?;
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| Unsatisfiable)?
                .min(len.saturating_sub(1))
        };
        (start, end)
    };
    if start >= len || start > end {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end)))
}

fn file<B>(
    data: &Bytes,
    req: &Request<B>,
    head: bool,
    label: &'static str,
) -> (&'static str, Resp) {
    let len = data.len() as u64;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, len));
    let (code, body, content_range) = match range {
        None | Some(Ok(None)) => (StatusCode::OK, data.clone(), None),
        Some(Ok(Some((s, e)))) => (
            StatusCode::PARTIAL_CONTENT,
            data.slice(s as usize..=e as usize),
            Some(format!("bytes {s}-{e}/{len}")),
        ),
        Some(Err(Unsatisfiable)) => {
            let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
            if let Ok(v) = header::HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return ("range_not_satisfiable", r);
        }
    };
    let body_len = body.len();
    let mut r = Response::new(Full::new(if head { Bytes::new() } else { body }));
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(body_len));
    if let Some(cr) = content_range.and_then(|v| header::HeaderValue::from_str(&v).ok()) {
        h.insert(header::CONTENT_RANGE, cr);
    }
    (label, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        type Want = Result<Option<ByteRange>, Unsatisfiable>;
        let cases: &[(&str, u64, Want)] = &[
            ("bytes=0-99", 1000, Ok(Some((0, 99)))),
            ("bytes=500-", 1000, Ok(Some((500, 999)))),
            ("bytes=-100", 1000, Ok(Some((900, 999)))),
            ("bytes=-5000", 1000, Ok(Some((0, 999)))),
            ("bytes=900-5000", 1000, Ok(Some((900, 999)))),
            ("bytes=1000-", 1000, Err(Unsatisfiable)),
            ("bytes=5-1", 1000, Err(Unsatisfiable)),
            ("bytes=-0", 1000, Err(Unsatisfiable)),
            ("bytes=a-b", 1000, Err(Unsatisfiable)),
            ("bytes=0-1,5-6", 1000, Ok(None)),
            ("items=0-1", 1000, Ok(None)),
            ("bytes=0-0", 0, Err(Unsatisfiable)),
        ];
        for (v, len, want) in cases {
            assert_eq!(parse_range(v, *len), *want, "{v} of {len}");
        }
    }
}
