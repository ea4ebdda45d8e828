//! The Kubernetes store front: the same [`Reconciler`] the manifest directory feeds, fed instead
//! by the API server of a management cluster.
//!
//! - **In:** a watch on BareMetalHosts (`metal3.io/v1alpha1`, every namespace or one) and one on
//!   Secrets. Hosts go to [`Reconciler::apply`] once they carry metal3's finalizer
//!   (`baremetalhost.metal3.io`, added before anything is done to the machine); a host with a
//!   `deletionTimestamp` goes to [`Reconciler::remove`], and the finalizer is dropped only once
//!   the reconciler has forgotten it (powered off, cleaned). Only the Secrets a host refers to
//!   (BMC credentials, userData, networkData, metaData) are kept: read with a GET when a host
//!   first names one, then followed by the watch.
//! - **Out:** [`publish::Publisher`] — status by server-side apply on `/status`
//!   (field manager `ferrox-controller`), the HardwareData, core/v1 Events, finalizer removal.
//! - **Leader election:** [`lease::Elector`]; the binary acquires the Lease before it opens the
//!   store and starts any of this, and stops everything when the Lease is lost.
//!
//! **Where the controller's private state lives in this mode.** The BareMetalHost status is a
//! projection for users; what the controller must not lose and must not publish — each host's
//! full [`crate::model::HostStatus`] (current command ids, agent boot counters, retry times),
//! the boot tokens (SHA-256 only), the internal CA's key — stays in the same redb file as in the
//! embedded mode, on a PersistentVolume mounted at `--state` (`controller/deploy/controller/`).
//! redb commits are durable, so a restarted (or rescheduled) leader carries on from the last
//! step. The Lease is what keeps two replicas off the one file: the database is opened only
//! after the Lease is held. Losing the volume loses the CA (agents and netboot pin it by
//! fingerprint and learn the new one from the feed) and the in-flight commands: hosts start
//! again from registering, as after a fresh install; BMC credentials were never copied there.

pub mod lease;
pub mod publish;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller_api::BareMetalHost;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::model::{HostKey, SecretRef};
use crate::reconciler::{secret_refs, Desired, Reconciler};
use crate::store::{EventRecord, StoreError};

/// metal3's finalizer on BareMetalHosts.
pub const FINALIZER: &str = "baremetalhost.metal3.io";

/// The field manager of every write (server-side apply owner, `managedFields`).
pub const FIELD_MANAGER: &str = "ferrox-controller";

/// How often failed finalizer writes and status publications are tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Settings of the Kubernetes store front.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch only this namespace (else all).
    pub namespace: Option<String>,
    /// This replica, for Events' `reportingInstance`.
    pub identity: String,
}

/// The BareMetalHosts as last seen on the API server, by key.
pub type Objects = Arc<Mutex<HashMap<HostKey, DynamicObject>>>;

fn bmh_resource() -> ApiResource {
    ApiResource::erase::<BareMetalHost>(&())
}

fn key_of(o: &DynamicObject) -> Option<HostKey> {
    Some(HostKey::new(
        o.metadata.namespace.as_deref().unwrap_or("default"),
        o.metadata.name.as_deref()?,
    ))
}

fn has_finalizer(o: &DynamicObject) -> bool {
    o.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

fn deleting(o: &DynamicObject) -> bool {
    o.metadata.deletion_timestamp.is_some()
}

/// The object as the reconciler keeps it: without what changes on every write of ours
/// (`status`, `resourceVersion`, `managedFields`), so our own status updates do not look like
/// new specs.
fn desired_object(o: &DynamicObject) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            meta.remove("managedFields");
        }
    }
    v
}

/// Sets the host's finalizers to `finalizers`, guarded by the `resourceVersion` we read (a
/// `409 Conflict` means someone else wrote first; the watch brings the newer object).
async fn set_finalizers(
    client: &Client,
    o: &DynamicObject,
    finalizers: Vec<String>,
) -> Result<DynamicObject, kube::Error> {
    let ns = o.metadata.namespace.as_deref().unwrap_or("default");
    let name = o.metadata.name.as_deref().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &bmh_resource());
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": o.metadata.resource_version,
    }});
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        },
        &Patch::Merge(&patch),
    )
    .await
}

