//! The Kubernetes store front against a mock API server (tower-test, as kube-rs/controller-rs
//! tests): each test serves a `kube::Client` from a scripted responder and asserts the exact
//! requests the controller makes — method, path, query, content type and body.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrox_controller::kubestore::lease::{Elector, LeaseConfig, Round};
use ferrox_controller::kubestore::{self, Settings};
use ferrox_controller::machine::Limits;
use ferrox_controller::model::{HostKey, Power};
use ferrox_controller::reconciler::{
    Bmc, BmcTarget, BootTarget, BoxFut, Config, ConfigDriveFn, Reconciler,
};
use ferrox_controller::store::{HostRecord, Store};
use http::{Request, Response};
use http_body_util::BodyExt;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// One request as the mock API server saw it (or a BMC call, in the same log, for ordering).
#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

impl Req {
    fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }
    fn watch(&self) -> bool {
        self.query.contains("watch=true")
    }
}

enum Reply {
    Json(u16, Value),
    /// Never answered (a watch that stays open).
    Hold,
}

type Log = Arc<Mutex<Vec<Req>>>;

fn not_found() -> Reply {
    Reply::Json(
        404,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "not found", "reason": "NotFound", "code": 404}),
    )
}

fn conflict() -> Reply {
    Reply::Json(
        409,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "the object has been modified", "reason": "Conflict", "code": 409}),
    )
}

/// A client whose every request is logged and answered by `respond`.
fn mock(log: Log, mut respond: impl FnMut(&Req) -> Reply + Send + 'static) -> Client {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let r = Req {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or("").to_string(),
                content_type: parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            // Logged before answering, so a request the responder rejects (panics on) is seen.
            log.lock().unwrap().push(r.clone());
            let reply = respond(&r);
            match reply {
                Reply::Json(code, v) => send.send_response(
                    Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&v).unwrap()))
                        .unwrap(),
                ),
                Reply::Hold => held.push(send),
            }
        }
    });
    Client::new(svc, "default")
}

/// Waits (up to 20 s) for a logged request matching `f`; returns the log up to and including it.
async fn wait_for(log: &Log, what: &str, f: impl Fn(&Req) -> bool) -> Vec<Req> {
    for _ in 0..400 {
        {
            let l = log.lock().unwrap();
            if let Some(i) = l.iter().position(&f) {
                return l[..=i].to_vec();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {what}; requests: {:#?}", log.lock().unwrap());
}

// ---- leader election ----

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ferrox-system/leases";
const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/ferrox-system/leases/ferrox-controller";

fn elector(client: Client) -> Elector {
    let mut cfg = LeaseConfig::new("ferrox-system", "ferrox-controller", "ferrox-a");
    cfg.retry_every = Duration::from_millis(20);
    Elector::new(client, cfg)
}

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn lease(holder: &str, renewed: &str, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "ferrox-controller", "namespace": "ferrox-system", "resourceVersion": "7"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "acquireTime": "2026-01-01T00:00:00.000000Z", "renewTime": renewed,
                 "leaseTransitions": transitions}
    })
}

// 2026-01-01T00:00:00Z
const T0: i64 = 1_767_225_600;

#[tokio::test]
async fn no_lease_yet_creates_one_held_by_us() {
    let log = Log::default();
    let client = mock(log.clone(), |r| {
        if r.method == "GET" {
            not_found()
        } else {
            Reply::Json(201, r.body.clone())
        }
    });
    assert_eq!(
        elector(client).round(at(T0 + 30)).await.unwrap(),
        Round::Held
    );
    let l = log.lock().unwrap();
    assert_eq!(l.len(), 2, "{l:#?}");
    assert!(l[0].is("GET", LEASE));
    assert!(l[1].is("POST", LEASES));
    assert_eq!(l[1].query, "&fieldManager=ferrox-controller");
    assert_eq!(
        l[1].body,
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "ferrox-controller", "namespace": "ferrox-system"},
            "spec": {"holderIdentity": "ferrox-a", "leaseDurationSeconds": 15,
                     "acquireTime": "2026-01-01T00:00:30.000000Z",
                     "renewTime": "2026-01-01T00:00:30.000000Z", "leaseTransitions": 0}
        })
    );
}

