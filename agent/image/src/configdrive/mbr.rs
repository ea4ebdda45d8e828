//! The MBR (dos) partition table: four primary entries in sector 0. Pure: bytes in, bytes
//! out.

/// Where the four entries start in sector 0.
pub const TABLE_AT: usize = 446;
/// Type of the partition IPA creates (`parted mkpart primary fat32`): W95 FAT32 (LBA).
pub const FAT32_LBA: u8 = 0x0C;
/// Protective MBR type (the disk is GPT).
pub const GPT_PROTECTIVE: u8 = 0xEE;

/// One primary entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    pub status: u8,
    pub kind: u8,
    pub first_lba: u32,
    pub sectors: u32,
}

impl Entry {
    pub fn is_used(&self) -> bool {
        self.kind != 0
    }

    /// Extended partition types (CHS, LBA, Linux): logical partitions live inside.
    pub fn is_extended(&self) -> bool {
        matches!(self.kind, 0x05 | 0x0F | 0x85)
    }

    /// Last sector (inclusive).
    pub fn last_lba(&self) -> u64 {
        u64::from(self.first_lba) + u64::from(self.sectors) - 1
    }

    /// The 16 on-disk bytes, CHS fields computed from the LBAs (255 heads, 63 sectors per
    /// track; the largest CHS value past cylinder 1023, as fdisk writes).
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.status;
        b[1..4].copy_from_slice(&chs(u64::from(self.first_lba)));
        b[4] = self.kind;
        b[5..8].copy_from_slice(&chs(self.last_lba()));
        b[8..12].copy_from_slice(&self.first_lba.to_le_bytes());
        b[12..16].copy_from_slice(&self.sectors.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Self {
        Self {
            status: b[0],
            kind: b[4],
            first_lba: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
            sectors: u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")),
        }
    }
}

fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SPT: u64 = 63;
    let c = lba / (HEADS * SPT);
    if c > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let h = (lba / SPT) % HEADS;
    let s = lba % SPT + 1;
    [h as u8, (s as u8) | (((c >> 8) as u8) << 6), c as u8]
}

/// What sector 0 holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sector0 {
    /// A protective MBR: the disk is GPT.
    Protective,
    /// A dos partition table.
    Dos([Entry; 4]),
    /// Neither (no boot signature, or entries that are not a partition table: a bare
    /// filesystem's boot sector, boot code, zeros).
    None,
}

/// Classifies sector 0. A table is accepted only when it looks like one: boot signature,
/// status bytes 0x00/0x80, at least one used entry, used entries of non-zero size that do
/// not start at sector 0 — the checks libblkid makes before it calls something a dos table.
pub fn classify(sector0: &[u8]) -> Sector0 {
    if sector0.len() < 512 || sector0[510..512] != [0x55, 0xAA] {
        return Sector0::None;
    }
    let mut entries = [Entry::default(); 4];
    for (i, e) in entries.iter_mut().enumerate() {
        let at = TABLE_AT + 16 * i;
        *e = Entry::decode(&sector0[at..at + 16]);
    }
    if entries.iter().any(|e| e.kind == GPT_PROTECTIVE) {
        return Sector0::Protective;
    }
    let plausible = entries.iter().all(|e| e.status == 0 || e.status == 0x80)
        && entries.iter().any(Entry::is_used)
        && entries
            .iter()
            .filter(|e| e.is_used())
            .all(|e| e.sectors > 0 && e.first_lba > 0);
    if plausible {
        Sector0::Dos(entries)
    } else {
        Sector0::None
    }
}

