//! The reconciler: the thin shell around [`crate::machine`].
//!
//! It owns the desired state (host specs and Secrets, pushed in by a store front — the manifest
//! directory or the Kubernetes watcher), the work queue, and the effects: BMC calls through
//! [`Bmc`], boot tokens and the netboot feed, agent commands and events. Each reconcile of a host
//! loops `decide` → persist → act → `absorb` → persist, so every step is durable before the next.
//! Agent events and token redemptions write to the same records in their own transactions; a
//! reconcile that finds the record changed under it recomputes instead of overwriting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_proto::{Action, Command, Enroll, Event, WipeMode, WriteImage};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::machine::{self, Act, ActOk, ActResult, Facts, Limits, Note};
use crate::model::*;
use crate::queue::Queue;
use crate::store::{EventRecord, HostRecord, Store, StoreError, TokenRecord, TokenRefusal};

/// A boxed future, for the object-safe [`Bmc`] trait.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where and how to reach one host's BMC.
#[derive(Clone, PartialEq, Eq)]
pub struct BmcTarget {
    /// `spec.bmc.address`.
    pub address: String,
    /// From the credentials Secret.
    pub username: String,
    /// From the credentials Secret.
    pub password: String,
    /// `spec.bmc.disableCertificateVerification`.
    pub disable_certificate_verification: bool,
}

impl std::fmt::Debug for BmcTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BmcTarget")
            .field("address", &self.address)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Where a one-time boot override points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootTarget {
    /// Network boot (PXE, into the ramdisk).
    Pxe,
    /// The local disk.
    Disk,
}

/// What the reconciler needs from a BMC driver. Errors are one readable line each.
pub trait Bmc: Send + Sync + 'static {
    /// Checks address and credentials; reads the power state.
    fn probe<'a>(&'a self, t: &'a BmcTarget) -> BoxFut<'a, Result<Power, String>>;
    /// Reads the power state (on an established session).
    fn power_state<'a>(&'a self, t: &'a BmcTarget) -> BoxFut<'a, Result<Power, String>>;
    /// Powers on or off (`force`: hard off).
    fn power<'a>(
        &'a self,
        t: &'a BmcTarget,
        on: bool,
        force: bool,
    ) -> BoxFut<'a, Result<(), String>>;
    /// Resets (hard reboot) a powered-on host.
    fn reset<'a>(&'a self, t: &'a BmcTarget) -> BoxFut<'a, Result<(), String>>;
    /// Sets a one-time boot override.
    fn boot_once<'a>(
        &'a self,
        t: &'a BmcTarget,
        target: BootTarget,
        mode: BootMode,
    ) -> BoxFut<'a, Result<(), String>>;
}

/// Secret data by reference.
pub type SecretLookup<'a> = dyn Fn(&SecretRef) -> Option<BTreeMap<String, Vec<u8>>> + 'a;

/// Builds a host's config drive (gzip + base64 of a config-2 filesystem), or says why not.
pub type ConfigDriveFn =
    dyn Fn(&HostKey, &HostSpec, &SecretLookup) -> Result<Option<String>, String> + Send + Sync;

/// Called when a host's next command changes.
pub type Wake = Box<dyn Fn(&HostKey) + Send + Sync>;

/// Where a store front publishes what the reconciler persisted. The embedded store needs none
/// (its records and event log are what `get` shows); the Kubernetes store writes the host's
/// status subresource, its HardwareData and Events, and drops the finalizer once a deleted host
/// is forgotten. Called after the store's transaction commits; must not block.
pub trait Publish: Send + Sync {
    /// The host's record changed, or was removed (the host is forgotten): read it from the store.
    fn host_changed(&self, key: &HostKey);
    /// Events were recorded for a host.
    fn events(&self, events: &[EventRecord]);
}

/// Settings of the reconciler.
#[derive(Debug, Clone)]
pub struct Config {
    /// Timeouts and backoff of the state machine.
    pub limits: Limits,
    /// Hosts allowed in `provisioning` at once; the rest wait as `delayed`.
    pub provisioning_limit: usize,
    /// Concurrent reconciles.
    pub workers: usize,
    /// The agent API URL agents enroll with (`ferrox.controller=`).
    pub agent_url: String,
    /// `sha256:HEX` of the CA (`ferrox.ca=`).
    pub ca_fingerprint: String,
    /// Lifetime of a boot token.
    pub token_ttl: Duration,
    /// Extra kernel command line for the ramdisk (e.g. `console=ttyS0`).
    pub ramdisk_cmdline: Option<String>,
}