#[tokio::test]
async fn our_lease_is_renewed_with_its_resource_version() {
    let log = Log::default();
    let client = mock(log.clone(), |r| {
        if r.method == "GET" {
            Reply::Json(200, lease("ferrox-a", "2026-01-01T00:00:25.000000Z", 3))
        } else {
            Reply::Json(200, r.body.clone())
        }
    });
    assert_eq!(
        elector(client).round(at(T0 + 30)).await.unwrap(),
        Round::Held
    );
    let l = log.lock().unwrap();
    assert_eq!(l.len(), 2);
    assert!(l[1].is("PUT", LEASE));
    assert_eq!(l[1].query, "&fieldManager=ferrox-controller");
    let mut want = lease("ferrox-a", "2026-01-01T00:00:30.000000Z", 3);
    want["metadata"]["resourceVersion"] = json!("7");
    assert_eq!(l[1].body, want, "renewTime moves, nothing else");
}

#[tokio::test]
async fn another_holders_current_lease_is_left_alone() {
    let log = Log::default();
    let client = mock(log.clone(), |r| {
        assert_eq!(r.method, "GET", "wrote while another replica leads: {r:?}");
        Reply::Json(200, lease("ferrox-b", "2026-01-01T00:00:20.000000Z", 1))
    });
    // Renewed 10 s ago, 15 s lease: still ferrox-b's.
    assert_eq!(
        elector(client).round(at(T0 + 30)).await.unwrap(),
        Round::HeldBy("ferrox-b".into())
    );
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_follower_only_looks_until_the_lease_is_free() {
    let log = Log::default();
    let client = mock(log.clone(), |r| {
        assert_eq!(r.method, "GET", "wrote while another replica leads: {r:?}");
        // Renewed just now, by the other replica.
        let now = Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        Reply::Json(200, lease("ferrox-b", &now, 1))
    });
    let e = elector(client);
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.cancel();
    });
    assert!(!e.acquire(&cancel).await, "never leads");
    let l = log.lock().unwrap();
    assert!(l.len() >= 3, "the follower looked again: {}", l.len());
    assert!(l.iter().all(|r| r.is("GET", LEASE)), "{l:#?}");
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_as_a_new_term() {
    let log = Log::default();
    let client = mock(log.clone(), |r| {
        if r.method == "GET" {
            Reply::Json(200, lease("ferrox-b", "2026-01-01T00:00:10.000000Z", 4))
        } else {
            Reply::Json(200, r.body.clone())
        }
    });
    // Renewed 20 s ago, 15 s lease: expired.
    assert_eq!(
        elector(client).round(at(T0 + 30)).await.unwrap(),
        Round::Held
    );
    let l = log.lock().unwrap();
    assert!(l[1].is("PUT", LEASE));
    assert_eq!(
        l[1].body["spec"],
        json!({"holderIdentity": "ferrox-a", "leaseDurationSeconds": 15,
               "acquireTime": "2026-01-01T00:00:30.000000Z",
               "renewTime": "2026-01-01T00:00:30.000000Z", "leaseTransitions": 5})
    );
    assert_eq!(l[1].body["metadata"]["resourceVersion"], "7");
}

#[tokio::test]
async fn losing_the_race_for_an_expired_lease_leaves_us_following() {
    let log = Log::default();
    let client = mock(log.clone(), |r| {
        if r.method == "GET" {
            Reply::Json(200, lease("ferrox-b", "2026-01-01T00:00:10.000000Z", 4))
        } else {
            conflict()
        }
    });
    assert_eq!(
        elector(client).round(at(T0 + 30)).await.unwrap(),
        Round::HeldBy("ferrox-b".into())
    );
}

#[tokio::test]
async fn release_gives_the_lease_back() {
    let log = Log::default();
    let client = mock(log.clone(), |r| {
        if r.method == "GET" {
            Reply::Json(200, lease("ferrox-a", "2026-01-01T00:00:25.000000Z", 2))
        } else {
            Reply::Json(200, r.body.clone())
        }
    });
    elector(client).release().await.unwrap();
    let l = log.lock().unwrap();
    assert!(l[1].is("PUT", LEASE));
    assert_eq!(
        l[1].body["spec"],
        json!({"leaseDurationSeconds": 1,
               "acquireTime": "2026-01-01T00:00:00.000000Z",
               "renewTime": "2026-01-01T00:00:25.000000Z", "leaseTransitions": 2})
    );
}

// ---- hosts ----

/// A BMC that says yes, and logs each call in the request log (so its order against API writes
/// can be asserted).
struct FakeBmc {
    log: Log,
    power: Mutex<Power>,
}

