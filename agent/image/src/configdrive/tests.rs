//! The planner on in-memory disks: tables built with this module's own encoders, the plan's
//! writes applied, the result decoded again.

use std::io::Write as _;

use super::*;

const MIB: u64 = 1 << 20;

struct Disk {
    bytes: Vec<u8>,
    layout: Layout,
}

impl Disk {
    fn new(size: u64, lba: u64) -> Self {
        Self {
            bytes: vec![0; size as usize],
            layout: Layout {
                lba,
                sectors: size / lba,
            },
        }
    }

    fn reader(&self) -> impl FnMut(u64, usize) -> io::Result<Vec<u8>> + '_ {
        move |off, len| {
            let (a, b) = (off as usize, off as usize + len);
            self.bytes
                .get(a..b)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
        }
    }

    fn plan(&self, fs_len: u64) -> Result<Plan, PlanError> {
        let mut r = self.reader();
        plan(&mut r, self.layout, fs_len, gpt::random_guid([0x5A; 16]))
    }

    fn apply(&mut self, p: &Plan) {
        for (off, b) in &p.writes {
            self.bytes[*off as usize..*off as usize + b.len()].copy_from_slice(b);
        }
    }

    fn sector(&self, lba: u64) -> &[u8] {
        let l = self.layout.lba as usize;
        &self.bytes[lba as usize * l..(lba as usize + 1) * l]
    }

    /// A GPT as a `image_size` image would carry it (backup at the image's end), with the
    /// given partitions (first, last LBA).
    fn write_gpt(&mut self, image_size: u64, parts: &[(u64, u64)]) {
        let lba = self.layout.lba;
        let image_sectors = image_size / lba;
        let es = (128 * 128) / lba;
        let mut array = vec![0u8; 128 * 128];
        for (i, (f, l)) in parts.iter().enumerate() {
            gpt::Entry {
                type_guid: gpt::LINUX_FS,
                unique_guid: [i as u8 + 1; 16],
                first_lba: *f,
                last_lba: *l,
                attributes: 0,
                name: gpt::Entry::encode_name("root"),
            }
            .encode_into(&mut array[i * 128..(i + 1) * 128]);
        }
        let primary = gpt::Header {
            revision: 0x0001_0000,
            header_size: 92,
            my_lba: 1,
            alternate_lba: image_sectors - 1,
            first_usable: 2 + es,
            last_usable: image_sectors - 2 - es,
            disk_guid: [9; 16],
            entries_lba: 2,
            num_entries: 128,
            entry_size: 128,
            entries_crc: crc32fast::hash(&array),
            extra: Vec::new(),
        };
        let mut backup = primary.clone();
        backup.my_lba = image_sectors - 1;
        backup.alternate_lba = 1;
        backup.entries_lba = image_sectors - 1 - es;
        let mut s0 = vec![0u8; lba as usize];
        s0[510] = 0x55;
        s0[511] = 0xAA;
        let pm = mbr::Entry {
            status: 0,
            kind: mbr::GPT_PROTECTIVE,
            first_lba: 1,
            sectors: (image_sectors - 1) as u32,
        };
        s0[446..462].copy_from_slice(&pm.encode());
        self.put(0, &s0);
        self.put(lba, &primary.encode(lba as usize));
        self.put(2 * lba, &array);
        self.put(backup.entries_lba * lba, &array);
        self.put(backup.my_lba * lba, &backup.encode(lba as usize));
    }

    fn write_mbr(&mut self, parts: &[(usize, u8, u32, u32)]) {
        let mut s0 = vec![0u8; 512];
        s0[510] = 0x55;
        s0[511] = 0xAA;
        for (slot, kind, first, sectors) in parts {
            let e = mbr::Entry {
                status: 0,
                kind: *kind,
                first_lba: *first,
                sectors: *sectors,
            };
            s0[446 + 16 * slot..462 + 16 * slot].copy_from_slice(&e.encode());
        }
        self.put(0, &s0);
    }

    fn put(&mut self, off: u64, b: &[u8]) {
        self.bytes[off as usize..off as usize + b.len()].copy_from_slice(b);
    }

    /// Both GPT headers and their arrays, checked as a firmware would.
    fn read_gpt(&self) -> (gpt::Header, gpt::Header, Vec<(u32, gpt::Entry)>) {
        let p = gpt::Header::decode(self.sector(1)).expect("primary header");
        p.check_primary(&self.layout).expect("primary fields");
        let b = gpt::Header::decode(self.sector(p.alternate_lba)).expect("backup header");
        let l = self.layout.lba as usize;
        let pa = &self.bytes[p.entries_lba as usize * l..][..p.entries_len()];
        let ba = &self.bytes[b.entries_lba as usize * l..][..b.entries_len()];
        assert_eq!(pa, ba, "entry arrays differ");
        let used = gpt::used_entries(&p, pa).expect("primary entries");
        gpt::used_entries(&b, ba).expect("backup entries");
        (p, b, used)
    }
}

