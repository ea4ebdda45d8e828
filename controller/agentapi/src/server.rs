//! The agent API's HTTPS server: hyper HTTP/1.1 over tokio-rustls, every input bounded (TLS
//! handshake, header and body time, body size, connections, long-poll length). Client
//! certificates are optional at the TLS layer, because enrollment is how an agent gets one;
//! every other route refuses a request without one (`401 no-certificate`) and acts for the
//! host that certificate names, never for one a body names.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent_proto::{
    ApiError, Enroll, Enrolled, Events, Heartbeat, HeartbeatReply, Renew, PROTOCOL_VERSION,
};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backend::{Backend, Pokes};
use crate::ca::{host_from_cert, Ca, CaError};
use crate::host::HostId;

/// Limits and timings of the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// DNS names and IP addresses agents use to reach the API (the server certificate's SANs).
    pub server_names: Vec<String>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most events in one `events` call.
    pub max_events: usize,
    /// Time for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time for a request's headers (also for the next request on a kept-alive connection).
    pub header_timeout: Duration,
    /// Time for a request's body.
    pub body_timeout: Duration,
    /// Longest a connection lives, whatever it does.
    pub connection_lifetime: Duration,
    /// Connections served at once; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Longest a heartbeat is held (whatever the agent asks).
    pub max_wait: Duration,
    /// Client certificate lifetime.
    pub cert_lifetime: Duration,
    /// `Enrolled::heartbeat_seconds`.
    pub heartbeat_seconds: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            server_names: vec!["127.0.0.1".into(), "::1".into(), "localhost".into()],
            max_body_bytes: 4 << 20,
            max_events: 1000,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            connection_lifetime: Duration::from_secs(600),
            max_connections: 4096,
            max_wait: Duration::from_secs(60),
            cert_lifetime: Duration::from_secs(3600),
            heartbeat_seconds: 30,
        }
    }
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("building the agent API's TLS configuration")]
    Tls(#[source] CaError),
}

/// The agent API server. See the module docs.
pub struct AgentApi {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AgentApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentApi")
            .field("ca", &self.inner.ca)
            .finish_non_exhaustive()
    }
}

struct Inner {
    ca: Ca,
    backend: Arc<dyn Backend>,
    opts: Options,
    tls: Arc<rustls::ServerConfig>,
    pokes: Pokes,
}

/// Who is on the other end of a connection, from its TLS handshake.
#[derive(Debug, Clone)]
enum Peer {
    /// No client certificate (enrollment).
    Anonymous,
    /// A certificate the CA signed, naming this host.
    Host(HostId),
    /// A certificate the CA signed that names no usable host.
    Unusable(String),
}

impl AgentApi {
    /// A server for `ca` and `backend`; makes a fresh server certificate for
    /// `opts.server_names`.
    pub fn new(ca: Ca, backend: Arc<dyn Backend>, opts: Options) -> Result<Self, ServeError> {
        let tls = Arc::new(
            ca.server_config(&opts.server_names)
                .map_err(ServeError::Tls)?,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                ca,
                backend,
                opts,
                tls,
                pokes: Pokes::default(),
            }),
        })
    }

    /// The CA's pin, `sha256:HEX`.
    pub fn fingerprint(&self) -> String {
        self.inner.ca.fingerprint()
    }

    /// Handle that wakes long-polls; give it to whatever changes hosts' next commands.
    pub fn pokes(&self) -> Pokes {
        self.inner.pokes.clone()
    }

    /// Wakes `host`'s pending heartbeat at once (its next command changed).
    pub fn poke(&self, host: &HostId) {
        self.inner.pokes.poke(host);
    }

    /// Serves on `listener` until `cancel` fires; then stops accepting, lets connections
    /// finish their current request (long-polls answer "nothing" at once), and returns.
    pub async fn serve(&self, listener: TcpListener, cancel: CancellationToken) {
        let acceptor = TlsAcceptor::from(self.inner.tls.clone());
        let slots = Arc::new(Semaphore::new(self.inner.opts.max_connections));
        let mut tasks = JoinSet::new();
        info!(
            addr = ?listener.local_addr().ok(),
            ca = %self.inner.ca.fingerprint(),
            "agent API listening"
        );
        loop {
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    if e.is_panic() {
                        error!(error = %e, "agent API connection task panicked");
                    }
                }
            }
            let permit = tokio::select! {
                _ = cancel.cancelled() => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (tcp, addr) = tokio::select! {
                _ = cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accepting an agent API connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let inner = self.inner.clone();
            let acceptor = acceptor.clone();
            let cancel = cancel.clone();
            tasks.spawn(async move {
                let _permit = permit;
                connection(inner, acceptor, tcp, addr, cancel).await;
            });
        }
        while tasks.join_next().await.is_some() {}
        info!("agent API stopped");
    }
}

