//! The local API. The netboot feed: `GET /v1/netboot/hosts?after=REV` tells ferrox-netboot which MACs boot the
//! ramdisk now and with which one-time token. A long poll: answered as soon as the revision
//! passes `REV`, else after [`HOLD`] with the current list. Every request must carry the feed's
//! bearer token (the tokens in the answer are boot credentials). Also `GET /v1/records` and
//! `GET /v1/events`, which `ferrox-controller get` reads while the controller holds the store.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::reconciler::Reconciler;

/// Longest a poll is held.
pub const HOLD: Duration = Duration::from_secs(25);

/// Concurrent connections served.
const MAX_CONNECTIONS: usize = 64;

/// Serves the feed on `listener` until `cancel` fires.
pub async fn serve(
    listener: TcpListener,
    rec: Arc<Reconciler>,
    bearer: String,
    cancel: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let bearer = Arc::new(format!("Bearer {bearer}"));
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!("netboot feed: accepting: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            debug!(%peer, "netboot feed: too many connections; dropping one");
            continue;
        };
        let (rec, bearer, cancel) = (rec.clone(), bearer.clone(), cancel.clone());
        conns.spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req| {
                let (rec, bearer, cancel) = (rec.clone(), bearer.clone(), cancel.clone());
                async move { Ok::<_, Infallible>(handle(req, &rec, &bearer, &cancel).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(HOLD * 4, conn).await;
        });
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

async fn handle(
    req: Request<Incoming>,
    rec: &Reconciler,
    bearer: &str,
    cancel: &CancellationToken,
) -> Response<Full<Bytes>> {
    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .is_some_and(|v| same(v.as_bytes(), bearer.as_bytes()));
    if !authorized {
        return reply(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"bearer token required"}"#.into(),
        );
    }
    if req.method() != Method::GET {
        return reply(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into());
    }
    match req.uri().path() {
        "/v1/netboot/hosts" => {}
        // The local API `ferrox-controller get` reads while the controller holds the store.
        "/v1/records" => {
            // Serialized straight from the store's copy: a thousand records are not cloned.
            let mut body = b"[".to_vec();
            rec.store().each_host(|_, r| {
                if body.len() > 1 {
                    body.push(b',');
                }
                // A record serialized before, when it was stored: it serializes again.
                let _ = serde_json::to_writer(&mut body, r);
            });
            body.push(b']');
            return reply(StatusCode::OK, String::from_utf8(body).unwrap_or_default());
        }
        "/v1/events" => {
            return match rec.store().events(None) {
                Ok(ev) => reply(
                    StatusCode::OK,
                    serde_json::to_string(&ev).unwrap_or_default(),
                ),
                Err(e) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{{\"error\":{:?}}}", crate::error_chain(&e)),
                ),
            }
        }
        _ => return reply(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into()),
    }
    let after: Option<u64> = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("after=")))
        .and_then(|v| v.parse().ok());
    let mut rx = rec.netboot_revision();
    if let Some(after) = after {
        let wait = rx.wait_for(|r| *r != after);
        tokio::select! {
            _ = tokio::time::sleep(HOLD) => {}
            _ = cancel.cancelled() => {}
            _ = wait => {}
        }
    }
    let revision = *rx.borrow();
    match rec.netboot_hosts() {
        Ok(hosts) => reply(
            StatusCode::OK,
            serde_json::json!({"revision": revision, "hosts": hosts}).to_string(),
        ),
        Err(e) => {
            warn!("netboot feed: {}", crate::error_chain(&e));
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"state unavailable"}"#.into(),
            )
        }
    }
}
