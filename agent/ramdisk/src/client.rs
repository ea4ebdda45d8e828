//! The agent's side of the agent API: HTTPS to the controller, trusting exactly one CA — the
//! one whose certificate's SHA-256 is `ferrox.ca=` — and no public roots. Enrollment spends
//! the one-time boot token for a short-lived client certificate (the key never leaves this
//! process); every later call presents it. One TCP+TLS connection per call: calls are rare
//! (a heartbeat a minute, progress once a second at most), and a fresh connection never
//! inherits a half-dead one's state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_proto::{
    ApiError, Enroll, Enrolled, Event, Events, Heartbeat, HeartbeatReply, Renew, PROTOCOL_VERSION,
};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Largest answer read from the controller.
pub const MAX_ANSWER: usize = 4 << 20;
/// Time to connect and finish the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a call's answer beyond what the call itself asks the controller to wait.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call to the controller failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("controller URL {url}: {why}")]
    Url { url: String, why: &'static str },
    #[error("ferrox.ca={0:?} is not sha256:<64 hex digits>")]
    Pin(String),
    #[error("the controller at {url} presented a CA with fingerprint sha256:{presented}, but ferrox.ca= pins sha256:{expected}: refusing to talk to it")]
    CaMismatch {
        url: String,
        expected: String,
        presented: String,
    },
    #[error("connecting to {url}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with {url}")]
    Tls {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP with {url}")]
    Http {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{url} did not answer within {seconds} s")]
    Timeout { url: String, seconds: u64 },
    #[error("{url} refused the call: {status} {code}: {message}")]
    Refused {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{url} answered {status} with a body that is not the expected JSON")]
    BadAnswer {
        url: String,
        status: u16,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url}: the answer is larger than {MAX_ANSWER} bytes or broke off")]
    Answer { url: String },
    #[error("generating the agent's key or certificate request")]
    Key(#[source] rcgen::Error),
    #[error("the certificate from the controller cannot be used")]
    Certificate(#[source] rustls::Error),
    #[error("not enrolled yet")]
    NotEnrolled,
}

impl ClientError {
    /// Worth retrying the same call (network trouble, controller overloaded or restarting);
    /// false for refusals and a CA that is not the pinned one.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Tls { .. }
            | ClientError::Http { .. }
            | ClientError::Timeout { .. }
            | ClientError::Answer { .. } => true,
            ClientError::Refused { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            _ => false,
        }
    }

    /// The API error code of a refusal (`token-used`, `no-certificate`...).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Trusts exactly the CA whose DER hashes to the pin: the server's chain must end in it, and
/// it must sign the server's certificate (which must name the host we dialled).
#[derive(Debug)]
struct PinnedCa {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
    /// The fingerprint of the last CA refused, so the error can say what was presented.
    refused: Mutex<Option<String>>,
}

impl PinnedCa {
    fn refuse(&self, what: String) -> rustls::Error {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(what);
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((ca, rest)) = intermediates.split_last() else {
            return Err(self.refuse("(no CA certificate in the chain)".into()));
        };
        let fp: [u8; 32] = Sha256::digest(ca.as_ref()).into();
        if fp != self.pin {
            return Err(self.refuse(hex(&fp)));
        }
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        webpki.verify_server_cert(end_entity, rest, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What the agent tells the controller about itself when it enrolls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    pub boot_mac: String,
    pub address: String,
    pub macs: Vec<String>,
    pub system_uuid: Option<String>,
    pub system_serial: Option<String>,
    pub ready_after_seconds: f64,
}

struct Session {
    enrolled: Enrolled,
    issued_at: u64,
    tls: Arc<ClientConfig>,
}

/// A client of one controller's agent API. Cheap to share (`Arc`); calls may overlap.
pub struct Client {
    base: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    provider: Arc<CryptoProvider>,
    pin: Arc<PinnedCa>,
    anonymous: Arc<ClientConfig>,
    session: Mutex<Option<Arc<Session>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh P-256 key and a CSR for it, PEM.
fn key_and_csr() -> Result<(rcgen::KeyPair, String), ClientError> {
    let key = rcgen::KeyPair::generate().map_err(ClientError::Key)?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(ClientError::Key)?
        .serialize_request(&key)
        .map_err(ClientError::Key)?
        .pem()
        .map_err(ClientError::Key)?;
    Ok((key, csr))
}

impl Client {
    /// A client for `controller` (`https://host[:port]`, as `ferrox.controller=` gives it)
    /// pinning `ca_sha256` (64 hex digits, optionally prefixed `sha256:`).
    pub fn new(controller: &str, ca_sha256: &str) -> Result<Self, ClientError> {
        let url_err = |why| ClientError::Url {
            url: controller.to_string(),
            why,
        };
        let authority = controller
            .strip_prefix("https://")
            .ok_or_else(|| url_err("the agent API needs https://"))?
            .trim_end_matches('/');
        let base = format!("https://{authority}");
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(url_err("expected https://host[:port]"));
        }
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| url_err("unclosed [ in an IPv6 address"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| url_err("bad port"))?,
                None if after.is_empty() => 443,
                None => return Err(url_err("expected https://host[:port]")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| url_err("bad port"))?),
                None => (authority.to_string(), 443),
            }
        };
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| url_err("the host is not a DNS name or IP address"))?;
        let hexpin = ca_sha256.strip_prefix("sha256:").unwrap_or(ca_sha256);
        if hexpin.len() != 64 || !hexpin.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ClientError::Pin(ca_sha256.chars().take(80).collect()));
        }
        let mut pin = [0u8; 32];
        for (i, b) in pin.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hexpin[2 * i..2 * i + 2], 16)
                .map_err(|_| ClientError::Pin(ca_sha256.into()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pin = Arc::new(PinnedCa {
            pin,
            provider: provider.clone(),
            refused: Mutex::new(None),
        });
        let anonymous = Arc::new(Self::config(&provider, &pin, None)?);
        Ok(Self {
            base,
            host,
            port,
            server_name,
            provider,
            pin,
            anonymous,
            session: Mutex::new(None),
        })
    }

    fn config(
        provider: &Arc<CryptoProvider>,
        pin: &Arc<PinnedCa>,
        client: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    ) -> Result<ClientConfig, ClientError> {
        let b = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(ClientError::Certificate)?
            .dangerous()
            .with_custom_certificate_verifier(pin.clone());
        let mut cfg = match client {
            Some((cert, key)) => b
                .with_client_auth_cert(vec![cert], key)
                .map_err(ClientError::Certificate)?,
            None => b.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }

    /// The controller's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The host this agent enrolled as (`namespace/name`), once enrolled.
    pub fn host(&self) -> Option<String> {
        self.session().map(|s| s.enrolled.host.clone())
    }

    fn session(&self) -> Option<Arc<Session>> {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn install(&self, enrolled: Enrolled, key: &rcgen::KeyPair) -> Result<Enrolled, ClientError> {
        let cert =
            CertificateDer::from_pem_slice(enrolled.certificate_pem.as_bytes()).map_err(|_| {
                ClientError::Certificate(rustls::Error::General("no certificate in the PEM".into()))
            })?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let tls = Arc::new(Self::config(&self.provider, &self.pin, Some((cert, key)))?);
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Session {
            enrolled: enrolled.clone(),
            issued_at: now_unix(),
            tls,
        }));
        Ok(enrolled)
    }

    /// Spends the boot token for a client certificate. A refusal (`token-used`,
    /// `token-expired`, `bad-token`) is final: the token works once.
    pub async fn enroll(&self, token: &str, id: &Identity) -> Result<Enrolled, ClientError> {
        let (key, csr_pem) = key_and_csr()?;
        let body = Enroll {
            protocol: PROTOCOL_VERSION,
            token: token.to_string(),
            csr_pem,
            boot_mac: id.boot_mac.clone(),
            address: id.address.clone(),
            macs: id.macs.clone(),
            system_uuid: id.system_uuid.clone(),
            system_serial: id.system_serial.clone(),
            ready_after_seconds: id.ready_after_seconds,
        };
        let enrolled: Enrolled = self
            .call(
                &self.anonymous.clone(),
                "/v1/agent/enroll",
                &body,
                Duration::ZERO,
            )
            .await?
            .ok_or_else(|| self.empty_answer("/v1/agent/enroll"))?;
        self.install(enrolled, &key)
    }

    /// Whether the certificate has used up two thirds of its life.
    pub fn needs_renewal(&self) -> bool {
        self.session().is_some_and(|s| {
            let life = s.enrolled.not_after_unix.saturating_sub(s.issued_at);
            now_unix() >= s.issued_at + life * 2 / 3
        })
    }

    /// A new key and certificate for the same host, before the current one expires.
    pub async fn renew(&self) -> Result<Enrolled, ClientError> {
        let s = self.session().ok_or(ClientError::NotEnrolled)?;
        let (key, csr_pem) = key_and_csr()?;
        let body = Renew {
            protocol: PROTOCOL_VERSION,
            csr_pem,
        };
        let enrolled: Enrolled = self
            .call(&s.tls, "/v1/agent/renew", &body, Duration::ZERO)
            .await?
            .ok_or_else(|| self.empty_answer("/v1/agent/renew"))?;
        self.install(enrolled, &key)
    }

    /// Long-polls for the next command, waiting up to `wait_seconds` at the controller.
    pub async fn heartbeat(
        &self,
        running: Option<String>,
        wait_seconds: u32,
    ) -> Result<HeartbeatReply, ClientError> {
        let s = self.session().ok_or(ClientError::NotEnrolled)?;
        let body = Heartbeat {
            protocol: PROTOCOL_VERSION,
            running,
            wait_seconds,
            host: Some(s.enrolled.host.clone()),
        };
        self.call(
            &s.tls,
            "/v1/agent/heartbeat",
            &body,
            Duration::from_secs(wait_seconds.into()),
        )
        .await?
        .ok_or_else(|| self.empty_answer("/v1/agent/heartbeat"))
    }

    /// Reports events, oldest first.
    pub async fn events(&self, events: Vec<Event>) -> Result<(), ClientError> {
        let s = self.session().ok_or(ClientError::NotEnrolled)?;
        let body = Events {
            events,
            host: Some(s.enrolled.host.clone()),
        };
        self.call::<_, serde_json::Value>(&s.tls, "/v1/agent/events", &body, Duration::ZERO)
            .await
            .map(drop)
    }

    fn empty_answer(&self, path: &str) -> ClientError {
        ClientError::Answer {
            url: format!("{}{path}", self.base),
        }
    }

    /// POSTs `body`; `Ok(None)` for `204 No Content`.
    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        tls: &Arc<ClientConfig>,
        path: &str,
        body: &B,
        extra_wait: Duration,
    ) -> Result<Option<R>, ClientError> {
        let url = format!("{}{path}", self.base);
        let body = serde_json::to_vec(body).map_err(|source| ClientError::BadAnswer {
            url: url.clone(),
            status: 0,
            source,
        })?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, self.connect(tls, &url))
            .await
            .map_err(|_| ClientError::Timeout {
                url: url.clone(),
                seconds: CONNECT_TIMEOUT.as_secs(),
            })??;
        let limit = ANSWER_TIMEOUT + extra_wait;
        let exchange = async {
            let http = |source| ClientError::Http {
                url: url.clone(),
                source,
            };
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(http)?;
            let driver = tokio::spawn(conn);
            let authority = if self.host.contains(':') {
                format!("[{}]:{}", self.host, self.port)
            } else {
                format!("{}:{}", self.host, self.port)
            };
            let req = http::Request::post(path)
                .header(http::header::HOST, authority)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(
                    http::header::USER_AGENT,
                    concat!("ferrox-agent/", env!("CARGO_PKG_VERSION")),
                )
                .body(Full::new(Bytes::from(body)))
                .map_err(|_| ClientError::Url {
                    url: url.clone(),
                    why: "cannot build a request for it",
                })?;
            let resp = send.send_request(req).await.map_err(http)?;
            let status = resp.status().as_u16();
            let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|_| ClientError::Answer { url: url.clone() })?
                .to_bytes();
            driver.abort();
            Ok::<_, ClientError>((status, bytes))
        };
        let (status, bytes) =
            tokio::time::timeout(limit, exchange)
                .await
                .map_err(|_| ClientError::Timeout {
                    url: url.clone(),
                    seconds: limit.as_secs(),
                })??;
        if (200..300).contains(&status) {
            if status == 204 || bytes.is_empty() {
                return Ok(None);
            }
            return serde_json::from_slice(&bytes).map(Some).map_err(|source| {
                ClientError::BadAnswer {
                    url,
                    status,
                    source,
                }
            });
        }
        let (code, message) = match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(e) => (e.code, e.message),
            Err(_) => (
                "unknown".into(),
                String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            ),
        };
        Err(ClientError::Refused {
            url,
            status,
            code,
            message,
        })
    }

    async fn connect(
        &self,
        tls: &Arc<ClientConfig>,
        url: &str,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ClientError> {
        let connect = |source| ClientError::Connect {
            url: url.to_string(),
            source,
        };
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(connect)?;
        let _ = tcp.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(tls.clone());
        match connector.connect(self.server_name.clone(), tcp).await {
            Ok(s) => Ok(s),
            Err(source) => {
                let refused = self
                    .pin
                    .refused
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                Err(match refused {
                    Some(presented) => ClientError::CaMismatch {
                        url: url.to_string(),
                        expected: hex(&self.pin.pin),
                        presented,
                    },
                    None => ClientError::Tls {
                        url: url.to_string(),
                        source,
                    },
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    #[test]
    fn controller_urls() {
        let ok: &[(&str, &str, u16)] = &[
            ("https://10.0.0.1:8443", "10.0.0.1", 8443),
            ("https://10.0.0.1", "10.0.0.1", 443),
            ("https://ctl.example/", "ctl.example", 443),
            ("https://[fd00::1]:8443", "fd00::1", 8443),
            ("https://[fd00::1]", "fd00::1", 443),
        ];
        for (url, host, port) in ok {
            let c = Client::new(url, PIN).unwrap();
            assert_eq!((c.host.as_str(), c.port), (*host, *port), "{url}");
        }
        let bad: &[(&str, &str)] = &[
            ("http://10.0.0.1", "https://"),
            ("https://", "host[:port]"),
            ("https://10.0.0.1/x", "host[:port]"),
            ("https://user@10.0.0.1", "host[:port]"),
            ("https://10.0.0.1:99999", "port"),
            ("https://[fd00::1", "unclosed"),
            ("https://a b", "DNS name"),
        ];
        for (url, why) in bad {
            let e = Client::new(url, PIN).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn pins() {
        assert!(Client::new("https://x", &PIN[7..]).is_ok());
        for p in [
            "sha256:abc",
            "md5:00",
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(
                matches!(Client::new("https://x", p), Err(ClientError::Pin(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn transient_errors_are_the_network_and_5xx() {
        let refused = |status| ClientError::Refused {
            url: "u".into(),
            status,
            code: "c".into(),
            message: "m".into(),
        };
        assert!(refused(503).is_transient());
        assert!(refused(429).is_transient());
        assert!(!refused(403).is_transient());
        assert!(!refused(401).is_transient());
        assert!(ClientError::Timeout {
            url: "u".into(),
            seconds: 1
        }
        .is_transient());
        assert!(!ClientError::CaMismatch {
            url: "u".into(),
            expected: "a".into(),
            presented: "b".into()
        }
        .is_transient());
        assert!(!ClientError::NotEnrolled.is_transient());
    }
}
