//! The Redfish client: one BMC, one system, over hyper + rustls.
//!
//! Every BMC is hostile input: each request (headers and body) has one deadline, each body is
//! capped ([`ConnectOptions::max_body`]), each JSON document is parsed into the few fields we
//! use, and resource paths the BMC hands back (`@odata.id`, `Location`) are used as paths on
//! the same BMC only, so a BMC cannot redirect our credentials elsewhere.
//!
//! Authentication follows Ironic's sushy: a Redfish session (`POST` to the service's
//! `Sessions` collection, then `X-Auth-Token`) when the service offers one, HTTP basic auth
//! when it does not (sushy-tools, some small BMCs). A session that expires mid-use is renewed
//! once and the request retried. [`Redfish::close`] logs the session out.
//!
//! Power and boot calls are idempotent where Redfish is not: powering on a host that is on is
//! success, not the BMC's "already on" error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, IF_MATCH, LOCATION};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::address::RedfishEndpoint;
use crate::error::RedfishError;

/// Longest string kept from a BMC's document (names, serials, messages).
const MAX_FIELD: usize = 256;
const X_AUTH_TOKEN: &str = "x-auth-token";
const SERVICE_ROOT: &str = "/redfish/v1/";

/// BMC login, from the host's credentials Secret. `Debug` hides the password.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to talk to one BMC.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// metal3's `disableCertificateVerification`: accept any certificate. Off by default.
    pub disable_cert_verification: bool,
    /// PEM certificates trusted in addition to the webpki roots (a lab CA, a BMC's self-signed
    /// certificate).
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Deadline for each request, from connecting to the last body byte.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_body: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            disable_cert_verification: false,
            extra_ca_pem: None,
            timeout: Duration::from_secs(20),
            max_body: 1 << 20,
        }
    }
}

/// A system's power state as Redfish reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
    PoweringOn,
    PoweringOff,
    Paused,
    /// Absent or a value this client does not know.
    Unknown(String),
}

impl PowerState {
    fn from_redfish(s: Option<&str>) -> Self {
        match s {
            Some("On") => PowerState::On,
            Some("Off") => PowerState::Off,
            Some("PoweringOn") => PowerState::PoweringOn,
            Some("PoweringOff") => PowerState::PoweringOff,
            Some("Paused") => PowerState::Paused,
            other => PowerState::Unknown(bounded(other.unwrap_or(""))),
        }
    }
}

/// Firmware boot mode (`BootSourceOverrideMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    Uefi,
    Legacy,
}

impl BootMode {
    pub fn as_redfish(self) -> &'static str {
        match self {
            BootMode::Uefi => "UEFI",
            BootMode::Legacy => "Legacy",
        }
    }

    fn from_redfish(s: &str) -> Option<Self> {
        match s {
            "UEFI" => Some(BootMode::Uefi),
            "Legacy" => Some(BootMode::Legacy),
            _ => None,
        }
    }
}

/// Where the next boot goes (`BootSourceOverrideTarget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootTarget {
    Pxe,
    UefiHttp,
    Hdd,
}

impl BootTarget {
    pub fn as_redfish(self) -> &'static str {
        match self {
            BootTarget::Pxe => "Pxe",
            BootTarget::UefiHttp => "UefiHttp",
            BootTarget::Hdd => "Hdd",
        }
    }
}

/// The boot override as the BMC reports it (strings kept as given: BMCs vary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootOverride {
    pub enabled: Option<String>,
    pub target: Option<String>,
    pub mode: Option<BootMode>,
}

/// What registration reads from a system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The system's resource path on the BMC.
    pub path: String,
    pub id: String,
    pub uuid: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub power_state: PowerState,
    pub boot: BootOverride,
    /// `BootSourceOverrideTarget@Redfish.AllowableValues`; empty when not advertised.
    pub allowed_boot_targets: Vec<String>,
    /// `ResetType@Redfish.AllowableValues`; empty when not advertised.
    pub allowed_reset_types: Vec<String>,
    /// The `ComputerSystem.Reset` action's target path.
    reset_target: String,
    etag: Option<String>,
}

