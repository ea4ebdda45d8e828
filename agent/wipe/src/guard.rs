//! The target guard: every destructive action (wipe, image write) calls [`check_target`] on
//! its device first, and opens it with `O_EXCL` afterwards, so the kernel confirms nobody
//! holds it. Refuses read-only devices, mounted devices (the disk or any of its partitions,
//! swap included), devices held by md/dm, and removable or BMC virtual media unless forced.

use std::fs;
use std::path::{Path, PathBuf};

use agent_sys::block;

/// Where the guard reads the kernel's state; tests point these at fixture trees.
#[derive(Debug, Clone)]
pub struct GuardPolicy {
    /// Skip the removable/virtual-media and held-device refusals (never the read-only one).
    pub force: bool,
    /// Accept a regular file as the target (tests and image files); refused by default.
    pub allow_regular_file: bool,
    pub sys_root: PathBuf,
    pub proc_root: PathBuf,
}

impl Default for GuardPolicy {
    fn default() -> Self {
        Self {
            force: false,
            allow_regular_file: false,
            sys_root: "/sys".into(),
            proc_root: "/proc".into(),
        }
    }
}

/// What the guard learned about an accepted target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The path as given.
    pub path: PathBuf,
    /// The device node after resolving symlinks (`/dev/disk/by-id/...` → `/dev/sda`).
    pub resolved: PathBuf,
    /// Kernel name (`sda`), or the file name for a regular file.
    pub kname: String,
    pub size_bytes: u64,
    pub is_block_device: bool,
    /// Kernel names of the partitions the kernel knows of (`sda1`...).
    pub partitions: Vec<String>,
}

/// Why a target was refused.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a block device")]
    NotBlockDevice { path: PathBuf },
    #[error("{path} is read-only")]
    ReadOnly { path: PathBuf },
    #[error("{path} is mounted: {what} on {mountpoint}")]
    Mounted {
        path: PathBuf,
        what: String,
        mountpoint: String,
    },
    #[error("{path} is in use as swap ({what})")]
    Swap { path: PathBuf, what: String },
    #[error("{path} is held by {holders} (md or dm device); stop it first or force")]
    Held { path: PathBuf, holders: String },
    #[error("{path} is removable media; force to write it anyway")]
    Removable { path: PathBuf },
    #[error("{path} looks like virtual media ({what}); force to write it anyway")]
    VirtualMedia { path: PathBuf, what: String },
    #[error("cannot read the state of {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// Checks `path` against the policy. Does not write anything.
pub fn check_target(path: &Path, policy: &GuardPolicy) -> Result<Target, GuardError> {
    let resolved = fs::canonicalize(path).map_err(|source| GuardError::Open {
        path: path.into(),
        source,
    })?;
    let file =
        block::open(&resolved, block::OpenMode::default()).map_err(|source| GuardError::Open {
            path: path.into(),
            source,
        })?;
    let io_err = |source| GuardError::Io {
        path: path.into(),
        source,
    };
    let is_bdev = block::is_block_device(&file).map_err(io_err)?;
    let size_bytes = block::size_bytes(&file).map_err(io_err)?;
    if !is_bdev {
        if !policy.allow_regular_file {
            return Err(GuardError::NotBlockDevice { path: path.into() });
        }
        let meta = file.metadata().map_err(io_err)?;
        if meta.permissions().readonly() {
            return Err(GuardError::ReadOnly { path: path.into() });
        }
        let kname = resolved
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(Target {
            path: path.into(),
            resolved,
            kname,
            size_bytes,
            is_block_device: false,
            partitions: vec![],
        });
    }
    if block::is_read_only(&file).map_err(io_err)? {
        return Err(GuardError::ReadOnly { path: path.into() });
    }
    let (major, minor) = block::dev_numbers(&file).map_err(io_err)?;
    let sysdir = policy.sys_root.join(format!("dev/block/{major}:{minor}"));
    let sysdir = fs::canonicalize(&sysdir).unwrap_or(sysdir);
    let kname = sysdir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| {
            resolved
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        });
    let target = Target {
        path: path.into(),
        resolved: resolved.clone(),
        kname: kname.clone(),
        size_bytes,
        is_block_device: true,
        partitions: partitions_of(&sysdir, &kname),
    };
    check_sysfs(&target, &sysdir, policy)?;
    Ok(target)
}

