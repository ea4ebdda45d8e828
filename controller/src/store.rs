//! The embedded store: everything the controller must not lose, in one redb file.
//!
//! redb commits are atomic and durable (fsync before `commit` returns), so a `kill -9` at any
//! moment leaves either the state before a step or the state after it — never half of one. What
//! lives here: each host's last applied object and its [`HostStatus`], the boot tokens (hashed),
//! the internal CA, and a bounded log of Events. BMC credentials are not copied here: they stay in
//! the Secrets the user applied.
//!
//! Host records are also kept decoded in memory: every read (a reconcile step, the netboot feed,
//! `get`) is served from there, and only writes touch the file. The copy changes only after the
//! commit that made the change durable, under one writer lock, so it never shows a state the file
//! does not hold. (At a thousand hosts, decoding records on every read was a third of the
//! controller's CPU: see docs/bench-scale.md.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::model::{HostKey, HostStatus};

const HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("hosts");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// Events kept (oldest dropped first).
const EVENTS_KEPT: u64 = 20_000;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Opening or creating the database file.
    #[error("opening the state database {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: redb::DatabaseError,
    },
    /// A read or write failed.
    #[error("state database {op}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record did not decode (written by an incompatible version, or damaged).
    #[error("state database record {key} is unreadable")]
    Corrupt {
        /// The record.
        key: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

fn db<E: std::error::Error + Send + Sync + 'static>(
    op: &'static str,
) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Db {
        op,
        source: Box::new(e),
    }
}

/// One host as stored: the object as last applied, and the controller's status for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRecord {
    /// The BareMetalHost as last read from the user (JSON).
    pub object: serde_json::Value,
    /// What the controller distilled from it (kept so a deleted host can still be powered off).
    #[serde(default)]
    pub spec: crate::model::HostSpec,
    /// What the controller knows and has done.
    pub status: HostStatus,
    /// When the controller first saw the host (Unix ms): the object's AGE.
    #[serde(default)]
    pub created_ms: u64,
}

/// A boot token, stored by its SHA-256 only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// The host it was minted for.
    pub host: HostKey,
    /// The agent boot it belongs to.
    pub boot: u32,
    /// Unusable after (Unix ms).
    pub expires_ms: u64,
    /// Already redeemed.
    pub used: bool,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Never minted (or already purged).
    Unknown,
    /// Redeemed before: a replay. Carries the host it was minted for.
    Used(HostKey),
    /// Past its lifetime.
    Expired(HostKey),
    /// Minted for an earlier boot of the host, superseded by a newer one.
    Superseded(HostKey),
}

/// An Event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// The host.
    pub host: HostKey,
    /// When (Unix ms).
    pub at_ms: u64,
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: String,
    /// One line.
    pub message: String,
}

/// The embedded store.
pub struct Store {
    db: Database,
    /// Every host record, decoded, by `namespace/name`: what the file holds as of the last commit.
    hosts: RwLock<BTreeMap<String, (HostKey, HostRecord)>>,
    /// Held across a host write and the update of `hosts` that follows its commit.
    writing: Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let database = Database::create(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let s = Store {
            db: database,
            hosts: RwLock::default(),
            writing: Mutex::default(),
        };
        // Create the tables so readers never see "table does not exist".
        s.write("creating tables", |w| {
            w.open_table(HOSTS).map_err(db("opening hosts"))?;
            w.open_table(TOKENS).map_err(db("opening tokens"))?;
            w.open_table(META).map_err(db("opening meta"))?;
            w.open_table(EVENTS).map_err(db("opening events"))?;
            Ok(())
        })?;
        let mut hosts = BTreeMap::new();
        {
            let r = s.db.begin_read().map_err(db("reading hosts"))?;
            let t = r.open_table(HOSTS).map_err(db("reading hosts"))?;
            for item in t.iter().map_err(db("reading hosts"))? {
                let (k, v) = item.map_err(db("reading hosts"))?;
                let key = k.value().to_string();
                let rec = decode(&key, v.value())?;
                if let Some(hk) = HostKey::parse(&key) {
                    hosts.insert(key, (hk, rec));
                }
            }
        }
        *s.hosts.write().unwrap() = hosts;
        Ok(s)
    }

    fn lock_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the in-memory copy say what the last commit wrote for `key`.
    fn remember(&self, key: &HostKey, rec: Option<HostRecord>) {
        let mut hosts = self.hosts.write().unwrap_or_else(|p| p.into_inner());
        match rec {
            Some(r) => hosts.insert(key.to_string(), (key.clone(), r)),
            None => hosts.remove(&key.to_string()),
        };
    }

    fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write_with(op, true, f)
    }

    /// One write transaction; `durable: false` commits without waiting for the disk.
    fn write_with<T>(
        &self,
        op: &'static str,
        durable: bool,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut w = self.db.begin_write().map_err(db(op))?;
        if !durable {
            w.set_durability(redb::Durability::None).map_err(db(op))?;
        }
        let out = f(&w)?;
        w.commit().map_err(db(op))?;
        Ok(out)
    }

    /// Every host's record.
    pub fn hosts(&self) -> Result<Vec<(HostKey, HostRecord)>, StoreError> {
        let hosts = self.hosts.read().unwrap_or_else(|p| p.into_inner());
        Ok(hosts.values().cloned().collect())
    }

    /// Calls `f` with every host's record, in key order, without copying them.
    pub fn each_host(&self, mut f: impl FnMut(&HostKey, &HostRecord)) {
        let hosts = self.hosts.read().unwrap_or_else(|p| p.into_inner());
        for (k, r) in hosts.values() {
            f(k, r);
        }
    }

    /// One host's record.
    pub fn host(&self, key: &HostKey) -> Result<Option<HostRecord>, StoreError> {
        let hosts = self.hosts.read().unwrap_or_else(|p| p.into_inner());
        Ok(hosts.get(&key.to_string()).map(|(_, r)| r.clone()))
    }

    /// Reads, changes and writes one host's record in one transaction. `f` gets `None` for a
    /// host not stored yet; returning `None` deletes the record.
    pub fn update<T>(
        &self,
        key: &HostKey,
        f: impl FnOnce(Option<HostRecord>) -> (Option<HostRecord>, T),
    ) -> Result<T, StoreError> {
        self.update_with_events(key, |old| {
            let (new, out) = f(old);
            (new, out, Vec::new())
        })
    }

    /// [`Store::update`], also appending the Events `f` returns, in the same transaction: a step
    /// and what it says about itself are durable together, with one disk flush.
    pub fn update_with_events<T>(
        &self,
        key: &HostKey,
        f: impl FnOnce(Option<HostRecord>) -> (Option<HostRecord>, T, Vec<EventRecord>),
    ) -> Result<T, StoreError> {
        self.update_inner(key, true, f)
    }

    /// [`Store::update`] for a change that may be lost in a crash (an agent's progress report,
    /// which the next one replaces): committed without waiting for the disk, and made durable by
    /// the next durable commit. A thousand agents writing images report progress every second.
    pub fn update_volatile<T>(
        &self,
        key: &HostKey,
        f: impl FnOnce(Option<HostRecord>) -> (Option<HostRecord>, T),
    ) -> Result<T, StoreError> {
        self.update_inner(key, false, |old| {
            let (new, out) = f(old);
            (new, out, Vec::new())
        })
    }

    fn update_inner<T>(
        &self,
        key: &HostKey,
        durable: bool,
        f: impl FnOnce(Option<HostRecord>) -> (Option<HostRecord>, T, Vec<EventRecord>),
    ) -> Result<T, StoreError> {
        let k = key.to_string();
        let _writing = self.lock_writes();
        let old = self.host(key)?;
        let (new, out, events) = f(old);
        let bytes = match &new {
            Some(rec) => Some(
                serde_json::to_vec(rec).map_err(|source| StoreError::Corrupt {
                    key: k.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        let op = "updating a host";
        self.write_with(op, durable, |w| {
            let mut t = w.open_table(HOSTS).map_err(db(op))?;
            match &bytes {
                Some(b) => {
                    t.insert(k.as_str(), b.as_slice())
                        .map_err(db("updating a host"))?;
                }
                None => {
                    t.remove(k.as_str()).map_err(db("removing a host"))?;
                }
            }
            append_events(w, &events)
        })?;
        self.remember(key, new);
        Ok(out)
    }

    /// Records a token (by its hash).
    pub fn put_token(&self, token_sha256: &str, rec: &TokenRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(rec).map_err(|source| StoreError::Corrupt {
            key: "token".into(),
            source,
        })?;
        self.write("storing a token", |w| {
            let mut t = w.open_table(TOKENS).map_err(db("storing a token"))?;
            t.insert(token_sha256, bytes.as_slice())
                .map_err(db("storing a token"))?;
            Ok(())
        })
    }

    /// Redeems a token: in one transaction, checks it, marks it used, and lets `on_ok` change the
    /// host's record (the agent is up). `current_boot` tells which boot of the host is current.
    pub fn redeem_token(
        &self,
        token_sha256: &str,
        now_ms: u64,
        on_ok: impl FnOnce(&TokenRecord, &mut HostRecord) -> bool,
    ) -> Result<Result<HostKey, TokenRefusal>, StoreError> {
        let _writing = self.lock_writes();
        let mut changed: Option<(HostKey, HostRecord)> = None;
        let out = self.write("redeeming a token", |w| {
            let mut tokens = w.open_table(TOKENS).map_err(db("redeeming a token"))?;
            let mut rec: TokenRecord =
                match tokens.get(token_sha256).map_err(db("redeeming a token"))? {
                    Some(v) => decode("token", v.value())?,
                    None => return Ok(Err(TokenRefusal::Unknown)),
                };
            if rec.used {
                return Ok(Err(TokenRefusal::Used(rec.host)));
            }
            if now_ms >= rec.expires_ms {
                return Ok(Err(TokenRefusal::Expired(rec.host)));
            }
            let mut hosts = w.open_table(HOSTS).map_err(db("redeeming a token"))?;
            let k = rec.host.to_string();
            let Some(mut host) = self.host(&rec.host)? else {
                return Ok(Err(TokenRefusal::Unknown));
            };
            if !on_ok(&rec, &mut host) {
                return Ok(Err(TokenRefusal::Superseded(rec.host)));
            }
            rec.used = true;
            let tb = serde_json::to_vec(&rec).map_err(|source| StoreError::Corrupt {
                key: "token".into(),
                source,
            })?;
            tokens
                .insert(token_sha256, tb.as_slice())
                .map_err(db("redeeming a token"))?;
            let hb = serde_json::to_vec(&host).map_err(|source| StoreError::Corrupt {
                key: k.clone(),
                source,
            })?;
            hosts
                .insert(k.as_str(), hb.as_slice())
                .map_err(db("redeeming a token"))?;
            changed = Some((rec.host.clone(), host));
            Ok(Ok(rec.host))
        })?;
        if let Some((key, host)) = changed {
            self.remember(&key, Some(host));
        }
        Ok(out)
    }

    /// Drops tokens that expired before `now_ms` or belong to `host` (when given).
    pub fn purge_tokens(&self, now_ms: u64, host: Option<&HostKey>) -> Result<usize, StoreError> {
        self.write("purging tokens", |w| {
            let mut t = w.open_table(TOKENS).map_err(db("purging tokens"))?;
            let mut doomed = Vec::new();
            for item in t.iter().map_err(db("purging tokens"))? {
                let (k, v) = item.map_err(db("purging tokens"))?;
                let rec: TokenRecord = decode("token", v.value())?;
                if rec.expires_ms < now_ms || host == Some(&rec.host) {
                    doomed.push(k.value().to_string());
                }
            }
            for k in &doomed {
                t.remove(k.as_str()).map_err(db("purging tokens"))?;
            }
            Ok(doomed.len())
        })
    }

    /// A value of the controller's own (e.g. the CA), by name.
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.db.begin_read().map_err(db("reading meta"))?;
        let t = r.open_table(META).map_err(db("reading meta"))?;
        Ok(t.get(name)
            .map_err(db("reading meta"))?
            .map(|v| v.value().to_vec()))
    }

    /// Stores a value of the controller's own, unless one exists; returns the stored one.
    pub fn meta_or_insert(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.write("writing meta", |w| {
            let mut t = w.open_table(META).map_err(db("writing meta"))?;
            if let Some(v) = t.get(name).map_err(db("writing meta"))? {
                return Ok(v.value().to_vec());
            }
            t.insert(name, value).map_err(db("writing meta"))?;
            Ok(value.to_vec())
        })
    }

    /// Appends Events, dropping the oldest beyond the bound.
    pub fn add_events(&self, events: &[EventRecord]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.write("recording events", |w| append_events(w, events))
    }

    /// The Events recorded for `host` (oldest first), or for every host.
    pub fn events(&self, host: Option<&HostKey>) -> Result<Vec<EventRecord>, StoreError> {
        let r = self.db.begin_read().map_err(db("reading events"))?;
        let t = r.open_table(EVENTS).map_err(db("reading events"))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db("reading events"))? {
            let (_, v) = item.map_err(db("reading events"))?;
            let e: EventRecord = decode("event", v.value())?;
            if host.is_none_or(|h| *h == e.host) {
                out.push(e);
            }
        }
        Ok(out)
    }
}

/// Appends `events` in transaction `w`, dropping the oldest beyond the bound.
fn append_events(w: &redb::WriteTransaction, events: &[EventRecord]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut t = w.open_table(EVENTS).map_err(db("recording events"))?;
    let mut next = match t.last().map_err(db("recording events"))? {
        Some((k, _)) => k.value() + 1,
        None => 0,
    };
    for e in events {
        let b = serde_json::to_vec(e).map_err(|source| StoreError::Corrupt {
            key: "event".into(),
            source,
        })?;
        t.insert(next, b.as_slice())
            .map_err(db("recording events"))?;
        next += 1;
    }
    if next > EVENTS_KEPT {
        let cut = next - EVENTS_KEPT;
        t.retain_in(..cut, |_, _| false)
            .map_err(db("recording events"))?;
    }
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::State;

    fn rec(state: State) -> HostRecord {
        HostRecord {
            object: serde_json::json!({"kind": "BareMetalHost"}),
            spec: Default::default(),
            created_ms: 0,
            status: HostStatus {
                state,
                ..HostStatus::default()
            },
        }
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let key = HostKey::new("default", "worker-0");
        {
            let s = Store::open(&path).unwrap();
            s.update(&key, |old| {
                assert!(old.is_none());
                (Some(rec(State::Provisioning)), ())
            })
            .unwrap();
            s.meta_or_insert("ca", b"pem").unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(
            s.host(&key).unwrap().unwrap().status.state,
            State::Provisioning
        );
        assert_eq!(s.meta_or_insert("ca", b"other").unwrap(), b"pem");
        assert_eq!(s.hosts().unwrap().len(), 1);
        s.update(&key, |_| (None, ())).unwrap();
        assert!(s.host(&key).unwrap().is_none());
    }

    #[test]
    fn a_step_and_its_events_commit_together_and_reads_come_from_the_last_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let key = HostKey::new("ns", "h");
        let ev = |m: &str| EventRecord {
            host: key.clone(),
            at_ms: 1,
            warning: false,
            reason: "StateChanged".into(),
            message: m.into(),
        };
        {
            let s = Store::open(&path).unwrap();
            let out = s
                .update_with_events(&key, |old| {
                    assert!(old.is_none());
                    (Some(rec(State::Registering)), 7, vec![ev("-> registering")])
                })
                .unwrap();
            assert_eq!(out, 7);
            // A change whose closure keeps the record as it is writes nothing new.
            s.update_with_events(&key, |old| {
                assert_eq!(old.as_ref().unwrap().status.state, State::Registering);
                (old, (), Vec::new())
            })
            .unwrap();
            // A volatile change is read back at once, and made durable by the next commit.
            s.update_volatile(&key, |old| {
                let mut r = old.unwrap();
                r.status.state = State::Inspecting;
                (Some(r), ())
            })
            .unwrap();
            assert_eq!(
                s.host(&key).unwrap().unwrap().status.state,
                State::Inspecting
            );
            s.add_events(&[ev("durable")]).unwrap();
            let mut seen = Vec::new();
            s.each_host(|k, r| seen.push((k.clone(), r.status.state)));
            assert_eq!(seen, vec![(key.clone(), State::Inspecting)]);
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(
            s.host(&key).unwrap().unwrap().status.state,
            State::Inspecting
        );
        let msgs: Vec<String> = s
            .events(None)
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(
            msgs,
            vec!["-> registering".to_string(), "durable".to_string()]
        );
        assert_eq!(s.hosts().unwrap().len(), 1);
    }

    #[test]
    fn a_token_works_once_and_only_before_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let key = HostKey::new("ns", "h");
        s.update(&key, |_| (Some(rec(State::Inspecting)), ()))
            .unwrap();
        let t = TokenRecord {
            host: key.clone(),
            boot: 1,
            expires_ms: 1_000,
            used: false,
        };
        s.put_token("aa", &t).unwrap();
        s.put_token("bb", &t).unwrap();
        s.put_token(
            "cc",
            &TokenRecord {
                boot: 0,
                ..t.clone()
            },
        )
        .unwrap();
        let current = |tr: &TokenRecord, _: &mut HostRecord| tr.boot == 1;
        assert_eq!(
            s.redeem_token("zz", 10, current).unwrap(),
            Err(TokenRefusal::Unknown)
        );
        assert_eq!(s.redeem_token("aa", 10, current).unwrap(), Ok(key.clone()));
        assert_eq!(
            s.redeem_token("aa", 11, current).unwrap(),
            Err(TokenRefusal::Used(key.clone()))
        );
        assert_eq!(
            s.redeem_token("bb", 1_000, current).unwrap(),
            Err(TokenRefusal::Expired(key.clone()))
        );
        assert_eq!(
            s.redeem_token("cc", 10, current).unwrap(),
            Err(TokenRefusal::Superseded(key.clone()))
        );
        assert_eq!(s.purge_tokens(0, Some(&key)).unwrap(), 3);
    }

    #[test]
    fn events_are_bounded_and_filtered_by_host() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let a = HostKey::new("ns", "a");
        let b = HostKey::new("ns", "b");
        let ev = |h: &HostKey, i: u64| EventRecord {
            host: h.clone(),
            at_ms: i,
            warning: false,
            reason: "StateChanged".into(),
            message: format!("{i}"),
        };
        s.add_events(&[ev(&a, 1), ev(&b, 2), ev(&a, 3)]).unwrap();
        let got: Vec<u64> = s
            .events(Some(&a))
            .unwrap()
            .iter()
            .map(|e| e.at_ms)
            .collect();
        assert_eq!(got, vec![1, 3]);
        assert_eq!(s.events(None).unwrap().len(), 3);
    }
}
