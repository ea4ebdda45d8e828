//! The reconciler as the agent API's [`Backend`]: token redemption, the next command, events.
//! Host identities cross here: the agent API names hosts by [`HostId`] (from the client
//! certificate), the controller by [`HostKey`].

use std::sync::Arc;

use agent_proto::{Command, Enroll, Event};
use controller_agentapi::{Backend, HostId, Refusal as ApiRefusal};

use crate::model::HostKey;
use crate::reconciler::{Reconciler, Refusal};

/// Adapter from the reconciler to the agent API.
#[derive(Debug, Clone)]
pub struct Agents(pub Arc<Reconciler>);

fn key_of(h: &HostId) -> HostKey {
    HostKey::new(h.namespace(), h.name())
}

fn id_of(k: &HostKey) -> Option<HostId> {
    HostId::new(&k.namespace, &k.name).ok()
}

impl Backend for Agents {
    fn redeem_token(&self, token: &str, enroll: &Enroll) -> Result<HostId, ApiRefusal> {
        let host = |k: &HostKey| id_of(k).ok_or(ApiRefusal::BadToken);
        match self.0.redeem(token, enroll) {
            Ok(e) => host(&e.key)?
                .with_session(&e.session)
                .map_err(|_| ApiRefusal::BadToken),
            Err(Refusal::UnknownToken) | Err(Refusal::Internal(_)) => Err(ApiRefusal::BadToken),
            Err(Refusal::TokenUsed(k)) => Err(ApiRefusal::TokenUsed { host: host(&k)? }),
            Err(Refusal::TokenExpired(k)) | Err(Refusal::Superseded(k)) => {
                Err(ApiRefusal::TokenExpired { host: host(&k)? })
            }
            Err(Refusal::WrongHost { host: k, mac }) => Err(ApiRefusal::Identity {
                host: host(&k)?,
                why: format!("its boot MAC is not {mac}"),
            }),
        }
    }

    fn next_command(&self, host: &HostId) -> Option<Command> {
        self.0.next_command(&key_of(host), host.session())
    }

    fn on_event(&self, host: &HostId, event: Event) {
        self.0.agent_event(&key_of(host), host.session(), &event)
    }
}

/// Wires the agent API's wake-ups into the reconciler: a newly issued command answers the host's
/// pending long poll at once.
pub fn connect(rec: &Reconciler, api: &controller_agentapi::AgentApi) {
    let pokes = api.pokes();
    rec.on_command_change(Box::new(move |k: &HostKey| {
        if let Some(id) = id_of(k) {
            pokes.poke(&id);
        }
    }));
}
