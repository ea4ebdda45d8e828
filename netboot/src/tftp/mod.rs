//! TFTP (RFC 1350) for the iPXE binaries only: read requests, with blksize (RFC 2348), tsize
//! and timeout (RFC 2349) and windowsize (RFC 7440). Files come from an allow-list read into
//! memory at start ([`Files`]); a request's file name is only ever a key into it.
//!
//! This module holds the pure parts (request parsing, name resolution, option negotiation);
//! [`server`] holds the sockets.

pub mod server;

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;

/// Opcodes.
pub mod op {
    /// Read request.
    pub const RRQ: u16 = 1;
    /// Write request.
    pub const WRQ: u16 = 2;
    /// Data.
    pub const DATA: u16 = 3;
    /// Acknowledgment.
    pub const ACK: u16 = 4;
    /// Error.
    pub const ERROR: u16 = 5;
    /// Option acknowledgment (RFC 2347).
    pub const OACK: u16 = 6;
}

/// Longest request accepted (RFC 1350 requests fit in 512 bytes; options add a little).
pub const MAX_REQUEST: usize = 1024;
/// Options looked at in one request; the rest are ignored.
pub const MAX_OPTIONS: usize = 16;

/// Transfer mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `octet`.
    Octet,
    /// `netascii` (served as octet: the files are binaries).
    Netascii,
}

/// Options as requested (values outside the RFCs' ranges are dropped, as RFC 2347 allows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// RFC 2348, 8..=65464.
    pub blksize: Option<u16>,
    /// RFC 7440, 1..=65535.
    pub windowsize: Option<u16>,
    /// RFC 2349: the client asks for the size (it sends 0 in a RRQ).
    pub tsize: bool,
    /// RFC 2349, seconds, 1..=255.
    pub timeout: Option<u8>,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// WRQ rather than RRQ.
    pub write: bool,
    /// The file name as sent.
    pub filename: String,
    /// Mode.
    pub mode: Mode,
    /// Options.
    pub options: Options,
}

/// Why a datagram to the TFTP port is not a request we can parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Shorter than an opcode.
    #[error("shorter than an opcode")]
    Short,
    /// Longer than [`MAX_REQUEST`].
    #[error("longer than {MAX_REQUEST} bytes")]
    TooLong,
    /// An opcode TFTP does not define.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// DATA/ACK/ERROR/OACK sent to the request port.
    #[error("opcode {0} is not a request")]
    NotARequest(u16),
    /// A field without its terminating NUL.
    #[error("unterminated field")]
    Unterminated,
    /// A field that is not printable ASCII.
    #[error("field is not printable ASCII")]
    NotText,
    /// A mode other than octet or netascii.
    #[error("unsupported mode")]
    BadMode,
}

fn field(input: &[u8]) -> Result<(&str, &[u8]), ParseError> {
    let end = input
        .iter()
        .position(|&b| b == 0)
        .ok_or(ParseError::Unterminated)?;
    let raw = &input[..end];
    if !raw.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(ParseError::NotText);
    }
    let s = std::str::from_utf8(raw).map_err(|_| ParseError::NotText)?;
    Ok((s, &input[end + 1..]))
}

/// Parses a datagram received on the request port.
pub fn parse_request(b: &[u8]) -> Result<Request, ParseError> {
    if b.len() > MAX_REQUEST {
        return Err(ParseError::TooLong);
    }
    let opcode = match b {
        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
        _ => return Err(ParseError::Short),
    };
    match opcode {
        op::RRQ | op::WRQ => {}
        op::DATA | op::ACK | op::ERROR | op::OACK => return Err(ParseError::NotARequest(opcode)),
        other => return Err(ParseError::UnknownOpcode(other)),
    }
    let (filename, rest) = field(&b[2..])?;
    let (mode, mut rest) = field(rest)?;
    let mode = if mode.eq_ignore_ascii_case("octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case("netascii") {
        Mode::Netascii
    } else {
        return Err(ParseError::BadMode);
    };
    let mut options = Options::default();
    let mut n = 0;
    while !rest.is_empty() && n < MAX_OPTIONS {
        let Ok((name, r)) = field(rest) else { break };
        let Ok((value, r)) = field(r) else { break };
        rest = r;
        n += 1;
        if name.eq_ignore_ascii_case("blksize") {
            options.blksize = value.parse().ok().filter(|v| (8..=65464).contains(v));
        } else if name.eq_ignore_ascii_case("windowsize") {
            options.windowsize = value.parse().ok().filter(|v| *v >= 1);
        } else if name.eq_ignore_ascii_case("tsize") {
            options.tsize = value.parse::<u64>().is_ok();
        } else if name.eq_ignore_ascii_case("timeout") {
            options.timeout = value.parse().ok().filter(|v| *v >= 1);
        }
    }
    Ok(Request {
        write: opcode == op::WRQ,
        filename: filename.to_owned(),
        mode,
        options,
    })
}

