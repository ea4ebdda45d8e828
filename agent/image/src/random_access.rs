//! Random access for the images that need it. A qcow2 whose tables or clusters come before
//! what maps them (an image that was resized, or written by a running VM rather than by
//! `qemu-img convert`) is streamed once; the ranges the stream passed too early are then
//! fetched again with HTTP Range requests, a few MiB at a time.
//!
//! The checksum covers the streamed bytes only, so refetched bytes are checked against what
//! the stream carried: while streaming, the decoder keeps a keyed 64-bit digest of every
//! 64 KiB block (SipHash with a secret key from the kernel, std's `RandomState`), and every
//! refetched block must match its digest. A server that sends other bytes the second time
//! cannot forge a match without the key. Memory: 8 bytes per 64 KiB of image (128 KiB per
//! GiB).

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::hash::{BuildHasher, Hasher};
use std::sync::mpsc::SyncSender;

use crate::http::{check_range, next_data, FetchError, Transport};

/// Digest granularity: refetches are widened to whole blocks.
pub const BLOCK: u64 = 64 << 10;
/// Deferred ranges this close together are fetched in one request, gap included.
const WINDOW_GAP: u64 = 1 << 20;
/// Largest request (a single larger range, such as a big L1 table, is fetched alone).
const WINDOW_MAX: u64 = 16 << 20;

/// Keyed digests of every [`BLOCK`] of a stream.
pub struct BlockDigests {
    key: RandomState,
    done: Vec<u64>,
    cur: DefaultHasher,
    cur_len: u64,
    total: u64,
}

impl Default for BlockDigests {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockDigests {
    pub fn new() -> Self {
        let key = RandomState::new();
        let cur = key.build_hasher();
        Self {
            key,
            done: Vec::new(),
            cur,
            cur_len: 0,
            total: 0,
        }
    }

    /// The stream's next bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = ((BLOCK - self.cur_len) as usize).min(data.len());
            self.cur.write(&data[..n]);
            self.cur_len += n as u64;
            self.total += n as u64;
            data = &data[n..];
            if self.cur_len == BLOCK {
                let full = std::mem::replace(&mut self.cur, self.key.build_hasher());
                self.done.push(full.finish());
                self.cur_len = 0;
            }
        }
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Whether `data`, claimed to be the stream's bytes from `start` (a block boundary) on,
    /// is exactly what the stream carried. It must cover whole blocks, the last one possibly
    /// ending at the end of the stream.
    pub fn check(&self, start: u64, data: &[u8]) -> bool {
        if !start.is_multiple_of(BLOCK) || start + data.len() as u64 > self.total {
            return false;
        }
        data.chunks(BLOCK as usize).enumerate().all(|(i, chunk)| {
            let b = (start / BLOCK) as usize + i;
            let want = match self.done.get(b) {
                Some(&d) if chunk.len() as u64 == BLOCK => d,
                None if b == self.done.len() && chunk.len() as u64 == self.cur_len => {
                    self.cur.clone().finish()
                }
                _ => return false,
            };
            let mut h = self.key.build_hasher();
            h.write(chunk);
            h.finish() == want
        })
    }
}

/// One request: bytes `start..end` of the image, and the ranges inside it the decoder wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub end: u64,
    pub ranges: Vec<(u64, u64)>,
}

/// Groups `ranges` (`(offset, len)`, any order) into requests: each widened to whole blocks
/// (clamped to the image's `total` bytes), neighbours within [`WINDOW_GAP`] merged up to
/// [`WINDOW_MAX`].
pub fn windows(ranges: &[(u64, u64)], total: u64) -> Vec<Window> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<Window> = Vec::new();
    for (off, len) in sorted {
        let start = off - off % BLOCK;
        let end = (off + len).div_ceil(BLOCK).saturating_mul(BLOCK).min(total);
        if let Some(w) = out.last_mut() {
            if start <= w.end + WINDOW_GAP && end.max(w.end) - w.start <= WINDOW_MAX {
                w.end = w.end.max(end);
                w.ranges.push((off, len));
                continue;
            }
        }
        out.push(Window {
            start,
            end,
            ranges: vec![(off, len)],
        });
    }
    out
}

/// What the decoder thread asks the transfer thread for.
pub struct RangeRequest {
    pub start: u64,
    pub end: u64,
    pub reply: SyncSender<Result<Vec<u8>, FetchError>>,
}

