//! The controller's own view of a host: what the user asked for ([`HostSpec`], distilled from a
//! BareMetalHost and its annotations) and what the controller knows and has done ([`HostStatus`],
//! persisted after every step). The state machine in [`crate::machine`] works on these alone, so it
//! stays a pure function; conversion to and from metal3's objects happens at the edges.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// `namespace/name` of a BareMetalHost.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostKey {
    /// Kubernetes namespace (`default` when the manifest has none).
    pub namespace: String,
    /// Object name.
    pub name: String,
}

impl HostKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        HostKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Parses `namespace/name`.
    pub fn parse(s: &str) -> Option<Self> {
        let (ns, name) = s.split_once('/')?;
        (!ns.is_empty() && !name.is_empty() && !name.contains('/')).then(|| HostKey::new(ns, name))
    }
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// metal3's `status.provisioning.state`, spelled as metal3 spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum State {
    /// Not looked at yet (`""` in metal3).
    #[default]
    #[serde(rename = "")]
    None,
    /// No BMC address: nothing can be managed.
    #[serde(rename = "unmanaged")]
    Unmanaged,
    /// Checking the BMC and its credentials.
    #[serde(rename = "registering")]
    Registering,
    /// The agent is booted and takes the inventory.
    #[serde(rename = "inspecting")]
    Inspecting,
    /// Inspected, clean, waiting for an image.
    #[serde(rename = "available")]
    Available,
    /// Writing the image.
    #[serde(rename = "provisioning")]
    Provisioning,
    /// The image is on the disk and the host boots from it.
    #[serde(rename = "provisioned")]
    Provisioned,
    /// The user says the host was provisioned by other means; only power is managed.
    #[serde(rename = "externally provisioned")]
    ExternallyProvisioned,
    /// Cleaning after the image was removed.
    #[serde(rename = "deprovisioning")]
    Deprovisioning,
    /// Deleted by the user: powering the host off first.
    #[serde(rename = "powering off before delete")]
    PoweringOffBeforeDelete,
    /// Deleted by the user: removing what the controller holds for it.
    #[serde(rename = "deleting")]
    Deleting,
}

impl State {
    /// metal3's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            State::None => "",
            State::Unmanaged => "unmanaged",
            State::Registering => "registering",
            State::Inspecting => "inspecting",
            State::Available => "available",
            State::Provisioning => "provisioning",
            State::Provisioned => "provisioned",
            State::ExternallyProvisioned => "externally provisioned",
            State::Deprovisioning => "deprovisioning",
            State::PoweringOffBeforeDelete => "powering off before delete",
            State::Deleting => "deleting",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// metal3's `status.errorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorType {
    /// The BMC could not be reached or its credentials are wrong.
    #[serde(rename = "registration error")]
    Registration,
    /// Inspection failed (the agent did not come up, or its inventory could not be taken).
    #[serde(rename = "inspection error")]
    Inspection,
    /// Writing the image failed.
    #[serde(rename = "provisioning error")]
    Provisioning,
    /// Cleaning failed.
    #[serde(rename = "preparation error")]
    Preparation,
    /// A power action failed.
    #[serde(rename = "power management error")]
    PowerManagement,
    /// Registration failed for a host already provisioned.
    #[serde(rename = "provisioned registration error")]
    ProvisionedRegistration,
}

impl ErrorType {
    /// The Event reason for an error of this kind (CamelCase, as Kubernetes reasons are).
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Registration | ErrorType::ProvisionedRegistration => "RegistrationError",
            ErrorType::Inspection => "InspectionError",
            ErrorType::Provisioning => "ProvisioningError",
            ErrorType::Preparation => "PreparationError",
            ErrorType::PowerManagement => "PowerManagementError",
        }
    }

    /// metal3's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Registration => "registration error",
            ErrorType::Inspection => "inspection error",
            ErrorType::Provisioning => "provisioning error",
            ErrorType::Preparation => "preparation error",
            ErrorType::PowerManagement => "power management error",
            ErrorType::ProvisionedRegistration => "provisioned registration error",
        }
    }
}

/// metal3's `status.operationalStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Operational {
    /// All is well.
    #[default]
    #[serde(rename = "OK")]
    Ok,
    /// Known only from the network; no BMC details.
    #[serde(rename = "discovered")]
    Discovered,
    /// The last operation failed; see errorType/errorMessage.
    #[serde(rename = "error")]
    Error,
    /// Waiting for a provisioning slot (the concurrency limit).
    #[serde(rename = "delayed")]
    Delayed,
    /// `baremetalhost.metal3.io/detached`: the controller leaves the host alone.
    #[serde(rename = "detached")]
    Detached,
}