/// A host as the user wants it.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Distilled spec.
    pub spec: HostSpec,
    /// The object as applied (JSON).
    pub object: serde_json::Value,
}

/// Why an agent's enrollment was refused (with the host the token was minted for, when known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Never minted or already forgotten.
    UnknownToken,
    /// Used before.
    TokenUsed(HostKey),
    /// Too old.
    TokenExpired(HostKey),
    /// The host has been booted again since; this token is void.
    Superseded(HostKey),
    /// The enrolling machine is not the host the token was minted for.
    WrongHost {
        /// The host.
        host: HostKey,
        /// Its boot MAC.
        mac: String,
    },
    /// The controller could not check.
    Internal(String),
}

/// A redeemed boot token: the host, and the session its agent's certificate will name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub key: HostKey,
    pub session: String,
}

/// The reconciler.
pub struct Reconciler {
    store: Arc<Store>,
    bmc: Arc<dyn Bmc>,
    config_drive: Box<ConfigDriveFn>,
    cfg: Config,
    desired: Mutex<HashMap<HostKey, Desired>>,
    secrets: Mutex<HashMap<SecretRef, BTreeMap<String, Vec<u8>>>>,
    seen: Mutex<HashMap<HostKey, u64>>,
    provisioning: Mutex<HashSet<HostKey>>,
    /// Hosts waiting for a provisioning slot (`delayed`), longest-waiting first: a freed slot
    /// wakes the first of them at once instead of at their next periodic look.
    delayed: Mutex<Vec<HostKey>>,
    queue: Queue<HostKey>,
    netboot_rev: watch::Sender<u64>,
    agent_wake: Mutex<Option<Wake>>,
    publish: Mutex<Option<Arc<dyn Publish>>>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler").finish_non_exhaustive()
    }
}

/// Now, Unix ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Hex SHA-256 of a token: how tokens are stored.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn normalize_mac(m: &str) -> String {
    m.trim().to_ascii_lowercase().replace('-', ":")
}

impl Reconciler {
    /// A reconciler over `store`, driving BMCs through `bmc`.
    pub fn new(
        store: Arc<Store>,
        bmc: Arc<dyn Bmc>,
        config_drive: Box<ConfigDriveFn>,
        cfg: Config,
    ) -> Arc<Self> {
        let (netboot_rev, _) = watch::channel(0);
        Arc::new(Reconciler {
            store,
            bmc,
            config_drive,
            cfg,
            desired: Mutex::new(HashMap::new()),
            secrets: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            provisioning: Mutex::new(HashSet::new()),
            delayed: Mutex::default(),
            queue: Queue::default(),
            netboot_rev,
            agent_wake: Mutex::new(None),
            publish: Mutex::new(None),
        })
    }

    /// Registers the agent API's wake-up: called when a host's next command changes, so its
    /// pending long poll answers at once.
    pub fn on_command_change(&self, f: Wake) {
        *self.agent_wake.lock().unwrap() = Some(f);
    }

    /// Publishes every persisted change to `p` as well (see [`Publish`]).
    pub fn publish_to(&self, p: Arc<dyn Publish>) {
        *self.publish.lock().unwrap() = Some(p);
    }

