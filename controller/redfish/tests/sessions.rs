//! Session authentication, ETags and reset-type negotiation against a small Redfish service
//! written here. This is a stand-in, on purpose and only for what sushy-tools cannot do: it
//! has no SessionService, sends no ETags and allows every reset type. Everything sushy-tools
//! does emulate is tested against it in `tests/sushy.rs`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use controller_redfish::{
    BmcAddress, BootMode, BootTarget, ConnectOptions, Credentials, ErrorKind, PowerState, Redfish,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";
const SYSTEM: &str = "/redfish/v1/Systems/1";
const ETAG: &str = "\"v7\"";

#[derive(Default)]
struct State {
    /// Sessions take a 405 on POST: the client must fall back to basic auth.
    no_sessions: bool,
    tokens: HashSet<String>,
    logins: u32,
    deleted: Vec<String>,
    resets: Vec<String>,
    patches: Vec<(Option<String>, Value)>,
    power: String,
}

type Shared = Arc<Mutex<State>>;

struct Bmc {
    port: u16,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Bmc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn bmc(no_sessions: bool) -> Bmc {
    bmc_on("127.0.0.1:0", no_sessions).await
}

async fn bmc_on(bind: &str, no_sessions: bool) -> Bmc {
    let listener = TcpListener::bind(bind).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state: Shared = Arc::new(Mutex::new(State {
        no_sessions,
        power: "Off".into(),
        ..State::default()
    }));
    let st = state.clone();
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    Bmc { port, state, task }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn redfish_error(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        json!({"error": {"code": "Base.1.0.GeneralError", "message": "general",
            "@Message.ExtendedInfo": [{"MessageId": "Base.1.0.X", "Message": msg}]}}),
    )
}

async fn handle(st: Shared, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = parts.uri.path().to_string();
    let mut s = st.lock().unwrap();

    if path == "/redfish/v1/" {
        return Ok(reply(
            StatusCode::OK,
            json!({"Id": "RootService", "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
                "Systems": {"@odata.id": "/redfish/v1/Systems"},
                "Links": {"Sessions": {"@odata.id": SESSIONS}}}),
        ));
    }
    if path == SESSIONS && parts.method == http::Method::POST {
        if s.no_sessions {
            return Ok(redfish_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "no sessions here",
            ));
        }
        if json["UserName"] != "root" || json["Password"] != "calvin" {
            return Ok(redfish_error(StatusCode::UNAUTHORIZED, "bad login"));
        }
        s.logins += 1;
        let n = s.logins;
        let token = format!("token-{n}");
        s.tokens.insert(token.clone());
        let mut r = reply(
            StatusCode::CREATED,
            json!({"@odata.id": format!("{SESSIONS}/{n}")}),
        );
        r.headers_mut()
            .insert("x-auth-token", token.parse().unwrap());
        // An absolute URL naming another host: the client must only take its path.
        r.headers_mut().insert(
            "location",
            format!("https://elsewhere.example{SESSIONS}/{n}")
                .parse()
                .unwrap(),
        );
        return Ok(r);
    }

