//! The controller end to end with the agent's own client over real mTLS: sushy-tools as the BMC,
//! the reconciler with the embedded store, the agent API with the controller's CA, and the
//! ramdisk agent's client (key + CSR, CA pinned by fingerprint) taking the token netboot would
//! hand out. Inspection runs the agent's real executor on a recorded machine (it only reads
//! files); the image write is acknowledged by hand over the same mTLS calls, because the
//! executor would write the disk the recorded inventory names — on this machine, its own.
//!
//! Needs root (sushy-tools lives in a venv under /opt): run by `hack/test.sh`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_inspect::Root;
use agent_proto::{Action, Event, Outcome, Progress};
use agent_ramdisk::client::{Client, ClientError, Identity};
use agent_ramdisk::exec::Executor;
use agent_wipe::guard::GuardPolicy;
use controller_agentapi::{AgentApi, Ca, Options};
use ferrox_controller::machine::Limits;
use ferrox_controller::model::{HostKey, State};
use ferrox_controller::reconciler::{Config, Reconciler};
use ferrox_controller::store::Store;
use ferrox_controller::{agents, bmc, configdrive, manifests, view};
use tests::sushy::{Emulator, Setup, PASSWORD, SYSTEM, USER};
use tokio_util::sync::CancellationToken;

const MAC: &str = "00:5c:52:31:3a:9c";

fn manifest(address: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: node-0-bmc\nstringData:\n  username: {USER}\n  password: {PASSWORD}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata:\n  name: node-0-user\nstringData:\n  userData: \"#cloud-config\\nhostname: node-0\\n\"\n---\n\
         apiVersion: metal3.io/v1alpha1\nkind: BareMetalHost\nmetadata:\n  name: node-0\nspec:\n  online: true\n  bootMACAddress: {MAC}\n  \
         bmc:\n    address: {address}\n    credentialsName: node-0-bmc\n  userData:\n    name: node-0-user\n  \
         image:\n    url: http://127.0.0.1:1/image.raw\n    checksum: {sum}\n    checksumType: sha256\n",
        sum = "ab".repeat(32)
    )
}

fn identity(mac: &str) -> Identity {
    Identity {
        boot_mac: mac.into(),
        address: "127.0.0.1".into(),
        macs: vec![mac.into()],
        system_uuid: Some(SYSTEM.into()),
        system_serial: None,
        ready_after_seconds: 2.0,
    }
}

