//! The agent's only door to the kernel: block-device ioctls, the libblkid prober, NVMe admin
//! and ATA passthrough, and page-aligned buffers for `O_DIRECT`. Everything here is a safe API
//! over `unsafe` calls; each `unsafe` block says why it is sound and quotes the kernel's
//! definition of what it calls. No other crate of the agent may use `unsafe`.

pub mod aligned;
pub mod ata;
pub mod blkid;
pub mod block;
pub mod net;
pub mod nvme;

pub use aligned::AlignedBuf;
