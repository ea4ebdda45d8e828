//! `write_image`: the streamed image write, as overlapping stages.
//!
//! ```text
//!  downloader (tokio, resumes with Range) ──Bytes──┬──▶ hasher thread (sha256/sha512/md5)
//!                                                  └──▶ decoder thread (sniff, raw/zstd/gzip/xz/qcow2)
//!                                                           │ DiskSink: 4 MiB aligned buffers
//!                                                           ▼
//!                                                       writer thread (pwrite, O_DIRECT)
//! ```
//!
//! Every queue is bounded (chunks of at most [`http::READ_BUF`], [`writer::POOL`] buffers of
//! [`writer::BUF_SIZE`]), so memory stays flat whatever the image size, and the whole write
//! takes about as long as its slowest stage. Nothing is staged in memory or on tmpfs.
//!
//! Safety order: guard check and `O_EXCL` open; the disk's first MiB is zeroed before the
//! first image byte is written; the image's first MiB stays in memory until the checksum over
//! the downloaded bytes verifies, then it is written and synced. Any failure leaves the first
//! MiB zeroed (or the disk untouched if it fails before the first image byte arrived).
//!
//! Resuming: a dropped or stalled connection is resumed from the next byte the pipeline needs
//! (`Range: bytes=N-`, with `If-Range` when the server gave a strong ETag or Last-Modified).
//! A server that answers a resume with 200 is refused rather than restarted: the first bytes
//! are already decoded and written. Before any byte arrived, a retry is simply a new request.
//!
//! Random access: a qcow2 that maps bytes the stream had already passed (tables after their
//! data, as a resized or VM-written image has them) is streamed whole, then the decoder asks
//! this thread for the missing ranges, fetched with bounded Range requests and checked block
//! by block against what the stream carried ([`random_access`]).

use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::checksum::{
    parse_checksum_file, url_file_name, ChecksumAlgo, ChecksumFileError, ChecksumSpec, Hasher,
};
use crate::format::{self, AutoDecoder, Decoder, FormatError, SinkError};
use crate::http::{self, FetchError, Transport};
use crate::progress::{ProgressFn, Reporter};
use crate::random_access::{self, BlockDigests, RangeRequest};
use crate::writer::{self, Disk, DiskSink, HOLD};
use agent_sys::system::thread_cpu_time;

/// Largest checksum file fetched.
pub const CHECKSUM_FILE_LIMIT: usize = 1 << 20;
/// Chunks queued towards each of the hasher and the decoder.
const CHUNK_QUEUE: usize = 32;
/// The hasher thread's nice value: ahead of the other stages when they share a core.
const HASHER_NICE: i32 = -5;

/// What to write where. See [`write_image`].
#[derive(Clone)]
pub struct WriteRequest {
    /// `http://` or `https://`; other schemes are refused.
    pub url: String,
    pub checksum: ChecksumSpec,
    pub device: PathBuf,
    /// PEM bundle replacing the built-in (webpki) roots.
    pub ca_bundle: Option<PathBuf>,
    /// Accept an md5 checksum (integrity against corruption only, not against an attacker).
    pub allow_md5: bool,
    pub guard: agent_wipe::guard::GuardPolicy,
    /// Resume attempts per transfer, in total (dropped connections, stalls, 5xx).
    pub max_retries: u32,
    /// No bytes for this long: the connection is treated as dropped.
    pub stall_timeout: Duration,
    pub progress: Option<ProgressFn>,
}

impl WriteRequest {
    /// A request with the defaults: 5 retries, 30 s stall timeout, sha256/sha512 only.
    pub fn new(url: impl Into<String>, checksum: ChecksumSpec, device: impl Into<PathBuf>) -> Self {
        Self {
            url: url.into(),
            checksum,
            device: device.into(),
            ca_bundle: None,
            allow_md5: false,
            guard: Default::default(),
            max_retries: 5,
            stall_timeout: Duration::from_secs(30),
            progress: None,
        }
    }
}

