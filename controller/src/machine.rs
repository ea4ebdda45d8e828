//! The host state machine: a pure function from (spec, status, facts) to the next step.
//!
//! [`decide`] looks at one host and says what to do next: change the status only, or run one
//! [`Act`] (a BMC call, booting the agent, issuing an agent command, forgetting the host). The
//! reconciler runs that act, feeds its result to [`absorb`], persists the status, and calls
//! [`decide`] again. One act per step, the status persisted between steps: a controller killed at
//! any moment resumes from the last persisted step, and an agent command, recorded in the status
//! before it is offered, keeps its ID — the agent never runs it twice.
//!
//! Agent events arrive in between through [`on_agent_event`].

use agent_proto::{Event, Outcome};

use crate::model::*;

/// The error a host with `spec.disablePowerOff` shows while `spec.online` is false.
pub const POWER_OFF_DISABLED: &str =
    "spec.online is false but spec.disablePowerOff is true, so the host is not powered off \
     (metal3 refuses this combination): set online: true or remove disablePowerOff";

/// Timeouts and limits the machine works with.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a host may take from the PXE boot request to the agent's enrollment.
    pub boot_timeout_ms: u64,
    /// Silence after which an enrolled agent counts as lost.
    pub agent_lost_ms: u64,
    /// First retry delay after an error; doubles per consecutive error.
    pub backoff_base_ms: u64,
    /// Largest retry delay.
    pub backoff_max_ms: u64,
    /// Failed power-offs after which a deleted host is forgotten anyway.
    pub delete_power_attempts: u32,
    /// How long the OS gets to shut down after a graceful shutdown request (ACPI power button)
    /// before the host is powered off hard. Ironic's soft power-off timeout is 600 s.
    pub soft_power_off_timeout_ms: u64,
    /// How often the power state is read while waiting for a graceful shutdown.
    pub power_poll_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            boot_timeout_ms: 10 * 60_000,
            agent_lost_ms: 3 * 60_000,
            backoff_base_ms: 10_000,
            backoff_max_ms: 10 * 60_000,
            delete_power_attempts: 3,
            soft_power_off_timeout_ms: 180_000,
            power_poll_ms: 2_000,
        }
    }
}

/// What the reconciler knows beyond the host's own record.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// Now, Unix ms.
    pub now_ms: u64,
    /// Whether this host may start provisioning now (the concurrency limit).
    pub provisioning_slot: bool,
    /// Random in [0, 1): jitter for backoff.
    pub jitter: f64,
}

/// One external action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// Read the BMC credentials and the system (registering).
    Probe,
    /// Mint a boot token, tell netboot this MAC boots the ramdisk, set a one-time network boot and
    /// power the host on (or reset it if it is on).
    BootAgent,
    /// Render an agent command of this kind and record it in `status.op` (from then on it is
    /// offered to the agent on its heartbeats).
    Issue(OpKind),
    /// Read the power state (waiting for a graceful shutdown).
    ReadPower,
    /// Power on.
    PowerOn,
    /// Power off (`force`: no graceful shutdown first).
    PowerOff {
        /// Hard power off.
        force: bool,
    },
    /// Reset (reboot annotation).
    Reboot,
    /// Boot from disk (one-time override) and reset: the end of provisioning.
    BootDisk,
    /// Deletion done: revoke tokens, drop the netboot entry, remove the record / finalizer.
    Forget,
}

/// The next step for one host.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The status to persist before running `act`.
    pub status: HostStatus,
    /// What to run, if anything.
    pub act: Option<Act>,
    /// When to look at the host again if nothing else happens (ms from now); `None`: only on change.
    pub requeue_ms: Option<u64>,
    /// Things a user should see (`kubectl describe`): one per state change and per error.
    pub events: Vec<Note>,
}

/// An Event for the host's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `Normal` or `Warning`.
    pub warning: bool,
    /// CamelCase reason, e.g. `StateChanged`, `InspectionError`.
    pub reason: String,
    /// One line.
    pub message: String,
}

/// How an act went.
pub type ActResult = Result<ActOk, String>;

/// What a successful act tells the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum ActOk {
    /// Done; nothing to report.
    Done,
    /// Probe, ReadPower: the power state read from the BMC.
    Power(Power),
    /// Issue: the rendered command.
    Issued(agent_proto::Command),
}

