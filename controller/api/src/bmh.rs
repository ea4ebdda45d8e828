//! `BareMetalHost` (metal3.io/v1alpha1): spec, status and the string sets metal3 gives meaning
//! to (provisioning states, error types, operational status).
//!
//! Field names, types, enums, defaults and required lists follow metal3's CRD
//! (`config/base/crds/bases/metal3.io_baremetalhosts.yaml`) so existing manifests apply
//! unchanged and objects round-trip without losing fields; the tests in `tests/crd.rs` check
//! both against metal3's own files. Optional Go fields (`omitempty`, pointers) are `Option`s
//! here so an explicit `false` or `[]` survives a read-modify-write.

use k8s_openapi::api::core::v1::{ObjectReference, SecretReference, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::hardware::HardwareDetails;

/// metal3's finalizer on hosts: deletion waits until the host is deprovisioned.
pub const FINALIZER: &str = "baremetalhost.metal3.io";
/// Annotation that pauses reconciliation of a host.
pub const PAUSED_ANNOTATION: &str = "baremetalhost.metal3.io/paused";
/// Annotation that detaches a host from its provisioner.
pub const DETACHED_ANNOTATION: &str = "baremetalhost.metal3.io/detached";
/// Annotation holding a copy of the status, used when hosts are moved between clusters.
pub const STATUS_ANNOTATION: &str = "baremetalhost.metal3.io/status";
/// Prefix of the reboot annotations (`reboot.metal3.io` or `reboot.metal3.io/<requester>`).
pub const REBOOT_ANNOTATION_PREFIX: &str = "reboot.metal3.io";
/// Annotation that disables inspection (`inspect.metal3.io: disabled`).
pub const INSPECT_ANNOTATION: &str = "inspect.metal3.io";
/// Annotation carrying hardware details when inspection is disabled.
pub const HARDWARE_DETAILS_ANNOTATION: &str = "inspect.metal3.io/hardwaredetails";

const MAC_PATTERN: &str = "[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}";
const MAC_PATTERN_ANCHORED: &str = "^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$";

/// BareMetalHostSpec defines the desired state of BareMetalHost.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "metal3.io",
    version = "v1alpha1",
    kind = "BareMetalHost",
    plural = "baremetalhosts",
    singular = "baremetalhost",
    shortname = "bmh",
    shortname = "bmhost",
    namespaced,
    status = "BareMetalHostStatus",
    doc = "BareMetalHost is the Schema for the baremetalhosts API",
    printcolumn = r#"{"name": "Status", "type": "string", "jsonPath": ".status.operationalStatus", "description": "Operational status", "priority": 1}"#,
    printcolumn = r#"{"name": "State", "type": "string", "jsonPath": ".status.provisioning.state", "description": "Provisioning status"}"#,
    printcolumn = r#"{"name": "Consumer", "type": "string", "jsonPath": ".spec.consumerRef.name", "description": "Consumer using this host"}"#,
    printcolumn = r#"{"name": "BMC", "type": "string", "jsonPath": ".spec.bmc.address", "description": "Address of management controller", "priority": 1}"#,
    printcolumn = r#"{"name": "Online", "type": "string", "jsonPath": ".spec.online", "description": "Whether the host is online or not"}"#,
    printcolumn = r#"{"name": "Error", "type": "string", "jsonPath": ".status.errorType", "description": "Type of the most recent error"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "description": "Time duration since creation of BaremetalHost"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct BareMetalHostSpec {
    /// CPU architecture of the host, e.g. "x86_64" or "aarch64". If unset, eventually
    /// populated by inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,

    /// When set to disabled, automated cleaning will be skipped during provisioning and
    /// deprovisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "metadata"))]
    pub automated_cleaning_mode: Option<AutomatedCleaningMode>,

    /// How do we connect to the BMC (Baseboard Management Controller) on the host?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc: Option<BmcDetails>,

    /// The MAC address of the NIC used for provisioning the host. In case of network boot,
    /// this is the MAC address of the PXE booting interface. The MAC address of the BMC must
    /// never be used here!
    #[serde(
        default,
        rename = "bootMACAddress",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("pattern" = MAC_PATTERN))]
    pub boot_mac_address: Option<String>,

    /// Select the method of initializing the hardware during boot. Defaults to UEFI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<BootMode>,

    /// ConsumerRef can be used to store information about something that is using a host.
    /// When it is not empty, the host is considered "in use".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-map-type" = "atomic"))]
    pub consumer_ref: Option<ObjectReference>,

    /// A custom deploy procedure. Setting this field triggers provisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_deploy: Option<CustomDeploy>,

    /// Description is a human-entered text used to help identify the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// When set to true, power off of the node will be disabled, instead, a reboot will be
    /// used in place of power on/off
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_power_off: Option<bool>,

    /// ExternallyProvisioned means something else has provisioned the image running on the
    /// host, and the operator should only manage the power status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub externally_provisioned: Option<bool>,

    /// Firmware (BIOS) configuration for bare metal server. Deprecated: no longer implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<FirmwareConfig>,

    /// What is the name of the hardware profile for this host? Hardware profiles are
    /// deprecated and should not be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_profile: Option<String>,

    /// Image holds the details of the image to be provisioned. Populating the image will cause
    /// the host to start provisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,

    /// Specifies the mode for host inspection: "disabled", "agent" or "fast".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspection_mode: Option<InspectionMode>,

    /// MetaData holds the reference to the Secret containing host metadata which is passed to
    /// the Config Drive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-map-type" = "atomic"))]
    pub meta_data: Option<SecretReference>,

    /// NetworkData holds the reference to the Secret containing network configuration which is
    /// passed to the Config Drive and interpreted by the first boot software such as
    /// cloud-init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-map-type" = "atomic"))]
    pub network_data: Option<SecretReference>,

    /// NetworkInterfaces defines the network configuration for each interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interfaces: Option<Vec<NetworkInterface>>,

    /// Should the host be powered on? If the host is currently in a stable state (e.g.
    /// provisioned), its power state will be forced to match this value.
    pub online: bool,

    /// PreprovisioningNetworkDataName is the name of the Secret in the local namespace
    /// containing network configuration which is passed to the preprovisioning image, and to
    /// the Config Drive if not overridden by specifying NetworkData.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprovisioning_network_data_name: Option<String>,

    /// RAID configuration for bare metal server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid: Option<RaidConfig>,

    /// Provide guidance about how to choose the device for the image being provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device_hints: Option<RootDeviceHints>,

    /// Taints is the full, authoritative list of taints to apply to the corresponding Machine.
    /// Deprecated: the Taints field was never actually implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taints: Option<Vec<Taint>>,

    /// UserData holds the reference to the Secret containing the user data which is passed to
    /// the Config Drive and interpreted by the first-boot software such as cloud-init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-map-type" = "atomic"))]
    pub user_data: Option<SecretReference>,
}

