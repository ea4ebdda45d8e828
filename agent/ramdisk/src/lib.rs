//! ferrox-agent as PID 1 of the ramdisk: what runs before the agent can do its job (mounts,
//! module coldplug, the boot network via its own DHCP client, parameters from the kernel
//! command line) and the supervisor that keeps it alive and talking. See [`boot::pid1`].

pub mod boot;
pub mod cmdline;
pub mod coldplug;
pub mod dhcp;
pub mod net;
pub mod report;
