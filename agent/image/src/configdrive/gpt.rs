//! GPT headers and partition entries (UEFI 2.10 §5.3): decode with every check a hostile
//! disk needs, encode with both CRC32s. Pure: bytes in, bytes out.

use super::Layout;

/// `"EFI PART"`.
pub const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Size of the fields this module knows (revision 1.0 header).
pub const HEADER_LEN: usize = 92;
/// Largest partition entry array accepted (the usual one is 128 × 128 B = 16 KiB).
pub const MAX_ENTRIES_BYTES: usize = 1 << 20;
/// "Linux filesystem data", 0FC63DAF-8483-4772-8E79-3D69D8477DE4, in its on-disk byte order.
pub const LINUX_FS: [u8; 16] = [
    0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4,
];

/// What is wrong with a GPT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GptError {
    #[error("no GPT signature")]
    NoSignature,
    #[error("header size {0} is outside 92..=sector size")]
    HeaderSize(u32),
    #[error("header CRC32 is {found:#010x}, computed {computed:#010x}")]
    HeaderCrc { found: u32, computed: u32 },
    #[error("header says it is at LBA {0}, not 1")]
    NotPrimary(u64),
    #[error("entry size {0} is not a multiple of 128 (at most 4096)")]
    EntrySize(u32),
    #[error("{0} entries do not fit the {MAX_ENTRIES_BYTES}-byte limit")]
    TooManyEntries(u32),
    #[error("usable LBAs {first}..={last} make no sense for the entry array at LBA {entries}")]
    Usable { first: u64, last: u64, entries: u64 },
    #[error("partition entry array CRC32 is {found:#010x}, computed {computed:#010x}")]
    EntriesCrc { found: u32, computed: u32 },
    #[error("partition {number} spans LBA {first}..={last}, outside the usable {usable_first}..={usable_last}")]
    EntryOutside {
        number: u32,
        first: u64,
        last: u64,
        usable_first: u64,
        usable_last: u64,
    },
    #[error("partitions {a} and {b} overlap")]
    Overlap { a: u32, b: u32 },
}

/// A GPT header (the fields of revision 1.0; bytes past them up to `header_size` are kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub revision: u32,
    pub header_size: u32,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub disk_guid: [u8; 16],
    pub entries_lba: u64,
    pub num_entries: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
    /// Bytes `92..header_size` (reserved, zero in practice), kept for the CRC.
    pub extra: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Header {
    /// Decodes and checks a header from its sector: signature, size, CRC.
    pub fn decode(sector: &[u8]) -> Result<Self, GptError> {
        if sector.len() < HEADER_LEN || &sector[..8] != SIGNATURE {
            return Err(GptError::NoSignature);
        }
        let header_size = u32_at(sector, 12);
        if (header_size as usize) < HEADER_LEN || header_size as usize > sector.len() {
            return Err(GptError::HeaderSize(header_size));
        }
        let found = u32_at(sector, 16);
        let mut raw = sector[..header_size as usize].to_vec();
        raw[16..20].fill(0);
        let computed = crc32fast::hash(&raw);
        if found != computed {
            return Err(GptError::HeaderCrc { found, computed });
        }
        Ok(Self {
            revision: u32_at(sector, 8),
            header_size,
            my_lba: u64_at(sector, 24),
            alternate_lba: u64_at(sector, 32),
            first_usable: u64_at(sector, 40),
            last_usable: u64_at(sector, 48),
            disk_guid: sector[56..72].try_into().expect("16 bytes"),
            entries_lba: u64_at(sector, 72),
            num_entries: u32_at(sector, 80),
            entry_size: u32_at(sector, 84),
            entries_crc: u32_at(sector, 88),
            extra: sector[HEADER_LEN..header_size as usize].to_vec(),
        })
    }

    /// Encodes the header into a zero-padded sector of `sector_len` bytes, with its CRC.
    pub fn encode(&self, sector_len: usize) -> Vec<u8> {
        let mut s = vec![0u8; sector_len];
        s[..8].copy_from_slice(SIGNATURE);
        s[8..12].copy_from_slice(&self.revision.to_le_bytes());
        s[12..16].copy_from_slice(&self.header_size.to_le_bytes());
        s[24..32].copy_from_slice(&self.my_lba.to_le_bytes());
        s[32..40].copy_from_slice(&self.alternate_lba.to_le_bytes());
        s[40..48].copy_from_slice(&self.first_usable.to_le_bytes());
        s[48..56].copy_from_slice(&self.last_usable.to_le_bytes());
        s[56..72].copy_from_slice(&self.disk_guid);
        s[72..80].copy_from_slice(&self.entries_lba.to_le_bytes());
        s[80..84].copy_from_slice(&self.num_entries.to_le_bytes());
        s[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
        s[88..92].copy_from_slice(&self.entries_crc.to_le_bytes());
        s[HEADER_LEN..self.header_size as usize].copy_from_slice(&self.extra);
        let crc = crc32fast::hash(&s[..self.header_size as usize]);
        s[16..20].copy_from_slice(&crc.to_le_bytes());
        s
    }

    /// Bytes of the entry array.
    pub fn entries_len(&self) -> usize {
        self.num_entries as usize * self.entry_size as usize
    }

    /// Sectors the entry array takes.
    pub fn entries_sectors(&self, layout: &Layout) -> u64 {
        (self.entries_len() as u64).div_ceil(layout.lba)
    }

    /// Checks the fields a primary header must have before its entry array is read.
    pub fn check_primary(&self, layout: &Layout) -> Result<(), GptError> {
        if self.my_lba != 1 {
            return Err(GptError::NotPrimary(self.my_lba));
        }
        if self.entry_size < 128 || !self.entry_size.is_multiple_of(128) || self.entry_size > 4096 {
            return Err(GptError::EntrySize(self.entry_size));
        }
        if self.entries_len() > MAX_ENTRIES_BYTES || self.num_entries == 0 {
            return Err(GptError::TooManyEntries(self.num_entries));
        }
        let entries_end = self.entries_lba + self.entries_sectors(layout);
        if self.entries_lba < 2
            || entries_end > self.first_usable
            || self.first_usable > self.last_usable
            || self.last_usable >= layout.sectors
        {
            return Err(GptError::Usable {
                first: self.first_usable,
                last: self.last_usable,
                entries: self.entries_lba,
            });
        }
        Ok(())
    }
}

/// One partition entry (the first 128 bytes of its slot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub type_guid: [u8; 16],
    pub unique_guid: [u8; 16],
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    /// UTF-16LE, 36 code units, zero-padded.
    pub name: [u8; 72],
}