/// How to reach the BMC.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct BmcDetails {
    /// Address holds the URL for accessing the controller on the network. The scheme part
    /// designates the driver to use with the host.
    pub address: String,
    /// The name of the secret containing the BMC credentials (requires keys "username" and
    /// "password").
    pub credentials_name: String,
    /// DisableCertificateVerification disables verification of server certificates when using
    /// HTTPS to connect to the BMC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_certificate_verification: Option<bool>,
}

/// Automated cleaning mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AutomatedCleaningMode {
    /// Wipe partition tables and filesystem signatures (the default).
    Metadata,
    /// Skip automated cleaning.
    Disabled,
}

/// Boot mode of the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BootMode {
    #[serde(rename = "UEFI")]
    Uefi,
    #[serde(rename = "UEFISecureBoot")]
    UefiSecureBoot,
    #[serde(rename = "legacy")]
    Legacy,
}

/// Inspection mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InspectionMode {
    /// No inspection will be performed.
    Disabled,
    /// Normal agent-based inspection.
    Agent,
    /// Out-of-band inspection via the BMC, no ramdisk boot.
    Fast,
}

/// A custom deploy procedure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct CustomDeploy {
    /// Custom deploy method name. This name is specific to the deploy ramdisk used.
    pub method: String,
}

