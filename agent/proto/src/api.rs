//! The agent API of ARCHITECTURE.md: what the ramdisk agent and the controller say to each other
//! once the agent's network is up. Agent-initiated HTTPS with JSON bodies; the agent pins the
//! controller's CA by the fingerprint on its kernel command line.
//!
//! | call | auth | body → reply |
//! |---|---|---|
//! | `POST /v1/agent/enroll` | boot token (server-authenticated TLS only) | [`Enroll`] → [`Enrolled`] |
//! | `POST /v1/agent/heartbeat` | client certificate | [`Heartbeat`] → [`HeartbeatReply`] (long poll) |
//! | `POST /v1/agent/events` | client certificate | [`Events`] → `204` |
//! | `POST /v1/agent/renew` | client certificate | [`Renew`] → [`Enrolled`] (a fresh certificate for the same host) |
//!
//! The host an authenticated call acts for is the one its client certificate names, never
//! anything in a body. Bodies may carry `host` (what the agent believes it is): a mismatch is
//! refused with `wrong-host`, so a confused agent learns it rather than acting for nobody.
//!
//! Errors come back as a non-2xx status with an [`ApiError`] body.
//!
//! Commands carry IDs and are idempotent: an agent that is handed a command ID it has already
//! started or finished never runs it again — it reports that command's state instead — so a
//! retried or duplicated delivery (a controller restart, a lost reply) never writes a disk twice.

use serde::{Deserialize, Serialize};

use crate::{FullInventory, Progress};

/// `POST /v1/agent/enroll`: the one-time boot token, a certificate signing request, and who the
/// agent is. The token was minted for one host and one power-on; it works once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enroll {
    /// [`crate::PROTOCOL_VERSION`].
    pub protocol: u32,
    /// `ferrox.token=` from the kernel command line.
    pub token: String,
    /// PKCS#10 CSR, PEM, for a key the agent generated and never sends.
    pub csr_pem: String,
    /// The MAC of the interface that booted (BOOTIF) or got the address.
    pub boot_mac: String,
    /// The address the agent got by DHCP.
    pub address: String,
    /// Every NIC's permanent MAC.
    #[serde(default)]
    pub macs: Vec<String>,
    /// SMBIOS system UUID, when the firmware has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_uuid: Option<String>,
    /// SMBIOS system serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_serial: Option<String>,
    /// Seconds since the kernel started when the agent became ready.
    #[serde(default)]
    pub ready_after_seconds: f64,
}

/// `POST /v1/agent/renew`: a new certificate for the key in `csr_pem`, for the host the
/// presented (still valid) certificate names. Agents renew before `not_after_unix`, since the
/// boot token cannot be used twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Renew {
    /// [`crate::PROTOCOL_VERSION`].
    pub protocol: u32,
    /// PKCS#10 CSR, PEM.
    pub csr_pem: String,
}

/// The reply to [`Enroll`] and [`Renew`]: a short-lived client certificate bound to this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrolled {
    /// `namespace/name` of the BareMetalHost this agent acts for; the certificate says the same.
    pub host: String,
    /// The client certificate, PEM, signed by the controller's CA.
    pub certificate_pem: String,
    /// When the certificate stops working (seconds since the Unix epoch).
    pub not_after_unix: u64,
    /// How long the agent should wait between heartbeats when no command is pending, seconds.
    pub heartbeat_seconds: u32,
}

/// `POST /v1/agent/heartbeat`: "I am alive; what next?". The controller holds the request up to
/// `wait_seconds` (long poll) and answers as soon as a command is ready.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// [`crate::PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The command the agent is running, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
    /// Longest the agent is willing to wait for an answer, seconds (the controller may answer sooner).
    pub wait_seconds: u32,
    /// `namespace/name` the agent enrolled as ([`Enrolled::host`]); checked against the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// The reply to [`Heartbeat`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatReply {
    /// What to do next; `None`: nothing, heartbeat again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Command>,
}

/// One unit of work for the agent. Idempotent by `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    /// Unique per host and operation; a repeated ID is never run twice.
    pub id: String,
    /// What to do.
    pub action: Action,
}

/// What a [`Command`] asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Action {
    /// Take the inventory and report it ([`Outcome::Inventory`]).
    Inspect,
    /// DESTRUCTIVE: erase disks.
    #[serde(rename_all = "camelCase")]
    Wipe {
        /// `metadata` or `full`.
        mode: WipeMode,
        /// Device paths; empty means every disk the agent may erase.
        #[serde(default)]
        devices: Vec<String>,
    },
    /// DESTRUCTIVE: stream an image onto the root device, then write the config drive.
    #[serde(rename_all = "camelCase")]
    WriteImage(WriteImage),
    /// Power the machine off (the agent ends).
    PowerOff,
    /// Reboot the machine (the agent ends).
    Reboot,
}

/// Wipe depth (metal3 `automatedCleaningMode: metadata`, or a full erase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WipeMode {
    /// Signatures, partition tables, first and last MiB.
    Metadata,
    /// The fastest complete erase each device supports.
    Full,
}

/// Image write parameters: metal3's `spec.image` plus the resolved root device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteImage {
    /// Image URL (http or https).
    pub url: String,
    /// `ALGO:HEX` (sha256, sha512, md5) or `ALGO:URL` of a checksum file.
    pub checksum: String,
    /// `raw`, `qcow2`, or `None` to detect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// metal3 `rootDeviceHints`, as the user wrote them (JSON object); `None`: the first disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device_hints: Option<serde_json::Value>,
    /// The config drive (config-2 filesystem image, gzip then base64, as Ironic passes it), written
    /// to a new partition at the end of the disk after the image verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_drive: Option<String>,
}

/// `POST /v1/agent/events`: what happened since the last call. Sent in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Events {
    /// Oldest first.
    pub events: Vec<Event>,
    /// `namespace/name` the agent enrolled as ([`Enrolled::host`]); checked against the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// One thing the agent reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Event {
    /// A command is running and has made progress.
    #[serde(rename_all = "camelCase")]
    Progress {
        /// [`Command::id`].
        command: String,
        /// Bytes, rate, phase.
        progress: Progress,
    },
    /// A command finished.
    #[serde(rename_all = "camelCase")]
    Done {
        /// [`Command::id`].
        command: String,
        /// How it ended.
        outcome: Outcome,
    },
    /// A log line for the host's record (the console has it too).
    #[serde(rename_all = "camelCase")]
    Log {
        /// `info`, `warn`, `error`.
        level: String,
        /// The line.
        message: String,
    },
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Outcome {
    /// Inspect succeeded.
    Inventory {
        /// What the agent found.
        inventory: Box<FullInventory>,
    },
    /// Wipe, write-image, power-off or reboot succeeded.
    #[serde(rename_all = "camelCase")]
    Ok {
        /// What was done, for the host's record (e.g. `wrote 1.0 GiB to /dev/sda, sha256 verified`).
        #[serde(default)]
        summary: String,
        /// The device written, for write-image.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
    },
    /// The command failed.
    #[serde(rename_all = "camelCase")]
    Failed {
        /// Machine-readable class: `image-download`, `checksum-mismatch`, `no-root-device`,
        /// `wipe`, `write`, `config-drive`, `bad-command`.
        reason: String,
        /// One readable line: what failed, on which device, and why (the whole error chain).
        message: String,
    },
}

/// A non-2xx reply's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    /// Machine-readable: `bad-token`, `token-used`, `token-expired`, `no-certificate`,
    /// `wrong-host`, `bad-request`, `too-large`, `protocol`, `not-found`, `internal`.
    pub code: String,
    /// One readable line.
    pub message: String,
}
