//! ATA commands through SCSI generic (`SG_IO`, `<scsi/sg.h>`) as ATA PASS-THROUGH (16)
//! (SAT-4, opcode 85h): IDENTIFY DEVICE and the Security feature set commands an erase
//! needs (SET PASSWORD, ERASE PREPARE, ERASE UNIT, DISABLE PASSWORD, UNLOCK).
//!
//! CDB building, IDENTIFY parsing and sense decoding are pure functions with unit tests; the
//! ioctl wrapper is thin. Word numbers are from ACS-3 (T13/2161-D) Table 45, IDENTIFY DEVICE
//! data.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use crate::AlignedBuf;

/// `struct sg_io_hdr` from `<scsi/sg.h>`.
#[repr(C)]
#[derive(Debug)]
struct SgIoHdr {
    interface_id: libc::c_int,
    dxfer_direction: libc::c_int,
    cmd_len: libc::c_uchar,
    mx_sb_len: libc::c_uchar,
    iovec_count: libc::c_ushort,
    dxfer_len: libc::c_uint,
    dxferp: *mut libc::c_void,
    cmdp: *const libc::c_uchar,
    sbp: *mut libc::c_uchar,
    timeout: libc::c_uint,
    flags: libc::c_uint,
    pack_id: libc::c_int,
    usr_ptr: *mut libc::c_void,
    status: libc::c_uchar,
    masked_status: libc::c_uchar,
    msg_status: libc::c_uchar,
    sb_len_wr: libc::c_uchar,
    host_status: libc::c_ushort,
    driver_status: libc::c_ushort,
    resid: libc::c_int,
    duration: libc::c_uint,
    info: libc::c_uint,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<SgIoHdr>() == 88);

/// `#define SG_IO 0x2285`
const SG_IO: libc::c_ulong = 0x2285;
/// `#define SG_DXFER_NONE (-1)`
const SG_DXFER_NONE: libc::c_int = -1;
/// `#define SG_DXFER_TO_DEV (-2)`
const SG_DXFER_TO_DEV: libc::c_int = -2;
/// `#define SG_DXFER_FROM_DEV (-3)`
const SG_DXFER_FROM_DEV: libc::c_int = -3;

/// SCSI status CHECK CONDITION.
const SAM_STAT_CHECK_CONDITION: u8 = 0x02;

/// ATA command codes (ACS-3).
pub const ATA_IDENTIFY_DEVICE: u8 = 0xec;
pub const ATA_SECURITY_SET_PASSWORD: u8 = 0xf1;
pub const ATA_SECURITY_UNLOCK: u8 = 0xf2;
pub const ATA_SECURITY_ERASE_PREPARE: u8 = 0xf3;
pub const ATA_SECURITY_ERASE_UNIT: u8 = 0xf4;
pub const ATA_SECURITY_DISABLE_PASSWORD: u8 = 0xf6;

/// SAT PROTOCOL field values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    NonData = 3,
    PioDataIn = 4,
    PioDataOut = 5,
}

/// Builds an ATA PASS-THROUGH (16) CDB for a 28-bit command with at most one 512-byte
/// sector of PIO data. `ck_cond` asks the SATL to return the ATA registers in the sense data
/// even on success, so the caller can check the ATA status.
pub fn ata16_cdb(
    protocol: Protocol,
    command: u8,
    features: u8,
    count: u8,
    ck_cond: bool,
) -> [u8; 16] {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x85;
    cdb[1] = (protocol as u8) << 1; // MULTIPLE_COUNT 0, EXTEND 0
    let (t_dir, byt_blok, t_length) = match protocol {
        Protocol::NonData => (0, 0, 0),
        Protocol::PioDataIn => (1, 1, 2), // from device, in blocks, length in COUNT
        Protocol::PioDataOut => (0, 1, 2), // to device, in blocks, length in COUNT
    };
    cdb[2] = (u8::from(ck_cond) << 5) | (t_dir << 3) | (byt_blok << 2) | t_length;
    cdb[4] = features;
    cdb[6] = count;
    cdb[13] = 0x40; // DEVICE: LBA mode bit, as hdparm and smartctl send
    cdb[14] = command;
    cdb
}

