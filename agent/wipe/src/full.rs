//! **Destroys data.** The full wipe: every block of the device made unrecoverable, by the
//! fastest method the device really supports.
//!
//! [`plan`] is a pure function from what the device reports ([`Capabilities`]) to an ordered
//! list of methods (and the ones skipped, with why); the device is then erased with the first
//! method that works *and* passes its check — a probe finds no signature, and methods that
//! promise zeroes read back zeroes at sampled blocks — falling through to the next otherwise.
//! Zero overwrite, last, always applies.

use std::fmt;
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use agent_sys::ata::{self, AtaIdentity};
use agent_sys::block;
use agent_sys::nvme::{
    self, IdentifyController, IdentifyNamespace, SanitizeAction, SanitizeState, SecureErase,
};
use serde::{Deserialize, Serialize};

use crate::guard::Target;
use crate::metadata::{self, Region};
use crate::progress::Reporter;
use crate::{error_chain, zero, Attempt, DeviceReport, WipeError, WipeOptions};

/// An erase method, in the order of preference [`plan`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FullMethod {
    /// Format NVM with Secure Erase Settings = cryptographic erase: the media key is replaced.
    NvmeFormatCryptoErase,
    /// Sanitize, crypto erase action (the whole NVM subsystem, including caches and spares).
    NvmeSanitizeCryptoErase,
    /// Sanitize, block erase action.
    NvmeSanitizeBlockErase,
    /// Format NVM with Secure Erase Settings = user data erase.
    NvmeFormatUserDataErase,
    /// ATA SECURITY ERASE UNIT, enhanced mode (also erases reallocated sectors).
    AtaEnhancedSecurityErase,
    /// ATA SECURITY ERASE UNIT, normal mode.
    AtaSecurityErase,
    /// BLKSECDISCARD over the whole device.
    SecureDiscard,
    /// BLKDISCARD over the whole device, accepted only when sampled blocks read back zeroes.
    Discard,
    /// BLKZEROOUT where the device offloads write-zeroes (`write_zeroes_max_bytes` > 0).
    WriteZeroes,
    /// Punching a hole over a regular file (tests and image files).
    PunchHole,
    /// Writing zeroes over every block with large `O_DIRECT` writes.
    ZeroOverwrite,
}

impl FullMethod {
    pub const ALL: [FullMethod; 11] = [
        Self::NvmeFormatCryptoErase,
        Self::NvmeSanitizeCryptoErase,
        Self::NvmeSanitizeBlockErase,
        Self::NvmeFormatUserDataErase,
        Self::AtaEnhancedSecurityErase,
        Self::AtaSecurityErase,
        Self::SecureDiscard,
        Self::Discard,
        Self::WriteZeroes,
        Self::PunchHole,
        Self::ZeroOverwrite,
    ];

    /// The kebab-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::NvmeFormatCryptoErase => "nvme-format-crypto-erase",
            Self::NvmeSanitizeCryptoErase => "nvme-sanitize-crypto-erase",
            Self::NvmeSanitizeBlockErase => "nvme-sanitize-block-erase",
            Self::NvmeFormatUserDataErase => "nvme-format-user-data-erase",
            Self::AtaEnhancedSecurityErase => "ata-enhanced-security-erase",
            Self::AtaSecurityErase => "ata-security-erase",
            Self::SecureDiscard => "secure-discard",
            Self::Discard => "discard",
            Self::WriteZeroes => "write-zeroes",
            Self::PunchHole => "punch-hole",
            Self::ZeroOverwrite => "zero-overwrite",
        }
    }

    /// Whether the method promises that the device reads back zeroes afterwards (checked).
    fn promises_zeroes(self) -> bool {
        matches!(
            self,
            Self::Discard | Self::WriteZeroes | Self::PunchHole | Self::ZeroOverwrite
        )
    }
}

impl fmt::Display for FullMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an NVMe namespace's controller reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmeCaps {
    pub nsid: u32,
    pub controller: IdentifyController,
    pub namespace: IdentifyNamespace,
    /// Active namespaces on the controller; `None` when the list could not be read.
    pub active_namespaces: Option<usize>,
}

