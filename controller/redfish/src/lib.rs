//! Redfish BMC client for the controller: parses metal3 BMC addresses, logs in (session or
//! basic auth) with certificate verification on unless the host says otherwise, reads the
//! system, powers it on/off/resets it and sets one-time boot overrides. Errors come in the
//! categories the controller maps to metal3's `errorType`s ([`ErrorKind`]).
//!
//! Tested against sushy-tools, the Redfish emulator Ironic's and metal3's CI use
//! (`tests/sushy.rs`, installed by `hack/sushy-tools.sh`).

mod address;
mod client;
mod error;

pub use address::{
    AddressError, BmcAddress, RedfishEndpoint, Scheme, UnsupportedDriver, SUPPORTED_SCHEMES,
};
pub use client::{
    BootMode, BootOverride, BootTarget, ConnectOptions, Credentials, PowerState, Redfish,
    SystemInfo, Transport,
};
pub use error::{ErrorKind, RedfishError};
