//! `ferrox-mkinitramfs`: the command line around the library. Options come from the command
//! line and, optionally, a TOML file with the same names (`--config`); the command line wins.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;
use ferrox_mkinitramfs::{modules, ExtraFile, Options, DEFAULT_MAX_FIRMWARE_SIZE, DEFAULT_MODULES};
use serde::Deserialize;

/// Builds Ferrox's ramdisk: a reproducible, zstd-compressed newc cpio with the static agent as
/// /init, the kernel modules of common server hardware (and everything they depend on, from
/// modules.dep) and the firmware those modules declare.
///
/// The modules come from a kernel's module tree (Debian's linux-image-amd64 by default: the
/// newest /lib/modules/* with a modules.dep), not from the running kernel. A summary goes to
/// stderr; --report writes it as JSON.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(name = "ferrox-mkinitramfs", version)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    /// TOML file with any of these options (kebab-case keys, e.g. `add-modules = ["bonding"]`);
    /// command-line options override it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,

    /// The binary to run as /init: the static ferrox-agent (hack/build-static-agent.sh).
    #[arg(long, value_name = "FILE")]
    agent: Option<PathBuf>,

    /// Where to write the ramdisk (written atomically).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Kernel release whose modules to use (a directory under --modules-dir). Default: the
    /// newest one that has a modules.dep.
    #[arg(long, value_name = "VERSION")]
    kernel_version: Option<String>,

    /// Where module trees live (/lib/modules), or one kernel's tree itself.
    #[arg(long, value_name = "DIR")]
    modules_dir: Option<PathBuf>,

    /// Replace the default module set (comma-separated names or exact aliases). The default:
    /// NICs virtio_net e1000 e1000e igb ixgbe i40e ice mlx5_core bnxt_en tg3; storage
    /// virtio_blk virtio_scsi nvme ahci sd_mod megaraid_sas mpt3sas smartpqi; virtio_pci (the
    /// virtio PCI transport); 8021q and af_packet (VLAN, LLDP); button and evdev (the ACPI power
    /// button). Dependencies always follow.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    modules: Option<Vec<String>>,

    /// Add modules to the set (repeatable, or comma-separated).
    #[arg(long = "add-module", value_delimiter = ',', value_name = "NAME")]
    add_modules: Vec<String>,

    /// Remove modules from the requested set (their dependencies stay if something else
    /// needs them).
    #[arg(long = "remove-module", value_delimiter = ',', value_name = "NAME")]
    remove_modules: Vec<String>,

    /// Also put the file SOURCE in the ramdisk at DEST (repeatable). Mode 0755 if SOURCE is
    /// executable, else 0644.
    #[arg(long = "add-file", value_name = "SOURCE:DEST")]
    add_files: Vec<String>,

    /// Do not follow modules.softdep.
    #[arg(long)]
    no_softdeps: bool,

    /// Firmware directory, searched the kernel's way (updates/<ver>, updates, <ver>, itself).
    /// Default: /lib/firmware.
    #[arg(long, value_name = "DIR")]
    firmware_dir: Option<PathBuf>,

    /// Include no firmware at all.
    #[arg(long)]
    no_firmware: bool,

    /// Leave out (and report) firmware files larger than this many bytes. Default: 4 MiB.
    #[arg(long, value_name = "BYTES")]
    max_firmware_size: Option<u64>,

    /// zstd compression level (1-19). Default: 19.
    #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(i32).range(1..=19))]
    compression_level: Option<i32>,

    /// The mtime of every entry. Default: 0.
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS")]
    source_date_epoch: Option<u32>,

    /// Fail if a requested module is neither a module nor built into the kernel, or if
    /// declared firmware is missing.
    #[arg(long)]
    strict: bool,

    /// Also write the build report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

impl Config {
    /// Fills every option the command line left unset from `file`.
    fn merge(mut self, file: Config) -> Config {
        macro_rules! or {
            ($($f:ident),*) => { $( self.$f = self.$f.or(file.$f); )* };
        }
        or!(
            agent,
            output,
            kernel_version,
            modules_dir,
            modules,
            firmware_dir,
            max_firmware_size,
            compression_level,
            source_date_epoch,
            report
        );
        let mut add = file.add_modules;
        add.append(&mut self.add_modules);
        self.add_modules = add;
        let mut files = file.add_files;
        files.append(&mut self.add_files);
        self.add_files = files;
        let mut remove = file.remove_modules;
        remove.append(&mut self.remove_modules);
        self.remove_modules = remove;
        self.no_softdeps |= file.no_softdeps;
        self.no_firmware |= file.no_firmware;
        self.strict |= file.strict;
        self
    }
}

