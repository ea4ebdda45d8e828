//! Host conditions (metav1 `Condition`s in `status.conditions`) with metal3's type names, so
//! `kubectl wait --for=condition=Provisioned bmh/NAME` works as it does against metal3.
//!
//! [`set_condition`] follows apimachinery's `meta.SetStatusCondition`: the transition time
//! moves only when the status changes, so a reconcile that rewrites the same condition does not
//! make it look fresh.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The BMC is reachable with valid credentials: the host can be managed.
pub const MANAGEABLE: &str = "Manageable";
/// Inspection is done and the host can take an image.
pub const AVAILABLE_FOR_PROVISIONING: &str = "AvailableForProvisioning";
/// An image (or custom deploy) has been written to the host.
pub const PROVISIONED: &str = "Provisioned";
/// The host has reached the state its spec asks for.
pub const READY: &str = "Ready";
/// The controller is working on the host (registering, inspecting, provisioning, ...).
pub const PROGRESSING: &str = "Progressing";
/// No error is recorded on the host.
pub const HEALTHY: &str = "Healthy";

/// Every condition type the controller sets.
pub const ALL: [&str; 6] = [
    MANAGEABLE,
    AVAILABLE_FOR_PROVISIONING,
    PROVISIONED,
    READY,
    PROGRESSING,
    HEALTHY,
];

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    /// The API spelling: `True`, `False`, `Unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            Self::True
        } else {
            Self::False
        }
    }
}

/// Sets condition `type_` in `conditions`, adding it if absent. Returns whether anything
/// changed.
///
/// `lastTransitionTime` becomes `now` only when the condition is new or its status changes;
/// reason, message and observedGeneration are always updated. `reason` must be a non-empty
/// CamelCase identifier (the CRD rejects anything else).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) -> bool {
    let status = status.as_str();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        let mut changed = false;
        if c.status != status {
            c.status = status.to_owned();
            c.last_transition_time = Time(now);
            changed = true;
        }
        if c.reason != reason {
            c.reason = reason.to_owned();
            changed = true;
        }
        if c.message != message {
            c.message = message.to_owned();
            changed = true;
        }
        if c.observed_generation != generation {
            c.observed_generation = generation;
            changed = true;
        }
        return changed;
    }
    conditions.push(Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: Time(now),
        observed_generation: generation,
    });
    true
}

/// The condition of type `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether condition `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn set_condition_table() {
        struct Case {
            name: &'static str,
            start: Vec<Condition>,
            status: ConditionStatus,
            reason: &'static str,
            message: &'static str,
            generation: Option<i64>,
            want_changed: bool,
            want_transition: i64,
        }
        let existing = |status: &str| {
            vec![Condition {
                type_: READY.into(),
                status: status.into(),
                reason: "Old".into(),
                message: "old".into(),
                last_transition_time: Time(ts(100)),
                observed_generation: Some(1),
            }]
        };
        let cases = [
            Case {
                name: "new condition gets now",
                start: vec![],
                status: ConditionStatus::True,
                reason: "Provisioned",
                message: "",
                generation: Some(1),
                want_changed: true,
                want_transition: 500,
            },
            Case {
                name: "same status keeps transition time, new reason",
                start: existing("True"),
                status: ConditionStatus::True,
                reason: "New",
                message: "new",
                generation: Some(2),
                want_changed: true,
                want_transition: 100,
            },
            Case {
                name: "identical is not a change",
                start: existing("True"),
                status: ConditionStatus::True,
                reason: "Old",
                message: "old",
                generation: Some(1),
                want_changed: false,
                want_transition: 100,
            },
            Case {
                name: "status flip moves transition time",
                start: existing("True"),
                status: ConditionStatus::False,
                reason: "Old",
                message: "old",
                generation: Some(1),
                want_changed: true,
                want_transition: 500,
            },
            Case {
                name: "unknown to true",
                start: existing("Unknown"),
                status: ConditionStatus::True,
                reason: "Old",
                message: "old",
                generation: Some(1),
                want_changed: true,
                want_transition: 500,
            },
        ];
        for c in cases {
            let mut conds = c.start.clone();
            let changed = set_condition(
                &mut conds,
                READY,
                c.status,
                c.reason,
                c.message,
                ts(500),
                c.generation,
            );
            assert_eq!(changed, c.want_changed, "{}", c.name);
            assert_eq!(conds.len(), 1, "{}", c.name);
            let got = &conds[0];
            assert_eq!(got.status, c.status.as_str(), "{}", c.name);
            assert_eq!(got.reason, c.reason, "{}", c.name);
            assert_eq!(got.message, c.message, "{}", c.name);
            assert_eq!(got.observed_generation, c.generation, "{}", c.name);
            assert_eq!(
                got.last_transition_time.0,
                ts(c.want_transition),
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn other_conditions_untouched() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            MANAGEABLE,
            ConditionStatus::True,
            "Registered",
            "",
            ts(1),
            None,
        );
        set_condition(
            &mut conds,
            HEALTHY,
            ConditionStatus::False,
            "RegistrationError",
            "bad",
            ts(2),
            None,
        );
        set_condition(
            &mut conds,
            MANAGEABLE,
            ConditionStatus::False,
            "Lost",
            "",
            ts(3),
            None,
        );
        assert_eq!(conds.len(), 2);
        assert!(!is_true(&conds, MANAGEABLE));
        let healthy = find_condition(&conds, HEALTHY).unwrap();
        assert_eq!(healthy.last_transition_time.0, ts(2));
        assert_eq!(healthy.message, "bad");
        assert!(find_condition(&conds, READY).is_none());
    }
}
