//! The faults a BMC can throw at the client that need no emulator: nothing listening, a
//! server that never answers, and servers answering garbage (not HTTP, not JSON, too large).
//! Each is a tiny loopback TCP server in the test, because the point is a BMC misbehaving in
//! ways no emulator does on purpose.

use std::time::{Duration, Instant};

use controller_redfish::{
    BmcAddress, ConnectOptions, Credentials, ErrorKind, Redfish, RedfishError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn creds() -> Credentials {
    Credentials {
        username: "admin".into(),
        password: "password".into(),
    }
}

fn opts(timeout: Duration) -> ConnectOptions {
    ConnectOptions {
        timeout,
        ..ConnectOptions::default()
    }
}

async fn connect(port: u16, timeout: Duration) -> Result<Redfish, RedfishError> {
    let endpoint = BmcAddress::parse(&format!("redfish+http://127.0.0.1:{port}"))
        .unwrap()
        .into_redfish()
        .unwrap();
    Redfish::connect(&endpoint, creds(), opts(timeout)).await
}

/// Serves every connection with `answer` (after reading the request head), for as long as
/// the guard lives.
struct Garbage {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Garbage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn garbage_server(answer: Vec<u8>) -> Garbage {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut head = Vec::new();
                // Until the end of the request head, or at once for a TLS ClientHello (0x16),
                // as a plain HTTP server answers one (with an error page).
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.first() != Some(&0x16) {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = sock.write_all(&answer).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Garbage { port, task }
}

fn http_ok(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 200 OK\r\nConnection: close\r\n{headers}\r\n").into_bytes();
    out.extend_from_slice(body);
    out
}

#[tokio::test]
async fn closed_port_is_unreachable_within_the_timeout() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let start = Instant::now();
    let err = connect(port, Duration::from_secs(3)).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err:?}");
    let msg = err.one_line();
    assert!(
        msg.starts_with(&format!("cannot reach the BMC at http://127.0.0.1:{port}")),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
}

#[tokio::test]
async fn a_silent_bmc_times_out() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let start = Instant::now();
    let err = connect(port, Duration::from_millis(800)).await.unwrap_err();
    let took = start.elapsed();
    hold.abort();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(matches!(err, RedfishError::Timeout { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unreachable);
    assert_eq!(
        err.to_string(),
        format!("the BMC at http://127.0.0.1:{port} did not answer GET /redfish/v1/ within 800ms")
    );
}

#[tokio::test]
async fn garbage_answers_are_garbage_errors() {
    let huge = vec![b'['; 3 << 20];
    let mut chunked_huge =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..48 {
        chunked_huge.extend_from_slice(format!("{:x}\r\n", 64 << 10).as_bytes());
        chunked_huge.extend_from_slice(&vec![b' '; 64 << 10]);
        chunked_huge.extend_from_slice(b"\r\n");
    }
    chunked_huge.extend_from_slice(b"0\r\n\r\n");
    let mut huge_header = b"HTTP/1.1 200 OK\r\nX-Junk: ".to_vec();
    huge_header.extend_from_slice(&vec![b'a'; 2 << 20]);
    huge_header.extend_from_slice(b"\r\n\r\n{}");

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not HTTP",
            b"SSH-2.0-OpenSSH_9.2\r\n\xff\xfe garbage".to_vec(),
            "returned an invalid HTTP response for GET /redfish/v1/",
        ),
        (
            "HTML instead of JSON",
            http_ok(
                "Content-Type: text/html\r\nContent-Length: 13\r\n",
                b"<html></html>",
            ),
            "returned invalid JSON for GET /redfish/v1/",
        ),
        (
            "truncated JSON",
            http_ok("Content-Length: 9\r\n", b"{\"Id\": \"1"),
            "returned invalid JSON for GET /redfish/v1/",
        ),
        (
            "JSON but not an object",
            http_ok("Content-Length: 7\r\n", b"[1,2,3]"),
            "returned JSON that is not an object for GET /redfish/v1/",
        ),
        (
            "a declared huge body",
            http_ok(&format!("Content-Length: {}\r\n", huge.len()), &huge),
            "returned a body larger than 1048576 bytes for GET /redfish/v1/",
        ),
        (
            "an undeclared huge body",
            chunked_huge,
            "returned a body larger than 1048576 bytes for GET /redfish/v1/",
        ),
        (
            "a huge header",
            huge_header,
            "returned an invalid HTTP response for GET /redfish/v1/",
        ),
    ];
    for (name, answer, want) in cases {
        let server = garbage_server(answer).await;
        let start = Instant::now();
        let err = connect(server.port, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{name}: {:?}",
            start.elapsed()
        );
        assert_eq!(err.kind(), ErrorKind::Garbage, "{name}: {err:?}");
        let msg = err.one_line();
        assert!(
            msg.starts_with(&format!(
                "the BMC at http://127.0.0.1:{} {want}",
                server.port
            )),
            "{name}: {msg}"
        );
        assert!(
            msg.len() < 400,
            "{name}: a garbage answer is not echoed: {msg}"
        );
    }
}

#[tokio::test]
async fn a_root_that_is_not_redfish_fails_at_the_systems_lookup() {
    // Valid JSON that is not a service root: the client falls back to /redfish/v1/Systems,
    // which answers with the same document: a collection without members.
    let server = garbage_server(http_ok("Content-Length: 2\r\n", b"{}")).await;
    let err = connect(server.port, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Garbage, "{err:?}");
    assert!(
        err.to_string()
            .ends_with("returned a collection without Members for GET /redfish/v1/Systems"),
        "{err}"
    );
}

#[tokio::test]
async fn https_to_a_plain_http_port_is_a_tls_failure() {
    let server = garbage_server(http_ok("Content-Length: 2\r\n", b"{}")).await;
    let endpoint = BmcAddress::parse(&format!("redfish://127.0.0.1:{}", server.port))
        .unwrap()
        .into_redfish()
        .unwrap();
    let err = Redfish::connect(&endpoint, creds(), opts(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(matches!(err, RedfishError::Tls { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unreachable);
    assert!(
        err.one_line().starts_with(&format!(
            "TLS with the BMC at https://127.0.0.1:{} failed: ",
            server.port
        )),
        "{}",
        err.one_line()
    );
}
