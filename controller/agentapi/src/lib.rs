//! The controller side of the agent API (ARCHITECTURE.md, "The agent protocol" and "Security
//! model"): the internal CA ([`ca`]), one-time boot tokens, mTLS enrollment, long-poll
//! heartbeats that hand out commands, and events ([`server`]), over a [`Backend`] the
//! controller implements ([`MemoryBackend`] is a complete in-memory one).
//!
//! The wire types are `agent_proto::api`.

pub mod backend;
pub mod ca;
pub mod host;
pub mod server;

pub use backend::{Backend, MemoryBackend, Pokes, Record, Refusal};
pub use ca::{host_from_cert, mint_session, mint_token, Ca, CaError, ClientCert};
pub use host::{HostId, HostIdError};
pub use server::{AgentApi, Options, ServeError};

/// The error and its sources, `: `-separated, on one line.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}