/// Why a file name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Empty name.
    #[error("empty file name")]
    Empty,
    /// `..` anywhere.
    #[error("path traversal")]
    Traversal,
    /// Starts with `/` or `\`, or names a directory.
    #[error("not a plain file name")]
    NotPlain,
    /// Not in the allow-list.
    #[error("not served")]
    NotServed,
}

impl Refusal {
    /// The TFTP error code to answer with.
    pub fn code(self) -> u16 {
        match self {
            Refusal::NotServed | Refusal::Empty => 1,
            Refusal::Traversal | Refusal::NotPlain => 2,
        }
    }
}

/// The allow-listed files, in memory.
#[derive(Debug, Default, Clone)]
pub struct Files {
    map: BTreeMap<String, Bytes>,
}

impl Files {
    /// Reads each of `names` that exists in `dir`. Returns the set and the names not found.
    pub fn load<'a>(dir: &Path, names: impl IntoIterator<Item = &'a str>) -> (Files, Vec<String>) {
        let mut files = Files::default();
        let mut missing = Vec::new();
        for name in names {
            if files.map.contains_key(name) || !plain(name) {
                continue;
            }
            match std::fs::read(dir.join(name)) {
                Ok(data) => {
                    files.map.insert(name.to_owned(), Bytes::from(data));
                }
                Err(_) => missing.push(name.to_owned()),
            }
        }
        (files, missing)
    }

    /// Adds one file (tests).
    pub fn insert(&mut self, name: &str, data: Bytes) {
        self.map.insert(name.to_owned(), data);
    }

    /// Resolves a requested name against the allow-list.
    pub fn resolve(&self, name: &str) -> Result<(&str, Bytes), Refusal> {
        if name.is_empty() {
            return Err(Refusal::Empty);
        }
        if name.contains("..") {
            return Err(Refusal::Traversal);
        }
        if !plain(name) {
            return Err(Refusal::NotPlain);
        }
        self.map
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v.clone()))
            .ok_or(Refusal::NotServed)
    }

    /// Names and sizes.
    pub fn list(&self) -> impl Iterator<Item = (&str, usize)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.len()))
    }
}

fn plain(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0', ':'])
}

/// What the server grants for a request, given its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Block size used.
    pub blksize: u16,
    /// Window used.
    pub windowsize: u16,
    /// Retransmission timeout, seconds.
    pub timeout: u8,
    /// Whether an OACK is due (any option accepted).
    pub oack: bool,
    /// Whether the OACK carries tsize.
    pub tsize: bool,
    /// Whether blksize / windowsize / timeout are echoed.
    pub echo_blksize: bool,
    /// See above.
    pub echo_windowsize: bool,
    /// See above.
    pub echo_timeout: bool,
}

/// Negotiates options against the server's limits.
pub fn negotiate(o: &Options, max_blksize: u16, max_window: u16) -> Negotiated {
    let blksize = o.blksize.map_or(512, |b| b.min(max_blksize));
    let windowsize = o.windowsize.map_or(1, |w| w.min(max_window));
    let timeout = o.timeout.unwrap_or(1);
    Negotiated {
        blksize,
        windowsize,
        timeout,
        oack: o.blksize.is_some() || o.windowsize.is_some() || o.tsize || o.timeout.is_some(),
        tsize: o.tsize,
        echo_blksize: o.blksize.is_some(),
        echo_windowsize: o.windowsize.is_some(),
        echo_timeout: o.timeout.is_some(),
    }
}

/// Builds an OACK.
pub fn oack(n: &Negotiated, size: u64) -> Vec<u8> {
    let mut b = op::OACK.to_be_bytes().to_vec();
    let mut opt = |k: &str, v: String| {
        b.extend_from_slice(k.as_bytes());
        b.push(0);
        b.extend_from_slice(v.as_bytes());
        b.push(0);
    };
    if n.echo_blksize {
        opt("blksize", n.blksize.to_string());
    }
    if n.echo_windowsize {
        opt("windowsize", n.windowsize.to_string());
    }
    if n.echo_timeout {
        opt("timeout", n.timeout.to_string());
    }
    if n.tsize {
        opt("tsize", size.to_string());
    }
    b
}