    let token = parts
        .headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok());
    let authed = match token {
        Some(t) => s.tokens.contains(t),
        // root:calvin
        None => {
            s.no_sessions
                && parts
                    .headers
                    .get("authorization")
                    .is_some_and(|v| v == "Basic cm9vdDpjYWx2aW4=")
        }
    };
    if !authed {
        return Ok(redfish_error(StatusCode::UNAUTHORIZED, "not logged in"));
    }

    let resp = match (parts.method.clone(), path.as_str()) {
        (http::Method::DELETE, p) if p.starts_with(SESSIONS) => {
            s.deleted.push(p.to_string());
            if let Some(t) = token {
                s.tokens.remove(t);
            }
            reply(StatusCode::NO_CONTENT, json!({}))
        }
        (http::Method::GET, "/redfish/v1/Systems") => reply(
            StatusCode::OK,
            json!({"Members": [{"@odata.id": SYSTEM}], "Members@odata.count": 1}),
        ),
        (http::Method::GET, SYSTEM) => {
            let mut r = reply(
                StatusCode::OK,
                json!({"Id": "1", "UUID": "4c4c4544-0042-3010-8051-b4c04f323532",
                    "Manufacturer": "Dell Inc.", "Model": "PowerEdge R640", "SerialNumber": "B20QK22",
                    "PowerState": s.power,
                    "Boot": {"BootSourceOverrideEnabled": "Disabled", "BootSourceOverrideTarget": "None",
                        "BootSourceOverrideMode": "UEFI",
                        "BootSourceOverrideTarget@Redfish.AllowableValues": ["None", "Pxe", "Hdd"]},
                    "Actions": {"#ComputerSystem.Reset": {
                        "target": format!("{SYSTEM}/Actions/ComputerSystem.Reset"),
                        "ResetType@Redfish.AllowableValues": ["ForceOn", "ForceOff", "PushPowerButton"]}}}),
            );
            r.headers_mut().insert("etag", ETAG.parse().unwrap());
            r
        }
        (http::Method::PATCH, SYSTEM) => {
            let if_match = parts
                .headers
                .get("if-match")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            s.patches.push((if_match.clone(), json));
            if if_match.as_deref() != Some(ETAG) {
                redfish_error(StatusCode::PRECONDITION_FAILED, "stale ETag")
            } else {
                reply(StatusCode::NO_CONTENT, json!({}))
            }
        }
        (http::Method::POST, p) if p == format!("{SYSTEM}/Actions/ComputerSystem.Reset") => {
            let rt = json["ResetType"].as_str().unwrap_or("").to_string();
            match rt.as_str() {
                "ForceOn" => s.power = "On".into(),
                "ForceOff" => s.power = "Off".into(),
                _ => {
                    return Ok(redfish_error(
                        StatusCode::BAD_REQUEST,
                        "unsupported reset type",
                    ))
                }
            }
            s.resets.push(rt);
            reply(StatusCode::NO_CONTENT, json!({}))
        }
        _ => redfish_error(StatusCode::NOT_FOUND, "no such resource"),
    };
    Ok(resp)
}

async fn connect(port: u16, password: &str) -> Result<Redfish, controller_redfish::RedfishError> {
    connect_to(port, SYSTEM, password).await
}

async fn connect_to(
    port: u16,
    system: &str,
    password: &str,
) -> Result<Redfish, controller_redfish::RedfishError> {
    let endpoint = BmcAddress::parse(&format!("redfish+http://127.0.0.1:{port}{system}"))
        .unwrap()
        .into_redfish()
        .unwrap();
    let creds = Credentials {
        username: "root".into(),
        password: password.into(),
    };
    let opts = ConnectOptions {
        timeout: Duration::from_secs(5),
        ..ConnectOptions::default()
    };
    Redfish::connect(&endpoint, creds, opts).await
}

#[tokio::test]
async fn session_login_use_renewal_and_logout() {
    let server = bmc(false).await;
    let bmc = connect(server.port, "calvin").await.unwrap();
    assert!(bmc.uses_session());
    assert_eq!(server.state.lock().unwrap().logins, 1);

    let info = bmc.system().await.unwrap();
    assert_eq!(info.model.as_deref(), Some("PowerEdge R640"));
    assert_eq!(info.serial.as_deref(), Some("B20QK22"));

    // The BMC forgets the session (expiry, BMC reboot): one new login, the call succeeds.
    server.state.lock().unwrap().tokens.clear();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(server.state.lock().unwrap().logins, 2);

    // Logout deletes the session by the path of its Location, on this BMC.
    bmc.close().await;
    let s = server.state.lock().unwrap();
    assert_eq!(s.deleted, [format!("{SESSIONS}/2")]);
    assert!(s.tokens.is_empty());
}