impl FakeBmc {
    fn call(&self, what: &str) {
        self.log.lock().unwrap().push(Req {
            method: "BMC".into(),
            path: what.into(),
            query: String::new(),
            content_type: String::new(),
            body: Value::Null,
        });
    }
}

impl Bmc for FakeBmc {
    // Slow enough that the status of the step before (registering, powering off) is written
    // before the next step replaces it.
    fn probe<'a>(&'a self, _: &'a BmcTarget) -> BoxFut<'a, Result<Power, String>> {
        self.call("probe");
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(*self.power.lock().unwrap())
        })
    }
    fn power_state<'a>(&'a self, _: &'a BmcTarget) -> BoxFut<'a, Result<Power, String>> {
        self.call("power state");
        Box::pin(async move { Ok(*self.power.lock().unwrap()) })
    }
    fn power<'a>(&'a self, _: &'a BmcTarget, on: bool, _: bool) -> BoxFut<'a, Result<(), String>> {
        self.call(if on { "power on" } else { "power off" });
        *self.power.lock().unwrap() = if on { Power::On } else { Power::Off };
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(())
        })
    }
    fn reset<'a>(&'a self, _: &'a BmcTarget) -> BoxFut<'a, Result<(), String>> {
        self.call("reset");
        Box::pin(async { Ok(()) })
    }
    fn boot_once<'a>(
        &'a self,
        _: &'a BmcTarget,
        t: BootTarget,
        _: ferrox_controller::model::BootMode,
    ) -> BoxFut<'a, Result<(), String>> {
        self.call(&format!("boot once {t:?}"));
        Box::pin(async { Ok(()) })
    }
}

fn reconciler(dir: &std::path::Path, log: Log, power: Power) -> Arc<Reconciler> {
    let store = Arc::new(Store::open(&dir.join("state.redb")).unwrap());
    let drive: Box<ConfigDriveFn> = Box::new(|_, _, _| Ok(None));
    Reconciler::new(
        store,
        Arc::new(FakeBmc {
            log,
            power: Mutex::new(power),
        }),
        drive,
        Config {
            limits: Limits::default(),
            provisioning_limit: 10,
            workers: 2,
            agent_url: "https://172.22.0.1:9443".into(),
            ca_fingerprint: "sha256:00".into(),
            token_ttl: Duration::from_secs(900),
            ramdisk_cmdline: None,
        },
    )
}

/// metal3's worker-0 example (`shared/metal3/examples`), as the API server returns it.
fn example() -> (Value, Value) {
    let text = include_str!("../api/tests/metal3/examples/bmo-examples-worker-0.yaml");
    let mut docs = serde_yaml::Deserializer::from_str(text)
        .map(|d| {
            serde_json::to_value(<serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap())
                .unwrap()
        })
        .filter(|v| !v.is_null());
    let mut secret = docs.next().unwrap();
    let mut host = docs.next().unwrap();
    assert_eq!(host["kind"], "BareMetalHost");
    for (o, rv) in [(&mut secret, "3"), (&mut host, "5")] {
        o["metadata"]["namespace"] = json!("default");
        o["metadata"]["uid"] = json!(format!("uid-{}", o["metadata"]["name"].as_str().unwrap()));
        o["metadata"]["resourceVersion"] = json!(rv);
    }
    (host, secret)
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Reply {
    Reply::Json(
        200,
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "10"}, "items": items}),
    )
}

const BMHS: &str = "/apis/metal3.io/v1alpha1/baremetalhosts";
const HOST: &str = "/apis/metal3.io/v1alpha1/namespaces/default/baremetalhosts/worker-0";
const HOST_STATUS: &str =
    "/apis/metal3.io/v1alpha1/namespaces/default/baremetalhosts/worker-0/status";
const EVENTS: &str = "/api/v1/namespaces/default/events";

