//! What the agent API asks of the controller ([`Backend`]), and [`MemoryBackend`], a complete
//! in-memory implementation for tests and simulations. The server owns transport and
//! authentication; the backend owns state: which token belongs to which host, what each host
//! should do next, and what its agent reported.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agent_proto::{Command, Enroll, Event};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::host::HostId;

/// Why an enrollment was refused. Each variant is an [`agent_proto::ApiError`] code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No such token (never minted, or forgotten).
    #[error("the boot token is not known")]
    BadToken,
    /// The token was redeemed before: a replay, or a second agent with the same boot script.
    #[error("the boot token of {host} was already used")]
    TokenUsed { host: HostId },
    /// The token's time ran out before the agent enrolled.
    #[error("the boot token of {host} expired")]
    TokenExpired { host: HostId },
    /// The enrolling machine is not the host the token was minted for (MACs, serial).
    #[error("the enrolling machine is not {host}: {why}")]
    Identity { host: HostId, why: String },
}

impl Refusal {
    /// The [`agent_proto::ApiError::code`].
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadToken => "bad-token",
            Refusal::TokenUsed { .. } => "token-used",
            Refusal::TokenExpired { .. } => "token-expired",
            Refusal::Identity { .. } => "wrong-host",
        }
    }

    /// The host the token was minted for, when known (the refusal surfaces as its error).
    pub fn host(&self) -> Option<&HostId> {
        match self {
            Refusal::BadToken => None,
            Refusal::TokenUsed { host }
            | Refusal::TokenExpired { host }
            | Refusal::Identity { host, .. } => Some(host),
        }
    }
}

/// The controller's side of the agent API. Called on the server's runtime: every method must
/// return quickly (an in-memory lookup; hand slow work such as store writes to a queue).
pub trait Backend: Send + Sync + 'static {
    /// Redeems a one-time boot token: atomically, a token works once. Returns the host it was
    /// minted for, best with a session naming this enrollment ([`HostId::with_session`]): the
    /// certificate carries it, and later calls come with it. A refusal that names a host should
    /// surface as an error on that host.
    fn redeem_token(&self, token: &str, enroll: &Enroll) -> Result<HostId, Refusal>;
    /// What `host`'s agent should do now (the same command until its `Done` arrives). `host`
    /// comes from its certificate, session included: an earlier session gets nothing.
    fn next_command(&self, host: &HostId) -> Option<Command>;
    /// Something `host`'s agent reported. `host` comes from its certificate.
    fn on_event(&self, host: &HostId, event: Event);
}

/// Wakes long-polling heartbeats when a host's next command changes. Cheap to clone.
#[derive(Clone, Default)]
pub struct Pokes {
    waiters: Arc<Mutex<HashMap<HostId, Arc<Notify>>>>,
}

impl std::fmt::Debug for Pokes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pokes").finish_non_exhaustive()
    }
}

impl Pokes {
    /// Wakes `host`'s pending heartbeat, if any, so it asks the backend again at once.
    /// (Keyed by the host alone: a poke wakes the heartbeats of every session of it, and the
    /// backend decides what each gets.)
    pub fn poke(&self, host: &HostId) {
        if let Some(n) = lock(&self.waiters).get(&host.host()) {
            n.notify_waiters();
        }
    }