impl Operational {
    /// metal3's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Operational::Ok => "OK",
            Operational::Discovered => "discovered",
            Operational::Error => "error",
            Operational::Delayed => "delayed",
            Operational::Detached => "detached",
        }
    }
}

/// `spec.automatedCleaningMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CleaningMode {
    /// Wipe metadata when deprovisioning (metal3's default).
    #[default]
    Metadata,
    /// Do not clean.
    Disabled,
}

/// `spec.bootMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum BootMode {
    /// UEFI (metal3's default).
    #[default]
    #[serde(rename = "UEFI")]
    Uefi,
    /// UEFI with secure boot.
    #[serde(rename = "UEFISecureBoot")]
    UefiSecureBoot,
    /// Legacy BIOS.
    #[serde(rename = "legacy")]
    Legacy,
}

/// `spec.image`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// Where to fetch it.
    pub url: String,
    /// The checksum, or the URL of a checksum file.
    pub checksum: String,
    /// `sha256`, `sha512`, `md5`, `auto` or none (metal3: md5 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<String>,
    /// `raw`, `qcow2`, … or none to detect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// `spec.bmc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BmcSpec {
    /// e.g. `redfish+https://10.0.0.5/redfish/v1/Systems/1`.
    pub address: String,
    /// Name of the Secret (same namespace) with `username` and `password`.
    pub credentials_name: String,
    /// `disableCertificateVerification`.
    #[serde(default)]
    pub disable_certificate_verification: bool,
}

/// The `inspect.metal3.io` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum InspectRequest {
    /// No annotation: inspect once, when registering.
    #[default]
    Default,
    /// `inspect.metal3.io: disabled`: never inspect.
    Disabled,
    /// `inspect.metal3.io: ""` on an available host: inspect again.
    Again,
}

/// What the user asked for: the parts of a BareMetalHost (spec and annotations) the controller acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct HostSpec {
    /// `metadata.uid` (or one the embedded store assigned).
    pub uid: String,
    /// `metadata.generation`.
    pub generation: i64,
    /// `spec.online`.
    pub online: bool,
    /// `spec.bmc`, if any.
    pub bmc: Option<BmcSpec>,
    /// `spec.bootMACAddress`, lower case with colons.
    pub boot_mac: Option<String>,
    /// `spec.bootMode`.
    pub boot_mode: BootMode,
    /// `spec.image`.
    pub image: Option<Image>,
    /// `spec.rootDeviceHints`, as written.
    pub root_device_hints: Option<serde_json::Value>,
    /// `spec.automatedCleaningMode`.
    pub cleaning: CleaningMode,
    /// `spec.userData`: Secret with the cloud-init user data (key `userData` or `value`).
    pub user_data: Option<SecretRef>,
    /// `spec.networkData`: Secret with network_data.json (key `networkData` or `value`).
    pub network_data: Option<SecretRef>,
    /// `spec.metaData`: Secret with extra meta_data keys.
    pub meta_data: Option<SecretRef>,
    /// `spec.externallyProvisioned`.
    pub externally_provisioned: bool,
    /// `spec.disablePowerOff`: the host is never powered off (boots use resets, deletion
    /// leaves it on, `online: false` is refused), as metal3 does it.
    #[serde(default)]
    pub disable_power_off: bool,
    /// `inspect.metal3.io`.
    pub inspect: InspectRequest,
    /// Keys of `reboot.metal3.io` / `reboot.metal3.io/KEY` annotations present.
    pub reboot_requests: BTreeSet<String>,
    /// `baremetalhost.metal3.io/paused`.
    pub paused: bool,
    /// `baremetalhost.metal3.io/detached`.
    pub detached: bool,
    /// The object is being deleted (deletionTimestamp set, or its manifest was removed).
    pub deleting: bool,
}

/// A reference to a Secret (`spec.userData` etc.).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Namespace (the host's when the reference has none).
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// An error as metal3 shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostError {
    /// `errorType`.
    pub kind: ErrorType,
    /// `errorMessage`: one readable line.
    pub message: String,
}

/// Why the ramdisk agent is being booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AgentPhase {
    /// Not booted (or lost).
    Down,
    /// PXE boot into the ramdisk requested at `since`; waiting for it to enroll.
    Booting,
    /// Enrolled and heartbeating.
    Up,
}

