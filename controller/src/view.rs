//! What users see: the controller's record of a host rendered as metal3 objects — the
//! BareMetalHost with its `status` (state, errorType/Message/Count, operationalStatus,
//! poweredOn, hardware, provisioning, conditions) and the HardwareData — for `get`, for the
//! Kubernetes status subresource, and for `kubectl wait --for=condition=…`.

use controller_api::conditions::{self, ConditionStatus};
use controller_api::{BareMetalHost, HardwareData};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::model::*;
use crate::store::HostRecord;

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from_millisecond(ms as i64).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A line for the Progressing condition: what the agent is doing, with bytes and rate.
pub fn progress_line(st: &HostStatus) -> Option<String> {
    let op = st.op.as_ref()?;
    let what = match op.kind {
        OpKind::Inspect => "inspecting",
        OpKind::Clean => "cleaning",
        OpKind::Write => "writing the image",
    };
    Some(match &op.progress {
        Some(p) => {
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            let total = p
                .bytes_total
                .map(|t| format!(" of {:.0} MiB", mib(t)))
                .unwrap_or_default();
            format!(
                "{what} to {}: {:.0} MiB{total} at {:.1} MiB/s ({})",
                p.device,
                mib(p.bytes_done),
                mib(p.rate_bytes_per_sec),
                p.phase
            )
        }
        None => format!("{what} (command {})", op.id),
    })
}

/// metal3's `status` for a record.
pub fn status_json(rec: &HostRecord) -> Value {
    let st = &rec.status;
    let mut provisioning = json!({
        "ID": rec.spec.uid,
        "state": st.state.as_str(),
        "bootMode": match rec.spec.boot_mode {
            BootMode::Uefi => "UEFI",
            BootMode::UefiSecureBoot => "UEFISecureBoot",
            BootMode::Legacy => "legacy",
        },
    });
    if let Some(img) = &st.provisioned_image {
        provisioning["image"] = serde_json::to_value(img).unwrap_or(Value::Null);
    }
    let mut status = json!({
        "errorCount": st.error_count,
        "errorMessage": st.error.as_ref().map(|e| e.message.as_str()).unwrap_or(""),
        "operationalStatus": st.operational.as_str(),
        "poweredOn": st.power == Power::On,
        "provisioning": provisioning,
        "provisioningFailCount": 0,
        "lastUpdated": timestamp(st.state_since_ms.max(1)).to_string(),
    });
    if let Some(e) = &st.error {
        status["errorType"] = json!(e.kind.as_str());
    }
    if let Some(hw) = &st.hardware {
        status["hardware"] = serde_json::to_value(&hw.hardware).unwrap_or(Value::Null);
    }
    let mut conds = Vec::new();
    let since = timestamp(st.state_since_ms.max(1));
    let mut set = |t: &str, on: bool, reason: &str, msg: &str| {
        conditions::set_condition(
            &mut conds,
            t,
            ConditionStatus::from(on),
            reason,
            msg,
            since,
            Some(rec.spec.generation),
        );
    };
    let state = st.state;
    let managed = !matches!(state, State::None | State::Unmanaged | State::Registering);
    set(
        conditions::MANAGEABLE,
        managed,
        if managed {
            "Registered"
        } else {
            "NotRegistered"
        },
        "",
    );
    let avail = state == State::Available;
    set(
        conditions::AVAILABLE_FOR_PROVISIONING,
        avail,
        state_reason(state),
        "",
    );
    let provisioned = matches!(state, State::Provisioned | State::ExternallyProvisioned);
    set(
        conditions::PROVISIONED,
        provisioned,
        state_reason(state),
        "",
    );
    let progressing = st.op.is_some()
        || matches!(
            state,
            State::Registering
                | State::Inspecting
                | State::Provisioning
                | State::Deprovisioning
                | State::PoweringOffBeforeDelete
                | State::Deleting
        );
    let pmsg = progress_line(st).unwrap_or_default();
    set(
        conditions::PROGRESSING,
        progressing,
        state_reason(state),
        &pmsg,
    );
    let healthy = st.error.is_none();
    let hmsg = st.error.as_ref().map(|e| e.message.as_str()).unwrap_or("");
    let hreason = st
        .error
        .as_ref()
        .map(|e| e.kind.reason())
        .unwrap_or("NoError");
    set(conditions::HEALTHY, healthy, hreason, hmsg);
    let ready = healthy && (avail || provisioned) && !progressing;
    set(conditions::READY, ready, state_reason(state), "");
    status["conditions"] = serde_json::to_value(&conds).unwrap_or(Value::Null);
    status
}