/// Firmware (BIOS) configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct FirmwareConfig {
    /// Allows a single physical processor core to appear as several logical processors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [true, false]))]
    pub simultaneous_multithreading_enabled: Option<bool>,
    /// SR-IOV support enables a hypervisor to create virtual instances of a PCI-express
    /// device, potentially increasing performance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [true, false]))]
    pub sriov_enabled: Option<bool>,
    /// Supports the virtualization of platform hardware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [true, false]))]
    pub virtualization_enabled: Option<bool>,
}

/// Image holds the details of an image either to be provisioned or that has been provisioned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct Image {
    /// Checksum is the checksum for the image. Required for all formats except for "live-iso"
    /// and OCI images (oci://).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// ChecksumType is the checksum algorithm for the image, e.g md5, sha256 or sha512. The
    /// special value "auto" can be used to detect the algorithm from the checksum. If missing,
    /// MD5 is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<ChecksumType>,
    /// Format contains the format of the image (raw, qcow2, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ImageFormat>,
    /// OCIAuthSecretName optionally names a Docker-config secret containing registry
    /// credentials for oci:// images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci_auth_secret_name: Option<String>,
    /// URL is a location of an image to deploy.
    pub url: String,
}

/// Checksum algorithm of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumType {
    Md5,
    Sha256,
    Sha512,
    /// Detect the algorithm from the checksum's length.
    Auto,
}

/// Disk format of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ImageFormat {
    Raw,
    Qcow2,
    Vdi,
    Vmdk,
    /// An ISO 9660 image live-booted, not written to disk.
    LiveIso,
}

/// Network configuration for one interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct NetworkInterface {
    /// HostNetworkAttachment references the HostNetworkAttachment for this interface
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network_attachment: Option<HostNetworkAttachmentRef>,
    /// MAC address of the network interface. Mutually exclusive with Name.
    #[serde(
        default,
        rename = "macAddress",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("pattern" = MAC_PATTERN_ANCHORED))]
    pub mac_address: Option<String>,
    /// Name of the network interface (e.g., "eth0", "ens1f0"). Mutually exclusive with
    /// MACAddress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = "^[a-zA-Z0-9._-]+$"))]
    pub name: Option<String>,
    /// SwitchPort defines the switch port on which this interface is attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_port: Option<SwitchPort>,
}

/// Reference to a HostNetworkAttachment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct HostNetworkAttachmentRef {
    /// Name of the HostNetworkAttachment resource
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 253))]
    pub name: Option<String>,
    /// Namespace of the HostNetworkAttachment (defaults to BMH namespace)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 63))]
    pub namespace: Option<String>,
}

/// The switch port an interface is attached to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::schema::strip_null)]
pub struct SwitchPort {
    /// PortID is expected to be the configuration name of the port in the switch management
    /// system.
    #[serde(rename = "portID")]
    pub port_id: String,
    /// SwitchID is expected to be the management MAC address of the switch
    #[serde(rename = "switchID")]
    #[schemars(extend("pattern" = MAC_PATTERN_ANCHORED))]
    pub switch_id: String,
}

/// RAID configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct RaidConfig {
    /// The list of logical disks for hardware RAID. `[]` clears all hardware RAID
    /// configuration.
    #[serde(
        default,
        rename = "hardwareRAIDVolumes",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("nullable" = true))]
    pub hardware_raid_volumes: Option<Vec<HardwareRaidVolume>>,
    /// The list of logical disks for software RAID (one or two devices).
    #[serde(
        default,
        rename = "softwareRAIDVolumes",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("nullable" = true, "maxItems" = 2))]
    pub software_raid_volumes: Option<Vec<SoftwareRaidVolume>>,
}

/// Hardware RAID levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HardwareRaidLevel {
    #[serde(rename = "0")]
    Raid0,
    #[serde(rename = "1")]
    Raid1,
    #[serde(rename = "2")]
    Raid2,
    #[serde(rename = "5")]
    Raid5,
    #[serde(rename = "6")]
    Raid6,
    #[serde(rename = "1+0")]
    Raid10,
    #[serde(rename = "5+0")]
    Raid50,
    #[serde(rename = "6+0")]
    Raid60,
}

/// Software RAID levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SoftwareRaidLevel {
    #[serde(rename = "0")]
    Raid0,
    #[serde(rename = "1")]
    Raid1,
    #[serde(rename = "1+0")]
    Raid10,
}

