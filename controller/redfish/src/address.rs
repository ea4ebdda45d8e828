//! `spec.bmc.address` as metal3 writes it, parsed the way baremetal-operator's
//! `pkg/hardwareutils/bmc` does, so existing manifests keep their meaning.
//!
//! metal3 semantics kept here:
//! - the scheme names the driver; `redfish://` talks HTTPS, `redfish+http://` and
//!   `redfish+https://` choose explicitly;
//! - a bare `host` or `host:port` (no scheme) is IPMI;
//! - `scheme:host/path` (no `//`) is read as `scheme://host/path`;
//! - the path names the system (`/redfish/v1/Systems/1`); an empty path or just `/redfish/v1`
//!   means "the only system the BMC has", which the client resolves at connect time;
//! - host names follow DNS label rules, IPv6 literals are bracketed.
//!
//! Ferrox drives Redfish only: every other driver metal3 knows (ipmi, idrac, ilo, irmc,
//! redfish-virtualmedia, ...) parses to [`BmcAddress::Unsupported`], which the controller
//! reports as a registration error. Deliberately stricter than metal3: credentials, a query or
//! a fragment in the address are refused (credentials belong in the Secret, where metal3 also
//! ignores them).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The schemes Ferrox drives, for messages.
pub const SUPPORTED_SCHEMES: &str = "redfish://, redfish+http://, redfish+https://";

/// Driver names metal3 registers (each also with `+http` / `+https` where metal3 allows it).
/// Addresses with these schemes are valid BareMetalHost input that Ferrox does not drive.
const METAL3_DRIVERS: &[&str] = &[
    "ipmi",
    "libvirt",
    "idrac",
    "idrac-redfish",
    "idrac-virtualmedia",
    "ilo4",
    "ilo4-virtualmedia",
    "ilo5",
    "ilo5-redfish",
    "ilo5-virtualmedia",
    "irmc",
    "irmc-virtualmedia",
    "ibmc",
    "redfish-virtualmedia",
    "redfish-uefihttp",
];

/// Why an address is not a usable BMC address at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("missing BMC address")]
    Empty,
    #[error("BMC address {address:?} is invalid: {reason}")]
    Invalid { address: String, reason: String },
    #[error("BMC address {address:?} names unknown driver {scheme:?}; Ferrox supports {SUPPORTED_SCHEMES}")]
    UnknownDriver { address: String, scheme: String },
}

/// A metal3 driver Ferrox does not drive; the message is what the host's status shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("BMC driver {driver:?} is not supported by Ferrox; it supports only {SUPPORTED_SCHEMES}")]
pub struct UnsupportedDriver {
    pub driver: String,
}

/// HTTP or HTTPS toward the BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Where a Redfish service is and which system on it the host is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedfishEndpoint {
    pub scheme: Scheme,
    /// Host name or IP literal, IPv6 without brackets.
    pub host: String,
    pub port: Option<u16>,
    /// The system's resource path (`/redfish/v1/Systems/1`), or `None` for "the only one".
    pub system: Option<String>,
}

impl RedfishEndpoint {
    /// `scheme://host[:port]`, IPv6 in brackets: what requests are sent to.
    pub fn base_url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => format!("{}://{host}:{p}", self.scheme.as_str()),
            None => format!("{}://{host}", self.scheme.as_str()),
        }
    }
}

impl fmt::Display for RedfishEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base_url())?;
        if let Some(s) = &self.system {
            f.write_str(s)?;
        }
        Ok(())
    }
}

/// A parsed `spec.bmc.address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BmcAddress {
    Redfish(RedfishEndpoint),
    /// A driver metal3 accepts and Ferrox does not (the scheme as written, lowercased).
    Unsupported {
        driver: String,
    },
}

impl BmcAddress {
    /// Parses an address with metal3's rules (see the module docs).
    pub fn parse(address: &str) -> Result<Self, AddressError> {
        let s = address.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        let invalid = |reason: &str| AddressError::Invalid {
            address: address.to_string(),
            reason: reason.to_string(),
        };
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("it contains whitespace or control characters"));
        }
        if s.contains('?') || s.contains('#') {
            return Err(invalid("a query or fragment is not allowed"));
        }

        let (scheme, rest) = split_scheme(s);
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = parse_authority(authority).map_err(invalid)?;

        let Some(scheme) = scheme else {
            // metal3: a bare host or host:port is IPMI.
            return Ok(BmcAddress::Unsupported {
                driver: "ipmi".into(),
            });
        };
        let http_scheme = match scheme.as_str() {
            "redfish" | "redfish+https" => Scheme::Https,
            "redfish+http" => Scheme::Http,
            other => {
                let base = other
                    .strip_suffix("+https")
                    .or_else(|| other.strip_suffix("+http"))
                    .unwrap_or(other);
                if METAL3_DRIVERS.contains(&base) {
                    return Ok(BmcAddress::Unsupported { driver: scheme });
                }
                return Err(AddressError::UnknownDriver {
                    address: address.to_string(),
                    scheme,
                });
            }
        };
        if !path.bytes().all(is_path_byte) {
            return Err(invalid(
                "the system path has characters a URL path cannot hold",
            ));
        }
        let trimmed = path.trim_matches('/');
        let system = if trimmed.is_empty() || trimmed == "redfish/v1" {
            None
        } else {
            Some(format!("/{trimmed}"))
        };
        Ok(BmcAddress::Redfish(RedfishEndpoint {
            scheme: http_scheme,
            host,
            port,
            system,
        }))
    }

    /// The Redfish endpoint, or why this address cannot be driven.
    pub fn into_redfish(self) -> Result<RedfishEndpoint, UnsupportedDriver> {
        match self {
            BmcAddress::Redfish(e) => Ok(e),
            BmcAddress::Unsupported { driver } => Err(UnsupportedDriver { driver }),
        }
    }
}

