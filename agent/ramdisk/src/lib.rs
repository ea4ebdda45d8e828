//! ferrox-agent as PID 1 of the ramdisk: what runs before the agent can do its job (mounts,
//! module coldplug, the boot network via its own DHCP client, parameters from the kernel
//! command line), the supervisor that keeps it alive and talking (see [`boot::pid1`]), and
//! the agent API client: enrollment and mTLS calls pinned to the controller's CA
//! ([`client`]), the command loop ([`heartbeat`]) and the command executor ([`exec`]).

pub mod boot;
pub mod client;
pub mod cmdline;
pub mod coldplug;
pub mod dhcp;
pub mod exec;
pub mod heartbeat;
pub mod net;
pub mod power_button;
pub mod report;
