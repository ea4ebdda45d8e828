//! Streamed image writes: an image is downloaded over HTTP(S), checksummed, decoded (raw,
//! zstd, gzip, xz, qcow2) and written to a disk in one pass, with bounded memory.
//!
//! The entry point is [`write_image`]; see [`pipeline`] for the stages and the safety order.
pub mod checksum;
pub mod configdrive;
pub mod format;
pub mod hints;
pub mod http;
pub mod pipeline;
pub mod progress;
pub mod random_access;
pub mod writer;

pub use checksum::{ChecksumAlgo, ChecksumSpec, ChecksumSpecError};
pub use pipeline::{
    checksum_image, write_image, ChecksumReport, ChecksumRequest, ImageError, WriteReport,
    WriteRequest,
};
pub use progress::ProgressFn;