/// What a device supports, as far as erasing goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub block_device: bool,
    /// The target is a whole physical disk: not a partition, nor a dm, md or loop device.
    /// Device-wide erases (NVMe format and sanitize, ATA security erase) reach the whole
    /// drive, so they are used only then (SG_IO and the NVMe ioctls also work on partitions
    /// and pass through some dm targets, for root).
    pub whole_disk: bool,
    pub nvme: Option<NvmeCaps>,
    pub ata: Option<AtaIdentity>,
    /// `queue/discard_max_bytes` > 0.
    pub discard: bool,
    /// `queue/write_zeroes_max_bytes` > 0.
    pub write_zeroes: bool,
}

/// The methods to try, in order, and the ones left out with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub methods: Vec<FullMethod>,
    pub skipped: Vec<(FullMethod, String)>,
}

/// Chooses the erase methods for a device, best first.
pub fn plan(caps: &Capabilities) -> Plan {
    use FullMethod::*;
    let mut methods = Vec::new();
    let mut skipped = Vec::new();
    let mut skip = |m, why: String| skipped.push((m, why));

    let device_wide = [
        NvmeFormatCryptoErase,
        NvmeSanitizeCryptoErase,
        NvmeSanitizeBlockErase,
        NvmeFormatUserDataErase,
        AtaEnhancedSecurityErase,
        AtaSecurityErase,
    ];
    if !caps.whole_disk && (caps.nvme.is_some() || caps.ata.is_some()) {
        for m in device_wide {
            skip(
                m,
                "the target is not a whole disk; a device-wide erase would reach beyond it".into(),
            );
        }
    } else if let Some(n) = &caps.nvme {
        let c = &n.controller;
        // Several active namespaces: sanitize (always) and a format whose secure erase
        // applies to all namespaces would destroy namespaces we were not asked to wipe.
        let others = match n.active_namespaces {
            Some(1) => None,
            Some(k) => Some(format!("the controller has {k} active namespaces")),
            None => Some("the controller's active namespaces could not be listed".to_string()),
        };
        let format_hits_others =
            c.secure_erase_applies_to_all_namespaces() || c.format_applies_to_all_namespaces();
        let format_ok = |m| -> Result<(), String> {
            if !c.format_supported() {
                return Err("the controller does not support Format NVM".into());
            }
            if let (true, Some(why)) = (format_hits_others, &others) {
                return Err(format!(
                    "{why} and its format erases all of them (FNA {:#x})",
                    c.fna
                ));
            }
            if m == NvmeFormatCryptoErase && !c.format_crypto_erase_supported() {
                return Err(
                    "the controller does not support cryptographic erase by format (FNA bit 2)"
                        .into(),
                );
            }
            Ok(())
        };
        let sanitize_ok = |supported: bool, what: &str| -> Result<(), String> {
            if !supported {
                return Err(format!(
                    "the controller does not support sanitize {what} (SANICAP)"
                ));
            }
            if let Some(why) = &others {
                return Err(format!("{why} and sanitize erases the whole NVM subsystem"));
            }
            Ok(())
        };
        let nvme = [
            (NvmeFormatCryptoErase, format_ok(NvmeFormatCryptoErase)),
            (
                NvmeSanitizeCryptoErase,
                sanitize_ok(c.sanitize_crypto_supported(), "crypto erase"),
            ),
            (
                NvmeSanitizeBlockErase,
                sanitize_ok(c.sanitize_block_erase_supported(), "block erase"),
            ),
            (NvmeFormatUserDataErase, format_ok(NvmeFormatUserDataErase)),
        ];
        for (m, verdict) in nvme {
            match verdict {
                Ok(()) => methods.push(m),
                Err(why) => skip(m, why),
            }
        }
    }

    if let (true, Some(a)) = (caps.whole_disk, &caps.ata) {
        match a.erase_blocker() {
            Some(why) => {
                skip(AtaEnhancedSecurityErase, why.to_string());
                skip(AtaSecurityErase, why.to_string());
            }
            None => {
                if a.enhanced_erase_supported {
                    methods.push(AtaEnhancedSecurityErase);
                } else {
                    skip(
                        AtaEnhancedSecurityErase,
                        "the drive does not support the enhanced erase".into(),
                    );
                }
                methods.push(AtaSecurityErase);
            }
        }
    }

    if caps.block_device {
        methods.push(SecureDiscard);
        if caps.discard {
            methods.push(Discard);
        } else {
            skip(Discard, "the device does not support discard".into());
        }
        if caps.write_zeroes {
            methods.push(WriteZeroes);
        } else {
            skip(
                WriteZeroes,
                "the device does not offload write-zeroes".into(),
            );
        }
    } else {
        methods.push(PunchHole);
    }
    methods.push(ZeroOverwrite);
    Plan { methods, skipped }
}

