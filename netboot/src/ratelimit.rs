//! Rate limit for logging bad input: a flood of garbage must not become a flood of log lines.
//!
//! Every event is accounted for: either logged, or counted as suppressed and reported later —
//! with the next line allowed, or by [`LogLimiter::take_suppressed`] on a timer (the server
//! calls it every window), so the count of the last burst is not lost when nothing follows it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Allows `per_window` events per `window`, then counts the suppressed ones.
#[derive(Debug)]
pub struct LogLimiter {
    per_window: u32,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Start of the current window.
    since: Instant,
    /// Lines allowed in it.
    allowed: u32,
    /// Events suppressed and not reported yet.
    suppressed: u64,
}

impl LogLimiter {
    /// `per_window` log lines per `window`.
    pub fn new(per_window: u32, window: Duration) -> LogLimiter {
        LogLimiter {
            per_window,
            window,
            state: Mutex::new(State {
                since: Instant::now(),
                allowed: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(suppressed events not reported yet)` if this event may be logged (the caller
    /// reports that number with it); `None` if it is suppressed.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(s.since) >= self.window {
            s.since = now;
            s.allowed = 0;
        }
        if s.allowed < self.per_window {
            s.allowed += 1;
            Some(std::mem::take(&mut s.suppressed))
        } else {
            s.suppressed += 1;
            None
        }
    }

    /// The suppressed events not reported yet, which count as reported from now on: for a
    /// timer that logs them when no allowed line came to carry them.
    pub fn take_suppressed(&self) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut s.suppressed)
    }

    /// The window: how often [`LogLimiter::take_suppressed`] is worth calling.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Lines allowed per window.
    pub fn per_window(&self) -> u32 {
        self.per_window
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(10, Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_counts() {
        let l = LogLimiter::new(2, Duration::from_secs(3600));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        let l = LogLimiter::new(1, Duration::ZERO);
        assert_eq!(l.allow(), Some(0));
    }

    #[test]
    fn every_suppressed_event_is_reported_once() {
        let l = LogLimiter::new(1, Duration::from_millis(50));
        assert_eq!(l.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(l.allow(), None);
        }
        // The timer takes them: the next allowed line does not report them again.
        assert_eq!(l.take_suppressed(), 5);
        assert_eq!(l.take_suppressed(), 0);
        assert_eq!(l.allow(), None);
        std::thread::sleep(Duration::from_millis(60));
        // A new window: the line allowed carries what was suppressed since the timer.
        assert_eq!(l.allow(), Some(1));
        assert_eq!(l.take_suppressed(), 0);
    }
}