/// Decides the next step for a host.
pub fn decide(spec: &HostSpec, st: &HostStatus, facts: &Facts, lim: &Limits) -> Plan {
    let mut p = Planner {
        spec,
        st: st.clone(),
        facts,
        lim,
        events: Vec::new(),
    };
    let (act, requeue) = p.step();
    Plan {
        status: p.st,
        act,
        requeue_ms: requeue,
        events: p.events,
    }
}

struct Planner<'a> {
    spec: &'a HostSpec,
    st: HostStatus,
    facts: &'a Facts,
    lim: &'a Limits,
    events: Vec<Note>,
}

type Step = (Option<Act>, Option<u64>);

const NOW: Option<u64> = Some(0);

impl Planner<'_> {
    fn step(&mut self) -> Step {
        let now = self.facts.now_ms;
        if self.spec.paused {
            return (None, None);
        }
        if self.spec.detached {
            if self.st.operational != Operational::Detached {
                self.st.operational = Operational::Detached;
                self.note(
                    false,
                    "Detached",
                    "the host is detached: the controller leaves it alone",
                );
            }
            return (None, None);
        }
        if self.st.operational == Operational::Detached {
            self.st.operational = if self.st.error.is_some() {
                Operational::Error
            } else {
                Operational::Ok
            };
        }
        self.st.observed_generation = self.spec.generation;

        // Deletion overrides everything but an image write in flight, which is cleaned up after.
        if self.spec.deleting {
            match self.st.state {
                State::PoweringOffBeforeDelete | State::Deleting | State::Deprovisioning => {}
                State::Provisioned | State::Provisioning
                    if self.spec.cleaning == CleaningMode::Metadata =>
                {
                    return self.goto(State::Deprovisioning);
                }
                _ => return self.goto(State::PoweringOffBeforeDelete),
            }
        }
        if self.spec.bmc.is_none()
            && !matches!(self.st.state, State::Unmanaged)
            && !self.spec.deleting
        {
            return self.goto(State::Unmanaged);
        }
        if self.st.error.is_some() && now < self.st.retry_at_ms {
            return (None, Some(self.st.retry_at_ms - now));
        }

        match self.st.state {
            State::None => self.goto(State::Registering),
            State::Unmanaged => {
                if self.spec.bmc.is_some() {
                    self.goto(State::Registering)
                } else {
                    (None, None)
                }
            }
            State::Registering => (Some(Act::Probe), None),
            State::Inspecting => self.inspecting(),
            State::Available => self.available(),
            State::Provisioning => self.provisioning(),
            State::Provisioned | State::ExternallyProvisioned => self.provisioned(),
            State::Deprovisioning => self.deprovisioning(),
            State::PoweringOffBeforeDelete => {
                if self.spec.disable_power_off {
                    self.note(
                        false,
                        "PowerOffSkipped",
                        "spec.disablePowerOff is set: deleting the host without powering it off",
                    );
                    self.goto(State::Deleting)
                } else if self.st.power == Power::Off {
                    self.goto(State::Deleting)
                } else if self.st.error_count >= self.lim.delete_power_attempts {
                    self.note(
                        true,
                        "PowerOffSkipped",
                        &format!(
                            "could not power the host off after {} attempts; deleting it anyway",
                            self.st.error_count
                        ),
                    );
                    self.goto(State::Deleting)
                } else {
                    (Some(Act::PowerOff { force: true }), None)
                }
            }
            State::Deleting => (Some(Act::Forget), None),
        }
    }

    fn inspecting(&mut self) -> Step {
        if let Some(op) = &self.st.op {
            if op.kind == OpKind::Inspect {
                match &op.outcome {
                    Some(Outcome::Inventory { inventory }) => {
                        self.st.hardware = Some((**inventory).clone());
                        self.st.op = None;
                        return self.goto(State::Available);
                    }
                    Some(other) => {
                        let msg = failure(other, "inspection");
                        self.st.op = None;
                        return self.fail(ErrorType::Inspection, msg);
                    }
                    None => {}
                }
            } else {
                self.st.op = None;
            }
        }
        self.with_agent(ErrorType::Inspection, OpKind::Inspect)
    }

    fn available(&mut self) -> Step {
        self.st.provisioned_image = None;
        if self.spec.inspect == InspectRequest::Again && !self.st.reinspected {
            self.st.reinspected = true;
            return self.goto(State::Inspecting);
        }
        if self.spec.inspect != InspectRequest::Again {
            self.st.reinspected = false;
        }
        if self.spec.externally_provisioned {
            return self.goto(State::ExternallyProvisioned);
        }
        if self.spec.image.is_some() {
            if self.facts.provisioning_slot {
                self.st.operational = Operational::Ok;
                return self.goto(State::Provisioning);
            }
            if self.st.operational != Operational::Delayed {
                self.st.operational = Operational::Delayed;
                self.note(false, "Delayed", "waiting for a provisioning slot");
            }
            return (None, Some(5_000));
        }
        if self.st.operational == Operational::Delayed {
            self.st.operational = Operational::Ok;
        }
        self.st.op = None;
        if self.spec.online {
            // Fast-track: keep the agent up, so provisioning needs no second boot.
            self.keep_agent(ErrorType::PowerManagement)
        } else {
            self.st.agent.phase = AgentPhase::Down;
            self.enforce_power(false)
        }
    }

    fn provisioning(&mut self) -> Step {
        let Some(image) = self.spec.image.clone() else {
            // The image was removed while writing: clean up what was written.
            self.st.op = None;
            return self.goto(State::Deprovisioning);
        };
        if let Some(op) = &self.st.op {
            if op.kind == OpKind::Write {
                if op.image.as_ref().is_some_and(|written| *written != image) {
                    // spec.image changed while the old one was being written: the disk holds
                    // neither for sure. Clean it (the agent finishes the old command first: it
                    // runs one at a time), then write the new one from available.
                    self.st.op = None;
                    self.note(
                        false,
                        "ImageChanged",
                        "spec.image changed while the previous image was being written; \
                         cleaning the disk before writing the new one",
                    );
                    return self.goto(State::Deprovisioning);
                }
                match &op.outcome {
                    Some(Outcome::Ok { device, .. }) => {
                        self.st.provisioned_image = Some(op.image.clone().unwrap_or(image));
                        self.st.root_device = device.clone();
                        return (Some(Act::BootDisk), None);
                    }
                    Some(other) => {
                        let msg = failure(other, "image write");
                        self.st.op = None;
                        return self.fail(ErrorType::Provisioning, msg);
                    }
                    None => {}
                }
            } else {
                self.st.op = None;
            }
        }
        self.with_agent(ErrorType::Provisioning, OpKind::Write)
    }

    fn provisioned(&mut self) -> Step {
        if self.st.state == State::Provisioned
            && (self.spec.image.is_none() || self.spec.image != self.st.provisioned_image)
        {
            return self.goto(State::Deprovisioning);
        }
        if self.st.state == State::ExternallyProvisioned && !self.spec.externally_provisioned {
            return self.goto(State::Available);
        }
        // Forget reboot keys whose annotation is gone, so the same key can be used again later.
        let requested = &self.spec.reboot_requests;
        self.st.reboots_done.retain(|k| requested.contains(k));
        if requested.iter().any(|k| !self.st.reboots_done.contains(k)) && self.spec.online {
            return (Some(Act::Reboot), None);
        }
        self.enforce_power(self.spec.online)
    }

    fn deprovisioning(&mut self) -> Step {
        if self.spec.cleaning == CleaningMode::Disabled {
            self.st.op = None;
            return self.after_deprovisioning();
        }
        if let Some(op) = &self.st.op {
            if op.kind == OpKind::Clean {
                match &op.outcome {
                    Some(Outcome::Ok { .. }) => {
                        self.st.op = None;
                        return self.after_deprovisioning();
                    }
                    Some(other) => {
                        let msg = failure(other, "cleaning");
                        self.st.op = None;
                        return self.fail(ErrorType::Provisioning, msg);
                    }
                    None => {}
                }
            } else {
                // An image write interrupted by deletion or by removing the image.
                self.st.op = None;
            }
        }
        self.with_agent(ErrorType::Provisioning, OpKind::Clean)
    }

    fn after_deprovisioning(&mut self) -> Step {
        self.st.provisioned_image = None;
        self.st.root_device = None;
        if self.spec.deleting {
            self.goto(State::PoweringOffBeforeDelete)
        } else {
            self.goto(State::Available)
        }
    }

    /// Makes sure the agent is up, then makes sure an op of `kind` is in flight and waits for it.
    fn with_agent(&mut self, err: ErrorType, kind: OpKind) -> Step {
        let now = self.facts.now_ms;
        match self.agent_step(err) {
            Some(step) => step,
            None => {
                if let Some(op) = &self.st.op {
                    if op.boot != self.st.agent.boot {
                        // Issued to an earlier boot of the agent, which is gone: issue again.
                        self.st.op = None;
                    }
                }
                match &self.st.op {
                    None => (Some(Act::Issue(kind)), None),
                    Some(_) => {
                        let lost_at = self.st.agent.last_seen_ms + self.lim.agent_lost_ms;
                        (None, Some(lost_at.saturating_sub(now).max(1_000)))
                    }
                }
            }
        }
    }

    /// Fast-track in available: the agent stays up, no command.
    fn keep_agent(&mut self, err: ErrorType) -> Step {
        let now = self.facts.now_ms;
        match self.agent_step(err) {
            Some(step) => step,
            None => {
                let lost_at = self.st.agent.last_seen_ms + self.lim.agent_lost_ms;
                (None, Some(lost_at.saturating_sub(now).max(1_000)))
            }
        }
    }

    /// `Some(step)` while the agent is not up yet (boot it, wait for it, or time out).
    fn agent_step(&mut self, err: ErrorType) -> Option<Step> {
        let now = self.facts.now_ms;
        let a = &mut self.st.agent;
        if a.phase == AgentPhase::Up && now.saturating_sub(a.last_seen_ms) > self.lim.agent_lost_ms
        {
            let silent = (now - a.last_seen_ms) / 1000;
            a.phase = AgentPhase::Down;
            self.note(
                true,
                "AgentLost",
                &format!("the agent has not been heard from for {silent} s; booting it again"),
            );
        }
        match self.st.agent.phase {
            AgentPhase::Up => None,
            AgentPhase::Down => Some((Some(Act::BootAgent), None)),
            AgentPhase::Booting => {
                let deadline = self.st.agent.since_ms + self.lim.boot_timeout_ms;
                if now >= deadline {
                    self.st.agent.phase = AgentPhase::Down;
                    let mac = self
                        .spec
                        .boot_mac
                        .as_deref()
                        .unwrap_or("(no bootMACAddress)");
                    Some(self.fail(
                        err,
                        format!(
                            "the host did not boot the agent within {} s: no enrollment from the ramdisk \
                             (check that it network-boots from {mac} on the provisioning network)",
                            self.lim.boot_timeout_ms / 1000
                        ),
                    ))
                } else {
                    Some((None, Some(deadline - now)))
                }
            }
        }
    }

    /// Keeps the host powered as `on` says. Off is graceful first, as metal3 does it: the OS is
    /// asked to shut down (ACPI), the power state is read until it is off, and after
    /// [`Limits::soft_power_off_timeout_ms`] (or when the BMC refused the graceful request) the
    /// host is powered off hard.
    fn enforce_power(&mut self, on: bool) -> Step {
        if !on && self.spec.disable_power_off {
            // metal3's webhook rejects this combination; without one, the host says why it
            // stays on, and retries with backoff in case the spec changes.
            return self.fail(ErrorType::PowerManagement, POWER_OFF_DISABLED.to_string());
        }
        if self
            .st
            .error
            .as_ref()
            .is_some_and(|e| e.message == POWER_OFF_DISABLED)
        {
            clear_error(&mut self.st);
        }
        let now = self.facts.now_ms;
        if let Some(wait) = self.st.shutdown {
            if on {
                // Online again mid-shutdown: the OS may be going down; look before acting.
                self.st.shutdown = None;
                return (Some(Act::ReadPower), None);
            }
            let deadline = wait.since_ms + self.lim.soft_power_off_timeout_ms;
            if now >= deadline {
                self.note(
                    true,
                    "PowerOffForced",
                    &format!(
                        "the host did not shut down within {} s of the graceful shutdown request; \
                         powering it off hard",
                        self.lim.soft_power_off_timeout_ms / 1000
                    ),
                );
                return (Some(Act::PowerOff { force: true }), None);
            }
            if now < wait.check_ms {
                return (None, Some(wait.check_ms.min(deadline) - now));
            }
            return (Some(Act::ReadPower), None);
        }
        match (on, self.st.power) {
            (true, Power::On) | (false, Power::Off) => (None, None),
            (true, _) => (Some(Act::PowerOn), None),
            (false, _) => {
                // A graceful request the BMC refused is not asked again: the retry is hard.
                let refused = self
                    .st
                    .error
                    .as_ref()
                    .is_some_and(|e| e.kind == ErrorType::PowerManagement);
                (Some(Act::PowerOff { force: refused }), None)
            }
        }
    }

    fn goto(&mut self, to: State) -> Step {
        let note = transition(&mut self.st, to, self.facts.now_ms);
        clear_error(&mut self.st);
        self.events.push(note);
        (None, NOW)
    }

    fn fail(&mut self, kind: ErrorType, message: String) -> Step {
        let delay = fail_status(&mut self.st, kind, message.clone(), self.facts, self.lim);
        self.note(true, kind.reason(), &message);
        (None, Some(delay))
    }

    fn note(&mut self, warning: bool, reason: &str, message: &str) {
        self.events.push(Note {
            warning,
            reason: reason.to_string(),
            message: message.to_string(),
        });
    }
}

