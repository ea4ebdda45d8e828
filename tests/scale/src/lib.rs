//! The controller's scale benchmark (issue: "Scale — a benchmark, not a timed test").
//!
//! A real `ferrox-controller` process (embedded store, its real agent API over mTLS, its real
//! local API) drives N simulated machines:
//!
//! - [`bmc`]: one Redfish service holding N ComputerSystems, one per host, with sessions, ETags,
//!   one-time boot overrides and reset actions, as the controller's Redfish client expects from a
//!   BMC. Powering a system on boots it: from the network when the override says Pxe, from its
//!   disk otherwise.
//! - [`feed`]: what ferrox-netboot does for a PXE boot, reduced to the decision: it follows the
//!   controller's netboot feed (the same long poll netboot uses) and hands a booting machine the
//!   controller URL, CA fingerprint and one-time token of its iPXE script.
//! - [`agent`]: a booted ramdisk. It uses the agent's own client (`agent_ramdisk::client`):
//!   enrollment with the token and a CSR, then heartbeats, progress and results over mTLS with its
//!   own certificate, exactly the calls a real agent makes. Only the work is simulated (no disk is
//!   touched): inspection answers a fixed inventory, a write takes a set time with progress.
//! - [`bench`]: writes the hosts' manifests (the YAML a user would apply), starts the controller,
//!   watches every host through the local API until all are provisioned, and measures time,
//!   controller CPU and memory.

pub mod agent;
pub mod bench;
pub mod bmc;
pub mod feed;
