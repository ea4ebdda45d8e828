//! The CRD contract: the committed CRDs are what the types generate, metal3's own example
//! manifests deserialize and re-serialize unchanged and validate against our schema, and our
//! schema is structurally metal3's.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use controller_api::compat::{self, Difference};
use controller_api::{crds, render_yaml, BareMetalHost, BareMetalHostStatus, HardwareData};
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use serde_json::{json, Value};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed copies of metal3's files (always present).
fn committed_metal3() -> PathBuf {
    manifest_dir().join("tests/metal3")
}

/// The shared compatibility data when this checkout has it: `$FERROX_SHARED/metal3` or
/// `<workspace>/../shared/metal3`.
fn shared_metal3() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FERROX_SHARED") {
        let p = PathBuf::from(dir).join("metal3");
        if p.is_dir() {
            return Some(p);
        }
    }
    let p = manifest_dir().join("../../../shared/metal3");
    p.is_dir().then_some(p)
}

/// Where the metal3 files are read from: the shared data when present, else the copies.
fn metal3_dir() -> PathBuf {
    shared_metal3().unwrap_or_else(committed_metal3)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// All YAML documents of a file as JSON values, skipping empty documents.
fn yaml_docs(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = serde_yaml::Value::deserialize(doc)?;
        if v.is_null() {
            continue;
        }
        docs.push(serde_json::to_value(v)?);
    }
    Ok(docs)
}

fn examples() -> Result<Vec<(String, Value)>> {
    let dir = metal3_dir().join("examples");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let mut out = Vec::new();
    for path in names {
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            for (i, doc) in yaml_docs(&read(&path)?)?.into_iter().enumerate() {
                out.push((format!("{file}#{i}"), doc));
            }
        }
    }
    Ok(out)
}

fn schema_of(crd: &Value) -> Value {
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn metal3_crd(file: &str) -> Result<Value> {
    let docs = yaml_docs(&read(&metal3_dir().join(file))?)?;
    docs.into_iter().next().context("empty CRD file")
}

fn our_crd(file: &str) -> Value {
    let g = crds().into_iter().find(|g| g.file_name == file).unwrap();
    serde_json::to_value(&g.crd).unwrap()
}

/// Turns a structural openAPIV3Schema into plain JSON Schema (draft 4, which OpenAPI v3's
/// schema object is based on): `nullable: true` becomes a `null` alternative and the
/// `x-kubernetes-*` extensions, which are API-server behaviour rather than validation, are
/// dropped. `x-kubernetes-preserve-unknown-fields` would allow unknown fields, and is
/// translated to `additionalProperties: true`; anything else is validated as written.
fn to_json_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                if k.starts_with("x-kubernetes-") {
                    continue;
                }
                let v = if k == "properties" {
                    Value::Object(
                        v.as_object()
                            .unwrap()
                            .iter()
                            .map(|(name, s)| (name.clone(), to_json_schema(s)))
                            .collect(),
                    )
                } else {
                    to_json_schema(v)
                };
                out.insert(k.clone(), v);
            }
            if m.get("nullable") == Some(&Value::Bool(true)) {
                out.remove("nullable");
                if let Some(Value::String(t)) = out.get("type").cloned() {
                    out.insert("type".into(), json!([t, "null"]));
                }
                if let Some(Value::Array(e)) = out.get_mut("enum") {
                    e.push(Value::Null);
                }
            }
            // Structural schemas prune unknown fields; validation must refuse them so a
            // field our types do not know is an error here, not silently accepted.
            if m.get("type") == Some(&json!("object"))
                && m.contains_key("properties")
                && !m.contains_key("additionalProperties")
                && m.get("x-kubernetes-preserve-unknown-fields") != Some(&Value::Bool(true))
            {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

fn validator(crd_schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&to_json_schema(crd_schema))
        .expect("schema compiles")
}

fn validation_errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

// ---- (a) drift ----

#[test]
fn committed_crds_match_the_types() -> Result<()> {
    let dir = manifest_dir().join("../deploy/crds");
    for g in crds() {
        let want = render_yaml(&g.crd)?;
        let path = dir.join(g.file_name);
        let got = read(&path)?;
        if got != want {
            bail!(
                "{} is stale: run `cargo run -p controller-api --bin crdgen` and commit the result",
                path.display()
            );
        }
    }
    Ok(())
}