impl Entry {
    pub fn decode(slot: &[u8]) -> Self {
        Self {
            type_guid: slot[..16].try_into().expect("16 bytes"),
            unique_guid: slot[16..32].try_into().expect("16 bytes"),
            first_lba: u64_at(slot, 32),
            last_lba: u64_at(slot, 40),
            attributes: u64_at(slot, 48),
            name: slot[56..128].try_into().expect("72 bytes"),
        }
    }

    /// Writes the entry into its slot (bytes past 128 are zeroed).
    pub fn encode_into(&self, slot: &mut [u8]) {
        slot.fill(0);
        slot[..16].copy_from_slice(&self.type_guid);
        slot[16..32].copy_from_slice(&self.unique_guid);
        slot[32..40].copy_from_slice(&self.first_lba.to_le_bytes());
        slot[40..48].copy_from_slice(&self.last_lba.to_le_bytes());
        slot[48..56].copy_from_slice(&self.attributes.to_le_bytes());
        slot[56..128].copy_from_slice(&self.name);
    }

    pub fn is_used(&self) -> bool {
        self.type_guid != [0; 16]
    }

    /// The name, up to its first NUL.
    pub fn name(&self) -> String {
        let units: Vec<u16> = self
            .name
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        String::from_utf16_lossy(&units)
    }

    /// Encodes a name (at most 36 UTF-16 code units; longer names are cut).
    pub fn encode_name(name: &str) -> [u8; 72] {
        let mut out = [0u8; 72];
        for (i, u) in name.encode_utf16().take(36).enumerate() {
            out[2 * i..2 * i + 2].copy_from_slice(&u.to_le_bytes());
        }
        out
    }
}

/// The used entries of an array, with their 1-based numbers, after checking the array's
/// CRC, that each lies in the usable range and that none overlap.
pub fn used_entries(header: &Header, array: &[u8]) -> Result<Vec<(u32, Entry)>, GptError> {
    let computed = crc32fast::hash(&array[..header.entries_len()]);
    if computed != header.entries_crc {
        return Err(GptError::EntriesCrc {
            found: header.entries_crc,
            computed,
        });
    }
    let mut used: Vec<(u32, Entry)> = array[..header.entries_len()]
        .chunks_exact(header.entry_size as usize)
        .enumerate()
        .map(|(i, slot)| (i as u32 + 1, Entry::decode(slot)))
        .filter(|(_, e)| e.is_used())
        .collect();
    for (n, e) in &used {
        if e.first_lba < header.first_usable
            || e.last_lba > header.last_usable
            || e.first_lba > e.last_lba
        {
            return Err(GptError::EntryOutside {
                number: *n,
                first: e.first_lba,
                last: e.last_lba,
                usable_first: header.first_usable,
                usable_last: header.last_usable,
            });
        }
    }
    used.sort_by_key(|(_, e)| e.first_lba);
    for w in used.windows(2) {
        if w[1].1.first_lba <= w[0].1.last_lba {
            return Err(GptError::Overlap {
                a: w[0].0,
                b: w[1].0,
            });
        }
    }
    Ok(used)
}

/// A GUID in its usual text form (the first three fields are little-endian on disk).
pub fn format_guid(g: &[u8; 16]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        g[8],
        g[9],
        g[10..]
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
    )
}

