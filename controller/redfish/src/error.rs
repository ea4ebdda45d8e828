//! What can go wrong talking to a BMC, in the categories the controller maps to metal3's
//! `errorType`s (see [`ErrorKind`]). Each message is one line naming the BMC and, where there
//! was one, the request; causes hang off `source()`. [`RedfishError::one_line`] joins them
//! for a host's `errorMessage`.

use std::time::Duration;

use http::{Method, StatusCode};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The category of a [`RedfishError`], for the controller's error handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No (trusted) connection, or no answer in time: retried with backoff.
    Unreachable,
    /// The BMC refused the credentials (HTTP 401/403).
    Credentials,
    /// The BMC answered something that is not Redfish (bad HTTP, bad JSON, too large).
    Garbage,
    /// The system the address names (or any system) is not there.
    NotFound,
    /// The BMC understood and said no; the message is its own.
    Rejected,
    /// The BMC does not offer what was asked (a reset type, a boot target).
    Unsupported,
    /// Our own configuration is unusable (an extra CA bundle that holds no certificate).
    Configuration,
}

#[derive(Debug, thiserror::Error)]
pub enum RedfishError {
    #[error("cannot reach the BMC at {addr}")]
    Unreachable {
        addr: String,
        #[source]
        source: BoxError,
    },
    #[error("the BMC at {addr} did not answer {method} {path} within {timeout:?}")]
    Timeout {
        addr: String,
        method: Method,
        path: String,
        timeout: Duration,
    },
    #[error("the BMC at {addr} presented a certificate that does not verify (disableCertificateVerification skips this check)")]
    Certificate {
        addr: String,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS with the BMC at {addr} failed")]
    Tls {
        addr: String,
        #[source]
        source: rustls::Error,
    },
    #[error("the BMC at {addr} refused the credentials (HTTP {status} for {method} {path})")]
    Credentials {
        addr: String,
        method: Method,
        path: String,
        status: StatusCode,
    },
    #[error("the BMC at {addr} returned {what} for {method} {path}")]
    Garbage {
        addr: String,
        method: Method,
        path: String,
        what: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("the BMC at {addr} has no {what}")]
    NotFound { addr: String, what: String },
    #[error("the BMC at {addr} rejected {method} {path}: HTTP {status}: {message}")]
    Rejected {
        addr: String,
        method: Method,
        path: String,
        status: StatusCode,
        /// From the Redfish error's `@Message.ExtendedInfo` (or its `message`), one line.
        message: String,
    },
    #[error("the BMC at {addr} does not support {what}")]
    Unsupported { addr: String, what: String },
    #[error("unusable TLS configuration for the BMC at {addr}: {reason}")]
    Configuration { addr: String, reason: String },
}

impl RedfishError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RedfishError::Unreachable { .. }
            | RedfishError::Timeout { .. }
            | RedfishError::Certificate { .. }
            | RedfishError::Tls { .. } => ErrorKind::Unreachable,
            RedfishError::Credentials { .. } => ErrorKind::Credentials,
            RedfishError::Garbage { .. } => ErrorKind::Garbage,
            RedfishError::NotFound { .. } => ErrorKind::NotFound,
            RedfishError::Rejected { .. } => ErrorKind::Rejected,
            RedfishError::Unsupported { .. } => ErrorKind::Unsupported,
            RedfishError::Configuration { .. } => ErrorKind::Configuration,
        }
    }

    /// The error and its causes on one line (`a: b: c`), newlines flattened: what a host's
    /// `errorMessage` shows.
    pub fn one_line(&self) -> String {
        let mut out = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            let s = e.to_string();
            // hyper/io errors often repeat their inner error; skip exact repeats.
            if !out.ends_with(&s) {
                out.push_str(": ");
                out.push_str(&s);
            }
            cur = e.source();
        }
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}
