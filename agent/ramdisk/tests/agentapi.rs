//! The agent's client against the real controller-side server (controller-agentapi with its
//! MemoryBackend) over real TLS on 127.0.0.1: enrollment, the command loop, idempotent
//! delivery, retries across a controller restart, and the refusals the security model names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agent_inspect::Root;
use agent_proto::{Action, Command, Event, Outcome};
use agent_ramdisk::client::{Client, ClientError, Identity};
use agent_ramdisk::exec::Executor;
use agent_ramdisk::heartbeat::{self, Ended, LoopOptions};
use agent_wipe::guard::GuardPolicy;
use controller_agentapi::{AgentApi, Ca, HostId, MemoryBackend, Options};
use tokio_util::sync::CancellationToken;

struct Server {
    addr: SocketAddr,
    backend: Arc<MemoryBackend>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn serve(ca: &Ca, backend: Arc<MemoryBackend>, addr: SocketAddr) -> Server {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (c, k) = ca.to_pem();
    let api = Arc::new(
        AgentApi::new(
            Ca::from_pem(&c, &k).unwrap(),
            backend.clone(),
            Options::default(),
        )
        .unwrap(),
    );
    backend.attach(api.pokes());
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let task = {
        let cancel = cancel.clone();
        tokio::spawn(async move { api.serve(listener, cancel).await })
    };
    Server {
        addr,
        backend,
        cancel,
        task,
    }
}

impl Server {
    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

fn identity() -> Identity {
    Identity {
        boot_mac: "52:54:00:12:34:56".into(),
        address: "127.0.0.1".into(),
        macs: vec!["52:54:00:12:34:56".into()],
        system_uuid: None,
        system_serial: Some("SER-1".into()),
        ready_after_seconds: 1.5,
    }
}

fn fixture_executor() -> Arc<Executor> {
    Arc::new(Executor::new(
        Root::at(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../inspect/fixtures/firecracker-vm"
        )),
        GuardPolicy::default(),
    ))
}

fn fast() -> LoopOptions {
    LoopOptions {
        wait_seconds: 5,
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        progress_interval: Duration::from_millis(200),
    }
}

fn cmd(id: &str, action: Action) -> Command {
    Command {
        id: id.into(),
        action,
    }
}

fn dones<'a>(events: &[&'a Event], id: &str) -> Vec<&'a Outcome> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Done { command, outcome } if command == id => Some(outcome),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_run_commands_and_power_off() {
    let ca = Ca::generate().unwrap();
    let s = serve(
        &ca,
        Arc::new(MemoryBackend::new()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let host = HostId::new("metal3", "worker-0").unwrap();
    let token = s
        .backend
        .mint_token(&host, Duration::from_secs(60))
        .unwrap();

    let client = Arc::new(Client::new(&s.url(), &ca.fingerprint()).unwrap());
    let enrolled = client.enroll(&token, &identity()).await.unwrap();
    assert_eq!(enrolled.host, "metal3/worker-0");
    assert_eq!(client.host().as_deref(), Some("metal3/worker-0"));
    let r = s.backend.record();
    assert_eq!(r.enrollments[0].0, host);
    assert_eq!(r.enrollments[0].1.system_serial.as_deref(), Some("SER-1"));

    let exec = fixture_executor();
    let cancel = CancellationToken::new();
    let agent = tokio::spawn(heartbeat::run(
        client.clone(),
        exec.clone(),
        fast(),
        cancel.clone(),
    ));

    s.backend
        .push_command(&host, cmd("inspect-1", Action::Inspect));
    assert!(
        s.backend
            .wait_for(Duration::from_secs(20), |r| !dones(
                &r.events_of(&host),
                "inspect-1"
            )
            .is_empty())
            .await,
        "the inspection result arrives"
    );
    let r = s.backend.record();
    match dones(&r.events_of(&host), "inspect-1")[0] {
        Outcome::Inventory { inventory } => assert!(!inventory.hardware.nics.is_empty()),
        o => panic!("{o:?}"),
    }
    assert!(
        r.events.iter().all(|(h, _)| h == &host),
        "every event is the certificate's host's"
    );

    s.backend
        .push_command(&host, cmd("off-1", Action::PowerOff));
    let ended = tokio::time::timeout(Duration::from_secs(20), agent)
        .await
        .expect("the loop ends on PowerOff")
        .unwrap()
        .unwrap();
    assert_eq!(ended, Ended::PowerOff);
    let r = s.backend.record();
    assert!(
        matches!(
            dones(&r.events_of(&host), "off-1")[..],
            [Outcome::Ok { .. }]
        ),
        "PowerOff is acknowledged before the loop ends"
    );
    assert!(r.queues[&host].is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_command_id_is_reported_not_run_again() {
    let ca = Ca::generate().unwrap();
    let s = serve(
        &ca,
        Arc::new(MemoryBackend::new()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let host = HostId::new("metal3", "worker-1").unwrap();
    let token = s
        .backend
        .mint_token(&host, Duration::from_secs(60))
        .unwrap();
    let client = Arc::new(Client::new(&s.url(), &ca.fingerprint()).unwrap());
    client.enroll(&token, &identity()).await.unwrap();
    let exec = fixture_executor();
    let cancel = CancellationToken::new();
    let agent = tokio::spawn(heartbeat::run(client, exec.clone(), fast(), cancel.clone()));

    for n in 1..=2 {
        s.backend.push_command(&host, cmd("dup", Action::Inspect));
        assert!(
            s.backend
                .wait_for(Duration::from_secs(20), |r| dones(
                    &r.events_of(&host),
                    "dup"
                )
                .len()
                    == n)
                .await,
            "delivery {n} answered"
        );
    }
    assert_eq!(
        exec.executed(),
        1,
        "the second delivery was answered from the ledger"
    );
    let r = s.backend.record();
    let d = dones(&r.events_of(&host), "dup");
    assert_eq!(d[0], d[1], "the same outcome is reported again");
    cancel.cancel();
    assert_eq!(agent.await.unwrap().unwrap(), Ended::Cancelled);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_retries_the_same_calls_across_a_controller_restart() {
    let ca = Ca::generate().unwrap();
    let backend = Arc::new(MemoryBackend::new());
    let s = serve(&ca, backend.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = s.addr;
    let host = HostId::new("metal3", "worker-2").unwrap();
    let token = backend.mint_token(&host, Duration::from_secs(60)).unwrap();
    let client = Arc::new(Client::new(&s.url(), &ca.fingerprint()).unwrap());
    client.enroll(&token, &identity()).await.unwrap();
    let exec = fixture_executor();
    let cancel = CancellationToken::new();
    let agent = tokio::spawn(heartbeat::run(client, exec, fast(), cancel.clone()));

    // The controller goes away; the agent keeps retrying its heartbeat.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.stop().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!agent.is_finished(), "network errors do not end the loop");
    backend.push_command(&host, cmd("after-restart", Action::Inspect));
    // Same CA, same backend, same address: the certificate still works, no re-enrollment.
    let s = serve(&ca, backend.clone(), addr).await;
    assert!(
        backend
            .wait_for(Duration::from_secs(20), |r| !dones(
                &r.events_of(&host),
                "after-restart"
            )
            .is_empty())
            .await
    );
    assert_eq!(backend.record().enrollments.len(), 1);
    cancel.cancel();
    agent.await.unwrap().unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_expired_tokens_are_refused() {
    let ca = Ca::generate().unwrap();
    let s = serve(
        &ca,
        Arc::new(MemoryBackend::new()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let host = HostId::new("metal3", "worker-3").unwrap();
    let token = s
        .backend
        .mint_token(&host, Duration::from_secs(60))
        .unwrap();
    let first = Client::new(&s.url(), &ca.fingerprint()).unwrap();
    first.enroll(&token, &identity()).await.unwrap();
    let second = Client::new(&s.url(), &ca.fingerprint()).unwrap();
    let e = second.enroll(&token, &identity()).await.unwrap_err();
    assert_eq!(e.code(), Some("token-used"), "{e}");
    assert!(!e.is_transient());
    assert!(second.host().is_none());
    assert!(matches!(
        second.heartbeat(None, 0).await,
        Err(ClientError::NotEnrolled)
    ));

    s.backend.add_token("expired-token", &host, Duration::ZERO);
    let e = second
        .enroll("expired-token", &identity())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("token-expired"), "{e}");
    assert_eq!(s.backend.record().refusals.len(), 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_with_another_ca_is_refused_before_the_token_is_sent() {
    let real = Ca::generate().unwrap();
    let impostor = Ca::generate().unwrap();
    let s = serve(
        &impostor,
        Arc::new(MemoryBackend::new()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let host = HostId::new("metal3", "worker-4").unwrap();
    s.backend.add_token("tok", &host, Duration::from_secs(60));
    let client = Client::new(&s.url(), &real.fingerprint()).unwrap();
    let e = client.enroll("tok", &identity()).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ClientError::CaMismatch { .. }), "{msg}");
    assert!(msg.contains(&impostor.fingerprint()[7..]), "{msg}");
    assert!(msg.contains(&real.fingerprint()[7..]), "{msg}");
    assert!(!e.is_transient());
    assert!(
        s.backend.record().enrollments.is_empty() && s.backend.record().refusals.is_empty(),
        "the token never reached the impostor"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wipe_command_runs_through_the_loop_and_progress_is_throttled() {
    let ca = Ca::generate().unwrap();
    let s = serve(
        &ca,
        Arc::new(MemoryBackend::new()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let host = HostId::new("metal3", "worker-5").unwrap();
    let token = s
        .backend
        .mint_token(&host, Duration::from_secs(60))
        .unwrap();
    let client = Arc::new(Client::new(&s.url(), &ca.fingerprint()).unwrap());
    client.enroll(&token, &identity()).await.unwrap();
    // A regular file stands in for a disk (the guard allows it only when told to).
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0xaau8; 4 << 20]).unwrap();
    let exec = Arc::new(Executor::new(
        Root::at(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../inspect/fixtures/firecracker-vm"
        )),
        GuardPolicy {
            allow_regular_file: true,
            ..GuardPolicy::default()
        },
    ));
    let cancel = CancellationToken::new();
    let agent = tokio::spawn(heartbeat::run(client, exec, fast(), cancel.clone()));
    let started = std::time::Instant::now();
    s.backend.push_command(
        &host,
        cmd(
            "wipe-1",
            Action::Wipe {
                mode: agent_proto::WipeMode::Metadata,
                devices: vec![disk.display().to_string()],
            },
        ),
    );
    assert!(
        s.backend
            .wait_for(Duration::from_secs(20), |r| !dones(
                &r.events_of(&host),
                "wipe-1"
            )
            .is_empty())
            .await
    );
    let elapsed = started.elapsed();
    let r = s.backend.record();
    match dones(&r.events_of(&host), "wipe-1")[..] {
        [Outcome::Ok { summary, .. }] => assert!(summary.contains("disk.img"), "{summary}"),
        ref o => panic!("{o:?}"),
    }
    let data = std::fs::read(&disk).unwrap();
    assert!(
        data[..1 << 20].iter().all(|&b| b == 0),
        "the first MiB was wiped"
    );
    let progress = r
        .events_of(&host)
        .iter()
        .filter(|e| matches!(e, Event::Progress { .. }))
        .count();
    let allowed = 1 + (elapsed.as_millis() / fast().progress_interval.as_millis()) as usize;
    assert!(
        progress <= allowed,
        "{progress} progress events in {elapsed:?}"
    );
    cancel.cancel();
    agent.await.unwrap().unwrap();
    s.stop().await;
}
