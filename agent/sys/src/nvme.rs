//! NVMe admin commands through the kernel's passthrough ioctl (`<linux/nvme_ioctl.h>`):
//! Identify (controller, namespace, active namespace list), Format NVM with secure erase,
//! Sanitize, and the Sanitize Status log page.
//!
//! Command encodings and identify-data parsing are pure functions with unit tests; the ioctl
//! wrappers are thin. The admin ioctl works on a namespace block device (`/dev/nvme0n1`) as
//! well as on the controller character device, so callers pass the disk they opened.
//!
//! Field offsets are from the NVM Express Base Specification 2.0 (Figure 275, Identify
//! Controller; NVM Command Set Specification Figure 97, Identify Namespace; Figure 372,
//! Sanitize; Figure 288, Sanitize Status log page).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use crate::AlignedBuf;

/// `struct nvme_passthru_cmd` (alias `struct nvme_admin_cmd`) from `<linux/nvme_ioctl.h>`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct PassthruCmd {
    opcode: u8,
    flags: u8,
    rsvd1: u16,
    nsid: u32,
    cdw2: u32,
    cdw3: u32,
    metadata: u64,
    addr: u64,
    metadata_len: u32,
    data_len: u32,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
    cdw13: u32,
    cdw14: u32,
    cdw15: u32,
    timeout_ms: u32,
    result: u32,
}

const _: () = assert!(std::mem::size_of::<PassthruCmd>() == 72);

/// `#define NVME_IOCTL_ID _IO('N', 0x40)` — the namespace ID of a namespace device.
const NVME_IOCTL_ID: libc::c_ulong = 0x4e40;
/// `#define NVME_IOCTL_ADMIN_CMD _IOWR('N', 0x41, struct nvme_admin_cmd)`:
/// `(3 << 30) | (72 << 16) | ('N' << 8) | 0x41`.
const NVME_IOCTL_ADMIN_CMD: libc::c_ulong = 0xc048_4e41;

/// Admin opcodes (Base Specification, Figure 138).
const OPC_GET_LOG_PAGE: u8 = 0x02;
const OPC_IDENTIFY: u8 = 0x06;
const OPC_FORMAT_NVM: u8 = 0x80;
const OPC_SANITIZE: u8 = 0x84;

/// Identify CNS values.
const CNS_NAMESPACE: u32 = 0x00;
const CNS_CONTROLLER: u32 = 0x01;
const CNS_ACTIVE_NS_LIST: u32 = 0x02;

/// Log page identifier of the Sanitize Status log.
const LID_SANITIZE_STATUS: u8 = 0x81;

/// Broadcast namespace ID ("all namespaces").
pub const NSID_ALL: u32 = 0xffff_ffff;

/// Errors from an NVMe admin command; the caller adds which device.
#[derive(Debug, thiserror::Error)]
pub enum NvmeError {
    #[error("NVMe admin ioctl failed")]
    Ioctl(#[source] io::Error),
    #[error("NVMe command failed with status {status:#06x} ({})", status_name(*status))]
    Status { status: u16 },
}

/// A short name for the common generic status codes (Base Specification, Figure 102) and the
/// ones Format and Sanitize return.
pub fn status_name(status: u16) -> &'static str {
    let sct = (status >> 8) & 0x7;
    let sc = status & 0xff;
    match (sct, sc) {
        (0, 0x01) => "invalid command opcode",
        (0, 0x02) => "invalid field in command",
        (0, 0x04) => "data transfer error",
        (0, 0x06) => "internal error",
        (0, 0x0b) => "invalid namespace or format",
        (0, 0x1c) => "sanitize failed",
        (0, 0x1d) => "sanitize in progress",
        (0, 0x20) => "namespace is write protected",
        (1, 0x0a) => "invalid format",
        (1, 0x15) => "namespace insufficient capacity",
        (1, 0x1a) => "prohibited by sanitize or format policy",
        _ => "see the NVMe status code tables",
    }
}