    pub(crate) fn subscribe(&self, host: &HostId) -> Arc<Notify> {
        lock(&self.waiters)
            .entry(host.host())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Forgets `host`'s entry when no heartbeat waits on it any more.
    pub(crate) fn release(&self, host: &HostId, n: Arc<Notify>) {
        let mut w = lock(&self.waiters);
        drop(n);
        let host = host.host();
        if w.get(&host).is_some_and(|n| Arc::strong_count(n) == 1) {
            w.remove(&host);
        }
    }

    /// Hosts with a heartbeat waiting now.
    pub fn waiting(&self) -> usize {
        lock(&self.waiters).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct TokenEntry {
    host: HostId,
    expires: Instant,
    used: bool,
}

/// Everything [`MemoryBackend`] holds.
#[derive(Debug, Default, Clone)]
pub struct Record {
    /// Successful enrollments, in order.
    pub enrollments: Vec<(HostId, Enroll)>,
    /// Refused enrollments, in order.
    pub refusals: Vec<Refusal>,
    /// Every event, in arrival order.
    pub events: Vec<(HostId, Event)>,
    /// Commands each host has not finished, in order.
    pub queues: HashMap<HostId, VecDeque<Command>>,
}

impl Record {
    /// `host`'s events, in order.
    pub fn events_of(&self, host: &HostId) -> Vec<&Event> {
        self.events
            .iter()
            .filter(|(h, _)| h == host)
            .map(|(_, e)| e)
            .collect()
    }
}

/// A complete in-memory backend: tokens with expiry and single use (stored as SHA-256, never
/// in clear), a command queue per host (the head is delivered until its `Done` arrives), and
/// everything recorded.
#[derive(Default)]
pub struct MemoryBackend {
    tokens: Mutex<HashMap<[u8; 32], TokenEntry>>,
    record: Mutex<Record>,
    changed: Notify,
    pokes: Mutex<Option<Pokes>>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend").finish_non_exhaustive()
    }
}

fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the server's long-polls when a queue changes ([`crate::AgentApi::pokes`]).
    pub fn attach(&self, pokes: Pokes) {
        *lock(&self.pokes) = Some(pokes);
    }

    /// Mints a token for `host`, valid for `ttl`.
    pub fn mint_token(&self, host: &HostId, ttl: Duration) -> Result<String, crate::CaError> {
        let t = crate::ca::mint_token()?;
        self.add_token(&t, host, ttl);
        Ok(t)
    }

    /// Registers a given token for `host`, valid for `ttl` (replaces an identical one).
    pub fn add_token(&self, token: &str, host: &HostId, ttl: Duration) {
        lock(&self.tokens).insert(
            token_key(token),
            TokenEntry {
                host: host.clone(),
                expires: Instant::now() + ttl,
                used: false,
            },
        );
    }

    /// Appends a command to `host`'s queue and wakes its heartbeat.
    pub fn push_command(&self, host: &HostId, command: Command) {
        lock(&self.record)
            .queues
            .entry(host.clone())
            .or_default()
            .push_back(command);
        self.changed(Some(host));
    }

    /// A copy of everything recorded.
    pub fn record(&self) -> Record {
        lock(&self.record).clone()
    }

    /// Waits until `pred` holds for the record, up to `timeout`; returns whether it did.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&Record) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if pred(&lock(&self.record)) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return pred(&lock(&self.record));
            }
        }
    }

    fn changed(&self, host: Option<&HostId>) {
        self.changed.notify_waiters();
        if let (Some(h), Some(p)) = (host, lock(&self.pokes).as_ref()) {
            p.poke(h);
        }
    }
}

impl Backend for MemoryBackend {
    fn redeem_token(&self, token: &str, enroll: &Enroll) -> Result<HostId, Refusal> {
        let result = {
            let mut tokens = lock(&self.tokens);
            match tokens.get_mut(&token_key(token)) {
                None => Err(Refusal::BadToken),
                Some(e) if e.used => Err(Refusal::TokenUsed {
                    host: e.host.clone(),
                }),
                Some(e) if Instant::now() >= e.expires => {
                    // Expired tokens are spent too: they never come back to life.
                    e.used = true;
                    Err(Refusal::TokenExpired {
                        host: e.host.clone(),
                    })
                }
                Some(e) => {
                    e.used = true;
                    Ok(e.host.clone())
                }
            }
        };
        {
            let mut r = lock(&self.record);
            match &result {
                Ok(h) => r.enrollments.push((h.clone(), enroll.clone())),
                Err(refusal) => r.refusals.push(refusal.clone()),
            }
        }
        self.changed(None);
        result
    }

    fn next_command(&self, host: &HostId) -> Option<Command> {
        lock(&self.record).queues.get(host)?.front().cloned()
    }

