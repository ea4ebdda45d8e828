//! Progress and result events the agent emits while it works on a disk.

use serde::{Deserialize, Serialize};

/// One progress report for a long operation on one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// What is running: `write-image`, `wipe`.
    pub operation: String,
    /// The device being written.
    pub device: String,
    /// Bytes done so far (downloaded bytes for an image write).
    pub bytes_done: u64,
    /// Total bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// Average rate since the start, bytes per second.
    pub rate_bytes_per_sec: u64,
    /// Phase within the operation (`downloading`, `verifying`, `zeroing`, `done`).
    pub phase: String,
}
