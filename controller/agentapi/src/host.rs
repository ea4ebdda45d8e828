//! Which BareMetalHost an agent acts for. The only place a [`HostId`] comes from on an
//! authenticated call is the client certificate (its SAN URI), never a request body.

use std::fmt;

/// The prefix of the SAN URI that binds a client certificate to one host.
pub const HOST_URI_PREFIX: &str = "urn:ferrox:host:";

/// `namespace/name` of a BareMetalHost, and in an agent's certificate also the enrollment
/// (session) it was issued to: a certificate from an earlier boot of the agent, or from a host
/// of the same name that was deleted and created again, then names a session that is no longer
/// the host's, and the backend gives it nothing to do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId {
    namespace: String,
    name: String,
    session: Option<String>,
}

/// Why a string is not a host identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not a host identity: {why}")]
pub struct HostIdError {
    /// The input (cut to 80 bytes).
    pub given: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Kubernetes object names: DNS-1123 subdomain (lowercase alphanumerics, `-`, `.`), 1..=253.
fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn valid_session(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl HostId {
    /// A host identity; both parts must be Kubernetes object names.
    pub fn new(namespace: &str, name: &str) -> Result<Self, HostIdError> {
        let err = |why| HostIdError {
            given: format!("{namespace}/{name}").chars().take(80).collect(),
            why,
        };
        if !valid_part(namespace) {
            return Err(err("the namespace is not a Kubernetes name"));
        }
        if !valid_part(name) {
            return Err(err("the name is not a Kubernetes name"));
        }
        Ok(Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            session: None,
        })
    }

    /// This host, in the enrollment `session` (lowercase hex, 1..=64 digits).
    pub fn with_session(mut self, session: &str) -> Result<Self, HostIdError> {
        if !valid_session(session) {
            return Err(HostIdError {
                given: session.chars().take(80).collect(),
                why: "a session is 1 to 64 lowercase hex digits",
            });
        }
        self.session = Some(session.to_string());
        Ok(self)
    }

    /// The enrollment this identity was issued to, if it names one.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// The host alone, whatever the session.
    pub fn host(&self) -> HostId {
        HostId {
            session: None,
            ..self.clone()
        }
    }

    /// Parses `namespace/name`.
    pub fn parse(s: &str) -> Result<Self, HostIdError> {
        match s.split_once('/') {
            Some((ns, name)) => Self::new(ns, name),
            None => Err(HostIdError {
                given: s.chars().take(80).collect(),
                why: "expected namespace/name",
            }),
        }
    }

    /// Parses the SAN URI a client certificate carries
    /// ([`HOST_URI_PREFIX`]`namespace/name[/session]`).
    pub fn from_uri(uri: &str) -> Result<Self, HostIdError> {
        let Some(rest) = uri.strip_prefix(HOST_URI_PREFIX) else {
            return Err(HostIdError {
                given: uri.chars().take(80).collect(),
                why: "not a urn:ferrox:host: URI",
            });
        };
        let mut parts = rest.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(ns), Some(name), None) => Self::new(ns, name),
            (Some(ns), Some(name), Some(session)) => Self::new(ns, name)?.with_session(session),
            _ => Err(HostIdError {
                given: rest.chars().take(80).collect(),
                why: "expected namespace/name",
            }),
        }
    }

    /// The SAN URI for this host's client certificates.
    pub fn uri(&self) -> String {
        match &self.session {
            Some(s) => format!("{HOST_URI_PREFIX}{self}/{s}"),
            None => format!("{HOST_URI_PREFIX}{self}"),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_uri() {
        let h = HostId::new("metal3", "worker-0.rack1").unwrap();
        assert_eq!(h.to_string(), "metal3/worker-0.rack1");
        assert_eq!(h.uri(), "urn:ferrox:host:metal3/worker-0.rack1");
        assert_eq!(HostId::from_uri(&h.uri()).unwrap(), h);
        assert_eq!(HostId::parse("metal3/worker-0.rack1").unwrap(), h);
    }

    #[test]
    fn a_session_round_trips_through_the_uri_and_counts_in_equality() {
        let h = HostId::new("metal3", "worker-0").unwrap();
        let s = h.clone().with_session("0a1b2c3d").unwrap();
        assert_eq!(s.uri(), "urn:ferrox:host:metal3/worker-0/0a1b2c3d");
        assert_eq!(
            s.to_string(),
            "metal3/worker-0",
            "shown and claimed without it"
        );
        assert_eq!(HostId::from_uri(&s.uri()).unwrap(), s);
        assert_eq!(s.session(), Some("0a1b2c3d"));
        assert_ne!(s, h);
        assert_ne!(s, h.clone().with_session("0a1b2c3e").unwrap());
        assert_eq!(s.host(), h);
        assert_eq!(HostId::from_uri(&h.uri()).unwrap().session(), None);
        for bad in ["", "0A", "xyz", "12/34", &"a".repeat(65)] {
            assert!(h.clone().with_session(bad).is_err(), "{bad:?}");
            assert!(
                HostId::from_uri(&format!("urn:ferrox:host:metal3/worker-0/{bad}")).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_a_kubernetes_name() {
        let cases: &[(&str, &str)] = &[
            ("noslash", "namespace/name"),
            ("/x", "namespace"),
            ("ns/", "name is not"),
            ("NS/x", "namespace"),
            ("ns/x/y", "name is not"),
            ("ns/-x", "name is not"),
            ("ns/x-", "name is not"),
            ("ns/a b", "name is not"),
            ("ns/a%2f", "name is not"),
        ];
        for (input, why) in cases {
            let e = HostId::parse(input).unwrap_err().to_string();
            assert!(e.contains(why), "{input}: {e}");
        }
        let long = format!("ns/{}", "a".repeat(254));
        assert!(HostId::parse(&long).is_err());
        assert!(HostId::parse(&format!("ns/{}", "a".repeat(253))).is_ok());
        assert!(HostId::from_uri("urn:other:ns/x").is_err());
        assert!(HostId::from_uri("urn:ferrox:host:ns/x").is_ok());
    }
}
