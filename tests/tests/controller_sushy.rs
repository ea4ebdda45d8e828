//! The controller's reconciler against real BMCs: sushy-tools (fake driver) as the Redfish BMC,
//! the embedded store, manifests as a user writes them. The agent side is played in-process
//! through the reconciler's agent-facing calls (redeem the token netboot would hand out, take
//! commands, report outcomes) — the mTLS transport is tested on its own.
//!
//! Needs root (sushy-tools lives in a venv under /opt): run by `hack/test.sh`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_proto::{Action, Enroll, Event, FullInventory, Outcome};
use ferrox_controller::bmc::RedfishBmc;
use ferrox_controller::machine::Limits;
use ferrox_controller::manifests;
use ferrox_controller::model::{ErrorType, HostKey, Operational, State};
use ferrox_controller::reconciler::{Config, Reconciler, Refusal};
use ferrox_controller::store::Store;
use tests::sushy::{Emulator, Setup, PASSWORD, SYSTEM, USER};
use tokio_util::sync::CancellationToken;

const MAC: &str = "00:5c:52:31:3a:9c";

const IMAGE: &str = "http://127.0.0.1:1/image.raw";

fn manifest(address: &str, password: &str, image: Option<&str>) -> String {
    let image = match image {
        Some(url) => format!(
            "  image:\n    url: {url}\n    checksum: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n    format: raw\n"
        ),
        None => String::new(),
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: node-0-bmc\nstringData:\n  username: {USER}\n  password: {password}\n---\n\
         apiVersion: metal3.io/v1alpha1\nkind: BareMetalHost\nmetadata:\n  name: node-0\nspec:\n  online: true\n  bootMACAddress: {MAC}\n  bmc:\n    address: {address}\n    credentialsName: node-0-bmc\n{image}"
    )
}

struct Lab {
    rec: Arc<Reconciler>,
    cancel: CancellationToken,
    dir: tempfile::TempDir,
    run: tokio::task::JoinHandle<()>,
}

impl Lab {
    /// The lab's limits: a minute to boot the agent, short backoffs.
    fn limits() -> Limits {
        Limits {
            boot_timeout_ms: 60_000,
            backoff_base_ms: 500,
            backoff_max_ms: 2_000,
            ..Limits::default()
        }
    }

    fn start(dir: tempfile::TempDir, text: &str) -> Lab {
        Self::start_with(dir, text, Self::limits())
    }

    /// As [`Lab::start`], with other limits.
    fn start_with(dir: tempfile::TempDir, text: &str, limits: Limits) -> Lab {
        let store = Arc::new(Store::open(&dir.path().join("state.redb")).unwrap());
        let cfg = Config {
            limits,
            provisioning_limit: 4,
            workers: 4,
            agent_url: "https://127.0.0.1:9443".into(),
            ca_fingerprint: "sha256:00".into(),
            token_ttl: Duration::from_secs(600),
            ramdisk_cmdline: None,
        };
        let rec = Reconciler::new(
            store,
            Arc::new(RedfishBmc::default()),
            Box::new(ferrox_controller::configdrive::render),
            cfg,
        );
        let mut m = manifests::Manifests::default();
        manifests::read_text(Path::new("hosts.yaml"), text, &mut m);
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        manifests::sync(&rec, &m);
        let cancel = CancellationToken::new();
        let run = tokio::spawn(rec.clone().run(cancel.clone()).map_ok());
        Lab {
            rec,
            cancel,
            dir,
            run,
        }
    }

    fn apply(&self, text: &str) {
        let mut m = manifests::Manifests::default();
        manifests::read_text(Path::new("hosts.yaml"), text, &mut m);
        manifests::sync(&self.rec, &m);
    }

    fn key() -> HostKey {
        HostKey::new("default", "node-0")
    }

    fn status(&self) -> ferrox_controller::model::HostStatus {
        self.rec
            .store()
            .host(&Self::key())
            .unwrap()
            .map(|r| r.status)
            .unwrap_or_default()
    }

