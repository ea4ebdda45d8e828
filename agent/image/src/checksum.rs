//! Image checksums: the operator's checksum spec, checksum files (`SHA256SUMS`, BSD style, a
//! bare hash), and the streaming hasher run over the downloaded bytes.

use std::fmt;
use std::str::FromStr;

use md5::Digest;
use serde::Serialize;

/// A supported checksum algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumAlgo {
    Sha256,
    Sha512,
    /// Only with `allow_md5`: MD5 proves nothing against an attacker, only against corruption.
    Md5,
}

impl ChecksumAlgo {
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgo::Sha256 => "sha256",
            ChecksumAlgo::Sha512 => "sha512",
            ChecksumAlgo::Md5 => "md5",
        }
    }

    /// Length of the digest in hex digits.
    pub fn hex_len(self) -> usize {
        match self {
            ChecksumAlgo::Sha256 => 64,
            ChecksumAlgo::Sha512 => 128,
            ChecksumAlgo::Md5 => 32,
        }
    }

    /// The algorithm whose hex digest has `len` digits.
    pub fn from_hex_len(len: usize) -> Option<Self> {
        match len {
            64 => Some(ChecksumAlgo::Sha256),
            128 => Some(ChecksumAlgo::Sha512),
            32 => Some(ChecksumAlgo::Md5),
            _ => None,
        }
    }

    /// `sha256`, `sha512`, `md5` (any case; `sha-256` too).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sha256" | "sha-256" => Some(ChecksumAlgo::Sha256),
            "sha512" | "sha-512" => Some(ChecksumAlgo::Sha512),
            "md5" => Some(ChecksumAlgo::Md5),
            _ => None,
        }
    }
}

impl fmt::Display for ChecksumAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the operator gave as the image's checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksumSpec {
    /// A digest, lowercase hex.
    Hex { algo: ChecksumAlgo, hex: String },
    /// The URL of a checksum file; `algo` is `None` when the spec did not name one (then the
    /// entry's hash length decides).
    Url {
        algo: Option<ChecksumAlgo>,
        url: String,
    },
}

impl ChecksumSpec {
    /// The algorithm, when the spec alone determines it.
    pub fn algo(&self) -> Option<ChecksumAlgo> {
        match self {
            ChecksumSpec::Hex { algo, .. } => Some(*algo),
            ChecksumSpec::Url { algo, .. } => *algo,
        }
    }
}

/// Why a checksum spec was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumSpecError {
    #[error("the checksum is empty")]
    Empty,
    #[error("unknown checksum algorithm {0:?} (sha256, sha512 or md5)")]
    UnknownAlgo(String),
    #[error("the checksum is not hexadecimal")]
    NotHex,
    #[error("a {algo} checksum has {expected} hex digits, this one has {got}")]
    WrongLength {
        algo: ChecksumAlgo,
        expected: usize,
        got: usize,
    },
    #[error("a checksum of {0} hex digits matches no algorithm (32 md5, 64 sha256, 128 sha512)")]
    UnknownLength(usize),
}

/// Whether `s` starts with `scheme://` (any scheme: unsupported ones are refused when fetched).
fn is_url(s: &str) -> bool {
    match s.find("://") {
        Some(i) if i > 0 => s[..i]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b)),
        _ => false,
    }
}

fn parse_hex(algo: Option<ChecksumAlgo>, hex: &str) -> Result<ChecksumSpec, ChecksumSpecError> {
    if hex.is_empty() {
        return Err(ChecksumSpecError::Empty);
    }
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ChecksumSpecError::NotHex);
    }
    let algo = match algo {
        Some(algo) if algo.hex_len() != hex.len() => {
            return Err(ChecksumSpecError::WrongLength {
                algo,
                expected: algo.hex_len(),
                got: hex.len(),
            })
        }
        Some(algo) => algo,
        None => ChecksumAlgo::from_hex_len(hex.len())
            .ok_or(ChecksumSpecError::UnknownLength(hex.len()))?,
    };
    Ok(ChecksumSpec::Hex {
        algo,
        hex: hex.to_ascii_lowercase(),
    })
}