impl std::fmt::Debug for WriteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteRequest")
            .field("url", &self.url)
            .field("checksum", &self.checksum)
            .field("device", &self.device)
            .field("ca_bundle", &self.ca_bundle)
            .field("allow_md5", &self.allow_md5)
            .field("max_retries", &self.max_retries)
            .field("stall_timeout", &self.stall_timeout)
            .finish_non_exhaustive()
    }
}

/// What a successful write did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteReport {
    pub url: String,
    pub device: PathBuf,
    /// Sniffed format: raw, zstd, gzip, xz, qcow2.
    pub format: String,
    /// Bytes received (the image file as served).
    pub bytes_downloaded: u64,
    /// The image's size on the disk.
    pub disk_bytes: u64,
    /// Of `disk_bytes`, those zeroed rather than written: ranges the image leaves empty
    /// (qcow2 holes) and stretches of zeros in its data.
    pub zeroed_bytes: u64,
    pub checksum_algo: ChecksumAlgo,
    /// The verified digest, lowercase hex.
    pub checksum: String,
    pub seconds: f64,
    /// Downloaded bytes per second over the whole write.
    pub rate_bytes_per_sec: u64,
    /// Transfers resumed with a Range request.
    pub resumes: u32,
    /// Bytes fetched a second time with Range requests: a qcow2 whose tables come after what
    /// they map is streamed, then completed by random access.
    pub refetched_bytes: u64,
    /// CPU seconds each stage used. A stage near `seconds` is the bottleneck; all of them
    /// together near `seconds` on one CPU means the machine is CPU-bound.
    pub cpu_seconds: StageCpu,
}

/// CPU seconds per stage of the pipeline (each stage is one thread).
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageCpu {
    /// HTTP(S) receive: TLS, HTTP parsing, handing chunks on.
    pub download: f64,
    pub hash: f64,
    /// Format decoding and batching into aligned buffers.
    pub decode: f64,
    /// pwrite/O_DIRECT submission.
    pub write: f64,
}

