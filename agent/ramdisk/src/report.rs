//! Sending JSON to the controller: a minimal HTTP/1.1 POST over a TCP connection, bounded in
//! time and in what it reads back. Only `http://` for now: `https://` with the CA pinned by
//! fingerprint comes with the controller's agent API (mTLS enrollment).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why a POST failed.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// The URL is not one we can use.
    #[error("controller URL {url}: {why}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        why: &'static str,
    },
    /// Connecting or talking failed.
    #[error("posting to {url}")]
    Io {
        /// The URL.
        url: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The controller answered with an error status.
    #[error("posting to {url}: the controller answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// Status line.
        status: String,
    },
}

/// POSTs `body` as JSON to `url` (`http://host[:port]/path`); Ok on a 2xx answer.
pub fn post_json(url: &str, body: &[u8]) -> Result<(), PostError> {
    let bad = |why| PostError::Url {
        url: url.to_string(),
        why,
    };
    if url.starts_with("https://") {
        return Err(bad(
            "https:// needs the mTLS agent API, which the controller does not offer yet",
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("not http://"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    if authority.is_empty() || !authority.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("no host"));
    }
    let hostport = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let io = |source| PostError::Io {
        url: url.to_string(),
        source,
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| bad("host does not resolve"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    s.set_write_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: ferrox-agent/{}\r\n\r\n",
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    s.write_all(head.as_bytes()).map_err(io)?;
    s.write_all(body).map_err(io)?;
    let mut answer = Vec::new();
    s.take(16 * 1024).read_to_end(&mut answer).map_err(io)?;
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code.len() == 3 && code.starts_with('2') {
        Ok(())
    } else {
        Err(PostError::Status {
            url: url.to_string(),
            status: if status_line.is_empty() {
                "nothing".into()
            } else {
                status_line
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(answer: &'static str) -> (String, std::thread::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/agent/hello", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(b"}") {
                    break;
                }
            }
            c.write_all(answer.as_bytes()).unwrap();
            got
        });
        (url, h)
    }

    #[test]
    fn posts_json_and_accepts_2xx() {
        let (url, h) = serve_once("HTTP/1.1 204 No Content\r\n\r\n");
        post_json(&url, b"{\"a\":1}").unwrap();
        let req = String::from_utf8(h.join().unwrap()).unwrap();
        assert!(
            req.starts_with("POST /v1/agent/hello HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(req.contains("Content-Length: 7\r\n"));
        assert!(req.ends_with("\r\n\r\n{\"a\":1}"));
    }

    #[test]
    fn error_status_is_reported_with_the_url() {
        let (url, h) = serve_once("HTTP/1.1 403 Forbidden\r\n\r\n");
        let e = post_json(&url, b"{}").unwrap_err().to_string();
        h.join().unwrap();
        assert!(e.contains("403 Forbidden") && e.contains(&url), "{e}");
    }

    #[test]
    fn unusable_urls_are_refused_before_connecting() {
        for u in ["https://10.0.0.1/x", "ftp://x/", "http:///x", "http://a b/"] {
            assert!(
                matches!(post_json(u, b"{}"), Err(PostError::Url { .. })),
                "{u}"
            );
        }
    }
}
