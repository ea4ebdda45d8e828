//! Loop devices for tests.
//!
//! A loop device can come with partitions that belong to a file it was attached to before:
//! when something added them with BLKPG (partx, parted, IPA's rescans) on a loop device
//! without partition scanning, the kernel keeps them across detach and re-attach (seen on
//! this workplace's kernel 6.18: `/sys/block/loop0/loop0p1` of a 2 GiB disk left behind,
//! which made `mkfs.vfat` refuse the next file attached there and showed up in a wipe's
//! report). [`Loop::attach`] deletes such leftovers, so a test sees only its own file.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::run;

/// A loop device, detached on drop.
#[derive(Debug)]
pub struct Loop {
    /// `/dev/loopN`.
    pub path: PathBuf,
}

impl Loop {
    /// Attaches `file` with extra `losetup` arguments (`-o`, `--sizelimit`, `-r`,
    /// `--sector-size`...) and removes partitions the kernel kept from an earlier use.
    pub fn attach(file: &Path, args: &[&str]) -> Result<Self> {
        let f = file
            .to_str()
            .context("loop backing file path is not UTF-8")?;
        let mut all = vec!["--find", "--show"];
        all.extend_from_slice(args);
        all.push(f);
        let out = run("losetup", &all)?;
        let path = PathBuf::from(String::from_utf8(out.stdout)?.trim());
        let lo = Self { path };
        lo.drop_stale_partitions()?;
        Ok(lo)
    }

    /// Attaches all of `file`, read-write.
    pub fn whole(file: &Path) -> Result<Self> {
        Self::attach(file, &[])
    }

    /// Attaches `size` bytes of `file` at `offset` (a partition, since this kernel does not
    /// scan partitions of loop devices).
    pub fn region(file: &Path, offset: u64, size: u64) -> Result<Self> {
        let (o, s) = (offset.to_string(), size.to_string());
        Self::attach(file, &["-o", &o, "--sizelimit", &s])
    }

    /// The device path as a string.
    pub fn dev(&self) -> &str {
        self.path.to_str().unwrap_or_default()
    }

    /// The kernel's partition devices of this loop device (`loopNpM` in sysfs).
    pub fn kernel_partitions(&self) -> Vec<String> {
        let Some(name) = self.path.file_name().and_then(|n| n.to_str()) else {
            return Vec::new();
        };
        let prefix = format!("{name}p");
        let mut parts: Vec<String> = std::fs::read_dir(format!("/sys/block/{name}"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default();
        parts.sort();
        parts
    }

    fn drop_stale_partitions(&self) -> Result<()> {
        if self.kernel_partitions().is_empty() {
            return Ok(());
        }
        run("partx", &["-d", self.dev()])?;
        let left = self.kernel_partitions();
        if !left.is_empty() {
            bail!(
                "{}: the kernel keeps partitions {left:?} from an earlier use, and partx -d did not remove them",
                self.dev()
            );
        }
        Ok(())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        // Retry briefly: a prober (udev, blkid) may still hold it open.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Leaves a partition behind on a loop device the way partx does, and checks that the
    /// next attach there comes up without it.
    #[test]
    #[ignore = "needs root and loop devices"]
    fn attach_removes_partitions_left_from_an_earlier_file() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let img = dir.path().join("old.img");
        std::fs::File::create(&img)?.set_len(64 << 20)?;
        run("sgdisk", &["-o", "-n", "1:2048:0", img.to_str().unwrap()])?;
        let old = Loop::whole(&img)?;
        run("partx", &["-a", old.dev()])?;
        assert_eq!(old.kernel_partitions().len(), 1, "partx -a added nothing");
        let dev = old.path.clone();
        // Detach without the guard's cleanup: the kernel keeps the partition.
        std::mem::forget(old);
        run("losetup", &["-d", dev.to_str().unwrap()])?;

        let fresh = dir.path().join("fresh.img");
        std::fs::File::create(&fresh)?.set_len(32 << 20)?;
        // Attach exactly there again, then clean up as `attach` does.
        run("losetup", &[dev.to_str().unwrap(), fresh.to_str().unwrap()])?;
        let lo = Loop { path: dev };
        let stale = lo.kernel_partitions();
        lo.drop_stale_partitions()?;
        assert!(lo.kernel_partitions().is_empty());
        // On kernels that drop partitions at detach there was nothing to remove.
        println!("stale partitions found and removed: {stale:?}");
        Ok(())
    }
}