fn sysfs_u64(dir: &Path, file: &str) -> Option<u64> {
    // A partition has no queue of its own: its disk's is one level up.
    [
        dir.join("queue").join(file),
        dir.join("../queue").join(file),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .and_then(|s| s.trim().parse().ok())
}

/// A whole physical disk has a `device` link (the hardware behind it) and no `partition`
/// file; dm, md and loop devices have no `device` link.
fn is_whole_physical_disk(dir: &Path) -> bool {
    dir.join("device").exists()
        && !dir.join("partition").exists()
        && !dir.join("dm").exists()
        && !dir.join("md").exists()
}

/// Asks the device what it supports. Never writes.
fn capabilities(
    file: &File,
    target: &Target,
    opts: &WipeOptions,
    report: &mut DeviceReport,
) -> Capabilities {
    let mut caps = Capabilities {
        block_device: target.is_block_device,
        ..Default::default()
    };
    if !target.is_block_device {
        return caps;
    }
    let Some(dir) = metadata::sysfs_dir(file, &opts.guard.sys_root) else {
        report
            .notes
            .push("no sysfs entry found for the device; using generic methods only".into());
        return caps;
    };
    caps.discard = sysfs_u64(&dir, "discard_max_bytes").unwrap_or(0) > 0;
    caps.write_zeroes = sysfs_u64(&dir, "write_zeroes_max_bytes").unwrap_or(0) > 0;
    caps.whole_disk = is_whole_physical_disk(&dir);
    if !caps.whole_disk {
        // Not even asked: a device-wide command must never be sent through a partition.
        return caps;
    }
    match nvme::namespace_id(file) {
        Ok(Some(nsid)) => {
            let ident = nvme::identify_controller(file)
                .and_then(|c| Ok((c, nvme::identify_namespace(file, nsid)?)));
            match ident {
                Ok((controller, namespace)) => {
                    let active_namespaces = nvme::active_namespaces(file).ok().map(|l| l.len());
                    caps.nvme = Some(NvmeCaps {
                        nsid,
                        controller,
                        namespace,
                        active_namespaces,
                    });
                }
                Err(e) => report
                    .notes
                    .push(format!("NVMe identify failed: {}", error_chain(&e))),
            }
            return caps;
        }
        Ok(None) => {}
        Err(e) => report
            .notes
            .push(format!("NVMe namespace query failed: {e}")),
    }
    match ata::identify(file) {
        Ok(id) => caps.ata = Some(id),
        // Not an ATA device (no SG_IO, or the SCSI layer rejects ATA PASS-THROUGH): expected.
        Err(ata::AtaError::Ioctl(_)) | Err(ata::AtaError::Sense { .. }) => {}
        Err(e) => report
            .notes
            .push(format!("ATA IDENTIFY failed: {}", error_chain(&e))),
    }
    caps
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The password set for an ATA security erase. The erase clears it; if anything fails, the
/// wipe disables it again, and if even that fails the error says it.
const ATA_PASSWORD: &[u8] = b"ferrox";

#[derive(Debug, thiserror::Error)]
enum MethodError {
    #[error("{0}")]
    Msg(String),
    #[error("{what}")]
    Nvme {
        what: &'static str,
        #[source]
        source: nvme::NvmeError,
    },
    #[error("{what}")]
    Ata {
        what: String,
        #[source]
        source: ata::AtaError,
    },
}

/// Chunk size of the ranged ioctls, so progress moves and one ioctl never runs for hours.
const IOCTL_CHUNK: u64 = 1 << 30;

fn ranged(
    size: u64,
    rep: &mut Reporter,
    phase: &str,
    mut f: impl FnMut(u64, u64) -> std::io::Result<()>,
) -> Result<(), BoxError> {
    rep.phase(0, phase);
    let mut done = 0;
    while done < size {
        let n = (size - done).min(IOCTL_CHUNK);
        f(done, n)?;
        done += n;
        rep.update(done, phase);
    }
    Ok(())
}

fn nvme_format(
    file: &File,
    caps: &NvmeCaps,
    ses: SecureErase,
    rep: &mut Reporter,
) -> Result<(), BoxError> {
    let params = caps.namespace.format_keeping_layout(ses);
    rep.phase(0, &format!("nvme format (secure erase {ses:?})"));
    // A crypto erase takes seconds; a user-data erase may take as long as writing the drive.
    let timeout_ms = match ses {
        SecureErase::Cryptographic => 10 * 60 * 1000,
        _ => 12 * 3600 * 1000,
    };
    nvme::format_nvm(file, caps.nsid, params, timeout_ms).map_err(|source| MethodError::Nvme {
        what: "Format NVM",
        source,
    })?;
    Ok(())
}

fn nvme_sanitize(
    file: &File,
    action: SanitizeAction,
    size: u64,
    rep: &mut Reporter,
) -> Result<(), BoxError> {
    let status = nvme::sanitize_status(file).map_err(|source| MethodError::Nvme {
        what: "reading the sanitize log",
        source,
    })?;
    if status.state == SanitizeState::InProgress {
        return Err(MethodError::Msg("a sanitize is already in progress".into()).into());
    }
    // AUSE: a failed sanitize may be left with Exit Failure Mode, so the drive stays usable
    // for the next method instead of refusing everything but another sanitize.
    let params = nvme::Sanitize {
        action,
        ause: true,
        owpass: 0,
        ndas: false,
    };
    let phase = format!("nvme sanitize ({action:?})");
    rep.phase(0, &phase);
    nvme::sanitize(file, params).map_err(|source| MethodError::Nvme {
        what: "Sanitize",
        source,
    })?;
    let deadline = Instant::now() + Duration::from_secs(24 * 3600);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let s = nvme::sanitize_status(file).map_err(|source| MethodError::Nvme {
            what: "reading the sanitize log",
            source,
        })?;
        match s.state {
            SanitizeState::InProgress if Instant::now() < deadline => {
                rep.update(size / 65536 * u64::from(s.progress), &phase);
            }
            SanitizeState::Completed | SanitizeState::CompletedNoDeallocate => return Ok(()),
            SanitizeState::Failed => {
                let exit = nvme::Sanitize {
                    action: SanitizeAction::ExitFailureMode,
                    ause: true,
                    owpass: 0,
                    ndas: false,
                };
                let cleanup = match nvme::sanitize(file, exit) {
                    Ok(()) => "the drive was taken out of sanitize failure mode".to_string(),
                    Err(e) => format!(
                        "leaving sanitize failure mode also failed ({})",
                        error_chain(&e)
                    ),
                };
                return Err(MethodError::Msg(format!("the sanitize failed; {cleanup}")).into());
            }
            other => {
                return Err(MethodError::Msg(format!("unexpected sanitize state {other:?}")).into())
            }
        }
    }
}

/// ATA security erase: set a user password, erase (which clears it), and on any failure try
/// to leave the drive without a password.
fn ata_erase(
    file: &File,
    device: &Path,
    id: &AtaIdentity,
    enhanced: bool,
    rep: &mut Reporter,
) -> Result<(), BoxError> {
    if let Some(why) = id.erase_blocker() {
        return Err(MethodError::Msg(why.into()).into());
    }
    let minutes = if enhanced {
        id.enhanced_erase_minutes
    } else {
        id.erase_minutes
    };
    // The drive's own estimate, doubled, plus ten minutes; 12 h when it gives none.
    let timeout_ms = minutes
        .map_or(12 * 3600 * 1000u64, |m| (u64::from(m) * 2 + 10) * 60 * 1000)
        .min(u64::from(u32::MAX)) as u32;
    // A failed SET PASSWORD may still have set it (a bridge can lose the status), so the
    // clean-up below runs after any failure from here on.
    let erased = match ata::set_user_password(file, ATA_PASSWORD) {
        Err(source) => Err(("SECURITY SET PASSWORD", source)),
        Ok(()) => {
            rep.phase(
                0,
                &format!(
                    "ata security erase (drive estimates {} min)",
                    minutes.map_or("?".into(), |m| m.to_string())
                ),
            );
            ata::security_erase(file, ATA_PASSWORD, enhanced, timeout_ms)
                .map_err(|source| ("SECURITY ERASE UNIT", source))
        }
    };
    // Whatever happened, the drive must not be left with our password.
    let after = ata::identify(file);
    let still_enabled = after.as_ref().map(|a| a.security_enabled).unwrap_or(true);
    let cleanup = if still_enabled {
        let locked = after.as_ref().map(|a| a.locked).unwrap_or(false);
        let unlocked = if locked {
            ata::unlock(file, ATA_PASSWORD)
        } else {
            Ok(())
        };
        match unlocked.and_then(|()| ata::disable_password(file, ATA_PASSWORD)) {
            Ok(()) => Ok("the user password was removed again".to_string()),
            Err(e) => Err(format!(
                "the user password \"ferrox\" could NOT be removed ({}); run: hdparm --user-master u --security-disable ferrox {}",
                error_chain(&e),
                device.display()
            )),
        }
    } else {
        Ok("no password is left set".to_string())
    };
    match (erased, cleanup) {
        (Ok(()), Ok(_)) => Ok(()),
        (Ok(()), Err(c)) => Err(MethodError::Msg(format!("the erase completed but {c}")).into()),
        (Err((what, source)), c) => {
            let c = c.unwrap_or_else(|e| e);
            Err(MethodError::Ata {
                what: format!("{what} ({c})"),
                source,
            }
            .into())
        }
    }
}

/// Runs one method. Does not verify.
fn run(
    method: FullMethod,
    file: &File,
    target: &Target,
    caps: &Capabilities,
    size: u64,
    rep: &mut Reporter,
) -> Result<(), WipeError> {
    let device = &target.path;
    let merr = |source: BoxError| WipeError::Method {
        device: device.clone(),
        method,
        source,
    };
    let nvme = || {
        caps.nvme
            .as_ref()
            .ok_or_else(|| merr(MethodError::Msg("not an NVMe namespace".into()).into()))
    };
    let ata_id = || {
        caps.ata
            .as_ref()
            .ok_or_else(|| merr(MethodError::Msg("not an ATA device".into()).into()))
    };
    let phase = method.name();
    match method {
        FullMethod::NvmeFormatCryptoErase => {
            nvme_format(file, nvme()?, SecureErase::Cryptographic, rep).map_err(merr)
        }
        FullMethod::NvmeFormatUserDataErase => {
            nvme_format(file, nvme()?, SecureErase::UserData, rep).map_err(merr)
        }
        FullMethod::NvmeSanitizeCryptoErase => {
            nvme()?;
            nvme_sanitize(file, SanitizeAction::CryptoErase, size, rep).map_err(merr)
        }
        FullMethod::NvmeSanitizeBlockErase => {
            nvme()?;
            nvme_sanitize(file, SanitizeAction::BlockErase, size, rep).map_err(merr)
        }
        FullMethod::AtaEnhancedSecurityErase => {
            ata_erase(file, device, ata_id()?, true, rep).map_err(merr)
        }
        FullMethod::AtaSecurityErase => {
            ata_erase(file, device, ata_id()?, false, rep).map_err(merr)
        }
        FullMethod::SecureDiscard => {
            ranged(size, rep, phase, |o, n| block::secure_discard(file, o, n)).map_err(merr)
        }
        FullMethod::Discard => {
            ranged(size, rep, phase, |o, n| block::discard(file, o, n)).map_err(merr)
        }
        FullMethod::WriteZeroes => {
            ranged(size, rep, phase, |o, n| block::zero_out(file, o, n)).map_err(merr)
        }
        FullMethod::PunchHole => {
            ranged(size, rep, phase, |o, n| block::punch_hole(file, o, n)).map_err(merr)
        }
        FullMethod::ZeroOverwrite => zero::overwrite(&target.resolved, device, size, rep),
    }
}

/// How many blocks are read back after a method that promises zeroes.
const ZERO_SAMPLES: usize = 256;

/// Checks a method's result: no signature anywhere libblkid looks, and zeroes at sampled
/// blocks when the method promises zeroes.
fn verify(method: FullMethod, file: &File, target: &Target, size: u64) -> Result<(), WipeError> {
    let device = &target.path;
    file.sync_all().map_err(|source| WipeError::Sync {
        device: device.clone(),
        source,
    })?;
    if target.is_block_device {
        // Drop cached pages so the checks read what the device now returns.
        block::flush_buffers(file).map_err(|source| WipeError::Sync {
            device: device.clone(),
            source,
        })?;
    }
    if method.promises_zeroes() {
        zero::verify_zero_samples(&target.resolved, device, size, ZERO_SAMPLES, method)?;
    }
    let found = metadata::remaining(
        file,
        device,
        &[Region {
            start: 0,
            len: 0,
            partition: None,
        }],
    )?;
    if !found.is_empty() {
        return Err(WipeError::Remains {
            device: device.clone(),
            found: found.join(", "),
        });
    }
    Ok(())
}

/// **Destroys data.** The full wipe of one device (see the module docs).
pub(crate) fn wipe(
    device: &Path,
    opts: &WipeOptions,
    only: Option<&[FullMethod]>,
    report: &mut DeviceReport,
) -> Result<(), WipeError> {
    let (target, file, size) = metadata::check_and_open(device, opts)?;
    report.size_bytes = Some(size);
    let caps = capabilities(&file, &target, opts, report);
    let plan = plan(&caps);
    let allowed = |m: &FullMethod| only.is_none_or(|o| o.contains(m));
    for (m, why) in &plan.skipped {
        if allowed(m) {
            report.attempts.push(Attempt {
                method: *m,
                outcome: "skipped".into(),
                detail: Some(why.clone()),
            });
        }
    }
    let mut rep = Reporter::new(opts.progress.clone(), device, Some(size));
    let mut last: Option<WipeError> = None;
    for method in plan.methods.into_iter().filter(allowed) {
        tracing::info!(device = %device.display(), method = %method, "full wipe: trying");
        let result = run(method, &file, &target, &caps, size, &mut rep)
            .and_then(|()| verify(method, &file, &target, size));
        match result {
            Ok(()) => {
                report.attempts.push(Attempt {
                    method,
                    outcome: "ok".into(),
                    detail: None,
                });
                report.method = Some(method.name().into());
                metadata::sync_and_reread(&file, device, &target, report)?;
                rep.done(size);
                return Ok(());
            }
            Err(e) => {
                let chain = error_chain(&e);
                tracing::warn!(device = %device.display(), method = %method, error = %chain, "full wipe: method failed, trying the next");
                report.attempts.push(Attempt {
                    method,
                    outcome: "failed".into(),
                    detail: Some(chain),
                });
                last = Some(e);
            }
        }
    }
    Err(match last {
        Some(e) => WipeError::AllMethodsFailed {
            device: device.into(),
            last: Box::new(e),
        },
        None => WipeError::NoMethod {
            device: device.into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use FullMethod::*;

    fn nvme(oacs: u16, fna: u8, sanicap: u32, active: Option<usize>) -> NvmeCaps {
        NvmeCaps {
            nsid: 1,
            controller: IdentifyController {
                oacs,
                fna,
                sanicap,
                nn: 32,
                ..Default::default()
            },
            namespace: IdentifyNamespace::default(),
            active_namespaces: active,
        }
    }

    fn ata(word128: u16) -> AtaIdentity {
        AtaIdentity {
            security_supported: word128 & 1 != 0,
            security_enabled: word128 & 2 != 0,
            frozen: word128 & 8 != 0,
            enhanced_erase_supported: word128 & 32 != 0,
            ..Default::default()
        }
    }

    #[test]
    fn nvme_with_everything_prefers_crypto_format() {
        let caps = Capabilities {
            block_device: true,
            whole_disk: true,
            nvme: Some(nvme(0x2, 0x4, 0x3, Some(1))),
            discard: true,
            write_zeroes: true,
            ..Default::default()
        };
        let p = plan(&caps);
        assert_eq!(
            p.methods,
            vec![
                NvmeFormatCryptoErase,
                NvmeSanitizeCryptoErase,
                NvmeSanitizeBlockErase,
                NvmeFormatUserDataErase,
                SecureDiscard,
                Discard,
                WriteZeroes,
                ZeroOverwrite
            ]
        );
        assert!(p.skipped.is_empty());
    }

    #[test]
    fn nvme_without_crypto_or_sanitize_formats_user_data() {
        let caps = Capabilities {
            block_device: true,
            whole_disk: true,
            nvme: Some(nvme(0x2, 0x0, 0, Some(1))),
            ..Default::default()
        };
        let p = plan(&caps);
        assert_eq!(
            p.methods,
            vec![NvmeFormatUserDataErase, SecureDiscard, ZeroOverwrite]
        );
        let skipped: Vec<_> = p.skipped.iter().map(|(m, _)| *m).collect();
        assert_eq!(
            skipped,
            vec![
                NvmeFormatCryptoErase,
                NvmeSanitizeCryptoErase,
                NvmeSanitizeBlockErase,
                Discard,
                WriteZeroes
            ]
        );
    }

    #[test]
    fn nvme_with_other_namespaces_never_erases_them() {
        // FNA bit 1: secure erase applies to all namespaces; two namespaces active.
        let caps = Capabilities {
            block_device: true,
            whole_disk: true,
            nvme: Some(nvme(0x2, 0x6, 0x3, Some(2))),
            discard: true,
            ..Default::default()
        };
        let p = plan(&caps);
        assert_eq!(p.methods, vec![SecureDiscard, Discard, ZeroOverwrite]);
        let why = &p
            .skipped
            .iter()
            .find(|(m, _)| *m == NvmeSanitizeCryptoErase)
            .unwrap()
            .1;
        assert!(why.contains("2 active namespaces"), "{why}");
        // Per-namespace format (FNA 0x4): format is fine, sanitize is not.
        let caps = Capabilities {
            block_device: true,
            whole_disk: true,
            nvme: Some(nvme(0x2, 0x4, 0x3, Some(2))),
            ..Default::default()
        };
        assert_eq!(
            plan(&caps).methods,
            vec![
                NvmeFormatCryptoErase,
                NvmeFormatUserDataErase,
                SecureDiscard,
                ZeroOverwrite
            ]
        );
        // Unknown namespace count: treated as several.
        let caps = Capabilities {
            block_device: true,
            whole_disk: true,
            nvme: Some(nvme(0x2, 0x4, 0x3, None)),
            ..Default::default()
        };
        assert_eq!(
            plan(&caps).methods,
            vec![
                NvmeFormatCryptoErase,
                NvmeFormatUserDataErase,
                SecureDiscard,
                ZeroOverwrite
            ]
        );
    }

    #[test]
    fn ata_enhanced_then_normal_and_frozen_skipped() {
        let caps = Capabilities {
            block_device: true,
            whole_disk: true,
            ata: Some(ata(0b10_0001)),
            discard: true,
            ..Default::default()
        };
        assert_eq!(
            plan(&caps).methods,
            vec![
                AtaEnhancedSecurityErase,
                AtaSecurityErase,
                SecureDiscard,
                Discard,
                ZeroOverwrite
            ]
        );
        let caps = Capabilities {
            block_device: true,
            whole_disk: true,
            ata: Some(ata(0b1)),
            ..Default::default()
        };
        assert_eq!(
            plan(&caps).methods,
            vec![AtaSecurityErase, SecureDiscard, ZeroOverwrite]
        );
        let caps = Capabilities {
            block_device: true,
            whole_disk: true,
            ata: Some(ata(0b10_1001)),
            ..Default::default()
        };
        let p = plan(&caps);
        assert_eq!(p.methods, vec![SecureDiscard, ZeroOverwrite]);
        assert!(p
            .skipped
            .iter()
            .any(|(m, why)| *m == AtaSecurityErase && why.contains("frozen")));
        let caps = Capabilities {
            block_device: true,
            whole_disk: true,
            ata: Some(ata(0b11)),
            ..Default::default()
        };
        assert!(plan(&caps)
            .skipped
            .iter()
            .any(|(_, why)| why.contains("password is already set")));
    }

    #[test]
    fn never_device_wide_through_a_partition() {
        let caps = Capabilities {
            block_device: true,
            whole_disk: false,
            nvme: Some(nvme(0x2, 0x4, 0x3, Some(1))),
            ata: Some(ata(0b10_0001)),
            discard: true,
            ..Default::default()
        };
        let p = plan(&caps);
        assert_eq!(p.methods, vec![SecureDiscard, Discard, ZeroOverwrite]);
        assert_eq!(
            p.skipped
                .iter()
                .filter(|(_, why)| why.contains("not a whole disk"))
                .count(),
            6
        );
    }

    #[test]
    fn whole_disk_detection_from_sysfs() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = tmp.path().join("block/sda");
        std::fs::create_dir_all(disk.join("device")).unwrap();
        std::fs::create_dir_all(disk.join("sda1")).unwrap();
        std::fs::write(disk.join("sda1/partition"), "1\n").unwrap();
        let dm = tmp.path().join("block/dm-0");
        std::fs::create_dir_all(dm.join("dm")).unwrap();
        assert!(is_whole_physical_disk(&disk));
        assert!(!is_whole_physical_disk(&disk.join("sda1")));
        assert!(!is_whole_physical_disk(&dm));
        assert!(!is_whole_physical_disk(&tmp.path().join("block/loop0")));
    }

    #[test]
    fn regular_file_punches_then_overwrites() {
        let p = plan(&Capabilities::default());
        assert_eq!(p.methods, vec![PunchHole, ZeroOverwrite]);
    }

    #[test]
    fn names_match_serde() {
        for m in FullMethod::ALL {
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.name())
            );
        }
    }

    #[test]
    fn full_wipe_of_regular_file_punches_a_hole() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![0x5au8; 4 << 20]).unwrap();
        let opts = WipeOptions {
            mode: crate::Mode::Full,
            guard: crate::guard::GuardPolicy {
                allow_regular_file: true,
                ..Default::default()
            },
            progress: None,
        };
        let r = crate::wipe_device(f.path(), &opts);
        assert!(r.ok, "{:?}", r);
        assert_eq!(r.method.as_deref(), Some("punch-hole"));
        assert!(std::fs::read(f.path()).unwrap().iter().all(|&b| b == 0));
        std::fs::write(f.path(), vec![0x5au8; 4 << 20]).unwrap();
        let r = crate::wipe_device_with(f.path(), &opts, Some(&[ZeroOverwrite]));
        assert!(r.ok, "{:?}", r);
        assert_eq!(r.method.as_deref(), Some("zero-overwrite"));
        assert!(std::fs::read(f.path()).unwrap().iter().all(|&b| b == 0));
    }
}