    fn changed(&self, key: &HostKey) {
        let p = self.publish.lock().unwrap().clone();
        if let Some(p) = p {
            p.host_changed(key);
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Sets (or replaces) what the user wants for a host.
    pub fn apply(&self, key: HostKey, d: Desired) {
        let changed = {
            let mut m = self.desired.lock().unwrap();
            let same = m
                .get(&key)
                .is_some_and(|old| old.spec == d.spec && old.object == d.object);
            m.insert(key.clone(), d);
            !same
        };
        if changed {
            self.queue.now(key);
        }
    }

    /// The user deleted a host (its manifest is gone, or deletionTimestamp is set).
    pub fn remove(&self, key: &HostKey) {
        if self.desired.lock().unwrap().remove(key).is_some() {
            self.queue.now(key.clone());
        }
    }

    /// Keeps every stored host the user's input does not mention as it was last applied, instead
    /// of treating it as deleted: for when that input is known to be incomplete (a manifest file
    /// that does not parse may be where the host is defined).
    pub fn keep_stored_hosts(&self) {
        let mut desired = self.desired.lock().unwrap();
        self.store.each_host(|key, rec| {
            desired.entry(key.clone()).or_insert_with(|| Desired {
                spec: rec.spec.clone(),
                object: rec.object.clone(),
            });
        });
    }

    /// Hosts the user currently wants.
    pub fn desired_keys(&self) -> Vec<HostKey> {
        self.desired.lock().unwrap().keys().cloned().collect()
    }

    /// Sets a Secret's data; hosts are looked at again.
    pub fn set_secret(&self, r: SecretRef, data: BTreeMap<String, Vec<u8>>) {
        let changed = self.secrets.lock().unwrap().insert(r.clone(), data.clone()) != Some(data);
        if changed {
            self.requeue_users_of(&r);
        }
    }

    /// Forgets a Secret.
    pub fn remove_secret(&self, r: &SecretRef) {
        if self.secrets.lock().unwrap().remove(r).is_some() {
            self.requeue_users_of(r);
        }
    }

    fn requeue_users_of(&self, r: &SecretRef) {
        let keys: Vec<HostKey> = self
            .desired
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, d)| refers_to(k, &d.spec, r))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.queue.now(k);
        }
    }

    /// The Secrets known now.
    pub fn secret_refs(&self) -> Vec<SecretRef> {
        self.secrets.lock().unwrap().keys().cloned().collect()
    }

    /// Whether a Secret is known (set and not removed).
    pub fn has_secret(&self, r: &SecretRef) -> bool {
        self.secrets.lock().unwrap().contains_key(r)
    }

    /// Whether a desired host refers to the Secret (BMC credentials, userData, networkData,
    /// metaData): the Kubernetes store keeps only those.
    pub fn wants_secret(&self, r: &SecretRef) -> bool {
        self.desired
            .lock()
            .unwrap()
            .iter()
            .any(|(k, d)| refers_to(k, &d.spec, r))
    }

    fn secret(&self, r: &SecretRef) -> Option<BTreeMap<String, Vec<u8>>> {
        self.secrets.lock().unwrap().get(r).cloned()
    }

    /// Runs `workers` reconcile loops until `cancel` fires. Hosts in the store but no longer
    /// desired are looked at too (they are being deleted).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> Result<(), StoreError> {
        let mut slots = HashSet::new();
        let start = now_ms();
        for (key, rec) in self.store.hosts()? {
            if rec.status.state == State::Provisioning {
                slots.insert(key.clone());
            }
            // While the controller was down its agents could not reach it, and the last sign
            // of life it stored may be older still (progress reports are not waited for on
            // disk): an agent that was up gets the usual grace from now before it counts as
            // lost. Otherwise a restart during a long write would reset the machine and write
            // the disk a second time.
            if rec.status.agent.phase == AgentPhase::Up {
                self.seen.lock().unwrap().insert(key.clone(), start);
            }
            self.queue.now(key);
        }
        *self.provisioning.lock().unwrap() = slots;
        for key in self.desired_keys() {
            self.queue.now(key);
        }
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..self.cfg.workers.max(1) {
            let me = self.clone();
            set.spawn(async move {
                while let Some(key) = me.queue.next().await {
                    match me.reconcile(&key).await {
                        Ok(Some(after)) => me.queue.schedule(key.clone(), after),
                        Ok(None) => {}
                        Err(e) => {
                            warn!(host = %key, error = %crate::error_chain(&e), "reconcile failed; retrying in 5 s");
                            me.queue.schedule(key.clone(), Duration::from_secs(5));
                        }
                    }
                    me.queue.done(&key);
                }
            });
        }
        cancel.cancelled().await;
        self.queue.close();
        while set.join_next().await.is_some() {}
        Ok(())
    }

    fn spec_for(
        &self,
        key: &HostKey,
        rec: Option<&HostRecord>,
    ) -> Option<(HostSpec, serde_json::Value)> {
        if let Some(d) = self.desired.lock().unwrap().get(key) {
            return Some((d.spec.clone(), d.object.clone()));
        }
        rec.map(|r| {
            let mut spec = r.spec.clone();
            spec.deleting = true;
            (spec, r.object.clone())
        })
    }

    fn facts(&self, key: &HostKey) -> Facts {
        let slots = self.provisioning.lock().unwrap();
        Facts {
            now_ms: now_ms(),
            provisioning_slot: slots.contains(key) || slots.len() < self.cfg.provisioning_limit,
            jitter: jitter(),
        }
    }

    fn note_slot(&self, key: &HostKey, state: State) {
        let free = {
            let mut slots = self.provisioning.lock().unwrap();
            if state == State::Provisioning {
                slots.insert(key.clone());
                0
            } else if slots.remove(key) {
                self.cfg.provisioning_limit.saturating_sub(slots.len())
            } else {
                0
            }
        };
        if free > 0 {
            let waiting: Vec<HostKey> = self
                .delayed
                .lock()
                .unwrap()
                .iter()
                .take(free)
                .cloned()
                .collect();
            for k in waiting {
                self.queue.now(k);
            }
        }
    }

    /// Takes a provisioning slot for `key` if one is free (or it holds one already).
    fn claim_slot(&self, key: &HostKey) -> bool {
        let mut slots = self.provisioning.lock().unwrap();
        if slots.contains(key) {
            return true;
        }
        if slots.len() < self.cfg.provisioning_limit {
            slots.insert(key.clone());
            return true;
        }
        false
    }

    /// Keeps [`Reconciler::delayed`] in step with the host's operational status.
    fn note_delayed(&self, key: &HostKey, delayed: bool) {
        let mut d = self.delayed.lock().unwrap();
        let at = d.iter().position(|k| k == key);
        match (delayed, at) {
            (true, None) => d.push(key.clone()),
            (false, Some(i)) => {
                d.remove(i);
            }
            _ => {}
        }
    }

    fn record_events(&self, key: &HostKey, notes: &[Note]) {
        let recs = event_records(key, notes);
        if recs.is_empty() {
            return;
        }
        if let Err(e) = self.store.add_events(&recs) {
            warn!(host = %key, error = %crate::error_chain(&e), "could not record events");
        }
        self.announce(key, &recs);
    }

    /// Logs recorded Events and hands them to the publisher (Kubernetes Events).
    fn announce(&self, key: &HostKey, recs: &[EventRecord]) {
        if recs.is_empty() {
            return;
        }
        for n in recs {
            if n.warning {
                warn!(host = %key, reason = %n.reason, "{}", n.message);
            } else {
                info!(host = %key, reason = %n.reason, "{}", n.message);
            }
        }
        let p = self.publish.lock().unwrap().clone();
        if let Some(p) = p {
            p.events(recs);
        }
    }

    /// One reconcile of one host: steps until the machine waits. Returns when to look again.
    pub async fn reconcile(&self, key: &HostKey) -> Result<Option<Duration>, StoreError> {
        for _ in 0..32 {
            let rec = self.store.host(key)?;
            let Some((spec, object)) = self.spec_for(key, rec.as_ref()) else {
                return Ok(None);
            };
            let mut status = rec.as_ref().map(|r| r.status.clone()).unwrap_or_default();
            let before = rec.as_ref().map(|r| r.status.clone());
            if let Some(&seen) = self.seen.lock().unwrap().get(key) {
                status.agent.last_seen_ms = status.agent.last_seen_ms.max(seen);
            }
            let facts = self.facts(key);
            let plan = machine::decide(&spec, &status, &facts, &self.cfg.limits);
            let was = before.as_ref().map_or(State::None, |b| b.state);
            // The slot `facts` saw free may have gone to another worker's host since: claim it
            // (or decide again, now without one).
            if plan.status.state == State::Provisioning
                && was != State::Provisioning
                && !self.claim_slot(key)
            {
                continue;
            }

            // Persist the decision, unless the record changed under us (then decide again).
            let changed = before.as_ref() != Some(&plan.status)
                || rec
                    .as_ref()
                    .is_none_or(|r| r.spec != spec || r.object != object);
            if changed {
                let new = HostRecord {
                    object: object.clone(),
                    spec: spec.clone(),
                    status: plan.status.clone(),
                    created_ms: rec.as_ref().map_or(facts.now_ms, |r| r.created_ms),
                };
                let recs = event_records(key, &plan.events);
                let ok = self.store.update_with_events(key, |cur| {
                    if cur.as_ref().map(|c| &c.status) != before.as_ref() {
                        (cur, false, Vec::new())
                    } else {
                        (Some(new), true, recs.clone())
                    }
                });
                if !matches!(ok, Ok(true)) {
                    // Not stored: a slot claimed for it goes back.
                    self.note_slot(key, was);
                }
                if !ok? {
                    continue;
                }
                self.note_slot(key, plan.status.state);
                self.note_delayed(key, plan.status.operational == Operational::Delayed);
                self.changed(key);
                if plan.status.boot_token != before.as_ref().and_then(|b| b.boot_token.clone()) {
                    self.netboot_rev.send_modify(|r| *r += 1);
                }
                self.announce(key, &recs);
            } else {
                self.record_events(key, &plan.events);
            }

            let Some(act) = plan.act else {
                match plan.requeue_ms {
                    Some(0) => continue,
                    Some(ms) => return Ok(Some(Duration::from_millis(ms))),
                    None => return Ok(None),
                }
            };
            debug!(host = %key, ?act, state = %plan.status.state, "acting");
            let result = self.act(key, &spec, &plan.status, &act).await;
            if act == Act::Forget && result.is_ok() {
                self.store.update(key, |_| (None, ()))?;
                self.store.purge_tokens(now_ms(), Some(key))?;
                self.note_slot(key, State::Deleting);
                self.note_delayed(key, false);
                self.seen.lock().unwrap().remove(key);
                self.netboot_rev.send_modify(|r| *r += 1);
                self.changed(key);
                info!(host = %key, "deleted");
                return Ok(None);
            }
            let facts = self.facts(key);
            let (recs, state) = self.store.update_with_events(key, |cur| {
                let Some(mut cur) = cur else {
                    return (None, (Vec::new(), State::Deleting), Vec::new());
                };
                let (mut st, notes) =
                    machine::absorb(&spec, &cur.status, &act, result, &facts, &self.cfg.limits);
                if act == Act::BootAgent && st.agent.phase == AgentPhase::Down {
                    st.boot_token = None;
                }
                let state = st.state;
                cur.status = st;
                let recs = event_records(key, &notes);
                (Some(cur), (recs.clone(), state), recs)
            })?;
            self.note_slot(key, state);
            self.changed(key);
            self.announce(key, &recs);
            if matches!(act, Act::Issue(_)) {
                if let Some(wake) = self.agent_wake.lock().unwrap().as_ref() {
                    wake(key);
                }
            }
        }
        Ok(Some(Duration::ZERO))
    }

    fn bmc_target(&self, key: &HostKey, spec: &HostSpec) -> Result<BmcTarget, String> {
        let bmc = spec
            .bmc
            .as_ref()
            .ok_or_else(|| "the host has no spec.bmc".to_string())?;
        let r = SecretRef {
            namespace: key.namespace.clone(),
            name: bmc.credentials_name.clone(),
        };
        let data = self.secret(&r).ok_or_else(|| {
            format!(
                "BMC credentials Secret {}/{} not found (spec.bmc.credentialsName)",
                r.namespace, r.name
            )
        })?;
        let field = |k: &str| -> Result<String, String> {
            let v = data.get(k).ok_or_else(|| {
                format!(
                    "BMC credentials Secret {}/{} has no {k:?} key",
                    r.namespace, r.name
                )
            })?;
            let s = String::from_utf8(v.clone()).map_err(|_| {
                format!(
                    "BMC credentials Secret {}/{}: {k} is not UTF-8",
                    r.namespace, r.name
                )
            })?;
            let s = s.trim_end_matches(['\n', '\r']).to_string();
            if s.is_empty() {
                return Err(format!(
                    "BMC credentials Secret {}/{}: {k} is empty",
                    r.namespace, r.name
                ));
            }
            Ok(s)
        };
        Ok(BmcTarget {
            address: bmc.address.clone(),
            username: field("username")?,
            password: field("password")?,
            disable_certificate_verification: bmc.disable_certificate_verification,
        })
    }

    async fn act(&self, key: &HostKey, spec: &HostSpec, st: &HostStatus, act: &Act) -> ActResult {
        match act {
            Act::Probe => {
                let t = self.bmc_target(key, spec)?;
                Ok(ActOk::Power(self.bmc.probe(&t).await?))
            }
            Act::BootAgent => {
                let t = self.bmc_target(key, spec)?;
                let mac = spec.boot_mac.as_deref().ok_or_else(|| {
                    "spec.bootMACAddress is required to boot the host into the agent".to_string()
                })?;
                let token =
                    controller_agentapi::mint_token().map_err(|e| crate::error_chain(&e))?;
                let boot = st.agent.boot + 1;
                self.store
                    .put_token(
                        &token_hash(&token),
                        &TokenRecord {
                            host: key.clone(),
                            boot,
                            expires_ms: now_ms() + self.cfg.token_ttl.as_millis() as u64,
                            used: false,
                        },
                    )
                    .map_err(|e| crate::error_chain(&e))?;
                // Booting from now on, before the BMC is asked: an agent may enroll before the
                // power-on call even returns.
                let now = now_ms();
                self.store
                    .update(key, |cur| {
                        let cur = cur.map(|mut c| {
                            c.status.boot_token = Some(token.clone());
                            c.status.agent = AgentStatus {
                                phase: AgentPhase::Booting,
                                since_ms: now,
                                boot,
                                last_seen_ms: now,
                                session: None,
                            };
                            c
                        });
                        (cur, ())
                    })
                    .map_err(|e| crate::error_chain(&e))?;
                self.netboot_rev.send_modify(|r| *r += 1);
                self.changed(key);
                debug!(host = %key, mac, boot, "boot token minted");
                self.bmc
                    .boot_once(&t, BootTarget::Pxe, spec.boot_mode)
                    .await?;
                if st.power == Power::On {
                    self.bmc.reset(&t).await?;
                } else {
                    self.bmc.power(&t, true, false).await?;
                }
                Ok(ActOk::Done)
            }
            Act::Issue(kind) => {
                let n = st.ops_issued + 1;
                let uid = if spec.uid.is_empty() {
                    key.to_string()
                } else {
                    spec.uid.clone()
                };
                let (name, action) = match kind {
                    OpKind::Inspect => ("inspect", Action::Inspect),
                    OpKind::Clean => (
                        "clean",
                        Action::Wipe {
                            mode: WipeMode::Metadata,
                            devices: Vec::new(),
                        },
                    ),
                    OpKind::Write => ("write", Action::WriteImage(self.write_image(key, spec)?)),
                };
                Ok(ActOk::Issued(Command {
                    id: format!("{uid}.{n}.{name}"),
                    action,
                }))
            }
            Act::ReadPower => {
                let t = self.bmc_target(key, spec)?;
                Ok(ActOk::Power(self.bmc.power_state(&t).await?))
            }
            Act::PowerOn => {
                let t = self.bmc_target(key, spec)?;
                self.bmc.power(&t, true, false).await?;
                Ok(ActOk::Done)
            }
            Act::PowerOff { force } => {
                let t = self.bmc_target(key, spec)?;
                self.bmc.power(&t, false, *force).await?;
                Ok(ActOk::Done)
            }
            Act::Reboot => {
                let t = self.bmc_target(key, spec)?;
                self.bmc.reset(&t).await?;
                Ok(ActOk::Done)
            }
            Act::BootDisk => {
                let t = self.bmc_target(key, spec)?;
                self.bmc
                    .boot_once(&t, BootTarget::Disk, spec.boot_mode)
                    .await?;
                self.bmc.reset(&t).await?;
                Ok(ActOk::Done)
            }
            Act::Forget => Ok(ActOk::Done),
        }
    }

    fn write_image(&self, key: &HostKey, spec: &HostSpec) -> Result<WriteImage, String> {
        let image = spec
            .image
            .as_ref()
            .ok_or_else(|| "spec.image is not set".to_string())?;
        let checksum = agent_checksum(image)?;
        let lookup = |r: &SecretRef| self.secret(r);
        let config_drive = (self.config_drive)(key, spec, &lookup)?;
        Ok(WriteImage {
            url: image.url.clone(),
            checksum,
            format: image.format.clone(),
            root_device_hints: spec.root_device_hints.clone(),
            config_drive,
        })
    }

    // ---- the agent API's side (its Backend) ----

    /// An agent enrolls with a boot token. Single use, bound to one boot of one host, and the
    /// enrolling machine must be that host (its boot MAC).
    pub fn redeem(&self, token: &str, enroll: &Enroll) -> Result<Enrolled, Refusal> {
        let now = now_ms();
        let mac = normalize_mac(&enroll.boot_mac);
        let session = controller_agentapi::mint_session()
            .map_err(|e| Refusal::Internal(crate::error_chain(&e)))?;
        let mut wrong = None;
        let res = self
            .store
            .redeem_token(&token_hash(token), now, |tr, host| {
                let want = host.spec.boot_mac.as_deref().map(normalize_mac);
                if want.as_deref().is_some_and(|w| w != mac) {
                    wrong = want;
                    return false;
                }
                if tr.boot != host.status.agent.boot
                    || host.status.agent.phase != AgentPhase::Booting
                {
                    return false;
                }
                machine::on_enrolled(&mut host.status, now, &session);
                true
            });
        let res = match res {
            Ok(r) => r,
            Err(e) => return Err(Refusal::Internal(crate::error_chain(&e))),
        };
        match res {
            Ok(key) => {
                self.seen.lock().unwrap().insert(key.clone(), now);
                self.netboot_rev.send_modify(|r| *r += 1);
                self.changed(&key);
                self.record_events(
                    &key,
                    &[Note {
                        warning: false,
                        reason: "AgentEnrolled".into(),
                        message: format!("the agent enrolled from {} ({})", enroll.address, mac),
                    }],
                );
                self.queue.now(key.clone());
                Ok(Enrolled { key, session })
            }
            Err(refusal) => {
                let (host, r, why) = match refusal {
                    TokenRefusal::Unknown => (None, Refusal::UnknownToken, "an unknown boot token"),
                    TokenRefusal::Used(h) => (
                        Some(h.clone()),
                        Refusal::TokenUsed(h),
                        "a boot token that was already used (replayed)",
                    ),
                    TokenRefusal::Expired(h) => (
                        Some(h.clone()),
                        Refusal::TokenExpired(h),
                        "an expired boot token",
                    ),
                    TokenRefusal::Superseded(h) => match wrong.take() {
                        Some(w) => (
                            Some(h.clone()),
                            Refusal::WrongHost { host: h, mac: w },
                            "the boot token of another machine",
                        ),
                        None => (
                            Some(h.clone()),
                            Refusal::Superseded(h),
                            "the boot token of an earlier boot",
                        ),
                    },
                };
                warn!(host = ?host.as_ref().map(|h| h.to_string()), from = %enroll.address, mac = %mac, "enrollment refused: {why}");
                if let Some(h) = host {
                    self.record_events(
                        &h,
                        &[Note {
                            warning: true,
                            reason: "EnrollmentRefused".into(),
                            message: format!(
                                "refused an agent at {} ({mac}) presenting {why}",
                                enroll.address
                            ),
                        }],
                    );
                }
                Err(r)
            }
        }
    }

    /// The command the host's agent should run now, if any, for the agent of enrollment
    /// `session` (from its certificate). Counts as a sign of life — from the current session
    /// only: an agent of an earlier one (a boot since replaced, a host deleted and created again
    /// under the same name) is neither heard nor given anything.
    pub fn next_command(&self, key: &HostKey, session: Option<&str>) -> Option<Command> {
        let rec = self.store.host(key).ok()??;
        if !self.current_session(key, &rec, session) {
            return None;
        }
        self.seen.lock().unwrap().insert(key.clone(), now_ms());
        if rec.status.agent.phase != AgentPhase::Up {
            return None;
        }
        rec.status
            .op
            .filter(|op| op.outcome.is_none() && op.boot == rec.status.agent.boot)
            .map(|op| op.command)
    }

    /// Whether `session` is the enrollment of the host's agent now; says so in the log once
    /// per call when it is not.
    fn current_session(&self, key: &HostKey, rec: &HostRecord, session: Option<&str>) -> bool {
        let current = rec.status.agent.session.as_deref();
        if current == session {
            return true;
        }
        debug!(host = %key, session = ?session, current = ?current, "an agent of an earlier enrollment called; ignored");
        false
    }

    /// An event from the host's agent (authenticated as that host, and as enrollment
    /// `session`, by its certificate). Events of an earlier enrollment are dropped.
    pub fn agent_event(&self, key: &HostKey, session: Option<&str>, event: &Event) {
        let now = now_ms();
        if let Event::Log { level, message } = event {
            if let Ok(Some(rec)) = self.store.host(key) {
                if self.current_session(key, &rec, session) {
                    self.seen.lock().unwrap().insert(key.clone(), now);
                    info!(host = %key, level = %level, "agent: {message}");
                }
            }
            return;
        }
        // The session is checked in the update itself (the host may enroll anew at any time),
        // so an event costs one store update and no extra read.
        let change = |cur: Option<HostRecord>| match cur {
            Some(c) if c.status.agent.session.as_deref() != session => (Some(c), Some(None)),
            Some(mut c) => {
                let wake = machine::on_agent_event(&mut c.status, event, now);
                (Some(c), Some(Some(wake)))
            }
            None => (None, None),
        };
        // Progress is replaced by the next report: it need not wait for the disk.
        let applied = if matches!(event, Event::Progress { .. }) {
            self.store.update_volatile(key, change)
        } else {
            self.store.update(key, change)
        };
        match applied {
            Ok(Some(Some(wake))) => {
                self.seen.lock().unwrap().insert(key.clone(), now);
                self.changed(key);
                if wake {
                    self.queue.now(key.clone());
                }
            }
            Ok(Some(None)) => {
                warn!(host = %key, session = ?session, "an event from an agent of an earlier enrollment was dropped")
            }
            Ok(None) => {}
            Err(e) => {
                warn!(host = %key, error = %crate::error_chain(&e), "could not record an agent event")
            }
        }
    }

    // ---- netboot's side ----

    /// Changes whenever what netboot should serve changes.
    pub fn netboot_revision(&self) -> watch::Receiver<u64> {
        self.netboot_rev.subscribe()
    }

    /// What netboot serves now: every host waiting to boot the agent, with its one-time token,
    /// in ferrox-netboot's host-record shape.
    pub fn netboot_hosts(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut out = Vec::new();
        self.store.each_host(|key, rec| {
            let Some(mac) = rec.spec.boot_mac.as_deref() else {
                return;
            };
            let Some(token) = rec.status.boot_token.as_deref() else {
                return;
            };
            if rec.status.agent.phase != AgentPhase::Booting
                && rec.status.agent.phase != AgentPhase::Down
            {
                return;
            }
            let mut boot = serde_json::json!({
                "controller_url": self.cfg.agent_url,
                "ca_fingerprint": self.cfg.ca_fingerprint,
                "token": token,
            });
            if let Some(c) = &self.cfg.ramdisk_cmdline {
                boot["cmdline"] = serde_json::Value::String(c.clone());
            }
            out.push(serde_json::json!({
                "mac": normalize_mac(mac),
                "hostname": key.name,
                "netboot": true,
                "boot": boot,
            }));
        });
        Ok(out)
    }
}

