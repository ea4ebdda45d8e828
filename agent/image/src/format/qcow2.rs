//! qcow2 decoded in download order, without staging the file.
//!
//! Layout (qemu's `docs/interop/qcow2.txt`): a header cluster, an L1 table of L2-table
//! offsets, L2 tables of data-cluster offsets, data clusters. All offsets are absolute byte
//! offsets in the file ("host offsets"). We keep a queue of host ranges we are waiting for:
//! first the L1 table; when it arrives, its L2 tables; when an L2 table arrives, its data
//! clusters, each tagged with the guest (disk) offset it goes to. Data clusters are written
//! through as their bytes pass; only tables and compressed clusters are buffered (one
//! cluster each at most, tables up to qemu's 32 MiB L1 limit).
//!
//! This works because `qemu-img convert` writes each table before the data it maps (checked
//! by this module's tests for plain, compressed and v2 images). An image that maps bytes the
//! stream already passed fails with [`FormatError::NeedsRandomAccess`]; a caller that can
//! seek builds the decoder [`Qcow2Decoder::with_random_access`], takes [`Qcow2Decoder::deferred`]
//! ranges after the stream and supplies them with [`Decoder::feed_at`].
//!
//! Everything is validated before use: a mapping that overlaps the header, a table or another
//! cluster, that is misaligned, that maps past the virtual size, or that points past the
//! image's end is refused, never written.

use std::collections::BTreeMap;
use std::fmt;

use super::{DecodeSummary, Decoder, FormatError, Sink};

const MAGIC: &[u8; 4] = b"QFI\xfb";
const V2_HEADER_LEN: usize = 72;
const V3_HEADER_LEN: usize = 104;
const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;
/// qemu's `QCOW_MAX_L1_SIZE`: larger L1 tables are refused before anything is allocated.
const MAX_L1_BYTES: u64 = 32 << 20;
/// Host offsets are 56-bit.
const MAX_HOST_OFFSET: u64 = 1 << 56;

const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
const L2_STANDARD_RESERVED: u64 = 0x3f00_0000_0000_01fe;
const L2_COMPRESSED: u64 = 1 << 62;
const L2_ZERO: u64 = 1;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = 0x1f;

const EXT_END: u32 = 0;
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
const EXT_FDE: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Checks the magic and version (needs 8 bytes).
fn check_version(buf: &[u8]) -> Result<u32, FormatError> {
    if buf.len() < 8 {
        return Err(FormatError::Truncated("the qcow2 header is cut off".into()));
    }
    if &buf[..4] != MAGIC {
        return Err(corrupt("no qcow2 magic"));
    }
    match be32(buf, 4) {
        v @ (2 | 3) => Ok(v),
        1 => Err(FormatError::Unsupported(
            "qcow (version 1) images are not supported; convert with `qemu-img convert -O qcow2`"
                .into(),
        )),
        v => Err(FormatError::Unsupported(format!("qcow2 version {v}"))),
    }
}

fn check_cluster_bits(bits: u32) -> Result<u64, FormatError> {
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&bits) {
        return Err(corrupt(format!(
            "cluster_bits {bits} is outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
        )));
    }
    Ok(1 << bits)
}

fn corrupt(detail: impl Into<String>) -> FormatError {
    FormatError::Corrupt {
        format: "qcow2",
        detail: detail.into(),
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// How compressed clusters are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterCompression {
    /// Raw deflate (no zlib header), qemu's default.
    Deflate,
    Zstd,
}

/// What the decoder needs from the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub virtual_size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub incompatible_features: u64,
    pub compression: ClusterCompression,
}

