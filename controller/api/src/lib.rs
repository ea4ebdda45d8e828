//! metal3's `BareMetalHost` and `HardwareData` (metal3.io/v1alpha1) as Rust types, the CRDs
//! generated from them, and `kubectl get bmh`-style printing.
//!
//! This crate is the contract between Ferrox and everything that already speaks metal3:
//! manifests written for metal3 deserialize into [`BareMetalHost`] unchanged, and the CRDs
//! from [`crds`] (committed under `controller/deploy/crds/`, written by the `crdgen` binary)
//! match metal3's field for field. Use [`crds`] rather than `CustomResourceExt::crd()`
//! directly: it is what gets committed and tested.

pub mod bmh;
pub mod compat;
pub mod conditions;
pub mod hardware;
pub mod printing;
mod schema;

pub use bmh::{
    AutomatedCleaningMode, BareMetalHost, BareMetalHostSpec, BareMetalHostStatus, BmcDetails,
    BootMode, ChecksumType, CredentialsStatus, CustomDeploy, ErrorType, FirmwareConfig,
    HardwareRaidLevel, HardwareRaidVolume, HostNetworkAttachmentRef, Image, ImageFormat,
    InspectionMode, NetworkInterface, OperationHistory, OperationMetric, OperationalStatus,
    ProvisionStatus, ProvisioningState, RaidConfig, RootDeviceHints, SoftwareRaidLevel,
    SoftwareRaidVolume, SwitchPort,
};
pub use conditions::{set_condition, ConditionStatus};
pub use hardware::{hardware_data_for, HardwareData, HardwareDataSpec, HardwareDetails};
pub use printing::table;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Rendering a CRD failed.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("serializing CRD {name} to YAML")]
    Yaml {
        name: String,
        #[source]
        source: serde_yaml::Error,
    },
}

/// A generated CRD and the file name it is committed under in `controller/deploy/crds/`.
#[derive(Debug, Clone)]
pub struct GeneratedCrd {
    /// File name, metal3's: `metal3.io_baremetalhosts.yaml`, `metal3.io_hardwaredata.yaml`.
    pub file_name: &'static str,
    pub crd: CustomResourceDefinition,
}

/// The CRDs Ferrox installs, as committed: BareMetalHost then HardwareData.
pub fn crds() -> Vec<GeneratedCrd> {
    vec![
        GeneratedCrd {
            file_name: "metal3.io_baremetalhosts.yaml",
            crd: finish(BareMetalHost::crd()),
        },
        GeneratedCrd {
            file_name: "metal3.io_hardwaredata.yaml",
            crd: finish(HardwareData::crd()),
        },
    ]
}

/// What kube-derive's CRD lacks or adds at the top level, brought to what controller-gen
/// writes for metal3: the `apiVersion`/`kind`/`metadata` properties, no `title`, a status
/// that is optional but not nullable, and a `subresources` object even without status.
fn finish(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceSubresources, JSONSchemaProps,
    };
    crd.spec.names.list_kind = Some(format!("{}List", crd.spec.names.kind));
    for version in &mut crd.spec.versions {
        version
            .subresources
            .get_or_insert_with(CustomResourceSubresources::default);
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        root.title = None;
        let props = root.properties.get_or_insert_with(Default::default);
        if let Some(status) = props.get_mut("status") {
            status.nullable = None;
        }
        let string = |description: &str| JSONSchemaProps {
            description: Some(description.to_owned()),
            type_: Some("string".to_owned()),
            ..Default::default()
        };
        props.insert(
            "apiVersion".to_owned(),
            string(
                "APIVersion defines the versioned schema of this representation of an object. \
                 Servers should convert recognized schemas to the latest internal value, and may \
                 reject unrecognized values. More info: \
                 https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
            ),
        );
        props.insert(
            "kind".to_owned(),
            string(
                "Kind is a string value representing the REST resource this object represents. \
                 Servers may infer this from the endpoint the client submits requests to. Cannot \
                 be updated. In CamelCase. More info: \
                 https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
            ),
        );
        props.insert(
            "metadata".to_owned(),
            JSONSchemaProps {
                type_: Some("object".to_owned()),
                ..Default::default()
            },
        );
    }
    crd
}

/// The first line of every generated file.
pub const GENERATED_HEADER: &str =
    "# Generated from controller/api by `cargo run -p controller-api --bin crdgen`. Do not edit.\n";

/// A CRD as YAML, exactly as `crdgen` writes it.
pub fn render_yaml(crd: &CustomResourceDefinition) -> Result<String, CrdError> {
    let body = serde_yaml::to_string(crd).map_err(|source| CrdError::Yaml {
        name: crd.metadata.name.clone().unwrap_or_default(),
        source,
    })?;
    Ok(format!("{GENERATED_HEADER}---\n{body}"))
}
