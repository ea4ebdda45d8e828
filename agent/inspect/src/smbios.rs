//! SMBIOS: the raw structure table the kernel exports at /sys/firmware/dmi/tables/DMI (what
//! dmidecode reads), with /sys/class/dmi/id/* as the fallback when the table is absent.
//!
//! The table is firmware-provided and untrusted: every offset is bounds-checked, a structure
//! whose header lies is the end of the table, never a panic.
//!
//! Strings are reported as the firmware wrote them (trimmed), placeholders like
//! "To Be Filled By O.E.M." included: IPA takes these fields from lshw, which doesn't filter
//! them either, and metal3 shows them as is.

use std::path::Path;

use crate::fsread;

/// The facts we take from SMBIOS.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Smbios {
    pub bios_vendor: Option<String>,
    pub bios_version: Option<String>,
    pub bios_date: Option<String>,
    pub manufacturer: Option<String>,
    pub product_name: Option<String>,
    pub version: Option<String>,
    pub serial_number: Option<String>,
    pub uuid: Option<String>,
    pub sku: Option<String>,
    pub family: Option<String>,
    /// Sum of the installed memory devices (type 17); `None` when the table has none.
    pub memory_bytes: Option<u64>,
    /// Where this came from.
    pub source: &'static str,
}

/// SMBIOS version (major, minor) from the entry point (`_SM_` 2.x or `_SM3_` 3.x).
pub fn parse_entry_point(ep: &[u8]) -> Option<(u8, u8)> {
    if ep.starts_with(b"_SM3_") && ep.len() >= 9 {
        Some((ep[7], ep[8]))
    } else if ep.starts_with(b"_SM_") && ep.len() >= 8 {
        Some((ep[6], ep[7]))
    } else {
        None
    }
}

/// One structure: its formatted area (header included) and its strings.
struct Structure<'a> {
    kind: u8,
    formatted: &'a [u8],
    strings: Vec<&'a [u8]>,
}

impl Structure<'_> {
    fn byte(&self, off: usize) -> Option<u8> {
        self.formatted.get(off).copied()
    }
    fn word(&self, off: usize) -> Option<u16> {
        let b = self.formatted.get(off..off + 2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }
    fn dword(&self, off: usize) -> Option<u32> {
        let b = self.formatted.get(off..off + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// The string a formatted-area byte refers to (1-based; 0 means none).
    fn string(&self, off: usize) -> Option<String> {
        let idx = self.byte(off)? as usize;
        let raw = self.strings.get(idx.checked_sub(1)?)?;
        let s = String::from_utf8_lossy(raw);
        let t = s.trim();
        (!t.is_empty()).then(|| t.to_string())
    }
}

/// Splits a table into structures, stopping at type 127, at a lying header or at the end.
fn structures(table: &[u8]) -> Vec<Structure<'_>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 4 <= table.len() {
        let kind = table[pos];
        let len = table[pos + 1] as usize;
        if len < 4 || pos + len > table.len() {
            break;
        }
        let formatted = &table[pos..pos + len];
        // The string set ends with two NULs; find them.
        let mut end = pos + len;
        let mut strings = Vec::new();
        let mut start = end;
        let mut terminated = false;
        while end < table.len() {
            if table[end] == 0 {
                if end == start {
                    // Empty string: the set's terminator (or the "no strings" double NUL).
                    end += if strings.is_empty() && end + 1 < table.len() && table[end + 1] == 0 {
                        2
                    } else {
                        1
                    };
                    terminated = true;
                    break;
                }
                strings.push(&table[start..end]);
                start = end + 1;
            }
            end += 1;
        }
        if !terminated {
            // Truncated string set: keep what we have, then stop.
            out.push(Structure {
                kind,
                formatted,
                strings,
            });
            break;
        }
        out.push(Structure {
            kind,
            formatted,
            strings,
        });
        if kind == 127 {
            break;
        }
        pos = end;
    }
    out
}

/// Formats the 16 UUID bytes of type 1. From SMBIOS 2.6 on, the first three fields are
/// little-endian (what dmidecode and the kernel's product_uuid print). All-zero and all-FF mean
/// "not set"/"not present".
pub fn format_uuid(b: &[u8; 16], version: Option<(u8, u8)>) -> Option<String> {
    if b.iter().all(|&x| x == 0) || b.iter().all(|&x| x == 0xff) {
        return None;
    }
    let le = version.is_none_or(|v| v >= (2, 6));
    let mut o = *b;
    if le {
        o[0..4].reverse();
        o[4..6].reverse();
        o[6..8].reverse();
    }
    let h: Vec<String> = o.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    ))
}