#[test]
fn gpt_image_on_a_bigger_disk_gets_a_partition_at_the_end() {
    for lba in [512u64, 4096] {
        let mut d = Disk::new(256 * MIB, lba);
        let first = MIB / lba;
        let last = 48 * MIB / lba - 1;
        d.write_gpt(64 * MIB, &[(first, last)]);
        let old_backup = 64 * MIB / lba - 1;
        assert_eq!(&d.sector(old_backup)[..8], b"EFI PART");

        let p = d.plan(3 * MIB).unwrap();
        d.apply(&p);
        let (prim, back, used) = d.read_gpt();
        let sectors = 256 * MIB / lba;
        let es = 128 * 128 / lba;
        assert_eq!(prim.alternate_lba, sectors - 1, "lba {lba}");
        assert_eq!(back.my_lba, sectors - 1);
        assert_eq!(back.alternate_lba, 1);
        assert_eq!(back.entries_lba, sectors - 1 - es);
        assert_eq!(prim.last_usable, sectors - 2 - es);
        assert_eq!(back.last_usable, prim.last_usable);
        assert_eq!(prim.disk_guid, [9; 16]);

        assert_eq!(used.len(), 2);
        let (n, e) = &used[1];
        assert_eq!((*n, p.number), (2, 2));
        assert_eq!(e.name(), "config-2");
        assert_eq!(e.type_guid, gpt::LINUX_FS);
        assert_eq!(Some(e.unique_guid), p.unique_guid);
        assert_eq!(e.last_lba, prim.last_usable);
        assert_eq!(e.first_lba * lba % MIB, 0, "aligned start");
        assert!((e.last_lba - e.first_lba + 1) * lba >= PARTITION_BYTES);
        assert!((e.last_lba - e.first_lba + 1) * lba < PARTITION_BYTES + MIB);
        assert_eq!((p.first_lba, p.last_lba), (e.first_lba, e.last_lba));
        // The stale backup at the image's end is gone.
        assert!(d.sector(old_backup).iter().all(|&b| b == 0));
        // The protective MBR covers the disk now.
        let Some(mbr_e) = d.bytes.get(446..462) else {
            unreachable!()
        };
        assert_eq!(mbr_e[4], 0xEE);
        let size = u32::from_le_bytes(mbr_e[12..16].try_into().unwrap());
        assert_eq!(u64::from(size), sectors - 1);
    }
}

#[test]
fn gpt_image_as_big_as_the_disk_still_works_when_there_is_room() {
    let mut d = Disk::new(128 * MIB, 512);
    d.write_gpt(128 * MIB, &[(2048, 40 * 2048 - 1)]);
    let p = d.plan(MIB).unwrap();
    d.apply(&p);
    let (prim, _, used) = d.read_gpt();
    assert_eq!(prim.alternate_lba, 128 * 2048 - 1);
    assert_eq!(used.len(), 2);
}

