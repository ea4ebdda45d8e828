//! Compressed images (zstd, gzip, xz): decompressed as the bytes arrive, never staged.
//!
//! Each codec is driven push-style (input slice in, output buffer out) and the decompressed
//! stream goes to an inner stage that sniffs it once more: a raw disk is written in order, a
//! qcow2 image (`disk.qcow2.zst`) goes through [`Qcow2Decoder`]. A second layer of
//! compression is refused rather than written to the disk as compressed bytes.
//!
//! Memory is bounded per codec: one [`OUT_CHUNK`] output buffer plus the codec's window —
//! zstd at most 128 MiB (libzstd's default decoding limit, window log 27; frames made with
//! `zstd --long=28` or more are refused), gzip 32 KiB, xz at most [`XZ_MEMLIMIT`] (the
//! dictionary: 64 MiB for `xz -9`, up to 1.5 GiB for custom presets, which are refused).

use super::{sniff, DecodeSummary, Decoder, Format, FormatError, Qcow2Decoder, Sink, SNIFF_LEN};

/// Size of the decompressed chunks handed to the sink.
pub const OUT_CHUNK: usize = 1 << 20;

/// liblzma's memory limit for the xz decoder.
pub const XZ_MEMLIMIT: u64 = 512 << 20;

/// One decompression library driven push-style.
pub trait Codec: Send {
    /// Format name for messages.
    const FORMAT: &'static str;
    /// Decompresses from `input` into `out`; returns (bytes consumed, bytes produced).
    /// Must make progress unless `input` is empty or `out` is full.
    fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), FormatError>;
    /// The input ended: emits what the codec still holds into `out` and returns how much; 0
    /// once everything is out. Fails `Truncated` if the stream stopped inside a frame.
    fn finish_step(&mut self, out: &mut [u8]) -> Result<usize, FormatError>;
    /// The decompressed size, when the stream's header says so.
    fn content_size(&self) -> Option<u64> {
        None
    }
}

/// A compressed image: a [`Codec`] feeding an inner raw or qcow2 stage.
pub struct CompressedDecoder<C: Codec> {
    codec: C,
    out: Vec<u8>,
    filled: usize,
    inner: Inner,
}

/// A zstd-compressed image (any number of frames, skippable frames allowed).
pub type ZstdDecoder = CompressedDecoder<ZstdCodec>;
/// A gzip-compressed image (any number of members; trailing zero padding is tolerated).
pub type GzipDecoder = CompressedDecoder<GzipCodec>;
/// An xz-compressed image (any number of streams, with stream padding).
pub type XzDecoder = CompressedDecoder<XzCodec>;

impl ZstdDecoder {
    pub fn new() -> Self {
        Self::with_codec(ZstdCodec::new())
    }
}

impl GzipDecoder {
    pub fn new() -> Self {
        Self::with_codec(GzipCodec::new())
    }
}

impl XzDecoder {
    pub fn new() -> Self {
        Self::with_codec(XzCodec::new())
    }
}

impl Default for ZstdDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Default for GzipDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Default for XzDecoder {
    fn default() -> Self {
        Self::new()
    }
}

enum Inner {
    /// Fewer than [`SNIFF_LEN`] decompressed bytes so far (they wait in the output buffer).
    Sniffing,
    Raw {
        pos: u64,
    },
    Qcow2(Box<Qcow2Decoder>),
}

impl<C: Codec> CompressedDecoder<C> {
    fn with_codec(codec: C) -> Self {
        Self {
            codec,
            out: vec![0; OUT_CHUNK],
            filled: 0,
            inner: Inner::Sniffing,
        }
    }

    /// Chooses the inner stage from the first decompressed bytes, before anything is written
    /// (so a raw image's size is announced first).
    fn start_inner(&mut self, sink: &mut dyn Sink) -> Result<(), FormatError> {
        if matches!(self.inner, Inner::Sniffing) && self.filled > 0 {
            let prefix = &self.out[..self.filled.min(SNIFF_LEN)];
            self.inner = start_inner(sniff(prefix), self.codec.content_size(), C::FORMAT, sink)?;
        }
        Ok(())
    }