fn modules_root(cfg: &Config) -> Result<(PathBuf, String)> {
    let base = cfg
        .modules_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/lib/modules"));
    if let Some(v) = &cfg.kernel_version {
        return Ok((base.join(v), v.clone()));
    }
    if base.join("modules.dep").is_file() {
        let v = base
            .file_name()
            .and_then(|n| n.to_str())
            .context("--modules-dir has no usable name to take the kernel version from")?
            .to_owned();
        return Ok((base, v));
    }
    let v = modules::newest_kernel_version(&base).with_context(|| {
        format!(
            "no kernel module tree with a modules.dep under {} \
             (install linux-image-amd64, or pass --modules-dir/--kernel-version)",
            base.display()
        )
    })?;
    Ok((base.join(&v), v))
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn mib(n: u64) -> String {
    format!("{:.2} MiB", n as f64 / f64::from(1 << 20))
}

fn run() -> Result<()> {
    let mut cfg = Config::parse();
    if let Some(path) = &cfg.config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: Config =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        cfg = cfg.merge(file);
    }
    let Some(agent) = cfg.agent.clone() else {
        bail!("--agent is required (the static ferrox-agent: hack/build-static-agent.sh prints its path)");
    };
    let Some(output) = cfg.output.clone() else {
        bail!("--output is required");
    };
    let (modules_root, kernel_version) = modules_root(&cfg)?;

    let mut modules: Vec<String> = cfg
        .modules
        .clone()
        .unwrap_or_else(|| DEFAULT_MODULES.iter().map(|s| s.to_string()).collect());
    modules.extend(cfg.add_modules.iter().cloned());
    let removed: Vec<String> = cfg
        .remove_modules
        .iter()
        .map(|m| modules::normalize(m))
        .collect();
    modules.retain(|m| !removed.contains(&modules::normalize(m)));
    modules.dedup();

    let opts = Options {
        init: agent,
        modules_root,
        kernel_version,
        modules,
        softdeps: !cfg.no_softdeps,
        firmware_dir: (!cfg.no_firmware).then(|| {
            cfg.firmware_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/lib/firmware"))
        }),
        max_firmware_size: cfg.max_firmware_size.unwrap_or(DEFAULT_MAX_FIRMWARE_SIZE),
        mtime: cfg.source_date_epoch.unwrap_or(0),
        compression_level: cfg.compression_level.unwrap_or(19),
        extra_files: cfg
            .add_files
            .iter()
            .map(|f| ExtraFile::parse(f))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("--add-file {e}"))?,
    };
    let (data, report) = ferrox_mkinitramfs::build(&opts)
        .with_context(|| format!("building the ramdisk for kernel {}", opts.kernel_version))?;
    write_atomically(&output, &data)?;
    if let Some(path) = &cfg.report {
        let json = serde_json::to_vec_pretty(&report)?;
        write_atomically(path, &json)?;
    }

    let r = &report;
    eprintln!(
        "ferrox-mkinitramfs: {} ({} compressed, {} cpio, {} entries) for kernel {}",
        output.display(),
        mib(r.compressed_bytes),
        mib(r.cpio_bytes),
        r.entries,
        r.kernel_version
    );
    eprintln!(
        "  init: {}; modules: {} ({}), built in: {}",
        mib(r.init_bytes),
        r.modules.len(),
        mib(r.modules_bytes),
        if r.modules_builtin.is_empty() {
            "-".into()
        } else {
            r.modules_builtin.join(" ")
        }
    );
    eprintln!(
        "  firmware: {} included ({}), {} missing, {} over the size limit",
        r.firmware.len(),
        mib(r.firmware_bytes),
        r.firmware_missing.len(),
        r.firmware_too_large.len()
    );
    for m in &r.modules_missing {
        eprintln!("  warning: module {m} is not in this kernel (neither a module nor built in)");
    }
    for f in &r.firmware_missing {
        eprintln!("  warning: firmware missing: {f}");
    }
    for f in &r.firmware_too_large {
        eprintln!("  warning: firmware left out (over --max-firmware-size): {f}");
    }
    if cfg.strict && !(r.modules_missing.is_empty() && r.firmware_missing.is_empty()) {
        bail!("--strict: modules or firmware missing (see the warnings above)");
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("ferrox-mkinitramfs: error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The --help text lists the default module set; it must not drift from the code.
    #[test]
    fn help_lists_the_default_modules() {
        let help = Config::command().render_long_help().to_string();
        let words: Vec<&str> = help
            .split(|c: char| c.is_whitespace() || c == ';' || c == ')' || c == '(')
            .collect();
        for m in DEFAULT_MODULES {
            assert!(words.contains(m), "--help does not mention {m}");
        }
    }
}