/// Partition kernel names: subdirectories of the disk's sysfs dir that have a `partition` file.
fn partitions_of(sysdir: &Path, kname: &str) -> Vec<String> {
    let mut parts: Vec<String> = fs::read_dir(sysdir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name().to_string_lossy().starts_with(kname)
                && e.path().join("partition").exists()
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    parts.sort();
    parts
}

/// The sysfs/procfs half of the guard, separate so fixture trees can exercise it.
pub fn check_sysfs(target: &Target, sysdir: &Path, policy: &GuardPolicy) -> Result<(), GuardError> {
    let path = &target.path;
    // Mounted: the disk or any partition, by major:minor in mountinfo and by name in swaps.
    let mut devs: Vec<(String, String)> = Vec::new(); // (kname, "maj:min")
    for name in std::iter::once(&target.kname).chain(target.partitions.iter()) {
        let dir = if name == &target.kname {
            sysdir.to_path_buf()
        } else {
            sysdir.join(name)
        };
        if let Some(dev) = read_trim(&dir.join("dev")) {
            devs.push((name.clone(), dev));
        }
    }
    if let Ok(mountinfo) = fs::read_to_string(policy.proc_root.join("self/mountinfo")) {
        for line in mountinfo.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 {
                continue;
            }
            if let Some((name, _)) = devs.iter().find(|(_, d)| d == f[2]) {
                return Err(GuardError::Mounted {
                    path: path.clone(),
                    what: format!("/dev/{name}"),
                    mountpoint: f[4].to_string(),
                });
            }
        }
    }
    if let Ok(swaps) = fs::read_to_string(policy.proc_root.join("swaps")) {
        for line in swaps.lines().skip(1) {
            let Some(dev) = line.split_whitespace().next() else {
                continue;
            };
            let base = dev.rsplit('/').next().unwrap_or(dev);
            if devs.iter().any(|(n, _)| n == base) {
                return Err(GuardError::Swap {
                    path: path.clone(),
                    what: dev.to_string(),
                });
            }
        }
    }
    if policy.force {
        return Ok(());
    }
    // Held by md/dm: holders of the disk or any partition.
    let mut holders = Vec::new();
    for (name, _) in &devs {
        let dir = if name == &target.kname {
            sysdir.to_path_buf()
        } else {
            sysdir.join(name)
        };
        for e in fs::read_dir(dir.join("holders"))
            .into_iter()
            .flatten()
            .flatten()
        {
            holders.push(format!("{} (via {name})", e.file_name().to_string_lossy()));
        }
    }
    if !holders.is_empty() {
        return Err(GuardError::Held {
            path: path.clone(),
            holders: holders.join(", "),
        });
    }
    if read_trim(&sysdir.join("removable")).as_deref() == Some("1") {
        return Err(GuardError::Removable { path: path.clone() });
    }
    if let Some(what) = virtual_media(sysdir, &target.kname) {
        return Err(GuardError::VirtualMedia {
            path: path.clone(),
            what,
        });
    }
    Ok(())
}

/// CD/DVD drives, floppies, and BMC virtual media (USB devices whose vendor or model says
/// "Virtual", as AMI, iDRAC, iLO and Supermicro present them).
fn virtual_media(sysdir: &Path, kname: &str) -> Option<String> {
    if kname.starts_with("sr") || kname.starts_with("fd") {
        return Some(format!("optical or floppy drive {kname}"));
    }
    if read_trim(&sysdir.join("device/type")).as_deref() == Some("5") {
        return Some("SCSI CD-ROM device".into());
    }
    let vendor = read_trim(&sysdir.join("device/vendor")).unwrap_or_default();
    let model = read_trim(&sysdir.join("device/model")).unwrap_or_default();
    let label = format!("{vendor} {model}");
    let lower = label.to_ascii_lowercase();
    if lower.contains("virtual")
        && (lower.contains("cd")
            || lower.contains("floppy")
            || lower.contains("media")
            || is_usb(sysdir))
    {
        return Some(label.trim().to_string());
    }
    None
}