/// Drops our finalizer from a deleted host, so the API server can remove it.
pub(crate) async fn remove_finalizer(
    client: &Client,
    o: &DynamicObject,
) -> Result<(), kube::Error> {
    if !has_finalizer(o) {
        return Ok(());
    }
    let rest: Vec<String> = o
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    match set_finalizers(client, o, rest).await {
        Ok(_) => {
            info!(host = ?key_of(o).map(|k| k.to_string()), "finalizer removed: the host can go");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The watch side: turns BareMetalHost and Secret events into the reconciler's desired state.
struct Feed {
    client: Client,
    rec: Arc<Reconciler>,
    objects: Objects,
    publisher: Arc<publish::Publisher>,
    /// Hosts whose finalizer write failed for another reason than a conflict: tried again.
    retry: HashSet<HostKey>,
}

impl Feed {
    fn warn_event(&self, key: &HostKey, reason: &str, message: String) {
        use crate::reconciler::Publish;
        warn!(host = %key, reason, "{message}");
        self.publisher.events(&[EventRecord {
            host: key.clone(),
            at_ms: crate::reconciler::now_ms(),
            warning: true,
            reason: reason.into(),
            message,
        }]);
    }

    async fn host(&mut self, o: DynamicObject) {
        let Some(key) = key_of(&o) else { return };
        self.retry.remove(&key);
        self.objects.lock().unwrap().insert(key.clone(), o.clone());
        if deleting(&o) {
            self.rec.remove(&key);
            let forgotten = matches!(self.rec.store().host(&key), Ok(None));
            if forgotten && !self.rec.desired_keys().contains(&key) {
                if let Err(e) = remove_finalizer(&self.client, &o).await {
                    warn!(host = %key, error = %crate::error_chain(&e), "could not remove the finalizer");
                    self.retry.insert(key);
                }
            }
            return;
        }
        let object = desired_object(&o);
        let spec = match crate::manifests::host_spec(&object) {
            Ok((_, spec)) => spec,
            Err(why) => {
                self.warn_event(
                    &key,
                    "InvalidSpec",
                    format!("the host is not applied: {why}"),
                );
                return;
            }
        };
        if !has_finalizer(&o) {
            let mut f = o.metadata.finalizers.clone().unwrap_or_default();
            f.push(FINALIZER.into());
            match set_finalizers(&self.client, &o, f).await {
                Ok(_) => debug!(host = %key, "finalizer added"),
                Err(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found() => return,
                Err(e) => {
                    warn!(host = %key, error = %crate::error_chain(&e), "could not add the finalizer");
                    self.retry.insert(key);
                    return;
                }
            }
        }
        for r in secret_refs(&key, &spec) {
            if !self.rec.has_secret(&r) {
                self.fetch_secret(&r).await;
            }
        }
        self.rec.apply(key, Desired { spec, object });
    }

    async fn fetch_secret(&self, r: &SecretRef) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &r.namespace);
        match api.get_opt(&r.name).await {
            Ok(Some(s)) => self.rec.set_secret(r.clone(), secret_data(&s)),
            // Not there yet: the host says so in its status; the watch brings it when created.
            Ok(None) => {}
            Err(e) => {
                warn!(secret = %format!("{}/{}", r.namespace, r.name), error = %crate::error_chain(&e), "could not read a Secret")
            }
        }
    }

    fn host_gone(&mut self, o: &DynamicObject) {
        let Some(key) = key_of(o) else { return };
        self.objects.lock().unwrap().remove(&key);
        self.retry.remove(&key);
        // Deleted without our finalizer having been honoured: the reconciler still powers the
        // host off and forgets it.
        self.rec.remove(&key);
    }

    fn secret(&self, s: &Secret, gone: bool) {
        let r = secret_ref(s);
        if !self.rec.wants_secret(&r) {
            return;
        }
        if gone {
            self.rec.remove_secret(&r);
        } else {
            self.rec.set_secret(r, secret_data(s));
        }
    }

    async fn retry_pending(&mut self) {
        let keys: Vec<HostKey> = self.retry.drain().collect();
        for k in keys {
            let o = self.objects.lock().unwrap().get(&k).cloned();
            if let Some(o) = o {
                self.host(o).await;
            }
        }
    }
}

fn secret_ref(s: &Secret) -> SecretRef {
    SecretRef {
        namespace: s.metadata.namespace.clone().unwrap_or_default(),
        name: s.metadata.name.clone().unwrap_or_default(),
    }
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    s.data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Runs the Kubernetes store front around `rec` until `cancel` fires: the watches, the
/// publisher, and — once the first list of hosts is in, so no stored host is mistaken for a
/// deleted one — the reconciler itself. The caller holds the Lease.
pub async fn serve(
    client: Client,
    rec: Arc<Reconciler>,
    settings: Settings,
    cancel: CancellationToken,
) -> Result<(), StoreError> {
    let objects: Objects = Arc::default();
    let publisher = publish::Publisher::new(
        client.clone(),
        rec.store().clone(),
        objects.clone(),
        settings.identity.clone(),
    );
    rec.publish_to(publisher.clone());

    let ar = bmh_resource();
    let (hosts_api, secrets_api): (Api<DynamicObject>, Api<Secret>) = match &settings.namespace {
        Some(ns) => (
            Api::namespaced_with(client.clone(), ns, &ar),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all_with(client.clone(), &ar), Api::all(client.clone())),
    };
    let mut hosts = watcher::watcher(hosts_api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut secrets = watcher::watcher(secrets_api, watcher::Config::default())
        .default_backoff()
        .boxed();

    let mut tasks = JoinSet::new();
    tasks.spawn(publisher.clone().run(cancel.clone()));
    let mut feed = Feed {
        client,
        rec: rec.clone(),
        objects: objects.clone(),
        publisher: publisher.clone(),
        retry: HashSet::new(),
    };
    let mut listed: Option<HashSet<HostKey>> = None;
    let mut secrets_listed: Option<(Vec<SecretRef>, HashSet<SecretRef>)> = None;
    let mut runner = None;
    let mut tick = tokio::time::interval(RETRY);
    let result = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            ev = hosts.next() => match ev {
                Some(Ok(Event::Init)) => listed = Some(HashSet::new()),
                Some(Ok(Event::InitApply(o))) => {
                    if let (Some(l), Some(k)) = (listed.as_mut(), key_of(&o)) {
                        l.insert(k);
                    }
                    feed.host(o).await;
                }
                Some(Ok(Event::InitDone)) => {
                    let seen = listed.take().unwrap_or_default();
                    for k in rec.desired_keys() {
                        if !seen.contains(&k) {
                            objects.lock().unwrap().remove(&k);
                            rec.remove(&k);
                        }
                    }
                    if runner.is_none() {
                        info!(hosts = seen.len(), "BareMetalHosts listed; reconciling");
                        runner = Some(tokio::spawn(rec.clone().run(cancel.clone())));
                        // Publish every host once: the status on the server may be stale.
                        publisher.mark_all();
                    }
                }
                Some(Ok(Event::Apply(o))) => feed.host(o).await,
                Some(Ok(Event::Delete(o))) => feed.host_gone(&o),
                Some(Err(e)) => error!(error = %crate::error_chain(&e), "watching BareMetalHosts"),
                None => break Ok(()),
            },
            ev = secrets.next() => match ev {
                // A (re)list: the Secrets known when it began that it does not hold were
                // deleted while the watch was down (those fetched meanwhile are kept: the list
                // may predate them, and the watch that follows brings their deletion).
                Some(Ok(Event::Init)) => {
                    secrets_listed = Some((rec.secret_refs(), HashSet::new()));
                }
                Some(Ok(Event::InitApply(s))) => {
                    if let Some((_, l)) = secrets_listed.as_mut() {
                        l.insert(secret_ref(&s));
                    }
                    feed.secret(&s, false);
                }
                Some(Ok(Event::InitDone)) => {
                    let (before, listed) = secrets_listed.take().unwrap_or_default();
                    for r in before.into_iter().filter(|r| !listed.contains(r)) {
                        info!(secret = %format!("{}/{}", r.namespace, r.name), "Secret gone while the watch was down: forgotten");
                        rec.remove_secret(&r);
                    }
                }
                Some(Ok(Event::Apply(s))) => feed.secret(&s, false),
                Some(Ok(Event::Delete(s))) => feed.secret(&s, true),
                Some(Err(e)) => error!(error = %crate::error_chain(&e), "watching Secrets"),
                None => break Ok(()),
            },
            _ = tick.tick() => feed.retry_pending().await,
        }
    };
    cancel.cancel();
    let ran = match runner {
        Some(r) => match r.await {
            Ok(r) => r,
            Err(e) => {
                error!("the reconciler stopped: {e}");
                Ok(())
            }
        },
        None => Ok(()),
    };
    while tasks.join_next().await.is_some() {}
    result.and(ran)
}