    fn flush(&mut self, sink: &mut dyn Sink) -> Result<(), FormatError> {
        if self.filled == 0 {
            return Ok(());
        }
        self.start_inner(sink)?;
        let filled = std::mem::take(&mut self.filled);
        push_inner(&mut self.inner, &self.out[..filled], sink)
    }
}

/// The inner stage for a decompressed stream of `format`.
fn start_inner(
    format: Format,
    content_size: Option<u64>,
    outer: &'static str,
    sink: &mut dyn Sink,
) -> Result<Inner, FormatError> {
    match format {
        Format::Raw => {
            if let Some(size) = content_size {
                // The first frame's declared size: exact for single-frame files (what `zstd`
                // writes); a lower bound for multi-frame ones, so the early size check can
                // only pass too often, never refuse a fitting image.
                sink.announce_size(size)?;
            }
            Ok(Inner::Raw { pos: 0 })
        }
        Format::Qcow2 => {
            tracing::debug!(outer, "compressed image contains qcow2");
            Ok(Inner::Qcow2(Box::default()))
        }
        nested @ (Format::Zstd | Format::Gzip | Format::Xz) => Err(FormatError::Corrupt {
            format: outer,
            detail: format!(
                "the decompressed image is itself {nested}-compressed; compress images only once"
            ),
        }),
    }
}

fn push_inner(inner: &mut Inner, data: &[u8], sink: &mut dyn Sink) -> Result<(), FormatError> {
    if data.is_empty() {
        return Ok(());
    }
    match inner {
        Inner::Sniffing => unreachable!("sniffing ends before data is pushed"),
        Inner::Raw { pos } => {
            sink.write_at(*pos, data)?;
            *pos += data.len() as u64;
            Ok(())
        }
        Inner::Qcow2(q) => q.feed(data, sink),
    }
}

impl<C: Codec> Decoder for CompressedDecoder<C> {
    fn feed(&mut self, mut input: &[u8], sink: &mut dyn Sink) -> Result<(), FormatError> {
        loop {
            let (consumed, produced) = self.codec.step(input, &mut self.out[self.filled..])?;
            self.filled += produced;
            input = &input[consumed..];
            if self.filled >= SNIFF_LEN {
                self.start_inner(sink)?;
            }
            if self.filled == self.out.len() {
                self.flush(sink)?;
                continue;
            }
            if input.is_empty() {
                return Ok(());
            }
            if consumed == 0 && produced == 0 {
                return Err(FormatError::Corrupt {
                    format: C::FORMAT,
                    detail: "the decompressor stopped making progress".into(),
                });
            }
        }
    }

    fn finish(&mut self, sink: &mut dyn Sink) -> Result<DecodeSummary, FormatError> {
        loop {
            let produced = self.codec.finish_step(&mut self.out[self.filled..])?;
            self.filled += produced;
            if self.filled == self.out.len() {
                self.flush(sink)?;
            } else if produced == 0 {
                break;
            }
        }
        self.flush(sink)?;
        match &mut self.inner {
            Inner::Sniffing => Err(FormatError::Truncated(format!(
                "the {} stream decompresses to nothing",
                C::FORMAT
            ))),
            Inner::Raw { pos } => Ok(DecodeSummary {
                disk_bytes: *pos,
                zero_ranges: Vec::new(),
            }),
            Inner::Qcow2(q) => q.finish(sink),
        }
    }
}

fn corrupt(format: &'static str, detail: impl std::fmt::Display) -> FormatError {
    FormatError::Corrupt {
        format,
        detail: detail.to_string(),
    }
}

/// zstd through libzstd's streaming decompressor, which moves from one frame to the next
/// (and over skippable frames) by itself.
pub struct ZstdCodec {
    dctx: zstd::stream::raw::Decoder<'static>,
    /// libzstd's hint from the last call: 0 when a frame has just been completely decoded.
    last_hint: usize,
    header: Vec<u8>,
    header_done: bool,
    content_size: Option<u64>,
    total_in: u64,
}

/// Largest zstd frame header: magic, descriptor, window, dictionary id, content size.
const ZSTD_MAX_FRAME_HEADER: usize = 18;