/// A responder for one host (and its BMC Secret): lists, held watches, writes echoed back.
fn api_server(host: Value, secret: Value) -> impl FnMut(&Req) -> Reply + Send + 'static {
    let host = Arc::new(Mutex::new(host));
    move |r: &Req| {
        if r.watch() {
            return Reply::Hold;
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", BMHS) => list(
                "BareMetalHostList",
                "metal3.io/v1alpha1",
                vec![host.lock().unwrap().clone()],
            ),
            ("GET", "/api/v1/secrets") => list("SecretList", "v1", vec![secret.clone()]),
            ("GET", "/api/v1/namespaces/default/secrets/worker-0-bmc-secret") => {
                Reply::Json(200, secret.clone())
            }
            ("PATCH", HOST) => {
                let mut h = host.lock().unwrap();
                h["metadata"]["finalizers"] = r.body["metadata"]["finalizers"].clone();
                h["metadata"]["resourceVersion"] = json!("6");
                Reply::Json(200, h.clone())
            }
            ("PATCH", HOST_STATUS) => {
                let mut h = host.lock().unwrap().clone();
                h["status"] = r.body["status"].clone();
                Reply::Json(200, h)
            }
            ("POST", EVENTS) => Reply::Json(201, r.body.clone()),
            ("PATCH", p) if p.contains("/hardwaredata/") => Reply::Json(200, r.body.clone()),
            _ => not_found(),
        }
    }
}

fn start(client: Client, rec: Arc<Reconciler>) -> CancellationToken {
    let cancel = CancellationToken::new();
    tokio::spawn(kubestore::serve(
        client,
        rec,
        Settings {
            namespace: None,
            identity: "ferrox-a".into(),
        },
        cancel.clone(),
    ));
    cancel
}

fn state_of(r: &Req) -> &str {
    r.body["status"]["provisioning"]["state"]
        .as_str()
        .unwrap_or("")
}

/// The status without its timestamps (which are the time of each step).
fn untimed(mut status: Value) -> Value {
    assert!(status["lastUpdated"].is_string());
    status["lastUpdated"] = Value::Null;
    for c in status["conditions"].as_array_mut().unwrap() {
        assert!(c["lastTransitionTime"].is_string());
        c["lastTransitionTime"] = Value::Null;
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_host_gets_the_finalizer_then_registers_and_inspects() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    let (host, secret) = example();
    let client = mock(log.clone(), api_server(host, secret));
    let rec = reconciler(dir.path(), log.clone(), Power::Off);
    let cancel = start(client, rec.clone());

    let upto = wait_for(&log, "status patch: inspecting", |r| {
        r.is("PATCH", HOST_STATUS) && state_of(r) == "inspecting"
    })
    .await;

    // The watches: hosts in every namespace, and Secrets.
    assert!(upto
        .iter()
        .any(|r| r.is("GET", BMHS) && r.query == "&limit=500" && !r.watch()));
    assert!(upto
        .iter()
        .any(|r| r.is("GET", "/api/v1/secrets") && !r.watch()));

    // The finalizer goes on first, guarded by the resourceVersion read.
    let fin = upto
        .iter()
        .position(|r| r.is("PATCH", HOST))
        .expect("finalizer patch");
    let f = &upto[fin];
    assert_eq!(f.query, "&fieldManager=ferrox-controller");
    assert_eq!(f.content_type, "application/merge-patch+json");
    assert_eq!(
        f.body,
        json!({"metadata": {"finalizers": ["baremetalhost.metal3.io"], "resourceVersion": "5"}})
    );
    let first_act = upto
        .iter()
        .position(|r| r.method == "BMC")
        .expect("BMC call");
    let first_status = upto
        .iter()
        .position(|r| r.is("PATCH", HOST_STATUS))
        .unwrap();
    assert!(fin < first_act && fin < first_status, "{upto:#?}");
    // The BMC credentials were read once the host named them; userData (another namespace,
    // not there) was looked for too.
    assert!(upto.iter().any(|r| r.is(
        "GET",
        "/api/v1/namespaces/default/secrets/worker-0-bmc-secret"
    )));
    assert!(upto.iter().any(|r| r.is(
        "GET",
        "/api/v1/namespaces/openshift-machine-api/secrets/worker-user-data"
    )));

    // Status by server-side apply on /status, with metal3's whole status.
    let registering = upto
        .iter()
        .find(|r| r.is("PATCH", HOST_STATUS) && state_of(r) == "registering")
        .expect("a registering status");
    assert_eq!(
        registering.query,
        "&force=true&fieldManager=ferrox-controller"
    );
    assert_eq!(registering.content_type, "application/apply-patch+yaml");
    assert_eq!(registering.body["apiVersion"], "metal3.io/v1alpha1");
    assert_eq!(registering.body["kind"], "BareMetalHost");
    let cond = |t: &str, s: &str, reason: &str, msg: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": msg,
               "lastTransitionTime": null, "observedGeneration": 1})
    };
    assert_eq!(
        untimed(registering.body["status"].clone()),
        json!({
            "errorCount": 0,
            "errorMessage": "",
            "operationalStatus": "OK",
            "poweredOn": false,
            "provisioning": {"ID": "uid-worker-0", "state": "registering", "bootMode": "UEFI"},
            "provisioningFailCount": 0,
            "lastUpdated": null,
            "conditions": [
                cond("Manageable", "False", "NotRegistered", ""),
                cond("AvailableForProvisioning", "False", "Registering", ""),
                cond("Provisioned", "False", "Registering", ""),
                cond("Progressing", "True", "Registering", ""),
                cond("Healthy", "True", "NoError", ""),
                cond("Ready", "False", "Registering", ""),
            ],
        })
    );
    let inspecting = upto.last().unwrap();
    assert_eq!(
        inspecting.body["status"]["provisioning"]["state"],
        "inspecting"
    );
    // Booting the agent happened before the inspecting status could say so.
    assert!(upto.iter().any(|r| r.is("BMC", "boot once Pxe")));

    // An Event per transition, about the host.
    let ev = wait_for(&log, "a StateChanged event to inspecting", |r| {
        r.is("POST", EVENTS) && r.body["message"] == "registering -> inspecting"
    })
    .await
    .pop()
    .unwrap();
    assert_eq!(ev.query, "&fieldManager=ferrox-controller");
    let t = ev.body["firstTimestamp"].clone();
    assert!(t.is_string());
    assert_eq!(
        ev.body,
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": "worker-0.", "namespace": "default"},
            "involvedObject": {"apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
                               "name": "worker-0", "namespace": "default", "uid": "uid-worker-0"},
            "reason": "StateChanged",
            "message": "registering -> inspecting",
            "type": "Normal",
            "source": {"component": "ferrox-controller"},
            "reportingComponent": "ferrox-controller",
            "reportingInstance": "ferrox-a",
            "firstTimestamp": t, "lastTimestamp": t, "count": 1,
        })
    );
    // Stopped only now: the publisher stops at once when cancelled, so stopping at the
    // inspecting status (as this test once did) raced the Event it waits for above.
    cancel.cancel();
    // Nothing writes to the host object itself but the finalizer patch.
    let l = log.lock().unwrap();
    assert_eq!(l.iter().filter(|r| r.is("PATCH", HOST)).count(), 1);
    assert!(!l.iter().any(|r| r.method == "PUT" || r.method == "DELETE"));
}

