//! A host's config drive, as baremetal-operator + Ironic make it: the userData, networkData and
//! metaData Secrets the BareMetalHost names, read with BMO's key names (`userData` /
//! `networkData` / `metaData`, else `value`), built into a config-2 filesystem (always: its
//! meta_data carries the host's name, uuid and hostname), gzip + base64 for the agent.

use controller_configdrive::{build, encode, parse_secret_map, ConfigDriveInput};

use crate::model::{HostKey, HostSpec, SecretRef};
use crate::reconciler::SecretLookup;

fn secret_value(
    lookup: &SecretLookup,
    r: &SecretRef,
    field: &str,
    key: &str,
) -> Result<Vec<u8>, String> {
    let data =
        lookup(r).ok_or_else(|| format!("{field} Secret {}/{} not found", r.namespace, r.name))?;
    data.get(key)
        .or_else(|| data.get("value"))
        .cloned()
        .ok_or_else(|| {
            format!(
                "{field} Secret {}/{} has neither a {key:?} nor a \"value\" key",
                r.namespace, r.name
            )
        })
}

/// The encoded config drive for `key`, or why it cannot be made (one line).
pub fn render(
    key: &HostKey,
    spec: &HostSpec,
    lookup: &SecretLookup,
) -> Result<Option<String>, String> {
    let one = |e: controller_configdrive::ConfigDriveError| crate::error_chain(&e);
    let user_data = match &spec.user_data {
        Some(r) => Some(secret_value(lookup, r, "spec.userData", "userData")?),
        None => None,
    };
    let network_data = match &spec.network_data {
        Some(r) => parse_secret_map(
            "networkData",
            &secret_value(lookup, r, "spec.networkData", "networkData")?,
        )
        .map_err(one)?,
        None => None,
    };
    let meta_data = match &spec.meta_data {
        Some(r) => parse_secret_map(
            "metaData",
            &secret_value(lookup, r, "spec.metaData", "metaData")?,
        )
        .map_err(one)?,
        None => None,
    };
    let input = ConfigDriveInput {
        uuid: spec.uid.clone(),
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        hostname: key.name.clone(),
        user_data,
        network_data,
        meta_data,
    };
    let fs = build(&input).map_err(one)?;
    Ok(Some(encode(&fs).map_err(one)?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn secrets_are_read_with_bmo_key_names_and_missing_ones_are_named() {
        let key = HostKey::new("lab", "node-0");
        let spec = HostSpec {
            uid: "1234".into(),
            user_data: Some(SecretRef {
                namespace: "lab".into(),
                name: "ud".into(),
            }),
            network_data: Some(SecretRef {
                namespace: "lab".into(),
                name: "nd".into(),
            }),
            ..HostSpec::default()
        };
        let secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::from([
            (
                "ud".to_string(),
                BTreeMap::from([("value".to_string(), b"#cloud-config\n".to_vec())]),
            ),
            (
                "nd".to_string(),
                BTreeMap::from([("networkData".to_string(), b"{links: []}".to_vec())]),
            ),
        ]);
        let lookup = |r: &SecretRef| secrets.get(&r.name).cloned();
        let drive = render(&key, &spec, &lookup).unwrap().unwrap();
        assert!(drive.len() > 100);

        let none = |_: &SecretRef| None;
        let e = render(&key, &spec, &none).unwrap_err();
        assert_eq!(e, "spec.userData Secret lab/ud not found");
        let bad = |r: &SecretRef| {
            (r.name == "ud")
                .then(|| BTreeMap::from([("other".to_string(), vec![])]))
                .or_else(|| secrets.get(&r.name).cloned())
        };
        assert!(render(&key, &spec, &bad)
            .unwrap_err()
            .contains("neither a \"userData\" nor a \"value\" key"));
    }
}
