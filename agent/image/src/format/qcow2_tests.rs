//! qcow2 decoding against images made by qemu-img / qemu-io (qemu-utils), plus hand-made and
//! mutated images. Tests needing qemu-img skip (with a message) when it is missing.

use std::path::Path;
use std::process::Command;

use super::super::testutil::{auto_decode, decode, disk_pattern, Chunking, MemSink, Rng};
use super::super::{AutoDecoder, Decoder, FormatError};
use super::*;

fn have_qemu() -> bool {
    let ok = Command::new("qemu-img").arg("--version").output().is_ok();
    if !ok {
        eprintln!("qemu-img not installed: skipping");
    }
    ok
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `raw` to `dir/name.raw` and converts it to qcow2 with `opts`; returns the qcow2.
fn convert(dir: &Path, name: &str, raw: &[u8], opts: &[&str]) -> Vec<u8> {
    let src = dir.join(format!("{name}.raw"));
    let dst = dir.join(format!("{name}.qcow2"));
    std::fs::write(&src, raw).unwrap();
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
    args.extend_from_slice(opts);
    args.push(src.to_str().unwrap());
    args.push(dst.to_str().unwrap());
    run("qemu-img", &args);
    std::fs::read(&dst).unwrap()
}

/// A raw disk with data, zero clusters, holes and a size that is not a cluster multiple.
fn test_disk(len: usize, seed: u64) -> Vec<u8> {
    disk_pattern(len, seed)
}

fn decode_qcow2(img: &[u8], chunking: Chunking) -> Result<(Vec<u8>, DecodeSummary), FormatError> {
    let mut sink = MemSink::default();
    let mut dec = Qcow2Decoder::new().with_image_len(img.len() as u64);
    let summary = decode(&mut dec, img, chunking, &mut sink)?;
    assert_eq!(sink.announced, Some(summary.disk_bytes));
    Ok((sink.image(&summary), summary))
}

#[test]
fn qemu_img_convert_roundtrips() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 9 MiB + 3 sectors: not a multiple of any cluster size.
    let raw = test_disk((9 << 20) + 1536, 5);
    let cases: &[&[&str]] = &[
        &[],
        &["-c"],
        &["-o", "cluster_size=4096"],
        &["-c", "-o", "cluster_size=4096"],
        &["-o", "cluster_size=512"],
        &["-o", "cluster_size=2M"],
        &["-c", "-o", "cluster_size=2M"],
        &["-o", "compat=0.10"],
        &["-c", "-o", "compat=0.10"],
        &["-c", "-o", "compression_type=zstd"],
        &["-o", "preallocation=metadata"],
        &["-o", "lazy_refcounts=on"],
        &["-o", "refcount_bits=64"],
    ];
    for (i, opts) in cases.iter().enumerate() {
        let img = convert(dir.path(), &format!("c{i}"), &raw, opts);
        for (j, &c) in [
            Chunking::Whole,
            Chunking::Random(i as u64, 100_000),
            Chunking::Random(7, 3000),
        ]
        .iter()
        .enumerate()
        {
            let (disk, summary) =
                decode_qcow2(&img, c).unwrap_or_else(|e| panic!("{opts:?} {c:?}: {e}"));
            assert_eq!(summary.disk_bytes, raw.len() as u64, "{opts:?}");
            assert!(disk == raw, "{opts:?} {c:?}: decoded disk differs");
            if j == 0 {
                let zero: u64 = summary.zero_ranges.iter().map(|r| r.1).sum();
                eprintln!("{opts:?}: {} bytes, {zero} bytes as zero ranges", img.len());
            }
        }
    }
}

#[test]
fn one_byte_at_a_time() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = test_disk(587 * 512, 6);
    for opts in [&[][..], &["-c", "-o", "cluster_size=4096"]] {
        let img = convert(dir.path(), "b", &raw, opts);
        let (disk, _) = decode_qcow2(&img, Chunking::Fixed(1)).unwrap();
        let first = disk.iter().zip(&raw).position(|(a, b)| a != b);
        assert!(
            disk == raw,
            "{opts:?}: {} vs {} bytes, first difference at {first:?}",
            disk.len(),
            raw.len()
        );
    }
}