/// A host the controller already knows, as the store has it after inspection.
fn stored(rec: &Reconciler, host: &Value, state: ferrox_controller::model::State, power: Power) {
    let (key, spec) = ferrox_controller::manifests::host_spec(host).unwrap();
    let mut inv = agent_proto::FullInventory::default();
    inv.hardware.hostname = Some("worker-0".into());
    inv.hardware.ram_mebibytes = Some(4096);
    let mut object = host.clone();
    object["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    object["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("deletionTimestamp");
    object["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("finalizers");
    rec.store()
        .update(&key, |_| {
            let mut rec = HostRecord {
                object,
                spec,
                status: Default::default(),
                created_ms: 1,
            };
            rec.status.state = state;
            rec.status.state_since_ms = 1_767_225_600_000;
            rec.status.power = power;
            rec.status.hardware = Some(inv);
            (Some(rec), ())
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inspected_host_gets_its_hardware_data_owned_by_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    let (mut host, secret) = example();
    host["metadata"]["finalizers"] = json!(["baremetalhost.metal3.io"]);
    // No image: the host stays available, so the status it publishes says so (with one, it
    // may already be provisioning when the publisher first writes).
    host["spec"].as_object_mut().unwrap().remove("image");
    let rec = reconciler(dir.path(), log.clone(), Power::Off);
    stored(
        &rec,
        &host,
        ferrox_controller::model::State::Available,
        Power::Off,
    );
    let client = mock(log.clone(), api_server(host, secret));
    let cancel = start(client, rec.clone());

    let hd = wait_for(&log, "HardwareData apply", |r| {
        r.method == "PATCH" && r.path.contains("/hardwaredata/")
    })
    .await
    .pop()
    .unwrap();
    cancel.cancel();
    assert_eq!(
        hd.path,
        "/apis/metal3.io/v1alpha1/namespaces/default/hardwaredata/worker-0"
    );
    assert_eq!(hd.query, "&force=true&fieldManager=ferrox-controller");
    assert_eq!(hd.content_type, "application/apply-patch+yaml");
    assert_eq!(
        hd.body,
        json!({
            "apiVersion": "metal3.io/v1alpha1", "kind": "HardwareData",
            "metadata": {
                "name": "worker-0", "namespace": "default",
                "ownerReferences": [{"apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
                    "name": "worker-0", "uid": "uid-worker-0", "controller": true}],
            },
            "spec": {"hardware": {"hostname": "worker-0", "ramMebibytes": 4096}},
        })
    );
    let l = log.lock().unwrap();
    assert!(
        !l.iter().any(|r| r.is("PATCH", HOST)),
        "the finalizer was there already"
    );
    let st = l
        .iter()
        .find(|r| r.is("PATCH", HOST_STATUS))
        .expect("status");
    assert_eq!(st.body["status"]["provisioning"]["state"], "available");
    assert_eq!(st.body["status"]["hardware"]["ramMebibytes"], 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_host_keeps_its_finalizer_until_powered_off_and_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    let (mut host, secret) = example();
    host["metadata"]["finalizers"] = json!(["example.com/other", "baremetalhost.metal3.io"]);
    host["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let rec = reconciler(dir.path(), log.clone(), Power::On);
    stored(
        &rec,
        &host,
        ferrox_controller::model::State::Available,
        Power::On,
    );
    // The controller has the credentials from before (a deleted host is not re-read).
    rec.set_secret(
        ferrox_controller::model::SecretRef {
            namespace: "default".into(),
            name: "worker-0-bmc-secret".into(),
        },
        BTreeMap::from([
            ("username".to_string(), b"admin".to_vec()),
            ("password".to_string(), b"password".to_vec()),
        ]),
    );
    let client = mock(log.clone(), api_server(host, secret));
    let cancel = start(client, rec.clone());

    let upto = wait_for(&log, "finalizer removal", |r| r.is("PATCH", HOST)).await;
    cancel.cancel();
    let f = upto.last().unwrap();
    assert_eq!(f.content_type, "application/merge-patch+json");
    assert_eq!(
        f.body,
        json!({"metadata": {"finalizers": ["example.com/other"], "resourceVersion": "5"}}),
        "only ours is removed"
    );
    let off = upto
        .iter()
        .position(|r| r.is("BMC", "power off"))
        .expect("powered off before the finalizer went");
    assert!(off < upto.len() - 1);
    assert!(rec
        .store()
        .host(&HostKey::new("default", "worker-0"))
        .unwrap()
        .is_none());
    assert!(upto
        .iter()
        .any(|r| r.is("PATCH", HOST_STATUS) && state_of(r) == "powering off before delete"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_host_the_controller_never_knew_loses_the_finalizer_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    let (mut host, secret) = example();
    host["metadata"]["finalizers"] = json!(["baremetalhost.metal3.io"]);
    host["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let rec = reconciler(dir.path(), log.clone(), Power::On);
    let client = mock(log.clone(), api_server(host, secret));
    let cancel = start(client, rec);
    let upto = wait_for(&log, "finalizer removal", |r| r.is("PATCH", HOST)).await;
    cancel.cancel();
    assert_eq!(
        upto.last().unwrap().body,
        json!({"metadata": {"finalizers": [], "resourceVersion": "5"}})
    );
    assert!(!upto.iter().any(|r| r.method == "BMC"), "{upto:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_deleted_while_the_watch_was_down_is_forgotten_at_the_relist() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    let (host, secret) = example();
    let bmc = ferrox_controller::model::SecretRef {
        namespace: "default".into(),
        name: "worker-0-bmc-secret".into(),
    };
    // The Secret exists at the first list; its watch then ends with 410 Gone (the server
    // compacted past its resourceVersion while it was down), and by the relist the Secret has
    // been deleted.
    let lists = Arc::new(Mutex::new(0));
    let mut inner = api_server(host, secret.clone());
    let respond = {
        let lists = lists.clone();
        move |r: &Req| -> Reply {
            let path = r.path.as_str();
            if path == "/api/v1/secrets" && r.watch() {
                return Reply::Json(
                    200,
                    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                           "metadata": {}, "status": "Failure",
                           "message": "too old resource version", "reason": "Expired",
                           "code": 410}}),
                );
            }
            if path == "/api/v1/secrets" {
                let mut n = lists.lock().unwrap();
                *n += 1;
                if *n > 1 {
                    return list("SecretList", "v1", vec![]);
                }
            }
            if path == "/api/v1/namespaces/default/secrets/worker-0-bmc-secret"
                && *lists.lock().unwrap() > 1
            {
                return not_found();
            }
            inner(r)
        }
    };
    let client = mock(log.clone(), respond);
    let rec = reconciler(dir.path(), log.clone(), Power::Off);
    let cancel = start(client, rec.clone());

    wait_for(&log, "the first Secrets list", |r| {
        r.is("GET", "/api/v1/secrets") && !r.watch()
    })
    .await;
    // Known from the list (or the host's own fetch) before the watch fails ...
    let t0 = std::time::Instant::now();
    while !rec.has_secret(&bmc) {
        assert!(t0.elapsed() < Duration::from_secs(20), "never known");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and forgotten once the relist no longer holds it.
    while rec.has_secret(&bmc) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "still known after {} lists",
            lists.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(*lists.lock().unwrap() >= 2, "forgotten only by a relist");
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_again_is_counted_on_the_first_one_as_client_go_does() {
    use ferrox_controller::reconciler::Publish;
    use ferrox_controller::store::EventRecord;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    // The server names what it creates; an Event can expire (then a PATCH finds nothing).
    let expired = Arc::new(Mutex::new(false));
    let respond = {
        let expired = expired.clone();
        let mut n = 0;
        move |r: &Req| -> Reply {
            match (r.method.as_str(), r.path.as_str()) {
                ("POST", EVENTS) => {
                    n += 1;
                    let mut ev = r.body.clone();
                    ev["metadata"]["name"] = json!(format!("worker-0.{n}"));
                    Reply::Json(201, ev)
                }
                ("PATCH", p) if p.starts_with(EVENTS) => {
                    if *expired.lock().unwrap() {
                        not_found()
                    } else {
                        Reply::Json(200, r.body.clone())
                    }
                }
                _ => not_found(),
            }
        }
    };
    let client = mock(log.clone(), respond);
    let store = Arc::new(Store::open(&dir.path().join("state.redb")).unwrap());
    let publisher = kubestore::publish::Publisher::new(
        client,
        store,
        kubestore::Objects::default(),
        "ferrox-a".into(),
    );
    let cancel = CancellationToken::new();
    tokio::spawn(publisher.clone().run(cancel.clone()));
    let ev = |at_ms: u64, message: &str| EventRecord {
        host: HostKey::new("default", "worker-0"),
        at_ms,
        warning: true,
        reason: "RegistrationError".into(),
        message: message.into(),
    };
    let events = |log: &Log| -> Vec<Req> {
        log.lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with(EVENTS))
            .cloned()
            .collect()
    };
    let settle = |n: usize| {
        let log = log.clone();
        async move {
            for _ in 0..200 {
                if events(&log).len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("fewer than {n} Event requests: {:#?}", events(&log));
        }
    };

    publisher.events(&[ev(1_000, "BMC refused the credentials")]);
    settle(1).await;
    publisher.events(&[ev(8_000, "BMC refused the credentials")]);
    settle(2).await;
    publisher.events(&[ev(9_000, "another message")]);
    settle(3).await;
    let r = events(&log);
    assert!(r[0].is("POST", EVENTS), "{:#?}", r[0]);
    assert_eq!(r[0].body["count"], 1);
    assert!(
        r[1].is("PATCH", &format!("{EVENTS}/worker-0.1")),
        "{:#?}",
        r[1]
    );
    assert_eq!(r[1].content_type, "application/merge-patch+json");
    assert_eq!(
        r[1].body,
        json!({"count": 2, "lastTimestamp": "1970-01-01T00:00:08Z"})
    );
    assert!(r[2].is("POST", EVENTS), "another message is another Event");

    // Once the first Event has expired on the server, saying it again posts a new one.
    *expired.lock().unwrap() = true;
    publisher.events(&[ev(20_000, "BMC refused the credentials")]);
    settle(5).await;
    let r = events(&log);
    assert!(r[3].is("PATCH", &format!("{EVENTS}/worker-0.1")));
    assert!(r[4].is("POST", EVENTS));
    assert_eq!(r[4].body["count"], 1);
    cancel.cancel();
}