/// HardwareRAIDVolume defines the desired configuration of volume in hardware RAID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct HardwareRaidVolume {
    /// The name of the RAID controller to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// RAID level for the logical disk.
    pub level: HardwareRaidLevel,
    /// Name of the volume. Should be unique within the Node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 64))]
    pub name: Option<String>,
    /// Number of physical disks to use for the logical disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::go_int", extend("minimum" = 1))]
    pub number_of_physical_disks: Option<i64>,
    /// Optional list of physical disk names to be used for the hardware RAID volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_disks: Option<Vec<String>>,
    /// Select disks with only rotational (if set to true) or solid-state (if set to false)
    /// storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    /// Size of the logical disk to be created in GiB. 0 or unset: the maximum capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::go_int", extend("minimum" = 0))]
    pub size_gibibytes: Option<i64>,
}

/// SoftwareRAIDVolume defines the desired configuration of volume in software RAID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct SoftwareRaidVolume {
    /// RAID level for the logical disk: 0, 1 and 1+0.
    pub level: SoftwareRaidLevel,
    /// A list of device hints, the number of items should be greater than or equal to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minItems" = 2))]
    pub physical_disks: Option<Vec<RootDeviceHints>>,
    /// Setting this to true causes the installer to consider this volume as the root device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub root_volume: Option<bool>,
    /// Size of the logical disk to be created in GiB. 0 or unset: the maximum capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::go_int", extend("minimum" = 0))]
    pub size_gibibytes: Option<i64>,
}

/// RootDeviceHints holds the hints for specifying the storage location for the root
/// filesystem for the image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct RootDeviceHints {
    /// A Linux device name like "/dev/vda", or a by-path link to it. Must match exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// A SCSI bus address like 0:0:0:0. Must match exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hctl: Option<String>,
    /// The minimum size of the device in Gigabytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::go_int", extend("minimum" = 0))]
    pub min_size_gigabytes: Option<i64>,
    /// A vendor-specific device identifier. The hint can be a substring of the actual value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// True if the device should use spinning media, false otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    /// Device serial number. Must match exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// The name of the vendor or manufacturer of the device. Can be a substring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Unique storage identifier. Must match exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// Unique vendor storage identifier. Must match exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn_vendor_extension: Option<String>,
    /// Unique storage identifier with the vendor extension appended. Must match exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn_with_extension: Option<String>,
}

/// BareMetalHostStatus defines the observed state of BareMetalHost.
///
/// The fields metal3's CRD marks required (errorCount, errorMessage, operationalStatus,
/// poweredOn, provisioning with ID and state, provisioningFailCount) are not `Option`s, so a
/// status written from this type always carries them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct BareMetalHostStatus {
    /// Conditions (metav1.Condition): see [`crate::conditions`] for the types Ferrox sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,

    /// ErrorCount records how many times the host has encountered an error since the last
    /// successful operation
    #[schemars(schema_with = "crate::schema::go_int", extend("default" = 0))]
    pub error_count: i64,

    /// The last error message reported by the provisioning subsystem.
    pub error_message: String,

    /// ErrorType indicates the type of failure encountered when the OperationalStatus is
    /// OperationalStatusError
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<ErrorType>,

    /// The last credentials we were able to validate as working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub good_credentials: Option<CredentialsStatus>,

    /// The hardware discovered to exist on the host. Also written, in full, to the
    /// HardwareData object of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<HardwareDetails>,

    /// The name of the profile matching the hardware details. Deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_profile: Option<String>,

    /// The last image that was attempted to be provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_image: Option<Image>,

    /// LastUpdated identifies when this status was last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::date_time")]
    pub last_updated: Option<Time>,

    /// OperationHistory holds information about operations performed on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_history: Option<OperationHistory>,

    /// OperationalStatus holds the status of the host
    pub operational_status: OperationalStatus,

    /// The currently detected power state of the host.
    pub powered_on: bool,

    /// Information tracked by the provisioner.
    pub provisioning: ProvisionStatus,

    /// ProvisioningFailCount records how many times provisioning has failed consecutively for
    /// the current image.
    #[schemars(schema_with = "crate::schema::go_int", extend("default" = 0))]
    pub provisioning_fail_count: i64,

    /// The last credentials we sent to the provisioning backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tried_credentials: Option<CredentialsStatus>,
}