/// Why an image write failed. The first MiB of the device is zero after any failure that
/// happened once writing had started.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot fetch image {url}")]
    Url {
        url: String,
        #[source]
        source: FetchError,
    },
    #[error("md5 checksums are refused unless allowed explicitly (md5 only detects corruption)")]
    Md5NotAllowed,
    #[error("setting up TLS")]
    Tls(#[source] http::TlsConfigError),
    #[error("starting the transfer runtime")]
    Runtime(#[source] std::io::Error),
    #[error("fetching checksum file {url}")]
    ChecksumFetch {
        url: String,
        #[source]
        source: FetchError,
    },
    #[error("checksum file {url} has no usable checksum for the image")]
    ChecksumFile {
        url: String,
        #[source]
        source: ChecksumFileError,
    },
    #[error("checksum file {url} is not UTF-8 text")]
    ChecksumFileNotText { url: String },
    #[error("refusing target {device}")]
    Guard {
        device: PathBuf,
        #[source]
        source: agent_wipe::guard::GuardError,
    },
    #[error("cannot open {device} for writing")]
    Open {
        device: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("downloading {url}")]
    Download {
        url: String,
        #[source]
        source: FetchError,
    },
    #[error("image {url} does not fit on {device}: it needs at least {image_bytes} bytes, the device has {device_bytes}")]
    TooLarge {
        url: String,
        device: PathBuf,
        image_bytes: u64,
        device_bytes: u64,
    },
    #[error("decoding image {url}")]
    Decode {
        url: String,
        #[source]
        source: FormatError,
    },
    #[error("writing image to {device}")]
    Write {
        device: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checksum mismatch for {url}: expected {algo} {expected}, got {actual}; {device} left unbootable")]
    ChecksumMismatch {
        url: String,
        device: PathBuf,
        algo: ChecksumAlgo,
        expected: String,
        actual: String,
    },
    #[error("the {0} stage of the image write panicked")]
    Panicked(&'static str),
}

/// What flows from the downloader to the hasher and the decoder.
#[derive(Clone)]
enum Chunk {
    /// First message: the image's length when the server said.
    Start {
        total: Option<u64>,
    },
    Data(Bytes),
    /// The download completed. A channel closed without it means the downloader failed.
    End,
}

struct DownloadStats {
    bytes: u64,
    total: Option<u64>,
    resumes: u32,
    /// The image's ETag or Last-Modified, for If-Range on later requests.
    validator: Option<String>,
}

pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64 << attempt.min(5)).min(Duration::from_secs(5))
}

/// The downloader: sends the image's bytes, in order and exactly once, resuming dropped
/// transfers.
async fn download(
    transport: &Transport,
    url: &str,
    max_retries: u32,
    outs: Vec<mpsc::Sender<Chunk>>,
    mut progress: Reporter,
) -> Result<DownloadStats, FetchError> {
    let send = |c: Chunk| {
        let outs = &outs;
        async move {
            for o in outs {
                o.send(c.clone()).await.map_err(|_| FetchError::Cancelled)?;
            }
            Ok::<_, FetchError>(())
        }
    };
    let mut pos = 0u64;
    let mut total: Option<u64> = None;
    let mut validator: Option<String> = None;
    let mut started = false;
    let mut attempts = 0u32;
    let mut resumes = 0u32;
    loop {
        let attempt: Result<(), FetchError> = async {
            let resp = if pos == 0 {
                transport.get(url, None, None).await?
            } else {
                transport.get(url, Some(pos), validator.as_deref()).await?
            };
            if pos == 0 {
                if !resp.status().is_success() {
                    return Err(FetchError::Status(resp.status()));
                }
                if !started {
                    total = http::content_length(resp.headers());
                    validator = http::validator(resp.headers());
                    started = true;
                    progress.set_total(total);
                    send(Chunk::Start { total }).await?;
                }
            } else {
                total = http::check_resume(resp.status(), resp.headers(), pos, total)?;
            }
            let mut body = resp.into_body();
            while let Some(data) = http::next_data(&mut body, transport.stall_timeout).await? {
                pos += data.len() as u64;
                if total.is_some_and(|t| pos > t) {
                    return Err(FetchError::LongBody(total.unwrap_or_default()));
                }
                send(Chunk::Data(data)).await?;
                progress.update("downloading", pos);
            }
            match total {
                Some(t) if pos < t => Err(FetchError::ShortBody {
                    got: pos,
                    expected: t,
                }),
                _ => Ok(()),
            }
        }
        .await;
        match attempt {
            Ok(()) => break,
            Err(e) if e.is_retryable() && attempts < max_retries => {
                attempts += 1;
                let wait = backoff(attempts - 1);
                tracing::warn!(url, at = pos, attempt = attempts, error = %e, wait_ms = wait.as_millis() as u64, "transfer interrupted, retrying");
                tokio::time::sleep(wait).await;
                if pos > 0 {
                    resumes += 1;
                }
            }
            Err(e) => return Err(e),
        }
    }
    if !started {
        send(Chunk::Start { total: Some(0) }).await?;
    }
    send(Chunk::End).await?;
    progress.emit("downloading", pos);
    Ok(DownloadStats {
        bytes: pos,
        total,
        resumes,
        validator,
    })
}

/// How a stage ended, for picking the error to report.
enum StageError {
    /// A real failure.
    Failed(ImageError),
    /// Stopped because another stage did.
    Cancelled,
}

struct DecodeOutcome {
    format: format::Format,
    summary: format::DecodeSummary,
    held: Vec<u8>,
    /// Bytes fetched again with Range requests (random access).
    refetched: u64,
}

/// The decoder thread: sniff, size check, decode into the sink; then, for a qcow2 that needs
/// it, random access through `ranges` (see [`random_access`]).
fn run_decoder(
    mut rx: mpsc::Receiver<Chunk>,
    mut sink: DiskSink,
    ranges: std::sync::mpsc::Sender<RangeRequest>,
    req: &WriteRequest,
) -> Result<DecodeOutcome, StageError> {
    let decode_err = |e: FormatError| match e {
        FormatError::Sink(SinkError::Closed) => StageError::Cancelled,
        FormatError::Sink(SinkError::TooLarge { end, device_size }) => {
            StageError::Failed(ImageError::TooLarge {
                url: req.url.clone(),
                device: req.device.clone(),
                image_bytes: end,
                device_bytes: device_size,
            })
        }
        source => StageError::Failed(ImageError::Decode {
            url: req.url.clone(),
            source,
        }),
    };
    let Some(Chunk::Start { total }) = rx.blocking_recv() else {
        return Err(StageError::Cancelled);
    };
    let mut decoder = match total {
        Some(t) if t > 0 => AutoDecoder::new().with_stream_len(t),
        _ => AutoDecoder::new(),
    }
    .with_random_access();
    let mut prefix: Vec<u8> = Vec::with_capacity(format::SNIFF_LEN);
    let mut sniffed = false;
    // Only a qcow2 may need random access, so only a qcow2 stream pays for the digests.
    let mut digests: Option<BlockDigests> = None;
    loop {
        let msg = rx.blocking_recv().ok_or(StageError::Cancelled)?;
        let data = match msg {
            Chunk::Data(d) => d,
            Chunk::End => break,
            Chunk::Start { .. } => continue,
        };
        if sniffed {
            if let Some(d) = &mut digests {
                d.update(&data);
            }
            decoder.feed(&data, &mut sink).map_err(decode_err)?;
            continue;
        }
        // Sniff before the decoder writes anything: a raw image's size is its length, so
        // one too large for the device is refused before the disk is touched.
        prefix.extend_from_slice(&data);
        if prefix.len() < format::SNIFF_LEN {
            continue;
        }
        check_raw_size(&prefix, total, sink.device_size(), req)?;
        sniffed = true;
        if format::sniff(&prefix) == format::Format::Qcow2 {
            let mut d = BlockDigests::new();
            d.update(&prefix);
            digests = Some(d);
        }
        decoder.feed(&prefix, &mut sink).map_err(decode_err)?;
        prefix = Vec::new();
    }
    if !sniffed && !prefix.is_empty() {
        check_raw_size(&prefix, total, sink.device_size(), req)?;
        decoder.feed(&prefix, &mut sink).map_err(decode_err)?;
    }
    let mut refetched = 0u64;
    for round in 0.. {
        let deferred = decoder.deferred();
        if deferred.is_empty() {
            break;
        }
        // L1 table, L2 tables, data clusters: a well-formed image needs three rounds.
        let Some(digests) = digests.as_ref().filter(|_| round < 8) else {
            return Err(decode_err(FormatError::Corrupt {
                format: "qcow2",
                detail: format!(
                    "still {} ranges to fetch after {round} rounds",
                    deferred.len()
                ),
            }));
        };
        if round == 0 {
            tracing::info!(url = %req.url, ranges = deferred.len(), "the image maps bytes the stream had already passed: fetching them with Range requests");
        }
        for w in random_access::windows(&deferred, digests.len()) {
            let (reply, answer) = sync_channel(1);
            let (start, end) = (w.start, w.end);
            ranges
                .send(RangeRequest { start, end, reply })
                .map_err(|_| StageError::Cancelled)?;
            let fetch_err = |source| {
                StageError::Failed(ImageError::Download {
                    url: req.url.clone(),
                    source,
                })
            };
            let data = answer
                .recv()
                .map_err(|_| StageError::Cancelled)?
                .map_err(fetch_err)?;
            if !digests.check(start, &data) {
                return Err(fetch_err(FetchError::RangeMismatch { start, end }));
            }
            refetched += data.len() as u64;
            for (off, len) in w.ranges {
                let at = (off - start) as usize;
                decoder
                    .feed_at(off, &data[at..at + len as usize], &mut sink)
                    .map_err(decode_err)?;
            }
        }
    }
    drop(ranges);
    let summary = decoder.finish(&mut sink).map_err(decode_err)?;
    let format = decoder.format().unwrap_or(format::Format::Raw);
    let held = sink
        .finish()
        .map_err(|e| decode_err(FormatError::Sink(e)))?;
    Ok(DecodeOutcome {
        format,
        summary,
        held,
        refetched,
    })
}

fn check_raw_size(
    prefix: &[u8],
    total: Option<u64>,
    device_size: u64,
    req: &WriteRequest,
) -> Result<(), StageError> {
    match total {
        Some(t) if format::sniff(prefix) == format::Format::Raw && t > device_size => {
            Err(StageError::Failed(ImageError::TooLarge {
                url: req.url.clone(),
                device: req.device.clone(),
                image_bytes: t,
                device_bytes: device_size,
            }))
        }
        _ => Ok(()),
    }
}

/// Resolves the checksum spec to a digest, fetching the checksum file if it is a URL.
fn resolve_checksum(
    req: &WriteRequest,
    rt: &tokio::runtime::Runtime,
    transport: &Transport,
) -> Result<(ChecksumAlgo, String), ImageError> {
    let (algo, hex) = match &req.checksum {
        ChecksumSpec::Hex { algo, hex } => (*algo, hex.clone()),
        ChecksumSpec::Url { algo, url } => {
            if *algo == Some(ChecksumAlgo::Md5) && !req.allow_md5 {
                return Err(ImageError::Md5NotAllowed);
            }
            let fetch_err = |source| ImageError::ChecksumFetch {
                url: url.clone(),
                source,
            };
            http::parse_url(url).map_err(fetch_err)?;
            let body = rt.block_on(async {
                let mut attempt = 0;
                loop {
                    match transport.get_small(url, CHECKSUM_FILE_LIMIT).await {
                        Err(e) if e.is_retryable() && attempt < req.max_retries => {
                            tokio::time::sleep(backoff(attempt)).await;
                            attempt += 1;
                        }
                        r => return r,
                    }
                }
            });
            let body = body.map_err(fetch_err)?;
            let text = String::from_utf8(body)
                .map_err(|_| ImageError::ChecksumFileNotText { url: url.clone() })?;
            match parse_checksum_file(&text, url_file_name(&req.url), *algo) {
                Ok(ChecksumSpec::Hex { algo, hex }) => (algo, hex),
                Ok(ChecksumSpec::Url { .. }) => unreachable!("checksum files hold digests"),
                Err(source) => {
                    return Err(ImageError::ChecksumFile {
                        url: url.clone(),
                        source,
                    })
                }
            }
        }
    };
    if algo == ChecksumAlgo::Md5 && !req.allow_md5 {
        return Err(ImageError::Md5NotAllowed);
    }
    Ok((algo, hex))
}

/// The hasher stage: digests the downloaded bytes in order. Returns the lowercase hex digest
/// once the download completed (`None` when it did not) and the thread's CPU time.
fn spawn_hasher<'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    algo: ChecksumAlgo,
    mut rx: mpsc::Receiver<Chunk>,
) -> std::thread::ScopedJoinHandle<'scope, (Option<String>, Duration)> {
    std::thread::Builder::new()
        .name("image-hasher".into())
        .spawn_scoped(s, move || {
            // The one stage that cannot be split across cores: where it shares a core with
            // the others (a small machine, or a VM's vCPUs), it goes first. Without the
            // privilege the default priority stays.
            if let Err(e) = agent_sys::system::set_thread_nice(HASHER_NICE) {
                tracing::debug!(error = %e, "keeping the hasher's default priority");
            }
            let mut h = Hasher::new(algo);
            while let Some(c) = rx.blocking_recv() {
                match c {
                    Chunk::Data(d) => h.update(&d),
                    Chunk::End => return (Some(h.finish_hex()), thread_cpu_time()),
                    Chunk::Start { .. } => {}
                }
            }
            (None, thread_cpu_time())
        })
        .expect("spawning the hasher thread")
}