impl Qcow2Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// Parses and validates the header from the file's first cluster (`buf` holds the first
    /// cluster, or all of a shorter file). Refuses what cannot be written faithfully:
    /// backing files, encryption, external data files, subclusters, unknown features.
    pub fn parse(buf: &[u8]) -> Result<Self, FormatError> {
        let short = |what: &str| FormatError::Truncated(format!("the qcow2 {what} is cut off"));
        let version = check_version(buf)?;
        if buf.len() < V2_HEADER_LEN {
            return Err(short("header"));
        }
        if be64(buf, 8) != 0 {
            return Err(FormatError::Unsupported(
                "the image has a backing file (it is an overlay); only standalone images can be written — flatten it with `qemu-img convert -O qcow2`".into(),
            ));
        }
        let cluster_bits = be32(buf, 20);
        let cluster_size = check_cluster_bits(cluster_bits)?;
        let virtual_size = be64(buf, 24);
        let crypt_method = be32(buf, 32);
        if crypt_method != 0 {
            return Err(FormatError::Unsupported(format!(
                "the image is encrypted (encryption method {crypt_method})"
            )));
        }
        let l1_size = be32(buf, 36);
        let l1_table_offset = be64(buf, 40);
        let refcount_table_offset = be64(buf, 48);
        let refcount_table_clusters = be32(buf, 56);

        let (incompat, header_length, compression_type) = if version == 3 {
            if buf.len() < V3_HEADER_LEN {
                return Err(short("header"));
            }
            let incompat = be64(buf, 72);
            let refcount_order = be32(buf, 96);
            if refcount_order > 6 {
                return Err(corrupt(format!(
                    "refcount_order {refcount_order} is above 6"
                )));
            }
            let header_length = be32(buf, 100) as u64;
            if header_length < V3_HEADER_LEN as u64 || header_length > cluster_size {
                return Err(corrupt(format!(
                    "header_length {header_length} is outside {V3_HEADER_LEN}..={cluster_size}"
                )));
            }
            let compression_type = if header_length > V3_HEADER_LEN as u64 {
                *buf.get(V3_HEADER_LEN).ok_or_else(|| short("header"))?
            } else {
                0
            };
            (incompat, header_length as usize, compression_type)
        } else {
            (0, V2_HEADER_LEN, 0)
        };

        // Header extensions, up to the end marker; they must fit in the first cluster.
        let mut feature_names: Vec<(u8, String)> = Vec::new();
        let mut at = header_length;
        loop {
            if at as u64 + 8 > cluster_size {
                return Err(corrupt("header extensions run past the first cluster"));
            }
            if at + 8 > buf.len() {
                return Err(short("header extension area"));
            }
            let (kind, len) = (be32(buf, at), be32(buf, at + 4) as usize);
            if kind == EXT_END {
                break;
            }
            let data_start = at + 8;
            let data_end = data_start as u64 + len as u64;
            if data_end > cluster_size {
                return Err(corrupt("a header extension runs past the first cluster"));
            }
            let data_end = data_end as usize;
            if data_end > buf.len() {
                return Err(short("header extension area"));
            }
            match kind {
                EXT_DATA_FILE => {
                    return Err(FormatError::Unsupported(
                        "the image keeps its data in an external data file".into(),
                    ))
                }
                EXT_FDE => {
                    return Err(FormatError::Unsupported(
                        "the image is encrypted (LUKS)".into(),
                    ))
                }
                EXT_FEATURE_TABLE => {
                    for entry in buf[data_start..data_end].chunks_exact(48) {
                        if entry[0] == 0 {
                            let name = &entry[2..];
                            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(46)];
                            feature_names.push((entry[1], String::from_utf8_lossy(name).into()));
                        }
                    }
                }
                _ => {}
            }
            at = data_start + len.next_multiple_of(8);
        }

        if incompat & INCOMPAT_CORRUPT != 0 {
            return Err(corrupt(
                "qemu marked the image corrupt (inconsistent metadata); repair it with `qemu-img check -r all`",
            ));
        }
        if incompat & INCOMPAT_DATA_FILE != 0 {
            return Err(FormatError::Unsupported(
                "the image keeps its data in an external data file".into(),
            ));
        }
        if incompat & INCOMPAT_EXTL2 != 0 {
            return Err(FormatError::Unsupported(
                "extended L2 entries (subclusters, `extended_l2=on`) are not supported; convert with `qemu-img convert -O qcow2`".into(),
            ));
        }
        let unknown = incompat & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let names: Vec<String> = (0..64u8)
                .filter(|bit| unknown & (1 << bit) != 0)
                .map(|bit| {
                    feature_names
                        .iter()
                        .find(|(b, _)| *b == bit)
                        .map(|(_, n)| format!("{n:?} (bit {bit})"))
                        .unwrap_or_else(|| format!("bit {bit}"))
                })
                .collect();
            return Err(FormatError::Unsupported(format!(
                "unknown incompatible features: {}",
                names.join(", ")
            )));
        }
        let compression = match (incompat & INCOMPAT_COMPRESSION != 0, compression_type) {
            (false, 0) => ClusterCompression::Deflate,
            (true, 1) => ClusterCompression::Zstd,
            (true, 0) | (false, _) => {
                return Err(corrupt(
                    "the compression type bit and the compression_type field disagree",
                ))
            }
            (true, t) => {
                return Err(FormatError::Unsupported(format!(
                    "compression type {t} for compressed clusters"
                )))
            }
        };
        if incompat & INCOMPAT_DIRTY != 0 {
            // Only the refcounts may be stale, and we never read them.
            tracing::warn!("qcow2 image is marked dirty (not closed cleanly); its tables are still used as they are");
        }

        // L1 table: bounded, aligned, large enough for the virtual size.
        let l1_bytes = l1_size as u64 * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(corrupt(format!(
                "L1 table of {l1_size} entries is over qemu's {} MiB limit",
                MAX_L1_BYTES >> 20
            )));
        }
        let per_l1_entry = cluster_size as u128 * (cluster_size / 8) as u128;
        let needed = (virtual_size as u128).div_ceil(per_l1_entry);
        if (l1_size as u128) < needed {
            return Err(corrupt(format!(
                "L1 table of {l1_size} entries is too small for a virtual size of {virtual_size} bytes (needs {needed})"
            )));
        }
        if l1_size > 0
            && (!l1_table_offset.is_multiple_of(cluster_size)
                || l1_table_offset == 0
                || l1_table_offset >= MAX_HOST_OFFSET
                || l1_table_offset + l1_bytes > MAX_HOST_OFFSET)
        {
            return Err(corrupt(format!(
                "L1 table offset {l1_table_offset} is zero, unaligned or out of range"
            )));
        }
        if !refcount_table_offset.is_multiple_of(cluster_size)
            || refcount_table_offset >= MAX_HOST_OFFSET
            || refcount_table_clusters as u64 * cluster_size > MAX_L1_BYTES
        {
            return Err(corrupt(format!(
                "refcount table at {refcount_table_offset} ({refcount_table_clusters} clusters) is unaligned or out of range"
            )));
        }

        Ok(Self {
            version,
            cluster_bits,
            virtual_size,
            l1_size,
            l1_table_offset,
            refcount_table_offset,
            refcount_table_clusters,
            incompatible_features: incompat,
            compression,
        })
    }
}