    async fn wait(
        &self,
        what: &str,
        limit: Duration,
        f: impl Fn(&ferrox_controller::model::HostStatus) -> bool,
    ) {
        let t0 = Instant::now();
        loop {
            let st = self.status();
            if f(&st) {
                return;
            }
            assert!(t0.elapsed() < limit, "waiting for {what}: status {st:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The token netboot would put in this host's iPXE script.
    fn netboot_token(&self) -> Option<String> {
        self.rec
            .netboot_hosts()
            .unwrap()
            .iter()
            .find(|h| h["mac"] == MAC)
            .and_then(|h| h["boot"]["token"].as_str().map(str::to_string))
    }

    /// Waits (60 s at most) until the deleted host is forgotten; its state changes, in order.
    async fn wait_forgotten(&self) -> Vec<String> {
        let key = Self::key();
        let t0 = Instant::now();
        while self.rec.store().host(&key).unwrap().is_some() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "host not deleted: {:#?}",
                self.status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.rec
            .store()
            .events(Some(&key))
            .unwrap()
            .into_iter()
            .filter(|e| e.reason == "StateChanged")
            .map(|e| e.message)
            .collect()
    }

    async fn stop(self) -> tempfile::TempDir {
        self.cancel.cancel();
        self.run.await.unwrap();
        self.dir
    }
}

trait MapOk {
    fn map_ok(self) -> impl std::future::Future<Output = ()> + Send;
}
impl<F: std::future::Future<Output = Result<(), ferrox_controller::store::StoreError>> + Send> MapOk
    for F
{
    async fn map_ok(self) {
        self.await.unwrap()
    }
}

fn enroll(token: &str, mac: &str) -> Enroll {
    Enroll {
        protocol: agent_proto::PROTOCOL_VERSION,
        token: token.into(),
        csr_pem: String::new(),
        boot_mac: mac.into(),
        address: "192.0.2.10".into(),
        macs: vec![mac.into()],
        system_uuid: Some(SYSTEM.into()),
        system_serial: None,
        ready_after_seconds: 3.0,
    }
}

/// Plays the agent of enrollment `session`: takes the next command and answers it with
/// `outcome`.
async fn answer(
    rec: &Reconciler,
    key: &HostKey,
    session: &str,
    outcome: impl Fn(&Action) -> Outcome,
) -> Action {
    let t0 = Instant::now();
    loop {
        if let Some(cmd) = rec.next_command(key, Some(session)) {
            let o = outcome(&cmd.action);
            rec.agent_event(
                key,
                Some(session),
                &Event::Done {
                    command: cmd.id.clone(),
                    outcome: o,
                },
            );
            // A duplicate delivery of the same result changes nothing.
            return cmd.action;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no command for the agent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sushy() -> Emulator {
    Emulator::start(Setup {
        basic_auth: true,
        ..Setup::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and sushy-tools (hack/sushy-tools.sh): run by hack/test.sh"]
async fn a_host_goes_from_manifest_to_provisioned_and_back_through_a_real_redfish_bmc() {
    let emu = sushy();
    let address = emu.address("redfish+http", Some(SYSTEM));
    let lab = Lab::start(
        tempfile::tempdir().unwrap(),
        &manifest(&address, PASSWORD, None),
    );
    let key = Lab::key();

    lab.wait(
        "inspecting with a boot token for netboot",
        Duration::from_secs(60),
        |s| s.state == State::Inspecting && s.boot_token.is_some(),
    )
    .await;
    let token = lab
        .netboot_token()
        .expect("netboot serves the host's token");
    // Another machine presenting the token is refused; the host's own agent then gets in.
    assert_eq!(
        lab.rec.redeem(&token, &enroll(&token, "52:54:00:ff:ff:ff")),
        Err(Refusal::WrongHost {
            host: key.clone(),
            mac: MAC.into()
        })
    );
    let enrolled = lab
        .rec
        .redeem(&token, &enroll(&token, &MAC.to_uppercase()))
        .unwrap();
    assert_eq!(enrolled.key, key);
    let session = enrolled.session;
    assert_eq!(
        lab.rec.redeem(&token, &enroll(&token, MAC)),
        Err(Refusal::TokenUsed(key.clone())),
        "single use"
    );
    assert_eq!(
        lab.rec.redeem("never-minted", &enroll("never-minted", MAC)),
        Err(Refusal::UnknownToken)
    );
    let events = lab.rec.store().events(Some(&key)).unwrap();
    assert!(
        events.iter().any(|e| e.warning
            && e.reason == "EnrollmentRefused"
            && e.message.contains("replayed")),
        "{events:#?}"
    );
    assert!(events
        .iter()
        .any(|e| e.reason == "EnrollmentRefused" && e.message.contains("another machine")));
    assert!(
        lab.netboot_token().is_none(),
        "netboot stops serving a redeemed token"
    );
    let action = answer(&lab.rec, &key, &session, |_| Outcome::Inventory {
        inventory: Box::new(FullInventory::default()),
    })
    .await;
    assert_eq!(action, Action::Inspect);
    lab.wait("available", Duration::from_secs(30), |s| {
        s.state == State::Available && s.hardware.is_some()
    })
    .await;

    lab.apply(&manifest(&address, PASSWORD, Some(IMAGE)));
    lab.wait("provisioning", Duration::from_secs(30), |s| {
        s.state == State::Provisioning && s.op.is_some()
    })
    .await;
    let action = answer(&lab.rec, &key, &session, |_| Outcome::Ok {
        summary: "wrote".into(),
        device: Some("/dev/vda".into()),
    })
    .await;
    match action {
        Action::WriteImage(w) => {
            assert_eq!(w.url, IMAGE);
            assert_eq!(
                w.checksum,
                "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            );
            assert!(
                w.config_drive.is_some(),
                "a config drive always goes with the image"
            );
        }
        other => panic!("expected a write, got {other:?}"),
    }
    lab.wait("provisioned", Duration::from_secs(30), |s| {
        s.state == State::Provisioned
    })
    .await;
    let st = lab.status();
    assert_eq!(st.root_device.as_deref(), Some("/dev/vda"));
    assert!(st.error.is_none());

    // Restart the controller: state survives, nothing is redone.
    let dir = lab.stop().await;
    let lab = Lab::start(dir, &manifest(&address, PASSWORD, Some(IMAGE)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lab.status().state, State::Provisioned);
    assert!(lab.status().op.is_none());

    // Removing the image deprovisions: the host boots the agent again and gets a metadata wipe.
    lab.apply(&manifest(&address, PASSWORD, None));
    lab.wait("deprovisioning boot", Duration::from_secs(60), |s| {
        s.state == State::Deprovisioning && s.boot_token.is_some()
    })
    .await;
    let token = lab.netboot_token().unwrap();
    let old_session = session;
    let session = lab
        .rec
        .redeem(&token, &enroll(&token, MAC))
        .unwrap()
        .session;
    assert_ne!(session, old_session, "each enrollment is a new session");
    // The agent of the earlier boot (were it still running) gets nothing, and what it says
    // is not heard.
    lab.wait("the wipe issued", Duration::from_secs(30), |s| {
        s.op.is_some()
    })
    .await;
    assert_eq!(lab.rec.next_command(&key, Some(&old_session)), None);
    assert_eq!(lab.rec.next_command(&key, None), None);
    let wipe = lab.status().op.unwrap().id;
    lab.rec.agent_event(
        &key,
        Some(&old_session),
        &Event::Done {
            command: wipe,
            outcome: Outcome::Ok {
                summary: "wiped".into(),
                device: None,
            },
        },
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lab.status().state, State::Deprovisioning);
    assert_eq!(lab.status().op.unwrap().outcome, None);
    let action = answer(&lab.rec, &key, &session, |_| Outcome::Ok {
        summary: "wiped".into(),
        device: None,
    })
    .await;
    assert!(
        matches!(
            action,
            Action::Wipe {
                mode: agent_proto::WipeMode::Metadata,
                ..
            }
        ),
        "{action:?}"
    );
    lab.wait("available again", Duration::from_secs(30), |s| {
        s.state == State::Available
    })
    .await;

    // Deleting the manifest powers the host off and forgets it.
    lab.apply("");
    let states = lab.wait_forgotten().await;
    assert!(
        states.ends_with(&[
            "available -> powering off before delete".to_string(),
            "powering off before delete -> deleting".to_string()
        ]),
        "{states:?}"
    );
    lab.stop().await;
    drop(emu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and sushy-tools (hack/sushy-tools.sh): run by hack/test.sh"]
async fn registration_errors_are_readable_and_retried() {
    let emu = sushy();
    let good = emu.address("redfish+http", Some(SYSTEM));
    let cases: Vec<(String, &str, &str)> = vec![
        (good.clone(), "wrong-password", "credentials"),
        (
            "ipmi://10.0.0.1:623".to_string(),
            PASSWORD,
            "ipmi driver is not supported",
        ),
        ("redfish+http://[::1".to_string(), PASSWORD, "BMC address"),
        (
            format!(
                "redfish+http://127.0.0.1:{}/redfish/v1/Systems/1",
                garbage_bmc()
            ),
            PASSWORD,
            "invalid JSON",
        ),
        (
            format!(
                "redfish+http://127.0.0.1:{}/redfish/v1/Systems/1",
                closed_port()
            ),
            PASSWORD,
            "127.0.0.1",
        ),
    ];
    for (address, password, want) in cases {
        let lab = Lab::start(
            tempfile::tempdir().unwrap(),
            &manifest(&address, password, None),
        );
        lab.wait("a registration error", Duration::from_secs(30), |s| {
            s.error.is_some()
        })
        .await;
        let st = lab.status();
        let e = st.error.clone().unwrap();
        assert_eq!(e.kind, ErrorType::Registration, "{address}");
        assert_eq!(st.operational, Operational::Error);
        assert!(
            e.message.to_lowercase().contains(&want.to_lowercase()),
            "{address}: {}",
            e.message
        );
        assert!(!e.message.contains(PASSWORD), "no secrets in errors");
        assert!(!e.message.contains('\n'), "one line");
        lab.wait("a retry", Duration::from_secs(10), |s| s.error_count >= 2)
            .await;
        lab.stop().await;
    }

    // A missing Secret says which, and fixing it recovers.
    let text = manifest(&good, PASSWORD, None);
    let host_only = &text[text.find("apiVersion: metal3.io").unwrap()..];
    let lab = Lab::start(tempfile::tempdir().unwrap(), host_only);
    lab.wait("a registration error", Duration::from_secs(30), |s| {
        s.error.is_some()
    })
    .await;
    assert!(lab
        .status()
        .error
        .unwrap()
        .message
        .contains("Secret default/node-0-bmc not found"));
    lab.apply(&text);
    lab.wait("registered", Duration::from_secs(30), |s| {
        s.state == State::Inspecting && s.error.is_none()
    })
    .await;
    lab.stop().await;
}

/// Registers, inspects and starts provisioning `image`; returns the write command the agent
/// took (and has not answered), and the agent's session.
/// The agent, still up, reports `write` done after the host has moved on (that result no
/// longer counts); its next command must be the metadata wipe, which it then does.
async fn late_write_result_then_metadata_wipe(
    lab: &Lab,
    session: &str,
    write: &agent_proto::Command,
) {
    let key = Lab::key();
    lab.rec.agent_event(
        &key,
        Some(session),
        &Event::Done {
            command: write.id.clone(),
            outcome: Outcome::Ok {
                summary: "wrote".into(),
                device: Some("/dev/vda".into()),
            },
        },
    );
    let action = answer(&lab.rec, &key, session, |_| Outcome::Ok {
        summary: "wiped".into(),
        device: None,
    })
    .await;
    assert!(
        matches!(
            action,
            Action::Wipe {
                mode: agent_proto::WipeMode::Metadata,
                ..
            }
        ),
        "{:?}",
        std::mem::discriminant(&action)
    );
}

async fn into_the_write(lab: &Lab, image: &str) -> (agent_proto::Command, String) {
    let key = Lab::key();
    lab.wait("a boot token", Duration::from_secs(60), |s| {
        s.state == State::Inspecting && s.boot_token.is_some()
    })
    .await;
    let token = lab.netboot_token().unwrap();
    let session = lab
        .rec
        .redeem(&token, &enroll(&token, MAC))
        .unwrap()
        .session;
    answer(&lab.rec, &key, &session, |_| Outcome::Inventory {
        inventory: Box::new(FullInventory::default()),
    })
    .await;
    lab.wait("provisioning", Duration::from_secs(30), |s| {
        s.state == State::Provisioning && s.op.is_some()
    })
    .await;
    let cmd = lab
        .rec
        .next_command(&key, Some(&session))
        .expect("the write is offered");
    match &cmd.action {
        Action::WriteImage(w) => assert_eq!(w.url, image),
        other => panic!("expected a write, got {other:?}"),
    }
    (cmd, session)
}

fn event_reasons(lab: &Lab) -> Vec<String> {
    let events = lab.rec.store().events(Some(&Lab::key())).unwrap();
    events.into_iter().map(|e| e.reason).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and sushy-tools (hack/sushy-tools.sh): run by hack/test.sh"]
async fn a_restart_mid_write_after_a_long_outage_resumes_the_same_write_without_a_reset() {
    let emu = sushy();
    let address = emu.address("redfish+http", Some(SYSTEM));
    let text = manifest(&address, PASSWORD, Some(IMAGE));
    // An agent is lost after 3 s of silence; the controller is then down for longer than that
    // while the agent writes (it cannot report to a stopped controller).
    const LOST_MS: u64 = 3_000;
    let lost = || Limits {
        agent_lost_ms: LOST_MS,
        ..Lab::limits()
    };
    let lab = Lab::start_with(tempfile::tempdir().unwrap(), &text, lost());
    let (cmd, session) = into_the_write(&lab, IMAGE).await;
    let boot = lab.status().agent.boot;
    let dir = lab.stop().await;
    tokio::time::sleep(Duration::from_millis(LOST_MS + 1_500)).await;

    let lab = Lab::start_with(dir, &text, lost());
    // The agent's next call (its retried progress report or long poll) comes within its
    // backoff, after the controller has looked at the host: it is offered the very same
    // command, and the machine was not reset.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let again = lab.rec.next_command(&Lab::key(), Some(&session));
    assert_eq!(
        again.as_ref().map(|c| &c.id),
        Some(&cmd.id),
        "{:#?}",
        lab.status()
    );
    assert_eq!(lab.status().agent.boot, boot, "no second boot of the agent");
    lab.rec.agent_event(
        &Lab::key(),
        Some(&session),
        &Event::Done {
            command: cmd.id.clone(),
            outcome: Outcome::Ok {
                summary: "wrote".into(),
                device: Some("/dev/vda".into()),
            },
        },
    );
    lab.wait("provisioned", Duration::from_secs(30), |s| {
        s.state == State::Provisioned
    })
    .await;
    let st = lab.status();
    assert_eq!(st.agent.boot, boot);
    assert_eq!(
        st.ops_issued, 2,
        "one inspection, one write: never a second write"
    );
    let reasons = event_reasons(&lab);
    assert!(!reasons.iter().any(|r| r == "AgentLost"), "{reasons:?}");
    lab.stop().await;
    drop(emu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and sushy-tools (hack/sushy-tools.sh): run by hack/test.sh"]
async fn an_image_edited_mid_write_is_cleaned_then_written_and_recorded_as_written() {
    const OTHER: &str = "http://127.0.0.1:1/other.raw";
    let emu = sushy();
    let address = emu.address("redfish+http", Some(SYSTEM));
    let lab = Lab::start(
        tempfile::tempdir().unwrap(),
        &manifest(&address, PASSWORD, Some(IMAGE)),
    );
    let key = Lab::key();
    let (first, session) = into_the_write(&lab, IMAGE).await;
    let boot = lab.status().agent.boot;

    lab.apply(&manifest(&address, PASSWORD, Some(OTHER)));
    lab.wait(
        "cleaning before the new image",
        Duration::from_secs(30),
        |s| s.state == State::Deprovisioning,
    )
    .await;
    // The first write ends after the edit: its result is not taken as the new image's.
    late_write_result_then_metadata_wipe(&lab, &session, &first).await;
    let action = answer(&lab.rec, &key, &session, |_| Outcome::Ok {
        summary: "wrote".into(),
        device: Some("/dev/vda".into()),
    })
    .await;
    match action {
        Action::WriteImage(w) => assert_eq!(w.url, OTHER),
        other => panic!("expected the new image's write, got {other:?}"),
    }
    lab.wait("provisioned", Duration::from_secs(30), |s| {
        s.state == State::Provisioned
    })
    .await;
    let st = lab.status();
    assert_eq!(
        st.provisioned_image.as_ref().map(|i| i.url.as_str()),
        Some(OTHER)
    );
    assert_eq!(st.agent.boot, boot, "the agent stayed up throughout");
    assert!(st.error.is_none(), "{st:#?}");
    assert!(event_reasons(&lab).iter().any(|r| r == "ImageChanged"));
    lab.stop().await;
    drop(emu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and sushy-tools (hack/sushy-tools.sh): run by hack/test.sh"]
async fn a_host_deleted_mid_write_is_cleaned_by_its_agent_then_powered_off_and_forgotten() {
    let emu = sushy();
    let address = emu.address("redfish+http", Some(SYSTEM));
    let lab = Lab::start(
        tempfile::tempdir().unwrap(),
        &manifest(&address, PASSWORD, Some(IMAGE)),
    );
    let (write, session) = into_the_write(&lab, IMAGE).await;

    // The user deletes the host while its image is being written: once the agent, still up,
    // has finished the write (its result no longer counts), it gets the metadata wipe (the
    // written disk must not boot), then the machine goes off.
    lab.apply("");
    lab.wait("deprovisioning", Duration::from_secs(30), |s| {
        s.state == State::Deprovisioning
    })
    .await;
    late_write_result_then_metadata_wipe(&lab, &session, &write).await;
    let states = lab.wait_forgotten().await;
    assert!(
        states.ends_with(&[
            "provisioning -> deprovisioning".to_string(),
            "deprovisioning -> powering off before delete".to_string(),
            "powering off before delete -> deleting".to_string()
        ]),
        "{states:?}"
    );
    lab.stop().await;
    drop(emu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and sushy-tools (hack/sushy-tools.sh): run by hack/test.sh"]
async fn a_host_that_never_boots_the_agent_times_out_then_boots_again_with_a_new_token() {
    let emu = sushy();
    let address = emu.address("redfish+http", Some(SYSTEM));
    let lab = Lab::start_with(
        tempfile::tempdir().unwrap(),
        &manifest(&address, PASSWORD, None),
        Limits {
            boot_timeout_ms: 2_000,
            ..Lab::limits()
        },
    );
    let key = Lab::key();
    lab.wait("a boot token", Duration::from_secs(30), |s| {
        s.state == State::Inspecting && s.boot_token.is_some()
    })
    .await;
    let first = lab.netboot_token().unwrap();
    // Nothing enrolls: after the boot timeout the host is in error, saying what it waited for.
    lab.wait("the boot timeout", Duration::from_secs(30), |s| {
        s.error.is_some()
    })
    .await;
    let e = lab.status().error.unwrap();
    assert_eq!(e.kind, ErrorType::Inspection);
    assert!(
        e.message.contains("did not boot the agent within 2 s") && e.message.contains(MAC),
        "{}",
        e.message
    );
    // It tries again with a new boot and a new token; the first no longer works.
    lab.wait("the next boot", Duration::from_secs(30), |s| {
        s.boot_token.is_some() && s.agent.boot >= 2
    })
    .await;
    let second = lab.netboot_token().unwrap();
    assert_ne!(first, second);
    assert!(lab.rec.redeem(&first, &enroll(&first, MAC)).is_err());
    let session = lab
        .rec
        .redeem(&second, &enroll(&second, MAC))
        .unwrap()
        .session;
    answer(&lab.rec, &key, &session, |_| Outcome::Inventory {
        inventory: Box::new(FullInventory::default()),
    })
    .await;
    lab.wait("available, error cleared", Duration::from_secs(30), |s| {
        s.state == State::Available && s.error.is_none()
    })
    .await;
    lab.stop().await;
    drop(emu);
}

/// A "BMC" that answers every request with 200 and a body that is not JSON; its port.
fn garbage_bmc() -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let mut buf = [0u8; 4096];
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = c.read(&mut buf);
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n<html>oops<",
            );
        }
    });
    port
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