#[test]
fn gpt_refusals() {
    // The image fills the disk: no room.
    let mut full = Disk::new(128 * MIB, 512);
    full.write_gpt(128 * MIB, &[(2048, 100 * 2048)]);
    assert!(matches!(
        full.plan(MIB),
        Err(PlanError::NoRoom { need: PARTITION_BYTES, free }) if free < PARTITION_BYTES
    ));

    // Disk smaller than a partition of the image.
    let mut small = Disk::new(64 * MIB, 512);
    small.write_gpt(64 * MIB, &[(2048, 60 * 2048)]);
    let mut smaller = Disk::new(32 * MIB, 512);
    smaller
        .bytes
        .copy_from_slice(&small.bytes[..32 * MIB as usize]);
    assert!(smaller.plan(MIB).is_err());

    // Corrupt entry array.
    let mut bad = Disk::new(256 * MIB, 512);
    bad.write_gpt(64 * MIB, &[(2048, 4095)]);
    bad.bytes[1024 + 40] ^= 0xFF;
    assert!(matches!(
        bad.plan(MIB),
        Err(PlanError::Gpt(gpt::GptError::EntriesCrc { .. }))
    ));

    // Corrupt header behind a protective MBR.
    let mut pmbr = Disk::new(256 * MIB, 512);
    pmbr.write_gpt(64 * MIB, &[(2048, 4095)]);
    pmbr.bytes[512 + 30] ^= 0xFF;
    assert!(matches!(
        pmbr.plan(MIB),
        Err(PlanError::ProtectiveWithoutGpt(_))
    ));

    // All 128 slots used.
    let mut busy = Disk::new(256 * MIB, 512);
    let parts: Vec<(u64, u64)> = (0..128).map(|i| (2048 + i * 8, 2048 + i * 8 + 7)).collect();
    busy.write_gpt(64 * MIB, &parts);
    assert!(matches!(
        busy.plan(MIB),
        Err(PlanError::NoFreeSlot {
            table: TableKind::Gpt,
            used: 128
        })
    ));
}

#[test]
fn gpt_config_drive_partition_is_reused() {
    let mut d = Disk::new(256 * MIB, 512);
    d.write_gpt(64 * MIB, &[(2048, 40 * 2048)]);
    let first = d.plan(MIB).unwrap();
    d.apply(&first);
    let again = d.plan(MIB).unwrap();
    assert!(again.reused);
    assert_eq!(
        (again.number, again.first_lba, again.last_lba),
        (first.number, first.first_lba, first.last_lba)
    );
    d.apply(&again);
    assert_eq!(d.read_gpt().2.len(), 2, "no second config drive");
    // Too big for it: refused.
    assert!(matches!(
        d.plan(PARTITION_BYTES + MIB),
        Err(PlanError::ExistingTooSmall { number: 2, .. })
    ));
}

#[test]
fn mbr_gets_a_primary_partition_at_the_end() {
    let mut d = Disk::new(256 * MIB, 512);
    d.write_mbr(&[(0, 0x83, 2048, 60 * 2048)]);
    let p = d.plan(MIB).unwrap();
    assert_eq!((p.table, p.number, p.reused), (TableKind::Mbr, 2, false));
    d.apply(&p);
    let mbr::Sector0::Dos(entries) = mbr::classify(d.sector(0)) else {
        panic!("not a dos table any more");
    };
    assert_eq!(entries[0].first_lba, 2048, "partition 1 untouched");
    let e = entries[1];
    assert_eq!(e.kind, mbr::FAT32_LBA);
    assert_eq!(e.last_lba(), 256 * 2048 - 1);
    assert_eq!(u64::from(e.first_lba) % 2048, 0);
    assert_eq!(u64::from(e.sectors) * 512, PARTITION_BYTES);
    assert_eq!(d.bytes[510..512], [0x55, 0xAA]);
}

#[test]
fn mbr_refusals_and_slots() {
    // First free slot, even before a used one (as parted numbers it).
    let mut gap = Disk::new(256 * MIB, 512);
    gap.write_mbr(&[(0, 0x83, 2048, 2048), (2, 0x83, 4096, 2048)]);
    assert_eq!(gap.plan(MIB).unwrap().number, 2);

    let mut full = Disk::new(256 * MIB, 512);
    full.write_mbr(&[
        (0, 0x83, 2048, 2048),
        (1, 0x83, 4096, 2048),
        (2, 0x83, 6144, 2048),
        (3, 0x83, 8192, 2048),
    ]);
    assert!(matches!(
        full.plan(MIB),
        Err(PlanError::NoFreeSlot {
            table: TableKind::Mbr,
            ..
        })
    ));

    let mut ext = Disk::new(256 * MIB, 512);
    ext.write_mbr(&[(0, 0x83, 2048, 2048), (1, 0x05, 4096, 256 * 2048 - 4096)]);
    assert!(matches!(
        ext.plan(MIB),
        Err(PlanError::InsideExtended { number: 2 })
    ));

    let mut no_room = Disk::new(256 * MIB, 512);
    no_room.write_mbr(&[(0, 0x83, 2048, 200 * 2048)]);
    assert!(matches!(no_room.plan(MIB), Err(PlanError::NoRoom { .. })));

    let mut past = Disk::new(64 * MIB, 512);
    past.write_mbr(&[(0, 0x83, 2048, 100 * 2048)]);
    assert!(matches!(
        past.plan(MIB),
        Err(PlanError::BeyondDisk { number: 1, .. })
    ));
}