/// What a host range of the image holds, for the decoder's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeKind {
    L1Table,
    L2Table {
        l1_index: u64,
    },
    /// One or more whole data clusters, contiguous on the host and in the guest.
    Data {
        guest: u64,
    },
    /// One compressed cluster (its range rounds up to whole 512-byte sectors).
    Compressed {
        guest: u64,
    },
}

/// A host byte range the decoder needs: `[offset, offset + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRange {
    pub offset: u64,
    pub len: u64,
    pub kind: RangeKind,
}

impl HostRange {
    fn end(&self) -> u64 {
        self.offset + self.len
    }
}

impl fmt::Display for HostRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RangeKind::L1Table => write!(f, "the L1 table"),
            RangeKind::L2Table { l1_index } => write!(f, "the L2 table for L1 entry {l1_index}"),
            RangeKind::Data { guest } => write!(f, "the data cluster for guest offset {guest}"),
            RangeKind::Compressed { guest } => {
                write!(f, "the compressed cluster for guest offset {guest}")
            }
        }
    }
}

/// What owns a host range, for overlap checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Header,
    RefcountTable,
    L1,
    L2,
    Data,
    ZeroCluster,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Owner::Header => "header cluster",
            Owner::RefcountTable => "refcount table",
            Owner::L1 => "L1 table",
            Owner::L2 => "an L2 table",
            Owner::Data => "a data cluster",
            Owner::ZeroCluster => "a preallocated zero cluster",
        })
    }
}

/// The parsed map so far, for a caller that falls back to random access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Map {
    pub header: Qcow2Header,
    /// Raw L1 entries (empty until the L1 table arrived).
    pub l1: Vec<u64>,
    /// Guest ranges mapped to data so far, as `(offset, len)`, in discovery order.
    pub mapped: Vec<(u64, u64)>,
}

/// Bytes `[offset, offset + bytes.len())` kept after the stream passed them; still growing
/// while the stream is before `until`.
struct Retained {
    offset: u64,
    until: u64,
    bytes: Vec<u8>,
}

/// How many retained tails to keep (each at most one cluster and a sector).
const MAX_RETAINED: usize = 4;

struct Active {
    range: HostRange,
    buf: Vec<u8>,
}