impl SystemInfo {
    /// The boot mode in effect, when the BMC reports one.
    pub fn boot_mode(&self) -> Option<BootMode> {
        self.boot.mode
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// HTTP clients shared by many BMC connections: one TLS configuration (roots, session cache) and
/// one connection pool — holding a connection per BMC address — for each set of
/// [`ConnectOptions`], instead of one of each per BMC. A controller with a thousand BMCs keeps one
/// of these; at a thousand hosts, per-BMC clients were about a third of its memory
/// (docs/bench-scale.md). Its connections belong to the Tokio runtime that first used them.
#[derive(Default)]
pub struct Transport {
    clients: Mutex<std::collections::HashMap<TransportKey, HttpClient>>,
}

/// What tells two HTTP clients apart: certificate verification off, extra CA, timeout.
type TransportKey = (bool, Option<Vec<u8>>, Duration);

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").finish_non_exhaustive()
    }
}

impl Transport {
    fn client(&self, addr: &str, opts: &ConnectOptions) -> Result<HttpClient, RedfishError> {
        let key = (
            opts.disable_cert_verification,
            opts.extra_ca_pem.clone(),
            opts.timeout,
        );
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let c = build_client(addr, opts)?;
        clients.insert(key, c.clone());
        Ok(c)
    }
}

/// No `Debug`: it holds the token.
#[derive(Clone)]
struct Session {
    token: String,
    /// Where to DELETE it; `None` if the BMC did not say.
    location: Option<String>,
}

/// No `Debug`: it holds the token or the password.
#[derive(Clone)]
enum Auth {
    Session {
        collection: String,
        session: Arc<Mutex<Session>>,
    },
    Basic(String),
}

/// A connected client for one system on one BMC.
pub struct Redfish {
    http: HttpClient,
    base: String,
    credentials: Credentials,
    auth: Auth,
    system: String,
    opts: ConnectOptions,
}

