//! `ferrox-mkinitramfs`: builds Ferrox's ramdisk, a zstd-compressed newc cpio holding
//!
//! - the static agent as `/init` (the kernel runs it as PID 1),
//! - the directories and device nodes PID 1 needs before it mounts anything (`/dev/console`
//!   must exist in the archive or the kernel starts init with no stdin/stdout/stderr),
//! - the kernel modules of a configurable set and everything they depend on (modules.dep and
//!   modules.softdep), stored uncompressed under `/lib/modules/<version>/` with a
//!   modules.dep / modules.alias / modules.softdep / modules.builtin subset so the agent can
//!   coldplug by modalias,
//! - the firmware those modules declare (`MODULE_FIRMWARE`, read from each `.ko`'s
//!   `.modinfo`), when present on the building machine.
//!
//! The output is reproducible: the same inputs and options give the same bytes (see
//! [`newc`] for how), whatever the building machine's clock, umask or file order.

pub mod modinfo;
pub mod modules;
pub mod newc;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use modules::{uncompressed_path, ModuleTree};
use newc::Archive;
use serde::Serialize;

/// The default module set: what common server hardware (and QEMU) needs for the agent to see
/// its disks and reach the network.
pub const DEFAULT_MODULES: &[&str] = &[
    // NICs
    "virtio_net",
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "i40e",
    "ice",
    "mlx5_core",
    "bnxt_en",
    "tg3",
    // storage
    "virtio_blk",
    "virtio_scsi",
    "nvme",
    "ahci",
    "sd_mod",
    "megaraid_sas",
    "mpt3sas",
    "smartpqi",
    // The virtio PCI transport: a module in Debian's kernel, and no dependency of virtio_net or
    // virtio_blk in modules.dep (they bind to the virtio bus it provides), so it must be asked
    // for or no virtio device ever appears.
    "virtio_pci",
    // VLANs. LLDP needs AF_PACKET, built into Debian's kernel; listed so a kernel that has it
    // as a module gets it.
    "8021q",
    "af_packet",
    // The ACPI power button and the event device the agent reads it through: a BMC's
    // graceful shutdown powers the ramdisk off at once instead of timing out.
    "button",
    "evdev",
];

/// Firmware files larger than this are left out by default (and reported): the
/// ramdisk's size budget is 12 MB and no NIC or HBA of the default set needs more.
pub const DEFAULT_MAX_FIRMWARE_SIZE: u64 = 4 << 20;

/// Directories created in the ramdisk, with their modes.
const DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("etc", 0o755),
    ("mnt", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("run", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("var", 0o755),
];

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("reading the init binary {path}")]
    Init {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the module tree {path}")]
    ModuleTree {
        path: PathBuf,
        #[source]
        source: modules::ModulesError,
    },
    #[error("reading module {path}")]
    Module {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading firmware {path}")]
    Firmware {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}")]
    ExtraFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("adding to the archive")]
    Archive(#[from] newc::ArchiveError),
    #[error("compressing the archive")]
    Compress(#[source] std::io::Error),
}

/// What goes into the ramdisk.
#[derive(Debug, Clone)]
pub struct Options {
    /// The binary run as `/init` (the static agent).
    pub init: PathBuf,
    /// The kernel's module tree, `/lib/modules/<kernel_version>`.
    pub modules_root: PathBuf,
    /// The kernel release the modules are installed under in the ramdisk (`uname -r`).
    pub kernel_version: String,
    /// Module names (or exact aliases) to include, with their dependencies.
    pub modules: Vec<String>,
    /// Also follow modules.softdep.
    pub softdeps: bool,
    /// Firmware root (`/lib/firmware`); looked up the kernel's way: `updates/<ver>/`,
    /// `updates/`, `<ver>/`, then the root itself. `None`: no firmware.
    pub firmware_dir: Option<PathBuf>,
    /// Firmware files larger than this (uncompressed) are skipped and reported.
    pub max_firmware_size: u64,
    /// Every entry's mtime (SOURCE_DATE_EPOCH).
    pub mtime: u32,
    /// zstd level, 1..=19 (22 with long windows is not used: the kernel's decompressor has to
    /// allocate the window at boot).
    pub compression_level: i32,
    /// Other files to put in (a CA bundle, a test program...).
    pub extra_files: Vec<ExtraFile>,
}

/// A file copied into the ramdisk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFile {
    pub source: PathBuf,
    /// Path inside the ramdisk.
    pub dest: String,
    /// 0755 if the source is executable by its owner, else 0644 (nothing else of the source's
    /// metadata is kept).
    pub executable: bool,
}

impl ExtraFile {
    /// Parses `SOURCE:DEST`; the mode comes from the source file's owner-execute bit.
    pub fn parse(spec: &str) -> Result<Self, String> {
        use std::os::unix::fs::PermissionsExt;
        let (src, dest) = spec
            .split_once(':')
            .ok_or_else(|| format!("{spec:?}: expected SOURCE:DEST"))?;
        if src.is_empty() || dest.is_empty() {
            return Err(format!("{spec:?}: expected SOURCE:DEST"));
        }
        let meta = std::fs::metadata(src).map_err(|e| format!("{src}: {e}"))?;
        Ok(ExtraFile {
            source: src.into(),
            dest: dest.to_owned(),
            executable: meta.permissions().mode() & 0o100 != 0,
        })
    }
}

/// What a build put in, and what it could not.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    pub kernel_version: String,
    pub init_bytes: u64,
    pub modules_requested: Vec<String>,
    /// Included modules, in modules.dep order.
    pub modules: Vec<String>,
    /// Requested but built into the kernel.
    pub modules_builtin: Vec<String>,
    /// Requested but neither a module nor built in.
    pub modules_missing: Vec<String>,
    pub modules_bytes: u64,
    pub firmware: Vec<String>,
    pub firmware_bytes: u64,
    /// `file (module)` for declared firmware not found under the firmware directory.
    pub firmware_missing: Vec<String>,
    /// `file (module, N bytes)` for firmware over the size limit.
    pub firmware_too_large: Vec<String>,
    pub entries: usize,
    pub cpio_bytes: u64,
    pub compressed_bytes: u64,
}

fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut v)?;
    Ok(v)
}

/// Finds `name` under the firmware root the way the kernel's firmware loader does (and its
/// `.xz`/`.zst` forms, stored decompressed). Returns the path found and the content.
fn find_firmware(
    root: &Path,
    kver: &str,
    name: &str,
    max: u64,
) -> Result<FirmwareLookup, BuildError> {
    // MODULE_FIRMWARE strings are relative paths; refuse anything that would escape the root.
    if name.starts_with('/') || name.split('/').any(|c| c == ".." || c.is_empty()) {
        return Ok(FirmwareLookup::Missing);
    }
    let dirs = [
        root.join("updates").join(kver),
        root.join("updates"),
        root.join(kver),
        root.to_owned(),
    ];
    for dir in &dirs {
        for suffix in ["", ".zst", ".xz"] {
            let path = dir.join(format!("{name}{suffix}"));
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            if suffix.is_empty() && meta.len() > max {
                return Ok(FirmwareLookup::TooLarge(meta.len()));
            }
            let data = modinfo::read_module(&path)
                .map_err(|source| BuildError::Firmware { path, source })?;
            if data.len() as u64 > max {
                return Ok(FirmwareLookup::TooLarge(data.len() as u64));
            }
            return Ok(FirmwareLookup::Found(data));
        }
    }
    Ok(FirmwareLookup::Missing)
}

enum FirmwareLookup {
    Found(Vec<u8>),
    TooLarge(u64),
    Missing,
}

