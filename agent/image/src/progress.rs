//! Progress events for an image write, throttled to a few per second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_proto::Progress;

/// The callback a caller passes to receive progress.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Minimum time between two events of the same phase.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// Emits [`Progress`] events, at most one per [`INTERVAL`] except on a phase change.
pub struct Reporter {
    callback: Option<ProgressFn>,
    device: String,
    start: Instant,
    last: Option<Instant>,
    phase: &'static str,
    total: Option<u64>,
}

impl Reporter {
    pub fn new(callback: Option<ProgressFn>, device: String) -> Self {
        Self {
            callback,
            device,
            start: Instant::now(),
            last: None,
            phase: "",
            total: None,
        }
    }

    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    /// Reports `done` bytes in `phase`; dropped if the last event of the same phase was less
    /// than [`INTERVAL`] ago.
    pub fn update(&mut self, phase: &'static str, done: u64) {
        let now = Instant::now();
        if phase == self.phase && self.last.is_some_and(|l| now - l < INTERVAL) {
            return;
        }
        self.emit(phase, done);
    }

    /// Reports `done` bytes in `phase` now (the last event of a phase).
    pub fn emit(&mut self, phase: &'static str, done: u64) {
        let Some(cb) = &self.callback else {
            return;
        };
        let now = Instant::now();
        self.last = Some(now);
        self.phase = phase;
        let secs = (now - self.start).as_secs_f64();
        let rate = if secs > 0.0 {
            (done as f64 / secs) as u64
        } else {
            0
        };
        cb(Progress {
            operation: "write-image".into(),
            device: self.device.clone(),
            bytes_done: done,
            bytes_total: self.total,
            rate_bytes_per_sec: rate,
            phase: phase.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn throttled_except_on_phase_change() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let mut r = Reporter::new(
            Some(Arc::new(move |p: Progress| s2.lock().unwrap().push(p))),
            "/dev/x".into(),
        );
        r.set_total(Some(100));
        for i in 0..1000 {
            r.update("downloading", i);
        }
        r.update("verifying", 100);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].bytes_done, 0);
        assert_eq!(seen[0].bytes_total, Some(100));
        assert_eq!(seen[1].phase, "verifying");
        assert_eq!(seen[1].device, "/dev/x");
    }
}