#[test]
fn committed_metal3_copies_match_shared_data() -> Result<()> {
    let Some(shared) = shared_metal3() else {
        eprintln!("no shared metal3 data in this checkout; using the committed copies");
        return Ok(());
    };
    let copies = committed_metal3();
    for rel in [
        "metal3.io_baremetalhosts.yaml",
        "metal3.io_hardwaredata.yaml",
    ] {
        assert_eq!(read(&shared.join(rel))?, read(&copies.join(rel))?, "{rel}");
    }
    for entry in std::fs::read_dir(shared.join("examples"))? {
        let path = entry?.path();
        let name = path.file_name().unwrap();
        assert_eq!(
            read(&path)?,
            read(&copies.join("examples").join(name))?,
            "examples/{}",
            name.to_string_lossy()
        );
    }
    Ok(())
}

// ---- (b) examples round-trip ----

#[test]
fn metal3_examples_round_trip_unchanged() -> Result<()> {
    let docs = examples()?;
    let mut hosts = 0;
    for (name, doc) in &docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let back = match kind {
            "BareMetalHost" => {
                hosts += 1;
                let host: BareMetalHost = serde_json::from_value(doc.clone())
                    .with_context(|| format!("{name}: parsing BareMetalHost"))?;
                serde_json::to_value(&host)?
            }
            "Secret" => {
                let secret: Secret = serde_json::from_value(doc.clone())
                    .with_context(|| format!("{name}: parsing Secret"))?;
                serde_json::to_value(&secret)?
            }
            other => bail!("{name}: unexpected kind {other:?} in metal3 examples"),
        };
        assert_eq!(&back, doc, "{name}: re-serialized {kind} differs");
    }
    assert!(
        hosts >= 4,
        "expected at least 4 BareMetalHosts, found {hosts}"
    );
    Ok(())
}

#[test]
fn example_fields_land_in_typed_fields() -> Result<()> {
    // Round-tripping alone would pass with a catch-all map; check the typed view too.
    let docs = examples()?;
    let (_, doc) = docs
        .iter()
        .find(|(n, _)| n.starts_with("metal3-docs-bmh-01-provision"))
        .context("bmh-01-provision example")?;
    let host: BareMetalHost = serde_json::from_value(doc.clone())?;
    let spec = &host.spec;
    assert!(spec.online);
    assert_eq!(spec.boot_mac_address.as_deref(), Some("00:60:2f:31:81:01"));
    assert_eq!(spec.boot_mode, Some(controller_api::BootMode::Uefi));
    assert_eq!(spec.hardware_profile.as_deref(), Some("libvirt"));
    let bmc = spec.bmc.as_ref().context("bmc")?;
    assert_eq!(bmc.credentials_name, "bml-01");
    let image = spec.image.as_ref().context("image")?;
    assert_eq!(
        image.checksum_type,
        Some(controller_api::ChecksumType::Sha256)
    );
    assert_eq!(image.format, Some(controller_api::ImageFormat::Qcow2));
    assert_eq!(
        image.url,
        "http://192.168.222.1/jammy-server-cloudimg-amd64.img"
    );
    Ok(())
}

// ---- (c) examples validate against our schema ----

#[test]
fn metal3_examples_validate_against_our_schema() -> Result<()> {
    let ours = validator(&schema_of(&our_crd("metal3.io_baremetalhosts.yaml")));
    let theirs = validator(&schema_of(&metal3_crd("metal3.io_baremetalhosts.yaml")?));
    for (name, doc) in examples()? {
        if doc["kind"] != "BareMetalHost" {
            continue;
        }
        let errs = validation_errors(&ours, &doc);
        assert!(errs.is_empty(), "{name} rejected by our schema: {errs:?}");
        let errs = validation_errors(&theirs, &doc);
        assert!(
            errs.is_empty(),
            "{name} rejected by metal3's schema: {errs:?}"
        );
    }
    Ok(())
}

