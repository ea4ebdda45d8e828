//! ferrox-netboot following a controller's host list: a fake feed on loopback speaking what
//! ferrox-controller's `GET /v1/netboot/hosts?after=REV` speaks (controller/src/feed.rs: a long
//! poll behind a bearer token; the records as `Reconciler::netboot_hosts` builds them), the
//! real `follow` and the real HTTP server, asked for iPXE scripts over loopback. No root.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrox_netboot::config::Config;
use ferrox_netboot::controller::{follow, ControllerHosts, Layered};
use ferrox_netboot::hosts::StaticHosts;
use ferrox_netboot::{serve, tftp, Netboot, Sockets};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const BEARER: &str = "feed-secret";
const MAC_A: &str = "52:54:00:aa:00:01";
const MAC_B: &str = "52:54:00:aa:00:02";
/// How long the fake holds a poll whose revision is current (the controller: 25 s).
const HOLD: Duration = Duration::from_secs(5);

/// A host record as the controller's `netboot_hosts` writes it.
fn record(mac: &str, name: &str, token: &str) -> serde_json::Value {
    json!({
        "mac": mac,
        "hostname": name,
        "netboot": true,
        "boot": {
            "controller_url": "https://10.0.0.1:9443",
            "ca_fingerprint": "sha256:ab12",
            "token": token,
        },
    })
}

/// The fake controller feed.
struct Feed {
    revision: watch::Sender<u64>,
    hosts: Mutex<Vec<serde_json::Value>>,
    /// Answer this many of the next requests with 503.
    fail: AtomicU32,
    /// (path and query, Authorization, status) of every request.
    seen: Mutex<Vec<(String, String, u16)>>,
}

impl Feed {
    fn publish(&self, revision: u64, hosts: Vec<serde_json::Value>) {
        *self.hosts.lock().unwrap() = hosts;
        self.revision.send_replace(revision);
    }

    fn seen(&self) -> Vec<(String, String, u16)> {
        self.seen.lock().unwrap().clone()
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> (StatusCode, String) {
        let auth = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if auth != format!("Bearer {BEARER}") {
            return (
                StatusCode::UNAUTHORIZED,
                json!({"error": "bearer token required"}).to_string(),
            );
        }
        if req.uri().path() != "/v1/netboot/hosts" {
            return (
                StatusCode::NOT_FOUND,
                json!({"error": "not found"}).to_string(),
            );
        }
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "state unavailable"}).to_string(),
            );
        }
        let after: Option<u64> = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("after=")))
            .and_then(|v| v.parse().ok());
        let mut rx = self.revision.subscribe();
        if let Some(after) = after {
            let _ = tokio::time::timeout(HOLD, rx.wait_for(|r| *r != after)).await;
        }
        let revision = *rx.borrow();
        let hosts = self.hosts.lock().unwrap().clone();
        (
            StatusCode::OK,
            json!({"revision": revision, "hosts": hosts}).to_string(),
        )
    }
}

