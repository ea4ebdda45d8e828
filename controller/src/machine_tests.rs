//! Table and scenario tests of the host state machine: every lifecycle path of issue 5, driven
//! step by step through `decide`/`absorb` with scripted act results and agent events.

use std::collections::BTreeSet;

use agent_proto::{Event, FullInventory, Outcome};

use super::*;

const T0: u64 = 1_000_000;

fn spec() -> HostSpec {
    HostSpec {
        uid: "uid-1".into(),
        generation: 1,
        online: true,
        bmc: Some(BmcSpec {
            address: "redfish+http://127.0.0.1:8000/redfish/v1/Systems/1".into(),
            credentials_name: "bmc-secret".into(),
            disable_certificate_verification: false,
        }),
        boot_mac: Some("52:54:00:00:00:01".into()),
        ..HostSpec::default()
    }
}

fn image(url: &str) -> Image {
    Image {
        url: url.into(),
        checksum: "sha256:00".into(),
        checksum_type: None,
        format: Some("raw".into()),
    }
}

/// A host under test: its spec, its status, a clock, and what happened.
struct Sim {
    spec: HostSpec,
    st: HostStatus,
    now: u64,
    slot: bool,
    lim: Limits,
    acts: Vec<Act>,
    notes: Vec<Note>,
}