#[test]
fn qcow2_inside_compression_and_auto() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = test_disk(2 << 20, 8);
    let img = convert(dir.path(), "z", &raw, &["-c"]);
    let (disk, _) = auto_decode(&img, Chunking::Random(3, 50_000)).unwrap();
    assert!(disk == raw);
    let zst = zstd::bulk::compress(&img, 3).unwrap();
    let mut sink = MemSink::default();
    let mut dec = AutoDecoder::new();
    let summary = decode(&mut dec, &zst, Chunking::Random(4, 50_000), &mut sink).unwrap();
    // The announced size is the virtual size, not the zstd content size.
    assert_eq!(sink.announced, Some(raw.len() as u64));
    assert!(sink.image(&summary) == raw);
}

#[test]
fn zero_flag_and_sparse_clusters() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = test_disk(4 << 20, 9);
    let img = dir.path().join("z.qcow2");
    let src = dir.path().join("z.raw");
    std::fs::write(&src, &raw).unwrap();
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            src.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    );
    // Zero clusters with and without a preallocated host cluster.
    run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -z 65536 131072",
            img.to_str().unwrap(),
        ],
    );
    run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -z -u 1048576 65536",
            img.to_str().unwrap(),
        ],
    );
    let mut want = raw.clone();
    want[65536..65536 + 131072].fill(0);
    want[1048576..1048576 + 65536].fill(0);
    let bytes = std::fs::read(&img).unwrap();
    let (disk, summary) = decode_qcow2(&bytes, Chunking::Random(1, 20_000)).unwrap();
    assert!(disk == want);
    assert!(summary
        .zero_ranges
        .iter()
        .any(|&(o, l)| o <= 65536 && o + l >= 65536 + 131072));
}

#[test]
fn refused_images() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    run(
        "qemu-img",
        &["create", "-f", "qcow2", &d("base.qcow2"), "4M"],
    );
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            &d("base.qcow2"),
            "-F",
            "qcow2",
            &d("overlay.qcow2"),
        ],
    );
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={}", d("data.raw")),
            &d("ext.qcow2"),
            "4M",
        ],
    );
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on",
            &d("sub.qcow2"),
            "4M",
        ],
    );
    for (file, want) in [
        ("overlay.qcow2", "backing file"),
        ("ext.qcow2", "external data file"),
        ("sub.qcow2", "subclusters"),
    ] {
        let bytes = std::fs::read(d(file)).unwrap();
        let err = auto_decode(&bytes, Chunking::Whole).unwrap_err();
        assert!(matches!(err, FormatError::Unsupported(_)), "{file}: {err}");
        assert!(err.to_string().contains(want), "{file}: {err}");
    }
}

