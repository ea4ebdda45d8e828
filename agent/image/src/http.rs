//! The transport: HTTP and HTTPS GETs (hyper 1 + rustls with the ring provider), redirects,
//! stall timeouts, and the pieces of a resumed transfer (`Range`, `If-Range`, `Content-Range`).
//!
//! Bodies are read frame by frame with a timeout on each frame: a server that goes quiet for
//! the stall timeout is treated like a dropped connection, so the caller resumes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, LOCATION, RANGE};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;
/// Size of hyper's read buffer, hence the largest body frame: bounds the memory queued
/// between the downloader and the other stages.
pub const READ_BUF: usize = 256 << 10;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request or a body failed. The caller says which URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL")]
    InvalidUrl(#[source] http::uri::InvalidUri),
    #[error("unsupported URL scheme {0:?}: only http:// and https:// are fetched")]
    Scheme(String),
    #[error("cannot connect")]
    Connect(#[source] BoxError),
    #[error("TLS handshake failed")]
    Tls(#[source] BoxError),
    #[error("the request failed")]
    Request(#[source] BoxError),
    #[error("no response within {0:?}")]
    ResponseTimeout(Duration),
    #[error("the server answered HTTP {0}")]
    Status(StatusCode),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("a redirect without a usable Location header")]
    BadRedirect,
    #[error("refusing a redirect from https to http ({0})")]
    Downgrade(String),
    #[error("the connection dropped")]
    Body(#[source] hyper::Error),
    #[error("no data for {0:?}")]
    Stalled(Duration),
    #[error("the body ended after {got} of {expected} bytes")]
    ShortBody { got: u64, expected: u64 },
    #[error("the server sent more than the {0} bytes it announced")]
    LongBody(u64),
    #[error("the server ignored the Range request at byte {0} (answered 200 with the whole file); not restarting a partly written image")]
    RangeIgnored(u64),
    #[error("bytes {start}..{end} fetched again with a Range request differ from what the download sent; the server changed the image or is lying")]
    RangeMismatch { start: u64, end: u64 },
    #[error("the server answered a Range request at byte {at} with Content-Range {got:?}")]
    BadContentRange { at: u64, got: String },
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the write pipeline stopped")]
    Cancelled,
}

impl FetchError {
    /// Whether another attempt may succeed (network trouble, server-side errors).
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Connect(_)
            | FetchError::Request(_)
            | FetchError::ResponseTimeout(_)
            | FetchError::Body(_)
            | FetchError::Stalled(_)
            | FetchError::ShortBody { .. } => true,
            FetchError::Status(s) => {
                s.is_server_error()
                    || *s == StatusCode::REQUEST_TIMEOUT
                    || *s == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

/// Finds a rustls error anywhere in the chain, including inside `io::Error`s (whose
/// `source()` skips the wrapped error).
fn has_tls_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if inner.is::<rustls::Error>() || has_tls_error(inner) {
                    return true;
                }
            }
        }
        cur = e.source();
    }
    false
}

fn classify(err: hyper_util::client::legacy::Error) -> FetchError {
    if has_tls_error(&err) {
        FetchError::Tls(Box::new(err))
    } else if err.is_connect() {
        FetchError::Connect(Box::new(err))
    } else {
        FetchError::Request(Box::new(err))
    }
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read the CA bundle {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA bundle {path} holds no PEM certificate")]
    Empty { path: std::path::PathBuf },
    #[error("the CA bundle {path} has an unusable certificate")]
    BadCert {
        path: std::path::PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("building the TLS configuration")]
    Config(#[source] rustls::Error),
}

fn root_store(ca_bundle: Option<&Path>) -> Result<rustls::RootCertStore, TlsConfigError> {
    let Some(path) = ca_bundle else {
        return Ok(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let read_err = |source| TlsConfigError::Read {
        path: path.into(),
        source,
    };
    let pem = std::fs::read(path).map_err(read_err)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    if certs.is_empty() {
        return Err(TlsConfigError::Empty { path: path.into() });
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|source| TlsConfigError::BadCert {
            path: path.into(),
            source,
        })?;
    }
    Ok(roots)
}

/// An HTTP(S) client with the agent's TLS roots and timeouts.
#[derive(Clone)]
pub struct Transport {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// No response headers or body bytes for this long: the connection is dead.
    pub stall_timeout: Duration,
}

impl Transport {
    /// `ca_bundle` replaces the built-in (webpki) roots. Must be called inside a tokio runtime
    /// only when requests are made; building needs none.
    pub fn new(ca_bundle: Option<&Path>, stall_timeout: Duration) -> Result<Self, TlsConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsConfigError::Config)?
            .with_root_certificates(root_store(ca_bundle)?)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(stall_timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .http1_read_buf_exact_size(READ_BUF)
            .build(connector);
        Ok(Self {
            client,
            stall_timeout,
        })
    }

    /// GET `url`, following up to [`MAX_REDIRECTS`] redirects (never https → http). With
    /// `range_from`, asks for the bytes from there on, conditional on `if_range` when given.
    /// Any status is returned; the caller decides.
    pub async fn get(
        &self,
        url: &str,
        range_from: Option<u64>,
        if_range: Option<&str>,
    ) -> Result<Response<Incoming>, FetchError> {
        self.get_with_range(
            url,
            range_from.map(|from| format!("bytes={from}-")),
            if_range,
        )
        .await
    }

    /// GET bytes `start..end` of `url` (a 206 answer is checked by [`check_range`]).
    pub async fn get_range(
        &self,
        url: &str,
        start: u64,
        end: u64,
        if_range: Option<&str>,
    ) -> Result<Response<Incoming>, FetchError> {
        let last = end.saturating_sub(1).max(start);
        self.get_with_range(url, Some(format!("bytes={start}-{last}")), if_range)
            .await
    }

    async fn get_with_range(
        &self,
        url: &str,
        range: Option<String>,
        if_range: Option<&str>,
    ) -> Result<Response<Incoming>, FetchError> {
        let mut uri = parse_url(url)?;
        for _ in 0..=MAX_REDIRECTS {
            let mut req =
                Request::get(uri.clone()).header(http::header::USER_AGENT, "ferrox-agent");
            if let Some(range) = &range {
                req = req.header(RANGE, range.as_str());
                if let Some(v) = if_range {
                    req = req.header(IF_RANGE, v);
                }
            }
            let req = req
                .body(Empty::new())
                .map_err(|e| FetchError::Request(Box::new(e)))?;
            let resp = tokio::time::timeout(self.stall_timeout, self.client.request(req))
                .await
                .map_err(|_| FetchError::ResponseTimeout(self.stall_timeout))?
                .map_err(classify)?;
            if resp.status().is_redirection() && resp.status() != StatusCode::NOT_MODIFIED {
                let loc = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or(FetchError::BadRedirect)?;
                let next = resolve(&uri, loc)?;
                if uri.scheme_str() == Some("https") && next.scheme_str() != Some("https") {
                    return Err(FetchError::Downgrade(next.to_string()));
                }
                tracing::debug!(from = %uri, to = %next, "following redirect");
                uri = next;
                continue;
            }
            return Ok(resp);
        }
        Err(FetchError::TooManyRedirects)
    }

    /// GET a small document (a checksum file): 2xx required, at most `limit` bytes.
    pub async fn get_small(&self, url: &str, limit: usize) -> Result<Vec<u8>, FetchError> {
        let resp = self.get(url, None, None).await?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status()));
        }
        if content_length(resp.headers()).is_some_and(|n| n > limit as u64) {
            return Err(FetchError::TooLarge(limit));
        }
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(data) = next_data(&mut body, self.stall_timeout).await? {
            if out.len() + data.len() > limit {
                return Err(FetchError::TooLarge(limit));
            }
            out.extend_from_slice(&data);
        }
        Ok(out)
    }
}