impl Sim {
    fn new(spec: HostSpec) -> Sim {
        Sim {
            spec,
            st: HostStatus::default(),
            now: T0,
            slot: true,
            lim: Limits::default(),
            acts: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn facts(&self) -> Facts {
        Facts {
            now_ms: self.now,
            provisioning_slot: self.slot,
            jitter: 0.5,
        }
    }

    /// Runs steps until the machine waits; each act is answered by `answer`. Returns the wait.
    fn settle(&mut self, mut answer: impl FnMut(&Act) -> ActResult) -> Option<u64> {
        for _ in 0..50 {
            let plan = decide(&self.spec, &self.st, &self.facts(), &self.lim);
            self.st = plan.status;
            self.notes.extend(plan.events);
            match plan.act {
                Some(act) => {
                    let r = answer(&act);
                    let (st, notes) =
                        absorb(&self.spec, &self.st, &act, r, &self.facts(), &self.lim);
                    self.st = st;
                    self.notes.extend(notes);
                    let forgotten = act == Act::Forget;
                    self.acts.push(act);
                    if forgotten {
                        return None;
                    }
                }
                None if plan.requeue_ms == Some(0) => {}
                None => return plan.requeue_ms,
            }
        }
        panic!("no fixpoint after 50 steps; acts: {:?}", self.acts);
    }

    fn ok(&mut self) -> Option<u64> {
        // Command IDs as the reconciler makes them: unique per host and issue.
        let issued = self.st.ops_issued;
        self.settle(|a| {
            Ok(match a {
                Act::Probe => ActOk::Power(Power::Off),
                Act::Issue(k) => ActOk::Issued(agent_proto::Command {
                    id: format!("uid-1-{k:?}-{}", issued + 1),
                    action: agent_proto::Action::Inspect,
                }),
                _ => ActOk::Done,
            })
        })
    }

    fn enroll(&mut self) {
        assert_eq!(self.st.agent.phase, AgentPhase::Booting);
        on_enrolled(&mut self.st, self.now, "5e5510");
    }

    fn finish(&mut self, outcome: Outcome) {
        let id = self.st.op.as_ref().expect("an op in flight").id.clone();
        let wake = on_agent_event(
            &mut self.st,
            &Event::Done {
                command: id,
                outcome,
            },
            self.now,
        );
        assert!(wake);
    }

    fn op_kind(&self) -> Option<OpKind> {
        self.st.op.as_ref().map(|o| o.kind)
    }

    fn states(&self) -> Vec<String> {
        self.notes
            .iter()
            .filter(|n| n.reason == "StateChanged")
            .map(|n| n.message.clone())
            .collect()
    }
}

fn inventory() -> Outcome {
    Outcome::Inventory {
        inventory: Box::new(FullInventory::default()),
    }
}

fn written() -> Outcome {
    Outcome::Ok {
        summary: "wrote".into(),
        device: Some("/dev/vda".into()),
    }
}

#[test]
fn full_lifecycle_register_inspect_provision_deprovision() {
    let mut s = Sim::new(spec());
    s.ok();
    assert_eq!(s.st.state, State::Inspecting);
    assert_eq!(s.acts, vec![Act::Probe, Act::BootAgent]);
    assert_eq!(s.st.agent.boot, 1);

    s.enroll();
    s.ok();
    assert_eq!(s.op_kind(), Some(OpKind::Inspect));
    s.finish(inventory());
    s.ok();
    assert_eq!(s.st.state, State::Available);
    assert!(s.st.hardware.is_some());
    assert!(s.st.op.is_none());

    s.spec.image = Some(image("http://images/a.raw"));
    s.ok();
    assert_eq!(s.st.state, State::Provisioning);
    assert_eq!(
        s.op_kind(),
        Some(OpKind::Write),
        "fast-track: same agent boot, no reboot"
    );
    assert_eq!(s.st.agent.boot, 1);
    s.finish(written());
    s.ok();
    assert_eq!(s.st.state, State::Provisioned);
    assert_eq!(s.acts.last(), Some(&Act::BootDisk));
    assert_eq!(s.st.provisioned_image, s.spec.image);
    assert_eq!(s.st.root_device.as_deref(), Some("/dev/vda"));
    assert_eq!(s.st.agent.phase, AgentPhase::Down);

    s.spec.image = None;
    s.ok();
    assert_eq!(s.st.state, State::Deprovisioning);
    assert_eq!(s.acts.last(), Some(&Act::BootAgent));
    assert_eq!(s.st.agent.boot, 2);
    s.enroll();
    s.ok();
    assert_eq!(s.op_kind(), Some(OpKind::Clean));
    s.finish(Outcome::Ok {
        summary: "wiped".into(),
        device: None,
    });
    s.ok();
    assert_eq!(s.st.state, State::Available);
    assert_eq!(s.st.provisioned_image, None);
    assert_eq!(
        s.states(),
        vec![
            "(new) -> registering",
            "registering -> inspecting",
            "inspecting -> available",
            "available -> provisioning",
            "provisioning -> provisioned",
            "provisioned -> deprovisioning",
            "deprovisioning -> available",
        ]
    );
    let phases: Vec<&str> = s.st.timings.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(phases[..3], ["registering", "inspecting", "available"]);
}

#[test]
fn registration_error_backs_off_exponentially_then_recovers() {
    let mut s = Sim::new(spec());
    let wait = s.settle(|_| Err("BMC at 127.0.0.1:8000: wrong credentials (HTTP 401)".into()));
    assert_eq!(s.st.state, State::Registering);
    let e = s.st.error.clone().unwrap();
    assert_eq!(e.kind, ErrorType::Registration);
    assert_eq!(e.kind.as_str(), "registration error");
    assert!(e.message.contains("wrong credentials"));
    assert_eq!(s.st.error_count, 1);
    assert_eq!(s.st.operational, Operational::Error);
    // Base 10 s, jitter 0.5 over the upper half: 7.5 s.
    assert_eq!(wait, Some(7_500));

    // Before the retry time nothing happens.
    let n = s.acts.len();
    s.now += 1_000;
    assert_eq!(
        s.settle(|_| panic!("no act before the retry time")),
        Some(6_500)
    );
    assert_eq!(s.acts.len(), n);

    let mut delays = vec![];
    for _ in 0..6 {
        s.now = s.st.retry_at_ms;
        delays.push(s.settle(|_| Err("unreachable".into())).unwrap());
    }
    assert_eq!(s.st.error_count, 7);
    assert!(delays.windows(2).all(|w| w[1] >= w[0]), "{delays:?}");
    assert_eq!(
        *delays.last().unwrap(),
        450_000,
        "capped at 10 min with jitter"
    );

    s.now = s.st.retry_at_ms;
    s.ok();
    assert_eq!(s.st.error, None);
    assert_eq!(s.st.error_count, 0);
    assert_eq!(s.st.operational, Operational::Ok);
    assert_eq!(s.st.state, State::Inspecting);
}

#[test]
fn jitter_spreads_retries_between_half_and_full_delay() {
    let lim = Limits::default();
    for (jitter, want) in [(0.0, 5_000), (0.5, 7_500), (0.999, 9_995)] {
        let mut st = HostStatus::default();
        let f = Facts {
            now_ms: 0,
            provisioning_slot: true,
            jitter,
        };
        assert_eq!(
            fail_status(&mut st, ErrorType::Inspection, "x".into(), &f, &lim),
            want
        );
    }
}

#[test]
fn host_that_never_boots_the_agent_times_out_and_retries_with_a_new_boot() {
    let mut s = Sim::new(spec());
    let wait = s.ok();
    assert_eq!(s.st.agent.phase, AgentPhase::Booting);
    assert_eq!(wait, Some(s.lim.boot_timeout_ms));
    s.now += s.lim.boot_timeout_ms;
    s.ok();
    let e = s.st.error.clone().unwrap();
    assert_eq!(e.kind, ErrorType::Inspection);
    assert!(
        e.message.contains("did not boot the agent within 600 s"),
        "{}",
        e.message
    );
    assert!(e.message.contains("52:54:00:00:00:01"), "{}", e.message);
    assert_eq!(s.st.agent.phase, AgentPhase::Down);
    assert!(s
        .notes
        .iter()
        .any(|n| n.warning && n.reason == "InspectionError"));

    s.now = s.st.retry_at_ms;
    s.ok();
    assert_eq!(s.acts.last(), Some(&Act::BootAgent));
    assert_eq!(s.st.agent.boot, 2, "a new boot, so a new token");
    assert_eq!(
        s.st.error.as_ref().map(|e| e.kind),
        Some(ErrorType::Inspection),
        "kept until it works"
    );
    s.enroll();
    s.ok();
    s.finish(inventory());
    s.ok();
    assert_eq!(s.st.state, State::Available);
    assert_eq!(s.st.error, None);
}

fn provisioning_sim() -> Sim {
    let mut s = Sim::new(spec());
    s.ok();
    s.enroll();
    s.ok();
    s.finish(inventory());
    s.spec.image = Some(image("http://images/a.raw"));
    s.ok();
    assert_eq!(s.op_kind(), Some(OpKind::Write));
    s
}

#[test]
fn restart_during_image_write_offers_the_same_command_and_never_issues_a_second_write() {
    let mut s = provisioning_sim();
    let before = s.st.op.clone().unwrap();
    // A restarted controller has only the persisted status: serialize and read it back.
    let persisted = serde_json::to_string(&s.st).unwrap();
    s.st = serde_json::from_str(&persisted).unwrap();
    s.now += 30_000;
    s.st.agent.last_seen_ms = s.now;
    let n = s.acts.len();
    s.ok();
    assert_eq!(
        s.acts.len(),
        n,
        "no new act while the write runs: {:?}",
        &s.acts[n..]
    );
    assert_eq!(s.st.op.as_ref().unwrap().id, before.id);
    // The agent finished while the controller was down and reports the same command.
    s.finish(written());
    s.ok();
    assert_eq!(s.st.state, State::Provisioned);
    let writes = s
        .acts
        .iter()
        .filter(|a| **a == Act::Issue(OpKind::Write))
        .count();
    assert_eq!(writes, 1);
}

#[test]
fn an_image_edited_while_written_is_cleaned_then_written_and_recorded_as_written() {
    let mut s = provisioning_sim();
    let first = s.st.op.as_ref().unwrap().id.clone();
    assert_eq!(
        s.st.op.as_ref().unwrap().image,
        Some(image("http://images/a.raw")),
        "the write remembers the image it was issued for"
    );
    // The user points the host at another image while the first is being written.
    s.spec.image = Some(image("http://images/b.raw"));
    s.ok();
    assert!(s.notes.iter().any(|n| n.reason == "ImageChanged"));
    assert_eq!(s.st.state, State::Deprovisioning);
    assert_eq!(
        s.op_kind(),
        Some(OpKind::Clean),
        "the disk is cleaned first"
    );
    // The old write's late result changes nothing: it is not the command in flight.
    assert!(!on_agent_event(
        &mut s.st,
        &Event::Done {
            command: first,
            outcome: written()
        },
        s.now
    ));
    assert_eq!(s.st.provisioned_image, None);
    s.finish(Outcome::Ok {
        summary: "wiped".into(),
        device: None,
    });
    s.ok();
    // Available again, then the new image is written (the agent stayed up: no second boot).
    assert_eq!(s.st.state, State::Provisioning);
    assert_eq!(s.op_kind(), Some(OpKind::Write));
    assert_eq!(
        s.st.op.as_ref().unwrap().image,
        Some(image("http://images/b.raw"))
    );
    assert_eq!(s.st.agent.boot, 1);
    s.finish(written());
    s.ok();
    assert_eq!(s.st.state, State::Provisioned);
    assert_eq!(s.st.provisioned_image, Some(image("http://images/b.raw")));
    // Settled: nothing is deprovisioned or written again.
    let n = s.acts.len();
    s.ok();
    assert!(
        !s.acts[n..].contains(&Act::Issue(OpKind::Write)),
        "{:?}",
        &s.acts[n..]
    );
    assert_eq!(s.st.state, State::Provisioned);
}

#[test]
fn a_duplicate_done_event_does_not_change_the_outcome() {
    let mut s = provisioning_sim();
    let id = s.st.op.as_ref().unwrap().id.clone();
    let first = Outcome::Failed {
        reason: "checksum-mismatch".into(),
        message: "image checksum mismatch: expected sha256:00, got sha256:ff".into(),
    };
    assert!(on_agent_event(
        &mut s.st,
        &Event::Done {
            command: id.clone(),
            outcome: first.clone()
        },
        s.now
    ));
    assert!(!on_agent_event(
        &mut s.st,
        &Event::Done {
            command: id,
            outcome: written()
        },
        s.now
    ));
    assert_eq!(s.st.op.as_ref().unwrap().outcome, Some(first));
    // An event for a command that is not in flight is ignored.
    assert!(!on_agent_event(
        &mut s.st,
        &Event::Done {
            command: "other".into(),
            outcome: written()
        },
        s.now
    ));
}

#[test]
fn checksum_mismatch_is_a_provisioning_error_with_the_agents_words_then_a_new_attempt() {
    let mut s = provisioning_sim();
    let first = s.st.op.as_ref().unwrap().id.clone();
    s.finish(Outcome::Failed {
        reason: "checksum-mismatch".into(),
        message: "writing image to /dev/vda: checksum mismatch: expected sha256:00, got sha256:ab"
            .into(),
    });
    s.ok();
    let e = s.st.error.clone().unwrap();
    assert_eq!(e.kind, ErrorType::Provisioning);
    assert!(e.message.contains("checksum mismatch"));
    assert_eq!(s.st.state, State::Provisioning);
    s.now = s.st.retry_at_ms;
    s.st.agent.last_seen_ms = s.now;
    s.ok();
    let second = s.st.op.as_ref().unwrap().id.clone();
    assert_ne!(first, second, "a retry after a failure is a new command");
}

#[test]
fn agent_lost_during_write_reboots_into_the_agent_and_issues_the_write_again() {
    let mut s = provisioning_sim();
    s.now += s.lim.agent_lost_ms + 1;
    s.ok();
    assert!(s.notes.iter().any(|n| n.reason == "AgentLost"));
    assert_eq!(s.acts.last(), Some(&Act::BootAgent));
    s.enroll();
    s.ok();
    assert_eq!(s.op_kind(), Some(OpKind::Write));
    assert_eq!(s.st.op.as_ref().unwrap().boot, 2);
}

#[test]
fn provisioning_limit_delays_hosts_without_a_slot() {
    let mut s = Sim::new(spec());
    s.ok();
    s.enroll();
    s.ok();
    s.finish(inventory());
    s.ok();
    s.slot = false;
    s.spec.image = Some(image("http://images/a.raw"));
    assert_eq!(s.ok(), Some(5_000));
    assert_eq!(s.st.state, State::Available);
    assert_eq!(s.st.operational, Operational::Delayed);
    assert_eq!(s.st.operational.as_str(), "delayed");
    s.slot = true;
    s.ok();
    assert_eq!(s.st.state, State::Provisioning);
    assert_eq!(s.st.operational, Operational::Ok);
}

#[test]
fn deleting_while_provisioning_cleans_powers_off_then_forgets() {
    let mut s = provisioning_sim();
    s.spec.deleting = true;
    s.ok();
    assert_eq!(
        s.op_kind(),
        Some(OpKind::Clean),
        "the write is abandoned, the disk cleaned"
    );
    s.finish(Outcome::Ok {
        summary: "wiped".into(),
        device: None,
    });
    s.ok();
    assert_eq!(s.st.state, State::Deleting);
    assert_eq!(
        s.acts[s.acts.len() - 2..],
        [Act::PowerOff { force: true }, Act::Forget]
    );
    let st = s.states();
    assert_eq!(
        st[st.len() - 3..],
        [
            "provisioning -> deprovisioning",
            "deprovisioning -> powering off before delete",
            "powering off before delete -> deleting"
        ]
    );
}

#[test]
fn deleting_with_cleaning_disabled_skips_the_wipe() {
    let mut s = provisioning_sim();
    s.spec.cleaning = CleaningMode::Disabled;
    s.spec.deleting = true;
    s.ok();
    assert_eq!(s.st.state, State::Deleting);
    assert!(!s.acts.contains(&Act::Issue(OpKind::Clean)));
}

#[test]
fn deletion_gives_up_on_an_unreachable_bmc_after_a_few_attempts() {
    let mut s = Sim::new(spec());
    s.spec.deleting = true;
    for _ in 0..3 {
        s.settle(|_| Err("BMC unreachable".into()));
        s.now = s.st.retry_at_ms;
    }
    assert_eq!(
        s.st.error.as_ref().unwrap().kind,
        ErrorType::PowerManagement
    );
    s.ok();
    assert_eq!(s.st.state, State::Deleting);
    assert!(s.notes.iter().any(|n| n.reason == "PowerOffSkipped"));
}

#[test]
fn paused_does_nothing_and_detached_reports_detached() {
    let mut s = Sim::new(spec());
    s.spec.paused = true;
    assert_eq!(s.ok(), None);
    assert!(s.acts.is_empty());
    assert_eq!(s.st, HostStatus::default());

    s.spec.paused = false;
    s.spec.detached = true;
    s.ok();
    assert!(s.acts.is_empty());
    assert_eq!(s.st.operational, Operational::Detached);
    s.spec.detached = false;
    s.ok();
    assert_eq!(s.st.operational, Operational::Ok);
    assert_eq!(s.acts.first(), Some(&Act::Probe));
}

#[test]
fn reboot_annotation_reboots_once_per_key_and_again_when_re_added() {
    let mut s = provisioning_sim();
    s.finish(written());
    s.ok();
    assert_eq!(s.st.state, State::Provisioned);
    s.spec.reboot_requests = BTreeSet::from(["".to_string(), "team-a".to_string()]);
    s.ok();
    let reboots = |s: &Sim| s.acts.iter().filter(|a| **a == Act::Reboot).count();
    assert_eq!(reboots(&s), 1, "both keys in one reboot");
    s.ok();
    assert_eq!(reboots(&s), 1);
    s.spec.reboot_requests.clear();
    s.ok();
    s.spec.reboot_requests.insert("team-a".into());
    s.ok();
    assert_eq!(reboots(&s), 2);
}

#[test]
fn online_is_enforced_when_provisioned() {
    let mut s = provisioning_sim();
    s.finish(written());
    s.ok();
    s.spec.online = false;
    s.ok();
    assert_eq!(s.acts.last(), Some(&Act::PowerOff { force: false }));
    // Asked, not yet seen off.
    assert_eq!(s.st.power, Power::On);
    s.now += s.lim.power_poll_ms;
    s.settle(power_reads(Power::Off));
    assert_eq!(s.acts.last(), Some(&Act::ReadPower));
    assert_eq!(s.st.power, Power::Off);
    assert_eq!(s.st.shutdown, None);
    s.spec.online = true;
    s.ok();
    assert_eq!(s.acts.last(), Some(&Act::PowerOn));
}

/// Answers every act; ReadPower and Probe read `p`.
fn power_reads(p: Power) -> impl FnMut(&Act) -> ActResult {
    move |a| {
        Ok(match a {
            Act::ReadPower | Act::Probe => ActOk::Power(p),
            _ => ActOk::Done,
        })
    }
}

fn provisioned_sim() -> Sim {
    let mut s = provisioning_sim();
    s.finish(written());
    s.ok();
    assert_eq!(s.st.state, State::Provisioned);
    s
}

#[test]
fn graceful_power_off_waits_for_the_os_and_reads_the_power_state_until_off() {
    let mut s = provisioned_sim();
    s.spec.online = false;
    let wait = s.settle(power_reads(Power::On));
    assert_eq!(s.acts.last(), Some(&Act::PowerOff { force: false }));
    assert_eq!(wait, Some(s.lim.power_poll_ms), "polls, not busy-loops");
    // The OS takes 10 s: every poll before then reads On.
    for _ in 0..4 {
        s.now += s.lim.power_poll_ms;
        let wait = s.settle(power_reads(Power::On));
        assert_eq!(s.acts.last(), Some(&Act::ReadPower));
        assert_eq!(wait, Some(s.lim.power_poll_ms));
        assert_eq!(s.st.power, Power::On);
    }
    s.now += s.lim.power_poll_ms;
    assert_eq!(s.settle(power_reads(Power::Off)), None);
    assert_eq!(s.st.power, Power::Off);
    assert!(!s.acts.contains(&Act::PowerOff { force: true }));
    assert!(!s.notes.iter().any(|n| n.reason == "PowerOffForced"));
}

#[test]
fn an_os_that_ignores_the_shutdown_request_is_powered_off_hard_after_the_timeout() {
    let mut s = provisioned_sim();
    s.lim.soft_power_off_timeout_ms = 30_000;
    s.spec.online = false;
    s.settle(power_reads(Power::On));
    let asked = s.now;
    while s.now < asked + 30_000 {
        assert!(!s.acts.contains(&Act::PowerOff { force: true }));
        let wait = s.settle(power_reads(Power::On)).expect("a timed wait");
        assert!(wait <= s.lim.power_poll_ms);
        s.now += wait;
    }
    assert_eq!(s.now, asked + 30_000, "the last wait ends at the deadline");
    s.settle(power_reads(Power::On));
    assert_eq!(s.acts.last(), Some(&Act::PowerOff { force: true }));
    assert_eq!(s.st.power, Power::Off);
    assert_eq!(s.st.shutdown, None);
    let forced: Vec<_> = s
        .notes
        .iter()
        .filter(|n| n.reason == "PowerOffForced")
        .collect();
    assert_eq!(forced.len(), 1);
    assert!(forced[0].warning);
    assert!(forced[0].message.contains("30 s"), "{}", forced[0].message);
}

#[test]
fn a_graceful_shutdown_the_bmc_refuses_is_retried_hard() {
    let mut s = provisioned_sim();
    s.spec.online = false;
    let wait = s.settle(|a| match a {
        Act::PowerOff { force: false } => {
            Err("GracefulShutdown is not an allowed ResetType".into())
        }
        _ => Ok(ActOk::Done),
    });
    assert_eq!(
        s.st.error.as_ref().map(|e| e.kind),
        Some(ErrorType::PowerManagement)
    );
    s.now += wait.expect("a backoff");
    s.settle(power_reads(Power::On));
    assert_eq!(s.acts.last(), Some(&Act::PowerOff { force: true }));
    assert_eq!(s.st.power, Power::Off);
    assert_eq!(s.st.error, None);
}

#[test]
fn online_again_during_a_graceful_shutdown_reads_the_power_before_acting() {
    // Still on: nothing more to do.
    let mut s = provisioned_sim();
    s.spec.online = false;
    s.settle(power_reads(Power::On));
    s.spec.online = true;
    s.settle(power_reads(Power::On));
    assert_eq!(s.acts.last(), Some(&Act::ReadPower));
    assert_eq!(s.st.shutdown, None);
    assert_eq!(s.st.power, Power::On);
    // Already went down: powered on again.
    let mut s = provisioned_sim();
    s.spec.online = false;
    s.settle(power_reads(Power::On));
    s.spec.online = true;
    s.settle(power_reads(Power::Off));
    let n = s.acts.len();
    assert_eq!(&s.acts[n - 2..], [Act::ReadPower, Act::PowerOn]);
    assert_eq!(s.st.power, Power::On);
}

#[test]
fn inspect_disabled_and_externally_provisioned_skip_inspection() {
    let mut s = Sim::new(HostSpec {
        inspect: InspectRequest::Disabled,
        online: false,
        ..spec()
    });
    s.ok();
    assert_eq!(s.st.state, State::Available);
    assert!(!s.acts.contains(&Act::BootAgent));

    let mut e = Sim::new(HostSpec {
        externally_provisioned: true,
        ..spec()
    });
    e.ok();
    assert_eq!(e.st.state, State::ExternallyProvisioned);
    assert_eq!(e.acts, vec![Act::Probe, Act::PowerOn]);
    assert_eq!(e.st.state.as_str(), "externally provisioned");
}

#[test]
fn reinspect_annotation_inspects_again_once() {
    let mut s = Sim::new(spec());
    s.ok();
    s.enroll();
    s.ok();
    s.finish(inventory());
    s.ok();
    s.spec.inspect = InspectRequest::Again;
    s.ok();
    assert_eq!(s.st.state, State::Inspecting);
    s.st.agent.last_seen_ms = s.now;
    s.ok();
    s.finish(inventory());
    s.ok();
    assert_eq!(
        s.st.state,
        State::Available,
        "the same annotation does not loop"
    );
}

#[test]
fn a_new_image_on_a_provisioned_host_deprovisions_then_provisions_it() {
    let mut s = provisioning_sim();
    s.finish(written());
    s.ok();
    s.spec.image = Some(image("http://images/b.raw"));
    s.ok();
    assert_eq!(s.st.state, State::Deprovisioning);
    s.enroll();
    s.ok();
    s.finish(Outcome::Ok {
        summary: "wiped".into(),
        device: None,
    });
    s.ok();
    assert_eq!(s.st.state, State::Provisioning);
    s.finish(written());
    s.ok();
    assert_eq!(s.st.state, State::Provisioned);
    assert_eq!(
        s.st.provisioned_image.as_ref().unwrap().url,
        "http://images/b.raw"
    );
}

#[test]
fn image_removed_while_provisioning_cleans_up() {
    let mut s = provisioning_sim();
    s.spec.image = None;
    s.ok();
    assert_eq!(s.st.state, State::Deprovisioning);
    assert_eq!(s.op_kind(), Some(OpKind::Clean));
}

#[test]
fn no_bmc_means_unmanaged_until_one_is_given() {
    let mut s = Sim::new(HostSpec {
        bmc: None,
        ..spec()
    });
    s.ok();
    assert_eq!(s.st.state, State::Unmanaged);
    assert!(s.acts.is_empty());
    s.spec.bmc = spec().bmc;
    s.ok();
    assert_eq!(s.st.state, State::Inspecting);
}

#[test]
fn progress_events_land_on_the_op_in_flight() {
    let mut s = provisioning_sim();
    let id = s.st.op.as_ref().unwrap().id.clone();
    let progress = agent_proto::Progress {
        operation: "write-image".into(),
        device: "/dev/vda".into(),
        bytes_done: 512 << 20,
        bytes_total: Some(1 << 30),
        rate_bytes_per_sec: 100 << 20,
        phase: "downloading".into(),
    };
    s.now += 5_000;
    assert!(!on_agent_event(
        &mut s.st,
        &Event::Progress {
            command: id,
            progress: progress.clone()
        },
        s.now
    ));
    assert_eq!(s.st.op.as_ref().unwrap().progress, Some(progress));
    assert_eq!(s.st.agent.last_seen_ms, s.now);
}

#[test]
fn metal3_spellings() {
    for (st, want) in [
        (State::Registering, "\"registering\""),
        (State::ExternallyProvisioned, "\"externally provisioned\""),
        (
            State::PoweringOffBeforeDelete,
            "\"powering off before delete\"",
        ),
        (State::None, "\"\""),
    ] {
        assert_eq!(serde_json::to_string(&st).unwrap(), want);
        assert_eq!(format!("\"{st}\""), want);
    }
    assert_eq!(serde_json::to_string(&Operational::Ok).unwrap(), "\"OK\"");
    assert_eq!(
        serde_json::to_string(&ErrorType::PowerManagement).unwrap(),
        "\"power management error\""
    );
}

#[test]
fn disable_power_off_deletes_without_powering_off() {
    let mut s = provisioning_sim();
    s.spec.disable_power_off = true;
    s.spec.cleaning = CleaningMode::Disabled;
    s.spec.deleting = true;
    s.ok();
    assert_eq!(s.st.state, State::Deleting);
    assert!(
        !s.acts.iter().any(|a| matches!(a, Act::PowerOff { .. })),
        "{:?}",
        s.acts
    );
    assert_eq!(s.acts.last(), Some(&Act::Forget));
    assert!(s
        .notes
        .iter()
        .any(|n| n.reason == "PowerOffSkipped" && n.message.contains("disablePowerOff")));
}

#[test]
fn disable_power_off_refuses_online_false_until_the_spec_changes() {
    let mut s = provisioned_sim();
    s.spec.disable_power_off = true;
    s.spec.online = false;
    let wait = s.settle(power_reads(Power::On));
    assert!(
        !s.acts.iter().any(|a| matches!(a, Act::PowerOff { .. })),
        "{:?}",
        s.acts
    );
    let e =
        s.st.error
            .clone()
            .expect("an error says why the host stays on");
    assert_eq!(e.kind, ErrorType::PowerManagement);
    assert!(e.message.contains("disablePowerOff"), "{}", e.message);
    assert_eq!(s.st.operational, Operational::Error);
    assert!(wait.is_some(), "retried with backoff");
    // Back online: the error goes, nothing is powered off.
    s.spec.online = true;
    s.now = s.st.retry_at_ms;
    s.settle(power_reads(Power::On));
    assert_eq!(s.st.error, None);
    assert_eq!(s.st.operational, Operational::Ok);
    assert!(!s.acts.iter().any(|a| matches!(a, Act::PowerOff { .. })));
}

#[test]
fn the_agents_write_summary_becomes_one_image_written_event() {
    let mut s = provisioned_sim();
    s.ok();
    let written: Vec<&Note> = s
        .notes
        .iter()
        .filter(|n| n.reason == "ImageWritten")
        .collect();
    assert_eq!(written.len(), 1, "{:?}", s.notes);
    assert_eq!(written[0].message, "wrote");
    assert!(!written[0].warning);
    // Before the host is said to be provisioned.
    let at = |f: &dyn Fn(&Note) -> bool| s.notes.iter().position(f).unwrap();
    assert!(
        at(&|n| n.reason == "ImageWritten")
            < at(&|n| n.reason == "StateChanged" && n.message.ends_with("-> provisioned"))
    );
}