async fn connection(
    inner: Arc<Inner>,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    cancel: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(inner.opts.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            info!(peer = %addr, error = %e, "agent API TLS handshake refused");
            return;
        }
        Err(_) => {
            info!(peer = %addr, "agent API TLS handshake timed out");
            return;
        }
    };
    let peer = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        None => Peer::Anonymous,
        Some(cert) => match host_from_cert(cert) {
            Ok(h) => Peer::Host(h),
            Err(e) => Peer::Unusable(crate::error_chain(&e)),
        },
    };
    let service = {
        let inner = inner.clone();
        let cancel = cancel.clone();
        hyper::service::service_fn(move |req| {
            let inner = inner.clone();
            let peer = peer.clone();
            let cancel = cancel.clone();
            async move { Ok::<_, Infallible>(handle(&inner, req, &peer, addr, &cancel).await) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(inner.opts.header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let lifetime = tokio::time::sleep(inner.opts.connection_lifetime);
    tokio::pin!(lifetime);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(peer = %addr, error = %e, "agent API connection ended with an error");
            }
            return;
        }
        _ = cancel.cancelled() => {}
        _ = &mut lifetime => {
            debug!(peer = %addr, "agent API connection reached its lifetime");
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn ok<T: serde::Serialize>(body: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(body) {
        Ok(b) => json_response(StatusCode::OK, b),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &e.to_string(),
        )
        .reply(),
    }
}

/// A refused call: status and [`ApiError`].
struct Refused {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refused {
    fn reply(self) -> Reply {
        let body = ApiError {
            code: self.code.into(),
            message: self.message,
        };
        json_response(self.status, serde_json::to_vec(&body).unwrap_or_default())
    }
}

fn refuse(status: StatusCode, code: &'static str, message: &str) -> Refused {
    Refused {
        status,
        code,
        message: message.into(),
    }
}

type Reply = Response<Full<Bytes>>;

/// Reads a bounded JSON body.
async fn read_json<T: DeserializeOwned>(
    inner: &Inner,
    req: Request<Incoming>,
) -> Result<T, Refused> {
    let max = inner.opts.max_body_bytes;
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            &format!("the body is larger than {max} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let body = Limited::new(req.into_body(), max);
    let bytes = match tokio::time::timeout(inner.opts.body_timeout, body.collect()).await {
        Err(_) => {
            return Err(refuse(
                StatusCode::REQUEST_TIMEOUT,
                "bad-request",
                "the body did not arrive in time",
            ))
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "bad-request",
                &format!("reading the body: {e}"),
            ))
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        let msg: String = e.to_string().chars().take(200).collect();
        refuse(
            StatusCode::BAD_REQUEST,
            "bad-request",
            &format!("the body is not the expected JSON: {msg}"),
        )
    })
}

fn check_protocol(p: u32) -> Result<(), Refused> {
    if p == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(refuse(
            StatusCode::BAD_REQUEST,
            "protocol",
            &format!("this controller speaks agent protocol {PROTOCOL_VERSION}, the agent {p}"),
        ))
    }
}

/// The host an authenticated call acts for: its certificate's, and only that.
fn authenticated(peer: &Peer, claimed: Option<&str>, addr: SocketAddr) -> Result<HostId, Refused> {
    let host = match peer {
        Peer::Host(h) => h,
        Peer::Anonymous => {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "no-certificate",
                "this call needs the client certificate from enrollment",
            ))
        }
        Peer::Unusable(why) => {
            warn!(peer = %addr, why = %why, "agent API: certificate names no host");
            return Err(refuse(StatusCode::FORBIDDEN, "wrong-host", why));
        }
    };
    if let Some(c) = claimed {
        if c != host.to_string() {
            warn!(peer = %addr, host = %host, claimed = %c, "agent API: agent claims another host");
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "wrong-host",
                &format!("this certificate is for {host}, not {c}"),
            ));
        }
    }
    Ok(host.clone())
}

async fn handle(
    inner: &Inner,
    req: Request<Incoming>,
    peer: &Peer,
    addr: SocketAddr,
    cancel: &CancellationToken,
) -> Reply {
    let result = match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/agent/enroll") => enroll(inner, req, addr).await,
        (&Method::POST, "/v1/agent/renew") => renew(inner, req, peer, addr).await,
        (&Method::POST, "/v1/agent/heartbeat") => heartbeat(inner, req, peer, addr, cancel).await,
        (&Method::POST, "/v1/agent/events") => events(inner, req, peer, addr).await,
        (
            _,
            "/v1/agent/enroll" | "/v1/agent/renew" | "/v1/agent/heartbeat" | "/v1/agent/events",
        ) => Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "bad-request",
            "only POST",
        )),
        _ => Err(refuse(StatusCode::NOT_FOUND, "not-found", "no such call")),
    };
    result.unwrap_or_else(Refused::reply)
}