/// Reference and version of a BMC credentials Secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct CredentialsStatus {
    /// The Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-map-type" = "atomic"))]
    pub credentials: Option<SecretReference>,
    /// The Secret's resourceVersion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_version: Option<String>,
}

/// Operations performed on a host, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct OperationHistory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprovision: Option<OperationMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspect: Option<OperationMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision: Option<OperationMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<OperationMetric>,
}

/// OperationMetric contains metadata about an operation (inspection, provisioning, etc.) used
/// for tracking metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct OperationMetric {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::date_time", extend("nullable" = true))]
    pub end: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::date_time", extend("nullable" = true))]
    pub start: Option<Time>,
}

/// ProvisionStatus holds the state information for a single target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct ProvisionStatus {
    /// The host's ID from the underlying provisioning tool (Ferrox: the host's UID).
    #[serde(rename = "ID")]
    pub id: String,
    /// BootMode indicates the boot mode used to provision the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<BootMode>,
    /// Custom deploy procedure applied to the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_deploy: Option<CustomDeploy>,
    /// The firmware settings that have been applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<FirmwareConfig>,
    /// Image holds the details of the last image successfully provisioned to the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// The RAID configuration that has been applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid: Option<RaidConfig>,
    /// The root device hints used to provision the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device_hints: Option<RootDeviceHints>,
    /// An indicator for what the provisioner is doing with the host.
    #[schemars(schema_with = "crate::schema::plain_string")]
    pub state: ProvisioningState,
}

/// The states a host goes through, spelled exactly as metal3 spells them
/// (`status.provisioning.state`, shown as STATE by `kubectl get bmh`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProvisioningState {
    /// The state is unknown (a host not yet seen by the controller).
    #[default]
    #[serde(rename = "")]
    None,
    /// Not enough information to register the host (no BMC address or credentials).
    #[serde(rename = "unmanaged")]
    Unmanaged,
    /// The BMC access details are being validated.
    #[serde(rename = "registering")]
    Registering,
    /// Obsolete: profile matching is done on registration.
    #[serde(rename = "match profile")]
    MatchProfile,
    /// Existing configuration is removed and new configuration set (RAID, firmware).
    #[serde(rename = "preparing")]
    Preparing,
    /// Deprecated name for `available`.
    #[serde(rename = "ready")]
    Ready,
    /// The host can be consumed.
    #[serde(rename = "available")]
    Available,
    /// An image is being written to the host's disk.
    #[serde(rename = "provisioning")]
    Provisioning,
    /// An image has been written to the host's disk.
    #[serde(rename = "provisioned")]
    Provisioned,
    /// Something else manages the image on the host; only power is managed.
    #[serde(rename = "externally provisioned")]
    ExternallyProvisioned,
    /// The image is being removed from the host's disk.
    #[serde(rename = "deprovisioning")]
    Deprovisioning,
    /// The agent runs on the host to learn its hardware.
    #[serde(rename = "inspecting")]
    Inspecting,
    /// The host is being powered off before it is deleted.
    #[serde(rename = "powering off before delete")]
    PoweringOffBeforeDelete,
    /// The host is being cleaned up ready for deletion.
    #[serde(rename = "deleting")]
    Deleting,
}

impl ProvisioningState {
    /// Every state, in metal3's declaration order.
    pub const ALL: [ProvisioningState; 14] = [
        Self::None,
        Self::Unmanaged,
        Self::Registering,
        Self::MatchProfile,
        Self::Preparing,
        Self::Ready,
        Self::Available,
        Self::Provisioning,
        Self::Provisioned,
        Self::ExternallyProvisioned,
        Self::Deprovisioning,
        Self::Inspecting,
        Self::PoweringOffBeforeDelete,
        Self::Deleting,
    ];