/// Streaming qcow2 decoder (versions 2 and 3; deflate and zstd compressed clusters).
pub struct Qcow2Decoder {
    image_len: Option<u64>,
    random_access: bool,
    header_buf: Vec<u8>,
    header: Option<Qcow2Header>,
    /// Bytes of the image consumed so far.
    pos: u64,
    /// Ranges still ahead in the stream, by host offset.
    pending: BTreeMap<u64, HostRange>,
    /// Ranges the stream is inside of.
    active: Vec<Active>,
    /// Every non-compressed range ever mapped, by host offset: `(end, owner)`.
    claims: BTreeMap<u64, (u64, Owner)>,
    /// Guest ranges that get data, merged when adjacent.
    covered: Vec<(u64, u64)>,
    l1: Vec<u64>,
    deferred: Vec<HostRange>,
    /// Recently passed bytes that later compressed clusters may still use (see
    /// [`Self::retain_after_compressed`]), oldest first.
    retained: std::collections::VecDeque<Retained>,
    stream_ended: bool,
    cluster_buf: Vec<u8>,
    inflate: Option<flate2::Decompress>,
    zstd: Option<zstd::stream::raw::Decoder<'static>>,
}

impl Default for Qcow2Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Qcow2Decoder {
    pub fn new() -> Self {
        Self {
            image_len: None,
            random_access: false,
            header_buf: Vec::new(),
            header: None,
            pos: 0,
            pending: BTreeMap::new(),
            active: Vec::new(),
            claims: BTreeMap::new(),
            covered: Vec::new(),
            l1: Vec::new(),
            deferred: Vec::new(),
            retained: std::collections::VecDeque::new(),
            stream_ended: false,
            cluster_buf: Vec::new(),
            inflate: None,
            zstd: None,
        }
    }

    /// The file's length, when known (Content-Length): mappings past it are reported as
    /// corrupt as soon as they are read, instead of as a truncated download at the end.
    pub fn with_image_len(mut self, len: u64) -> Self {
        self.image_len = Some(len);
        self
    }

    /// Collects ranges the stream already passed instead of failing: after the stream,
    /// [`Self::finish`] fails with `NeedsRandomAccess` while [`Self::deferred`] is non-empty;
    /// supply each range with [`Self::feed_at`] and call `finish` again.
    pub fn with_random_access(mut self) -> Self {
        self.random_access = true;
        self
    }

    /// The header, once parsed.
    pub fn header(&self) -> Option<&Qcow2Header> {
        self.header.as_ref()
    }

    /// The map parsed so far (`None` before the header).
    pub fn map(&self) -> Option<Qcow2Map> {
        Some(Qcow2Map {
            header: self.header.clone()?,
            l1: self.l1.clone(),
            mapped: self.covered.clone(),
        })
    }

    /// Ranges behind the stream that random access must supply (see [`Self::feed_at`]).
    pub fn deferred(&self) -> &[HostRange] {
        &self.deferred
    }

    fn h(&self) -> &Qcow2Header {
        self.header.as_ref().expect("header parsed")
    }

    /// Queues a range after validating it against everything mapped so far.
    fn register(&mut self, range: HostRange, sink: &mut dyn Sink) -> Result<(), FormatError> {
        let (start, end) = (range.offset, range.end());
        if end > MAX_HOST_OFFSET {
            return Err(corrupt(format!(
                "{range} points past the 56-bit offset limit"
            )));
        }
        if let Some(len) = self.image_len {
            if end > len {
                return Err(corrupt(format!(
                    "{range} at byte {start} ends past the end of the image ({len} bytes)"
                )));
            }
        }
        if let Some((&s, &(e, owner))) = self.claims.range(..end).next_back() {
            if e > start {
                return Err(corrupt(format!(
                    "{range} at byte {start} overlaps the {owner} at byte {s}"
                )));
            }
        }
        let compressed = matches!(range.kind, RangeKind::Compressed { .. });
        if !compressed {
            if let Some((&s, other)) = self.pending.range(..end).next_back() {
                if matches!(other.kind, RangeKind::Compressed { .. }) && other.end() > start {
                    return Err(corrupt(format!(
                        "{range} at byte {start} overlaps {other} at byte {s}"
                    )));
                }
            }
            let owner = match range.kind {
                RangeKind::L1Table => Owner::L1,
                RangeKind::L2Table { .. } => Owner::L2,
                _ => Owner::Data,
            };
            self.claim(start, end, owner);
        }
        if compressed && start < self.pos && !self.stream_ended {
            if let Some(prefix) = self.retained_bytes(start, end.min(self.pos)) {
                if end <= self.pos {
                    return self.complete(range, &prefix, sink, false);
                }
                self.active.push(Active { range, buf: prefix });
                return Ok(());
            }
        }
        if start < self.pos || self.stream_ended {
            if self.stream_ended && end > self.pos {
                return Err(FormatError::Truncated(format!(
                    "{range} at byte {start} is past the end of the image ({} bytes)",
                    self.pos
                )));
            }
            if self.random_access {
                self.deferred.push(range);
                return Ok(());
            }
            return Err(FormatError::NeedsRandomAccess {
                what: range.to_string(),
                host_offset: start,
                stream_pos: self.pos,
            });
        }
        if let RangeKind::Data { guest } = range.kind {
            if let Some((_, prev)) = self.pending.range_mut(..start).next_back() {
                if let RangeKind::Data { guest: g } = prev.kind {
                    if prev.end() == start && g + prev.len == guest {
                        prev.len += range.len;
                        return Ok(());
                    }
                }
            }
        }
        if let Some(other) = self.pending.insert(start, range) {
            return Err(corrupt(format!(
                "{range} and {other} both start at byte {start}"
            )));
        }
        Ok(())
    }

