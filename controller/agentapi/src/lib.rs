//! The controller side of the agent API: internal CA, one-time boot tokens, mTLS enrollment, heartbeats, commands and events.
//!
//! Skeleton: being built (see issue 5).