/// What every transfer checks and builds first: the URL, md5's permission, the HTTP(S)
/// transport and its runtime.
fn transfer_setup(
    url: &str,
    algo: Option<ChecksumAlgo>,
    allow_md5: bool,
    ca_bundle: Option<&std::path::Path>,
    stall_timeout: Duration,
) -> Result<(Transport, tokio::runtime::Runtime), ImageError> {
    http::parse_url(url).map_err(|source| ImageError::Url {
        url: url.to_string(),
        source,
    })?;
    if algo == Some(ChecksumAlgo::Md5) && !allow_md5 {
        return Err(ImageError::Md5NotAllowed);
    }
    let transport = Transport::new(ca_bundle, stall_timeout).map_err(ImageError::Tls)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ImageError::Runtime)?;
    Ok((transport, rt))
}

/// What to checksum. See [`checksum_image`].
#[derive(Debug, Clone)]
pub struct ChecksumRequest {
    /// `http://` or `https://`; other schemes are refused.
    pub url: String,
    pub algo: ChecksumAlgo,
    /// PEM bundle replacing the built-in (webpki) roots.
    pub ca_bundle: Option<PathBuf>,
    pub allow_md5: bool,
    /// Resume attempts per transfer, in total.
    pub max_retries: u32,
    /// No bytes for this long: the connection is treated as dropped.
    pub stall_timeout: Duration,
}