#[test]
fn resized_image_needs_random_access_and_fallback_works() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("r.qcow2");
    let p = img.to_str().unwrap();
    run(
        "qemu-img",
        &["create", "-f", "qcow2", "-o", "cluster_size=4096", p, "1M"],
    );
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x5a 8192 100000", p],
    );
    // Growing the virtual size moves the L1 table to the end of the file, after the L2
    // tables it points to.
    run("qemu-img", &["resize", p, "64M"]);
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0xa5 40000000 5000", p],
    );
    let bytes = std::fs::read(&img).unwrap();
    let mut want = vec![0u8; 64 << 20];
    want[8192..108_192].fill(0x5a);
    want[40_000_000..40_005_000].fill(0xa5);

    let err = match decode_qcow2(&bytes, Chunking::Random(2, 10_000)) {
        Ok(_) => panic!("decoded an image needing random access"),
        Err(e) => e,
    };
    assert!(
        matches!(err, FormatError::NeedsRandomAccess { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("needs random access"), "{err}");

    // The fallback: stream, then supply the deferred ranges as a seeking reader would.
    let mut sink = MemSink::default();
    let mut dec = Qcow2Decoder::new().with_random_access();
    for c in bytes.chunks(7777) {
        dec.feed(c, &mut sink).unwrap();
    }
    assert!(matches!(
        dec.finish(&mut sink),
        Err(FormatError::NeedsRandomAccess { .. })
    ));
    let mut rounds = 0;
    while let Some(r) = dec.deferred().first().copied() {
        let data = &bytes[r.offset as usize..(r.offset + r.len) as usize];
        dec.feed_at(r.offset, data, &mut sink).unwrap();
        rounds += 1;
        assert!(rounds < 10_000);
    }
    let summary = dec.finish(&mut sink).unwrap();
    assert!(sink.image(&summary) == want);
}

#[test]
fn truncated_images() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = test_disk(3 << 20, 10);
    for opts in [&[][..], &["-c"]] {
        let img = convert(dir.path(), "t", &raw, opts);
        let mut rng = Rng(77);
        let mut cuts = vec![0, 5, 100, 65536, 65536 + 8, img.len() - 1, img.len() - 512];
        cuts.extend((0..20).map(|_| rng.below(img.len() as u64) as usize));
        for cut in cuts {
            let mut sink = MemSink::default();
            let mut dec = Qcow2Decoder::new();
            let res = decode(
                &mut dec,
                &img[..cut],
                Chunking::Random(cut as u64, 9000),
                &mut sink,
            );
            match res {
                Err(FormatError::Truncated(_)) => {}
                // Cutting inside trailing refcount blocks loses nothing the disk needs.
                Ok(s) if sink.image(&s) == raw => {}
                other => panic!("{opts:?} cut at {cut}/{}: {other:?}", img.len()),
            }
        }
    }
}

// ---- hand-made images ----

/// A minimal v3 image: header at 0, L1 at `l1_at`, one L2 at `l2_at`, data clusters listed
/// as (guest cluster index, host offset, fill byte); cluster size 512.
struct Builder {
    cs: u64,
    virtual_size: u64,
    l1_at: u64,
    l2_at: u64,
    entries: Vec<(u64, u64)>,
    data: Vec<(u64, u8)>,
    incompat: u64,
    version: u32,
}

impl Builder {
    fn new() -> Self {
        Self {
            cs: 512,
            virtual_size: 64 * 512,
            l1_at: 512,
            l2_at: 1024,
            entries: vec![(0, 1536 | 1 << 63), (3, 2048 | 1 << 63)],
            data: vec![(1536, 0x11), (2048, 0x22)],
            incompat: 0,
            version: 3,
        }
    }

    fn build(&self) -> Vec<u8> {
        let end = [self.l1_at + 8, self.l2_at + self.cs]
            .into_iter()
            .chain(self.data.iter().map(|d| d.0 + self.cs))
            .max()
            .unwrap();
        let mut img = vec![0u8; end as usize];
        img[..4].copy_from_slice(b"QFI\xfb");
        img[4..8].copy_from_slice(&self.version.to_be_bytes());
        img[20..24].copy_from_slice(&9u32.to_be_bytes());
        img[24..32].copy_from_slice(&self.virtual_size.to_be_bytes());
        img[36..40].copy_from_slice(&1u32.to_be_bytes());
        img[40..48].copy_from_slice(&self.l1_at.to_be_bytes());
        if self.version == 3 {
            img[72..80].copy_from_slice(&self.incompat.to_be_bytes());
            img[96..100].copy_from_slice(&4u32.to_be_bytes());
            img[100..104].copy_from_slice(&104u32.to_be_bytes());
        }
        let l1 = self.l1_at as usize;
        img[l1..l1 + 8].copy_from_slice(&(self.l2_at | 1 << 63).to_be_bytes());
        for &(idx, e) in &self.entries {
            let at = (self.l2_at + idx * 8) as usize;
            img[at..at + 8].copy_from_slice(&e.to_be_bytes());
        }
        for &(off, fill) in &self.data {
            img[off as usize..(off + self.cs) as usize].fill(fill);
        }
        img
    }

    fn expected(&self) -> Vec<u8> {
        let mut disk = vec![0u8; self.virtual_size as usize];
        for &(idx, e) in &self.entries {
            let off = e & OFFSET_MASK;
            if let Some(&(_, fill)) = self.data.iter().find(|d| d.0 == off) {
                if e & 1 == 0 {
                    disk[(idx * self.cs) as usize..((idx + 1) * self.cs) as usize].fill(fill);
                }
            }
        }
        disk
    }
}