/// Errors from an ATA pass-through command; the caller adds which device.
#[derive(Debug, thiserror::Error)]
pub enum AtaError {
    #[error("SG_IO ioctl failed")]
    Ioctl(#[source] io::Error),
    #[error("ATA command {command:#04x} failed: host status {host:#x}, driver status {driver:#x}")]
    Transport { command: u8, host: u16, driver: u16 },
    #[error("ATA command {command:#04x} aborted by the device: ATA status {status:#04x}, error {error:#04x}")]
    Device { command: u8, status: u8, error: u8 },
    #[error(
        "ATA command {command:#04x} rejected: sense key {key:#x}, ASC/ASCQ {asc:#04x}/{ascq:#04x}"
    )]
    Sense {
        command: u8,
        key: u8,
        asc: u8,
        ascq: u8,
    },
    #[error("IDENTIFY DEVICE data failed its integrity checksum")]
    BadChecksum,
}

/// What the sense data says about an ATA pass-through command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenseVerdict {
    /// ATA registers returned: status and error.
    AtaRegisters {
        status: u8,
        error: u8,
    },
    /// Plain SCSI sense without ATA registers (e.g. ILLEGAL REQUEST: not an ATA device).
    Scsi {
        key: u8,
        asc: u8,
        ascq: u8,
    },
    None,
}

/// Decodes sense data (descriptor format with the ATA Status Return descriptor 09h, or fixed
/// format as SAT defines it for pass-through results).
pub fn decode_sense(sense: &[u8]) -> SenseVerdict {
    if sense.len() < 8 {
        return SenseVerdict::None;
    }
    match sense[0] & 0x7f {
        0x72 | 0x73 => {
            let (key, asc, ascq) = (sense[1] & 0xf, sense[2], sense[3]);
            let add_len = sense[7] as usize;
            let end = (8 + add_len).min(sense.len());
            let mut i = 8;
            while i + 2 <= end {
                let (code, len) = (sense[i], sense[i + 1] as usize);
                if code == 0x09 && len >= 12 && i + 14 <= sense.len() {
                    return SenseVerdict::AtaRegisters {
                        error: sense[i + 3],
                        status: sense[i + 13],
                    };
                }
                i += 2 + len;
            }
            SenseVerdict::Scsi { key, asc, ascq }
        }
        0x70 | 0x71 => {
            let key = sense[2] & 0xf;
            let (asc, ascq) = if sense.len() >= 14 {
                (sense[12], sense[13])
            } else {
                (0, 0)
            };
            // SAT: ASC/ASCQ 00h/1Dh "ATA pass through information available"; the
            // INFORMATION field carries ERROR, STATUS, DEVICE, COUNT(7:0).
            if asc == 0x00 && ascq == 0x1d {
                return SenseVerdict::AtaRegisters {
                    error: sense[3],
                    status: sense[4],
                };
            }
            SenseVerdict::Scsi { key, asc, ascq }
        }
        _ => SenseVerdict::None,
    }
}

/// Judges a finished SG_IO: `Ok` when the ATA command completed without ERR or DF.
fn judge(
    command: u8,
    scsi_status: u8,
    host: u16,
    driver: u16,
    sense: &[u8],
) -> Result<(), AtaError> {
    // driver_status DRIVER_SENSE (0x08) only says sense data is present.
    if host != 0 || (driver & !0x08) != 0 {
        return Err(AtaError::Transport {
            command,
            host,
            driver,
        });
    }
    match decode_sense(sense) {
        SenseVerdict::AtaRegisters { status, error } => {
            // ERR (bit 0) or DEVICE FAULT (bit 5).
            if status & 0x21 != 0 {
                return Err(AtaError::Device {
                    command,
                    status,
                    error,
                });
            }
            Ok(())
        }
        SenseVerdict::Scsi { key, asc, ascq }
            if scsi_status == SAM_STAT_CHECK_CONDITION || key != 0 =>
        {
            // RECOVERED ERROR with 00h/1Dh is success (handled above when decodable).
            Err(AtaError::Sense {
                command,
                key,
                asc,
                ascq,
            })
        }
        _ if scsi_status == SAM_STAT_CHECK_CONDITION => Err(AtaError::Sense {
            command,
            key: 0,
            asc: 0,
            ascq: 0,
        }),
        _ => Ok(()),
    }
}

