//! The wipe's error type: each variant says what failed on which device; the cause is the
//! `#[source]`, never pasted into the message.

use std::io;
use std::path::PathBuf;

use agent_sys::blkid::BlkidError;

use crate::guard::GuardError;
use crate::FullMethod;

/// Why a device's wipe failed.
#[derive(Debug, thiserror::Error)]
pub enum WipeError {
    #[error("not wiping {device}")]
    Refused {
        device: PathBuf,
        #[source]
        source: GuardError,
    },
    #[error("cannot open {device} read-write and exclusively")]
    Open {
        device: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the geometry of {device}")]
    Geometry {
        device: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("probing the {location} of {device} for signatures")]
    Probe {
        device: PathBuf,
        location: String,
        #[source]
        source: BlkidError,
    },
    #[error("erasing the {kind} signature at byte {offset} ({location}) of {device}")]
    Erase {
        device: PathBuf,
        kind: String,
        offset: u64,
        location: String,
        #[source]
        source: BlkidError,
    },
    #[error(
        "signatures keep reappearing on the {location} of {device}; gave up after {limit} erasures"
    )]
    TooManySignatures {
        device: PathBuf,
        location: String,
        limit: usize,
    },
    #[error("the {kind} signature at byte {offset} ({location}) of {device} is still there after erasing it")]
    DidNotStick {
        device: PathBuf,
        kind: String,
        offset: u64,
        location: String,
    },
    #[error("writing zeroes to {len} bytes at byte {offset} of {device}")]
    Write {
        device: PathBuf,
        offset: u64,
        len: u64,
        #[source]
        source: io::Error,
    },
    #[error("reading back {device} at byte {offset}")]
    Read {
        device: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("flushing {device} to stable storage")]
    Sync {
        device: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("asking the kernel to re-read the partition table of {device}")]
    Reread {
        device: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("signatures remain on {device} after the wipe: {found}")]
    Remains { device: PathBuf, found: String },
    #[error("{device} does not read back zeroes at byte {offset} after {method}")]
    NotZero {
        device: PathBuf,
        offset: u64,
        method: FullMethod,
    },
    #[error("{method} on {device}")]
    Method {
        device: PathBuf,
        method: FullMethod,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    #[error("no erase method succeeded on {device}; the last tried")]
    AllMethodsFailed {
        device: PathBuf,
        #[source]
        last: Box<WipeError>,
    },
    #[error("no erase method is left for {device} (all were excluded or skipped)")]
    NoMethod { device: PathBuf },
    #[error("{device} is listed twice (as {first} before); wiped once")]
    Duplicate { device: PathBuf, first: PathBuf },
    #[error("the wipe of {device} panicked")]
    Panicked { device: PathBuf },
}