fn admin(file: &File, cmd: &mut PassthruCmd) -> Result<u32, NvmeError> {
    // SAFETY: NVME_IOCTL_ADMIN_CMD is `_IOWR('N', 0x41, struct nvme_admin_cmd)`; cmd points to
    // a live, correctly laid out 72-byte struct (checked by the const assert above). When
    // `addr`/`data_len` are set, they describe an AlignedBuf the caller keeps alive and
    // exclusively borrowed for the duration of this call.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            NVME_IOCTL_ADMIN_CMD as _,
            cmd as *mut PassthruCmd,
        )
    };
    if rc < 0 {
        return Err(NvmeError::Ioctl(io::Error::last_os_error()));
    }
    if rc > 0 {
        // A positive return is the NVMe status field (SCT and SC, without the phase bit).
        return Err(NvmeError::Status { status: rc as u16 });
    }
    Ok(cmd.result)
}

fn admin_read(file: &File, mut cmd: PassthruCmd, len: usize) -> Result<AlignedBuf, NvmeError> {
    let mut buf = AlignedBuf::zeroed(len);
    buf.set_len(len);
    cmd.addr = buf.as_mut_ptr() as u64;
    cmd.data_len = len as u32;
    admin(file, &mut cmd)?;
    Ok(buf)
}

/// The namespace ID of an NVMe namespace device; `None` when `file` is not one (ENOTTY,
/// EINVAL: the ioctl is unknown to the driver).
pub fn namespace_id(file: &File) -> io::Result<Option<u32>> {
    // SAFETY: NVME_IOCTL_ID is `_IO('N', 0x40)`: no argument is read or written; the
    // namespace ID is the return value. Other drivers reject the unknown ioctl.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), NVME_IOCTL_ID as _, 0) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOTTY)
            | Some(libc::EINVAL)
            | Some(libc::ENOSYS)
            | Some(libc::EOPNOTSUPP) => Ok(None),
            _ => Err(err),
        };
    }
    Ok(Some(rc as u32))
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}
fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_string()
}

/// The parts of the Identify Controller data structure (4096 bytes) an erase needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentifyController {
    pub serial: String,
    pub model: String,
    pub firmware: String,
    /// OACS (bytes 257:256). Bit 1: Format NVM supported.
    pub oacs: u16,
    /// SANICAP (bytes 331:328). Bit 0 crypto erase, bit 1 block erase, bit 2 overwrite.
    pub sanicap: u32,
    /// NN (bytes 519:516): the largest namespace ID the controller supports.
    pub nn: u32,
    /// FNA (byte 524). Bit 0: a format applies to all namespaces; bit 1: a secure erase
    /// applies to all namespaces; bit 2: cryptographic erase is supported by Format NVM.
    pub fna: u8,
}

impl IdentifyController {
    pub const LEN: usize = 4096;

    /// Parses the Identify Controller data structure. `None` if `b` is too short.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < Self::LEN {
            return None;
        }
        Some(Self {
            serial: ascii(&b[4..24]),
            model: ascii(&b[24..64]),
            firmware: ascii(&b[64..72]),
            oacs: le16(b, 256),
            sanicap: le32(b, 328),
            nn: le32(b, 516),
            fna: b[524],
        })
    }
    pub fn format_supported(&self) -> bool {
        self.oacs & (1 << 1) != 0
    }
    pub fn format_applies_to_all_namespaces(&self) -> bool {
        self.fna & 1 != 0
    }
    pub fn secure_erase_applies_to_all_namespaces(&self) -> bool {
        self.fna & (1 << 1) != 0
    }
    pub fn format_crypto_erase_supported(&self) -> bool {
        self.fna & (1 << 2) != 0
    }
    pub fn sanitize_crypto_supported(&self) -> bool {
        self.sanicap & 1 != 0
    }
    pub fn sanitize_block_erase_supported(&self) -> bool {
        self.sanicap & (1 << 1) != 0
    }
    pub fn sanitize_overwrite_supported(&self) -> bool {
        self.sanicap & (1 << 2) != 0
    }
}