/// Builds the file tree (uncompressed) and the report (sizes of the cpio and compressed
/// output left at 0).
pub fn build_archive(opts: &Options) -> Result<(Archive, Report), BuildError> {
    let mut a = Archive::new();
    let mut report = Report {
        kernel_version: opts.kernel_version.clone(),
        modules_requested: opts.modules.clone(),
        ..Report::default()
    };

    let init = read_file(&opts.init).map_err(|source| BuildError::Init {
        path: opts.init.clone(),
        source,
    })?;
    report.init_bytes = init.len() as u64;
    a.add_file("init", 0o755, init)?;
    for (d, mode) in DIRS {
        a.add_dir(d, *mode)?;
    }
    a.add_char_device("dev/console", 0o600, 5, 1)?;
    a.add_char_device("dev/null", 0o666, 1, 3)?;

    let tree = ModuleTree::load(&opts.modules_root).map_err(|source| BuildError::ModuleTree {
        path: opts.modules_root.clone(),
        source,
    })?;
    let res = tree.resolve(&opts.modules, opts.softdeps);
    report.modules_builtin = res.builtin;
    report.modules_missing = res.missing;

    let mod_dir = format!("lib/modules/{}", opts.kernel_version);
    a.add_dir(&mod_dir, 0o755)?;
    // firmware name → the modules declaring it, for the report.
    let mut firmware: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in &res.modules {
        let m = tree.module(name).expect("resolved modules exist");
        let path = tree.root().join(&m.path);
        let data = modinfo::read_module(&path).map_err(|source| BuildError::Module {
            path: path.clone(),
            source,
        })?;
        // A module whose .modinfo cannot be read still loads; it just declares no firmware.
        if let Ok(info) = modinfo::parse(&data) {
            for fw in info.firmware() {
                firmware
                    .entry(fw.to_owned())
                    .or_default()
                    .push(name.clone());
            }
        }
        report.modules_bytes += data.len() as u64;
        a.add_file(
            &format!("{mod_dir}/{}", uncompressed_path(&m.path)),
            0o644,
            data,
        )?;
    }
    let included: BTreeSet<String> = res.modules.iter().cloned().collect();
    let subset = tree.subset_files(&included);
    for (file, content) in [
        ("modules.dep", subset.dep),
        ("modules.alias", subset.alias),
        ("modules.softdep", subset.softdep),
        ("modules.builtin", subset.builtin),
    ] {
        a.add_file(&format!("{mod_dir}/{file}"), 0o644, content.into_bytes())?;
    }
    report.modules = res.modules;

    if let Some(fw_root) = &opts.firmware_dir {
        for (fw, mods) in &firmware {
            match find_firmware(fw_root, &opts.kernel_version, fw, opts.max_firmware_size)? {
                FirmwareLookup::Found(data) => {
                    report.firmware_bytes += data.len() as u64;
                    a.add_file(&format!("lib/firmware/{fw}"), 0o644, data)?;
                    report.firmware.push(fw.clone());
                }
                FirmwareLookup::TooLarge(n) => report
                    .firmware_too_large
                    .push(format!("{fw} ({}, {n} bytes)", mods.join(","))),
                FirmwareLookup::Missing => report
                    .firmware_missing
                    .push(format!("{fw} ({})", mods.join(","))),
            }
        }
    }
    for f in &opts.extra_files {
        let data = read_file(&f.source).map_err(|source| BuildError::ExtraFile {
            path: f.source.clone(),
            source,
        })?;
        a.add_file(&f.dest, if f.executable { 0o755 } else { 0o644 }, data)?;
    }
    report.entries = a.len();
    Ok((a, report))
}

/// Compresses a cpio with zstd (single-threaded: the output must not depend on the machine),
/// with a checksum the kernel verifies when unpacking.
pub fn compress(cpio: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let mut enc = zstd::stream::Encoder::new(Vec::new(), level)?;
    enc.include_checksum(true)?;
    enc.set_pledged_src_size(Some(cpio.len() as u64))?;
    std::io::Write::write_all(&mut enc, cpio)?;
    enc.finish()
}