/// Size of one type-17 memory device in bytes; `None` when empty or unknown.
fn memory_device_bytes(s: &Structure<'_>) -> Option<u64> {
    let size = s.word(0x0c)?;
    match size {
        0 | 0xffff => None,
        0x7fff => {
            // Extended Size (3.x): MiB in bits 0..30.
            let ext = s.dword(0x1c)? & 0x7fff_ffff;
            (ext > 0).then(|| u64::from(ext) << 20)
        }
        s if s & 0x8000 != 0 => Some(u64::from(s & 0x7fff) << 10),
        s => Some(u64::from(s) << 20),
    }
}

/// Parses a raw SMBIOS structure table.
pub fn parse_table(table: &[u8], version: Option<(u8, u8)>) -> Smbios {
    let mut out = Smbios {
        source: "/sys/firmware/dmi/tables/DMI",
        ..Smbios::default()
    };
    let mut mem_total = 0u64;
    let mut mem_seen = false;
    let mut seen_bios = false;
    let mut seen_system = false;
    for s in structures(table) {
        match s.kind {
            0 if !seen_bios => {
                seen_bios = true;
                out.bios_vendor = s.string(0x04);
                out.bios_version = s.string(0x05);
                out.bios_date = s.string(0x08);
            }
            1 if !seen_system => {
                seen_system = true;
                out.manufacturer = s.string(0x04);
                out.product_name = s.string(0x05);
                out.version = s.string(0x06);
                out.serial_number = s.string(0x07);
                if let Some(u) = s.formatted.get(0x08..0x18) {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(u);
                    out.uuid = format_uuid(&b, version);
                }
                out.sku = s.string(0x19);
                out.family = s.string(0x1a);
            }
            17 => {
                if let Some(b) = memory_device_bytes(&s) {
                    mem_total = mem_total.saturating_add(b);
                    mem_seen = true;
                }
            }
            _ => {}
        }
    }
    out.memory_bytes = mem_seen.then_some(mem_total);
    out
}

/// The kernel's /sys/class/dmi/id view (no memory devices there).
pub fn from_dmi_id(dir: &Path) -> Option<Smbios> {
    if !dir.is_dir() {
        return None;
    }
    let r = |name: &str| fsread::read_str(&dir.join(name));
    Some(Smbios {
        bios_vendor: r("bios_vendor"),
        bios_version: r("bios_version"),
        bios_date: r("bios_date"),
        manufacturer: r("sys_vendor"),
        product_name: r("product_name"),
        version: r("product_version"),
        serial_number: r("product_serial"),
        uuid: r("product_uuid").map(|u| u.to_ascii_lowercase()),
        sku: r("product_sku"),
        family: r("product_family"),
        memory_bytes: None,
        source: "/sys/class/dmi/id",
    })
}

/// Reads SMBIOS under a sysfs root: the raw table first, dmi/id when it's missing.
pub fn read(sys: &Path) -> Option<Smbios> {
    let tables = sys.join("firmware/dmi/tables");
    if let Ok(table) = fsread::read_limited(&tables.join("DMI"), 4 << 20) {
        if !table.is_empty() {
            let version = fsread::read_limited(&tables.join("smbios_entry_point"), 64)
                .ok()
                .and_then(|ep| parse_entry_point(&ep));
            return Some(parse_table(&table, version));
        }
    }
    from_dmi_id(&sys.join("class/dmi/id"))
}

/// Builds SMBIOS tables byte by byte, for tests.
#[cfg(test)]
pub(crate) mod build {
    /// One structure: type, formatted bytes after the 4-byte header, strings.
    pub fn structure(kind: u8, handle: u16, body: &[u8], strings: &[&str]) -> Vec<u8> {
        let mut v = vec![kind, (4 + body.len()) as u8];
        v.extend_from_slice(&handle.to_le_bytes());
        v.extend_from_slice(body);
        if strings.is_empty() {
            v.extend_from_slice(&[0, 0]);
        } else {
            for s in strings {
                v.extend_from_slice(s.as_bytes());
                v.push(0);
            }
            v.push(0);
        }
        v
    }