/// Builds an ERROR packet.
pub fn error(code: u16, msg: &str) -> Vec<u8> {
    let mut b = op::ERROR.to_be_bytes().to_vec();
    b.extend_from_slice(&code.to_be_bytes());
    b.extend_from_slice(msg.as_bytes());
    b.push(0);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(parts: &[&str]) -> Vec<u8> {
        let mut b = vec![0, 1];
        for p in parts {
            b.extend_from_slice(p.as_bytes());
            b.push(0);
        }
        b
    }

    #[test]
    fn parses_requests() {
        let r = parse_request(&rrq(&[
            "undionly.kpxe",
            "octet",
            "blksize",
            "1468",
            "tsize",
            "0",
            "windowsize",
            "16",
        ]))
        .unwrap();
        assert_eq!(r.filename, "undionly.kpxe");
        assert!(!r.write);
        assert_eq!(
            r.options,
            Options {
                blksize: Some(1468),
                windowsize: Some(16),
                tsize: true,
                timeout: None
            }
        );
        let mut w = rrq(&["x", "NETASCII"]);
        w[1] = 2;
        let w = parse_request(&w).unwrap();
        assert!(w.write);
        assert_eq!(w.mode, Mode::Netascii);
    }

    #[test]
    fn refuses_bad_requests() {
        let cases: &[(&[u8], ParseError)] = &[
            (&[], ParseError::Short),
            (&[0], ParseError::Short),
            (&[0, 9, b'a', 0, b'o', 0], ParseError::UnknownOpcode(9)),
            (&[0, 0], ParseError::UnknownOpcode(0)),
            (&[0, 4, 0, 1], ParseError::NotARequest(4)),
            (&[0, 1, b'a', b'b'], ParseError::Unterminated),
            (&[0, 1, b'a', 0, b'o', b'c'], ParseError::Unterminated),
            (
                &[0, 1, b'a', 0xff, 0, b'o', b'c', b't', b'e', b't', 0],
                ParseError::NotText,
            ),
            (b"\x00\x01a\x00mail\x00", ParseError::BadMode),
            // An embedded NUL ends the name; what follows is not a mode.
            (
                b"\x00\x01ipxe.efi\x00/../etc/passwd\x00octet\x00",
                ParseError::BadMode,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse_request(bytes).unwrap_err(), *want, "{bytes:?}");
        }
        assert_eq!(
            parse_request(&vec![0; 2000]).unwrap_err(),
            ParseError::TooLong
        );
    }

    #[test]
    fn absurd_options_are_ignored() {
        let r = parse_request(&rrq(&[
            "a",
            "octet",
            "blksize",
            "0",
            "windowsize",
            "0",
            "timeout",
            "0",
            "tsize",
            "-1",
            "blksize",
            "99999999",
        ]))
        .unwrap();
        assert_eq!(r.options, Options::default());
        let r = parse_request(&rrq(&[
            "a",
            "octet",
            "blksize",
            "65464",
            "windowsize",
            "65535",
            "timeout",
            "255",
        ]))
        .unwrap();
        let n = negotiate(&r.options, 1468, 64);
        assert_eq!((n.blksize, n.windowsize, n.timeout), (1468, 64, 255));
        // A dangling option name is tolerated (the rest is ignored).
        let mut b = rrq(&["a", "octet", "blksize", "1024"]);
        b.extend_from_slice(b"windowsize\0");
        assert_eq!(parse_request(&b).unwrap().options.blksize, Some(1024));
    }

    #[test]
    fn resolves_only_the_allow_list() {
        let mut f = Files::default();
        f.insert("undionly.kpxe", Bytes::from_static(b"x"));
        assert_eq!(f.resolve("undionly.kpxe").unwrap().0, "undionly.kpxe");
        for (name, why) in [
            ("", Refusal::Empty),
            ("../undionly.kpxe", Refusal::Traversal),
            ("..", Refusal::Traversal),
            ("/undionly.kpxe", Refusal::NotPlain),
            ("/etc/passwd", Refusal::NotPlain),
            ("\\undionly.kpxe", Refusal::NotPlain),
            ("dir/undionly.kpxe", Refusal::NotPlain),
            (".hidden", Refusal::NotPlain),
            ("ipxe.efi", Refusal::NotServed),
            ("UNDIONLY.KPXE", Refusal::NotServed),
        ] {
            assert_eq!(f.resolve(name).unwrap_err(), why, "{name:?}");
        }
    }

    #[test]
    fn oack_and_error_bytes() {
        let n = negotiate(
            &Options {
                blksize: Some(9000),
                windowsize: None,
                tsize: true,
                timeout: None,
            },
            1468,
            64,
        );
        assert_eq!(oack(&n, 42), b"\x00\x06blksize\x001468\x00tsize\x0042\x00");
        assert!(!negotiate(&Options::default(), 1468, 64).oack);
        assert_eq!(error(2, "no"), b"\x00\x05\x00\x02no\x00");
    }
}