    /// metal3's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Unmanaged => "unmanaged",
            Self::Registering => "registering",
            Self::MatchProfile => "match profile",
            Self::Preparing => "preparing",
            Self::Ready => "ready",
            Self::Available => "available",
            Self::Provisioning => "provisioning",
            Self::Provisioned => "provisioned",
            Self::ExternallyProvisioned => "externally provisioned",
            Self::Deprovisioning => "deprovisioning",
            Self::Inspecting => "inspecting",
            Self::PoweringOffBeforeDelete => "powering off before delete",
            Self::Deleting => "deleting",
        }
    }
}

impl std::fmt::Display for ProvisioningState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of problem that put a host in an error state (`status.errorType`), metal3's
/// exact strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ErrorType {
    /// An already provisioned host could not be registered again.
    #[serde(rename = "provisioned registration error")]
    ProvisionedRegistration,
    /// The BMC could not be reached or the credentials were refused.
    #[serde(rename = "registration error")]
    Registration,
    /// Obtaining hardware details from the host failed.
    #[serde(rename = "inspection error")]
    Inspection,
    /// Cleaning or preparation steps failed.
    #[serde(rename = "preparation error")]
    Preparation,
    /// Provisioning or deprovisioning failed.
    #[serde(rename = "provisioning error")]
    Provisioning,
    /// The host's power state could not be changed.
    #[serde(rename = "power management error")]
    PowerManagement,
    /// Servicing steps failed.
    #[serde(rename = "servicing error")]
    Servicing,
}

impl ErrorType {
    /// metal3's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProvisionedRegistration => "provisioned registration error",
            Self::Registration => "registration error",
            Self::Inspection => "inspection error",
            Self::Preparation => "preparation error",
            Self::Provisioning => "provisioning error",
            Self::PowerManagement => "power management error",
            Self::Servicing => "servicing error",
        }
    }
}

impl std::fmt::Display for ErrorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The host's operational status (`status.operationalStatus`), metal3's exact strings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OperationalStatus {
    /// Not yet set.
    #[default]
    #[serde(rename = "")]
    Unset,
    /// Configured correctly and manageable.
    #[serde(rename = "OK")]
    Ok,
    /// Only partially configured, e.g. the BMC address is known but not the credentials.
    #[serde(rename = "discovered")]
    Discovered,
    /// The host has an error (see errorType and errorMessage).
    #[serde(rename = "error")]
    Error,
    /// Provisioning is delayed to limit the number of hosts provisioning at once.
    #[serde(rename = "delayed")]
    Delayed,
    /// Detached from the provisioner by the detached annotation.
    #[serde(rename = "detached")]
    Detached,
    /// Undergoing servicing.
    #[serde(rename = "servicing")]
    Servicing,
}

impl OperationalStatus {
    /// metal3's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "",
            Self::Ok => "OK",
            Self::Discovered => "discovered",
            Self::Error => "error",
            Self::Delayed => "delayed",
            Self::Detached => "detached",
            Self::Servicing => "servicing",
        }
    }
}

impl std::fmt::Display for OperationalStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioning_state_spellings_match_serde() {
        for s in ProvisioningState::ALL {
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json, serde_json::Value::String(s.as_str().into()));
            let back: ProvisioningState = serde_json::from_value(json).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn metal3_spellings() {
        let cases: &[(&str, serde_json::Value)] = &[
            (
                "powering off before delete",
                serde_json::to_value(ProvisioningState::PoweringOffBeforeDelete).unwrap(),
            ),
            (
                "externally provisioned",
                serde_json::to_value(ProvisioningState::ExternallyProvisioned).unwrap(),
            ),
            (
                "registration error",
                serde_json::to_value(ErrorType::Registration).unwrap(),
            ),
            (
                "power management error",
                serde_json::to_value(ErrorType::PowerManagement).unwrap(),
            ),
            ("OK", serde_json::to_value(OperationalStatus::Ok).unwrap()),
            (
                "detached",
                serde_json::to_value(OperationalStatus::Detached).unwrap(),
            ),
        ];
        for (want, got) in cases {
            assert_eq!(got, &serde_json::Value::String((*want).into()));
        }
        for e in [
            ErrorType::ProvisionedRegistration,
            ErrorType::Registration,
            ErrorType::Inspection,
            ErrorType::Preparation,
            ErrorType::Provisioning,
            ErrorType::PowerManagement,
            ErrorType::Servicing,
        ] {
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
    }
}
