//! Streamed image writes.
pub mod format;