/// Splits `scheme://rest` or `scheme:rest` (metal3 rewrites the latter to the former); a
/// bare `host:port` has no scheme.
fn split_scheme(s: &str) -> (Option<String>, &str) {
    let Some(colon) = s.find(':') else {
        return (None, s);
    };
    let (pre, post) = (&s[..colon], &s[colon + 1..]);
    if !is_scheme(pre) {
        return (None, s);
    }
    if let Some(rest) = post.strip_prefix("//") {
        return (Some(pre.to_ascii_lowercase()), rest);
    }
    // `host:623` or `host:623/...` is a bare host and port; `fe80::1` is not a scheme either.
    let port_part = post.split('/').next().unwrap_or("");
    if post.starts_with(':')
        || (!port_part.is_empty() && port_part.bytes().all(|b| b.is_ascii_digit()))
    {
        return (None, s);
    }
    (Some(pre.to_ascii_lowercase()), post)
}

fn is_scheme(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

fn parse_authority(authority: &str) -> Result<(String, Option<u16>), &'static str> {
    if authority.contains('@') {
        return Err("credentials in the address are not allowed; they belong in the BMC Secret");
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address is missing its closing ']'")?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| "the bracketed host is not an IPv6 address")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("unexpected text after ']'")?),
        };
        (v6.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err("an IPv6 address must be in brackets, e.g. [fd00::1]:443")
            }
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("it has no host");
    }
    if !host.contains(':') && host.parse::<Ipv4Addr>().is_err() && !is_dns_name(&host) {
        return Err("the host is neither an IP address nor a valid DNS name");
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err("the port is not a number from 1 to 65535"),
        },
    };
    Ok((host, port))
}

