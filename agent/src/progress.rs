//! Progress on stderr: a one-line bar on a terminal, or JSON lines for scripts.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use agent_proto::Progress;

use crate::ProgressMode;

static BAR_DRAWN: AtomicBool = AtomicBool::new(false);

/// A progress callback for the chosen mode, or `None` when nothing is shown.
pub fn reporter(mode: ProgressMode) -> Option<Arc<dyn Fn(Progress) + Send + Sync>> {
    let mode = match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
        ProgressMode::Auto => ProgressMode::None,
        m => m,
    };
    match mode {
        ProgressMode::Bar => Some(Arc::new(draw_bar)),
        ProgressMode::Json => Some(Arc::new(|p: Progress| {
            if let Ok(line) = serde_json::to_string(&p) {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        })),
        _ => None,
    }
}

/// Ends the bar's line, if one was drawn.
pub fn finish() {
    if BAR_DRAWN.swap(false, Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr().lock());
    }
}

fn draw_bar(p: Progress) {
    const WIDTH: usize = 30;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let line = match p.bytes_total.filter(|&t| t > 0) {
        Some(total) => {
            let frac = (p.bytes_done as f64 / total as f64).clamp(0.0, 1.0);
            let filled = (frac * WIDTH as f64) as usize;
            format!(
                "\r{} {} [{}{}] {:5.1}% {:.0}/{:.0} MiB {:.0} MiB/s {}   ",
                p.operation,
                p.device,
                "#".repeat(filled),
                "-".repeat(WIDTH - filled),
                frac * 100.0,
                mib(p.bytes_done),
                mib(total),
                mib(p.rate_bytes_per_sec),
                p.phase
            )
        }
        None => format!(
            "\r{} {} {:.0} MiB {:.0} MiB/s {}   ",
            p.operation,
            p.device,
            mib(p.bytes_done),
            mib(p.rate_bytes_per_sec),
            p.phase
        ),
    };
    BAR_DRAWN.store(true, Ordering::Relaxed);
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