impl FromStr for ChecksumSpec {
    type Err = ChecksumSpecError;

    /// `sha256:HEX`, `sha512:HEX`, `md5:HEX`, `sha256:https://…/SHA256SUMS`, a bare hex digest
    /// (algorithm from its length) or a bare URL (algorithm from the entry's length).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ChecksumSpecError::Empty);
        }
        if is_url(s) {
            return Ok(ChecksumSpec::Url {
                algo: None,
                url: s.to_string(),
            });
        }
        match s.split_once(':') {
            Some((name, rest)) => {
                let algo = ChecksumAlgo::from_name(name)
                    .ok_or_else(|| ChecksumSpecError::UnknownAlgo(name.to_string()))?;
                let rest = rest.trim();
                if is_url(rest) {
                    Ok(ChecksumSpec::Url {
                        algo: Some(algo),
                        url: rest.to_string(),
                    })
                } else {
                    parse_hex(Some(algo), rest)
                }
            }
            None => parse_hex(None, s),
        }
    }
}

/// Why a checksum file gave no checksum for the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumFileError {
    #[error("the checksum file is not text")]
    NotText,
    #[error("the checksum file has no entry for {name:?}")]
    NoEntry { name: String },
    #[error("the checksum file has several different entries for {name:?}")]
    Ambiguous { name: String },
    #[error("the checksum file's entry for {name:?} is not a valid checksum")]
    BadEntry {
        name: String,
        #[source]
        source: ChecksumSpecError,
    },
}

/// One line of a checksum file: (algorithm if the line names it, hex, file name if any).
fn parse_line(line: &str) -> Option<(Option<ChecksumAlgo>, &str, Option<&str>)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    // BSD: `SHA256 (name) = HEX`
    if let Some(open) = line.find(" (") {
        if let Some(close) = line.rfind(") = ") {
            if close > open {
                let algo = ChecksumAlgo::from_name(line[..open].trim());
                let name = &line[open + 2..close];
                let hex = line[close + 4..].trim();
                return Some((algo, hex, Some(name)));
            }
        }
    }
    // GNU: `HEX  name`, `HEX *name` (binary mode), or a bare `HEX`.
    let (hex, rest) = match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], line[i..].trim_start()),
        None => (line, ""),
    };
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) || hex.is_empty() {
        return None;
    }
    let name = rest.strip_prefix('*').unwrap_or(rest);
    Some((None, hex, (!name.is_empty()).then_some(name)))
}

/// The last path component, without `./` or directories.
fn base_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The file name at the end of an image URL's path (query and fragment ignored).
pub fn url_file_name(url: &str) -> &str {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    let path = match no_query.find("://") {
        Some(i) => {
            let after = &no_query[i + 3..];
            after.find('/').map(|j| &after[j..]).unwrap_or("")
        }
        None => no_query,
    };
    base_name(path)
}

/// Picks the checksum for `image_name` from a checksum file: the entry whose file name matches
/// (directories ignored), or the only hash of a file that names none. With `algo`, entries of
/// another algorithm are ignored.
pub fn parse_checksum_file(
    text: &str,
    image_name: &str,
    algo: Option<ChecksumAlgo>,
) -> Result<ChecksumSpec, ChecksumFileError> {
    let entries: Vec<_> = text
        .lines()
        .filter_map(parse_line)
        .filter(|(line_algo, hex, _)| {
            let line_algo = line_algo.or_else(|| ChecksumAlgo::from_hex_len(hex.len()));
            match (algo, line_algo) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
        })
        .collect();
    let named: Vec<_> = entries
        .iter()
        .filter(|(_, _, name)| name.is_some_and(|n| base_name(n) == image_name))
        .collect();
    let chosen = match named.as_slice() {
        [] => match entries.as_slice() {
            [(line_algo, hex, None)] => (*line_algo, *hex),
            _ => {
                return Err(ChecksumFileError::NoEntry {
                    name: image_name.to_string(),
                })
            }
        },
        [(line_algo, hex, _), rest @ ..] => {
            if rest.iter().any(|(_, h, _)| !h.eq_ignore_ascii_case(hex)) {
                return Err(ChecksumFileError::Ambiguous {
                    name: image_name.to_string(),
                });
            }
            (*line_algo, *hex)
        }
    };
    parse_hex(algo.or(chosen.0), chosen.1).map_err(|source| ChecksumFileError::BadEntry {
        name: image_name.to_string(),
        source,
    })
}

