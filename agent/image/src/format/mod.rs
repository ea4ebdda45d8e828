//! Image formats: turning the downloaded byte stream into writes at disk offsets.
//!
//! The pipeline feeds the downloaded bytes, in order, to a [`Decoder`]; the decoder calls the
//! [`Sink`] with what goes where on the disk. Raw images write sequentially; compressed raw
//! images decompress first; qcow2 maps clusters to guest offsets. Formats are chosen by
//! sniffing magic bytes ([`sniff`]), never by the URL's name.
//!
//! [`AutoDecoder`] is what the pipeline uses: it waits for the first bytes, sniffs them and
//! hands everything to the matching decoder. A compressed image whose content is itself a
//! qcow2 image (`image.qcow2.zst`) decodes as qcow2.

mod compressed;
mod qcow2;
mod raw;

pub use compressed::{GzipDecoder, XzDecoder, ZstdDecoder};
pub use qcow2::{Qcow2Decoder, Qcow2Header, Qcow2Map};
pub use raw::RawDecoder;

/// Where decoded bytes go: the disk writer, or a test buffer.
pub trait Sink {
    /// Writes `data` at byte `offset` of the disk.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError>;

    /// Told as soon as the decoder knows the image's size on disk (qcow2 virtual size, a zstd
    /// frame's content size...), before any write: the sink refuses an image larger than the
    /// device here, so nothing is written.
    fn announce_size(&mut self, _disk_bytes: u64) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Why the sink refused a write. The decoder passes it up unchanged.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("image is larger than the device: a write ends at byte {end}, the device has {device_size} bytes")]
    TooLarge { end: u64, device_size: u64 },
    #[error("writing the device")]
    Io(#[source] std::io::Error),
    #[error("the write pipeline stopped")]
    Closed,
}

/// Turns the image's bytes, fed in download order, into disk writes.
pub trait Decoder: Send {
    /// Consumes the next downloaded bytes.
    fn feed(&mut self, input: &[u8], sink: &mut dyn Sink) -> Result<(), FormatError>;
    /// The download ended: flush what is buffered, and fail if the image was incomplete.
    fn finish(&mut self, sink: &mut dyn Sink) -> Result<DecodeSummary, FormatError>;
    /// After the stream: the ranges of the image, `(offset, len)`, that the decoder still
    /// needs because they came before what maps them (a qcow2 that was resized or written by
    /// a running VM). Only a decoder built for random access collects them; streaming
    /// formats never do.
    fn deferred(&self) -> Vec<(u64, u64)> {
        Vec::new()
    }
    /// Supplies one range listed by [`Self::deferred`], exactly as listed. It may list more.
    fn feed_at(
        &mut self,
        offset: u64,
        _data: &[u8],
        _sink: &mut dyn Sink,
    ) -> Result<(), FormatError> {
        Err(FormatError::Corrupt {
            format: "image",
            detail: format!("no deferred range at byte {offset}"),
        })
    }
}

/// What a decoder learned once it finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeSummary {
    /// The image's size on disk (raw length, or qcow2 virtual size).
    pub disk_bytes: u64,
    /// Ranges of the disk the image does not cover with data and that must read as zeros
    /// (qcow2 unallocated and zero clusters), as `(offset, len)`, sorted and non-overlapping.
    pub zero_ranges: Vec<(u64, u64)>,
}

/// Image formats the agent recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Raw,
    Zstd,
    Gzip,
    Xz,
    Qcow2,
}

/// Errors in the image's content (the caller adds the URL).
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("image is truncated: {0}")]
    Truncated(String),
    #[error("corrupt {format} data: {detail}")]
    Corrupt {
        format: &'static str,
        detail: String,
    },
    #[error("unsupported qcow2 image: {0}")]
    Unsupported(String),
    /// The image refers to bytes the stream has already passed (a qcow2 table or cluster
    /// placed before the table that maps it). Streaming cannot decode it; a reader able to
    /// seek (HTTP Range requests) can, starting from [`Qcow2Decoder::map`].
    #[error("{what} is at byte {host_offset} of the image, which the stream already passed (at byte {stream_pos}): this image needs random access")]
    NeedsRandomAccess {
        what: String,
        host_offset: u64,
        stream_pos: u64,
    },
}

/// How many leading bytes [`sniff`] looks at.
pub const SNIFF_LEN: usize = 8;

const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const QCOW2_MAGIC: &[u8] = b"QFI\xfb";