    /// A server-like table: BIOS, system (SMBIOS 3.x layout), two 16 GiB DIMMs, one empty
    /// slot, one 64 GiB DIMM using the extended size field, end marker.
    pub fn server_table() -> Vec<u8> {
        let mut t = Vec::new();
        // Type 0: vendor=1, version=2, start segment, release date=3, rom size, characteristics…
        let mut b0 = vec![1, 2, 0x00, 0xf0, 3, 0xff];
        b0.extend_from_slice(&[0u8; 8]);
        b0.extend_from_slice(&[0, 0, 2, 4, 0xff, 0xff]);
        t.extend(structure(0, 0, &b0, &["Dell Inc.", "2.17.1", "03/08/2023"]));
        // Type 1: manufacturer=1, product=2, version=3, serial=4, uuid, wake-up, sku=5, family=6.
        let mut b1 = vec![1, 2, 3, 4];
        b1.extend_from_slice(&[
            0x44, 0x45, 0x4c, 0x4c, 0x48, 0x00, 0x10, 0x4d, 0x80, 0x35, 0xb5, 0xc0, 0x4f, 0x4d,
            0x42, 0x33,
        ]);
        b1.extend_from_slice(&[6, 5, 6]);
        t.extend(structure(
            1,
            0x100,
            &b1,
            &[
                "Dell Inc.",
                "PowerEdge R650",
                "Not Specified",
                "5M5BB43",
                "SKU=090E;ModelName=PowerEdge R650",
                "PowerEdge",
            ],
        ));
        let dimm = |handle: u16, size: u16, ext: u32, loc: &str| {
            // Type 17 (3.x layout, 0x54 bytes): size at 0x0c, extended size at 0x1c.
            let mut b = vec![0u8; 0x54 - 4];
            b[0x0c - 4..0x0e - 4].copy_from_slice(&size.to_le_bytes());
            b[0x10 - 4] = 1; // device locator string
            b[0x1c - 4..0x20 - 4].copy_from_slice(&ext.to_le_bytes());
            structure(17, handle, &b, &[loc])
        };
        t.extend(dimm(0x1100, 16384, 0, "A1"));
        t.extend(dimm(0x1101, 16384, 0, "A2"));
        t.extend(dimm(0x1102, 0, 0, "A3"));
        t.extend(dimm(0x1103, 0x7fff, 65536, "A4"));
        t.extend(structure(127, 0xfeff, &[], &[]));
        t
    }