fn failure(outcome: &Outcome, what: &str) -> String {
    match outcome {
        Outcome::Failed { message, .. } => message.clone(),
        Outcome::Ok { .. } | Outcome::Inventory { .. } => {
            format!("the agent answered the {what} command with the wrong kind of result")
        }
    }
}

/// Records an error: errorType/Message, errorCount + 1, operational `error`, and a retry time with
/// exponential backoff and jitter. Returns the delay.
fn fail_status(
    st: &mut HostStatus,
    kind: ErrorType,
    message: String,
    f: &Facts,
    lim: &Limits,
) -> u64 {
    st.error_count = st.error_count.saturating_add(1);
    let exp = st.error_count.saturating_sub(1).min(20);
    let base = lim
        .backoff_base_ms
        .saturating_mul(1u64 << exp)
        .min(lim.backoff_max_ms);
    // Full jitter on the upper half: [base/2, base).
    let delay = base / 2 + ((base / 2) as f64 * f.jitter.clamp(0.0, 0.999)) as u64;
    st.error = Some(HostError { kind, message });
    st.operational = Operational::Error;
    st.retry_at_ms = f.now_ms + delay;
    delay
}

/// Forgets the error, its count and its backoff; an operational status of `error` becomes OK.
fn clear_error(st: &mut HostStatus) {
    st.error = None;
    st.error_count = 0;
    st.retry_at_ms = 0;
    if st.operational == Operational::Error {
        st.operational = Operational::Ok;
    }
}

