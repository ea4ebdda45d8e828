//! The ramdisk agent's first message to the controller, sent once its network is up and its
//! inventory taken: who it is, where it is, what it found. Provisional (plain JSON over the
//! controller URL from the kernel command line); the mTLS enrollment of ARCHITECTURE.md
//! replaces it when the controller's agent API exists.

use serde::{Deserialize, Serialize};

use crate::FullInventory;

/// `POST {controller}/v1/agent/hello`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// [`crate::PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The one-time boot token from the kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The MAC of the interface that got the address.
    pub mac: String,
    /// The address it got.
    pub address: String,
    /// Seconds since the kernel started when the agent became ready.
    pub ready_after_seconds: f64,
    /// What the agent found.
    pub inventory: FullInventory,
}