async fn run_feed(listener: TcpListener, feed: Arc<Feed>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let feed = feed.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let feed = feed.clone();
                async move {
                    let what = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    let auth = req
                        .headers()
                        .get(hyper::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let (status, body) = feed.answer(req).await;
                    feed.seen
                        .lock()
                        .unwrap()
                        .push((what, auth, status.as_u16()));
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = status;
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Log lines, captured.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The fake feed, `follow` and the HTTP server, all on loopback in this (current-thread)
/// runtime, logging into `Logs`.
struct Rig {
    feed: Arc<Feed>,
    http: SocketAddr,
    logs: Logs,
    cancel: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
    _log_guard: tracing::subscriber::DefaultGuard,
}

impl Rig {
    async fn start(file: StaticHosts, revision: u64, hosts: Vec<serde_json::Value>) -> Rig {
        let logs = Logs::default();
        let w = logs.clone();
        let guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || w.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::DEBUG)
                .finish(),
        );
        let (tx, _) = watch::channel(revision);
        let feed = Arc::new(Feed {
            revision: tx,
            hosts: Mutex::new(hosts),
            fail: AtomicU32::new(0),
            seen: Mutex::default(),
        });
        let mut tasks = tokio::task::JoinSet::new();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        tasks.spawn(run_feed(l, feed.clone()));

        let layered = Arc::new(Layered {
            file: Arc::new(file),
            controller: Arc::new(ControllerHosts::default()),
        });
        let cancel = CancellationToken::new();
        tasks.spawn(follow(
            layered.clone(),
            base,
            Some(BEARER.to_string()),
            cancel.clone(),
        ));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = l.local_addr().unwrap();
        let ctx = Arc::new(Netboot::new(
            Config::default(),
            layered,
            [],
            tftp::Files::default(),
            None,
            None,
        ));
        let sockets = Sockets {
            http: Some(l),
            ..Sockets::default()
        };
        let c = cancel.clone();
        tasks.spawn(async move {
            serve(ctx, sockets, c).await.unwrap();
        });
        Rig {
            feed,
            http,
            logs,
            cancel,
            tasks,
            _log_guard: guard,
        }
    }

    /// GET /ipxe/<mac>.ipxe: (status, body).
    async fn script(&self, mac: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(self.http).await.unwrap();
        let req = format!(
            "GET /ipxe/{}.ipxe HTTP/1.1\r\nHost: netboot\r\nConnection: close\r\n\r\n",
            mac.replace(':', "-")
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        let status = resp
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = resp.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
        (status, body)
    }

    /// Asks for `mac`'s script until `ok` holds (at most 5 s); returns the last answer and
    /// how long it took.
    async fn until(&self, mac: &str, ok: impl Fn(u16, &str) -> bool) -> (u16, String, Duration) {
        let start = Instant::now();
        loop {
            let (code, body) = self.script(mac).await;
            if ok(code, &body) || start.elapsed() > Duration::from_secs(5) {
                return (code, body, start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(mut self) {
        self.cancel.cancel();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

#[tokio::test]
async fn a_host_gets_its_token_from_the_feed_and_loses_it_with_the_next_revision() {
    let rig = Rig::start(
        StaticHosts::default(),
        1,
        vec![record(MAC_A, "worker-0", "tok-rev1")],
    )
    .await;
    let has = |t: &'static str| move |code: u16, body: &str| code == 200 && body.contains(t);
    let (code, body, _) = rig.until(MAC_A, has("ferrox.token=tok-rev1")).await;
    assert_eq!(code, 200, "{body}\n{}", rig.logs.text());
    assert!(
        body.contains(
            "ferrox.controller=https://10.0.0.1:9443 ferrox.ca=sha256:ab12 ferrox.token=tok-rev1"
        ),
        "{body}"
    );

    // Revision 2 drops the host: with --unknown ignore (the default) it is unknown again.
    // The poll that was waiting is answered at once: well within the feed's hold.
    rig.feed.publish(2, vec![]);
    let (code, body, took) = rig.until(MAC_A, |code, _| code == 404).await;
    assert_eq!(code, 404, "{body}");
    assert!(
        took < HOLD / 2,
        "the long poll delivered revision 2 in {took:?}"
    );

    // Two failed polls: retried with backoff, one warning for the same error, then back.
    rig.feed.fail.store(2, Ordering::SeqCst);
    rig.feed
        .publish(3, vec![record(MAC_A, "worker-0", "tok-rev3")]);
    let (code, body, _) = rig.until(MAC_A, has("ferrox.token=tok-rev3")).await;
    assert_eq!(code, 200, "{body}");
    rig.feed
        .publish(4, vec![record(MAC_A, "worker-0", "tok-rev4")]);
    let (code, body, _) = rig.until(MAC_A, has("ferrox.token=tok-rev4")).await;
    assert_eq!(code, 200, "{body}\n{}", rig.logs.text());

    let seen = rig.feed.seen();
    assert!(
        seen.iter()
            .all(|(_, auth, _)| *auth == format!("Bearer {BEARER}")),
        "{seen:?}"
    );
    let polls: Vec<(&str, u16)> = seen.iter().map(|(p, _, s)| (p.as_str(), *s)).collect();
    assert_eq!(
        &polls[..6],
        [
            ("/v1/netboot/hosts?after=0", 200),
            ("/v1/netboot/hosts?after=1", 200),
            ("/v1/netboot/hosts?after=2", 200),
            ("/v1/netboot/hosts?after=3", 503),
            ("/v1/netboot/hosts?after=3", 503),
            ("/v1/netboot/hosts?after=3", 200),
        ],
        "{seen:?}"
    );
    let logs = rig.logs.text();
    assert_eq!(logs.matches("answered 503").count(), 1, "{logs}");
    assert_eq!(
        logs.matches("controller reachable again").count(),
        1,
        "{logs}"
    );
    rig.stop().await;
}

#[tokio::test]
async fn a_hosts_file_record_hides_the_controllers_and_is_warned_about_once() {
    let file = StaticHosts::parse(&format!(
        "hosts:\n  - mac: \"{MAC_A}\"\n    boot: {{ token: file-tok }}\n"
    ))
    .unwrap();
    let rig = Rig::start(
        file,
        1,
        vec![
            record(MAC_A, "worker-0", "ctl-a1"),
            record(MAC_B, "worker-1", "ctl-b1"),
        ],
    )
    .await;
    let has = |t: &'static str| move |code: u16, body: &str| code == 200 && body.contains(t);
    let (_, body, _) = rig.until(MAC_B, has("ferrox.token=ctl-b1")).await;
    assert!(body.contains("ferrox.token=ctl-b1"), "{body}");
    let (_, body, _) = rig.until(MAC_A, has("ferrox.token=file-tok")).await;
    assert!(
        body.contains("ferrox.token=file-tok"),
        "the file's record wins: {body}"
    );

    // A new revision with the same hosts: no second warning.
    rig.feed.publish(
        2,
        vec![
            record(MAC_A, "worker-0", "ctl-a2"),
            record(MAC_B, "worker-1", "ctl-b2"),
        ],
    );
    rig.until(MAC_B, has("ferrox.token=ctl-b2")).await;
    let logs = rig.logs.text();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("the hosts file lists this MAC too"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(
        warnings[0].contains("WARN") && warnings[0].contains(&format!("mac={MAC_A}")),
        "{logs}"
    );
    rig.stop().await;
}
