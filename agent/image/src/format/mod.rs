//! Image formats: turning the downloaded byte stream into writes at disk offsets.
//!
//! The pipeline feeds the downloaded bytes, in order, to a [`Decoder`]; the decoder calls the
//! [`Sink`] with what goes where on the disk. Raw images write sequentially; compressed raw
//! images decompress first; qcow2 maps clusters to guest offsets. Formats are chosen by
//! sniffing magic bytes ([`sniff`]), never by the URL's name.

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
    Corrupt { format: &'static str, detail: String },
    #[error("unsupported qcow2 image: {0}")]
    Unsupported(String),
}
