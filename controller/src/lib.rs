//! `ferrox-controller`: takes a metal3 BareMetalHost from a manifest to a provisioned machine and
//! back. The host state machine ([`machine`]) is a pure function over the controller's own model
//! ([`model`]); stores, the BMC driver, netboot and the agent API are thin shells around it.

pub mod agents;
pub mod bmc;
pub mod configdrive;
pub mod feed;
pub mod kubestore;
pub mod machine;
pub mod manifests;
pub mod model;
pub mod queue;
pub mod reconciler;
pub mod store;
pub mod view;

/// The whole chain of an error on one line: `what failed: why: deeper cause`.
pub use controller_agentapi::error_chain;
