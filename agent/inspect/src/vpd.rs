//! SCSI VPD pages as the kernel exports them (`device/vpd_pg80`, `vpd_pg83`, `vpd_pg89`) and the
//! identifiers udev derives from them (`scsi_id`, `ata_id`): ID_WWN, ID_WWN_WITH_EXTENSION,
//! ID_WWN_VENDOR_EXTENSION, the SCSI ID_SERIAL, and the ATA model/serial/WWN.

/// One designation descriptor of the Device Identification page (0x83).
#[derive(Debug, Clone, PartialEq)]
pub struct Designator {
    /// 0 = the addressed logical unit, 1 = target port, 2 = target device.
    pub association: u8,
    /// 1 = T10 vendor, 2 = EUI-64, 3 = NAA, 8 = SCSI name string, …
    pub kind: u8,
    pub id: Vec<u8>,
}

/// Splits page 0x83 into its designators; stops at the first one that overruns the page.
pub fn parse_vpd83(page: &[u8]) -> Vec<Designator> {
    let mut out = Vec::new();
    if page.len() < 4 || page[1] != 0x83 {
        return out;
    }
    let page_len = u16::from_be_bytes([page[2], page[3]]) as usize;
    let end = (4 + page_len).min(page.len());
    let mut pos = 4;
    while pos + 4 <= end {
        let len = page[pos + 3] as usize;
        if pos + 4 + len > end {
            break;
        }
        out.push(Designator {
            association: (page[pos + 1] >> 4) & 0x3,
            kind: page[pos + 1] & 0x0f,
            id: page[pos + 4..pos + 4 + len].to_vec(),
        });
        pos += 4 + len;
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// udev's WWN triple.
#[derive(Debug, Clone, PartialEq)]
pub struct Wwn {
    /// ID_WWN: `0x` + the first 8 bytes of the NAA identifier.
    pub wwn: String,
    /// ID_WWN_VENDOR_EXTENSION: `0x` + the rest (16-byte NAA 6 only).
    pub vendor_extension: Option<String>,
    /// ID_WWN_WITH_EXTENSION: `0x` + the whole identifier.
    pub with_extension: String,
}

/// The logical unit's NAA designator (what `scsi_id` exports as ID_WWN…).
pub fn wwn_from_vpd83(page: &[u8]) -> Option<Wwn> {
    let d = parse_vpd83(page)
        .into_iter()
        .find(|d| d.association == 0 && d.kind == 3 && (d.id.len() == 8 || d.id.len() == 16))?;
    Some(Wwn {
        wwn: format!("0x{}", hex(&d.id[..8])),
        vendor_extension: (d.id.len() == 16).then(|| format!("0x{}", hex(&d.id[8..]))),
        with_extension: format!("0x{}", hex(&d.id)),
    })
}

/// The kernel's `wwid` attribute for SCSI/NVMe: `naa.5000c500…` becomes a WWN.
pub fn wwn_from_wwid(wwid: &str) -> Option<Wwn> {
    let h = wwid.trim().strip_prefix("naa.")?.to_ascii_lowercase();
    if !(h.len() == 16 || h.len() == 32) || !h.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(Wwn {
        wwn: format!("0x{}", &h[..16]),
        vendor_extension: (h.len() == 32).then(|| format!("0x{}", &h[16..])),
        with_extension: format!("0x{h}"),
    })
}

/// udev's SCSI ID_SERIAL from page 0x83 (`scsi_id --export`): the designator type as a
/// prefix digit, then the identifier in hex (`3` + NAA, `2` + EUI-64).
pub fn scsi_id_serial(page: &[u8]) -> Option<String> {
    let ds = parse_vpd83(page);
    let pick = |kind: u8| ds.iter().find(|d| d.association == 0 && d.kind == kind);
    if let Some(d) = pick(3) {
        return Some(format!("3{}", hex(&d.id)));
    }
    pick(2).map(|d| format!("2{}", hex(&d.id)))
}

/// Unit Serial Number page (0x80): the product serial, trimmed.
pub fn parse_vpd80(page: &[u8]) -> Option<String> {
    if page.len() < 4 || page[1] != 0x80 {
        return None;
    }
    let len = page[3] as usize;
    let raw = page.get(4..(4 + len).min(page.len()))?;
    let s = String::from_utf8_lossy(raw);
    let t = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!t.is_empty()).then(|| t.to_string())
}

/// What `ata_id` takes from IDENTIFY DEVICE.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AtaIdentity {
    pub model: Option<String>,
    pub serial: Option<String>,
    /// `0x` + 16 hex digits, from words 108–111.
    pub wwn: Option<String>,
}