fn err_of(img: &[u8]) -> FormatError {
    match decode_qcow2(img, Chunking::Random(1, 100)) {
        Ok(_) => panic!("decoded an image that should fail"),
        Err(e) => e,
    }
}

#[test]
fn handmade_image_decodes() {
    let b = Builder::new();
    let (disk, summary) = decode_qcow2(&b.build(), Chunking::Fixed(3)).unwrap();
    assert_eq!(disk, b.expected());
    assert_eq!(
        summary.zero_ranges,
        vec![(512, 1024), (2048, 64 * 512 - 2048)]
    );
}

#[test]
fn handmade_corruptions() {
    type Mutate = fn(&mut Builder);
    let cases: &[(&str, Mutate, &str)] = &[
        (
            "unaligned data",
            |b| b.entries[1].1 = 2048 + 256,
            "reserved bits",
        ),
        ("unaligned L2", |b| b.l2_at = 1024 + 8, "reserved bits"),
        (
            "compressed in header",
            |b| b.entries[0].1 = 1 << 62 | 100,
            "into the header",
        ),
        (
            "data over L1",
            |b| b.entries[0].1 = 512,
            "overlaps the L1 table",
        ),
        ("data over L2", |b| b.entries[0].1 = 1024, "overlaps"),
        ("same cluster twice", |b| b.entries[1].1 = 1536, "overlaps"),
        (
            "past virtual size",
            |b| b.virtual_size = 2 * 512,
            "past the virtual size",
        ),
        (
            "past the end",
            |b| b.entries[1].1 = 1 << 40,
            "past the end of the image",
        ),
        (
            "corrupt bit",
            |b| b.incompat = 2,
            "marked the image corrupt",
        ),
        (
            "unknown feature",
            |b| b.incompat = 1 << 9,
            "unknown incompatible features",
        ),
        (
            "v2 zero flag",
            |b| {
                b.version = 2;
                b.entries[0].1 |= 1;
            },
            "version 2",
        ),
    ];
    for (name, mutate, want) in cases {
        let mut b = Builder::new();
        mutate(&mut b);
        let err = match decode_qcow2(&b.build(), Chunking::Random(1, 100)) {
            Ok(_) => panic!("{name}: decoded"),
            Err(e) => e,
        };
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
}

#[test]
fn handmade_data_before_its_table() {
    // Data at 1024, L2 at 1536: the data passed before the L2 table that maps it was read.
    let mut b = Builder::new();
    b.l2_at = 1536;
    b.entries = vec![(2, 1024)];
    b.data = vec![(1024, 0x33)];
    let img = b.build();
    let err = err_of(&img);
    assert!(
        matches!(
            err,
            FormatError::NeedsRandomAccess {
                host_offset: 1024,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn dirty_image_accepted() {
    let mut b = Builder::new();
    b.incompat = 1;
    let (disk, _) = decode_qcow2(&b.build(), Chunking::Whole).unwrap();
    assert_eq!(disk, b.expected());
}

#[test]
fn mutated_images_never_panic() {
    let base = Builder::new().build();
    let mut rng = Rng(4242);
    for i in 0..5000 {
        let mut img = base.clone();
        for _ in 0..1 + rng.below(6) {
            let at = if rng.below(2) == 0 {
                rng.below(112) as usize
            } else {
                rng.below(img.len() as u64) as usize
            };
            img[at] = rng.next() as u8;
        }
        if rng.below(8) == 0 {
            // Extreme offsets and sizes in the header fields.
            let at = [24usize, 36, 40, 48, 56][rng.below(5) as usize];
            img[at..at + 4].fill(0xff);
        }
        if rng.below(4) == 0 {
            img.truncate(rng.below(img.len() as u64) as usize);
        }
        let mut sink = MemSink::default();
        let mut dec = Qcow2Decoder::new();
        if i % 2 == 0 {
            dec = dec.with_image_len(img.len() as u64);
        }
        let _ = decode(&mut dec, &img, Chunking::Random(i, 700), &mut sink);
    }
}