#[tokio::test]
async fn reset_types_follow_what_the_system_allows() {
    let server = bmc(false).await;
    let bmc = connect(server.port, "calvin").await.unwrap();
    // "On" is not allowed, "ForceOn" is.
    bmc.power_on().await.unwrap();
    bmc.power_on().await.unwrap();
    // GracefulShutdown is not allowed: refused before anything is sent.
    let err = bmc.power_off(false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "the BMC at http://127.0.0.1:{} does not support reset type GracefulShutdown (allowed: ForceOn, ForceOff, PushPowerButton)",
            server.port
        )
    );
    bmc.power_off(true).await.unwrap();
    bmc.power_off(true).await.unwrap();
    assert_eq!(
        server.state.lock().unwrap().resets,
        ["ForceOn", "ForceOff"],
        "idempotent: one request each"
    );
}

#[tokio::test]
async fn boot_override_is_once_with_the_etag() {
    let server = bmc(false).await;
    let bmc = connect(server.port, "calvin").await.unwrap();
    bmc.set_boot_once(BootTarget::Pxe, Some(BootMode::Uefi))
        .await
        .unwrap();
    {
        let s = server.state.lock().unwrap();
        let (if_match, body) = &s.patches[0];
        assert_eq!(if_match.as_deref(), Some(ETAG));
        assert_eq!(
            body,
            &json!({"Boot": {"BootSourceOverrideEnabled": "Once", "BootSourceOverrideTarget": "Pxe",
                "BootSourceOverrideMode": "UEFI"}})
        );
    }
    // UefiHttp is not among the allowed targets: refused with the list, nothing sent.
    let err = bmc
        .set_boot_once(BootTarget::UefiHttp, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(
        err.to_string()
            .ends_with("boot target UefiHttp (allowed: None, Pxe, Hdd)"),
        "{err}"
    );
    assert_eq!(server.state.lock().unwrap().patches.len(), 1);
}

#[tokio::test]
async fn wrong_password_fails_the_session_login() {
    let server = bmc(false).await;
    let err = connect(server.port, "wrong").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Credentials, "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "the BMC at http://127.0.0.1:{} refused the credentials (HTTP 401 Unauthorized for POST {SESSIONS})",
            server.port
        )
    );
    assert_eq!(server.state.lock().unwrap().logins, 0);
}

#[tokio::test]
async fn a_session_service_that_refuses_sessions_falls_back_to_basic_auth() {
    let server = bmc(true).await;
    let bmc = connect(server.port, "calvin").await.unwrap();
    assert!(!bmc.uses_session());
    assert_eq!(bmc.system().await.unwrap().id, "1");
    let err = connect(server.port, "wrong").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Credentials, "{err:?}");
}

#[tokio::test]
async fn an_ipv6_literal_address_reaches_the_bmc() {
    // Loopback ::1 exists wherever these tests run (checked on the dev machines and CI).
    let server = bmc_on("[::1]:0", false).await;
    let address = format!("redfish+http://[::1]:{}/redfish/v1/Systems/1/", server.port);
    let endpoint = BmcAddress::parse(&address).unwrap().into_redfish().unwrap();
    let creds = Credentials {
        username: "root".into(),
        password: "calvin".into(),
    };
    let bmc = Redfish::connect(&endpoint, creds, ConnectOptions::default())
        .await
        .unwrap();
    assert_eq!(bmc.system_path(), SYSTEM);
    assert_eq!(bmc.system().await.unwrap().id, "1");
}

#[tokio::test]
async fn a_failed_connect_does_not_leak_its_session() {
    let server = bmc(false).await;
    let err = connect_to(server.port, "/redfish/v1/Systems/2", "calvin")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "the BMC at http://127.0.0.1:{} has no system /redfish/v1/Systems/2",
            server.port
        )
    );
    let s = server.state.lock().unwrap();
    assert_eq!(s.logins, 1);
    assert_eq!(s.deleted, [format!("{SESSIONS}/1")]);
    assert!(s.tokens.is_empty());
}
