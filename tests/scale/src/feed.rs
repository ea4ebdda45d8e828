//! The netboot decision for the simulated machines: the controller's netboot feed, followed with
//! the same long poll ferrox-netboot makes (`GET /v1/netboot/hosts?after=REV`, bearer token),
//! kept as a table from MAC to what that host's iPXE script would put on the kernel command line.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// What the ramdisk gets on its kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// `ferrox.controller=`.
    pub controller_url: String,
    /// `ferrox.ca=`.
    pub ca_fingerprint: String,
    /// `ferrox.token=`.
    pub token: String,
}

/// MAC → boot parameters, as of the last feed answer.
#[derive(Debug, Default)]
pub struct Table {
    by_mac: RwLock<HashMap<String, Boot>>,
    /// Feed answers received, and their total size.
    pub answers: AtomicU64,
    pub bytes: AtomicU64,
}

impl Table {
    /// The boot parameters netboot would serve `mac` now.
    pub fn lookup(&self, mac: &str) -> Option<Boot> {
        self.by_mac
            .read()
            .unwrap()
            .get(&mac.to_ascii_lowercase())
            .cloned()
    }

    fn replace(&self, doc: &Value) -> Result<u64> {
        let rev = doc
            .get("revision")
            .and_then(Value::as_u64)
            .context("no revision")?;
        let mut map = HashMap::new();
        for h in doc
            .get("hosts")
            .and_then(Value::as_array)
            .context("no hosts")?
        {
            let s = |v: Option<&Value>, what: &str| {
                v.and_then(Value::as_str)
                    .map(str::to_string)
                    .with_context(|| format!("a host without {what}"))
            };
            let b = h.get("boot");
            map.insert(
                s(h.get("mac"), "mac")?.to_ascii_lowercase(),
                Boot {
                    controller_url: s(b.and_then(|b| b.get("controller_url")), "controller_url")?,
                    ca_fingerprint: s(b.and_then(|b| b.get("ca_fingerprint")), "ca_fingerprint")?,
                    token: s(b.and_then(|b| b.get("token")), "token")?,
                },
            );
        }
        *self.by_mac.write().unwrap() = map;
        Ok(rev)
    }

    /// Follows the controller's local API at `base` (`http://127.0.0.1:PORT`) until `cancel`.
    pub async fn follow(&self, base: &str, bearer: &str, cancel: CancellationToken) {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut rev = 0u64;
        loop {
            let poll = self.poll(&client, base, bearer, rev);
            let r = tokio::select! {
                _ = cancel.cancelled() => return,
                r = tokio::time::timeout(Duration::from_secs(60), poll) => r,
            };
            if cancel.is_cancelled() {
                // The run is over and the controller is stopping: its refusals are not news.
                return;
            }
            match r {
                Ok(Ok(next)) => rev = next,
                Ok(Err(e)) => {
                    eprintln!("ferrox-scale: netboot feed: {e:#}; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(_) => eprintln!("ferrox-scale: netboot feed: no answer in 60 s; retrying"),
            }
        }
    }

    async fn poll(&self, client: &LocalClient, base: &str, bearer: &str, rev: u64) -> Result<u64> {
        let path = format!("/v1/netboot/hosts?after={rev}");
        let body = local_get(client, base, bearer, &path, 64 << 20).await?;
        self.answers.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        self.replace(&serde_json::from_slice(&body).context("the feed is not JSON")?)
    }
}

/// An HTTP client of the controller's local API.
pub type LocalClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// `GET base+path` with the local API's bearer token; the body, at most `limit` bytes.
pub async fn local_get(
    client: &LocalClient,
    base: &str,
    bearer: &str,
    path: &str,
    limit: usize,
) -> Result<Bytes> {
    let req = hyper::Request::get(format!("{base}{path}"))
        .header(hyper::header::AUTHORIZATION, format!("Bearer {bearer}"))
        .body(Empty::new())?;
    let resp = client.request(req).await?;
    if !resp.status().is_success() {
        bail!("{path}: status {}", resp.status());
    }
    Ok(Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?
        .to_bytes())
}