fn is_usb(sysdir: &Path) -> bool {
    fs::canonicalize(sysdir.join("device"))
        .map(|p| p.to_string_lossy().contains("/usb"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(
        tmp: &Path,
        removable: &str,
        holders: &[&str],
        vendor: &str,
        model: &str,
    ) -> (PathBuf, Target) {
        let sysdir = tmp.join("sys/block/sdb");
        fs::create_dir_all(sysdir.join("holders")).unwrap();
        fs::create_dir_all(sysdir.join("device")).unwrap();
        fs::create_dir_all(sysdir.join("sdb1/holders")).unwrap();
        fs::write(sysdir.join("sdb1/partition"), "1\n").unwrap();
        fs::write(sysdir.join("sdb1/dev"), "8:17\n").unwrap();
        fs::write(sysdir.join("dev"), "8:16\n").unwrap();
        fs::write(sysdir.join("removable"), format!("{removable}\n")).unwrap();
        fs::write(sysdir.join("device/vendor"), vendor).unwrap();
        fs::write(sysdir.join("device/model"), model).unwrap();
        for h in holders {
            fs::create_dir_all(sysdir.join("sdb1/holders").join(h)).unwrap();
        }
        fs::create_dir_all(tmp.join("proc/self")).unwrap();
        fs::write(
            tmp.join("proc/self/mountinfo"),
            "22 1 0:21 / /proc rw - proc proc rw\n",
        )
        .unwrap();
        fs::write(tmp.join("proc/swaps"), "Filename Type Size Used Priority\n").unwrap();
        let target = Target {
            path: "/dev/sdb".into(),
            resolved: "/dev/sdb".into(),
            kname: "sdb".into(),
            size_bytes: 1 << 30,
            is_block_device: true,
            partitions: partitions_of(&sysdir, "sdb"),
        };
        (sysdir, target)
    }

    fn policy(tmp: &Path, force: bool) -> GuardPolicy {
        GuardPolicy {
            force,
            allow_regular_file: false,
            sys_root: tmp.join("sys"),
            proc_root: tmp.join("proc"),
        }
    }

    #[test]
    fn plain_disk_is_accepted() {
        let tmp = tempfile::tempdir().unwrap();
        let (sysdir, t) = fixture(tmp.path(), "0", &[], "ATA", "SAMSUNG MZ7LH960");
        assert_eq!(t.partitions, vec!["sdb1".to_string()]);
        check_sysfs(&t, &sysdir, &policy(tmp.path(), false)).unwrap();
    }

    #[test]
    fn mounted_partition_is_refused_even_forced() {
        let tmp = tempfile::tempdir().unwrap();
        let (sysdir, t) = fixture(tmp.path(), "0", &[], "ATA", "X");
        fs::write(
            tmp.path().join("proc/self/mountinfo"),
            "30 1 8:17 / /boot rw - ext4 /dev/sdb1 rw\n",
        )
        .unwrap();
        let err = check_sysfs(&t, &sysdir, &policy(tmp.path(), true)).unwrap_err();
        assert_eq!(err.to_string(), "/dev/sdb is mounted: /dev/sdb1 on /boot");
    }

    #[test]
    fn swap_partition_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (sysdir, t) = fixture(tmp.path(), "0", &[], "ATA", "X");
        fs::write(
            tmp.path().join("proc/swaps"),
            "Filename Type Size Used Priority\n/dev/sdb1 partition 1 0 -2\n",
        )
        .unwrap();
        assert!(matches!(
            check_sysfs(&t, &sysdir, &policy(tmp.path(), false)),
            Err(GuardError::Swap { .. })
        ));
    }

    #[test]
    fn held_removable_and_virtual_are_refused_unless_forced() {
        let tmp = tempfile::tempdir().unwrap();
        let (sysdir, t) = fixture(tmp.path(), "0", &["md127"], "ATA", "X");
        let err = check_sysfs(&t, &sysdir, &policy(tmp.path(), false)).unwrap_err();
        assert!(
            err.to_string().contains("held by md127 (via sdb1)"),
            "{err}"
        );
        check_sysfs(&t, &sysdir, &policy(tmp.path(), true)).unwrap();

        let tmp = tempfile::tempdir().unwrap();
        let (sysdir, t) = fixture(tmp.path(), "1", &[], "ATA", "X");
        assert!(matches!(
            check_sysfs(&t, &sysdir, &policy(tmp.path(), false)),
            Err(GuardError::Removable { .. })
        ));

        let tmp = tempfile::tempdir().unwrap();
        let (sysdir, t) = fixture(tmp.path(), "0", &[], "AMI", "Virtual CDROM0");
        assert!(matches!(
            check_sysfs(&t, &sysdir, &policy(tmp.path(), false)),
            Err(GuardError::VirtualMedia { .. })
        ));
        check_sysfs(&t, &sysdir, &policy(tmp.path(), true)).unwrap();
    }

    #[test]
    fn regular_file_needs_permission() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let err = check_target(f.path(), &GuardPolicy::default()).unwrap_err();
        assert!(matches!(err, GuardError::NotBlockDevice { .. }));
        let p = GuardPolicy {
            allow_regular_file: true,
            ..Default::default()
        };
        assert!(!check_target(f.path(), &p).unwrap().is_block_device);
    }
}
