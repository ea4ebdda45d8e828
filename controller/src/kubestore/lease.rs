//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go's leaderelection does
//! it (kube-rs 5 has no helper): create the Lease if there is none; renew it while we hold it;
//! take it over only once its holder's `renewTime + leaseDurationSeconds` has passed. Every write
//! is a create or a `PUT` carrying the `resourceVersion` that was read, so two replicas racing for
//! an expired Lease cannot both win: the loser gets `409 Conflict` and stays a follower. Nothing
//! is written while another holder's Lease is current.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::FIELD_MANAGER;

/// Which Lease, who we are, and the timings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The Lease's namespace (the controller's own).
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica (the pod name).
    pub identity: String,
    /// How long a holder's Lease lasts without renewal (`leaseDurationSeconds`).
    pub duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
    /// How often a follower looks again.
    pub retry_every: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, renewed every 5 s, followers retry every 2 s.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// The result of one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// We hold the Lease (created, renewed or taken over).
    Held,
    /// Another replica holds it and its Lease is current (or it won a race with us).
    HeldBy(String),
}

/// Takes, keeps and gives back the Lease.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("lease", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn micro(t: Timestamp) -> MicroTime {
    // The API server keeps microseconds; round so that what we send is what we read back.
    MicroTime(Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t))
}

/// Whether a Lease read at `now` is free to take: no holder, or the holder stopped renewing.
pub fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    if spec.holder_identity.as_deref().unwrap_or("").is_empty() {
        return true;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    renewed.0 + SignedDuration::from_secs(secs) <= now
}

impl Elector {
    /// An elector for `cfg`'s Lease.
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
        }
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.cfg.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    fn pp() -> PostParams {
        PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        }
    }

    /// One round at `now`: create, renew or take over the Lease, or learn who holds it.
    pub async fn round(&self, now: Timestamp) -> Result<Round, kube::Error> {
        let me = &self.cfg.identity;
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(self.duration_secs()),
                    acquire_time: Some(micro(now)),
                    renew_time: Some(micro(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&Self::pp(), &lease).await {
                Ok(_) => Ok(Round::Held),
                Err(kube::Error::Api(s)) if s.is_already_exists() => {
                    Ok(Round::HeldBy(String::new()))
                }
                Err(e) => Err(e),
            };
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != *me {
            if !expired(&spec, now) {
                return Ok(Round::HeldBy(holder));
            }
            // Take over: a new term.
            spec.holder_identity = Some(me.clone());
            spec.acquire_time = Some(micro(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(micro(now));
        spec.lease_duration_seconds = Some(self.duration_secs());
        lease.spec = Some(spec);
        match self.api.replace(&self.cfg.name, &Self::pp(), &lease).await {
            Ok(_) => Ok(Round::Held),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(Round::HeldBy(holder)),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the Lease. `false` when `cancel` fired first.
    pub async fn acquire(&self, cancel: &CancellationToken) -> bool {
        let mut last_holder = None;
        loop {
            match self.round(Timestamp::now()).await {
                Ok(Round::Held) => {
                    info!(lease = %self.cfg.name, identity = %self.cfg.identity, "leading: the Lease is ours");
                    return true;
                }
                Ok(Round::HeldBy(h)) => {
                    if last_holder.as_ref() != Some(&h) {
                        info!(lease = %self.cfg.name, holder = %h, "following: another replica holds the Lease");
                        last_holder = Some(h);
                    }
                }
                Err(e) => {
                    warn!(lease = %self.cfg.name, error = %crate::error_chain(&e), "could not read or take the Lease")
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(self.cfg.retry_every) => {}
            }
        }
    }

    /// Renews the Lease until `cancel` fires (`Ok`) or it is lost (`Err` says why): another
    /// replica took it, or no renewal succeeded for a whole lease duration, after which another
    /// replica may take it — so we must stop acting before that.
    pub async fn keep(&self, cancel: &CancellationToken) -> Result<(), String> {
        let mut last_ok = tokio::time::Instant::now();
        // Stop a little before the Lease could be taken, to allow for clock skew.
        let deadline = self.cfg.duration.mul_f64(0.8);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.cfg.renew_every) => {}
            }
            match self.round(Timestamp::now()).await {
                Ok(Round::Held) => last_ok = tokio::time::Instant::now(),
                Ok(Round::HeldBy(h)) if h != self.cfg.identity => {
                    return Err(format!("the Lease {} was taken by {h:?}", self.cfg.name))
                }
                other => {
                    if let Err(e) = other {
                        warn!(lease = %self.cfg.name, error = %crate::error_chain(&e), "could not renew the Lease");
                    }
                    // Ours still, but the write lost a race (409): try again next round.
                    if last_ok.elapsed() >= deadline {
                        return Err(format!(
                            "the Lease {} could not be renewed for {} s",
                            self.cfg.name,
                            deadline.as_secs()
                        ));
                    }
                }
            }
        }
    }

    /// Gives the Lease back (on shutdown), so a follower takes over at once instead of waiting
    /// for it to expire. Does nothing if another replica holds it.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self.api.replace(&self.cfg.name, &Self::pp(), &lease).await {
            Ok(_) => {
                info!(lease = %self.cfg.name, "released the Lease");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: i64, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(Into::into),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(secs),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_free_once_its_holder_stops_renewing() {
        let at = |s| Timestamp::from_second(s).unwrap();
        assert!(!expired(&spec(Some("a"), 100, 15), at(114)));
        assert!(expired(&spec(Some("a"), 100, 15), at(115)));
        assert!(expired(&spec(None, 100, 15), at(101)), "no holder");
        assert!(expired(&spec(Some(""), 100, 15), at(101)), "released");
        let mut s = spec(Some("a"), 0, 15);
        s.renew_time = None;
        assert!(expired(&s, at(1)), "never renewed nor acquired");
    }
}
