//! What the reconciler persisted, written back to the API server: each host's metal3 status (by
//! server-side apply on the status subresource, exactly [`crate::view::status_json`]), its
//! HardwareData once inspected (server-side apply; owned by the host, so it goes with it), a
//! core/v1 Event per recorded event, and — once a deleted host is forgotten — the removal of the
//! finalizer.
//!
//! The reconciler only marks hosts dirty (a set, so bursts of agent progress coalesce into one
//! write per host) and queues Events (bounded; beyond the bound they are dropped here but kept
//! in the store's log). One task does the writes, in order, and remembers what it last wrote
//! so an unchanged status is not written again.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event as KubeEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{bmh_resource, deleting, has_finalizer, remove_finalizer, Objects, FIELD_MANAGER};
use crate::model::HostKey;
use crate::reconciler::Publish;
use crate::store::{EventRecord, Store};

/// Events queued for the API server at most.
const EVENTS_QUEUED: usize = 1024;

/// Distinct Events remembered for aggregation (client-go's EventCorrelator keeps 4096).
const EVENTS_REMEMBERED: usize = 4096;

/// What makes two Events the same one said again: client-go's aggregation key (the involved
/// object, type, reason and message). A host backing off on the same error then shows one
/// Event whose count and lastTimestamp grow, as `kubectl describe` users know from metal3,
/// instead of a new Event per retry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EventKey {
    host: HostKey,
    uid: Option<String>,
    warning: bool,
    reason: String,
    message: String,
}

/// The Event the server holds for a key: its name, and how many times it was said.
#[derive(Debug, Clone)]
struct Posted {
    name: String,
    count: i32,
}

#[derive(Default)]
struct Written {
    status: Option<Value>,
    hardware: Option<Value>,
}

/// Writes hosts' status, HardwareData, Events and finalizer removals.
pub struct Publisher {
    client: Client,
    store: Arc<Store>,
    objects: Objects,
    identity: String,
    dirty: Mutex<BTreeSet<HostKey>>,
    wake: Notify,
    events_tx: mpsc::Sender<EventRecord>,
    events_rx: Mutex<Option<mpsc::Receiver<EventRecord>>>,
    written: Mutex<HashMap<HostKey, Written>>,
    posted: Mutex<HashMap<EventKey, Posted>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publish for Publisher {
    fn host_changed(&self, key: &HostKey) {
        self.dirty.lock().unwrap().insert(key.clone());
        self.wake.notify_one();
    }

    fn events(&self, events: &[EventRecord]) {
        for e in events {
            if self.events_tx.try_send(e.clone()).is_err() {
                warn!(host = %e.host, reason = %e.reason, "too many Events queued for the API server; this one is only in the store");
            }
        }
    }
}

fn time(ms: u64) -> Time {
    Time(Timestamp::from_millisecond(ms as i64).unwrap_or(Timestamp::UNIX_EPOCH))
}

impl Publisher {
    /// A publisher reading records from `store` and host objects from `objects`.
    pub fn new(client: Client, store: Arc<Store>, objects: Objects, identity: String) -> Arc<Self> {
        let (events_tx, rx) = mpsc::channel(EVENTS_QUEUED);
        Arc::new(Publisher {
            client,
            store,
            objects,
            identity,
            dirty: Mutex::default(),
            wake: Notify::new(),
            events_tx,
            events_rx: Mutex::new(Some(rx)),
            written: Mutex::default(),
            posted: Mutex::default(),
        })
    }

    /// Marks every known host dirty (at start: the status on the server may be stale).
    pub fn mark_all(&self) {
        let keys: Vec<HostKey> = self.objects.lock().unwrap().keys().cloned().collect();
        self.dirty.lock().unwrap().extend(keys);
        self.wake.notify_one();
    }