/// The next data frame of a body (trailers skipped), `None` at the end; fails after
/// `stall` without a frame.
pub async fn next_data(body: &mut Incoming, stall: Duration) -> Result<Option<Bytes>, FetchError> {
    loop {
        match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => return Err(FetchError::Stalled(stall)),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(FetchError::Body(e)),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// Parses an http(s) URL; other schemes are refused.
pub fn parse_url(url: &str) -> Result<Uri, FetchError> {
    if let Some((scheme, _)) = url.split_once("://") {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(FetchError::Scheme(scheme.to_string()));
        }
    }
    let uri: Uri = url.parse().map_err(FetchError::InvalidUrl)?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.authority().is_some() => Ok(uri),
        Some(s) => Err(FetchError::Scheme(s.to_string())),
        None => Err(FetchError::Scheme(String::new())),
    }
}

/// Resolves a `Location` header against the URL that returned it.
fn resolve(base: &Uri, loc: &str) -> Result<Uri, FetchError> {
    if loc.contains("://") {
        return parse_url(loc);
    }
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or("");
    let path = if let Some(rest) = loc.strip_prefix("//") {
        return parse_url(&format!("{scheme}://{rest}"));
    } else if loc.starts_with('/') {
        loc.to_string()
    } else {
        let base_path = base.path();
        let dir = &base_path[..base_path.rfind('/').map(|i| i + 1).unwrap_or(0)];
        format!("{dir}{loc}")
    };
    parse_url(&format!("{scheme}://{authority}{path}")).map_err(|_| FetchError::BadRedirect)
}