#[test]
fn mbr_on_a_disk_past_2_tib_ends_at_the_mbr_limit() {
    // Only sector 0 is read for the plan, so a sparse reader stands in for a 3 TiB disk.
    let mut s0 = vec![0u8; 512];
    s0[510..512].copy_from_slice(&[0x55, 0xAA]);
    let e = mbr::Entry {
        status: 0x80,
        kind: 0x83,
        first_lba: 2048,
        sectors: 1 << 30,
    };
    s0[446..462].copy_from_slice(&e.encode());
    let mut read = |off: u64, len: usize| -> io::Result<Vec<u8>> {
        Ok(if off == 0 {
            s0[..len.min(512)].to_vec()
        } else {
            vec![0; len]
        })
    };
    let layout = Layout {
        lba: 512,
        sectors: 3 << 31,
    };
    let p = plan(&mut read, layout, MIB, [0; 16]).unwrap();
    assert_eq!(p.last_lba, (1 << 32) - 1);
    let mbr::Sector0::Dos(es) = mbr::classify(&p.writes[0].1) else {
        panic!()
    };
    assert_eq!(es[1].last_lba(), (1 << 32) - 1);
}

#[test]
fn no_partition_table_is_refused() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zeros", vec![0; 512]),
        ("bare FAT filesystem", {
            // A FAT boot sector: 0x55AA, but its "entries" are boot code.
            let mut s = vec![0x90u8; 512];
            s[510..512].copy_from_slice(&[0x55, 0xAA]);
            s
        }),
    ];
    for (name, s0) in cases {
        let mut d = Disk::new(256 * MIB, 512);
        d.put(0, &s0);
        assert!(
            matches!(d.plan(MIB), Err(PlanError::NoPartitionTable)),
            "{name}"
        );
    }
}

#[test]
fn mbr_config_drive_is_found_by_its_label_and_reused() {
    let mut d = Disk::new(256 * MIB, 512);
    d.write_mbr(&[(0, 0x83, 2048, 60 * 2048)]);
    let p = d.plan(MIB).unwrap();
    d.apply(&p);
    // A FAT16 boot sector labelled config-2 at the partition's start.
    let mut boot = vec![0u8; 512];
    boot[22] = 1; // sectors per FAT (16-bit): FAT12/16
    boot[38] = 0x29;
    boot[43..54].copy_from_slice(b"config-2   ");
    boot[510..512].copy_from_slice(&[0x55, 0xAA]);
    d.put(p.first_lba * 512, &boot);
    let again = d.plan(MIB).unwrap();
    assert!(again.reused);
    assert!(again.writes.is_empty());
    assert_eq!(again.number, 2);
}

fn encode(data: &[u8]) -> String {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap())
}

#[test]
fn decode_bounds_and_errors() {
    let data = b"a config drive".repeat(1000);
    assert_eq!(decode(&encode(&data)).unwrap(), data);
    // Line-wrapped base64 (as `base64` without -w0 prints) is fine.
    let wrapped: String = encode(&data)
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
        .collect();
    assert_eq!(decode(&wrapped).unwrap(), data);

    assert!(matches!(
        decode("not base64!"),
        Err(ConfigDriveError::Base64(_))
    ));
    let not_gzip = base64::engine::general_purpose::STANDARD.encode(b"plain bytes");
    assert!(matches!(decode(&not_gzip), Err(ConfigDriveError::Gzip(_))));
    assert!(matches!(decode(&encode(b"")), Err(ConfigDriveError::Empty)));
    // A zip bomb: 64 MiB + 1 of zeros compresses to ~64 KiB.
    let bomb = encode(&vec![0u8; MAX_DECODED + 1]);
    assert!(bomb.len() < 1 << 20);
    assert!(matches!(
        decode(&bomb),
        Err(ConfigDriveError::TooLarge { .. })
    ));
    let huge = "A".repeat(MAX_ENCODED + 1);
    assert!(matches!(
        decode(&huge),
        Err(ConfigDriveError::EncodedTooLarge { .. })
    ));
}