fn sg_io(
    file: &File,
    cdb: &[u8; 16],
    dir: libc::c_int,
    data: Option<&mut AlignedBuf>,
    timeout_ms: u32,
) -> Result<(), AtaError> {
    let mut sense = [0u8; 64];
    let (dxferp, dxfer_len) = match data {
        Some(buf) => (buf.as_mut_ptr() as *mut libc::c_void, buf.len() as u32),
        None => (std::ptr::null_mut(), 0),
    };
    let mut hdr = SgIoHdr {
        interface_id: b'S' as libc::c_int,
        dxfer_direction: dir,
        cmd_len: 16,
        mx_sb_len: sense.len() as u8,
        iovec_count: 0,
        dxfer_len,
        dxferp,
        cmdp: cdb.as_ptr(),
        sbp: sense.as_mut_ptr(),
        timeout: timeout_ms,
        flags: 0,
        pack_id: 0,
        usr_ptr: std::ptr::null_mut(),
        status: 0,
        masked_status: 0,
        msg_status: 0,
        sb_len_wr: 0,
        host_status: 0,
        driver_status: 0,
        resid: 0,
        duration: 0,
        info: 0,
    };
    // SAFETY: `#define SG_IO 0x2285` takes a `struct sg_io_hdr *`; hdr is a live, correctly
    // laid out struct (size checked above). Its pointers reference the CDB, the sense buffer
    // and the data buffer (when any), all of which outlive this synchronous call; the kernel
    // writes at most mx_sb_len sense bytes and dxfer_len data bytes.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), SG_IO as _, &mut hdr as *mut SgIoHdr) };
    if rc < 0 {
        return Err(AtaError::Ioctl(io::Error::last_os_error()));
    }
    let wr = (hdr.sb_len_wr as usize).min(sense.len());
    judge(
        cdb[14],
        hdr.status,
        hdr.host_status,
        hdr.driver_status,
        &sense[..wr],
    )
}

/// Security state (IDENTIFY word 128) and erase capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AtaIdentity {
    pub model: String,
    pub serial: String,
    /// Word 82 bit 1 or word 128 bit 0.
    pub security_supported: bool,
    /// Word 128 bit 1: a user password is set.
    pub security_enabled: bool,
    /// Word 128 bit 2.
    pub locked: bool,
    /// Word 128 bit 3: security commands are refused until the next power cycle.
    pub frozen: bool,
    /// Word 128 bit 4: too many failed unlock attempts.
    pub count_expired: bool,
    /// Word 128 bit 5.
    pub enhanced_erase_supported: bool,
    /// Word 89: estimated minutes for a normal erase, `None` when not reported.
    pub erase_minutes: Option<u32>,
    /// Word 90: the same for the enhanced erase.
    pub enhanced_erase_minutes: Option<u32>,
    /// Word 169 bit 0: DATA SET MANAGEMENT TRIM supported.
    pub trim_supported: bool,
    /// Word 69 bit 5: reads after TRIM return zeroes.
    pub trim_reads_zero: bool,
}

/// ATA strings are byte-swapped per word.
fn ata_string(words: &[u16]) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// Erase time (words 89/90): bit 15 set = extended format, minutes/2 in bits 14:0; else
/// bits 7:0. 0 = not reported; the maximum means "more than" that.
fn erase_time(w: u16) -> Option<u32> {
    let v = if w & 0x8000 != 0 {
        u32::from(w & 0x7fff)
    } else {
        u32::from(w & 0xff)
    };
    (v != 0).then_some(v * 2)
}

