//! Hosts from the controller: which MAC boots the ramdisk now, with its one-time token.
//!
//! The controller serves `GET /v1/netboot/hosts?after=REV` (a long poll: it answers as soon as
//! its revision passes `REV`, or after a while with the same one). [`follow`] keeps a
//! [`ControllerHosts`] table current from it; DHCP, TFTP and HTTP only ever read the table, so a
//! slow or absent controller never blocks a boot decision — it only delays new hosts. Records
//! keep the hosts-file shape, so a static file and the controller can serve side by side.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::hosts::{Host, HostSource, MacAddr, StaticHosts};

/// Largest answer read from the controller.
const MAX_BODY: usize = 32 << 20;

/// The table the controller feeds.
#[derive(Debug, Default)]
pub struct ControllerHosts {
    by_mac: RwLock<HashMap<MacAddr, Arc<Host>>>,
}

impl HostSource for ControllerHosts {
    fn lookup(&self, mac: &MacAddr) -> Option<Arc<Host>> {
        self.by_mac.read().unwrap().get(mac).cloned()
    }
}

impl ControllerHosts {
    /// Replaces the whole table.
    pub fn replace(&self, hosts: Vec<Host>) {
        let map = hosts.into_iter().map(|h| (h.mac, Arc::new(h))).collect();
        *self.by_mac.write().unwrap() = map;
    }

    /// How many hosts.
    pub fn len(&self) -> usize {
        self.by_mac.read().unwrap().len()
    }

    /// None.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every MAC, sorted.
    pub fn macs(&self) -> Vec<MacAddr> {
        let mut v: Vec<_> = self.by_mac.read().unwrap().keys().copied().collect();
        v.sort_unstable();
        v
    }
}

/// The static file first, then the controller.
#[derive(Debug)]
pub struct Layered {
    /// From `--hosts`.
    pub file: Arc<StaticHosts>,
    /// From `--controller-hosts`.
    pub controller: Arc<ControllerHosts>,
}

impl Layered {
    /// The controller's hosts the file also lists: the file's record wins, so the controller's
    /// (and its one-time token) is never served.
    pub fn shadowed(&self) -> Vec<MacAddr> {
        self.controller
            .macs()
            .into_iter()
            .filter(|m| self.file.lookup(m).is_some())
            .collect()
    }
}

impl HostSource for Layered {
    fn lookup(&self, mac: &MacAddr) -> Option<Arc<Host>> {
        self.file
            .lookup(mac)
            .or_else(|| self.controller.lookup(mac))
    }
}

/// The controller's answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    /// Changes whenever the host list does.
    pub revision: u64,
    /// Every host that should network-boot now.
    pub hosts: Vec<Host>,
}

/// Why one poll failed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The URL is unusable.
    #[error("controller hosts URL {0:?} is not an http:// URL")]
    Url(String),
    /// No answer.
    #[error("asking the controller at {url}")]
    Http {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An error status.
    #[error("the controller at {url} answered {status}")]
    Status {
        /// Where.
        url: String,
        /// What.
        status: u16,
    },
    /// Not the expected JSON.
    #[error("the controller at {url} sent a host list that does not parse")]
    Parse {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Keeps `hosts.controller` current from `base` (e.g. `http://127.0.0.1:9445`) until `cancel`
/// fires, authenticating with `token`. Errors are logged (once per change) and retried with
/// backoff. A controller host that `hosts.file` also lists is warned about once (when it
/// appears in the feed): the file's record hides it.
pub async fn follow(
    hosts: Arc<Layered>,
    base: String,
    token: Option<String>,
    cancel: CancellationToken,
) {
    let table = &hosts.controller;
    let mut shadowed: Vec<MacAddr> = Vec::new();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut rev = 0u64;
    let mut backoff = Duration::from_millis(250);
    let mut last_err = String::new();
    loop {
        let url = format!(
            "{}/v1/netboot/hosts?after={rev}",
            base.trim_end_matches('/')
        );
        let fut = poll(&client, &url, token.as_deref());
        let res = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(60), fut) => r,
        };
        match res {
            Ok(Ok(feed)) => {
                if feed.revision != rev || table.is_empty() {
                    debug!(
                        revision = feed.revision,
                        hosts = feed.hosts.len(),
                        "host list from the controller"
                    );
                }
                if !last_err.is_empty() {
                    info!(controller = %base, "controller reachable again");
                    last_err.clear();
                }
                rev = feed.revision;
                table.replace(feed.hosts);
                let now = hosts.shadowed();
                for mac in now.iter().filter(|m| !shadowed.contains(m)) {
                    warn!(mac = %mac, "the hosts file lists this MAC too: its record is served, not the controller's (nor its boot token)");
                }
                shadowed = now;
                backoff = Duration::from_millis(250);
                continue;
            }
            Ok(Err(e)) => {
                let msg = crate::error_chain(&e);
                if msg != last_err {
                    warn!(controller = %base, "host list: {msg}; keeping the last one and retrying");
                    last_err = msg;
                }
            }
            Err(_) => {
                if last_err != "timeout" {
                    warn!(controller = %base, "host list: no answer within 60 s; retrying");
                    last_err = "timeout".into();
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn poll(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: &str,
    token: Option<&str>,
) -> Result<Feed, FeedError> {
    if !url.starts_with("http://") {
        return Err(FeedError::Url(url.to_string()));
    }
    let mut req = hyper::Request::get(url);
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Empty::new())
        .map_err(|_| FeedError::Url(url.to_string()))?;
    let http = |source: Box<dyn std::error::Error + Send + Sync>| FeedError::Http {
        url: url.to_string(),
        source,
    };
    let resp = client.request(req).await.map_err(|e| http(Box::new(e)))?;
    if !resp.status().is_success() {
        return Err(FeedError::Status {
            url: url.to_string(),
            status: resp.status().as_u16(),
        });
    }
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|source| FeedError::Parse {
        url: url.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controllers_records_parse_as_host_records() {
        let feed: Feed = serde_json::from_str(
            r#"{"revision": 7, "hosts": [{"mac": "52:54:00:00:00:01", "hostname": "worker-0", "netboot": true,
               "boot": {"controller_url": "https://10.0.0.1:9443", "ca_fingerprint": "sha256:00", "token": "t0k"}}]}"#,
        )
        .unwrap();
        let t = ControllerHosts::default();
        t.replace(feed.hosts);
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let h = t.lookup(&mac).unwrap();
        assert_eq!(h.boot.token.as_deref(), Some("t0k"));
        let layered = Layered {
            file: Arc::new(StaticHosts::default()),
            controller: Arc::new(t),
        };
        assert!(layered.lookup(&mac).is_some());
        assert!(layered
            .lookup(&"52:54:00:00:00:02".parse().unwrap())
            .is_none());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(
            serde_json::from_str::<Feed>(r#"{"revision": 1, "hosts": [], "extra": 1}"#).is_err()
        );
    }
}