/// What [`checksum_image`] computed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChecksumReport {
    pub url: String,
    pub bytes_downloaded: u64,
    pub checksum_algo: ChecksumAlgo,
    /// The digest of the bytes as served, lowercase hex.
    pub checksum: String,
    pub seconds: f64,
    pub rate_bytes_per_sec: u64,
    pub resumes: u32,
    /// Only `download` and `hash` are used.
    pub cpu_seconds: StageCpu,
}

/// Streams an image and digests it, writing nothing: an image write's download and hash
/// stages alone, with the same code, resumes and limits. What an operator runs to learn the
/// checksum of an image as a machine receives it, and how fast that machine can receive and
/// verify it before any disk is involved (the lab benchmark's verified-copy floor).
pub fn checksum_image(req: &ChecksumRequest) -> Result<ChecksumReport, ImageError> {
    let started = Instant::now();
    let (transport, rt) = transfer_setup(
        &req.url,
        Some(req.algo),
        req.allow_md5,
        req.ca_bundle.as_deref(),
        req.stall_timeout,
    )?;
    let (hash_tx, hash_rx) = mpsc::channel::<Chunk>(CHUNK_QUEUE);
    let (dl, hashed) = std::thread::scope(|s| {
        let hasher = spawn_hasher(s, req.algo, hash_rx);
        let cpu_before = thread_cpu_time();
        let dl = rt.block_on(download(
            &transport,
            &req.url,
            req.max_retries,
            vec![hash_tx],
            Reporter::new(None, String::new()),
        ));
        let dl_cpu = thread_cpu_time().saturating_sub(cpu_before);
        ((dl, dl_cpu), hasher.join())
    });
    let (hashed, hash_cpu) = hashed.map_err(|_| ImageError::Panicked("hasher"))?;
    let (dl, dl_cpu) = dl;
    let dl_err = |source| ImageError::Download {
        url: req.url.clone(),
        source,
    };
    let stats = dl.map_err(dl_err)?;
    let checksum = hashed.ok_or_else(|| dl_err(FetchError::Cancelled))?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(ChecksumReport {
        url: req.url.clone(),
        bytes_downloaded: stats.bytes,
        checksum_algo: req.algo,
        checksum,
        seconds,
        rate_bytes_per_sec: (stats.bytes as f64 / seconds.max(1e-9)) as u64,
        resumes: stats.resumes,
        cpu_seconds: StageCpu {
            download: dl_cpu.as_secs_f64(),
            hash: hash_cpu.as_secs_f64(),
            ..StageCpu::default()
        },
    })
}