#[test]
fn our_schema_rejects_what_metal3_rejects() -> Result<()> {
    let ours = validator(&schema_of(&our_crd("metal3.io_baremetalhosts.yaml")));
    let theirs = validator(&schema_of(&metal3_crd("metal3.io_baremetalhosts.yaml")?));
    let good = json!({
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {"name": "h"},
        "spec": {"online": true, "bmc": {"address": "redfish://x", "credentialsName": "c"}}
    });
    assert!(validation_errors(&ours, &good).is_empty());
    type Mutate = fn(&mut Value);
    let bad: &[(&str, Mutate)] = &[
        ("online missing", |v| {
            v["spec"].as_object_mut().unwrap().remove("online");
        }),
        ("online not a bool", |v| v["spec"]["online"] = json!("yes")),
        ("unknown boot mode", |v| {
            v["spec"]["bootMode"] = json!("BIOS")
        }),
        ("bmc without credentials", |v| {
            v["spec"]["bmc"]
                .as_object_mut()
                .unwrap()
                .remove("credentialsName");
        }),
        ("bad MAC", |v| {
            v["spec"]["bootMACAddress"] = json!("not-a-mac")
        }),
        ("unknown cleaning mode", |v| {
            v["spec"]["automatedCleaningMode"] = json!("full")
        }),
        ("image without url", |v| {
            v["spec"]["image"] = json!({"checksum": "x"})
        }),
        ("unknown checksum type", |v| {
            v["spec"]["image"] = json!({"url": "http://x", "checksumType": "crc32"})
        }),
        ("three software RAID volumes", |v| {
            v["spec"]["raid"] = json!({"softwareRAIDVolumes": [
                {"level": "1"}, {"level": "1"}, {"level": "1"}
            ]})
        }),
        ("unknown field", |v| v["spec"]["bogus"] = json!(1)),
        ("status without required fields", |v| {
            v["status"] = json!({"poweredOn": true})
        }),
        ("unknown error type", |v| {
            v["status"] = json!({
                "errorCount": 0, "errorMessage": "", "operationalStatus": "error",
                "poweredOn": false, "provisioningFailCount": 0,
                "provisioning": {"ID": "", "state": ""},
                "errorType": "detach error"
            })
        }),
    ];
    for (name, mutate) in bad {
        let mut doc = good.clone();
        mutate(&mut doc);
        assert!(
            !validation_errors(&theirs, &doc).is_empty(),
            "{name}: metal3's schema should reject it (test is wrong)"
        );
        assert!(
            !validation_errors(&ours, &doc).is_empty(),
            "{name}: our schema accepts what metal3's rejects"
        );
    }
    Ok(())
}

#[test]
fn default_status_carries_every_required_field_and_validates() -> Result<()> {
    let status = serde_json::to_value(BareMetalHostStatus::default())?;
    for key in [
        "errorCount",
        "errorMessage",
        "operationalStatus",
        "poweredOn",
        "provisioning",
        "provisioningFailCount",
    ] {
        assert!(status.get(key).is_some(), "status lacks {key}: {status}");
    }
    assert!(status["provisioning"].get("ID").is_some());
    assert!(status["provisioning"].get("state").is_some());

    let doc = json!({
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {"name": "h"},
        "spec": {"online": false},
        "status": status,
    });
    for (who, crd) in [
        ("ours", our_crd("metal3.io_baremetalhosts.yaml")),
        ("metal3", metal3_crd("metal3.io_baremetalhosts.yaml")?),
    ] {
        let errs = validation_errors(&validator(&schema_of(&crd)), &doc);
        assert!(errs.is_empty(), "{who}: {errs:?}");
    }
    Ok(())
}

