//! Disk wipes, and the guard every destructive action passes first.
//!
//! - [`guard`]: is this device safe to destroy? (read-only, mounted, held, removable, virtual)
pub mod guard;