impl std::fmt::Debug for Redfish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redfish")
            .field("base", &self.base)
            .field("system", &self.system)
            .field(
                "auth",
                &match self.auth {
                    Auth::Session { .. } => "session",
                    Auth::Basic(_) => "basic",
                },
            )
            .finish()
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Redfish {
    /// Connects: reads the service root, logs in (session, else basic auth), and finds the
    /// system (the address's path, or the only member of `Systems`). Credentials are checked
    /// here, so a wrong password fails `connect`.
    pub async fn connect(
        endpoint: &RedfishEndpoint,
        credentials: Credentials,
        opts: ConnectOptions,
    ) -> Result<Self, RedfishError> {
        Self::connect_via(&Transport::default(), endpoint, credentials, opts).await
    }

    /// [`Redfish::connect`] over `transport`'s shared HTTP clients.
    pub async fn connect_via(
        transport: &Transport,
        endpoint: &RedfishEndpoint,
        credentials: Credentials,
        opts: ConnectOptions,
    ) -> Result<Self, RedfishError> {
        let base = endpoint.base_url();
        let http = transport.client(&base, &opts)?;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", credentials.username, credentials.password))
        );
        let mut client = Redfish {
            http,
            base,
            credentials,
            auth: Auth::Basic(basic.clone()),
            system: String::new(),
            opts,
        };

        // The service root is unauthenticated by the standard; a few BMCs want auth anyway.
        let root = match client.get_json_as(SERVICE_ROOT, false).await {
            Err(RedfishError::Credentials { .. }) => client.get_json(SERVICE_ROOT).await?.0,
            other => other?.0,
        };
        let sessions = odata_id(&root, &["Links", "Sessions"]).or_else(|| {
            root.get("SessionService")
                .map(|_| "/redfish/v1/SessionService/Sessions".to_string())
        });
        if let Some(collection) = sessions {
            match client.login(&collection).await {
                Ok(session) => {
                    client.auth = Auth::Session {
                        collection,
                        session: Arc::new(Mutex::new(session)),
                    };
                }
                Err(LoginError::NoSessions) => {
                    tracing::debug!(bmc = %client.base, "session service unusable; using basic auth");
                }
                Err(LoginError::Failed(e)) => return Err(e),
            }
        }
        let systems = odata_id(&root, &["Systems"]).unwrap_or_else(|| "/redfish/v1/Systems".into());
        let resolved = match &endpoint.system {
            // Existence and credentials checked here.
            Some(path) => client.system_info_at(path).await.map(|_| path.clone()),
            None => client.only_system(&systems).await,
        };
        match resolved {
            Ok(path) => client.system = path,
            Err(e) => {
                // BMCs hold few sessions (an iDRAC about eight): a registration retried with
                // backoff must not leak one per attempt.
                client.logout().await;
                return Err(e);
            }
        }
        tracing::info!(bmc = %client.base, system = %client.system, auth = ?client.auth_kind(), "connected to BMC");
        Ok(client)
    }

    /// The system's resource path.
    pub fn system_path(&self) -> &str {
        &self.system
    }

    fn auth_kind(&self) -> &'static str {
        match self.auth {
            Auth::Session { .. } => "session",
            Auth::Basic(_) => "basic",
        }
    }

    /// Whether a Redfish session (rather than basic auth) is in use.
    pub fn uses_session(&self) -> bool {
        matches!(self.auth, Auth::Session { .. })
    }

    /// Logs out the session, if there is one. Errors are logged, not returned: the session
    /// expires on its own anyway. Dropping a client without this leaves the session to expire.
    pub async fn close(self) {
        self.logout().await;
    }

    async fn logout(&self) {
        let Auth::Session { session, .. } = &self.auth else {
            return;
        };
        let location = session.lock().unwrap().location.clone();
        let Some(location) = location else {
            return;
        };
        // Not `request`: a session that already expired must not be renewed just to log out.
        match self
            .send_with(Method::DELETE, &location, None, true, HeaderMap::new())
            .await
        {
            Ok(r) if r.status.is_success() => {
                tracing::debug!(bmc = %self.base, "session closed")
            }
            Ok(r) => {
                tracing::warn!(bmc = %self.base, status = %r.status, "session logout refused")
            }
            Err(e) => {
                tracing::warn!(bmc = %self.base, error = %e.one_line(), "session logout failed")
            }
        }
    }

    /// Reads the system.
    pub async fn system(&self) -> Result<SystemInfo, RedfishError> {
        self.system_info_at(&self.system).await
    }

    /// The current power state.
    pub async fn power_state(&self) -> Result<PowerState, RedfishError> {
        Ok(self.system().await?.power_state)
    }

    /// Powers on; success if it already is on or powering on.
    pub async fn power_on(&self) -> Result<(), RedfishError> {
        let info = self.system().await?;
        if matches!(info.power_state, PowerState::On | PowerState::PoweringOn) {
            tracing::debug!(bmc = %self.base, "already on");
            return Ok(());
        }
        self.reset_action(&info, &["On", "ForceOn"]).await
    }

    /// Powers off: `GracefulShutdown` (the OS is asked) or, with `force`, `ForceOff`. Success
    /// if it already is off or powering off.
    pub async fn power_off(&self, force: bool) -> Result<(), RedfishError> {
        let info = self.system().await?;
        if matches!(info.power_state, PowerState::Off | PowerState::PoweringOff) {
            tracing::debug!(bmc = %self.base, "already off");
            return Ok(());
        }
        let prefs: &[&str] = if force {
            &["ForceOff"]
        } else {
            &["GracefulShutdown"]
        };
        self.reset_action(&info, prefs).await
    }

    /// Hard reset (`ForceRestart`, else `PowerCycle`); a system that is off is powered on.
    pub async fn reset(&self) -> Result<(), RedfishError> {
        let info = self.system().await?;
        if info.power_state == PowerState::Off {
            return self.reset_action(&info, &["On", "ForceOn"]).await;
        }
        self.reset_action(&info, &["ForceRestart", "PowerCycle"])
            .await
    }

    /// Sets a one-time boot override (`BootSourceOverrideEnabled: Once`) to `target`, in boot
    /// `mode` when given. Refused up front if the BMC does not list `target` as allowed.
    pub async fn set_boot_once(
        &self,
        target: BootTarget,
        mode: Option<BootMode>,
    ) -> Result<(), RedfishError> {
        let info = self.system().await?;
        let t = target.as_redfish();
        if !info.allowed_boot_targets.is_empty()
            && !info.allowed_boot_targets.iter().any(|a| a == t)
        {
            return Err(RedfishError::Unsupported {
                addr: self.base.clone(),
                what: format!(
                    "boot target {t} (allowed: {})",
                    info.allowed_boot_targets.join(", ")
                ),
            });
        }
        let mut boot = json!({
            "BootSourceOverrideEnabled": "Once",
            "BootSourceOverrideTarget": t,
        });
        if let Some(m) = mode {
            boot["BootSourceOverrideMode"] = json!(m.as_redfish());
        }
        let mut headers = HeaderMap::new();
        if let Some(etag) = info
            .etag
            .as_deref()
            .and_then(|e| HeaderValue::from_str(e).ok())
        {
            headers.insert(IF_MATCH, etag);
        }
        let body = json!({ "Boot": boot });
        let reply = self
            .request(Method::PATCH, &self.system, Some(&body), headers)
            .await?;
        self.check(&Method::PATCH, &self.system, &reply)?;
        tracing::info!(bmc = %self.base, target = t, mode = ?mode, "one-time boot override set");
        Ok(())
    }

    async fn reset_action(&self, info: &SystemInfo, prefs: &[&str]) -> Result<(), RedfishError> {
        let reset_type = choose_reset_type(&info.allowed_reset_types, prefs).ok_or_else(|| {
            RedfishError::Unsupported {
                addr: self.base.clone(),
                what: format!(
                    "reset type {} (allowed: {})",
                    prefs.join(" or "),
                    info.allowed_reset_types.join(", ")
                ),
            }
        })?;
        let body = json!({ "ResetType": reset_type });
        let reply = self
            .request(
                Method::POST,
                &info.reset_target,
                Some(&body),
                HeaderMap::new(),
            )
            .await?;
        self.check(&Method::POST, &info.reset_target, &reply)?;
        tracing::info!(bmc = %self.base, reset_type, "reset requested");
        Ok(())
    }

    async fn system_info_at(&self, path: &str) -> Result<SystemInfo, RedfishError> {
        let (doc, etag) = match self.get_json(path).await {
            Err(RedfishError::Rejected { status, .. }) if status == StatusCode::NOT_FOUND => {
                return Err(RedfishError::NotFound {
                    addr: self.base.clone(),
                    what: format!("system {path}"),
                })
            }
            other => other?,
        };
        parse_system(path, &doc, etag).map_err(|what| self.garbage(Method::GET, path, what, None))
    }

    async fn only_system(&self, collection: &str) -> Result<String, RedfishError> {
        let (doc, _) = self.get_json(collection).await?;
        let members = doc
            .get("Members")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                self.garbage(
                    Method::GET,
                    collection,
                    "a collection without Members".into(),
                    None,
                )
            })?;
        let paths: Vec<String> = members
            .iter()
            .filter_map(|m| m.get("@odata.id").and_then(Value::as_str))
            .filter_map(same_host_path)
            .collect();
        match paths.as_slice() {
            [only] => {
                self.system_info_at(only).await?;
                Ok(only.clone())
            }
            [] => Err(RedfishError::NotFound {
                addr: self.base.clone(),
                what: "systems".into(),
            }),
            many => Err(RedfishError::NotFound {
                addr: self.base.clone(),
                what: format!(
                    "single system: it has {}, so the address must name one (e.g. {})",
                    many.len(),
                    many[0]
                ),
            }),
        }
    }

    async fn login(&self, collection: &str) -> Result<Session, LoginError> {
        let body = json!({
            "UserName": self.credentials.username,
            "Password": self.credentials.password,
        });
        let reply = self
            .send_with(
                Method::POST,
                collection,
                Some(&body),
                false,
                HeaderMap::new(),
            )
            .await?;
        match reply.status {
            StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_IMPLEMENTED => return Err(LoginError::NoSessions),
            s if !s.is_success() => {
                return Err(LoginError::Failed(self.status_error(
                    &Method::POST,
                    collection,
                    &reply,
                )))
            }
            _ => {}
        }
        let token = reply
            .headers
            .get(X_AUTH_TOKEN)
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.is_empty() && t.len() <= 4096)
            .ok_or_else(|| {
                self.garbage(
                    Method::POST,
                    collection,
                    "a session without an X-Auth-Token".into(),
                    None,
                )
            })?
            .to_string();
        let location = reply
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(same_host_path)
            .or_else(|| {
                serde_json::from_slice::<Value>(&reply.body)
                    .ok()
                    .and_then(|v| {
                        v.get("@odata.id")
                            .and_then(Value::as_str)
                            .and_then(same_host_path)
                    })
            });
        tracing::debug!(bmc = %self.base, "session created");
        Ok(Session { token, location })
    }

    async fn get_json(&self, path: &str) -> Result<(Value, Option<String>), RedfishError> {
        self.get_json_as(path, true).await
    }

    async fn get_json_as(
        &self,
        path: &str,
        auth: bool,
    ) -> Result<(Value, Option<String>), RedfishError> {
        let reply = self.send(Method::GET, path, None, auth).await?;
        self.check(&Method::GET, path, &reply)?;
        let doc: Value = serde_json::from_slice(&reply.body).map_err(|e| {
            self.garbage(Method::GET, path, "invalid JSON".into(), Some(Box::new(e)))
        })?;
        if !doc.is_object() {
            return Err(self.garbage(Method::GET, path, "JSON that is not an object".into(), None));
        }
        let etag = reply
            .headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((doc, etag))
    }

    /// An authenticated request; a session the BMC no longer knows is renewed once.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: HeaderMap,
    ) -> Result<Reply, RedfishError> {
        let reply = self
            .send_with(method.clone(), path, body, true, headers.clone())
            .await?;
        if reply.status != StatusCode::UNAUTHORIZED {
            return Ok(reply);
        }
        let Auth::Session {
            collection,
            session,
        } = &self.auth
        else {
            return Ok(reply);
        };
        tracing::info!(bmc = %self.base, "session expired; logging in again");
        let fresh = match self.login(collection).await {
            Ok(s) => s,
            Err(LoginError::Failed(e)) => return Err(e),
            Err(LoginError::NoSessions) => return Ok(reply),
        };
        *session.lock().unwrap() = fresh;
        self.send_with(method, path, body, true, headers).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        auth: bool,
    ) -> Result<Reply, RedfishError> {
        if auth {
            self.request(method, path, body, HeaderMap::new()).await
        } else {
            self.send_with(method, path, body, false, HeaderMap::new())
                .await
        }
    }

    /// One HTTP exchange under the deadline, body capped.
    async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        auth: bool,
        headers: HeaderMap,
    ) -> Result<Reply, RedfishError> {
        let url = format!("{}{}", self.base, path);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "ferrox-controller");
        if let Some(h) = req.headers_mut() {
            h.extend(headers);
        }
        if auth {
            req = match &self.auth {
                Auth::Basic(v) => req.header(AUTHORIZATION, v),
                Auth::Session { session, .. } => {
                    let token = session.lock().unwrap().token.clone();
                    req.header(X_AUTH_TOKEN, token)
                }
            };
        }
        let payload = match body {
            Some(v) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(payload)).map_err(|e| {
            self.garbage(
                method.clone(),
                path,
                "a path that is not a valid URL".into(),
                Some(Box::new(e)),
            )
        })?;

        let limit = self.opts.max_body;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| self.transport_error(&method, path, e))?;
            let (parts, body) = resp.into_parts();
            let too_large = || {
                self.garbage(
                    method.clone(),
                    path,
                    format!("a body larger than {limit} bytes"),
                    None,
                )
            };
            if parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n > limit as u64)
            {
                return Err(too_large());
            }
            let body = Limited::new(body, limit).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    too_large()
                } else {
                    self.garbage(method.clone(), path, "a broken body".into(), Some(e))
                }
            })?;
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body: body.to_bytes(),
            })
        };
        let reply = tokio::time::timeout(self.opts.timeout, exchange)
            .await
            .map_err(|_| RedfishError::Timeout {
                addr: self.base.clone(),
                method: method.clone(),
                path: path.to_string(),
                timeout: self.opts.timeout,
            })??;
        tracing::debug!(bmc = %self.base, %method, path, status = %reply.status, bytes = reply.body.len(), "redfish request");
        Ok(reply)
    }

    /// 2xx passes; otherwise the matching error.
    fn check(&self, method: &Method, path: &str, reply: &Reply) -> Result<(), RedfishError> {
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(self.status_error(method, path, reply))
        }
    }

    fn status_error(&self, method: &Method, path: &str, reply: &Reply) -> RedfishError {
        if matches!(
            reply.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return RedfishError::Credentials {
                addr: self.base.clone(),
                method: method.clone(),
                path: path.to_string(),
                status: reply.status,
            };
        }
        RedfishError::Rejected {
            addr: self.base.clone(),
            method: method.clone(),
            path: path.to_string(),
            status: reply.status,
            message: redfish_message(&reply.body),
        }
    }

    fn garbage(
        &self,
        method: Method,
        path: &str,
        what: String,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> RedfishError {
        RedfishError::Garbage {
            addr: self.base.clone(),
            method,
            path: path.to_string(),
            what,
            source,
        }
    }

    fn transport_error(
        &self,
        method: &Method,
        path: &str,
        err: hyper_util::client::legacy::Error,
    ) -> RedfishError {
        let addr = self.base.clone();
        if let Some(tls) = find_in_chain::<rustls::Error>(&err) {
            return match tls {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    RedfishError::Certificate {
                        addr,
                        source: tls.clone(),
                    }
                }
                _ => RedfishError::Tls {
                    addr,
                    source: tls.clone(),
                },
            };
        }
        if let Some(h) = find_in_chain::<hyper::Error>(&err) {
            if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
                return RedfishError::Garbage {
                    addr,
                    method: method.clone(),
                    path: path.to_string(),
                    what: "an invalid HTTP response".into(),
                    source: Some(Box::new(err)),
                };
            }
        }
        RedfishError::Unreachable {
            addr,
            source: Box::new(err),
        }
    }
}