/// Fetches bytes `start..end` of `url` (the image of `total` bytes, unchanged since the
/// download when `if_range` holds its validator), retrying network failures.
pub async fn fetch(
    transport: &Transport,
    url: &str,
    if_range: Option<&str>,
    (start, end): (u64, u64),
    total: Option<u64>,
    max_retries: u32,
) -> Result<Vec<u8>, FetchError> {
    let len = end - start;
    let mut attempt = 0;
    loop {
        let got = async {
            let resp = transport.get_range(url, start, end, if_range).await?;
            check_range(resp.status(), resp.headers(), start, end, total)?;
            let mut body = resp.into_body();
            let mut out = Vec::with_capacity(len as usize);
            while let Some(d) = next_data(&mut body, transport.stall_timeout).await? {
                if out.len() as u64 + d.len() as u64 > len {
                    return Err(FetchError::LongBody(len));
                }
                out.extend_from_slice(&d);
            }
            if (out.len() as u64) < len {
                return Err(FetchError::ShortBody {
                    got: out.len() as u64,
                    expected: len,
                });
            }
            Ok(out)
        }
        .await;
        match got {
            Err(e) if e.is_retryable() && attempt < max_retries => {
                let wait = crate::pipeline::backoff(attempt);
                attempt += 1;
                tracing::warn!(url, start, end, attempt, error = %e, "range request failed, retrying");
                tokio::time::sleep(wait).await;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn digests_do_not_depend_on_how_the_stream_was_cut() {
        let image = data(5 * BLOCK as usize + 1234);
        let mut d = BlockDigests::new();
        for piece in image.chunks(9999) {
            d.update(piece);
        }
        assert_eq!(d.len(), image.len() as u64);
        let b = BLOCK as usize;
        assert!(d.check(0, &image));
        assert!(d.check(BLOCK, &image[b..3 * b]));
        // The tail block ends at the end of the stream.
        assert!(d.check(5 * BLOCK, &image[5 * b..]));
        assert!(d.check(4 * BLOCK, &image[4 * b..]));
    }

    #[test]
    fn other_bytes_or_other_places_do_not_match() {
        let image = data(3 * BLOCK as usize + 100);
        let mut d = BlockDigests::new();
        d.update(&image);
        let b = BLOCK as usize;
        let mut bad = image[b..2 * b].to_vec();
        bad[77] ^= 1;
        assert!(!d.check(BLOCK, &bad));
        // Right bytes, wrong block; unaligned; partial block; past the end.
        assert!(!d.check(2 * BLOCK, &image[b..2 * b]));
        assert!(!d.check(1, &image[1..b + 1]));
        assert!(!d.check(0, &image[..100]));
        assert!(!d.check(3 * BLOCK, &image[3 * b..3 * b + 50]));
        assert!(!d.check(3 * BLOCK, &[image[3 * b..].to_vec(), vec![0]].concat()));
    }

    #[test]
    fn nearby_ranges_share_a_request_and_far_ones_do_not() {
        let total = 100 << 20;
        let w = windows(
            &[
                (40 << 20, 4096),
                (1000, 10),
                (70_000, 512),
                ((1 << 20) + 5, 1),
                (99 << 20, 2 << 20),
            ],
            total,
        );
        assert_eq!(
            w,
            vec![
                Window {
                    start: 0,
                    end: (1 << 20) + BLOCK,
                    ranges: vec![(1000, 10), (70_000, 512), ((1 << 20) + 5, 1)],
                },
                Window {
                    start: 40 << 20,
                    end: (40 << 20) + BLOCK,
                    ranges: vec![(40 << 20, 4096)],
                },
                // Clamped to the end of the image.
                Window {
                    start: 99 << 20,
                    end: total,
                    ranges: vec![(99 << 20, 2 << 20)],
                },
            ]
        );
        // A run of neighbours stops growing at WINDOW_MAX.
        let many: Vec<(u64, u64)> = (0..40).map(|i| (i << 20, 4096)).collect();
        let w = windows(&many, total);
        assert!(w.len() > 1 && w.iter().all(|w| w.end - w.start <= WINDOW_MAX));
        assert_eq!(w.iter().map(|w| w.ranges.len()).sum::<usize>(), 40);
    }
}