/// The parts of the Identify Namespace data structure (NVM command set) a format needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentifyNamespace {
    /// NSZE (bytes 7:0), in logical blocks.
    pub nsze: u64,
    /// NLBAF (byte 25): number of LBA formats, zero-based.
    pub nlbaf: u8,
    /// FLBAS (byte 26): bits 3:0 low bits of the format index, bit 4 metadata at the end of
    /// the data LBA (extended), bits 6:5 high bits of the format index (when NLBAF > 16).
    pub flbas: u8,
    /// DPS (byte 29): bits 2:0 protection information type, bit 3 PI first (PIL).
    pub dps: u8,
    /// LBADS of each LBA format (byte 2 of each 4-byte descriptor from byte 128): log2 of
    /// the data size.
    pub lbads: Vec<u8>,
}

impl IdentifyNamespace {
    pub const LEN: usize = 4096;

    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < Self::LEN {
            return None;
        }
        let nlbaf = b[25];
        let lbads = (0..=nlbaf.min(63) as usize)
            .map(|i| b[128 + 4 * i + 2])
            .collect();
        Some(Self {
            nsze: le64(b, 0),
            nlbaf,
            flbas: b[26],
            dps: b[29],
            lbads,
        })
    }

    /// The index of the LBA format in use.
    pub fn current_lbaf(&self) -> u8 {
        let low = self.flbas & 0x0f;
        if self.nlbaf >= 16 {
            low | (((self.flbas >> 5) & 0x3) << 4)
        } else {
            low
        }
    }

    /// Logical block size in bytes of the format in use.
    pub fn block_size(&self) -> Option<u64> {
        let ds = *self.lbads.get(self.current_lbaf() as usize)?;
        (9..=16).contains(&ds).then(|| 1u64 << ds)
    }

    /// Format parameters that keep the current LBA format, metadata and protection settings
    /// and only add the secure erase: a wipe must not change the block size under the OS.
    pub fn format_keeping_layout(&self, ses: SecureErase) -> FormatNvm {
        FormatNvm {
            lbaf: self.current_lbaf(),
            mset: self.flbas & (1 << 4) != 0,
            pi: self.dps & 0x7,
            pil: self.dps & (1 << 3) != 0,
            ses,
        }
    }
}

/// Secure Erase Settings of Format NVM (CDW10 bits 11:9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureErase {
    None = 0,
    UserData = 1,
    Cryptographic = 2,
}

/// Format NVM command parameters (Base Specification, Figure 312).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatNvm {
    /// LBA format index (0..=63).
    pub lbaf: u8,
    /// Metadata settings: metadata transferred as part of an extended data LBA.
    pub mset: bool,
    /// Protection information type (0..=3).
    pub pi: u8,
    /// Protection information location: first bytes of metadata.
    pub pil: bool,
    pub ses: SecureErase,
}

impl FormatNvm {
    /// CDW10: LBAFL 3:0, MSET 4, PI 7:5, PIL 8, SES 11:9, LBAFU 13:12.
    pub fn cdw10(&self) -> u32 {
        let lbaf = u32::from(self.lbaf & 0x3f);
        (lbaf & 0xf)
            | (u32::from(self.mset) << 4)
            | (u32::from(self.pi & 0x7) << 5)
            | (u32::from(self.pil) << 8)
            | ((self.ses as u32) << 9)
            | ((lbaf >> 4) << 12)
    }
}

/// Sanitize Action (CDW10 bits 2:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanitizeAction {
    ExitFailureMode = 1,
    BlockErase = 2,
    Overwrite = 3,
    CryptoErase = 4,
}

/// Sanitize command parameters (Base Specification, Figure 372).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sanitize {
    pub action: SanitizeAction,
    /// Allow Unrestricted Sanitize Exit: after a failed sanitize the host may leave the
    /// failure state with Exit Failure Mode instead of having to sanitize again.
    pub ause: bool,
    /// Overwrite pass count (1..=16; 16 encodes as 0). Only for `Overwrite`.
    pub owpass: u8,
    /// No-Deallocate After Sanitize.
    pub ndas: bool,
}