impl ZstdCodec {
    fn new() -> Self {
        Self {
            dctx: zstd::stream::raw::Decoder::new().expect("allocating a zstd context"),
            last_hint: 1,
            header: Vec::with_capacity(ZSTD_MAX_FRAME_HEADER),
            header_done: false,
            content_size: None,
            total_in: 0,
        }
    }

    fn look_at_header(&mut self, input: &[u8]) {
        let take = (ZSTD_MAX_FRAME_HEADER - self.header.len()).min(input.len());
        self.header.extend_from_slice(&input[..take]);
        match zstd::zstd_safe::get_frame_content_size(&self.header) {
            Ok(size) => {
                self.content_size = size;
                self.header_done = true;
            }
            // Not enough bytes yet (or not a frame: the decoder itself will say so).
            Err(_) => self.header_done = self.header.len() >= ZSTD_MAX_FRAME_HEADER,
        }
    }

    fn run(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), FormatError> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut inb = InBuffer::around(input);
        let mut outb = OutBuffer::around(out);
        let hint = self.dctx.run(&mut inb, &mut outb).map_err(|e| {
            corrupt(
                "zstd",
                format_args!("{e} (near compressed byte {})", self.total_in),
            )
        })?;
        self.total_in += inb.pos() as u64;
        if inb.pos() > 0 || outb.pos() > 0 {
            self.last_hint = hint;
        }
        Ok((inb.pos(), outb.pos()))
    }
}

impl Codec for ZstdCodec {
    const FORMAT: &'static str = "zstd";

    fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), FormatError> {
        if !self.header_done {
            self.look_at_header(input);
        }
        if input.is_empty() && out.is_empty() {
            return Ok((0, 0));
        }
        self.run(input, out)
    }

    fn finish_step(&mut self, out: &mut [u8]) -> Result<usize, FormatError> {
        if out.is_empty() {
            return Ok(0);
        }
        let (_, produced) = self.run(&[], out)?;
        if produced == 0 && self.last_hint != 0 {
            return Err(FormatError::Truncated(
                "the zstd stream ends inside a frame".into(),
            ));
        }
        Ok(produced)
    }

    fn content_size(&self) -> Option<u64> {
        self.content_size
    }
}

enum GzipState {
    Member(Box<flate2::Decompress>),
    /// A member ended; the next byte says whether another member or zero padding follows.
    BetweenMembers,
    Padding,
}

/// gzip through zlib's inflate in gzip mode (header and CRC checked), one member at a time.
pub struct GzipCodec {
    state: GzipState,
    members: u64,
}

impl GzipCodec {
    fn new() -> Self {
        Self {
            state: GzipState::Member(Box::new(flate2::Decompress::new_gzip(15))),
            members: 0,
        }
    }
}

impl Codec for GzipCodec {
    const FORMAT: &'static str = "gzip";

    fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), FormatError> {
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            match &mut self.state {
                GzipState::Member(d) => {
                    let (in0, out0) = (d.total_in(), d.total_out());
                    let status = d
                        .decompress(rest, out, flate2::FlushDecompress::None)
                        .map_err(|e| {
                            corrupt("gzip", format_args!("member {}: {e}", self.members + 1))
                        })?;
                    consumed += (d.total_in() - in0) as usize;
                    let produced = (d.total_out() - out0) as usize;
                    if status == flate2::Status::StreamEnd {
                        self.members += 1;
                        self.state = GzipState::BetweenMembers;
                        if produced == 0 {
                            continue;
                        }
                    }
                    return Ok((consumed, produced));
                }
                GzipState::BetweenMembers => match rest.first() {
                    None => return Ok((consumed, 0)),
                    Some(0x1f) => {
                        self.state =
                            GzipState::Member(Box::new(flate2::Decompress::new_gzip(15)));
                    }
                    Some(0) => {
                        tracing::warn!(
                            members = self.members,
                            "zero padding after the last gzip member ignored"
                        );
                        self.state = GzipState::Padding;
                    }
                    Some(_) => {
                        return Err(corrupt(
                            "gzip",
                            format_args!(
                                "unexpected bytes after member {} (neither another member nor zero padding)",
                                self.members
                            ),
                        ))
                    }
                },
                GzipState::Padding => {
                    if rest.iter().any(|&b| b != 0) {
                        return Err(corrupt(
                            "gzip",
                            "non-zero bytes in the padding after the last member",
                        ));
                    }
                    return Ok((input.len(), 0));
                }
            }
        }
    }

    fn finish_step(&mut self, out: &mut [u8]) -> Result<usize, FormatError> {
        if out.is_empty() {
            return Ok(0);
        }
        match &mut self.state {
            GzipState::Member(d) => {
                let out0 = d.total_out();
                let status = d
                    .decompress(&[], out, flate2::FlushDecompress::None)
                    .map_err(|e| {
                        corrupt("gzip", format_args!("member {}: {e}", self.members + 1))
                    })?;
                let produced = (d.total_out() - out0) as usize;
                if status == flate2::Status::StreamEnd {
                    self.members += 1;
                    self.state = GzipState::BetweenMembers;
                } else if produced == 0 {
                    return Err(FormatError::Truncated(format!(
                        "the gzip stream ends inside member {}",
                        self.members + 1
                    )));
                }
                Ok(produced)
            }
            GzipState::BetweenMembers | GzipState::Padding => Ok(0),
        }
    }
}

/// xz through liblzma's stream decoder in concatenated mode (several streams and stream
/// padding), integrity checks verified.
pub struct XzCodec {
    stream: xz2::stream::Stream,
    done: bool,
}

impl XzCodec {
    fn new() -> Self {
        let stream =
            xz2::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, xz2::stream::CONCATENATED)
                .expect("creating an xz decoder");
        Self {
            stream,
            done: false,
        }
    }

    fn error(e: xz2::stream::Error) -> FormatError {
        use xz2::stream::Error;
        let detail = match e {
            Error::Data => "compressed data is corrupt".to_string(),
            Error::Format => "not an xz stream".to_string(),
            Error::Options => "unsupported compression options".to_string(),
            Error::MemLimit => format!(
                "decompressing needs more than {} MiB (dictionary too large)",
                XZ_MEMLIMIT >> 20
            ),
            Error::Mem => "out of memory".to_string(),
            Error::UnsupportedCheck => "unsupported integrity check type".to_string(),
            Error::NoCheck | Error::Program => "internal decoder error".to_string(),
        };
        corrupt("xz", detail)
    }

    fn process(
        &mut self,
        input: &[u8],
        out: &mut [u8],
        action: xz2::stream::Action,
    ) -> Result<(usize, usize, xz2::stream::Status), xz2::stream::Error> {
        let (in0, out0) = (self.stream.total_in(), self.stream.total_out());
        let status = self.stream.process(input, out, action)?;
        Ok((
            (self.stream.total_in() - in0) as usize,
            (self.stream.total_out() - out0) as usize,
            status,
        ))
    }
}

impl Codec for XzCodec {
    const FORMAT: &'static str = "xz";

    fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), FormatError> {
        if self.done {
            if input.is_empty() {
                return Ok((0, 0));
            }
            return Err(corrupt("xz", "data after the end of the last stream"));
        }
        let (consumed, produced, _) = self
            .process(input, out, xz2::stream::Action::Run)
            .map_err(Self::error)?;
        Ok((consumed, produced))
    }

    fn finish_step(&mut self, out: &mut [u8]) -> Result<usize, FormatError> {
        if self.done || out.is_empty() {
            return Ok(0);
        }
        match self.process(&[], out, xz2::stream::Action::Finish) {
            Ok((_, produced, xz2::stream::Status::StreamEnd)) => {
                self.done = true;
                Ok(produced)
            }
            Ok((_, produced, _)) if produced > 0 => Ok(produced),
            // No progress although told the input ended: the stream stopped early.
            Ok(_) | Err(xz2::stream::Error::Data) => Err(FormatError::Truncated(
                "the xz stream ends before its end marker".into(),
            )),
            Err(e) => Err(Self::error(e)),
        }
    }
}