    fn on_event(&self, host: &HostId, event: Event) {
        let advanced = {
            let mut r = lock(&self.record);
            let mut advanced = false;
            if let Event::Done { command, .. } = &event {
                if let Some(q) = r.queues.get_mut(host) {
                    if q.front().is_some_and(|c| &c.id == command) {
                        q.pop_front();
                        advanced = true;
                    }
                }
            }
            r.events.push((host.clone(), event));
            advanced
        };
        self.changed(advanced.then_some(host));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_proto::{Action, Outcome};

    fn enroll(token: &str) -> Enroll {
        Enroll {
            protocol: agent_proto::PROTOCOL_VERSION,
            token: token.into(),
            csr_pem: String::new(),
            boot_mac: "52:54:00:00:00:01".into(),
            address: "192.0.2.10".into(),
            macs: vec![],
            system_uuid: None,
            system_serial: None,
            ready_after_seconds: 1.0,
        }
    }

    #[test]
    fn tokens_work_once_and_expire() {
        let b = MemoryBackend::new();
        let h = HostId::new("ns", "a").unwrap();
        let t = b.mint_token(&h, Duration::from_secs(60)).unwrap();
        b.add_token("old", &h, Duration::ZERO);
        let cases: &[(&str, Result<HostId, Refusal>)] = &[
            (&t, Ok(h.clone())),
            (&t, Err(Refusal::TokenUsed { host: h.clone() })),
            ("old", Err(Refusal::TokenExpired { host: h.clone() })),
            ("old", Err(Refusal::TokenUsed { host: h.clone() })),
            ("never", Err(Refusal::BadToken)),
        ];
        for (tok, want) in cases {
            assert_eq!(&b.redeem_token(tok, &enroll(tok)), want, "{tok}");
        }
        let r = b.record();
        assert_eq!(r.enrollments.len(), 1);
        assert_eq!(r.refusals.len(), 4);
        assert_eq!(
            r.refusals.iter().map(Refusal::code).collect::<Vec<_>>(),
            ["token-used", "token-expired", "token-used", "bad-token"]
        );
    }

    #[test]
    fn concurrent_redemption_succeeds_exactly_once() {
        let b = Arc::new(MemoryBackend::new());
        let h = HostId::new("ns", "a").unwrap();
        let t = b.mint_token(&h, Duration::from_secs(60)).unwrap();
        let wins: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..16)
                .map(|_| s.spawn(|| b.redeem_token(&t, &enroll(&t)).is_ok()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap() as usize).sum()
        });
        assert_eq!(wins, 1);
    }

    #[test]
    fn queue_head_is_delivered_until_its_done_arrives() {
        let b = MemoryBackend::new();
        let a = HostId::new("ns", "a").unwrap();
        let other = HostId::new("ns", "b").unwrap();
        let cmd = |id: &str| Command {
            id: id.into(),
            action: Action::Inspect,
        };
        b.push_command(&a, cmd("1"));
        b.push_command(&a, cmd("2"));
        assert_eq!(b.next_command(&a).unwrap().id, "1");
        assert_eq!(b.next_command(&a).unwrap().id, "1");
        assert_eq!(b.next_command(&other), None);
        let done = |id: &str| Event::Done {
            command: id.into(),
            outcome: Outcome::Ok {
                summary: String::new(),
                device: None,
            },
        };
        // Another host's Done for a's command changes nothing of a's.
        b.on_event(&other, done("1"));
        assert_eq!(b.next_command(&a).unwrap().id, "1");
        // A Done for a command not at the head changes nothing either.
        b.on_event(&a, done("2"));
        assert_eq!(b.next_command(&a).unwrap().id, "1");
        b.on_event(&a, done("1"));
        assert_eq!(b.next_command(&a).unwrap().id, "2");
        b.on_event(&a, done("2"));
        assert_eq!(b.next_command(&a), None);
        assert_eq!(b.record().events_of(&a).len(), 3);
    }
}
