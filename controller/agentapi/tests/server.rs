//! The agent API server over real TLS on 127.0.0.1, driven by a plain rustls + hyper client:
//! each fault the security model names is refused the way the protocol says.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent_proto::{
    Action, ApiError, Command, Enroll, Enrolled, Event, Events, Heartbeat, HeartbeatReply, Outcome,
    Renew, PROTOCOL_VERSION,
};
use anyhow::{Context, Result};
use bytes::Bytes;
use controller_agentapi::{AgentApi, Ca, HostId, MemoryBackend, Options};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_util::sync::CancellationToken;

struct Server {
    addr: SocketAddr,
    ca_der: CertificateDer<'static>,
    ca: Ca,
    backend: Arc<MemoryBackend>,
    api: Arc<AgentApi>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(opts: Options) -> Server {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let ca = Ca::generate().unwrap();
    let (cert, key) = ca.to_pem();
    let backend = Arc::new(MemoryBackend::new());
    let api =
        Arc::new(AgentApi::new(Ca::from_pem(&cert, &key).unwrap(), backend.clone(), opts).unwrap());
    backend.attach(api.pokes());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let task = {
        let api = api.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { api.serve(listener, cancel).await })
    };
    Server {
        addr,
        ca_der: ca.cert_der().clone(),
        ca,
        backend,
        api,
        cancel,
        task,
    }
}

impl Server {
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops after cancel")
            .unwrap();
    }
}

/// A client identity: key plus (after enrollment) certificate.
struct Agent {
    key: KeyPair,
    cert: Option<CertificateDer<'static>>,
}

impl Agent {
    fn new() -> Self {
        Self {
            key: KeyPair::generate().unwrap(),
            cert: None,
        }
    }

    fn csr(&self) -> String {
        CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&self.key)
            .unwrap()
            .pem()
            .unwrap()
    }
}

struct Answer {
    status: u16,
    body: Bytes,
}

impl Answer {
    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn code(&self) -> String {
        self.json::<ApiError>().code
    }
}

async fn tls(
    s: &Server,
    agent: Option<&Agent>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(s.ca_der.clone())?;
    let b = rustls::ClientConfig::builder_with_provider(controller_agentapi::ca::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let cfg = match agent.and_then(|a| a.cert.clone().map(|c| (a, c))) {
        Some((a, c)) => b.with_client_auth_cert(
            vec![c],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(a.key.serialize_der())),
        )?,
        None => b.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(s.addr).await?;
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    Ok(conn
        .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
        .await?)
}

async fn post_raw(s: &Server, agent: Option<&Agent>, path: &str, body: Vec<u8>) -> Result<Answer> {
    let stream = tls(s, agent).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = send.send_request(req).await.context("request")?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Answer { status, body })
}

async fn post<T: serde::Serialize>(
    s: &Server,
    agent: Option<&Agent>,
    path: &str,
    body: &T,
) -> Answer {
    post_raw(s, agent, path, serde_json::to_vec(body).unwrap())
        .await
        .unwrap()
}

fn enroll_body(token: &str, csr: String) -> Enroll {
    Enroll {
        protocol: PROTOCOL_VERSION,
        token: token.into(),
        csr_pem: csr,
        boot_mac: "52:54:00:12:34:56".into(),
        address: "192.0.2.7".into(),
        macs: vec!["52:54:00:12:34:56".into()],
        system_uuid: Some("00000000-0000-0000-0000-000000000001".into()),
        system_serial: Some("SER1".into()),
        ready_after_seconds: 2.5,
    }
}

fn host(name: &str) -> HostId {
    HostId::new("metal3", name).unwrap()
}

/// Enrolls a new agent for `h` and returns it with its certificate.
async fn enrolled(s: &Server, h: &HostId) -> Agent {
    let token = s.backend.mint_token(h, Duration::from_secs(60)).unwrap();
    let mut a = Agent::new();
    let ans = post(s, None, "/v1/agent/enroll", &enroll_body(&token, a.csr())).await;
    assert_eq!(ans.status, 200, "{}", String::from_utf8_lossy(&ans.body));
    let e: Enrolled = ans.json();
    assert_eq!(e.host, h.to_string());
    a.cert = Some(CertificateDer::from_pem_slice(e.certificate_pem.as_bytes()).unwrap());
    a
}