/// **Destroys the contents of `req.device`**: streams the image at `req.url` onto it.
///
/// Blocking; runs its own tokio runtime for the transfer. Checks the target with the guard,
/// opens it exclusively, zeroes its first MiB before writing image data, and writes the
/// image's first MiB only after the checksum over the downloaded bytes verified. On any error
/// the device does not boot (first MiB zero), or is untouched if the error came before any
/// image byte (unreachable URL, bad status, image known to be too large).
pub fn write_image(req: &WriteRequest) -> Result<WriteReport, ImageError> {
    let started = Instant::now();
    let (transport, rt) = transfer_setup(
        &req.url,
        req.checksum.algo(),
        req.allow_md5,
        req.ca_bundle.as_deref(),
        req.stall_timeout,
    )?;
    let (algo, expected) = resolve_checksum(req, &rt, &transport)?;

    agent_wipe::guard::check_target(&req.device, &req.guard).map_err(|source| {
        ImageError::Guard {
            device: req.device.clone(),
            source,
        }
    })?;
    let disk = Disk::open(&req.device).map_err(|source| ImageError::Open {
        device: req.device.clone(),
        source,
    })?;
    let write_err = |source| ImageError::Write {
        device: req.device.clone(),
        source,
    };
    let device_name = req.device.display().to_string();
    tracing::info!(url = %req.url, device = %device_name, size = disk.size(), algo = %algo, "writing image");

    let (hash_tx, hash_rx) = mpsc::channel::<Chunk>(CHUNK_QUEUE);
    let (dec_tx, dec_rx) = mpsc::channel::<Chunk>(CHUNK_QUEUE);
    let (free_tx, free_rx) = writer::buffer_pool();
    let (jobs_tx, jobs_rx) = sync_channel(writer::POOL);
    let (range_tx, range_rx) = std::sync::mpsc::channel::<RangeRequest>();
    let sink = DiskSink::new(disk.size(), disk.align(), free_rx, jobs_tx);

    let (dl, hashed, decoded, written) = std::thread::scope(|s| {
        let writer = std::thread::Builder::new()
            .name("image-writer".into())
            .spawn_scoped(s, || {
                let r = writer::run_writer(&disk, jobs_rx, free_tx);
                (r, thread_cpu_time())
            })
            .expect("spawning the writer thread");
        let decoder = std::thread::Builder::new()
            .name("image-decoder".into())
            .spawn_scoped(s, || {
                let r = run_decoder(dec_rx, sink, range_tx, req);
                (r, thread_cpu_time())
            })
            .expect("spawning the decoder thread");
        let hasher = spawn_hasher(s, algo, hash_rx);
        let progress = Reporter::new(req.progress.clone(), device_name.clone());
        let cpu_before = thread_cpu_time();
        let dl = rt.block_on(download(
            &transport,
            &req.url,
            req.max_retries,
            vec![dec_tx, hash_tx],
            progress,
        ));
        // Random access: the decoder's Range requests, until it hangs up.
        let (if_range, total) = match &dl {
            Ok(s) => (s.validator.clone(), s.total),
            Err(_) => (None, None),
        };
        for r in range_rx {
            let got = rt.block_on(random_access::fetch(
                &transport,
                &req.url,
                if_range.as_deref(),
                (r.start, r.end),
                total,
                req.max_retries,
            ));
            let _ = r.reply.send(got);
        }
        let dl_cpu = thread_cpu_time().saturating_sub(cpu_before);
        ((dl, dl_cpu), hasher.join(), decoder.join(), writer.join())
    });

    // Pick the root cause: the stage that failed first on its own, not those it stopped.
    let (written, write_cpu) = written.map_err(|_| ImageError::Panicked("writer"))?;
    let (decoded, decode_cpu) = decoded.map_err(|_| ImageError::Panicked("decoder"))?;
    let (hashed, hash_cpu) = hashed.map_err(|_| ImageError::Panicked("hasher"))?;
    let (dl, dl_cpu) = dl;
    let cpu_seconds = StageCpu {
        download: dl_cpu.as_secs_f64(),
        hash: hash_cpu.as_secs_f64(),
        decode: decode_cpu.as_secs_f64(),
        write: write_cpu.as_secs_f64(),
    };
    let dl_err = |source| ImageError::Download {
        url: req.url.clone(),
        source,
    };
    let decoded = match (decoded, dl) {
        (Err(StageError::Failed(e)), _) => return Err(e),
        (_, Err(e)) if !matches!(e, FetchError::Cancelled) => return Err(dl_err(e)),
        (Err(StageError::Cancelled), _) | (_, Err(_)) => {
            written.map_err(write_err)?;
            return Err(dl_err(FetchError::Cancelled));
        }
        (Ok(d), Ok(stats)) => (d, stats),
    };
    let writer_stats = written.map_err(write_err)?;
    let (decoded, stats) = decoded;
    let Some(actual) = hashed else {
        return Err(dl_err(FetchError::Cancelled));
    };

    let mut progress = Reporter::new(req.progress.clone(), device_name);
    progress.set_total(Some(stats.total.unwrap_or(stats.bytes)));
    progress.update("verifying", stats.bytes);
    if actual != expected {
        return Err(ImageError::ChecksumMismatch {
            url: req.url.clone(),
            device: req.device.clone(),
            algo,
            expected,
            actual,
        });
    }

    progress.update("zeroing", stats.bytes);
    let mut zeroed = writer_stats.zeroed;
    for &(off, len) in &decoded.summary.zero_ranges {
        // The held first MiB already carries zeros where the image has none.
        let start = off.max(HOLD);
        let end = (off + len).min(disk.size());
        if end > start {
            disk.zero_range(start, end - start).map_err(write_err)?;
            zeroed += end - start;
        }
    }
    // Everything else durable first; then the bootable head; then durable again.
    disk.sync().map_err(write_err)?;
    disk.write_at(0, &decoded.held).map_err(write_err)?;
    disk.sync().map_err(write_err)?;
    if disk.is_block() {
        // Drop stale cached pages so readers (partprobe, blkid) see the image.
        if let Err(e) = agent_sys::block::flush_buffers(disk.file()) {
            tracing::debug!(error = %e, "BLKFLSBUF failed");
        }
    }
    progress.emit("done", stats.bytes);

    let seconds = started.elapsed().as_secs_f64();
    let report = WriteReport {
        url: req.url.clone(),
        device: req.device.clone(),
        format: decoded.format.name().to_string(),
        bytes_downloaded: stats.bytes,
        disk_bytes: decoded.summary.disk_bytes,
        zeroed_bytes: zeroed,
        checksum_algo: algo,
        checksum: actual,
        seconds,
        rate_bytes_per_sec: (stats.bytes as f64 / seconds.max(1e-9)) as u64,
        resumes: stats.resumes,
        refetched_bytes: decoded.refetched,
        cpu_seconds,
    };
    tracing::info!(url = %req.url, device = %req.device.display(), format = %report.format, bytes = report.bytes_downloaded, seconds, resumes = report.resumes, cpu_download = cpu_seconds.download, cpu_hash = cpu_seconds.hash, cpu_decode = cpu_seconds.decode, cpu_write = cpu_seconds.write, "image written");
    Ok(report)
}