/// `Content-Length`, when present and valid.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The validator to send in `If-Range` on a resume: a strong ETag, else Last-Modified.
pub fn validator(headers: &HeaderMap) -> Option<String> {
    let etag = headers.get(ETAG).and_then(|v| v.to_str().ok());
    match etag {
        Some(e) if !e.starts_with("W/") => Some(e.to_string()),
        _ => headers
            .get(LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    }
}

/// A parsed `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
    pub total: Option<u64>,
}

impl ContentRange {
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.trim().strip_prefix("bytes")?.trim_start();
        let (range, total) = rest.split_once('/')?;
        let (start, end) = range.trim().split_once('-')?;
        let start: u64 = start.trim().parse().ok()?;
        let end: u64 = end.trim().parse().ok()?;
        let total = match total.trim() {
            "*" => None,
            t => Some(t.parse::<u64>().ok()?),
        };
        if end < start || total.is_some_and(|t| end >= t) {
            return None;
        }
        Some(Self { start, end, total })
    }
}

/// The Content-Range of a 206 answer to a Range request at `at`. A 200 means the server
/// ignored the range; any other status is an error; a missing or malformed header is bad.
fn partial_content(
    status: StatusCode,
    headers: &HeaderMap,
    at: u64,
) -> Result<ContentRange, FetchError> {
    if status == StatusCode::OK {
        return Err(FetchError::RangeIgnored(at));
    }
    if status != StatusCode::PARTIAL_CONTENT {
        return Err(FetchError::Status(status));
    }
    ContentRange::parse(raw_content_range(headers)).ok_or_else(|| bad_range(headers, at))
}

