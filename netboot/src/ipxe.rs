//! The per-host iPXE script: fetch kernel and initramfs over HTTP (retrying on failure) and
//! boot with the kernel command line the agent needs.

use std::fmt::Write;
use std::net::SocketAddr;

use crate::config::Config;
use crate::hosts::Host;

/// Attempts before the script gives up and reboots.
pub const ATTEMPTS: u32 = 5;

/// Why a script cannot be rendered (a value that would break the script or the command line).
#[derive(Debug, thiserror::Error)]
#[error("host {mac}: {field} {value:?} contains whitespace, control characters or '$'")]
pub struct UnsafeValue {
    /// The host.
    pub mac: String,
    /// Which setting.
    pub field: &'static str,
    /// Its value.
    pub value: String,
}

fn word<'a>(host: &Host, field: &'static str, v: &'a str) -> Result<&'a str, UnsafeValue> {
    if v.is_empty()
        || v.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '$')
    {
        return Err(UnsafeValue {
            mac: host.mac.to_string(),
            field,
            value: v.to_owned(),
        });
    }
    Ok(v)
}

fn words<'a>(host: &Host, field: &'static str, v: &'a str) -> Result<&'a str, UnsafeValue> {
    if v.chars().any(|c| c.is_control() || c == '$') {
        return Err(UnsafeValue {
            mac: host.mac.to_string(),
            field,
            value: v.to_owned(),
        });
    }
    Ok(v.trim())
}

/// Renders `host`'s script; `server` is the address the script was fetched from, used for
/// the kernel and initramfs URLs the host does not override.
pub fn script(host: &Host, cfg: &Config, server: SocketAddr) -> Result<String, UnsafeValue> {
    let b = &host.boot;
    let default_kernel = format!("http://{server}/files/kernel");
    let default_initrd = format!("http://{server}/files/initramfs");
    let kernel = word(
        host,
        "kernel_url",
        b.kernel_url.as_deref().unwrap_or(&default_kernel),
    )?;
    let initrd = word(
        host,
        "initramfs_url",
        b.initramfs_url.as_deref().unwrap_or(&default_initrd),
    )?;

    let mut cmdline = format!("initrd=initramfs BOOTIF=01-{}", host.mac.dashed());
    if let Some(v) = b
        .controller_url
        .as_deref()
        .or(cfg.controller_url.as_deref())
    {
        let _ = write!(
            cmdline,
            " ferrox.controller={}",
            word(host, "controller_url", v)?
        );
    }
    if let Some(v) = b
        .ca_fingerprint
        .as_deref()
        .or(cfg.ca_fingerprint.as_deref())
    {
        let _ = write!(cmdline, " ferrox.ca={}", word(host, "ca_fingerprint", v)?);
    }
    if let Some(v) = b.token.as_deref() {
        let _ = write!(cmdline, " ferrox.token={}", word(host, "token", v)?);
    }
    for (field, extra) in [
        ("cmdline", cfg.cmdline.as_deref()),
        ("boot.cmdline", b.cmdline.as_deref()),
    ] {
        if let Some(extra) = extra {
            let extra = words(host, field, extra)?;
            if !extra.is_empty() {
                cmdline.push(' ');
                cmdline.push_str(extra);
            }
        }
    }
    let who = match &host.hostname {
        Some(h) => format!("{} ({})", host.mac, word(host, "hostname", h)?),
        None => host.mac.to_string(),
    };
    Ok(format!(
        "#!ipxe
# ferrox-netboot: boot script for {who}
set attempt:int32 0
:retry
inc attempt
echo ferrox: fetching kernel and initramfs (attempt ${{attempt}} of {ATTEMPTS})
kernel --name kernel {kernel} {cmdline} || goto failed
initrd --name initramfs {initrd} || goto failed
boot || goto failed
:failed
iseq ${{attempt}} {ATTEMPTS} && goto give_up ||
echo ferrox: attempt ${{attempt}} failed, retrying in 5 s
imgfree
sleep 5
goto retry
:give_up
echo ferrox: giving up after {ATTEMPTS} attempts, rebooting in 30 s
sleep 30
reboot
"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::{BootSpec, HostSource, StaticHosts};

    fn cfg() -> Config {
        Config {
            controller_url: Some("https://10.0.0.1:8443".into()),
            ca_fingerprint: Some(
                "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
            ),
            cmdline: Some("console=ttyS0,115200".into()),
            ..Config::default()
        }
    }

    fn golden(name: &str, got: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/ipxe")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, got).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert_eq!(
            got,
            want,
            "{} drifted from the code (UPDATE_GOLDEN=1 rewrites it)",
            path.display()
        );
    }

    #[test]
    fn golden_known_host() {
        let hosts = StaticHosts::parse(
            "hosts:\n  - mac: 52:54:00:12:34:56\n    hostname: node-1\n    boot:\n      token: 3q2-7Fz_k9\n      cmdline: ipv6.disable=1\n",
        )
        .unwrap();
        let h = hosts.lookup(&"52:54:00:12:34:56".parse().unwrap()).unwrap();
        golden(
            "known-host.ipxe",
            &script(&h, &cfg(), "10.0.0.1:8080".parse().unwrap()).unwrap(),
        );
    }

    #[test]
    fn golden_discovery_with_overrides() {
        let mut h = Host::discovery("aa:bb:cc:dd:ee:ff".parse().unwrap());
        h.boot = BootSpec {
            kernel_url: Some("http://images.example/vmlinuz".into()),
            initramfs_url: Some("http://images.example/initramfs.zst".into()),
            controller_url: Some("https://ctl.example:8443".into()),
            ..BootSpec::default()
        };
        golden(
            "discovery-overrides.ipxe",
            &script(&h, &Config::default(), "192.168.7.1:80".parse().unwrap()).unwrap(),
        );
    }

    #[test]
    fn refuses_injection() {
        let mut h = Host::discovery("aa:bb:cc:dd:ee:ff".parse().unwrap());
        h.boot.token = Some("x\nshell".into());
        assert!(script(&h, &Config::default(), "1.2.3.4:80".parse().unwrap()).is_err());
        h.boot.token = Some("a b".into());
        assert!(script(&h, &Config::default(), "1.2.3.4:80".parse().unwrap()).is_err());
        h.boot.token = None;
        h.boot.cmdline = Some("quiet ${net0/mac}".into());
        assert!(script(&h, &Config::default(), "1.2.3.4:80".parse().unwrap()).is_err());
    }
}
