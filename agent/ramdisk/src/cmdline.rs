//! The agent's parameters from the kernel command line, as ferrox-netboot's iPXE script
//! writes them: `BOOTIF=01-aa-bb-cc-dd-ee-ff ferrox.controller=URL ferrox.ca=sha256:HEX
//! ferrox.token=T`, plus `ferrox.vlan=VID` and `ferrox.fatal=retry|poweroff|reboot`.
//!
//! Parsing never fails as a whole: every word that is wrong becomes one readable problem,
//! and everything else is kept, so the console says exactly which parameter to fix.

use std::fmt;

/// What to do when the agent cannot go on (no network, no controller, bad parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFatal {
    /// Print the cause and try again with backoff, forever (the default).
    #[default]
    Retry,
    /// Print the cause and power the machine off.
    PowerOff,
    /// Print the cause and reboot (the BMC's boot order decides what comes next).
    Reboot,
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Mac {
    /// Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return None;
        }
        let mut m = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return None;
            }
            m[i] = u8::from_str_radix(p, 16).ok()?;
        }
        Some(Self(m))
    }
}

/// What the command line told the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootParams {
    /// The controller's base URL (`http://` or `https://`).
    pub controller: Option<String>,
    /// The controller CA's SHA-256 fingerprint, lowercase hex.
    pub ca_sha256: Option<String>,
    /// The one-time boot token.
    pub token: Option<String>,
    /// The NIC that PXE-booted (`BOOTIF`, hardware type 01 = Ethernet).
    pub bootif: Option<Mac>,
    /// The VLAN to put the boot interface on.
    pub vlan: Option<u16>,
    /// What to do on a fatal error.
    pub on_fatal: OnFatal,
}

/// One thing wrong on the command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel command line: {word}: {why}")]
pub struct CmdlineProblem {
    /// The word as given (values longer than 80 bytes cut).
    pub word: String,
    /// What is wrong with it.
    pub why: &'static str,
}

fn problem(word: &str, why: &'static str) -> CmdlineProblem {
    let mut w: String = word.chars().take(80).collect();
    if w.len() < word.len() {
        w.push('…');
    }
    CmdlineProblem { word: w, why }
}

/// Reads the parameters from `/proc/cmdline`'s text; unrelated words are ignored.
pub fn parse(cmdline: &str) -> (BootParams, Vec<CmdlineProblem>) {
    let mut p = BootParams::default();
    let mut problems = Vec::new();
    for word in cmdline.split_ascii_whitespace() {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        let ours = key == "BOOTIF" || key.starts_with("ferrox.");
        if ours && value.is_empty() {
            problems.push(problem(word, "needs a value"));
            continue;
        }
        match key {
            "BOOTIF" => match value.strip_prefix("01-").and_then(Mac::parse) {
                Some(m) => p.bootif = Some(m),
                None => problems.push(problem(word, "expected 01-aa-bb-cc-dd-ee-ff")),
            },
            "ferrox.controller" => {
                // A host must follow the scheme (fuzzing found `http:////` trimmed to `http:`).
                let ok = value
                    .strip_prefix("http://")
                    .or_else(|| value.strip_prefix("https://"))
                    .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
                    && value.bytes().all(|b| b.is_ascii_graphic());
                if ok {
                    p.controller = Some(value.trim_end_matches('/').to_string());
                } else {
                    problems.push(problem(word, "expected an http:// or https:// URL"));
                }
            }
            "ferrox.ca" => match value.strip_prefix("sha256:") {
                Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    p.ca_sha256 = Some(h.to_ascii_lowercase());
                }
                _ => problems.push(problem(word, "expected sha256:<64 hex digits>")),
            },
            "ferrox.token" => {
                if value.len() <= 256
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
                {
                    p.token = Some(value.to_string());
                } else {
                    problems.push(problem(word, "expected up to 256 URL-safe characters"));
                }
            }
            "ferrox.vlan" => match value.parse::<u16>() {
                Ok(v) if (1..=4094).contains(&v) => p.vlan = Some(v),
                _ => problems.push(problem(word, "expected a VLAN id 1..4094")),
            },
            "ferrox.fatal" => match value {
                "retry" => p.on_fatal = OnFatal::Retry,
                "poweroff" => p.on_fatal = OnFatal::PowerOff,
                "reboot" => p.on_fatal = OnFatal::Reboot,
                _ => problems.push(problem(word, "expected retry, poweroff or reboot")),
            },
            k if k.starts_with("ferrox.") => problems.push(problem(word, "unknown parameter")),
            _ => {}
        }
    }
    (p, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netboot_script_line_parses() {
        // The command line ferrox-netboot's golden iPXE script writes.
        let line = "initrd=initramfs BOOTIF=01-52-54-00-12-34-56 ferrox.controller=https://10.0.0.1:8443 ferrox.ca=sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0 ferrox.token=3q2-7Fz_k9 console=ttyS0,115200 ipv6.disable=1";
        let (p, problems) = parse(line);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(p.bootif, Some(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56])));
        assert_eq!(p.controller.as_deref(), Some("https://10.0.0.1:8443"));
        assert_eq!(p.token.as_deref(), Some("3q2-7Fz_k9"));
        assert!(p.ca_sha256.unwrap().starts_with("0f1e2d"));
        assert_eq!(p.on_fatal, OnFatal::Retry);
        assert_eq!(p.vlan, None);
    }

    #[test]
    fn every_bad_word_is_one_problem_and_the_rest_is_kept() {
        let cases: &[(&str, &str)] = &[
            ("BOOTIF=52:54:00:12:34:56", "expected 01-"),
            ("BOOTIF=01-52-54-00-12-34", "expected 01-"),
            ("BOOTIF=01-zz-54-00-12-34-56", "expected 01-"),
            ("ferrox.controller=ftp://x", "http://"),
            ("ferrox.controller=https://", "http://"),
            ("ferrox.controller=http://////", "http://"),
            ("ferrox.ca=md5:abcd", "sha256"),
            ("ferrox.ca=sha256:abc", "sha256"),
            ("ferrox.token=a;reboot", "URL-safe"),
            ("ferrox.vlan=0", "1..4094"),
            ("ferrox.vlan=4095", "1..4094"),
            ("ferrox.vlan=ten", "1..4094"),
            ("ferrox.fatal=explode", "retry"),
            ("ferrox.contoller=https://x", "unknown parameter"),
            ("ferrox.token=", "needs a value"),
            ("BOOTIF", "needs a value"),
        ];
        for (word, why) in cases {
            let line = format!("quiet {word} ferrox.vlan=7 ferrox.fatal=poweroff");
            let (p, problems) = parse(&line);
            assert_eq!(problems.len(), 1, "{word}: {problems:?}");
            let msg = problems[0].to_string();
            assert!(msg.contains(why), "{word}: {msg}");
            assert!(msg.contains(word.split('=').next().unwrap()), "{msg}");
            assert_eq!(p.vlan, Some(7), "{word}: the good words are kept");
            assert_eq!(p.on_fatal, OnFatal::PowerOff);
        }
    }

    #[test]
    fn long_garbage_is_cut_in_the_message() {
        let word = format!("ferrox.token={}", "x".repeat(5000));
        let (_, problems) = parse(&word);
        assert!(problems[0].to_string().len() < 200);
    }

    #[test]
    fn unrelated_words_are_ignored() {
        let (p, problems) = parse("root=/dev/sda1 ro quiet splash ip=dhcp =x ferrox");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(p, BootParams::default());
    }
}