/// Marks 16 random bytes as a version-4, RFC 4122 variant GUID (on-disk byte order).
pub fn random_guid(mut raw: [u8; 16]) -> [u8; 16] {
    raw[7] = (raw[7] & 0x0F) | 0x40;
    raw[8] = (raw[8] & 0x3F) | 0x80;
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            lba: 512,
            sectors: 131072,
        }
    }

    fn header() -> Header {
        Header {
            revision: 0x0001_0000,
            header_size: 92,
            my_lba: 1,
            alternate_lba: 131071,
            first_usable: 34,
            last_usable: 131038,
            disk_guid: [7; 16],
            entries_lba: 2,
            num_entries: 128,
            entry_size: 128,
            entries_crc: 0xdead_beef,
            extra: Vec::new(),
        }
    }

    #[test]
    fn header_round_trips_and_crc_is_checked() {
        let h = header();
        let s = h.encode(512);
        assert_eq!(&s[..8], b"EFI PART");
        assert_eq!(Header::decode(&s).unwrap(), h);
        // Known CRC: recomputed independently over the 92 bytes with the field zeroed.
        let mut z = s[..92].to_vec();
        z[16..20].fill(0);
        assert_eq!(u32_at(&s, 16), crc32fast::hash(&z));
        for flip in [0usize, 8, 20, 40, 91] {
            let mut bad = s.clone();
            bad[flip] ^= 1;
            assert!(Header::decode(&bad).is_err(), "byte {flip} flipped");
        }
        // Bytes after header_size are not covered.
        let mut tail = s.clone();
        tail[100] = 1;
        assert!(Header::decode(&tail).is_ok());
    }

    #[test]
    fn crc32_is_the_standard_one() {
        // The check value of CRC-32/ISO-HDLC, which UEFI uses.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn primary_checks() {
        let l = layout();
        assert!(header().check_primary(&l).is_ok());
        type Mutate = Box<dyn Fn(&mut Header)>;
        let cases: Vec<(&str, Mutate)> = vec![
            ("backup header", Box::new(|h| h.my_lba = 131071)),
            ("entry size 100", Box::new(|h| h.entry_size = 100)),
            ("entry size 8192", Box::new(|h| h.entry_size = 8192)),
            ("huge array", Box::new(|h| h.num_entries = 1 << 20)),
            ("no entries", Box::new(|h| h.num_entries = 0)),
            ("array over usable", Box::new(|h| h.first_usable = 20)),
            ("array at LBA 1", Box::new(|h| h.entries_lba = 1)),
            ("usable past disk", Box::new(|h| h.last_usable = 131072)),
            ("usable inverted", Box::new(|h| h.last_usable = 33)),
        ];
        for (name, mutate) in cases {
            let mut h = header();
            mutate(&mut h);
            assert!(h.check_primary(&l).is_err(), "{name}");
        }
    }

    #[test]
    fn entries_decode_encode_and_name() {
        let e = Entry {
            type_guid: LINUX_FS,
            unique_guid: random_guid([0xAB; 16]),
            first_lba: 2048,
            last_lba: 4095,
            attributes: 1 << 60,
            name: Entry::encode_name("config-2"),
        };
        let mut slot = vec![0xFFu8; 256];
        e.encode_into(&mut slot);
        assert_eq!(Entry::decode(&slot), e);
        assert!(slot[128..].iter().all(|&b| b == 0));
        assert_eq!(e.name(), "config-2");
        assert_eq!(
            format_guid(&LINUX_FS),
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        );
        let g = format_guid(&e.unique_guid);
        assert_eq!(&g[14..15], "4", "version 4: {g}");
        assert!(matches!(&g[19..20], "8" | "9" | "A" | "B"), "variant: {g}");
    }

    #[test]
    fn used_entries_checks_crc_range_and_overlap() {
        let mut h = header();
        let mut array = vec![0u8; 128 * 128];
        let mk = |first, last| Entry {
            type_guid: LINUX_FS,
            unique_guid: [1; 16],
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: [0; 72],
        };
        mk(4096, 8191).encode_into(&mut array[128..256]);
        mk(2048, 4095).encode_into(&mut array[..128]);
        h.entries_crc = crc32fast::hash(&array);
        let used = used_entries(&h, &array).unwrap();
        assert_eq!(used.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 2]);

        let mut bad = array.clone();
        bad[300] = 1;
        assert!(matches!(
            used_entries(&h, &bad),
            Err(GptError::EntriesCrc { .. })
        ));

        let mut overlap = array.clone();
        mk(3000, 5000).encode_into(&mut overlap[256..384]);
        h.entries_crc = crc32fast::hash(&overlap);
        assert!(matches!(
            used_entries(&h, &overlap),
            Err(GptError::Overlap { .. })
        ));

        let mut outside = array.clone();
        mk(130000, 131050).encode_into(&mut outside[256..384]);
        h.entries_crc = crc32fast::hash(&outside);
        assert!(matches!(
            used_entries(&h, &outside),
            Err(GptError::EntryOutside { number: 3, .. })
        ));
    }
}