impl AtaIdentity {
    /// Parses 512 bytes of IDENTIFY DEVICE data, checking the integrity word when present.
    pub fn parse(b: &[u8]) -> Result<Self, AtaError> {
        if b.len() < 512 {
            return Err(AtaError::BadChecksum);
        }
        // Word 255: bits 7:0 = A5h signature, bits 15:8 = checksum; all 512 bytes sum to 0.
        if b[510] == 0xa5 && b[..512].iter().fold(0u8, |a, &x| a.wrapping_add(x)) != 0 {
            return Err(AtaError::BadChecksum);
        }
        let w: Vec<u16> = b[..512]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let valid = |x: u16| x != 0 && x != 0xffff;
        let w128 = w[128];
        Ok(Self {
            serial: ata_string(&w[10..20]),
            model: ata_string(&w[27..47]),
            security_supported: (valid(w[82]) && w[82] & 0x2 != 0) || w128 & 1 != 0,
            security_enabled: w128 & (1 << 1) != 0,
            locked: w128 & (1 << 2) != 0,
            frozen: w128 & (1 << 3) != 0,
            count_expired: w128 & (1 << 4) != 0,
            enhanced_erase_supported: w128 & (1 << 5) != 0,
            erase_minutes: erase_time(w[89]),
            enhanced_erase_minutes: erase_time(w[90]),
            trim_supported: valid(w[169]) && w[169] & 1 != 0,
            trim_reads_zero: valid(w[69]) && w[69] & (1 << 5) != 0,
        })
    }

    /// Why a security erase cannot run now, or `None` when it can.
    pub fn erase_blocker(&self) -> Option<&'static str> {
        if !self.security_supported {
            Some("the ATA security feature set is not supported")
        } else if self.frozen {
            Some("ATA security is frozen (the firmware froze it at boot; a suspend/resume or hot-plug unfreezes it)")
        } else if self.locked {
            Some("the device is locked by a password")
        } else if self.security_enabled {
            Some("a user password is already set by someone else; not touching it")
        } else if self.count_expired {
            Some("the password attempt counter has expired")
        } else {
            None
        }
    }
}

/// The 512-byte data sector of the security commands: word 0 control bits, words 1-16 the
/// 32-byte password (zero-padded, bytes in order, as hdparm sends them).
pub fn security_payload(control: u16, password: &[u8]) -> [u8; 512] {
    let mut p = [0u8; 512];
    p[..2].copy_from_slice(&control.to_le_bytes());
    let n = password.len().min(32);
    p[2..2 + n].copy_from_slice(&password[..n]);
    p
}

/// SECURITY ERASE UNIT word 0: bit 1 enhanced, bit 0 identifier (0 = user password).
pub fn erase_unit_control(enhanced: bool) -> u16 {
    u16::from(enhanced) << 1
}

/// IDENTIFY DEVICE. Fails on devices that are not ATA (SCSI sense ILLEGAL REQUEST) or do not
/// support SG_IO at all (ENOTTY, EINVAL: loop, NVMe, virtio).
pub fn identify(file: &File) -> Result<AtaIdentity, AtaError> {
    let mut buf = AlignedBuf::zeroed(512);
    buf.set_len(512);
    let cdb = ata16_cdb(Protocol::PioDataIn, ATA_IDENTIFY_DEVICE, 0, 1, false);
    sg_io(file, &cdb, SG_DXFER_FROM_DEV, Some(&mut buf), 15_000)?;
    if buf.iter().all(|&b| b == 0) {
        return Err(AtaError::Sense {
            command: ATA_IDENTIFY_DEVICE,
            key: 0,
            asc: 0,
            ascq: 0,
        });
    }
    AtaIdentity::parse(&buf)
}