enum LoginError {
    /// The service advertises sessions but does not take them: use basic auth.
    NoSessions,
    Failed(RedfishError),
}

impl From<RedfishError> for LoginError {
    fn from(e: RedfishError) -> Self {
        LoginError::Failed(e)
    }
}

/// The first of `prefs` the system allows (any of them when it does not say).
fn choose_reset_type<'a>(allowed: &[String], prefs: &[&'a str]) -> Option<&'a str> {
    if allowed.is_empty() {
        return prefs.first().copied();
    }
    prefs
        .iter()
        .copied()
        .find(|p| allowed.iter().any(|a| a == p))
}

/// `doc[keys...]["@odata.id"]` as a path on this BMC.
fn odata_id(doc: &Value, keys: &[&str]) -> Option<String> {
    let mut cur = doc;
    for k in keys {
        cur = cur.get(k)?;
    }
    cur.get("@odata.id")
        .and_then(Value::as_str)
        .and_then(same_host_path)
}

/// A path the BMC handed us, reduced to a path on the same BMC: an absolute URL loses its
/// scheme and host (credentials never go elsewhere); anything not a clean absolute path is
/// dropped.
fn same_host_path(s: &str) -> Option<String> {
    let path = if let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    {
        &rest[rest.find('/')?..]
    } else {
        s
    };
    let ok = path.starts_with('/')
        && !path.starts_with("//")
        && path.len() <= 1024
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b));
    ok.then(|| path.to_string())
}

