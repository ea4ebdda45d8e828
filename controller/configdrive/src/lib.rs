//! Config drive (config-2, as cloud-init reads it) from a host's userData, networkData and metaData.
//!
//! Skeleton: being built (see issue 5).
