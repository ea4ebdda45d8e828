//! Test support shared by the components' root-only tests and the cross-component tests in
//! tests/tests/: commands run with their stderr kept for the failure message, and loop devices
//! that come up clean and go away on drop.

pub mod lab;
pub mod lab_bench;
pub mod loopdev;
pub mod ramdisk;
pub mod sushy;

use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// Runs a command; fails with its stderr when it exits non-zero.
pub fn run(cmd: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Runs a command and returns (exit code, stdout), whatever the exit code.
pub fn status(cmd: &str, args: &[&str]) -> Result<(i32, String)> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Runs `ip ARGS` (iproute2) and panics with its stderr when it fails: for tests setting up
/// their own network namespaces, where a failed step must stop the test at once.
pub fn ip(args: &[&str]) {
    if let Err(e) = run("ip", args) {
        panic!("{e}");
    }
}

/// The inputs of a committed cargo-fuzz corpus (`dir` holds one file per input), for tests that
/// replay it through the parser; panics when the corpus is missing or nearly empty.
pub fn fuzz_corpus(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let inputs: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.expect("corpus entry").path()).expect("corpus file"))
        .collect();
    assert!(inputs.len() > 10, "{}: corpus missing", dir.display());
    inputs
}

/// Deterministic, incompressible test data (xorshift64 from `seed`).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