/// The ramdisk agent of this host, as the controller knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// Where it is.
    pub phase: AgentPhase,
    /// When it entered that phase (Unix ms).
    pub since_ms: u64,
    /// Power-on counter: each boot into the agent gets a new one (and a new token).
    pub boot: u32,
    /// Last heartbeat or event (Unix ms).
    pub last_seen_ms: u64,
    /// The enrollment the agent now up made (random; in its certificate): only that agent is
    /// given commands and heard. Absent before the first enrollment, and in records from before
    /// sessions existed (whose agents' certificates carry none either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl Default for AgentStatus {
    fn default() -> Self {
        AgentStatus {
            phase: AgentPhase::Down,
            since_ms: 0,
            boot: 0,
            last_seen_ms: 0,
            session: None,
        }
    }
}

/// Kind of agent operation the controller is waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OpKind {
    /// Inventory.
    Inspect,
    /// Metadata wipe (cleaning).
    Clean,
    /// Image write + config drive.
    Write,
}

/// An agent command in flight. Persisted before the command is offered, so a controller restart
/// offers the same ID again and the agent never runs it twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Op {
    /// Command ID.
    pub id: String,
    /// What it does.
    pub kind: OpKind,
    /// The agent boot it was issued to.
    pub boot: u32,
    /// When it was issued (Unix ms).
    pub started_ms: u64,
    /// The command as rendered when issued: offered unchanged until it ends.
    pub command: agent_proto::Command,
    /// For a write: the `spec.image` it was rendered from, so a spec edited while it runs is
    /// noticed, and what is recorded as provisioned is what was written. (Absent in records
    /// from before it existed: then the current spec is taken.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// Latest progress report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<agent_proto::Progress>,
    /// How it ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<agent_proto::Outcome>,
}

/// Power as last observed or commanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Power {
    /// Unknown (never read).
    Unknown,
    /// On.
    On,
    /// Off.
    Off,
}

/// A graceful shutdown in progress: asked at `since_ms`; the power state is read again at
/// `check_ms`, and the host is powered off hard when the OS has not shut down in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownWait {
    pub since_ms: u64,
    pub check_ms: u64,
}

/// Everything the controller knows and has done for one host. Persisted after every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    /// `status.provisioning.state`.
    pub state: State,
    /// When `state` was entered (Unix ms).
    pub state_since_ms: u64,
    /// `status.operationalStatus`.
    pub operational: Operational,
    /// `errorType` + `errorMessage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<HostError>,
    /// `errorCount`: consecutive failures of the current operation.
    pub error_count: u32,
    /// Do not retry before (Unix ms).
    pub retry_at_ms: u64,
    /// `status.poweredOn`, as last read or commanded.
    pub power: Power,
    /// A graceful shutdown was asked of the OS and the host has not been seen off yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<ShutdownWait>,
    /// The agent.
    pub agent: AgentStatus,
    /// The one-time token of the current agent boot, until the agent redeems it (netboot puts it
    /// in this host's iPXE script only). The database is as private as the CA key beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_token: Option<String>,
    /// The agent command in flight, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<Op>,
    /// Commands issued so far (for unique IDs).
    pub ops_issued: u32,
    /// Inventory from the last inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<agent_proto::FullInventory>,
    /// `status.provisioning.image`: what is on the disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned_image: Option<Image>,
    /// The device the image went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device: Option<String>,
    /// Reboot annotation keys already acted on.
    #[serde(default)]
    pub reboots_done: BTreeSet<String>,
    /// The current `inspect.metal3.io: ""` request was acted on (reset when the annotation goes).
    #[serde(default)]
    pub reinspected: bool,
    /// Per-phase durations (state name → ms), for operators and the lab's timings.
    #[serde(default)]
    pub timings: Vec<(String, u64)>,
    /// The spec generation this status was computed from.
    pub observed_generation: i64,
}

impl Default for HostStatus {
    fn default() -> Self {
        HostStatus {
            state: State::None,
            state_since_ms: 0,
            operational: Operational::Ok,
            error: None,
            error_count: 0,
            retry_at_ms: 0,
            power: Power::Unknown,
            shutdown: None,
            agent: AgentStatus::default(),
            boot_token: None,
            op: None,
            ops_issued: 0,
            hardware: None,
            provisioned_image: None,
            root_device: None,
            reboots_done: BTreeSet::new(),
            reinspected: false,
            timings: Vec::new(),
            observed_generation: 0,
        }
    }
}