/// Folds the result of `act` into the status.
pub fn absorb(
    spec: &HostSpec,
    st: &HostStatus,
    act: &Act,
    result: ActResult,
    facts: &Facts,
    lim: &Limits,
) -> (HostStatus, Vec<Note>) {
    let mut st = st.clone();
    let mut notes = Vec::new();
    let now = facts.now_ms;
    match result {
        Err(message) => {
            let kind = error_kind(st.state, act, spec);
            fail_status(&mut st, kind, message.clone(), facts, lim);
            notes.push(Note {
                warning: true,
                reason: kind.reason().to_string(),
                message,
            });
            if *act == Act::BootAgent {
                st.agent.phase = AgentPhase::Down;
            }
        }
        Ok(ok) => {
            // Booting the agent or issuing a command is a step toward an operation whose success
            // only its outcome shows: the error (and the count behind the backoff) stays until then.
            if !matches!(act, Act::BootAgent | Act::Issue(_)) {
                clear_error(&mut st);
            }
            if matches!(act, Act::BootAgent | Act::Reboot | Act::BootDisk) {
                st.shutdown = None;
            }
            match (act, ok) {
                (Act::Probe, ActOk::Power(p)) => {
                    st.power = p;
                    let next = if spec.externally_provisioned {
                        State::ExternallyProvisioned
                    } else if spec.inspect == InspectRequest::Disabled {
                        State::Available
                    } else {
                        State::Inspecting
                    };
                    notes.push(transition(&mut st, next, now));
                }
                (Act::BootAgent, _) => {
                    st.power = Power::On;
                    // The reconciler marks the new boot before it asks the BMC (the agent may
                    // enroll before the call returns); otherwise it starts now.
                    if st.agent.phase == AgentPhase::Down {
                        st.agent = AgentStatus {
                            phase: AgentPhase::Booting,
                            since_ms: now,
                            boot: st.agent.boot + 1,
                            last_seen_ms: now,
                            session: None,
                        };
                    }
                }
                (Act::Issue(kind), ActOk::Issued(command)) => {
                    st.ops_issued += 1;
                    st.op = Some(Op {
                        id: command.id.clone(),
                        command,
                        image: (*kind == OpKind::Write)
                            .then(|| spec.image.clone())
                            .flatten(),
                        kind: *kind,
                        boot: st.agent.boot,
                        started_ms: now,
                        progress: None,
                        outcome: None,
                    });
                }
                (Act::ReadPower, ActOk::Power(p)) => {
                    st.power = p;
                    match st.shutdown.as_mut() {
                        Some(_) if p == Power::Off => {
                            st.shutdown = None;
                            st.agent.phase = AgentPhase::Down;
                        }
                        Some(wait) => wait.check_ms = now + lim.power_poll_ms,
                        None => {}
                    }
                }
                (Act::PowerOn, _) => {
                    st.power = Power::On;
                    st.shutdown = None;
                }
                (Act::PowerOff { force: false }, _) => {
                    // Asked, not done: the host is on until the BMC says it is off.
                    st.shutdown = Some(ShutdownWait {
                        since_ms: now,
                        check_ms: now + lim.power_poll_ms,
                    });
                }
                (Act::PowerOff { force: true }, _) => {
                    st.power = Power::Off;
                    st.shutdown = None;
                    st.agent.phase = AgentPhase::Down;
                }
                (Act::Reboot, _) => {
                    st.power = Power::On;
                    st.reboots_done.extend(spec.reboot_requests.iter().cloned());
                    notes.push(Note {
                        warning: false,
                        reason: "Rebooted".into(),
                        message: "rebooted as the reboot.metal3.io annotation asked".into(),
                    });
                }
                (Act::BootDisk, _) => {
                    st.power = Power::On;
                    st.agent.phase = AgentPhase::Down;
                    // What the agent said of the write (size, format, time, CPU per stage),
                    // once, as the host leaves for its disk.
                    if let Some(Outcome::Ok { summary, .. }) = st.op.take().and_then(|o| o.outcome)
                    {
                        notes.push(Note {
                            warning: false,
                            reason: "ImageWritten".into(),
                            message: summary,
                        });
                    }
                    notes.push(transition(&mut st, State::Provisioned, now));
                }
                (Act::Forget, _) => {}
                (_, _) => {}
            }
        }
    }
    (st, notes)
}

