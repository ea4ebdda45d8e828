//! A small hyper server for the image-write tests, bound to 127.0.0.1:0, with fault
//! injection: no Range support, dropped connections, stalls, truncation, error statuses,
//! redirects, and HTTPS with a test CA made by rcgen.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// What goes wrong while serving a file.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer 200 with the whole file even when asked for a range.
    pub no_range: bool,
    /// Absolute offsets at which the connection is dropped, each once.
    pub drop_at: Vec<u64>,
    /// At this offset the server goes quiet (every time).
    pub stall_at: Option<u64>,
    /// The body closes at this offset; afterwards every request gets 503.
    pub truncate_at: Option<u64>,
    /// Send no Content-Length (close-delimited body).
    pub no_length: bool,
    /// Strong ETag to send and honour in If-Range.
    pub etag: Option<String>,
    /// Answers to bounded ranges (`bytes=A-B`, random access) carry one flipped byte: a
    /// server whose image changed, or that lies.
    pub lie_in_ranges: bool,
}

#[derive(Debug, Clone)]
pub enum Route {
    File { data: Arc<Vec<u8>>, faults: Faults },
    Redirect(String),
    Status(u16),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    seen: Vec<Seen>,
    truncated: bool,
}

pub struct Server {
    pub addr: SocketAddr,
    pub tls: bool,
    state: Arc<Mutex<State>>,
    _rt: tokio::runtime::Runtime,
}

impl Server {
    pub fn http() -> Self {
        Self::start(None)
    }

    pub fn https(config: rustls::ServerConfig) -> Self {
        Self::start(Some(Arc::new(config)))
    }

    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let is_tls = tls.is_some();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(&st, req)) }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            tls: is_tls,
            state,
            _rt: rt,
        }
    }

    pub fn route(&self, path: &str, route: Route) -> &Self {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(path.to_string(), route);
        self
    }

    pub fn file(&self, path: &str, data: Arc<Vec<u8>>, faults: Faults) -> &Self {
        self.route(path, Route::File { data, faults })
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

fn status(code: u16) -> Response<TestBody> {
    Response::builder()
        .status(code)
        .body(TestBody::empty())
        .unwrap()
}

fn handle(state: &Mutex<State>, req: Request<Incoming>) -> Response<TestBody> {
    let header = |name: http::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let seen = Seen {
        path: req.uri().path().to_string(),
        range: header(http::header::RANGE),
        if_range: header(http::header::IF_RANGE),
    };
    let mut st = state.lock().unwrap();
    st.seen.push(seen.clone());
    let route = st.routes.get(&seen.path).cloned();
    let (data, faults) = match route {
        None => return status(404),
        Some(Route::Status(code)) => return status(code),
        Some(Route::Redirect(to)) => {
            return Response::builder()
                .status(302)
                .header(http::header::LOCATION, to)
                .body(TestBody::empty())
                .unwrap()
        }
        Some(Route::File { data, faults }) => (data, faults),
    };
    if st.truncated {
        return status(503);
    }
    let len = data.len() as u64;
    let mut start = 0u64;
    let range_ok = !faults.no_range
        && match (&seen.if_range, &faults.etag) {
            (None, _) => true,
            (Some(v), Some(e)) => v == e,
            (Some(_), None) => false,
        };
    if let (Some(r), true) = (&seen.range, range_ok) {
        // A bounded range (random access) is served whole, without the fault offsets.
        let bounded = r
            .strip_prefix("bytes=")
            .and_then(|s| s.split_once('-'))
            .filter(|(_, b)| !b.is_empty());
        if let Some((a, b)) = bounded {
            let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) else {
                return status(416);
            };
            if a > b || b >= len {
                return status(416);
            }
            let mut slice = data[a as usize..=b as usize].to_vec();
            if faults.lie_in_ranges {
                let mid = slice.len() / 2;
                slice[mid] ^= 0xff;
            }
            let mut resp = Response::builder()
                .status(StatusCode::PARTIAL_CONTENT)
                .header(http::header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}"))
                .header(http::header::CONTENT_LENGTH, slice.len());
            if let Some(e) = &faults.etag {
                resp = resp.header(http::header::ETAG, e);
            }
            return resp
                .body(TestBody {
                    data: Arc::new(slice),
                    pos: 0,
                    cut: None,
                    sleep: None,
                })
                .unwrap();
        }
        let from = r
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<u64>().ok());
        match from {
            Some(n) if n < len => start = n,
            _ => return status(416),
        }
    }
    // The first drop offset inside this response, consumed.
    let mut cut = None;
    if let Some(i) = faults.drop_at.iter().position(|&d| d > start && d < len) {
        let at = faults.drop_at[i];
        if let Some(Route::File { faults: f, .. }) = st.routes.get_mut(&seen.path) {
            f.drop_at.remove(i);
        }
        cut = Some((at, Cut::Drop));
    }
    if let Some(at) = faults.stall_at.filter(|&s| s >= start && s < len) {
        if cut.as_ref().is_none_or(|(c, _)| at < *c) {
            cut = Some((at, Cut::Stall));
        }
    }
    if let Some(at) = faults.truncate_at.filter(|&t| t >= start && t < len) {
        st.truncated = true;
        cut = Some((at, Cut::Close));
    }
    let mut resp = Response::builder();
    if let Some(e) = &faults.etag {
        resp = resp.header(http::header::ETAG, e);
    }
    if start > 0 {
        resp = resp.status(StatusCode::PARTIAL_CONTENT).header(
            http::header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", len - 1),
        );
    }
    if !faults.no_length {
        resp = resp.header(http::header::CONTENT_LENGTH, len - start);
    }
    resp.body(TestBody {
        data,
        pos: start as usize,
        cut,
        sleep: None,
    })
    .unwrap()
}

#[derive(Debug, Clone, Copy)]
enum Cut {
    Drop,
    Stall,
    Close,
}

/// A body served in 64 KiB frames that can fail, stall, or end early at a given offset.
pub struct TestBody {
    data: Arc<Vec<u8>>,
    pos: usize,
    cut: Option<(u64, Cut)>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TestBody {
    fn empty() -> Self {
        Self {
            data: Arc::new(Vec::new()),
            pos: 0,
            cut: None,
            sleep: None,
        }
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(s) = &mut self.sleep {
            return match s.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::other("stalled")))),
            };
        }
        let limit = self
            .cut
            .map(|(at, _)| at as usize)
            .unwrap_or(self.data.len());
        if self.pos >= limit {
            return match self.cut {
                None => Poll::Ready(None),
                Some((at, Cut::Drop)) | Some((at, Cut::Close)) => {
                    // Let hyper flush what it has sent before the connection is cut, so the
                    // client receives exactly the bytes up to the cut.
                    self.cut = Some((at, Cut::Stall));
                    self.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
                    self.poll_frame(cx)
                }
                Some((_, Cut::Stall)) => {
                    self.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_secs(3600))));
                    self.poll_frame(cx)
                }
            };
        }
        let n = (limit - self.pos).min(64 << 10);
        let chunk = Bytes::copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

/// A test CA and a server certificate for 127.0.0.1 and localhost signed by it.
pub struct TestPki {
    pub ca_pem: String,
    pub server: rustls::ServerConfig,
}

pub fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ferrox test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    TestPki {
        ca_pem: ca.pem(),
        server,
    }
}

pub use tests::pattern;

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A regular file of `len` bytes of `fill`, as a stand-in target.
pub fn target_file(len: usize, fill: u8) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), vec![fill; len]).unwrap();
    f
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}