/// Rewrites a protective MBR's 0xEE entry to cover the whole disk (`sectors` logical
/// blocks), as the GPT spec asks once the backup header moves to the disk's end. Returns
/// `None` when sector 0 is not a plain protective MBR (hybrid MBRs are left alone).
pub fn grow_protective(sector0: &[u8], sectors: u64) -> Option<Vec<u8>> {
    let mut out = sector0.to_vec();
    let mut found = None;
    for i in 0..4 {
        let at = TABLE_AT + 16 * i;
        let e = Entry::decode(&out[at..at + 16]);
        match (e.kind, found) {
            (0, _) => {}
            (GPT_PROTECTIVE, None) if e.first_lba == 1 => found = Some(at),
            _ => return None,
        }
    }
    let at = found?;
    let size = (sectors - 1).min(u64::from(u32::MAX)) as u32;
    let mut e = Entry::decode(&out[at..at + 16]);
    e.sectors = size;
    let mut bytes = e.encode();
    // The spec's protective entry: start CHS 0/0/2, end CHS all ones past the CHS range.
    bytes[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    if e.last_lba() / (255 * 63) > 1023 {
        bytes[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    }
    out[at..at + 16].copy_from_slice(&bytes);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sector(entries: &[(usize, Entry)]) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[510] = 0x55;
        s[511] = 0xAA;
        for (i, e) in entries {
            s[TABLE_AT + 16 * i..TABLE_AT + 16 * i + 16].copy_from_slice(&e.encode());
        }
        s
    }

    fn part(kind: u8, first: u32, sectors: u32) -> Entry {
        Entry {
            status: 0,
            kind,
            first_lba: first,
            sectors,
        }
    }

    #[test]
    fn classify_table() {
        let p1 = part(0x83, 2048, 4096);
        let cases: Vec<(&str, Vec<u8>, Sector0)> = vec![
            ("zeros", vec![0; 512], Sector0::None),
            ("signature only", sector(&[]), Sector0::None),
            (
                "one partition",
                sector(&[(0, p1)]),
                Sector0::Dos([p1, Entry::default(), Entry::default(), Entry::default()]),
            ),
            (
                "protective",
                sector(&[(0, part(0xEE, 1, 1000))]),
                Sector0::Protective,
            ),
            (
                "zero-sized entry",
                sector(&[(0, part(0x83, 2048, 0))]),
                Sector0::None,
            ),
            (
                "starts at 0",
                sector(&[(0, part(0x83, 0, 10))]),
                Sector0::None,
            ),
            (
                "bad status (boot code)",
                {
                    let mut s = sector(&[(1, p1)]);
                    s[TABLE_AT] = 0x31;
                    s
                },
                Sector0::None,
            ),
        ];
        for (name, s, want) in cases {
            assert_eq!(classify(&s), want, "{name}");
        }
    }

    #[test]
    fn entry_encoding_and_chs() {
        let e = part(FAT32_LBA, 2048, 131072);
        let b = e.encode();
        assert_eq!(Entry::decode(&b), e);
        assert_eq!(b[4], 0x0C);
        // LBA 2048 = C0 H32 S33 (255/63 geometry), as fdisk writes it.
        assert_eq!(&b[1..4], &[32, 33, 0]);
        assert_eq!(chs(1 << 30), [0xFE, 0xFF, 0xFF]);
        assert_eq!(e.last_lba(), 2048 + 131072 - 1);
    }

    #[test]
    fn protective_grows_to_the_disk() {
        let s = sector(&[(0, part(0xEE, 1, 131071))]);
        let grown = grow_protective(&s, 524288).unwrap();
        let Sector0::Protective = classify(&grown) else {
            panic!("not protective");
        };
        let e = Entry::decode(&grown[TABLE_AT..TABLE_AT + 16]);
        assert_eq!((e.first_lba, e.sectors), (1, 524287));
        // Capped for disks past 2 TiB.
        let big = grow_protective(&s, 1 << 40).unwrap();
        assert_eq!(
            Entry::decode(&big[TABLE_AT..TABLE_AT + 16]).sectors,
            u32::MAX
        );
        // Hybrid MBR: left alone.
        let hybrid = sector(&[(0, part(0xEE, 1, 1000)), (1, part(0x0C, 2048, 100))]);
        assert_eq!(grow_protective(&hybrid, 524288), None);
    }
}