    /// qemu packs compressed clusters byte by byte into a "current" host cluster and keeps
    /// filling its tail later, even after allocating L2 tables or uncompressed clusters
    /// further on (`qcow2_alloc_bytes`). So a compressed cluster mapped by a later L2 table
    /// may sit in the tail of an earlier cluster: keep that tail (from the last sector of
    /// the compressed cluster that just ended to the end of its host cluster) while it passes.
    fn retain_after_compressed(&mut self, range: &HostRange, buf: &[u8]) {
        let cs = self.h().cluster_size();
        let end = range.end();
        let from = range.offset.max(end.saturating_sub(512));
        let until = end.next_multiple_of(cs).max(end);
        if let Some(last) = self.retained.back() {
            if last.offset <= from
                && last.until == until
                && last.offset + last.bytes.len() as u64 >= from
            {
                return;
            }
        }
        let have = (end - from) as usize;
        let bytes = buf[buf.len().saturating_sub(have)..].to_vec();
        if bytes.len() != have {
            return;
        }
        if self.retained.len() == MAX_RETAINED {
            self.retained.pop_front();
        }
        self.retained.push_back(Retained {
            offset: from,
            until,
            bytes,
        });
    }

    /// Appends stream bytes at `pos` to the retained tails still growing.
    fn capture(&mut self, pos: u64, chunk: &[u8]) {
        for r in self.retained.iter_mut() {
            let have_end = r.offset + r.bytes.len() as u64;
            if have_end == pos && pos < r.until {
                let n = ((r.until - pos) as usize).min(chunk.len());
                r.bytes.extend_from_slice(&chunk[..n]);
            }
        }
    }

    /// Retained bytes `[start, end)`, if one tail holds them all.
    fn retained_bytes(&self, start: u64, end: u64) -> Option<Vec<u8>> {
        self.retained.iter().find_map(|r| {
            let have_end = r.offset + r.bytes.len() as u64;
            (r.offset <= start && end <= have_end)
                .then(|| r.bytes[(start - r.offset) as usize..(end - r.offset) as usize].to_vec())
        })
    }

    fn claim(&mut self, start: u64, end: u64, owner: Owner) {
        if owner == Owner::Data {
            if let Some((_, prev)) = self.claims.range_mut(..start).next_back() {
                if prev.0 == start && prev.1 == Owner::Data {
                    prev.0 = end;
                    return;
                }
            }
        }
        self.claims.insert(start, (end, owner));
    }

    fn cover(&mut self, guest: u64, len: u64) {
        if let Some(last) = self.covered.last_mut() {
            if last.0 + last.1 == guest {
                last.1 += len;
                return;
            }
        }
        self.covered.push((guest, len));
    }

    /// Writes guest data, dropping whatever lies past the virtual size (the last cluster of
    /// an image whose size is not a cluster multiple).
    fn write_guest(&self, guest: u64, data: &[u8], sink: &mut dyn Sink) -> Result<(), FormatError> {
        let size = self.h().virtual_size;
        if guest >= size {
            return Ok(());
        }
        let len = (size - guest).min(data.len() as u64) as usize;
        sink.write_at(guest, &data[..len])?;
        Ok(())
    }

    fn parse_header(&mut self, sink: &mut dyn Sink) -> Result<(), FormatError> {
        let h = Qcow2Header::parse(&self.header_buf)?;
        let cs = h.cluster_size();
        tracing::debug!(
            version = h.version,
            cluster_size = cs,
            virtual_size = h.virtual_size,
            "qcow2 header"
        );
        sink.announce_size(h.virtual_size)?;
        self.claims.insert(0, (cs, Owner::Header));
        let rt_len = h.refcount_table_clusters as u64 * cs;
        let (rt_off, l1_off, l1_len) = (
            h.refcount_table_offset,
            h.l1_table_offset,
            h.l1_size as u64 * 8,
        );
        self.header = Some(h);
        self.pos = self.header_buf.len() as u64;
        self.header_buf = Vec::new();
        if rt_off != 0 && rt_len != 0 {
            if let Some((_, &(e, owner))) = self.claims.range(..rt_off + rt_len).next_back() {
                if e > rt_off {
                    return Err(corrupt(format!(
                        "the refcount table at byte {rt_off} overlaps the {owner}"
                    )));
                }
            }
            self.claims
                .insert(rt_off, (rt_off + rt_len, Owner::RefcountTable));
        }
        if l1_len > 0 {
            self.register(
                HostRange {
                    offset: l1_off,
                    len: l1_len,
                    kind: RangeKind::L1Table,
                },
                sink,
            )?;
        }
        Ok(())
    }