fn hb(wait: u32) -> Heartbeat {
    Heartbeat {
        protocol: PROTOCOL_VERSION,
        running: None,
        wait_seconds: wait,
        host: None,
    }
}

fn inspect(id: &str) -> Command {
    Command {
        id: id.into(),
        action: Action::Inspect,
    }
}

#[tokio::test]
async fn enroll_then_heartbeat_and_events_act_for_the_certificate_host() {
    let s = start(Options::default()).await;
    let h = host("worker-0");
    let a = enrolled(&s, &h).await;
    let r = s.backend.record();
    assert_eq!(r.enrollments.len(), 1);
    assert_eq!(r.enrollments[0].0, h);
    assert_eq!(r.enrollments[0].1.system_serial.as_deref(), Some("SER1"));

    // Nothing queued: a short long-poll answers "nothing".
    let ans = post(&s, Some(&a), "/v1/agent/heartbeat", &hb(0)).await;
    assert_eq!(ans.status, 200);
    assert_eq!(ans.json::<HeartbeatReply>().command, None);

    s.backend.push_command(&h, inspect("c1"));
    let ans = post(&s, Some(&a), "/v1/agent/heartbeat", &hb(5)).await;
    assert_eq!(ans.json::<HeartbeatReply>().command, Some(inspect("c1")));

    let done = Events {
        events: vec![Event::Done {
            command: "c1".into(),
            outcome: Outcome::Ok {
                summary: "fine".into(),
                device: None,
            },
        }],
        host: Some(h.to_string()),
    };
    let ans = post(&s, Some(&a), "/v1/agent/events", &done).await;
    assert_eq!(ans.status, 204);
    let r = s.backend.record();
    assert_eq!(r.events_of(&h).len(), 1);
    assert!(r.queues[&h].is_empty());
    s.stop().await;
}

#[tokio::test]
async fn long_poll_is_woken_by_a_new_command_and_bounded_by_max_wait() {
    let s = start(Options {
        max_wait: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let h = host("worker-1");
    let a = enrolled(&s, &h).await;
    // Bounded by the server's max, whatever the agent asks.
    let t = std::time::Instant::now();
    let ans = post(&s, Some(&a), "/v1/agent/heartbeat", &hb(600)).await;
    assert_eq!(ans.json::<HeartbeatReply>().command, None);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // Woken at once when a command is queued while it waits.
    let s = Arc::new(s);
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move {
            let t = std::time::Instant::now();
            let ans = post(&s, Some(&a), "/v1/agent/heartbeat", &hb(30)).await;
            (t.elapsed(), ans.json::<HeartbeatReply>().command)
        })
    };
    // Wait until the heartbeat is parked, then queue.
    for _ in 0..100 {
        if s.api.pokes().waiting() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.api.pokes().waiting(), 1);
    s.backend.push_command(&h, inspect("wake"));
    let (took, cmd) = waiter.await.unwrap();
    assert_eq!(cmd, Some(inspect("wake")));
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(s.api.pokes().waiting(), 0, "the waiter's entry is released");
}

#[tokio::test]
async fn replayed_token_is_refused_and_recorded_for_the_host() {
    let s = start(Options::default()).await;
    let h = host("worker-2");
    let token = s.backend.mint_token(&h, Duration::from_secs(60)).unwrap();
    let a = Agent::new();
    assert_eq!(
        post(&s, None, "/v1/agent/enroll", &enroll_body(&token, a.csr()))
            .await
            .status,
        200
    );
    let b = Agent::new();
    let ans = post(&s, None, "/v1/agent/enroll", &enroll_body(&token, b.csr())).await;
    assert_eq!(ans.status, 403);
    assert_eq!(ans.code(), "token-used");
    let r = s.backend.record();
    assert_eq!(r.refusals.len(), 1);
    assert_eq!(r.refusals[0].host(), Some(&h));
    // An unknown token.
    let ans = post(&s, None, "/v1/agent/enroll", &enroll_body("nope", b.csr())).await;
    assert_eq!((ans.status, ans.code().as_str()), (403, "bad-token"));
    s.stop().await;
}

