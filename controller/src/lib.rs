//! `ferrox-controller`: takes a metal3 BareMetalHost from a manifest to a provisioned machine and
//! back. The host state machine ([`machine`]) is a pure function over the controller's own model
//! ([`model`]); stores, the BMC driver, netboot and the agent API are thin shells around it.

pub mod machine;
pub mod model;
pub mod queue;
pub mod store;