    /// A buffered range is complete (or, at the end of the stream, as complete as it gets).
    fn complete(
        &mut self,
        range: HostRange,
        bytes: &[u8],
        sink: &mut dyn Sink,
        cut_off: bool,
    ) -> Result<(), FormatError> {
        match range.kind {
            RangeKind::L1Table => self.read_l1(bytes, sink),
            RangeKind::L2Table { l1_index } => self.read_l2(l1_index, bytes, sink),
            RangeKind::Compressed { guest } => {
                match self.decompress_cluster(bytes) {
                    Ok(()) => {}
                    Err(_) if cut_off => {
                        return Err(FormatError::Truncated(format!(
                            "{range} at byte {} is cut off",
                            range.offset
                        )))
                    }
                    Err(e) => {
                        return Err(corrupt(format!("{range} at byte {}: {e}", range.offset)))
                    }
                }
                let buf = std::mem::take(&mut self.cluster_buf);
                let res = self.write_guest(guest, &buf, sink);
                self.cluster_buf = buf;
                res
            }
            RangeKind::Data { .. } => Ok(()),
        }
    }

    fn read_l1(&mut self, bytes: &[u8], sink: &mut dyn Sink) -> Result<(), FormatError> {
        let h = self.h().clone();
        let cs = h.cluster_size();
        let per_entry = cs * h.l2_entries();
        let entries: Vec<u64> = bytes.chunks_exact(8).map(|e| be64(e, 0)).collect();
        for (i, &e) in entries.iter().enumerate() {
            if e == 0 {
                continue;
            }
            if e & L1_RESERVED != 0 {
                return Err(corrupt(format!("L1 entry {i} has reserved bits set")));
            }
            let off = e & OFFSET_MASK;
            if off == 0 {
                continue;
            }
            if !off.is_multiple_of(cs) {
                return Err(corrupt(format!(
                    "L1 entry {i} points to byte {off}, not cluster-aligned"
                )));
            }
            if i as u64 * per_entry >= h.virtual_size {
                return Err(corrupt(format!(
                    "L1 entry {i} maps guest offsets past the virtual size"
                )));
            }
            self.register(
                HostRange {
                    offset: off,
                    len: cs,
                    kind: RangeKind::L2Table { l1_index: i as u64 },
                },
                sink,
            )?;
        }
        self.l1 = entries;
        Ok(())
    }

    fn read_l2(
        &mut self,
        l1_index: u64,
        bytes: &[u8],
        sink: &mut dyn Sink,
    ) -> Result<(), FormatError> {
        let h = self.h().clone();
        let cs = h.cluster_size();
        let first_guest = l1_index * h.l2_entries() * cs;
        // Compressed descriptor: host offset in bits 0..x, additional sectors in x..62.
        let x = 62 - (h.cluster_bits - 8);
        let coff_mask = (1u64 << x) - 1;
        let nsec_mask = (1u64 << (h.cluster_bits - 8)) - 1;
        for (j, e) in bytes.chunks_exact(8).enumerate() {
            let e = be64(e, 0);
            if e == 0 {
                continue;
            }
            let guest = first_guest + j as u64 * cs;
            let here = || format!("L2 entry {j} of L1 entry {l1_index} (guest offset {guest})");
            if guest >= h.virtual_size {
                return Err(corrupt(format!("{} maps past the virtual size", here())));
            }
            let len = cs.min(h.virtual_size - guest);
            if e & L2_COMPRESSED != 0 {
                let coff = e & coff_mask;
                let sectors = ((e >> x) & nsec_mask) + 1;
                let clen = sectors * 512 - (coff & 511);
                if coff < cs {
                    return Err(corrupt(format!("{} points into the header", here())));
                }
                self.register(
                    HostRange {
                        offset: coff,
                        len: clen,
                        kind: RangeKind::Compressed { guest },
                    },
                    sink,
                )?;
                self.cover(guest, len);
                continue;
            }
            if e & L2_STANDARD_RESERVED != 0 {
                return Err(corrupt(format!("{} has reserved bits set", here())));
            }
            let off = e & OFFSET_MASK;
            if !off.is_multiple_of(cs) {
                return Err(corrupt(format!(
                    "{} points to byte {off}, not cluster-aligned",
                    here()
                )));
            }
            if e & L2_ZERO != 0 {
                if h.version < 3 {
                    return Err(corrupt(format!(
                        "{} has the zero flag, which version 2 does not have",
                        here()
                    )));
                }
                // Reads as zeros; a preallocated host cluster still must not overlap anything.
                if off != 0 {
                    if let Some((&s, &(end, owner))) = self.claims.range(..off + cs).next_back() {
                        if end > off {
                            return Err(corrupt(format!(
                                "{} at byte {off} overlaps the {owner} at byte {s}",
                                here()
                            )));
                        }
                    }
                    self.claim(off, off + cs, Owner::ZeroCluster);
                }
                continue;
            }
            if off == 0 {
                // Unallocated; without a backing file it reads as zeros.
                continue;
            }
            self.register(
                HostRange {
                    offset: off,
                    len: cs,
                    kind: RangeKind::Data { guest },
                },
                sink,
            )?;
            self.cover(guest, len);
        }
        Ok(())
    }