#[tokio::test]
async fn expired_token_is_refused() {
    let s = start(Options::default()).await;
    let h = host("worker-3");
    s.backend.add_token("tok-expired", &h, Duration::ZERO);
    let a = Agent::new();
    let ans = post(
        &s,
        None,
        "/v1/agent/enroll",
        &enroll_body("tok-expired", a.csr()),
    )
    .await;
    assert_eq!((ans.status, ans.code().as_str()), (403, "token-expired"));
    s.stop().await;
}

#[tokio::test]
async fn a_bad_csr_does_not_spend_the_token() {
    let s = start(Options::default()).await;
    let h = host("worker-4");
    let token = s.backend.mint_token(&h, Duration::from_secs(60)).unwrap();
    let ans = post(
        &s,
        None,
        "/v1/agent/enroll",
        &enroll_body(&token, "not a csr".into()),
    )
    .await;
    assert_eq!((ans.status, ans.code().as_str()), (400, "bad-request"));
    let a = Agent::new();
    let ans = post(&s, None, "/v1/agent/enroll", &enroll_body(&token, a.csr())).await;
    assert_eq!(ans.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn calls_without_a_certificate_get_401() {
    let s = start(Options::default()).await;
    for path in ["/v1/agent/heartbeat", "/v1/agent/events", "/v1/agent/renew"] {
        let ans = post(&s, None, path, &hb(0)).await;
        assert_eq!(
            (ans.status, ans.code().as_str()),
            (401, "no-certificate"),
            "{path}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn a_certificate_for_host_a_cannot_act_for_host_b() {
    let s = start(Options::default()).await;
    let a_host = host("host-a");
    let b_host = host("host-b");
    let a = enrolled(&s, &a_host).await;
    s.backend.push_command(&b_host, inspect("b-cmd"));

    // Claiming B in the body is refused.
    let mut claim = hb(0);
    claim.host = Some(b_host.to_string());
    let ans = post(&s, Some(&a), "/v1/agent/heartbeat", &claim).await;
    assert_eq!((ans.status, ans.code().as_str()), (403, "wrong-host"));
    let ev = Events {
        events: vec![Event::Done {
            command: "b-cmd".into(),
            outcome: Outcome::Ok {
                summary: String::new(),
                device: None,
            },
        }],
        host: Some(b_host.to_string()),
    };
    let ans = post(&s, Some(&a), "/v1/agent/events", &ev).await;
    assert_eq!((ans.status, ans.code().as_str()), (403, "wrong-host"));

    // Without a claim, A acts as A: B's command is neither handed out nor completed.
    let ans = post(&s, Some(&a), "/v1/agent/heartbeat", &hb(0)).await;
    assert_eq!(ans.json::<HeartbeatReply>().command, None);
    let ev = Events { host: None, ..ev };
    assert_eq!(
        post(&s, Some(&a), "/v1/agent/events", &ev).await.status,
        204
    );
    let r = s.backend.record();
    assert_eq!(r.queues[&b_host].len(), 1, "B's command is still pending");
    assert!(r.events_of(&b_host).is_empty());
    assert_eq!(r.events_of(&a_host).len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn expired_or_foreign_client_certificates_fail_the_handshake() {
    let s = start(Options::default()).await;
    let h = host("worker-5");
    let mut a = Agent::new();
    let now = SystemTime::now();
    let expired =
        s.ca.sign_csr(
            Ca::parse_csr(&a.csr()).unwrap(),
            &h,
            now - Duration::from_secs(7200),
            now - Duration::from_secs(60),
        )
        .unwrap();
    a.cert = Some(expired.der);
    let e = post_raw(&s, Some(&a), "/v1/agent/heartbeat", b"{}".to_vec())
        .await
        .err()
        .expect("an expired certificate is refused");
    assert!(format!("{e:#}").contains("CertificateExpired"), "{e:#}");

    let other = Ca::generate().unwrap();
    let foreign = other
        .sign_client(&a.csr(), &h, Duration::from_secs(3600))
        .unwrap();
    a.cert = Some(foreign.der);
    let e = post_raw(&s, Some(&a), "/v1/agent/heartbeat", b"{}".to_vec())
        .await
        .err()
        .expect("a certificate from another CA is refused");
    assert!(format!("{e:#}").to_lowercase().contains("alert"), "{e:#}");
    assert!(s.backend.record().events.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn garbage_and_oversized_bodies_are_refused() {
    let s = start(Options {
        max_body_bytes: 64 * 1024,
        ..Options::default()
    })
    .await;
    let h = host("worker-6");
    let a = enrolled(&s, &h).await;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "/v1/agent/enroll",
            b"\x00\xff garbage".to_vec(),
            400,
            "bad-request",
        ),
        (
            "/v1/agent/enroll",
            b"{\"protocol\":2}".to_vec(),
            400,
            "bad-request",
        ),
        (
            "/v1/agent/heartbeat",
            b"[1,2,3]".to_vec(),
            400,
            "bad-request",
        ),
        (
            "/v1/agent/events",
            b"{\"events\":[{\"kind\":\"explode\"}]}".to_vec(),
            400,
            "bad-request",
        ),
        (
            "/v1/agent/heartbeat",
            b"{\"protocol\":1,\"waitSeconds\":0}".to_vec(),
            400,
            "protocol",
        ),
        (
            "/v1/agent/events",
            vec![b' '; 64 * 1024 + 1],
            413,
            "too-large",
        ),
        ("/v1/agent/enroll", vec![b'{'; 1 << 20], 413, "too-large"),
        ("/v1/agent/nothing", b"{}".to_vec(), 404, "not-found"),
    ];
    for (path, body, status, code) in cases {
        let ans = post_raw(&s, Some(&a), path, body).await.unwrap();
        assert_eq!((ans.status, ans.code().as_str()), (status, code), "{path}");
    }
    // Too many events in one call.
    let many = Events {
        events: (0..1001)
            .map(|i| Event::Log {
                level: "info".into(),
                message: format!("{i}"),
            })
            .collect(),
        host: None,
    };
    let ans = post(&s, Some(&a), "/v1/agent/events", &many).await;
    assert_eq!((ans.status, ans.code().as_str()), (413, "too-large"));
    assert!(s.backend.record().events.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn renew_issues_a_new_certificate_for_the_same_host() {
    let s = start(Options::default()).await;
    let h = host("worker-7");
    let a = enrolled(&s, &h).await;
    let mut b = Agent::new();
    let ans = post(
        &s,
        Some(&a),
        "/v1/agent/renew",
        &Renew {
            protocol: PROTOCOL_VERSION,
            csr_pem: b.csr(),
        },
    )
    .await;
    assert_eq!(ans.status, 200);
    let e: Enrolled = ans.json();
    assert_eq!(e.host, h.to_string());
    b.cert = Some(CertificateDer::from_pem_slice(e.certificate_pem.as_bytes()).unwrap());
    s.backend.push_command(&h, inspect("after-renew"));
    let ans = post(&s, Some(&b), "/v1/agent/heartbeat", &hb(1)).await;
    assert_eq!(
        ans.json::<HeartbeatReply>().command,
        Some(inspect("after-renew"))
    );
    s.stop().await;
}

#[tokio::test]
async fn stops_promptly_with_a_long_poll_pending() {
    let s = start(Options::default()).await;
    let h = host("worker-8");
    let a = enrolled(&s, &h).await;
    let s = Arc::new(s);
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move { post(&s, Some(&a), "/v1/agent/heartbeat", &hb(60)).await })
    };
    for _ in 0..100 {
        if s.api.pokes().waiting() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.cancel.cancel();
    let ans = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the pending heartbeat is answered at shutdown")
        .unwrap();
    assert_eq!(ans.json::<HeartbeatReply>().command, None);
}