/// Reads the fields we use from a ComputerSystem document.
fn parse_system(path: &str, doc: &Value, etag: Option<String>) -> Result<SystemInfo, String> {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(bounded);
    let list = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .take(64)
                    .map(bounded)
                    .collect()
            })
            .unwrap_or_default()
    };
    let id = s(doc.get("Id")).ok_or("a ComputerSystem without an Id")?;
    let boot = doc.get("Boot");
    let reset = doc
        .get("Actions")
        .and_then(|a| a.get("#ComputerSystem.Reset"));
    let reset_target = reset
        .and_then(|r| r.get("target"))
        .and_then(Value::as_str)
        .and_then(same_host_path)
        .unwrap_or_else(|| format!("{path}/Actions/ComputerSystem.Reset"));
    Ok(SystemInfo {
        path: path.to_string(),
        id,
        uuid: s(doc.get("UUID")),
        manufacturer: s(doc.get("Manufacturer")),
        model: s(doc.get("Model")),
        serial: s(doc.get("SerialNumber")),
        power_state: PowerState::from_redfish(doc.get("PowerState").and_then(Value::as_str)),
        boot: BootOverride {
            enabled: s(boot.and_then(|b| b.get("BootSourceOverrideEnabled"))),
            target: s(boot.and_then(|b| b.get("BootSourceOverrideTarget"))),
            mode: boot
                .and_then(|b| b.get("BootSourceOverrideMode"))
                .and_then(Value::as_str)
                .and_then(BootMode::from_redfish),
        },
        allowed_boot_targets: list(
            boot.and_then(|b| b.get("BootSourceOverrideTarget@Redfish.AllowableValues")),
        ),
        allowed_reset_types: list(reset.and_then(|r| r.get("ResetType@Redfish.AllowableValues"))),
        reset_target,
        etag,
    })
}

