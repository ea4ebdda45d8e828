//! Helpers for the loop-device tests: loop devices and mounts that clean up after
//! themselves, and the real tools run as commands.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
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

/// Runs a command and returns (exit code, stdout).
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

/// A loop device, detached on drop.
#[derive(Debug)]
pub struct Loop {
    pub path: PathBuf,
}

impl Loop {
    /// Attaches `file` (whole, or `size` bytes at `offset`; read-only when asked).
    pub fn attach(file: &Path, offset: u64, size: u64, read_only: bool) -> Result<Self> {
        let (o, s) = (offset.to_string(), size.to_string());
        let mut args = vec!["-f", "--show"];
        if offset > 0 {
            args.extend(["-o", &o]);
        }
        if size > 0 {
            args.extend(["--sizelimit", &s]);
        }
        if read_only {
            args.push("-r");
        }
        let f = file.to_str().context("path")?;
        args.push(f);
        let out = run("losetup", &args)?;
        let path = PathBuf::from(String::from_utf8(out.stdout)?.trim());
        Ok(Self { path })
    }

    pub fn whole(file: &Path) -> Result<Self> {
        Self::attach(file, 0, 0, false)
    }

    pub fn dev(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        // Retry briefly: udev may still hold it open for a probe.
        for _ in 0..20 {
            if Command::new("losetup")
                .args(["-d", self.dev()])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("warning: could not detach {}", self.dev());
    }
}

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