fn state_reason(s: State) -> &'static str {
    match s {
        State::None => "New",
        State::Unmanaged => "Unmanaged",
        State::Registering => "Registering",
        State::Inspecting => "Inspecting",
        State::Available => "Available",
        State::Provisioning => "Provisioning",
        State::Provisioned => "Provisioned",
        State::ExternallyProvisioned => "ExternallyProvisioned",
        State::Deprovisioning => "Deprovisioning",
        State::PoweringOffBeforeDelete => "PoweringOffBeforeDelete",
        State::Deleting => "Deleting",
    }
}

/// The BareMetalHost as the user applied it, with the controller's status (JSON).
pub fn object_json(rec: &HostRecord) -> Value {
    let mut obj = rec.object.clone();
    if let Some(m) = obj.as_object_mut() {
        m.insert("status".into(), status_json(rec));
        let meta = m.entry("metadata").or_insert_with(|| json!({}));
        if meta.get("namespace").is_none() {
            meta["namespace"] = json!("default");
        }
        if meta.get("creationTimestamp").is_none() {
            meta["creationTimestamp"] = json!(timestamp(rec.created_ms.max(1)).to_string());
        }
    }
    obj
}

/// The typed BareMetalHost (for the kubectl table).
pub fn host(rec: &HostRecord) -> Result<BareMetalHost, serde_json::Error> {
    serde_json::from_value(object_json(rec))
}

/// The HardwareData object for a host, once inspected.
pub fn hardware_data(rec: &HostRecord) -> Option<HardwareData> {
    let hw = rec.status.hardware.as_ref()?;
    let mut bmh = host(rec).ok()?;
    if bmh.metadata.uid.is_none() {
        bmh.metadata.uid = Some(rec.spec.uid.clone());
    }
    controller_api::hardware::hardware_data_for(&bmh, hw.hardware.clone().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(state: State) -> HostRecord {
        HostRecord {
            object: json!({"apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
                "metadata": {"name": "node-0"},
                "spec": {"online": true, "bmc": {"address": "redfish://x", "credentialsName": "c"}}}),
            spec: HostSpec {
                uid: "u1".into(),
                online: true,
                ..HostSpec::default()
            },
            status: HostStatus {
                state,
                state_since_ms: 1_700_000_000_000,
                ..HostStatus::default()
            },
            created_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn the_status_fits_metal3s_types_and_conditions_follow_the_state() {
        let mut r = rec(State::Provisioned);
        r.status.power = Power::On;
        let h = host(&r).unwrap();
        let st = h.status.as_ref().unwrap();
        assert_eq!(st.provisioning.state.as_str(), "provisioned");
        assert!(st.powered_on);
        assert!(conditions::is_true(&st.conditions, conditions::PROVISIONED));
        assert!(conditions::is_true(&st.conditions, conditions::READY));
        assert!(!conditions::is_true(
            &st.conditions,
            conditions::AVAILABLE_FOR_PROVISIONING
        ));

        let mut r = rec(State::Registering);
        r.status.error = Some(HostError {
            kind: ErrorType::Registration,
            message: "BMC unreachable".into(),
        });
        r.status.error_count = 2;
        r.status.operational = Operational::Error;
        let h = host(&r).unwrap();
        let st = h.status.as_ref().unwrap();
        assert_eq!(
            st.error_type.map(|e| e.as_str().to_string()).as_deref(),
            Some("registration error")
        );
        assert_eq!(st.error_message, "BMC unreachable");
        assert_eq!(st.error_count, 2);
        assert!(!conditions::is_true(&st.conditions, conditions::HEALTHY));
        assert!(!conditions::is_true(&st.conditions, conditions::READY));
        let table = controller_api::printing::table(&[h], timestamp(1_700_000_090_000), false);
        assert!(table.contains("registering"), "{table}");
        assert!(table.contains("registration error"), "{table}");
    }

    #[test]
    fn progress_shows_bytes_and_rate() {
        let mut r = rec(State::Provisioning);
        r.status.op = Some(Op {
            id: "u1.3.write".into(),
            command: agent_proto::Command {
                id: "u1.3.write".into(),
                action: agent_proto::Action::Inspect,
            },
            kind: OpKind::Write,
            image: None,
            boot: 1,
            started_ms: 0,
            progress: Some(agent_proto::Progress {
                operation: "write-image".into(),
                device: "/dev/vda".into(),
                bytes_done: 512 << 20,
                bytes_total: Some(1 << 30),
                rate_bytes_per_sec: 100 << 20,
                phase: "downloading".into(),
            }),
            outcome: None,
        });
        assert_eq!(
            progress_line(&r.status).unwrap(),
            "writing the image to /dev/vda: 512 MiB of 1024 MiB at 100.0 MiB/s (downloading)"
        );
        let h = host(&r).unwrap();
        let c = conditions::find_condition(
            &h.status.as_ref().unwrap().conditions,
            conditions::PROGRESSING,
        )
        .unwrap();
        assert!(c.message.contains("512 MiB"));
    }
}