async fn wait(
    rec: &Reconciler,
    what: &str,
    f: impl Fn(&ferrox_controller::model::HostStatus) -> bool,
) {
    let key = HostKey::new("default", "node-0");
    let t0 = Instant::now();
    loop {
        let st = rec
            .store()
            .host(&key)
            .unwrap()
            .map(|r| r.status)
            .unwrap_or_default();
        if f(&st) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "waiting for {what}: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and sushy-tools (hack/sushy-tools.sh): run by hack/test.sh"]
async fn inspect_and_provision_a_host_with_the_agents_client_over_mtls() {
    let emu = Emulator::start(Setup {
        basic_auth: true,
        ..Setup::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("state.redb")).unwrap());
    let ca = Ca::generate().unwrap();
    let fingerprint = ca.fingerprint();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let rec = Reconciler::new(
        store,
        Arc::new(bmc::RedfishBmc::default()),
        Box::new(configdrive::render),
        Config {
            limits: Limits::default(),
            provisioning_limit: 2,
            workers: 2,
            agent_url: url.clone(),
            ca_fingerprint: fingerprint.clone(),
            token_ttl: Duration::from_secs(600),
            ramdisk_cmdline: None,
        },
    );
    let api = Arc::new(
        AgentApi::new(
            ca,
            Arc::new(agents::Agents(rec.clone())),
            Options {
                server_names: vec!["127.0.0.1".into()],
                ..Options::default()
            },
        )
        .unwrap(),
    );
    agents::connect(&rec, &api);
    let cancel = CancellationToken::new();
    let serving = {
        let (api, c) = (api.clone(), cancel.clone());
        tokio::spawn(async move { api.serve(listener, c).await })
    };
    let mut m = manifests::Manifests::default();
    manifests::read_text(
        Path::new("hosts.yaml"),
        &manifest(&emu.address("redfish+http", Some(SYSTEM))),
        &mut m,
    );
    assert!(m.problems.is_empty(), "{:?}", m.problems);
    manifests::sync(&rec, &m);
    let running = tokio::spawn(rec.clone().run(cancel.clone()));

    wait(&rec, "the agent boot", |s| {
        s.state == State::Inspecting && s.boot_token.is_some()
    })
    .await;
    let feed = rec.netboot_hosts().unwrap();
    let boot = &feed
        .iter()
        .find(|h| h["mac"] == MAC)
        .expect("netboot feed has the host")["boot"];
    assert_eq!(boot["controller_url"], url.as_str());
    assert_eq!(boot["ca_fingerprint"], fingerprint.as_str());
    let token = boot["token"].as_str().unwrap().to_string();

    // A client pinned to another CA stops before sending the token.
    let impostor = Client::new(&url, &Ca::generate().unwrap().fingerprint()).unwrap();
    let e = impostor.enroll(&token, &identity(MAC)).await.unwrap_err();
    assert!(matches!(e, ClientError::CaMismatch { .. }), "{e}");

    // Another machine with the token is refused; the host's own agent gets its certificate.
    let thief = Client::new(&url, &fingerprint).unwrap();
    let e = thief
        .enroll(&token, &identity("52:54:00:66:66:66"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("wrong-host"), "{e}");
    let agent = Arc::new(Client::new(&url, &fingerprint).unwrap());
    let enrolled = agent.enroll(&token, &identity(MAC)).await.unwrap();
    assert_eq!(enrolled.host, "default/node-0");
    let replay = Client::new(&url, &fingerprint).unwrap();
    assert_eq!(
        replay
            .enroll(&token, &identity(MAC))
            .await
            .unwrap_err()
            .code(),
        Some("token-used")
    );

    // Inspection: the real executor on a recorded machine.
    let exec = Executor::new(
        Root::at(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../agent/inspect/fixtures/firecracker-vm"
        )),
        GuardPolicy::default(),
    );
    let cmd = loop {
        if let Some(c) = agent.heartbeat(None, 10).await.unwrap().command {
            break c;
        }
    };
    assert_eq!(cmd.action, Action::Inspect);
    let outcome = exec.execute(&cmd.action, Arc::new(|_| {}));
    assert!(matches!(outcome, Outcome::Inventory { .. }), "{outcome:?}");
    agent
        .events(vec![Event::Done {
            command: cmd.id.clone(),
            outcome,
        }])
        .await
        .unwrap();

    // Available, then provisioning at once (the image is set): the write command arrives on the
    // same agent (fast-track), with the config drive.
    let cmd = loop {
        if let Some(c) = agent.heartbeat(None, 10).await.unwrap().command {
            break c;
        }
    };
    let Action::WriteImage(w) = &cmd.action else {
        panic!("expected write-image, got {:?}", cmd.action)
    };
    assert_eq!(w.checksum, format!("sha256:{}", "ab".repeat(32)));
    assert!(w.config_drive.as_deref().is_some_and(|c| c.len() > 100));
    let key = HostKey::new("default", "node-0");
    let hw = view::hardware_data(&rec.store().host(&key).unwrap().unwrap())
        .expect("HardwareData once inspected");
    assert_eq!(hw.metadata.name.as_deref(), Some("node-0"));
    assert!(hw.spec.hardware.is_some());

    // Progress shows in the host's status while the "write" runs.
    agent
        .events(vec![Event::Progress {
            command: cmd.id.clone(),
            progress: Progress {
                operation: "write-image".into(),
                device: "/dev/vda".into(),
                bytes_done: 256 << 20,
                bytes_total: Some(1 << 30),
                rate_bytes_per_sec: 64 << 20,
                phase: "downloading".into(),
            },
        }])
        .await
        .unwrap();
    let status = view::status_json(&rec.store().host(&key).unwrap().unwrap());
    let progressing = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(progressing["status"], "True");
    assert!(
        progressing["message"]
            .as_str()
            .unwrap()
            .contains("256 MiB of 1024 MiB"),
        "{progressing}"
    );
    assert_eq!(status["provisioning"]["state"], "provisioning");

    // The same command is offered again until its result arrives (a lost reply changes nothing).
    let again = agent
        .heartbeat(Some(cmd.id.clone()), 1)
        .await
        .unwrap()
        .command
        .unwrap();
    assert_eq!(again.id, cmd.id);
    agent
        .events(vec![Event::Done {
            command: cmd.id.clone(),
            outcome: Outcome::Ok {
                summary: "wrote".into(),
                device: Some("/dev/vda".into()),
            },
        }])
        .await
        .unwrap();
    wait(&rec, "provisioned", |s| s.state == State::Provisioned).await;
    assert!(agent.heartbeat(None, 1).await.unwrap().command.is_none());

    // Deprovisioning boots the agent again: a new enrollment. The first agent's certificate is
    // still valid, but it names the earlier session: it is given nothing, and its word on the
    // new command is not taken; the new agent gets the wipe.
    let text = manifest(&emu.address("redfish+http", Some(SYSTEM)));
    let mut m = manifests::Manifests::default();
    manifests::read_text(
        Path::new("hosts.yaml"),
        &text[..text.find("  image:").unwrap()],
        &mut m,
    );
    manifests::sync(&rec, &m);
    wait(&rec, "the deprovisioning boot", |s| {
        s.state == State::Deprovisioning && s.boot_token.is_some()
    })
    .await;
    let token = rec.netboot_hosts().unwrap()[0]["boot"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let second = Client::new(&url, &fingerprint).unwrap();
    second.enroll(&token, &identity(MAC)).await.unwrap();
    let wipe = loop {
        if let Some(c) = second.heartbeat(None, 10).await.unwrap().command {
            break c;
        }
    };
    assert!(matches!(wipe.action, Action::Wipe { .. }), "{wipe:?}");
    let wiped = Event::Done {
        command: wipe.id.clone(),
        outcome: Outcome::Ok {
            summary: "wiped".into(),
            device: None,
        },
    };
    assert!(
        agent.heartbeat(None, 1).await.unwrap().command.is_none(),
        "the earlier session is given nothing"
    );
    agent.events(vec![wiped.clone()]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = rec.store().host(&key).unwrap().unwrap().status;
    assert_eq!(
        st.state,
        State::Deprovisioning,
        "not taken from the earlier session"
    );
    assert_eq!(st.op.map(|o| o.outcome), Some(None));
    second.events(vec![wiped.clone()]).await.unwrap();
    wait(&rec, "available", |s| s.state == State::Available).await;

    cancel.cancel();
    running.await.unwrap().unwrap();
    serving.await.unwrap();
    drop(emu);
}