impl Sanitize {
    /// CDW10: SANACT 2:0, AUSE 3, OWPASS 7:4, OIPBP 8, NDAS 9.
    pub fn cdw10(&self) -> u32 {
        (self.action as u32)
            | (u32::from(self.ause) << 3)
            | (u32::from(self.owpass & 0xf) << 4)
            | (u32::from(self.ndas) << 9)
    }
}

/// SSTAT bits 2:0 of the Sanitize Status log page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanitizeState {
    NeverSanitized,
    Completed,
    InProgress,
    Failed,
    CompletedNoDeallocate,
    Unknown(u8),
}

/// The Sanitize Status log page (LID 0x81), first fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SanitizeStatus {
    /// SPROG: progress of the running sanitize, in 65536ths.
    pub progress: u16,
    pub state: SanitizeState,
    /// SSTAT bits 7:3: number of completed overwrite passes.
    pub passes: u8,
}

impl SanitizeStatus {
    pub const LEN: usize = 512;

    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < 4 {
            return None;
        }
        let sstat = le16(b, 2);
        let state = match sstat & 0x7 {
            0 => SanitizeState::NeverSanitized,
            1 => SanitizeState::Completed,
            2 => SanitizeState::InProgress,
            3 => SanitizeState::Failed,
            4 => SanitizeState::CompletedNoDeallocate,
            n => SanitizeState::Unknown(n as u8),
        };
        Some(Self {
            progress: le16(b, 0),
            state,
            passes: ((sstat >> 3) & 0x1f) as u8,
        })
    }
}

/// Get Log Page CDW10: LID 7:0, NUMDL 31:16 (number of dwords minus one, low half).
pub fn get_log_page_cdw10(lid: u8, len: usize) -> u32 {
    let numd = (len / 4).saturating_sub(1) as u32;
    u32::from(lid) | ((numd & 0xffff) << 16)
}

/// Identify Controller (CNS 01h).
pub fn identify_controller(file: &File) -> Result<IdentifyController, NvmeError> {
    let cmd = PassthruCmd {
        opcode: OPC_IDENTIFY,
        cdw10: CNS_CONTROLLER,
        ..Default::default()
    };
    let buf = admin_read(file, cmd, IdentifyController::LEN)?;
    Ok(IdentifyController::parse(&buf).expect("buffer has LEN bytes"))
}

/// Identify Namespace (CNS 00h) for `nsid`.
pub fn identify_namespace(file: &File, nsid: u32) -> Result<IdentifyNamespace, NvmeError> {
    let cmd = PassthruCmd {
        opcode: OPC_IDENTIFY,
        nsid,
        cdw10: CNS_NAMESPACE,
        ..Default::default()
    };
    let buf = admin_read(file, cmd, IdentifyNamespace::LEN)?;
    Ok(IdentifyNamespace::parse(&buf).expect("buffer has LEN bytes"))
}

/// Parses an Active Namespace ID list (1024 little-endian IDs, zero-terminated).
pub fn parse_ns_list(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .take_while(|&id| id != 0)
        .collect()
}

/// The active namespace IDs of the controller (CNS 02h, first 1024).
pub fn active_namespaces(file: &File) -> Result<Vec<u32>, NvmeError> {
    let cmd = PassthruCmd {
        opcode: OPC_IDENTIFY,
        nsid: 0,
        cdw10: CNS_ACTIVE_NS_LIST,
        ..Default::default()
    };
    let buf = admin_read(file, cmd, 4096)?;
    Ok(parse_ns_list(&buf))
}

/// **Destroys data.** Format NVM on `nsid` with the given settings. Blocks until the
/// controller completes it (a user-data erase can take as long as writing the whole drive),
/// bounded by `timeout_ms`.
pub fn format_nvm(
    file: &File,
    nsid: u32,
    params: FormatNvm,
    timeout_ms: u32,
) -> Result<(), NvmeError> {
    let mut cmd = PassthruCmd {
        opcode: OPC_FORMAT_NVM,
        nsid,
        cdw10: params.cdw10(),
        timeout_ms,
        ..Default::default()
    };
    admin(file, &mut cmd).map(|_| ())
}

