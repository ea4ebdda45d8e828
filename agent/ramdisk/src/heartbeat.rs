//! The agent's work loop once enrolled: long-poll for the next command, run it through the
//! [`Executor`] (on a blocking thread) while forwarding progress at most once per interval,
//! report how it ended, repeat. Network trouble is retried — the same call, with backoff and
//! jitter, because enrollment cannot be redone (the boot token works once). A refusal ends
//! the loop with its error. The certificate is renewed before it runs out.

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_proto::{Command, Event, Outcome, Progress};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::client::{Client, ClientError};
use crate::exec::{Begin, Executor, ProgressFn};

/// Timings of the loop.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// How long each heartbeat asks the controller to hold it.
    pub wait_seconds: u32,
    /// First retry delay; doubles per failure up to `backoff_max`, each with ±50% jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Least time between two progress events.
    pub progress_interval: Duration,
}

impl Default for LoopOptions {
    fn default() -> Self {
        Self {
            wait_seconds: 55,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            progress_interval: Duration::from_secs(1),
        }
    }
}

/// Why the loop ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// A PowerOff command was acknowledged: the caller powers the machine off.
    PowerOff,
    /// A Reboot command was acknowledged: the caller reboots.
    Reboot,
    /// The cancellation token fired.
    Cancelled,
}

/// The delay before retry number `attempt` (0-based): `base·2^attempt`, capped at `max`,
/// scaled by a factor in [0.5, 1.5) taken from `jitter` (any 64-bit value).
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter: u64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(20)).min(max);
    let factor = 0.5 + (jitter % 1000) as f64 / 1000.0;
    exp.mul_f64(factor)
}

fn jitter() -> u64 {
    // Per-process random keys; non-blocking, unlike the kernel CRNG at early boot.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish()
}

/// Repeats `call` while it fails transiently; returns its first success or lasting error.
async fn retrying<T, F, Fut>(
    what: &str,
    opts: &LoopOptions,
    cancel: &CancellationToken,
    mut call: F,
) -> Result<Option<T>, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut attempt = 0;
    loop {
        let r = tokio::select! {
            r = call() => r,
            _ = cancel.cancelled() => return Ok(None),
        };
        match r {
            Ok(v) => return Ok(Some(v)),
            Err(e) if e.is_transient() => {
                let wait = backoff(attempt, opts.backoff_base, opts.backoff_max, jitter());
                warn!(call = what, attempt, retry_in_ms = wait.as_millis() as u64, error = %agent_wipe::error_chain(&e), "controller call failed; retrying");
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => return Ok(None),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs the loop until a PowerOff/Reboot is acknowledged, `cancel` fires, or the controller
/// refuses a call (e.g. the certificate is no longer accepted).
pub async fn run(
    client: Arc<Client>,
    executor: Arc<Executor>,
    opts: LoopOptions,
    cancel: CancellationToken,
) -> Result<Ended, ClientError> {
    loop {
        if client.needs_renewal() {
            if retrying("renew", &opts, &cancel, || client.renew())
                .await?
                .is_none()
            {
                return Ok(Ended::Cancelled);
            }
            info!(host = ?client.host(), "client certificate renewed");
        }
        let Some(reply) = retrying("heartbeat", &opts, &cancel, || {
            client.heartbeat(None, opts.wait_seconds)
        })
        .await?
        else {
            return Ok(Ended::Cancelled);
        };
        let Some(command) = reply.command else {
            continue;
        };
        let outcome = match executor.begin(&command.id) {
            Begin::Done(o) => {
                info!(command = %command.id, "command already done; reporting its outcome again");
                o
            }
            Begin::Running => {
                // Commands run one at a time, so this is a delivery during our own run.
                continue;
            }
            Begin::Run => {
                info!(command = %command.id, action = ?command.action, "running command");
                let o = run_one(&client, &executor, &command, &opts, &cancel).await;
                executor.finish(&command.id, o.clone());
                o
            }
        };
        let done = Event::Done {
            command: command.id.clone(),
            outcome: outcome.clone(),
        };
        if let Outcome::Failed { reason, message } = &outcome {
            warn!(command = %command.id, reason = %reason, error = %message, "command failed");
        }
        if retrying("events", &opts, &cancel, || {
            client.events(vec![done.clone()])
        })
        .await?
        .is_none()
        {
            return Ok(Ended::Cancelled);
        }
        match (&command.action, &outcome) {
            (agent_proto::Action::PowerOff, Outcome::Ok { .. }) => return Ok(Ended::PowerOff),
            (agent_proto::Action::Reboot, Outcome::Ok { .. }) => return Ok(Ended::Reboot),
            _ => {}
        }
    }
}

/// Runs `command` on a blocking thread, forwarding its latest progress every interval.
async fn run_one(
    client: &Arc<Client>,
    executor: &Arc<Executor>,
    command: &Command,
    opts: &LoopOptions,
    cancel: &CancellationToken,
) -> Outcome {
    let latest: Arc<Mutex<Option<Progress>>> = Arc::default();
    let progress: ProgressFn = {
        let latest = latest.clone();
        Arc::new(move |p| *latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(p))
    };
    let job = {
        let executor = executor.clone();
        let action = command.action.clone();
        tokio::task::spawn_blocking(move || executor.execute(&action, progress))
    };
    tokio::pin!(job);
    let mut tick = tokio::time::interval(opts.progress_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            r = &mut job => {
                return r.unwrap_or_else(|e| Outcome::Failed {
                    reason: "internal".into(),
                    message: format!("the command stopped unexpectedly: {e}"),
                });
            }
            _ = tick.tick() => {
                let p = latest.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(progress) = p {
                    if cancel.is_cancelled() {
                        continue;
                    }
                    // Best effort: a lost progress event is replaced by the next one.
                    let ev = Event::Progress { command: command.id.clone(), progress };
                    if let Err(e) = client.events(vec![ev]).await {
                        warn!(command = %command.id, error = %agent_wipe::error_chain(&e), "progress not delivered");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let s = Duration::from_secs(1);
        let max = Duration::from_secs(30);
        let cases: &[(u32, u64, Duration)] = &[
            (0, 500, Duration::from_secs(1)),
            (1, 500, Duration::from_secs(2)),
            (4, 500, Duration::from_secs(16)),
            (5, 500, Duration::from_secs(30)),
            (200, 500, Duration::from_secs(30)),
            (0, 0, Duration::from_millis(500)),
            (0, 999, Duration::from_millis(1499)),
            (3, 1000, Duration::from_secs(4)),
        ];
        for &(attempt, j, want) in cases {
            assert_eq!(
                backoff(attempt, s, max, j),
                want,
                "attempt {attempt} jitter {j}"
            );
        }
        assert_ne!(jitter(), jitter());
    }
}