fn raw_content_range(headers: &HeaderMap) -> &str {
    headers
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn bad_range(headers: &HeaderMap, at: u64) -> FetchError {
    FetchError::BadContentRange {
        at,
        got: raw_content_range(headers).to_string(),
    }
}

/// Checks a resumed response: 206 whose Content-Range starts at `at` and, when both are known,
/// has the total of the first response. Returns the total the range announces.
pub fn check_resume(
    status: StatusCode,
    headers: &HeaderMap,
    at: u64,
    total: Option<u64>,
) -> Result<Option<u64>, FetchError> {
    let range = partial_content(status, headers, at)?;
    let bad = || bad_range(headers, at);
    if range.start != at {
        return Err(bad());
    }
    match (range.total, total) {
        (Some(a), Some(b)) if a != b => Err(bad()),
        (Some(a), _) if range.end + 1 != a => Err(bad()),
        (t, _) => Ok(t.or(total)),
    }
}

/// Checks the answer to [`Transport::get_range`] for `start..end` of an image of `total`
/// bytes: 206 with exactly that Content-Range. A 200 (the whole file) is refused, as is any
/// other range: the caller needs those bytes and no others.
pub fn check_range(
    status: StatusCode,
    headers: &HeaderMap,
    start: u64,
    end: u64,
    total: Option<u64>,
) -> Result<(), FetchError> {
    let r = partial_content(status, headers, start)?;
    let same_total = !matches!((r.total, total), (Some(a), Some(b)) if a != b);
    if r.start == start && r.end + 1 == end && same_total {
        Ok(())
    } else {
        Err(bad_range(headers, start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            ContentRange::parse("bytes 100-199/200"),
            Some(ContentRange {
                start: 100,
                end: 199,
                total: Some(200)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 0-0/*"),
            Some(ContentRange {
                start: 0,
                end: 0,
                total: None
            })
        );
        assert_eq!(ContentRange::parse("bytes 5-4/10"), None);
        assert_eq!(ContentRange::parse("bytes 5-10/10"), None);
        assert_eq!(ContentRange::parse("bytes */10"), None);
        assert_eq!(ContentRange::parse("items 0-1/2"), None);
        assert_eq!(ContentRange::parse(""), None);
    }

    fn headers(cr: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_RANGE, cr.parse().unwrap());
        h
    }

    #[test]
    fn resume_checks() {
        let h = headers("bytes 100-199/200");
        assert_eq!(
            check_resume(StatusCode::PARTIAL_CONTENT, &h, 100, Some(200)).unwrap(),
            Some(200)
        );
        assert!(matches!(
            check_resume(StatusCode::PARTIAL_CONTENT, &h, 50, Some(200)),
            Err(FetchError::BadContentRange { at: 50, .. })
        ));
        assert!(matches!(
            check_resume(StatusCode::PARTIAL_CONTENT, &h, 100, Some(300)),
            Err(FetchError::BadContentRange { .. })
        ));
        // A range ending before the total: the server would send less than we need.
        let h2 = headers("bytes 100-150/200");
        assert!(check_resume(StatusCode::PARTIAL_CONTENT, &h2, 100, Some(200)).is_err());
        assert!(matches!(
            check_resume(StatusCode::OK, &h, 100, Some(200)),
            Err(FetchError::RangeIgnored(100))
        ));
        assert!(matches!(
            check_resume(StatusCode::RANGE_NOT_SATISFIABLE, &h, 100, Some(200)),
            Err(FetchError::Status(StatusCode::RANGE_NOT_SATISFIABLE))
        ));
    }

    #[test]
    fn url_and_redirect_resolution() {
        assert!(matches!(
            parse_url("file:///etc/passwd"),
            Err(FetchError::Scheme(s)) if s == "file"
        ));
        assert!(parse_url("ftp://h/x").is_err());
        assert!(parse_url("/relative").is_err());
        let base: Uri = "http://h:1/a/b/img?x".parse().unwrap();
        assert_eq!(resolve(&base, "c").unwrap().to_string(), "http://h:1/a/b/c");
        assert_eq!(resolve(&base, "/c").unwrap().to_string(), "http://h:1/c");
        assert_eq!(
            resolve(&base, "https://o/c").unwrap().to_string(),
            "https://o/c"
        );
        assert_eq!(resolve(&base, "//o/c").unwrap().to_string(), "http://o/c");
    }

    #[test]
    fn validators() {
        let mut h = HeaderMap::new();
        h.insert(
            LAST_MODIFIED,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(
            validator(&h).as_deref(),
            Some("Wed, 21 Oct 2015 07:28:00 GMT")
        );
        h.insert(ETAG, "W/\"weak\"".parse().unwrap());
        assert_eq!(
            validator(&h).as_deref(),
            Some("Wed, 21 Oct 2015 07:28:00 GMT")
        );
        h.insert(ETAG, "\"strong\"".parse().unwrap());
        assert_eq!(validator(&h).as_deref(), Some("\"strong\""));
    }
}