/// Enters `to`: records how long the previous state lasted, and the StateChanged Event.
fn transition(st: &mut HostStatus, to: State, now: u64) -> Note {
    let from = st.state;
    if from != State::None {
        st.timings.push((
            from.as_str().to_string(),
            now.saturating_sub(st.state_since_ms),
        ));
        if st.timings.len() > 32 {
            st.timings.remove(0);
        }
    }
    st.state = to;
    st.state_since_ms = now;
    let from_name = if from == State::None {
        "(new)"
    } else {
        from.as_str()
    };
    Note {
        warning: false,
        reason: "StateChanged".into(),
        message: format!("{from_name} -> {to}"),
    }
}

fn error_kind(state: State, act: &Act, spec: &HostSpec) -> ErrorType {
    match (state, act) {
        (State::Registering, _) if spec.externally_provisioned => {
            ErrorType::ProvisionedRegistration
        }
        (State::Registering, _) => ErrorType::Registration,
        (State::Inspecting, _) => ErrorType::Inspection,
        (State::Provisioning | State::Deprovisioning, _) => ErrorType::Provisioning,
        _ => ErrorType::PowerManagement,
    }
}

/// Folds an agent event into the status of the host it authenticated as. Returns whether the
/// reconciler should look at the host now (a command finished).
pub fn on_agent_event(st: &mut HostStatus, event: &Event, now_ms: u64) -> bool {
    st.agent.last_seen_ms = now_ms;
    match event {
        Event::Progress { command, progress } => {
            if let Some(op) = st.op.as_mut().filter(|op| &op.id == command) {
                op.progress = Some(progress.clone());
            }
            false
        }
        Event::Done { command, outcome } => match st.op.as_mut().filter(|op| &op.id == command) {
            Some(op) if op.outcome.is_none() => {
                op.outcome = Some(outcome.clone());
                true
            }
            _ => false,
        },
        Event::Log { .. } => false,
    }
}

/// The agent enrolled with the token of its current boot, as `session`.
pub fn on_enrolled(st: &mut HostStatus, now_ms: u64, session: &str) {
    st.boot_token = None;
    st.agent.phase = AgentPhase::Up;
    st.agent.since_ms = now_ms;
    st.agent.last_seen_ms = now_ms;
    st.agent.session = Some(session.to_string());
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