    /// Decompresses one cluster into `cluster_buf`; must yield exactly one cluster.
    fn decompress_cluster(&mut self, data: &[u8]) -> Result<(), String> {
        let cs = self.h().cluster_size() as usize;
        let compression = self.h().compression;
        self.cluster_buf.resize(cs, 0);
        let produced = match compression {
            ClusterCompression::Deflate => {
                let d = self
                    .inflate
                    .get_or_insert_with(|| flate2::Decompress::new(false));
                d.reset(false);
                d.decompress(data, &mut self.cluster_buf, flate2::FlushDecompress::Finish)
                    .map_err(|e| format!("invalid deflate data ({e})"))?;
                d.total_out() as usize
            }
            ClusterCompression::Zstd => {
                use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
                let d = match &mut self.zstd {
                    Some(d) => {
                        d.reinit().map_err(|e| format!("zstd: {e}"))?;
                        d
                    }
                    None => self.zstd.insert(
                        zstd::stream::raw::Decoder::new().map_err(|e| format!("zstd: {e}"))?,
                    ),
                };
                let mut inb = InBuffer::around(data);
                let mut outb = OutBuffer::around(&mut self.cluster_buf[..]);
                loop {
                    let before = (inb.pos(), outb.pos());
                    let hint = d
                        .run(&mut inb, &mut outb)
                        .map_err(|e| format!("invalid zstd data ({e})"))?;
                    if outb.pos() == cs || hint == 0 || (inb.pos(), outb.pos()) == before {
                        break;
                    }
                }
                outb.pos()
            }
        };
        if produced != cs {
            return Err(format!(
                "decompresses to {produced} bytes instead of one {cs}-byte cluster"
            ));
        }
        Ok(())
    }

    /// Runs the stream's bytes past the queue.
    fn feed_body(&mut self, mut input: &[u8], sink: &mut dyn Sink) -> Result<(), FormatError> {
        while !input.is_empty() {
            // Ranges starting here become active.
            while let Some(entry) = self.pending.first_entry() {
                if *entry.key() != self.pos {
                    break;
                }
                let range = entry.remove();
                let buf = match range.kind {
                    RangeKind::Data { .. } => Vec::new(),
                    _ => Vec::with_capacity(range.len.min(1 << 21) as usize),
                };
                self.active.push(Active { range, buf });
            }
            if self.active.is_empty() {
                // Nothing wanted here: skip to the next wanted range.
                let skip = match self.pending.first_key_value() {
                    Some((&next, _)) => (next - self.pos).min(input.len() as u64) as usize,
                    None => input.len(),
                };
                self.capture(self.pos, &input[..skip]);
                self.pos += skip as u64;
                input = &input[skip..];
                continue;
            }
            let mut step = input.len() as u64;
            if let Some((&next, _)) = self.pending.first_key_value() {
                step = step.min(next - self.pos);
            }
            for a in &self.active {
                step = step.min(a.range.end() - self.pos);
            }
            let (chunk, rest) = input.split_at(step as usize);
            self.capture(self.pos, chunk);
            for a in &mut self.active {
                match a.range.kind {
                    RangeKind::Data { guest } => {
                        let g = guest + (self.pos - a.range.offset);
                        let size = self.header.as_ref().expect("header").virtual_size;
                        if g < size {
                            let n = (size - g).min(chunk.len() as u64) as usize;
                            sink.write_at(g, &chunk[..n])?;
                        }
                    }
                    _ => a.buf.extend_from_slice(chunk),
                }
            }
            self.pos += step;
            input = rest;
            let mut i = 0;
            while i < self.active.len() {
                if self.active[i].range.end() == self.pos {
                    let done = self.active.swap_remove(i);
                    if matches!(done.range.kind, RangeKind::Compressed { .. }) {
                        self.retain_after_compressed(&done.range, &done.buf);
                    }
                    self.complete(done.range, &done.buf, sink, false)?;
                } else {
                    i += 1;
                }
            }
        }
        Ok(())
    }

