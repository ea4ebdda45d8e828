//! Which BareMetalHost an agent acts for. The only place a [`HostId`] comes from on an
//! authenticated call is the client certificate (its SAN URI), never a request body.

use std::fmt;

/// The prefix of the SAN URI that binds a client certificate to one host.
pub const HOST_URI_PREFIX: &str = "urn:ferrox:host:";

/// `namespace/name` of a BareMetalHost.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId {
    namespace: String,
    name: String,
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
        })
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

    /// Parses the SAN URI a client certificate carries ([`HOST_URI_PREFIX`]`namespace/name`).
    pub fn from_uri(uri: &str) -> Result<Self, HostIdError> {
        match uri.strip_prefix(HOST_URI_PREFIX) {
            Some(rest) => Self::parse(rest),
            None => Err(HostIdError {
                given: uri.chars().take(80).collect(),
                why: "not a urn:ferrox:host: URI",
            }),
        }
    }

    /// The SAN URI for this host's client certificates.
    pub fn uri(&self) -> String {
        format!("{HOST_URI_PREFIX}{self}")
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