/// ATA Information page (0x89, from the SCSI/ATA translation layer): the 512 bytes of IDENTIFY
/// DEVICE data start at offset 60.
pub fn parse_vpd89(page: &[u8]) -> Option<AtaIdentity> {
    if page.len() < 60 + 512 || page[1] != 0x89 {
        return None;
    }
    let id = &page[60..60 + 512];
    let word = |w: usize| u16::from_le_bytes([id[2 * w], id[2 * w + 1]]);
    // ATA strings are big-endian within each little-endian word.
    let string = |from: usize, to: usize| {
        let mut b = Vec::with_capacity((to - from) * 2);
        for w in from..to {
            b.extend_from_slice(&word(w).to_be_bytes());
        }
        let s = String::from_utf8_lossy(&b);
        let t = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        (!t.is_empty()).then(|| t.to_string())
    };
    // Word 84 bit 8 / word 87 bit 8: WWN supported.
    let wwn_words = [word(108), word(109), word(110), word(111)];
    let wwn = (word(87) & 0x100 != 0 && wwn_words.iter().any(|&w| w != 0)).then(|| {
        let v = wwn_words
            .iter()
            .fold(0u64, |acc, &w| (acc << 16) | u64::from(w));
        format!("0x{v:016x}")
    });
    Some(AtaIdentity {
        model: string(27, 47),
        serial: string(10, 20),
        wwn,
    })
}