    /// The matching SMBIOS 3.3 entry point.
    pub fn entry_point_3_3() -> Vec<u8> {
        let mut ep = b"_SM3_".to_vec();
        ep.extend_from_slice(&[0, 0x18, 3, 3, 0, 1, 0]);
        ep.extend_from_slice(&[0u8; 12]);
        ep
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    #[test]
    fn server_table_parses() {
        let s = parse_table(&server_table(), parse_entry_point(&entry_point_3_3()));
        assert_eq!(s.bios_vendor.as_deref(), Some("Dell Inc."));
        assert_eq!(s.bios_version.as_deref(), Some("2.17.1"));
        assert_eq!(s.bios_date.as_deref(), Some("03/08/2023"));
        assert_eq!(s.manufacturer.as_deref(), Some("Dell Inc."));
        assert_eq!(s.product_name.as_deref(), Some("PowerEdge R650"));
        assert_eq!(s.version.as_deref(), Some("Not Specified"));
        assert_eq!(s.serial_number.as_deref(), Some("5M5BB43"));
        assert_eq!(s.sku.as_deref(), Some("SKU=090E;ModelName=PowerEdge R650"));
        assert_eq!(s.family.as_deref(), Some("PowerEdge"));
        // 2.6+ byte order: first three fields little-endian (Dell's "4C4C4544-…" service tag UUID).
        assert_eq!(
            s.uuid.as_deref(),
            Some("4c4c4544-0048-4d10-8035-b5c04f4d4233")
        );
        assert_eq!(s.memory_bytes, Some((16 + 16 + 64) << 30));
    }

    #[test]
    fn entry_points() {
        assert_eq!(parse_entry_point(&entry_point_3_3()), Some((3, 3)));
        let mut ep2 = b"_SM_".to_vec();
        ep2.extend_from_slice(&[0, 0x1f, 2, 8]);
        assert_eq!(parse_entry_point(&ep2), Some((2, 8)));
        assert_eq!(parse_entry_point(b"_SM"), None);
        assert_eq!(parse_entry_point(b"garbage!"), None);
    }

    #[test]
    fn uuid_byte_order_before_2_6_and_unset() {
        let b: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
        assert_eq!(
            format_uuid(&b, Some((2, 5))).as_deref(),
            Some("01020304-0506-0708-090a-0b0c0d0e0f10")
        );
        assert_eq!(
            format_uuid(&b, Some((2, 6))).as_deref(),
            Some("04030201-0605-0807-090a-0b0c0d0e0f10")
        );
        assert_eq!(format_uuid(&[0; 16], None), None);
        assert_eq!(format_uuid(&[0xff; 16], None), None);
    }

    #[test]
    fn kilobyte_granularity_and_unknown_sizes() {
        let mut b = vec![0u8; 0x1c - 4];
        b[0x0c - 4..0x0e - 4].copy_from_slice(&(0x8000u16 | 512).to_le_bytes());
        let mut t = structure(17, 1, &b, &[]);
        let mut unknown = vec![0u8; 0x1c - 4];
        unknown[0x0c - 4..0x0e - 4].copy_from_slice(&0xffffu16.to_le_bytes());
        t.extend(structure(17, 2, &unknown, &[]));
        // 0x7fff with no room for the extended field: ignored, not a panic.
        let mut short = vec![0u8; 0x0e - 4];
        short[0x0c - 4..0x0e - 4].copy_from_slice(&0x7fffu16.to_le_bytes());
        t.extend(structure(17, 3, &short, &[]));
        assert_eq!(parse_table(&t, None).memory_bytes, Some(512 << 10));
    }

    #[test]
    fn string_index_out_of_range_is_none() {
        let t = structure(1, 0, &[1, 9, 0, 2], &["Acme", "  "]);
        let s = parse_table(&t, None);
        assert_eq!(s.manufacturer.as_deref(), Some("Acme"));
        assert_eq!(s.product_name, None);
        assert_eq!(s.version, None);
        // A blank string is no string.
        assert_eq!(s.serial_number, None);
        assert_eq!(s.uuid, None);
    }

    #[test]
    fn every_truncation_is_safe() {
        let full = server_table();
        for n in 0..full.len() {
            let s = parse_table(&full[..n], None);
            if n < 4 {
                assert_eq!(s.bios_vendor, None);
            }
        }
        // The first structure survives any cut after its string set.
        let first_end = full.windows(2).position(|w| w == [0, 0]).unwrap();
        let s = parse_table(&full[..first_end + 40], None);
        assert_eq!(s.bios_vendor.as_deref(), Some("Dell Inc."));
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift, so the test is deterministic without a rand dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..2000 {
            let len = (next() % 600) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && len > 2 {
                // Bias towards plausible headers so the deeper paths run too.
                buf[0] = [0u8, 1, 17][round % 3];
                buf[1] = buf[1].max(4);
            }
            let _ = parse_table(&buf, None);
            let _ = parse_entry_point(&buf);
        }
        // And mutations of a real table.
        let base = server_table();
        for _ in 0..2000 {
            let mut t = base.clone();
            for _ in 0..4 {
                let i = (next() as usize) % t.len();
                t[i] = next() as u8;
            }
            let _ = parse_table(&t, Some((3, 3)));
        }
    }

    #[test]
    fn dmi_id_fallback() {
        let d = tempfile::tempdir().unwrap();
        let id = d.path().join("class/dmi/id");
        std::fs::create_dir_all(&id).unwrap();
        std::fs::write(id.join("sys_vendor"), "QEMU\n").unwrap();
        std::fs::write(
            id.join("product_uuid"),
            "AABBCCDD-0000-0000-0000-000000000001\n",
        )
        .unwrap();
        let s = read(d.path()).unwrap();
        assert_eq!(s.source, "/sys/class/dmi/id");
        assert_eq!(s.manufacturer.as_deref(), Some("QEMU"));
        assert_eq!(
            s.uuid.as_deref(),
            Some("aabbccdd-0000-0000-0000-000000000001")
        );
        assert_eq!(s.bios_vendor, None);
        assert!(read(&d.path().join("nothing")).is_none());
    }
}