/// metal3's DNS check: dot-separated labels of 1-63 letters, digits and inner hyphens.
fn is_dns_name(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

/// RFC 3986 `pchar` plus `/`: what may appear in a path without further encoding.
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rf(scheme: Scheme, host: &str, port: Option<u16>, system: Option<&str>) -> BmcAddress {
        BmcAddress::Redfish(RedfishEndpoint {
            scheme,
            host: host.into(),
            port,
            system: system.map(Into::into),
        })
    }

    fn unsupported(driver: &str) -> BmcAddress {
        BmcAddress::Unsupported {
            driver: driver.into(),
        }
    }

    #[test]
    fn redfish_addresses_parse_like_metal3() {
        use Scheme::*;
        let cases: &[(&str, BmcAddress)] = &[
            ("redfish://192.168.122.1", rf(Https, "192.168.122.1", None, None)),
            (
                "redfish://192.168.122.1:8000/redfish/v1/Systems/1",
                rf(Https, "192.168.122.1", Some(8000), Some("/redfish/v1/Systems/1")),
            ),
            (
                "redfish+http://bmc.example.com:8000/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-f3527a1ef094",
                rf(
                    Http,
                    "bmc.example.com",
                    Some(8000),
                    Some("/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-f3527a1ef094"),
                ),
            ),
            (
                "redfish+https://bmc/redfish/v1/Systems/System.Embedded.1/",
                rf(Https, "bmc", None, Some("/redfish/v1/Systems/System.Embedded.1")),
            ),
            ("REDFISH://bmc", rf(Https, "bmc", None, None)),
            // metal3: an empty path or just the service root means "the only system".
            ("redfish://bmc/", rf(Https, "bmc", None, None)),
            ("redfish://bmc/redfish/v1", rf(Https, "bmc", None, None)),
            ("redfish://bmc/redfish/v1/", rf(Https, "bmc", None, None)),
            ("redfish://[fe80::fc33:62ff:fe83:8a76]", rf(Https, "fe80::fc33:62ff:fe83:8a76", None, None)),
            (
                "redfish+http://[fd00::1]:8000/redfish/v1/Systems/1",
                rf(Http, "fd00::1", Some(8000), Some("/redfish/v1/Systems/1")),
            ),
            // metal3 rewrites scheme:host to scheme://host.
            ("redfish:bmc.lab:8443/redfish/v1/Systems/1", rf(Https, "bmc.lab", Some(8443), Some("/redfish/v1/Systems/1"))),
            ("  redfish://bmc  ", rf(Https, "bmc", None, None)),
        ];
        for (input, want) in cases {
            assert_eq!(&BmcAddress::parse(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn other_metal3_drivers_are_unsupported() {
        let cases: &[(&str, &str)] = &[
            ("ipmi://192.168.122.1:6233", "ipmi"),
            ("192.168.122.1", "ipmi"),
            ("192.168.122.1:623", "ipmi"),
            ("bmc.lab:623", "ipmi"),
            ("[fd00::1]:623", "ipmi"),
            ("libvirt://192.168.122.1:6233", "libvirt"),
            ("idrac://192.168.122.1", "idrac"),
            ("idrac+http://192.168.122.1", "idrac+http"),
            (
                "idrac-redfish://192.168.122.1/redfish/v1/Systems/System.Embedded.1",
                "idrac-redfish",
            ),
            (
                "idrac-virtualmedia+https://192.168.122.1",
                "idrac-virtualmedia+https",
            ),
            ("ilo4://192.168.122.1", "ilo4"),
            ("ilo4-virtualmedia://192.168.122.1", "ilo4-virtualmedia"),
            ("ilo5://192.168.122.1", "ilo5"),
            ("ilo5-redfish://192.168.122.1", "ilo5-redfish"),
            ("ilo5-virtualmedia://192.168.122.1", "ilo5-virtualmedia"),
            ("irmc://192.168.122.1", "irmc"),
            ("ibmc+https://192.168.122.1", "ibmc+https"),
            (
                "redfish-virtualmedia://192.168.122.1/redfish/v1/Systems/1",
                "redfish-virtualmedia",
            ),
            (
                "redfish-virtualmedia+http://192.168.122.1",
                "redfish-virtualmedia+http",
            ),
            ("redfish-uefihttp://192.168.122.1", "redfish-uefihttp"),
        ];
        for (input, driver) in cases {
            let parsed = BmcAddress::parse(input).unwrap();
            assert_eq!(parsed, unsupported(driver), "{input}");
            let msg = parsed.into_redfish().unwrap_err().to_string();
            assert!(msg.contains(driver), "{msg}");
            assert!(
                msg.contains("supports only redfish://, redfish+http://, redfish+https://"),
                "{msg}"
            );
        }
    }

    #[test]
    fn garbage_is_a_parse_error_naming_the_address() {
        let cases: &[&str] = &[
            "redfish://",
            "redfish:///redfish/v1/Systems/1",
            "redfish://bmc:0",
            "redfish://bmc:99999",
            "redfish://bmc:http",
            "redfish://bmc:",
            "redfish://bad_host!",
            "redfish://-bmc",
            "redfish://[fd00::1",
            "redfish://[not-v6]:80",
            "redfish://[fd00::1]x",
            "redfish://fd00::1/redfish/v1",
            "redfish://user:pw@bmc/redfish/v1/Systems/1",
            "redfish://bmc/redfish/v1/Systems/1?x=1",
            "redfish://bmc/redfish/v1/Systems/1#frag",
            "redfish://bmc/redfish v1",
            "redfish://bmc/redfish/v1/Systems/\"1\"",
            "ipmi://",
            "fe80::1",
            "http://",
            "%%%",
        ];
        for input in cases {
            match BmcAddress::parse(input) {
                Err(e @ AddressError::Invalid { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("{:?}", input)), "{input}: {msg}");
                }
                other => panic!("{input}: expected Invalid, got {other:?}"),
            }
        }
        assert_eq!(BmcAddress::parse(""), Err(AddressError::Empty));
        assert_eq!(BmcAddress::parse("   "), Err(AddressError::Empty));
    }

    #[test]
    fn unknown_schemes_are_named() {
        for (input, scheme) in [
            ("https://bmc/redfish/v1", "https"),
            ("foo://bmc", "foo"),
            ("redfish+ftp://bmc", "redfish+ftp"),
            ("bmc:abc", "bmc"),
        ] {
            let err = BmcAddress::parse(input).unwrap_err();
            assert_eq!(
                err,
                AddressError::UnknownDriver {
                    address: input.into(),
                    scheme: scheme.into()
                }
            );
            assert!(err.to_string().contains("redfish+https://"), "{err}");
        }
    }

    #[test]
    fn base_url_brackets_ipv6_and_keeps_the_port() {
        let cases = [
            ("redfish://bmc", "https://bmc"),
            (
                "redfish+http://bmc:8000/redfish/v1/Systems/1",
                "http://bmc:8000",
            ),
            ("redfish://[fd00::1]:8443", "https://[fd00::1]:8443"),
        ];
        for (input, want) in cases {
            let e = BmcAddress::parse(input).unwrap().into_redfish().unwrap();
            assert_eq!(e.base_url(), want, "{input}");
        }
    }
}