fn data_out(
    file: &File,
    command: u8,
    payload: &[u8; 512],
    timeout_ms: u32,
) -> Result<(), AtaError> {
    let mut buf = AlignedBuf::zeroed(512);
    buf.set_len(512);
    buf.copy_from_slice(payload);
    let cdb = ata16_cdb(Protocol::PioDataOut, command, 0, 1, true);
    sg_io(file, &cdb, SG_DXFER_TO_DEV, Some(&mut buf), timeout_ms)
}

/// SECURITY SET PASSWORD: sets the user password at security level High.
pub fn set_user_password(file: &File, password: &[u8]) -> Result<(), AtaError> {
    data_out(
        file,
        ATA_SECURITY_SET_PASSWORD,
        &security_payload(0, password),
        15_000,
    )
}

/// SECURITY UNLOCK with the user password.
pub fn unlock(file: &File, password: &[u8]) -> Result<(), AtaError> {
    data_out(
        file,
        ATA_SECURITY_UNLOCK,
        &security_payload(0, password),
        15_000,
    )
}

/// SECURITY DISABLE PASSWORD with the user password (removes it; security disabled).
pub fn disable_password(file: &File, password: &[u8]) -> Result<(), AtaError> {
    data_out(
        file,
        ATA_SECURITY_DISABLE_PASSWORD,
        &security_payload(0, password),
        15_000,
    )
}