/// The image's format, from its first bytes (magic numbers only). Anything unrecognised,
/// including a prefix shorter than any magic, is [`Format::Raw`].
pub fn sniff(prefix: &[u8]) -> Format {
    if prefix.starts_with(ZSTD_MAGIC) {
        Format::Zstd
    } else if prefix.starts_with(GZIP_MAGIC) {
        Format::Gzip
    } else if prefix.starts_with(XZ_MAGIC) {
        Format::Xz
    } else if prefix.starts_with(QCOW2_MAGIC) {
        Format::Qcow2
    } else {
        Format::Raw
    }
}

/// A fresh decoder for an image whose first bytes are `prefix` (at least [`SNIFF_LEN`] of
/// them, unless the image is shorter). The prefix is only sniffed: feed it to the decoder too.
pub fn decoder_for(prefix: &[u8]) -> Box<dyn Decoder> {
    decoder_for_format(sniff(prefix))
}

/// A fresh decoder for `format`.
pub fn decoder_for_format(format: Format) -> Box<dyn Decoder> {
    match format {
        Format::Raw => Box::new(RawDecoder::new()),
        Format::Zstd => Box::new(ZstdDecoder::new()),
        Format::Gzip => Box::new(GzipDecoder::new()),
        Format::Xz => Box::new(XzDecoder::new()),
        Format::Qcow2 => Box::new(Qcow2Decoder::new()),
    }
}

impl Format {
    /// The format's usual name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Zstd => "zstd",
            Format::Gzip => "gzip",
            Format::Xz => "xz",
            Format::Qcow2 => "qcow2",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The decoder the pipeline uses: buffers the first [`SNIFF_LEN`] bytes, sniffs them, then
/// passes everything to the decoder for that format.
#[derive(Default)]
pub struct AutoDecoder {
    prefix: Vec<u8>,
    inner: Option<Box<dyn Decoder>>,
    format: Option<Format>,
    stream_len: Option<u64>,
    random_access: bool,
}

impl AutoDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The whole image's length, when the transport knows it (Content-Length). A qcow2 decoder
    /// then reports tables and clusters placed past the end as corrupt rather than truncated.
    pub fn with_stream_len(mut self, len: u64) -> Self {
        self.stream_len = Some(len);
        self
    }

    /// A qcow2 image that needs bytes the stream already passed is not refused: the ranges
    /// are listed by [`Decoder::deferred`] for the caller to fetch (HTTP Range requests).
    pub fn with_random_access(mut self) -> Self {
        self.random_access = true;
        self
    }

    /// The sniffed format, once known.
    pub fn format(&self) -> Option<Format> {
        self.format
    }

    fn start(&mut self, sink: &mut dyn Sink) -> Result<(), FormatError> {
        let format = sniff(&self.prefix);
        tracing::debug!(format = %format, "image format sniffed");
        let mut inner: Box<dyn Decoder> = if format == Format::Qcow2 {
            let mut q = Qcow2Decoder::new();
            if let Some(len) = self.stream_len {
                q = q.with_image_len(len);
            }
            if self.random_access {
                q = q.with_random_access();
            }
            Box::new(q)
        } else {
            decoder_for_format(format)
        };
        let prefix = std::mem::take(&mut self.prefix);
        self.format = Some(format);
        inner.feed(&prefix, sink)?;
        self.inner = Some(inner);
        Ok(())
    }
}

impl Decoder for AutoDecoder {
    fn feed(&mut self, input: &[u8], sink: &mut dyn Sink) -> Result<(), FormatError> {
        if let Some(inner) = &mut self.inner {
            return inner.feed(input, sink);
        }
        let take = (SNIFF_LEN - self.prefix.len()).min(input.len());
        self.prefix.extend_from_slice(&input[..take]);
        if self.prefix.len() < SNIFF_LEN {
            return Ok(());
        }
        self.start(sink)?;
        match &mut self.inner {
            Some(inner) => inner.feed(&input[take..], sink),
            None => Ok(()),
        }
    }

    fn finish(&mut self, sink: &mut dyn Sink) -> Result<DecodeSummary, FormatError> {
        if self.inner.is_none() {
            if self.prefix.is_empty() {
                return Err(FormatError::Truncated("the image is empty".into()));
            }
            self.start(sink)?;
        }
        match &mut self.inner {
            Some(inner) => inner.finish(sink),
            None => Err(FormatError::Truncated("the image is empty".into())),
        }
    }

    fn deferred(&self) -> Vec<(u64, u64)> {
        self.inner
            .as_ref()
            .map(|d| d.deferred())
            .unwrap_or_default()
    }

    fn feed_at(
        &mut self,
        offset: u64,
        data: &[u8],
        sink: &mut dyn Sink,
    ) -> Result<(), FormatError> {
        match &mut self.inner {
            Some(inner) => inner.feed_at(offset, data, sink),
            None => Err(FormatError::Truncated("the image is empty".into())),
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests;