/// Builders for tests.
#[cfg(test)]
pub(crate) mod build {
    /// A page 0x83 with the given (association, type, id) designators.
    pub fn vpd83(ds: &[(u8, u8, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (assoc, kind, id) in ds {
            body.extend_from_slice(&[0x01, (assoc << 4) | kind, 0, id.len() as u8]);
            body.extend_from_slice(id);
        }
        let mut p = vec![0, 0x83];
        p.extend_from_slice(&(body.len() as u16).to_be_bytes());
        p.extend(body);
        p
    }

    pub fn vpd80(serial: &str) -> Vec<u8> {
        let mut p = vec![0, 0x80, 0, serial.len() as u8];
        p.extend_from_slice(serial.as_bytes());
        p
    }

    /// A page 0x89 carrying IDENTIFY data with this model, serial and WWN.
    pub fn vpd89(model: &str, serial: &str, wwn: Option<u64>) -> Vec<u8> {
        let mut p = vec![0u8; 60 + 512];
        p[1] = 0x89;
        p[2..4].copy_from_slice(&0x238u16.to_be_bytes());
        let put = |p: &mut Vec<u8>, from: usize, to: usize, s: &str| {
            let mut b = s.as_bytes().to_vec();
            b.resize((to - from) * 2, b' ');
            for (i, pair) in b.chunks(2).enumerate() {
                // Big-endian chars inside little-endian words.
                p[60 + 2 * (from + i)] = pair[1];
                p[60 + 2 * (from + i) + 1] = pair[0];
            }
        };
        put(&mut p, 10, 20, serial);
        put(&mut p, 27, 47, model);
        if let Some(w) = wwn {
            p[60 + 2 * 87 + 1] = 0x01; // word 87 bit 8
            for i in 0..4 {
                let v = (w >> (48 - 16 * i)) as u16;
                p[60 + 2 * (108 + i)..60 + 2 * (108 + i) + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    const NAA6: [u8; 16] = [
        0x60, 0x05, 0x07, 0x68, 0x02, 0x81, 0x80, 0x1c, 0x98, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x2a,
    ];

    #[test]
    fn naa6_with_vendor_extension() {
        // A T10 designator first, a target-port NAA (association 1) that must be ignored, then
        // the LU's NAA 6.
        let page = vpd83(&[
            (0, 1, b"LSI     MR9361-8i"),
            (1, 3, &[0x50, 0, 0, 0, 0, 0, 0, 1]),
            (0, 3, &NAA6),
        ]);
        assert_eq!(parse_vpd83(&page).len(), 3);
        let w = wwn_from_vpd83(&page).unwrap();
        assert_eq!(w.wwn, "0x600507680281801c");
        assert_eq!(w.vendor_extension.as_deref(), Some("0x980000000000002a"));
        assert_eq!(w.with_extension, "0x600507680281801c980000000000002a");
        assert_eq!(
            scsi_id_serial(&page).as_deref(),
            Some("3600507680281801c980000000000002a")
        );
    }

    #[test]
    fn naa5_from_libata() {
        let page = vpd83(&[(0, 3, &[0x50, 0x00, 0xc5, 0x00, 0xa1, 0xb2, 0xc3, 0xd4])]);
        let w = wwn_from_vpd83(&page).unwrap();
        assert_eq!(w.wwn, "0x5000c500a1b2c3d4");
        assert_eq!(w.with_extension, w.wwn);
        assert_eq!(w.vendor_extension, None);
    }

    #[test]
    fn vpd83_truncated_or_wrong_page() {
        let mut page = vpd83(&[(0, 3, &NAA6)]);
        page.truncate(page.len() - 1);
        assert!(wwn_from_vpd83(&page).is_none());
        assert!(parse_vpd83(&[0, 0x80, 0, 0]).is_empty());
        assert!(parse_vpd83(&[]).is_empty());
        // Header claims more than there is: bounded by the buffer.
        assert!(parse_vpd83(&[0, 0x83, 0xff, 0xff, 1, 3, 0, 200]).is_empty());
    }

    #[test]
    fn wwid_attribute() {
        let w = wwn_from_wwid("naa.5000C500A1B2C3D4\n").unwrap();
        assert_eq!(w.wwn, "0x5000c500a1b2c3d4");
        assert!(wwn_from_wwid("t10.ATA     QEMU HARDDISK").is_none());
        assert!(wwn_from_wwid("naa.12").is_none());
    }

    #[test]
    fn unit_serial() {
        assert_eq!(
            parse_vpd80(&vpd80("  S3Z9NB0K123456A ")).as_deref(),
            Some("S3Z9NB0K123456A")
        );
        assert_eq!(parse_vpd80(&[0, 0x80, 0, 40, b'A']).as_deref(), Some("A"));
        assert_eq!(parse_vpd80(&[0, 0x80, 0, 0]), None);
        assert_eq!(parse_vpd80(&[0, 0x83, 0, 1, b'A']), None);
    }

    #[test]
    fn ata_identify() {
        let page = vpd89(
            "Samsung SSD 860 EVO 500GB",
            "S3Z9NB0K123456A",
            Some(0x5002538e40a1b2c3),
        );
        let id = parse_vpd89(&page).unwrap();
        assert_eq!(id.model.as_deref(), Some("Samsung SSD 860 EVO 500GB"));
        assert_eq!(id.serial.as_deref(), Some("S3Z9NB0K123456A"));
        assert_eq!(id.wwn.as_deref(), Some("0x5002538e40a1b2c3"));
        let no_wwn = parse_vpd89(&vpd89("QEMU HARDDISK", "QM00001", None)).unwrap();
        assert_eq!(no_wwn.wwn, None);
        assert!(parse_vpd89(&page[..100]).is_none());
    }
}
