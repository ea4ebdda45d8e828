//! Simulated machines behind one Redfish service: `/redfish/v1/Systems/{id}` per host.
//!
//! What a BMC does that the controller depends on is kept: credentials are checked (HTTP basic
//! or a session made from them), a system has an ETag that a PATCH's If-Match must match, the
//! boot override is consumed by the boot it applies to when it is `Once`, and reset types are
//! listed and honoured. Powering on (or restarting) boots the machine: with the override at
//! `Pxe` it boots the ramdisk ([`crate::agent`]) once the netboot decision ([`crate::feed`])
//! has a token for its MAC, otherwise it boots its disk. Powering off ends whatever ran.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::feed::Table;

/// How long simulated work takes.
#[derive(Debug, Clone)]
pub struct Timings {
    /// Power-on → the ramdisk agent (or the installed OS) is running: firmware, iPXE, kernel.
    pub boot: Duration,
    /// How long a PXE-booting machine keeps asking netboot before it gives up (iPXE retrying
    /// DHCP, then the firmware's next boot device; here: the boot fails and the machine idles).
    pub pxe_patience: Duration,
    /// Taking the inventory.
    pub inspect: Duration,
    /// A metadata wipe.
    pub wipe: Duration,
    /// Writing the image; progress is reported every quarter of it.
    pub write: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            boot: Duration::from_secs(2),
            pxe_patience: Duration::from_secs(60),
            inspect: Duration::from_millis(500),
            wipe: Duration::from_millis(200),
            write: Duration::from_secs(2),
        }
    }
}

/// Counts of what happened, for the report and the test's assertions.
#[derive(Debug, Default)]
pub struct Counters {
    pub redfish_requests: AtomicU64,
    pub redfish_refused: AtomicU64,
    pub sessions: AtomicU64,
    pub pxe_boots: AtomicU64,
    pub pxe_no_token: AtomicU64,
    pub disk_boots: AtomicU64,
    pub enrollments: AtomicU64,
    pub agent_calls: AtomicU64,
    pub agent_call_errors: AtomicU64,
    pub agent_refusals: AtomicU64,
    pub commands: AtomicU64,
    pub images_written: AtomicU64,
    /// Images being written now, and the most at once (the provisioning limit at work).
    pub writing_now: AtomicU64,
    pub writing_max: AtomicU64,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// What booted last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Booted {
    Nothing,
    Ramdisk,
    Disk,
}

#[derive(Debug)]
struct System {
    mac: String,
    uuid: String,
    on: bool,
    enabled: &'static str,
    target: &'static str,
    mode: &'static str,
    etag: u64,
    booted: Booted,
    /// Ends the current boot (its agent).
    run: CancellationToken,
    /// Images written during the current power-on, and ever.
    writes: u32,
}

/// The simulated machines and their shared Redfish service.
#[derive(Debug)]
pub struct Sim {
    systems: Mutex<HashMap<String, System>>,
    sessions: Mutex<HashSet<String>>,
    basic: String,
    username: String,
    password: String,
    pub timings: Timings,
    pub counters: Counters,
    pub feed: Arc<Table>,
}

/// A host of the simulation: its system id (also its BareMetalHost name), boot MAC, and the
/// loopback address its BMC answers on.
#[derive(Debug, Clone)]
pub struct SimHost {
    pub id: String,
    pub mac: String,
    pub uuid: String,
    pub bmc_ip: Ipv4Addr,
}

/// `n` hosts named `host-0000`…, with distinct MACs, UUIDs and BMC addresses (127.1.x.y: every
/// BMC has its own address, as in a rack, so the controller keeps a connection per BMC).
pub fn hosts(n: usize) -> Vec<SimHost> {
    (0..n)
        .map(|i| SimHost {
            bmc_ip: Ipv4Addr::new(127, 1, (i / 200) as u8, (i % 200 + 1) as u8),
            id: format!("host-{i:04}"),
            mac: format!(
                "52:54:{:02x}:{:02x}:{:02x}:{:02x}",
                0xfe,
                (i >> 16) & 0xff,
                (i >> 8) & 0xff,
                i & 0xff
            ),
            uuid: format!("00000000-0000-4000-8000-{i:012x}"),
        })
        .collect()
}