/// Builds the compressed ramdisk.
pub fn build(opts: &Options) -> Result<(Vec<u8>, Report), BuildError> {
    let (archive, mut report) = build_archive(opts)?;
    let cpio = archive.to_bytes(opts.mtime);
    report.cpio_bytes = cpio.len() as u64;
    let out = compress(&cpio, opts.compression_level).map_err(BuildError::Compress)?;
    report.compressed_bytes = out.len() as u64;
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> Options {
        let mods = dir.join("lib/modules/6.1.0-test");
        std::fs::create_dir_all(&mods).unwrap();
        modules::write_fixture_tree(&mods);
        let fw = dir.join("firmware");
        std::fs::create_dir_all(fw.join("vendor")).unwrap();
        std::fs::write(fw.join("vendor/a.bin"), b"firmware a").unwrap();
        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 6);
        std::io::Write::write_all(&mut enc, b"firmware b, shipped xz-compressed").unwrap();
        std::fs::write(fw.join("vendor/b.bin.xz"), enc.finish().unwrap()).unwrap();
        std::fs::write(fw.join("vendor/z.bin"), b"not wanted").unwrap();
        let init = dir.join("init");
        std::fs::write(&init, b"\x7fELF pretend static agent").unwrap();
        Options {
            init,
            modules_root: mods,
            kernel_version: "6.1.0-test".into(),
            modules: vec!["a".into(), "af_packet".into(), "nope".into()],
            softdeps: true,
            firmware_dir: Some(fw),
            max_firmware_size: DEFAULT_MAX_FIRMWARE_SIZE,
            mtime: 0,
            compression_level: 3,
            extra_files: Vec::new(),
        }
    }

    #[test]
    fn archive_holds_init_modules_index_and_firmware() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        let (a, r) = build_archive(&opts).unwrap();
        let paths: Vec<_> = a.paths().collect();
        for p in [
            "init",
            "dev/console",
            "dev/null",
            "proc",
            "sys",
            "run",
            "tmp",
            "lib/modules/6.1.0-test/kernel/net/a.ko",
            "lib/modules/6.1.0-test/kernel/lib/b-core.ko",
            "lib/modules/6.1.0-test/kernel/lib/c.ko",
            "lib/modules/6.1.0-test/kernel/lib/d.ko",
            "lib/modules/6.1.0-test/kernel/lib/soft.ko",
            "lib/modules/6.1.0-test/modules.dep",
            "lib/modules/6.1.0-test/modules.alias",
            "lib/firmware/vendor/a.bin",
            "lib/firmware/vendor/b.bin",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
        assert!(!paths
            .iter()
            .any(|p| p.contains("z.ko") || p.contains("z.bin")));
        // Modules are stored decompressed: the ELF itself.
        match a.get("lib/modules/6.1.0-test/kernel/lib/b-core.ko") {
            Some(newc::Entry::File { data, .. }) => assert!(data.starts_with(b"\x7fELF")),
            other => panic!("{other:?}"),
        }
        match a.get("lib/firmware/vendor/b.bin") {
            Some(newc::Entry::File { data, .. }) => {
                assert_eq!(data, b"firmware b, shipped xz-compressed")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.modules, ["a", "b_core", "c", "d", "soft"]);
        assert_eq!(r.modules_builtin, ["af_packet"]);
        assert_eq!(r.modules_missing, ["nope"]);
        assert_eq!(r.firmware, ["vendor/a.bin", "vendor/b.bin"]);
        assert_eq!(r.firmware_missing, ["vendor/absent.bin (b_core)"]);
    }

    #[test]
    fn extra_files_keep_only_the_execute_bit() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        let tool = dir.path().join("tool");
        std::fs::write(&tool, b"x").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o700)).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, b"pem").unwrap();
        std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o600)).unwrap();
        opts.extra_files = vec![
            ExtraFile::parse(&format!("{}:/bin/tool", tool.display())).unwrap(),
            ExtraFile::parse(&format!("{}:etc/ferrox/ca.pem", ca.display())).unwrap(),
        ];
        let (a, _) = build_archive(&opts).unwrap();
        assert!(matches!(
            a.get("bin/tool"),
            Some(newc::Entry::File { mode: 0o755, .. })
        ));
        assert!(matches!(
            a.get("etc/ferrox/ca.pem"),
            Some(newc::Entry::File { mode: 0o644, .. })
        ));
        assert!(ExtraFile::parse("no-colon").is_err());
        assert!(ExtraFile::parse("/does/not/exist:x").is_err());
        // Clashing with the archive's own files is an error, not a silent overwrite.
        opts.extra_files = vec![ExtraFile::parse(&format!("{}:init", ca.display())).unwrap()];
        assert!(matches!(build_archive(&opts), Err(BuildError::Archive(_))));
    }

    #[test]
    fn firmware_over_the_limit_is_reported_not_included() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        opts.max_firmware_size = 12;
        let (a, r) = build_archive(&opts).unwrap();
        assert_eq!(r.firmware, ["vendor/a.bin"]);
        assert_eq!(r.firmware_too_large, ["vendor/b.bin (b_core, 33 bytes)"]);
        assert!(a.get("lib/firmware/vendor/b.bin").is_none());
        opts.firmware_dir = None;
        let (_, r) = build_archive(&opts).unwrap();
        assert!(r.firmware.is_empty() && r.firmware_missing.is_empty());
    }

    /// Same inputs, byte-identical output, even when the input files' mtimes, modes and
    /// creation order differ between the two builds.
    #[test]
    fn reproducible() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let o1 = options(d1.path());
        let o2 = options(d2.path());
        // Disturb the second tree's metadata.
        let a_ko = o2.modules_root.join("kernel/net/a.ko");
        std::fs::File::options()
            .append(true)
            .open(&a_ko)
            .unwrap()
            .set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(99))
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&a_ko, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (b1, r1) = build(&o1).unwrap();
        let (b2, r2) = build(&o2).unwrap();
        assert_eq!(r1, r2);
        assert!(b1 == b2, "two builds of the same inputs differ");
        // And the output really depends on its inputs.
        let mut o3 = o1.clone();
        o3.mtime = 1;
        assert_ne!(build(&o3).unwrap().0, b1);
        assert_eq!(
            zstd::decode_all(&b1[..]).unwrap().len() as u64,
            r1.cpio_bytes
        );
    }
}