#[test]
fn full_status_validates_against_metal3() -> Result<()> {
    use controller_api::conditions::{self, ConditionStatus};
    use controller_api::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    let now = Timestamp::from_second(1_700_000_000).unwrap();
    let mut status = BareMetalHostStatus {
        error_count: 2,
        error_message: "BMC refused the credentials".into(),
        error_type: Some(ErrorType::Registration),
        operational_status: OperationalStatus::Error,
        powered_on: true,
        provisioning: ProvisionStatus {
            id: "0b7d0b7e-1111-2222-3333-444455556666".into(),
            state: ProvisioningState::PoweringOffBeforeDelete,
            boot_mode: Some(BootMode::UefiSecureBoot),
            image: Some(Image {
                url: "http://x/img.raw".into(),
                checksum: Some("abc".into()),
                checksum_type: Some(ChecksumType::Sha512),
                format: Some(ImageFormat::Raw),
                oci_auth_secret_name: None,
            }),
            root_device_hints: Some(RootDeviceHints {
                device_name: Some("/dev/vda".into()),
                min_size_gigabytes: Some(10),
                ..Default::default()
            }),
            ..Default::default()
        },
        last_updated: Some(Time(now)),
        operation_history: Some(OperationHistory {
            inspect: Some(OperationMetric {
                start: Some(Time(now)),
                end: None,
            }),
            ..Default::default()
        }),
        hardware: Some(HardwareDetails {
            ram_mebibytes: Some(2048),
            hostname: Some("h".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    for t in conditions::ALL {
        conditions::set_condition(
            &mut status.conditions,
            t,
            ConditionStatus::False,
            "RegistrationError",
            "BMC refused the credentials",
            now,
            Some(1),
        );
    }
    let doc = json!({
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {"name": "h"},
        "spec": {"online": true},
        "status": serde_json::to_value(&status)?,
    });
    let errs = validation_errors(
        &validator(&schema_of(&metal3_crd("metal3.io_baremetalhosts.yaml")?)),
        &doc,
    );
    assert!(errs.is_empty(), "{errs:?}");
    let back: BareMetalHost = serde_json::from_value(doc)?;
    assert_eq!(back.status.as_ref(), Some(&status));
    Ok(())
}

#[test]
fn hardware_data_from_agent_validates_against_metal3() -> Result<()> {
    let wire: agent_proto::HardwareDetails = serde_json::from_value(json!({
        "systemVendor": {"manufacturer": "QEMU", "productName": "Standard PC", "serialNumber": "1"},
        "firmware": {"bios": {"date": "04/01/2014", "vendor": "SeaBIOS", "version": "1.16"}},
        "ramMebibytes": 4096,
        "nics": [{"name": "eth0", "model": "0x1af4 0x0001", "mac": "52:54:00:12:34:56",
                  "ip": "192.0.2.10", "speedGbps": 1, "vlanId": 0, "pxe": true,
                  "vlans": [{"id": 10, "name": "v10"}],
                  "lldp": {"switchID": "s", "portID": "p", "switchSystemName": "n"},
                  "pciAddress": "0000:00:03.0"}],
        "storage": [{"name": "/dev/vda", "alternateNames": ["/dev/disk/by-path/x"],
                     "rotational": false, "type": "SSD", "sizeBytes": 10737418240u64,
                     "serialNumber": "s", "hctl": "0:0:0:0"}],
        "cpu": {"arch": "x86_64", "model": "QEMU", "clockMegahertz": 2400.5,
                "flags": ["fpu"], "count": 2},
        "hostname": "localhost"
    }))?;
    let hd = HardwareData::new(
        "host-0",
        controller_api::HardwareDataSpec {
            hardware: Some(wire.into()),
        },
    );
    let doc = serde_json::to_value(&hd)?;
    for (who, crd) in [
        ("ours", our_crd("metal3.io_hardwaredata.yaml")),
        ("metal3", metal3_crd("metal3.io_hardwaredata.yaml")?),
    ] {
        let errs = validation_errors(&validator(&schema_of(&crd)), &doc);
        assert!(errs.is_empty(), "{who}: {errs:?}");
    }
    Ok(())
}

// ---- (d) structural compatibility with metal3's CRD ----

/// Deliberate differences from metal3's schema, each with its reason.
const ALLOWED: &[(&str, &str)] = &[(
    // kube-derive makes `spec` required. A spec-less host would fail to deserialize and break
    // the controller's watch; metal3 requires `spec.online` anyway, so no working manifest
    // lacks a spec.
    "",
    "required: ours requires \"spec\", metal3 does not",
)];

fn unexpected(diffs: Vec<Difference>) -> Vec<String> {
    diffs
        .into_iter()
        .filter(|d| !ALLOWED.iter().any(|(p, w)| d.path == *p && d.what == *w))
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn schemas_are_structurally_metal3s() -> Result<()> {
    for file in [
        "metal3.io_baremetalhosts.yaml",
        "metal3.io_hardwaredata.yaml",
    ] {
        let diffs = compat::compare(&schema_of(&metal3_crd(file)?), &schema_of(&our_crd(file)));
        let diffs = unexpected(diffs);
        assert!(diffs.is_empty(), "{file}:\n{}", diffs.join("\n"));
    }
    Ok(())
}

#[test]
fn crd_names_columns_and_subresources_are_metal3s() -> Result<()> {
    for file in [
        "metal3.io_baremetalhosts.yaml",
        "metal3.io_hardwaredata.yaml",
    ] {
        let theirs = metal3_crd(file)?;
        let ours = our_crd(file);
        assert_eq!(
            ours["metadata"]["name"], theirs["metadata"]["name"],
            "{file}"
        );
        for key in ["group", "names", "scope"] {
            assert_eq!(ours["spec"][key], theirs["spec"][key], "{file}: spec.{key}");
        }
        let (tv, ov) = (&theirs["spec"]["versions"][0], &ours["spec"]["versions"][0]);
        for key in ["name", "served", "storage", "additionalPrinterColumns"] {
            assert_eq!(ov[key], tv[key], "{file}: versions[0].{key}");
        }
        assert_eq!(
            ov["subresources"].get("status").is_some(),
            tv["subresources"].get("status").is_some(),
            "{file}: status subresource"
        );
    }
    Ok(())
}

#[test]
fn a_changed_schema_is_caught() -> Result<()> {
    // The comparison really runs on our generated schema: perturb it and it must complain.
    let theirs = schema_of(&metal3_crd("metal3.io_baremetalhosts.yaml")?);
    let mut ours = schema_of(&our_crd("metal3.io_baremetalhosts.yaml"));
    ours["properties"]["spec"]["properties"]["bootMode"]["enum"] = json!(["UEFI", "legacy"]);
    ours["properties"]["status"]["properties"]["errorCount"]
        .as_object_mut()
        .unwrap()
        .remove("default");
    ours["properties"]["spec"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("taints");
    let diffs = unexpected(compat::compare(&theirs, &ours));
    assert_eq!(diffs.len(), 3, "{diffs:#?}");
    Ok(())
}
