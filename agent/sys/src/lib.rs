//! The agent's only door to the kernel: block-device ioctls, the libblkid prober, NVMe admin
//! and ATA passthrough, page-aligned buffers for `O_DIRECT`, and what PID 1 needs (mounts,
//! module loading, interface set-up, reaping, power-off). Everything here is a safe API
//! over `unsafe` calls; each `unsafe` block says why it is sound and quotes the kernel's
//! definition of what it calls. No other crate of the agent may use `unsafe`.

pub mod aligned;
pub mod ata;
pub mod blkid;
pub mod block;
pub mod net;
pub mod netif;
pub mod nvme;
pub mod system;

pub use aligned::AlignedBuf;