/// The human part of a Redfish error body: the `@Message.ExtendedInfo` messages, else
/// `error.message`, on one bounded line.
fn redfish_message(body: &[u8]) -> String {
    let Ok(doc) = serde_json::from_slice::<Value>(body) else {
        return "no Redfish error in the answer".into();
    };
    let Some(err) = doc.get("error") else {
        return "no Redfish error in the answer".into();
    };
    let extended: Vec<&str> = err
        .get("@Message.ExtendedInfo")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|m| m.get("Message").and_then(Value::as_str))
                .take(8)
                .collect()
        })
        .unwrap_or_default();
    let msg = if !extended.is_empty() {
        extended.join("; ")
    } else if let Some(m) = err.get("message").and_then(Value::as_str) {
        m.to_string()
    } else {
        return "no Redfish error message".into();
    };
    bounded(&msg)
}

/// One line, at most [`MAX_FIELD`] characters.
fn bounded(s: &str) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_FIELD) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}

/// Finds an error of type `T` anywhere in the chain, including inside `io::Error`s (whose
/// `source()` skips the wrapped error).
fn find_in_chain<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(t) = find_in_chain::<T>(inner) {
                    return Some(t);
                }
            }
        }
        cur = e.source();
    }
    None
}

fn build_client(addr: &str, opts: &ConnectOptions) -> Result<HttpClient, RedfishError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config_err = |reason: String| RedfishError::Configuration {
        addr: addr.to_string(),
        reason,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(e.to_string()))?;
    let tls = if opts.disable_cert_verification {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(pem) = &opts.extra_ca_pem {
            let certs = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| config_err(format!("the extra CA PEM does not parse: {e}")))?;
            if certs.is_empty() {
                return Err(config_err("the extra CA PEM holds no certificate".into()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| config_err(format!("an extra CA certificate is unusable: {e}")))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(opts.timeout));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}

/// `disableCertificateVerification`: any certificate is accepted, but the handshake
/// signatures are still checked (the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_type_follows_what_the_system_allows() {
        let allowed = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&[&str], &[&str], Option<&str>)] = &[
            (&[], &["On", "ForceOn"], Some("On")),
            (
                &["ForceOn", "ForceOff"],
                &["On", "ForceOn"],
                Some("ForceOn"),
            ),
            (
                &["On", "ForceOff", "GracefulShutdown"],
                &["GracefulShutdown"],
                Some("GracefulShutdown"),
            ),
            (&["On", "ForceOff"], &["GracefulShutdown"], None),
            (
                &["PowerCycle"],
                &["ForceRestart", "PowerCycle"],
                Some("PowerCycle"),
            ),
        ];
        for (a, prefs, want) in cases {
            assert_eq!(
                choose_reset_type(&allowed(a), prefs),
                *want,
                "{a:?} {prefs:?}"
            );
        }
    }

    #[test]
    fn paths_from_the_bmc_stay_on_the_bmc() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/redfish/v1/Systems/1", Some("/redfish/v1/Systems/1")),
            (
                "https://evil.example/redfish/v1/SessionService/Sessions/7",
                Some("/redfish/v1/SessionService/Sessions/7"),
            ),
            ("http://10.0.0.1:8000/x", Some("/x")),
            ("https://evil.example", None),
            ("//evil.example/x", None),
            ("redfish/v1/Systems/1", None),
            ("/redfish/v1/Systems/1 2", None),
            ("/a\r\nX-Injected: 1", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(same_host_path(input).as_deref(), *want, "{input:?}");
        }
    }

    #[test]
    fn redfish_messages_prefer_extended_info_and_stay_one_bounded_line() {
        let long = "x".repeat(5000);
        let cases: Vec<(Vec<u8>, String)> = vec![
            (
                br#"{"error":{"code":"Base.1.0.GeneralError","message":"general","@Message.ExtendedInfo":[{"Message":"The request failed\ndue to a conflict."},{"Message":"Try later."}]}}"#.to_vec(),
                "The request failed due to a conflict.; Try later.".into(),
            ),
            (
                br#"{"error":{"code":"Base.1.0.GeneralError","message":"Can not request power off","@Message.ExtendedInfo":[{"MessageId":"Base.1.0.GeneralError"}]}}"#.to_vec(),
                "Can not request power off".into(),
            ),
            (b"<html>500</html>".to_vec(), "no Redfish error in the answer".into()),
            (br#"{"error":{}}"#.to_vec(), "no Redfish error message".into()),
            (
                format!(r#"{{"error":{{"message":"{long}"}}}}"#).into_bytes(),
                format!("{}…", "x".repeat(MAX_FIELD)),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(redfish_message(&body), want);
        }
    }

    #[test]
    fn system_documents_parse_with_missing_fields() {
        let full = json!({
            "Id": "1", "UUID": "u", "Manufacturer": "m", "Model": "mo", "SerialNumber": "s",
            "PowerState": "PoweringOn",
            "Boot": {
                "BootSourceOverrideEnabled": "Once", "BootSourceOverrideTarget": "Pxe",
                "BootSourceOverrideMode": "Legacy",
                "BootSourceOverrideTarget@Redfish.AllowableValues": ["Pxe", "Hdd"]
            },
            "Actions": {"#ComputerSystem.Reset": {
                "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                "ResetType@Redfish.AllowableValues": ["On", "ForceOff"]
            }}
        });
        let info = parse_system("/redfish/v1/Systems/1", &full, Some("\"e1\"".into())).unwrap();
        assert_eq!(info.power_state, PowerState::PoweringOn);
        assert_eq!(info.boot_mode(), Some(BootMode::Legacy));
        assert_eq!(info.boot.enabled.as_deref(), Some("Once"));
        assert_eq!(info.allowed_boot_targets, ["Pxe", "Hdd"]);
        assert_eq!(info.allowed_reset_types, ["On", "ForceOff"]);
        assert_eq!(info.serial.as_deref(), Some("s"));

        let minimal = json!({"Id": "2", "PowerState": 7});
        let info = parse_system("/redfish/v1/Systems/2", &minimal, None).unwrap();
        assert_eq!(info.power_state, PowerState::Unknown(String::new()));
        assert_eq!(info.boot, BootOverride::default());
        assert!(info.allowed_reset_types.is_empty());
        assert_eq!(
            info.reset_target,
            "/redfish/v1/Systems/2/Actions/ComputerSystem.Reset"
        );

        assert!(parse_system("/x", &json!({"Name": "no id"}), None).is_err());
    }
}