fn issue(inner: &Inner, csr: crate::ca::Csr, host: &HostId) -> Result<Enrolled, Refused> {
    let now = SystemTime::now();
    let cert = inner
        .ca
        .sign_csr(
            csr,
            host,
            now - crate::ca::CLOCK_SKEW,
            now + inner.opts.cert_lifetime,
        )
        .map_err(|e| {
            error!(host = %host, error = %crate::error_chain(&e), "signing a client certificate");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "signing the certificate failed",
            )
        })?;
    Ok(Enrolled {
        host: host.to_string(),
        certificate_pem: cert.pem,
        not_after_unix: cert.not_after_unix,
        heartbeat_seconds: inner.opts.heartbeat_seconds,
    })
}

async fn enroll(inner: &Inner, req: Request<Incoming>, addr: SocketAddr) -> Result<Reply, Refused> {
    let body: Enroll = read_json(inner, req).await?;
    check_protocol(body.protocol)?;
    // The CSR is checked before the token is spent: a broken agent must not burn its token.
    let csr = Ca::parse_csr(&body.csr_pem).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            "bad-request",
            &crate::error_chain(&e),
        )
    })?;
    if body.token.len() > 256 {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "bad-token",
            "the boot token is not known",
        ));
    }
    let host = inner
        .backend
        .redeem_token(&body.token, &body)
        .map_err(|refusal| {
            warn!(
                peer = %addr,
                host = ?refusal.host().map(|h| h.to_string()),
                code = refusal.code(),
                boot_mac = %body.boot_mac,
                address = %body.address,
                serial = ?body.system_serial,
                "agent enrollment refused: {refusal}"
            );
            refuse(StatusCode::FORBIDDEN, refusal.code(), &refusal.to_string())
        })?;
    let enrolled = issue(inner, csr, &host)?;
    info!(
        peer = %addr,
        host = %host,
        boot_mac = %body.boot_mac,
        address = %body.address,
        serial = ?body.system_serial,
        uuid = ?body.system_uuid,
        not_after = enrolled.not_after_unix,
        "agent enrolled"
    );
    Ok(ok(&enrolled))
}

async fn renew(
    inner: &Inner,
    req: Request<Incoming>,
    peer: &Peer,
    addr: SocketAddr,
) -> Result<Reply, Refused> {
    let host = authenticated(peer, None, addr)?;
    let body: Renew = read_json(inner, req).await?;
    check_protocol(body.protocol)?;
    let csr = Ca::parse_csr(&body.csr_pem).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            "bad-request",
            &crate::error_chain(&e),
        )
    })?;
    let enrolled = issue(inner, csr, &host)?;
    info!(peer = %addr, host = %host, not_after = enrolled.not_after_unix, "agent certificate renewed");
    Ok(ok(&enrolled))
}

async fn heartbeat(
    inner: &Inner,
    req: Request<Incoming>,
    peer: &Peer,
    addr: SocketAddr,
    cancel: &CancellationToken,
) -> Result<Reply, Refused> {
    authenticated(peer, None, addr)?;
    let body: Heartbeat = read_json(inner, req).await?;
    let host = authenticated(peer, body.host.as_deref(), addr)?;
    check_protocol(body.protocol)?;
    let wait = Duration::from_secs(body.wait_seconds.into()).min(inner.opts.max_wait);
    let deadline = tokio::time::Instant::now() + wait;
    let notify = inner.pokes.subscribe(&host);
    let command = loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(c) = inner.backend.next_command(&host) {
            break Some(c);
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => break None,
            _ = cancel.cancelled() => break None,
        }
    };
    inner.pokes.release(&host, notify);
    debug!(peer = %addr, host = %host, running = ?body.running, command = ?command.as_ref().map(|c| &c.id), "heartbeat");
    Ok(ok(&HeartbeatReply { command }))
}

async fn events(
    inner: &Inner,
    req: Request<Incoming>,
    peer: &Peer,
    addr: SocketAddr,
) -> Result<Reply, Refused> {
    authenticated(peer, None, addr)?;
    let body: Events = read_json(inner, req).await?;
    let host = authenticated(peer, body.host.as_deref(), addr)?;
    if body.events.len() > inner.opts.max_events {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            &format!("more than {} events in one call", inner.opts.max_events),
        ));
    }
    debug!(peer = %addr, host = %host, count = body.events.len(), "agent events");
    for e in body.events {
        inner.backend.on_event(&host, e);
    }
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}
