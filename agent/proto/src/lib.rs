//! The agent's contract: the types that cross the wire between `ferrox-agent` and
//! `ferrox-controller`. Serde only, so the controller can depend on it without pulling in
//! anything of the agent's, and the agent never sees kube-rs.
//!
//! [`HardwareDetails`] is metal3's `HardwareData.spec.hardware` field for field (camelCase, the
//! same optional fields), so the controller publishes it unchanged. Everything Ferrox knows
//! beyond metal3's shape lives in [`Extra`], a separate document (`inspect --full`).

pub mod api;
pub mod hello;
pub mod inventory;
pub mod progress;

pub use api::*;
pub use hello::Hello;
pub use inventory::*;
pub use progress::*;

/// Version of this wire contract. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 2;
