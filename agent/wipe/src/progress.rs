//! Throttled progress events for one device's wipe.

use std::path::Path;
use std::time::{Duration, Instant};

use agent_proto::Progress;

use crate::ProgressFn;

/// How often a long phase reports at most.
const INTERVAL: Duration = Duration::from_millis(500);

/// Emits [`Progress`] events for one device: at most every [`INTERVAL`] from `update`,
/// always from `phase`.
pub(crate) struct Reporter {
    f: Option<ProgressFn>,
    device: String,
    total: Option<u64>,
    start: Instant,
    last: Option<Instant>,
}

impl Reporter {
    pub(crate) fn new(f: Option<ProgressFn>, device: &Path, total: Option<u64>) -> Self {
        Self {
            f,
            device: device.display().to_string(),
            total,
            start: Instant::now(),
            last: None,
        }
    }

    fn emit(&mut self, done: u64, phase: &str) {
        let Some(f) = &self.f else { return };
        let secs = self.start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            (done as f64 / secs) as u64
        } else {
            0
        };
        f(Progress {
            operation: "wipe".into(),
            device: self.device.clone(),
            bytes_done: done,
            bytes_total: self.total,
            rate_bytes_per_sec: rate,
            phase: phase.into(),
        });
        self.last = Some(Instant::now());
    }

    /// Starts a new phase (and restarts the rate clock): always reported.
    pub(crate) fn phase(&mut self, done: u64, phase: &str) {
        self.start = Instant::now();
        self.emit(done, phase);
    }

    /// Reports `done` bytes if the last report is old enough.
    pub(crate) fn update(&mut self, done: u64, phase: &str) {
        if self.last.is_none_or(|t| t.elapsed() >= INTERVAL) {
            self.emit(done, phase);
        }
    }

    /// Reports the end of the wipe: always.
    pub(crate) fn done(&mut self, done: u64) {
        self.emit(done, "done");
    }
}