    /// Writes until `cancel` fires. Failed writes are tried again a few seconds later.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let Some(mut events) = self.events_rx.lock().unwrap().take() else {
            return;
        };
        let mut retry = tokio::time::interval(super::RETRY);
        let mut failed: BTreeSet<HostKey> = BTreeSet::new();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {
                    let keys = std::mem::take(&mut *self.dirty.lock().unwrap());
                    for k in keys {
                        if let Err(e) = self.host(&k).await {
                            warn!(host = %k, error = %crate::error_chain(&e), "could not publish the host");
                            failed.insert(k);
                        }
                    }
                }
                Some(e) = events.recv() => self.event(&e).await,
                _ = retry.tick() => {
                    if !failed.is_empty() {
                        self.dirty.lock().unwrap().append(&mut failed);
                        self.wake.notify_one();
                    }
                }
            }
        }
    }

    /// Writes one host's status and HardwareData if they changed, or drops the finalizer of a
    /// deleted host the reconciler has forgotten.
    async fn host(&self, key: &HostKey) -> Result<(), kube::Error> {
        let obj = self.objects.lock().unwrap().get(key).cloned();
        let Some(obj) = obj else {
            self.written.lock().unwrap().remove(key);
            return Ok(());
        };
        let rec = match self.store.host(key) {
            Ok(r) => r,
            Err(e) => {
                warn!(host = %key, error = %crate::error_chain(&e), "could not read the host's record");
                return Ok(());
            }
        };
        let Some(rec) = rec else {
            self.written.lock().unwrap().remove(key);
            if deleting(&obj) && has_finalizer(&obj) {
                remove_finalizer(&self.client, &obj).await?;
            }
            return Ok(());
        };
        let status = crate::view::status_json(&rec);
        let same = self
            .written
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|w| w.status.as_ref() == Some(&status));
        if !same {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &key.namespace, &bmh_resource());
            let body = json!({
                "apiVersion": "metal3.io/v1alpha1",
                "kind": "BareMetalHost",
                "status": status,
            });
            match api
                .patch_status(
                    &key.name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
            {
                Ok(_) => {}
                // Gone meanwhile: nothing to write to.
                Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
                Err(e) => return Err(e),
            }
            debug!(host = %key, state = %rec.status.state, "status written");
            self.written
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_default()
                .status = Some(status);
        }
        let Some(hd) = crate::view::hardware_data(&rec) else {
            return Ok(());
        };
        let hd = serde_json::to_value(&hd).unwrap_or(Value::Null);
        let same = self
            .written
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|w| w.hardware.as_ref() == Some(&hd));
        if !same {
            let ar = ApiResource::erase::<controller_api::HardwareData>(&());
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &key.namespace, &ar);
            api.patch(
                &key.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&hd),
            )
            .await?;
            debug!(host = %key, "HardwareData written");
            self.written
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_default()
                .hardware = Some(hd);
        }
        Ok(())
    }

    /// Posts one core/v1 Event about a host (as metal3 does: reason, message, the host as the
    /// involved object) — or, when the same Event was posted before, counts it again on that
    /// one (a merge patch of count and lastTimestamp), as client-go's recorder does. If that
    /// Event has gone (Events expire, an hour by default), a new one is posted.
    async fn event(&self, e: &EventRecord) {
        let uid = self
            .objects
            .lock()
            .unwrap()
            .get(&e.host)
            .and_then(|o| o.metadata.uid.clone());
        let at = time(e.at_ms);
        let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), &e.host.namespace);
        let key = EventKey {
            host: e.host.clone(),
            uid: uid.clone(),
            warning: e.warning,
            reason: e.reason.clone(),
            message: e.message.clone(),
        };
        let seen = self.posted.lock().unwrap().get(&key).cloned();
        if let Some(p) = seen {
            let count = p.count.saturating_add(1);
            let patch = json!({"count": count, "lastTimestamp": at});
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            match api.patch(&p.name, &pp, &Patch::Merge(&patch)).await {
                Ok(_) => {
                    self.posted.lock().unwrap().insert(
                        key,
                        Posted {
                            name: p.name,
                            count,
                        },
                    );
                    return;
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    self.posted.lock().unwrap().remove(&key);
                }
                Err(err) => {
                    warn!(host = %e.host, reason = %e.reason, error = %crate::error_chain(&err), "could not count an Event again");
                    return;
                }
            }
        }
        let ev = KubeEvent {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", e.host.name)),
                namespace: Some(e.host.namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("metal3.io/v1alpha1".into()),
                kind: Some("BareMetalHost".into()),
                name: Some(e.host.name.clone()),
                namespace: Some(e.host.namespace.clone()),
                uid,
                ..ObjectReference::default()
            },
            reason: Some(e.reason.clone()),
            message: Some(e.message.clone()),
            type_: Some(if e.warning { "Warning" } else { "Normal" }.into()),
            source: Some(EventSource {
                component: Some(FIELD_MANAGER.into()),
                host: None,
            }),
            reporting_component: Some(FIELD_MANAGER.into()),
            reporting_instance: Some(self.identity.clone()),
            first_timestamp: Some(at.clone()),
            last_timestamp: Some(at),
            count: Some(1),
            ..KubeEvent::default()
        };
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match api.create(&pp, &ev).await {
            Ok(created) => {
                if let Some(name) = created.metadata.name {
                    let mut posted = self.posted.lock().unwrap();
                    if posted.len() >= EVENTS_REMEMBERED {
                        posted.clear();
                    }
                    posted.insert(key, Posted { name, count: 1 });
                }
            }
            Err(err) => {
                warn!(host = %e.host, reason = %e.reason, error = %crate::error_chain(&err), "could not post an Event")
            }
        }
    }
}
