//! Redfish BMC client: address parsing, sessions or basic auth, power, one-time boot override, boot mode.
//!
//! Skeleton: being built (see issue 5).