/// **Destroys data on every namespace of the NVM subsystem.** Starts a sanitize; it runs in
/// the background — poll [`sanitize_status`] until it leaves `InProgress`.
pub fn sanitize(file: &File, params: Sanitize) -> Result<(), NvmeError> {
    let mut cmd = PassthruCmd {
        opcode: OPC_SANITIZE,
        nsid: 0,
        cdw10: params.cdw10(),
        ..Default::default()
    };
    admin(file, &mut cmd).map(|_| ())
}

/// Reads the Sanitize Status log page.
pub fn sanitize_status(file: &File) -> Result<SanitizeStatus, NvmeError> {
    let cmd = PassthruCmd {
        opcode: OPC_GET_LOG_PAGE,
        nsid: NSID_ALL,
        cdw10: get_log_page_cdw10(LID_SANITIZE_STATUS, SanitizeStatus::LEN),
        ..Default::default()
    };
    let buf = admin_read(file, cmd, SanitizeStatus::LEN)?;
    Ok(SanitizeStatus::parse(&buf).expect("buffer has LEN bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(b: &mut [u8], off: usize, v: &[u8]) {
        b[off..off + v.len()].copy_from_slice(v);
    }

    #[test]
    fn identify_controller_fields() {
        let mut b = vec![0u8; 4096];
        put(&mut b, 4, b"S4EWNX0R123456      ");
        put(&mut b, 24, b"Samsung SSD 980 PRO 1TB                 ");
        put(&mut b, 64, b"5B2QGXA7");
        put(&mut b, 256, &0x0017u16.to_le_bytes()); // security, format, fw download, ns mgmt
        put(&mut b, 328, &0x0000_0003u32.to_le_bytes()); // crypto + block erase
        put(&mut b, 516, &1u32.to_le_bytes());
        b[524] = 0b100; // crypto erase supported, per-namespace format
        let id = IdentifyController::parse(&b).unwrap();
        assert_eq!(id.serial, "S4EWNX0R123456");
        assert_eq!(id.model, "Samsung SSD 980 PRO 1TB");
        assert_eq!(id.firmware, "5B2QGXA7");
        assert!(id.format_supported());
        assert!(id.format_crypto_erase_supported());
        assert!(!id.format_applies_to_all_namespaces());
        assert!(!id.secure_erase_applies_to_all_namespaces());
        assert!(id.sanitize_crypto_supported());
        assert!(id.sanitize_block_erase_supported());
        assert!(!id.sanitize_overwrite_supported());
        assert_eq!(id.nn, 1);
        assert!(IdentifyController::parse(&b[..100]).is_none());
    }

    #[test]
    fn identify_namespace_current_format() {
        let mut b = vec![0u8; 4096];
        put(&mut b, 0, &1_953_525_168u64.to_le_bytes());
        b[25] = 1; // two formats
        b[26] = 0x01; // using format 1
        b[29] = 0x0; // no PI
        put(&mut b, 128, &[0, 0, 9, 0]); // 512 B
        put(&mut b, 132, &[0, 0, 12, 0]); // 4 KiB
        let ns = IdentifyNamespace::parse(&b).unwrap();
        assert_eq!(ns.nsze, 1_953_525_168);
        assert_eq!(ns.current_lbaf(), 1);
        assert_eq!(ns.block_size(), Some(4096));
        let f = ns.format_keeping_layout(SecureErase::Cryptographic);
        assert_eq!(
            f,
            FormatNvm {
                lbaf: 1,
                mset: false,
                pi: 0,
                pil: false,
                ses: SecureErase::Cryptographic
            }
        );
        assert_eq!(f.cdw10(), 0x401); // SES=2 at bits 11:9, LBAF 1
    }

    #[test]
    fn identify_namespace_high_lbaf_bits_and_pi() {
        let mut b = vec![0u8; 4096];
        b[25] = 19; // 20 formats: FLBAS bits 6:5 are the high bits of the index
        b[26] = 0b0011_0010; // low 2, mset, high 1 → index 18
        b[29] = 0b1001; // PI type 1, first
        put(&mut b, 128 + 4 * 18, &[0, 0, 12, 0]);
        let ns = IdentifyNamespace::parse(&b).unwrap();
        assert_eq!(ns.current_lbaf(), 18);
        assert_eq!(ns.block_size(), Some(4096));
        let f = ns.format_keeping_layout(SecureErase::UserData);
        assert_eq!(
            f,
            FormatNvm {
                lbaf: 18,
                mset: true,
                pi: 1,
                pil: true,
                ses: SecureErase::UserData
            }
        );
        // LBAFL=2, MSET, PI=1 <<5, PIL <<8, SES=1 <<9, LBAFU=1 <<12
        assert_eq!(f.cdw10(), 2 | 1 << 4 | 1 << 5 | 1 << 8 | 1 << 9 | 1 << 12);
    }

    #[test]
    fn format_cdw10_table() {
        let f = |lbaf, ses| {
            FormatNvm {
                lbaf,
                mset: false,
                pi: 0,
                pil: false,
                ses,
            }
            .cdw10()
        };
        assert_eq!(f(0, SecureErase::None), 0);
        assert_eq!(f(0, SecureErase::UserData), 0x200);
        assert_eq!(f(0, SecureErase::Cryptographic), 0x400);
        assert_eq!(f(0x3f, SecureErase::None), 0xf | 0x3 << 12);
    }

    #[test]
    fn sanitize_cdw10_table() {
        let s = |action, ause, owpass, ndas| {
            Sanitize {
                action,
                ause,
                owpass,
                ndas,
            }
            .cdw10()
        };
        assert_eq!(s(SanitizeAction::CryptoErase, false, 0, false), 4);
        assert_eq!(s(SanitizeAction::BlockErase, true, 0, false), 2 | 8);
        assert_eq!(s(SanitizeAction::Overwrite, false, 3, false), 3 | 3 << 4);
        assert_eq!(
            s(SanitizeAction::ExitFailureMode, false, 0, true),
            1 | 1 << 9
        );
    }

    #[test]
    fn sanitize_status_and_log_page_cdw10() {
        let mut b = [0u8; 512];
        put(&mut b, 0, &0x8000u16.to_le_bytes());
        put(&mut b, 2, &(2u16 | 3 << 3).to_le_bytes());
        let s = SanitizeStatus::parse(&b).unwrap();
        assert_eq!(
            s,
            SanitizeStatus {
                progress: 0x8000,
                state: SanitizeState::InProgress,
                passes: 3
            }
        );
        put(&mut b, 2, &1u16.to_le_bytes());
        assert_eq!(
            SanitizeStatus::parse(&b).unwrap().state,
            SanitizeState::Completed
        );
        // 512 bytes = 128 dwords → NUMDL 127.
        assert_eq!(get_log_page_cdw10(0x81, 512), 0x81 | 127 << 16);
    }

    #[test]
    fn ns_list_stops_at_zero() {
        let mut b = vec![0u8; 4096];
        put(&mut b, 0, &1u32.to_le_bytes());
        put(&mut b, 4, &3u32.to_le_bytes());
        assert_eq!(parse_ns_list(&b), vec![1, 3]);
    }

    #[test]
    fn status_names() {
        assert_eq!(status_name(0x0002), "invalid field in command");
        assert_eq!(status_name(0x010a), "invalid format");
        let e = NvmeError::Status { status: 0x1d };
        assert_eq!(
            e.to_string(),
            "NVMe command failed with status 0x001d (sanitize in progress)"
        );
    }

    #[test]
    fn not_nvme_on_regular_file() {
        let f = tempfile::tempfile().unwrap();
        assert_eq!(namespace_id(&f).unwrap(), None);
    }
}