    /// How many leading bytes to buffer before looking further: up to the cluster size field,
    /// then the whole first cluster.
    fn header_want(&self) -> Result<usize, FormatError> {
        let b = &self.header_buf;
        if b.len() < 8 {
            return Ok(8);
        }
        check_version(b)?;
        if b.len() < 24 {
            return Ok(24);
        }
        Ok(check_cluster_bits(be32(b, 20))? as usize)
    }

    fn zero_ranges(&self) -> Vec<(u64, u64)> {
        let size = self.h().virtual_size;
        let mut covered = self.covered.clone();
        covered.sort_unstable();
        let mut zeros = Vec::new();
        let mut at = 0u64;
        for (g, len) in covered {
            if g > at {
                zeros.push((at, g - at));
            }
            at = at.max(g + len);
        }
        if at < size {
            zeros.push((at, size - at));
        }
        zeros
    }
}

impl Decoder for Qcow2Decoder {
    fn deferred(&self) -> Vec<(u64, u64)> {
        Qcow2Decoder::deferred(self)
            .iter()
            .map(|r| (r.offset, r.len))
            .collect()
    }

    /// Supplies a deferred range's bytes, read at `offset` of the image: exactly one
    /// range from [`Self::deferred`]. May defer further ranges.
    fn feed_at(
        &mut self,
        offset: u64,
        data: &[u8],
        sink: &mut dyn Sink,
    ) -> Result<(), FormatError> {
        let idx = self
            .deferred
            .iter()
            .position(|r| r.offset == offset && r.len == data.len() as u64)
            .ok_or_else(|| {
                corrupt(format!(
                    "no deferred range is {} bytes at byte {offset}",
                    data.len()
                ))
            })?;
        let range = self.deferred.swap_remove(idx);
        if let RangeKind::Data { guest } = range.kind {
            self.write_guest(guest, data, sink)
        } else {
            self.complete(range, data, sink, false)
        }
    }

    fn feed(&mut self, mut input: &[u8], sink: &mut dyn Sink) -> Result<(), FormatError> {
        while self.header.is_none() {
            // Buffer the first cluster: header and extensions live there.
            let want = self.header_want()?;
            let take = (want - self.header_buf.len()).min(input.len());
            self.header_buf.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.header_buf.len() < want {
                return Ok(());
            }
            if want > 24 {
                self.parse_header(sink)?;
            }
        }
        self.feed_body(input, sink)
    }

    fn finish(&mut self, sink: &mut dyn Sink) -> Result<DecodeSummary, FormatError> {
        if self.header.is_none() {
            self.parse_header(sink)?;
        }
        if !self.stream_ended {
            self.stream_ended = true;
            // A compressed cluster at the very end may be shorter than its sector-rounded
            // range; it is complete if it decompresses.
            let active = std::mem::take(&mut self.active);
            for a in active {
                match a.range.kind {
                    RangeKind::Compressed { .. } => self.complete(a.range, &a.buf, sink, true)?,
                    _ => {
                        return Err(FormatError::Truncated(format!(
                            "{} at byte {} is cut off at byte {}",
                            a.range, a.range.offset, self.pos
                        )))
                    }
                }
            }
        }
        if let Some(range) = self.pending.values().next() {
            return Err(FormatError::Truncated(format!(
                "{range} at byte {} never arrived: the image ended at byte {}",
                range.offset, self.pos
            )));
        }
        if let Some(range) = self.deferred.first() {
            return Err(FormatError::NeedsRandomAccess {
                what: range.to_string(),
                host_offset: range.offset,
                stream_pos: self.pos,
            });
        }
        Ok(DecodeSummary {
            disk_bytes: self.h().virtual_size,
            zero_ranges: self.zero_ranges(),
        })
    }
}

#[cfg(test)]
#[path = "qcow2_tests.rs"]
mod tests;