/// **Destroys all data.** SECURITY ERASE PREPARE immediately followed by SECURITY ERASE UNIT
/// with the user password set by [`set_user_password`]. Blocks for the whole erase (minutes
/// to hours), bounded by `timeout_ms`. On success the device clears the password itself.
pub fn security_erase(
    file: &File,
    password: &[u8],
    enhanced: bool,
    timeout_ms: u32,
) -> Result<(), AtaError> {
    let cdb = ata16_cdb(Protocol::NonData, ATA_SECURITY_ERASE_PREPARE, 0, 0, true);
    sg_io(file, &cdb, SG_DXFER_NONE, None, 15_000)?;
    data_out(
        file,
        ATA_SECURITY_ERASE_UNIT,
        &security_payload(erase_unit_control(enhanced), password),
        timeout_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identify_words(f: impl FnOnce(&mut [u16; 256])) -> Vec<u8> {
        let mut w = [0u16; 256];
        let model = b"Samsung SSD 870 EVO 1TB                 ";
        for (i, c) in model.chunks(2).enumerate() {
            w[27 + i] = u16::from_be_bytes([c[0], c[1]]);
        }
        f(&mut w);
        let mut b: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
        b[510] = 0xa5;
        let sum = b[..511].iter().fold(0u8, |a, &x| a.wrapping_add(x));
        b[511] = 0u8.wrapping_sub(sum);
        b
    }

    #[test]
    fn identify_cdb_matches_hdparm() {
        // hdparm -I sends: 85 08 0e 00 00 00 01 00 00 00 00 00 00 40 ec 00
        assert_eq!(
            ata16_cdb(Protocol::PioDataIn, ATA_IDENTIFY_DEVICE, 0, 1, false),
            [0x85, 0x08, 0x0e, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0xec, 0]
        );
        let c = ata16_cdb(Protocol::PioDataOut, ATA_SECURITY_ERASE_UNIT, 0, 1, true);
        assert_eq!((c[1], c[2], c[6], c[14]), (0x0a, 0x26, 1, 0xf4));
        let c = ata16_cdb(Protocol::NonData, ATA_SECURITY_ERASE_PREPARE, 0, 0, true);
        assert_eq!((c[1], c[2], c[6], c[14]), (0x06, 0x20, 0, 0xf3));
    }

    #[test]
    fn identify_parses_security_word() {
        let b = identify_words(|w| {
            w[82] = 0x746b; // bit 1 set
            w[128] = 0b10_0001; // supported, enhanced supported
            w[89] = 2; // 4 minutes
            w[90] = 0x8000 | 300; // extended format: 600 minutes
            w[169] = 1;
            w[69] = 1 << 5;
        });
        let id = AtaIdentity::parse(&b).unwrap();
        assert_eq!(id.model, "Samsung SSD 870 EVO 1TB");
        assert!(id.security_supported && id.enhanced_erase_supported);
        assert!(!id.frozen && !id.locked && !id.security_enabled);
        assert_eq!(id.erase_minutes, Some(4));
        assert_eq!(id.enhanced_erase_minutes, Some(600));
        assert!(id.trim_supported && id.trim_reads_zero);
        assert_eq!(id.erase_blocker(), None);
    }

    #[test]
    fn frozen_enabled_locked_block_the_erase() {
        let frozen = AtaIdentity::parse(&identify_words(|w| w[128] = 0b1001)).unwrap();
        assert!(frozen.erase_blocker().unwrap().contains("frozen"));
        let enabled = AtaIdentity::parse(&identify_words(|w| w[128] = 0b0011)).unwrap();
        assert!(enabled
            .erase_blocker()
            .unwrap()
            .contains("password is already set"));
        let locked = AtaIdentity::parse(&identify_words(|w| w[128] = 0b0111)).unwrap();
        assert!(locked.erase_blocker().unwrap().contains("locked"));
        let none = AtaIdentity::parse(&identify_words(|_| {})).unwrap();
        assert!(none.erase_blocker().unwrap().contains("not supported"));
    }

    #[test]
    fn identify_checksum_is_checked() {
        let mut b = identify_words(|w| w[128] = 1);
        b[100] ^= 1;
        assert!(matches!(AtaIdentity::parse(&b), Err(AtaError::BadChecksum)));
    }

    #[test]
    fn payloads() {
        let p = security_payload(erase_unit_control(true), b"ferrox");
        assert_eq!(&p[..8], &[0x02, 0x00, b'f', b'e', b'r', b'r', b'o', b'x']);
        assert!(p[8..].iter().all(|&b| b == 0));
        assert_eq!(erase_unit_control(false), 0);
    }

    #[test]
    fn sense_decoding() {
        // Descriptor format, RECOVERED ERROR 00/1D, ATA status return descriptor, status 50h.
        let mut s = vec![
            0x72, 0x01, 0x00, 0x1d, 0, 0, 0, 14, 0x09, 0x0c, 0, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x40,
            0x50,
        ];
        assert_eq!(
            decode_sense(&s),
            SenseVerdict::AtaRegisters {
                status: 0x50,
                error: 0
            }
        );
        judge(0xf4, SAM_STAT_CHECK_CONDITION, 0, 0x08, &s).unwrap();
        // Same with ERR set and ABRT in the error register.
        s[21] = 0x51;
        s[11] = 0x04;
        let e = judge(0xf4, SAM_STAT_CHECK_CONDITION, 0, 0x08, &s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ATA command 0xf4 aborted by the device: ATA status 0x51, error 0x04"
        );
        // ILLEGAL REQUEST, invalid opcode: not an ATA device.
        let s = [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0x00];
        assert_eq!(
            decode_sense(&s),
            SenseVerdict::Scsi {
                key: 5,
                asc: 0x20,
                ascq: 0
            }
        );
        assert!(matches!(
            judge(0xec, SAM_STAT_CHECK_CONDITION, 0, 0x08, &s),
            Err(AtaError::Sense { key: 5, .. })
        ));
        // Fixed format with pass-through information.
        let s = [
            0x70, 0, 0x01, 0x00, 0x50, 0x40, 0, 10, 0, 0, 0, 0, 0x00, 0x1d,
        ];
        assert_eq!(
            decode_sense(&s),
            SenseVerdict::AtaRegisters {
                status: 0x50,
                error: 0
            }
        );
        // Clean GOOD status with no sense.
        judge(0xec, 0, 0, 0, &[]).unwrap();
        assert!(matches!(
            judge(0xec, 0, 0x07, 0, &[]),
            Err(AtaError::Transport { .. })
        ));
    }

    #[test]
    fn identify_fails_on_regular_file() {
        let f = tempfile::tempfile().unwrap();
        assert!(matches!(identify(&f), Err(AtaError::Ioctl(_))));
    }
}