pub(crate) fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Reply {
    reply(
        status,
        json!({"error": {"code": "Base.1.0.GeneralError", "message": message}}),
    )
}

impl Sim {
    /// Machines for `hosts`, all powered off, reachable with `username`/`password`.
    pub fn new(
        hosts: &[SimHost],
        username: &str,
        password: &str,
        timings: Timings,
        feed: Arc<Table>,
    ) -> Arc<Self> {
        let systems = hosts
            .iter()
            .map(|h| {
                (
                    h.id.clone(),
                    System {
                        mac: h.mac.clone(),
                        uuid: h.uuid.clone(),
                        on: false,
                        enabled: "Disabled",
                        target: "None",
                        mode: "Legacy",
                        etag: 1,
                        booted: Booted::Nothing,
                        run: CancellationToken::new(),
                        writes: 0,
                    },
                )
            })
            .collect();
        Arc::new(Self {
            systems: Mutex::new(systems),
            sessions: Mutex::default(),
            basic: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            ),
            username: username.into(),
            password: password.into(),
            timings,
            counters: Counters::default(),
            feed,
        })
    }

    /// Per host: powered on, what booted last, and how many images were written to it.
    pub fn snapshot(&self) -> HashMap<String, (bool, Booted, u32)> {
        self.systems
            .lock()
            .unwrap()
            .iter()
            .map(|(id, s)| (id.clone(), (s.on, s.booted, s.writes)))
            .collect()
    }

    /// Serves Redfish on every listener until `cancel` fires.
    pub fn serve_all(self: &Arc<Self>, listeners: Vec<TcpListener>, cancel: &CancellationToken) {
        for l in listeners {
            tokio::spawn(self.clone().serve(l, cancel.clone()));
        }
    }

    /// Serves Redfish on `listener` until `cancel` fires.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, cancel: CancellationToken) {
        loop {
            let stream = tokio::select! {
                _ = cancel.cancelled() => return,
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let sim = self.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let sim = sim.clone();
                    async move { Ok::<_, Infallible>(sim.handle(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = cancel.cancelled() => {}
                }
            });
        }
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let h = req.headers();
        if let Some(t) = h.get("x-auth-token").and_then(|v| v.to_str().ok()) {
            return self.sessions.lock().unwrap().contains(t);
        }
        h.get(hyper::header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == self.basic.as_bytes())
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Reply {
        self.counters
            .redfish_requests
            .fetch_add(1, Ordering::Relaxed);
        let method = req.method().clone();
        let path = req.uri().path().trim_end_matches('/').to_string();
        if method == Method::GET && path == "/redfish/v1" {
            return reply(
                StatusCode::OK,
                json!({
                    "@odata.id": "/redfish/v1/",
                    "Id": "RootService",
                    "Systems": {"@odata.id": "/redfish/v1/Systems"},
                    "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
                    "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}},
                }),
            );
        }
        let authorized = self.authorized(&req);
        let if_match = req
            .headers()
            .get(hyper::header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match Limited::new(req.into_body(), 64 << 10).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
        };
        let doc: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => return error(StatusCode::BAD_REQUEST, "body is not JSON"),
            }
        };
        const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";
        if method == Method::POST && path == SESSIONS {
            let user = doc.get("UserName").and_then(Value::as_str);
            let pass = doc.get("Password").and_then(Value::as_str);
            if user != Some(self.username.as_str()) || pass != Some(self.password.as_str()) {
                self.counters
                    .redfish_refused
                    .fetch_add(1, Ordering::Relaxed);
                return error(StatusCode::UNAUTHORIZED, "wrong credentials");
            }
            let n = self.counters.sessions.fetch_add(1, Ordering::Relaxed);
            let token = format!("{:016x}{:016x}", random_u64(), random_u64());
            self.sessions.lock().unwrap().insert(token.clone());
            let location = format!("{SESSIONS}/{n}");
            let mut r = reply(
                StatusCode::CREATED,
                json!({"@odata.id": location, "Id": n.to_string(), "UserName": user}),
            );
            let hv = |s: &str| hyper::header::HeaderValue::from_str(s).unwrap();
            r.headers_mut().insert("x-auth-token", hv(&token));
            r.headers_mut()
                .insert(hyper::header::LOCATION, hv(&location));
            return r;
        }
        if !authorized {
            self.counters
                .redfish_refused
                .fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::UNAUTHORIZED, "authentication required");
        }
        if method == Method::DELETE && path.starts_with(SESSIONS) {
            // Logout: any session of ours may be closed by its holder; tokens are not in the path.
            return Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
        let Some(rest) = path.strip_prefix("/redfish/v1/Systems") else {
            return error(StatusCode::NOT_FOUND, "no such resource");
        };
        if rest.is_empty() && method == Method::GET {
            let members: Vec<Value> = self
                .systems
                .lock()
                .unwrap()
                .keys()
                .map(|id| json!({"@odata.id": format!("/redfish/v1/Systems/{id}")}))
                .collect();
            return reply(
                StatusCode::OK,
                json!({"Members@odata.count": members.len(), "Members": members}),
            );
        }
        let rest = rest.trim_start_matches('/');
        let (id, action) = match rest.split_once('/') {
            Some((id, a)) => (id, Some(a)),
            None => (rest, None),
        };
        match (&method, action) {
            (&Method::GET, None) => self.get_system(id),
            (&Method::PATCH, None) => self.patch_system(id, &doc, if_match.as_deref()),
            (&Method::POST, Some("Actions/ComputerSystem.Reset")) => {
                let Some(kind) = doc.get("ResetType").and_then(Value::as_str) else {
                    return error(StatusCode::BAD_REQUEST, "ResetType missing");
                };
                self.reset(id, kind)
            }
            _ => error(StatusCode::NOT_FOUND, "no such resource"),
        }
    }

    fn get_system(&self, id: &str) -> Reply {
        let systems = self.systems.lock().unwrap();
        let Some(s) = systems.get(id) else {
            return error(StatusCode::NOT_FOUND, "no such system");
        };
        let path = format!("/redfish/v1/Systems/{id}");
        let mut r = reply(
            StatusCode::OK,
            json!({
                "@odata.id": path,
                "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem",
                "Id": id,
                "Name": id,
                "UUID": s.uuid,
                "Manufacturer": "Ferrox simulation",
                "Model": "sim-1",
                "SerialNumber": format!("SIM{id}"),
                "PowerState": if s.on { "On" } else { "Off" },
                "Boot": {
                    "BootSourceOverrideEnabled": s.enabled,
                    "BootSourceOverrideTarget": s.target,
                    "BootSourceOverrideMode": s.mode,
                    "BootSourceOverrideTarget@Redfish.AllowableValues": ["None", "Pxe", "Hdd", "Cd", "UefiHttp"],
                },
                "Actions": {"#ComputerSystem.Reset": {
                    "target": format!("{path}/Actions/ComputerSystem.Reset"),
                    "ResetType@Redfish.AllowableValues":
                        ["On", "ForceOn", "ForceOff", "GracefulShutdown", "ForceRestart", "PowerCycle"],
                }},
            }),
        );
        r.headers_mut().insert(
            hyper::header::ETAG,
            hyper::header::HeaderValue::from_str(&format!("\"{}\"", s.etag)).unwrap(),
        );
        r
    }

    fn patch_system(&self, id: &str, doc: &Value, if_match: Option<&str>) -> Reply {
        let mut systems = self.systems.lock().unwrap();
        let Some(s) = systems.get_mut(id) else {
            return error(StatusCode::NOT_FOUND, "no such system");
        };
        if let Some(m) = if_match {
            if m != format!("\"{}\"", s.etag) && m != "*" {
                return error(StatusCode::PRECONDITION_FAILED, "ETag does not match");
            }
        }
        let Some(boot) = doc.get("Boot") else {
            return error(StatusCode::BAD_REQUEST, "only Boot can be changed");
        };
        let pick = |key: &str, allowed: &[&'static str]| -> Result<Option<&'static str>, String> {
            match boot.get(key) {
                None => Ok(None),
                Some(v) => allowed
                    .iter()
                    .find(|a| Some(**a) == v.as_str())
                    .copied()
                    .map(Some)
                    .ok_or_else(|| format!("{key}: {v} is not allowed")),
            }
        };
        let enabled = match pick(
            "BootSourceOverrideEnabled",
            &["Disabled", "Once", "Continuous"],
        ) {
            Ok(v) => v,
            Err(why) => return error(StatusCode::BAD_REQUEST, &why),
        };
        let target = match pick(
            "BootSourceOverrideTarget",
            &["None", "Pxe", "Hdd", "Cd", "UefiHttp"],
        ) {
            Ok(v) => v,
            Err(why) => return error(StatusCode::BAD_REQUEST, &why),
        };
        let mode = match pick("BootSourceOverrideMode", &["Legacy", "UEFI"]) {
            Ok(v) => v,
            Err(why) => return error(StatusCode::BAD_REQUEST, &why),
        };
        if let Some(v) = enabled {
            s.enabled = v;
        }
        if let Some(v) = target {
            s.target = v;
        }
        if let Some(v) = mode {
            s.mode = v;
        }
        s.etag += 1;
        Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    fn reset(self: &Arc<Self>, id: &str, kind: &str) -> Reply {
        let restart = match kind {
            "On" | "ForceOn" => false,
            "ForceRestart" | "PowerCycle" => true,
            "ForceOff" | "GracefulShutdown" => {
                // The ramdisk agent powers off on the ACPI button; the installed OS is simulated
                // as obeying too.
                self.power_off(id);
                return Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
            }
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("ResetType {other} is not allowed"),
                )
            }
        };
        {
            let systems = self.systems.lock().unwrap();
            let Some(s) = systems.get(id) else {
                return error(StatusCode::NOT_FOUND, "no such system");
            };
            if s.on && !restart {
                return Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
            }
        }
        self.boot(id);
        Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    /// Powers `id` off: whatever ran stops.
    pub fn power_off(&self, id: &str) {
        if let Some(s) = self.systems.lock().unwrap().get_mut(id) {
            s.on = false;
            s.run.cancel();
            s.etag += 1;
        }
    }

    /// Notes an image written to `id` by its agent.
    pub fn wrote_image(&self, id: &str) {
        self.counters.images_written.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = self.systems.lock().unwrap().get_mut(id) {
            s.writes += 1;
        }
    }

    /// Powers `id` on (or restarts it) and boots what the override says.
    pub fn boot(self: &Arc<Self>, id: &str) {
        let (pxe, mac, run) = {
            let mut systems = self.systems.lock().unwrap();
            let Some(s) = systems.get_mut(id) else {
                return;
            };
            s.run.cancel();
            s.run = CancellationToken::new();
            s.on = true;
            s.etag += 1;
            let pxe = s.enabled != "Disabled" && s.target == "Pxe";
            if s.enabled == "Once" {
                s.enabled = "Disabled";
                s.target = "None";
            }
            s.booted = if pxe { Booted::Ramdisk } else { Booted::Disk };
            (pxe, s.mac.clone(), s.run.clone())
        };
        if !pxe {
            self.counters.disk_boots.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.counters.pxe_boots.fetch_add(1, Ordering::Relaxed);
        let sim = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::select! {
                _ = run.cancelled() => return,
                _ = tokio::time::sleep(sim.timings.boot) => {}
            }
            // iPXE's DHCP: netboot answers once the controller has put the MAC in its feed.
            let deadline = tokio::time::Instant::now() + sim.timings.pxe_patience;
            let boot = loop {
                if let Some(b) = sim.feed.lookup(&mac) {
                    break b;
                }
                if tokio::time::Instant::now() >= deadline {
                    sim.counters.pxe_no_token.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                tokio::select! {
                    _ = run.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            };
            crate::agent::run(sim, id, mac, boot, run).await;
        });
    }
}

/// Binds each host's BMC address, all on one port; returns the listeners and the port.
pub async fn bind(hosts: &[SimHost]) -> std::io::Result<(Vec<TcpListener>, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut out = Vec::with_capacity(hosts.len());
    for h in hosts {
        out.push(TcpListener::bind((h.bmc_ip, port)).await?);
    }
    Ok((out, port))
}