/// The Events `notes` make for `key`, stamped now.
fn event_records(key: &HostKey, notes: &[Note]) -> Vec<EventRecord> {
    let at = now_ms();
    notes
        .iter()
        .map(|n| EventRecord {
            host: key.clone(),
            at_ms: at,
            warning: n.warning,
            reason: n.reason.clone(),
            message: n.message.clone(),
        })
        .collect()
}

/// The Secrets a host's spec refers to: BMC credentials (in the host's namespace), userData,
/// networkData and metaData.
pub fn secret_refs(key: &HostKey, spec: &HostSpec) -> Vec<SecretRef> {
    let mut out: Vec<SecretRef> = spec
        .bmc
        .iter()
        .map(|b| SecretRef {
            namespace: key.namespace.clone(),
            name: b.credentials_name.clone(),
        })
        .collect();
    out.extend(
        [&spec.user_data, &spec.network_data, &spec.meta_data]
            .into_iter()
            .flatten()
            .cloned(),
    );
    out
}

fn refers_to(key: &HostKey, spec: &HostSpec, r: &SecretRef) -> bool {
    secret_refs(key, spec).contains(r)
}

/// metal3's image checksum fields → the agent's `ALGO:HEX` / `ALGO:URL`.
pub fn agent_checksum(image: &Image) -> Result<String, String> {
    let c = image.checksum.trim();
    if c.is_empty() {
        return Err("spec.image.checksum is empty: an image needs a checksum".into());
    }
    let is_url = c.starts_with("http://") || c.starts_with("https://");
    let algo = match image
        .checksum_type
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("md5") => "md5",
        Some("sha256") => "sha256",
        Some("sha512") => "sha512",
        None | Some("") | Some("auto") => {
            if is_url {
                return Err(format!(
                    "spec.image.checksum is a URL ({c}) with checksumType auto: set checksumType to sha256 or sha512"
                ));
            }
            match c.len() {
                32 => "md5",
                64 => "sha256",
                128 => "sha512",
                n => {
                    return Err(format!(
                    "spec.image.checksum has {n} characters: not an md5, sha256 or sha512 digest"
                ))
                }
            }
        }
        Some(other) => {
            return Err(format!(
                "spec.image.checksumType {other:?} is not supported (md5, sha256, sha512, auto)"
            ))
        }
    };
    if !is_url && !c.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "spec.image.checksum {c:?} is neither a hex digest nor a URL"
        ));
    }
    Ok(format!("{algo}:{c}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_map_to_the_agents_form() {
        let img = |c: &str, t: Option<&str>| Image {
            url: "http://x/i.raw".into(),
            checksum: c.into(),
            checksum_type: t.map(Into::into),
            format: None,
        };
        let h64 = "ab".repeat(32);
        assert_eq!(
            agent_checksum(&img(&h64, None)).unwrap(),
            format!("sha256:{h64}")
        );
        assert_eq!(
            agent_checksum(&img(&"c".repeat(32), Some("auto"))).unwrap(),
            format!("md5:{}", "c".repeat(32))
        );
        assert_eq!(
            agent_checksum(&img("http://x/SHA256SUMS", Some("sha256"))).unwrap(),
            "sha256:http://x/SHA256SUMS"
        );
        assert!(agent_checksum(&img("http://x/SUMS", None))
            .unwrap_err()
            .contains("checksumType"));
        assert!(agent_checksum(&img("abc", None))
            .unwrap_err()
            .contains("3 characters"));
        assert!(agent_checksum(&img(&"z".repeat(64), Some("sha256")))
            .unwrap_err()
            .contains("neither"));
        assert!(agent_checksum(&img(&h64, Some("crc32")))
            .unwrap_err()
            .contains("not supported"));
        assert!(agent_checksum(&img("", None))
            .unwrap_err()
            .contains("empty"));
    }

    #[test]
    fn tokens_are_43_url_safe_characters_and_differ() {
        let a = controller_agentapi::mint_token().unwrap();
        let b = controller_agentapi::mint_token().unwrap();
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
        assert_eq!(token_hash(&a).len(), 64);
    }
}