/// A running digest over the downloaded bytes.
pub enum Hasher {
    /// SHA-256 and SHA-512 by ring (already linked for TLS): its assembly is faster than the
    /// portable Rust code, most of all where the CPU has no SHA extensions (1.45× for
    /// SHA-256 on the lab's emulated CPU, measured in docs/bench-lab.md).
    Sha2(ring::digest::Context),
    Md5(md5::Md5),
}

impl Hasher {
    pub fn new(algo: ChecksumAlgo) -> Self {
        match algo {
            ChecksumAlgo::Sha256 => Hasher::Sha2(ring::digest::Context::new(&ring::digest::SHA256)),
            ChecksumAlgo::Sha512 => Hasher::Sha2(ring::digest::Context::new(&ring::digest::SHA512)),
            ChecksumAlgo::Md5 => Hasher::Md5(md5::Md5::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha2(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
        }
    }

    /// The digest as lowercase hex.
    pub fn finish_hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Sha2(h) => h.finish().as_ref().to_vec(),
            Hasher::Md5(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const H512: &str = "ee26b0dd4af7e749aa1a8ee3c10ae9923f618980772e473f8819a5d4940e0db27ac185f8a0e1d5f84f88bc887fd67b143732c304cc5fa9ad8e6f57f50028a8ff";
    const HMD5: &str = "098f6bcd4621d373cade4e832627b4f6";

    #[test]
    fn spec_parsing() {
        let hex = |algo, h: &str| ChecksumSpec::Hex {
            algo,
            hex: h.to_string(),
        };
        assert_eq!(
            format!("sha256:{H256}").parse(),
            Ok(hex(ChecksumAlgo::Sha256, H256))
        );
        assert_eq!(
            format!("SHA512:{}", H512.to_uppercase()).parse(),
            Ok(hex(ChecksumAlgo::Sha512, H512))
        );
        assert_eq!(
            format!("md5:{HMD5}").parse(),
            Ok(hex(ChecksumAlgo::Md5, HMD5))
        );
        assert_eq!(H256.parse(), Ok(hex(ChecksumAlgo::Sha256, H256)));
        assert_eq!(H512.parse(), Ok(hex(ChecksumAlgo::Sha512, H512)));
        assert_eq!(
            format!("  {HMD5}\n").parse(),
            Ok(hex(ChecksumAlgo::Md5, HMD5))
        );
        assert_eq!(
            "sha256:https://example.test/SHA256SUMS".parse(),
            Ok(ChecksumSpec::Url {
                algo: Some(ChecksumAlgo::Sha256),
                url: "https://example.test/SHA256SUMS".into()
            })
        );
        assert_eq!(
            "http://example.test/CHECKSUM".parse(),
            Ok(ChecksumSpec::Url {
                algo: None,
                url: "http://example.test/CHECKSUM".into()
            })
        );
        assert_eq!(
            "sha256:abcd".parse::<ChecksumSpec>(),
            Err(ChecksumSpecError::WrongLength {
                algo: ChecksumAlgo::Sha256,
                expected: 64,
                got: 4
            })
        );
        assert_eq!(
            "crc32:abcd".parse::<ChecksumSpec>(),
            Err(ChecksumSpecError::UnknownAlgo("crc32".into()))
        );
        assert_eq!(
            "abcd".parse::<ChecksumSpec>(),
            Err(ChecksumSpecError::UnknownLength(4))
        );
        assert_eq!(
            format!("sha256:{}", &"zz".repeat(32)).parse::<ChecksumSpec>(),
            Err(ChecksumSpecError::NotHex)
        );
        assert_eq!("".parse::<ChecksumSpec>(), Err(ChecksumSpecError::Empty));
        assert_eq!(
            "sha256:".parse::<ChecksumSpec>(),
            Err(ChecksumSpecError::Empty)
        );
    }

    #[test]
    fn file_name_of_url() {
        assert_eq!(url_file_name("https://h/a/b/disk.img?x=1#f"), "disk.img");
        assert_eq!(url_file_name("http://h:8080/disk.qcow2"), "disk.qcow2");
        assert_eq!(url_file_name("http://h"), "");
    }

    #[test]
    fn gnu_format() {
        let other = "0".repeat(64);
        let text = format!("{other}  other.img\n{H256} *disk.img\n# comment\n\n");
        assert_eq!(
            parse_checksum_file(&text, "disk.img", None),
            Ok(ChecksumSpec::Hex {
                algo: ChecksumAlgo::Sha256,
                hex: H256.into()
            })
        );
        // Directory prefixes are ignored; names must match exactly otherwise.
        let text = format!("{H256}  ./images/disk.img\n");
        assert!(parse_checksum_file(&text, "disk.img", None).is_ok());
        assert_eq!(
            parse_checksum_file(&text, "disk.img.xz", None),
            Err(ChecksumFileError::NoEntry {
                name: "disk.img.xz".into()
            })
        );
    }

    #[test]
    fn bsd_format_and_algo_filter() {
        let text = format!(
            "# Fedora style\nSHA256 (disk.raw.xz) = {H256}\nSHA512 (disk.raw.xz) = {H512}\nSHA256 (other) = {}\n",
            "1".repeat(64)
        );
        assert_eq!(
            parse_checksum_file(&text, "disk.raw.xz", Some(ChecksumAlgo::Sha512)),
            Ok(ChecksumSpec::Hex {
                algo: ChecksumAlgo::Sha512,
                hex: H512.into()
            })
        );
        assert_eq!(
            parse_checksum_file(&text, "disk.raw.xz", Some(ChecksumAlgo::Sha256)),
            Ok(ChecksumSpec::Hex {
                algo: ChecksumAlgo::Sha256,
                hex: H256.into()
            })
        );
        // Two different hashes for one name without an algorithm to choose: refused.
        assert_eq!(
            parse_checksum_file(&text, "disk.raw.xz", None),
            Err(ChecksumFileError::Ambiguous {
                name: "disk.raw.xz".into()
            })
        );
    }

    #[test]
    fn bare_hash_file() {
        assert_eq!(
            parse_checksum_file(&format!("{HMD5}\n"), "x.img", None),
            Ok(ChecksumSpec::Hex {
                algo: ChecksumAlgo::Md5,
                hex: HMD5.into()
            })
        );
        assert_eq!(
            parse_checksum_file(&format!("{H256}\n"), "x.img", Some(ChecksumAlgo::Sha512)),
            Err(ChecksumFileError::NoEntry {
                name: "x.img".into()
            })
        );
        assert_eq!(
            parse_checksum_file("", "x.img", None),
            Err(ChecksumFileError::NoEntry {
                name: "x.img".into()
            })
        );
        assert!(matches!(
            parse_checksum_file("abc  x.img\n", "x.img", None),
            Err(ChecksumFileError::BadEntry { .. })
        ));
    }

    #[test]
    fn hashers() {
        let digest = |algo| {
            let mut h = Hasher::new(algo);
            h.update(b"te");
            h.update(b"st");
            h.finish_hex()
        };
        assert_eq!(digest(ChecksumAlgo::Sha256), H256);
        assert_eq!(digest(ChecksumAlgo::Sha512), H512);
        assert_eq!(digest(ChecksumAlgo::Md5), HMD5);
    }

    #[test]
    fn sha2_digests_agree_with_a_second_implementation_over_odd_sized_chunks() {
        use sha2::Digest as _;
        let data: Vec<u8> = (0..3_000_017u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        for (algo, want) in [
            (ChecksumAlgo::Sha256, hex(&sha2::Sha256::digest(&data))),
            (ChecksumAlgo::Sha512, hex(&sha2::Sha512::digest(&data))),
        ] {
            let mut h = Hasher::new(algo);
            for chunk in data.chunks(262_139) {
                h.update(chunk);
            }
            assert_eq!(h.finish_hex(), want, "{algo:?}");
        }
    }
}
