//! Writes an image with `write_image` and prints the report as JSON (benchmarks, manual tests).
//!
//! usage: write_image URL CHECKSUM DEVICE [--allow-regular-file]
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        anyhow::bail!("usage: write_image URL CHECKSUM DEVICE [--allow-regular-file]");
    }
    let mut req = agent_image::WriteRequest::new(&args[1], args[2].parse()?, &args[3]);
    req.guard.allow_regular_file = args.iter().any(|a| a == "--allow-regular-file");
    req.progress = Some(Arc::new(|p| {
        eprintln!(
            "{} {}/{:?} {} MB/s",
            p.phase,
            p.bytes_done,
            p.bytes_total,
            p.rate_bytes_per_sec / 1_000_000
        )
    }));
    let report = agent_image::write_image(&req)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
