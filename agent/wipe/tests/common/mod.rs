//! Helpers for the loop-device tests: mounts that clean up after themselves, disk images,
//! and what the real tools say about a device. Loop devices and commands come from the
//! shared test support (`tests`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
pub use tests::loopdev::Loop;
pub use tests::{run, status};

/// A mount, unmounted on drop.
#[derive(Debug)]
pub struct Mount {
    pub dir: tempfile::TempDir,
}

impl Mount {
    pub fn new(dev: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        run("mount", &[dev, dir.path().to_str().unwrap()])?;
        Ok(Self { dir })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).output();
    }
}

/// A sparse backing file of `size` bytes in `dir`.
pub fn image(dir: &Path, name: &str, size: u64) -> Result<PathBuf> {
    let p = dir.join(name);
    let f = std::fs::File::create(&p)?;
    f.set_len(size)?;
    Ok(p)
}

/// Partitions of an image as sfdisk reads them: (number, start byte, size bytes).
pub fn partitions(img: &Path) -> Result<Vec<(u32, u64, u64)>> {
    let out = run("sfdisk", &["--json", img.to_str().unwrap()])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let sector = v["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
    let mut parts = Vec::new();
    for p in v["partitiontable"]["partitions"]
        .as_array()
        .context("no partitions")?
    {
        let node = p["node"].as_str().unwrap_or_default();
        let digits: String = node
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let n: u32 = digits.chars().rev().collect::<String>().parse()?;
        parts.push((
            n,
            p["start"].as_u64().unwrap() * sector,
            p["size"].as_u64().unwrap() * sector,
        ));
    }
    Ok(parts)
}

/// Whether the real tools find nothing on `dev`: `wipefs --no-act --noheadings` prints
/// nothing and `blkid -p` exits 2. Returns what they said otherwise.
pub fn tools_find_nothing(dev: &str) -> Result<std::result::Result<(), String>> {
    let (_, wipefs) = status("wipefs", &["--no-act", "--noheadings", dev])?;
    let (code, blkid) = status("blkid", &["-p", dev])?;
    if wipefs.trim().is_empty() && code == 2 {
        Ok(Ok(()))
    } else {
        Ok(Err(format!(
            "{dev}: wipefs: {wipefs:?}; blkid -p exit {code}: {blkid:?}"
        )))
    }
}

/// Writes an md 0.90 superblock at the end of a `size`-byte region at `offset` of `img`,
/// as mdadm would (`mdadm --create` needs the md driver, which this kernel lacks). Where
/// md 0.90 puts it: the last 64 KiB-aligned 64 KiB block of the device.
pub fn write_md090_superblock(img: &Path, offset: u64, size: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let sb_off = (size / 65536) * 65536 - 65536;
    let words: [u32; 14] = [
        0xa92b_4efc,
        0,
        90,
        0,
        0,
        0x1111_1111,
        0,
        1,
        1024,
        2,
        2,
        0,
        0,
        0x2222_2222,
    ];
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let f = std::fs::OpenOptions::new().write(true).open(img)?;
    f.write_all_at(&bytes, offset + sb_off)?;
    f.sync_all()?;
    Ok(())
}

/// Fills `len` bytes at `offset` of `dev` with a non-zero pattern (`dd` from /dev/urandom
/// would do, but a pattern makes failures readable).
pub fn fill(dev: &str, len: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(dev)?;
    let chunk = vec![0xa5u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        done += n as u64;
    }
    f.sync_all()?;
    Ok(())
}

/// Whether `dev` reads back all zeroes (`cmp -n SIZE DEV /dev/zero`).
pub fn all_zero(dev: &str, size: u64) -> Result<bool> {
    let (code, _) = status("cmp", &["-n", &size.to_string(), dev, "/dev/zero"])?;
    Ok(code == 0)
}