#[test]
fn zero_ranges_cover_new_partitions_and_bound_reused_ones() {
    type Case = (&'static str, u64, u64, Vec<(u64, u64)>);
    let cases: Vec<Case> = vec![
        ("new 64 MiB", 2 * MIB, 64 * MIB, vec![(2 * MIB, 64 * MIB)]),
        ("new 65 MiB", 2 * MIB, 65 * MIB, vec![(2 * MIB, 65 * MIB)]),
        ("filesystem fills it", 64 * MIB, 64 * MIB, vec![]),
        (
            "reused 10 GiB",
            2 * MIB,
            10 << 30,
            vec![(2 * MIB, 65 * MIB), ((10 << 30) - MIB, 10 << 30)],
        ),
        (
            "reused 65.5 MiB",
            2 * MIB,
            65 * MIB + MIB / 2,
            vec![(2 * MIB, 65 * MIB), (65 * MIB, 65 * MIB + MIB / 2)],
        ),
    ];
    for (name, fs, part, want) in cases {
        assert_eq!(zero_ranges(fs, part), want, "{name}");
    }
}

/// Hostile tables: random bytes flipped in sector 0, the GPT header and the entry array
/// (with the CRCs fixed up afterwards half of the time, so the checks past the CRCs are
/// reached too). The planner must answer, never panic, and what it plans must stay on the
/// disk and clear of every partition the table had.
#[test]
fn mutated_tables_never_panic_and_plans_stay_in_bounds() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut gpt_base = Disk::new(96 * MIB, 512);
    gpt_base.write_gpt(16 * MIB, &[(2048, 8191), (8192, 16383)]);
    let mut mbr_base = Disk::new(96 * MIB, 512);
    mbr_base.write_mbr(&[(0, 0x83, 2048, 6144), (1, 0x0F, 8192, 8192)]);
    let mut planned = 0;
    for i in 0..3000 {
        let base = if i % 2 == 0 { &gpt_base } else { &mbr_base };
        // Only the first 34 sectors matter (the image's backup GPT is never read); the rest
        // reads as zeros, without a 96 MiB copy per case.
        let mut d = Disk {
            bytes: base.bytes[..34 * 512].to_vec(),
            layout: base.layout,
        };
        for _ in 0..1 + rnd() % 6 {
            let at = match rnd() % 4 {
                0 => 446 + rnd() % 66,
                1 => 512 + rnd() % 92,
                _ => rnd() % (34 * 512),
            } as usize;
            d.bytes[at] = rnd() as u8;
        }
        if i % 4 == 0 {
            // Recompute the CRCs so the field checks behind them get exercised.
            if let Ok(mut h) = gpt::Header::decode(&{
                let mut s = d.sector(1).to_vec();
                let crc = {
                    let mut z = s[..92].to_vec();
                    z[16..20].fill(0);
                    crc32fast::hash(&z)
                };
                s[16..20].copy_from_slice(&crc.to_le_bytes());
                s
            }) {
                if h.entries_lba == 2 && h.entries_len() <= 32 * 512 {
                    h.entries_crc = crc32fast::hash(&d.bytes[1024..1024 + h.entries_len()]);
                    let s = h.encode(512);
                    d.put(512, &s);
                }
            }
        }
        let head = &d.bytes;
        let size = d.layout.sectors * d.layout.lba;
        let mut read = |off: u64, len: usize| -> io::Result<Vec<u8>> {
            if off + len as u64 > size {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut out = vec![0u8; len];
            for (i, b) in out.iter_mut().enumerate() {
                *b = head.get(off as usize + i).copied().unwrap_or(0);
            }
            Ok(out)
        };
        let Ok(p) = plan(&mut read, d.layout, MIB, [1; 16]) else {
            continue;
        };
        planned += 1;
        assert!(p.last_lba < d.layout.sectors, "case {i}: {p:?}");
        assert!(p.first_lba <= p.last_lba);
        for (off, b) in &p.writes {
            assert!(off + b.len() as u64 <= size, "case {i}");
        }
    }
    assert!(planned > 100, "only {planned} mutated tables were usable");
}
