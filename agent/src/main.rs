//! `ferrox-agent`: the operator's and the ramdisk's front to the agent library.
//!
//! `inspect` prints metal3's HardwareDetails on stdout; `wipe` and `write-image` print a JSON
//! report on stdout and progress on stderr. Logs always go to stderr, so stdout stays
//! machine-readable.

mod progress;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use agent_image::{
    hints::RootDeviceHints, ChecksumAlgo, ChecksumRequest, ChecksumSpec, WriteRequest,
};
use agent_wipe::guard::GuardPolicy;

/// Exit status when some devices of a wipe failed and others succeeded.
const EXIT_PARTIAL: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "ferrox-agent",
    version,
    about = "Ferrox agent: inspect hardware, wipe disks, stream OS images onto disks."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Get a DHCP lease on an interface with the ramdisk's own client and print it as JSON
    /// (sets the link up; `--configure` also puts the address and default route on it).
    Dhcp {
        /// The interface.
        #[arg(long)]
        interface: String,
        /// Apply the lease to the interface.
        #[arg(long)]
        configure: bool,
        /// DISCOVER (and REQUEST) attempts; waits double from 250 ms up to 8 s.
        #[arg(long, default_value_t = 6)]
        attempts: u32,
    },
    /// Print this machine's hardware as metal3 HardwareDetails JSON (HardwareData spec.hardware).
    Inspect {
        /// Print Ferrox's full document instead: {"hardware": <metal3>, "ferroxExtra": {...}}.
        #[arg(long)]
        full: bool,
        /// Read /sys, /proc and /dev under this directory instead of / (recorded fixtures).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
    /// DESTROYS DATA: erase disks. metadata: every signature libblkid finds plus the first and
    /// last MiB; full: the fastest real erase each device supports.
    Wipe {
        #[arg(long, value_enum)]
        mode: WipeMode,
        #[command(flatten)]
        safety: Safety,
        #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
        progress: ProgressMode,
        /// Devices to wipe, e.g. /dev/sdb /dev/nvme0n1.
        #[arg(required = true, value_name = "DEVICE")]
        devices: Vec<PathBuf>,
    },
    /// DESTROYS DATA: stream an image from HTTP(S) onto a disk, verifying its checksum on the way.
    WriteImage {
        /// Image URL (http:// or https://). Raw, zstd/gzip/xz-compressed raw, or qcow2, told apart by content.
        #[arg(long)]
        url: String,
        /// ALGO:HEX, ALGO:URL-of-checksum-file, or a bare HEX/URL (sha256, sha512; md5 needs --allow-md5).
        #[arg(long)]
        checksum: String,
        /// Target disk.
        #[arg(
            long,
            required_unless_present = "root_device_hints",
            conflicts_with = "root_device_hints"
        )]
        device: Option<PathBuf>,
        /// metal3 rootDeviceHints as JSON, e.g. '{"serialNumber":"S4EV","minSizeGigabytes":100}'.
        #[arg(long, value_name = "JSON")]
        root_device_hints: Option<String>,
        #[command(flatten)]
        transfer: Transfer,
        #[command(flatten)]
        safety: Safety,
        #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
        progress: ProgressMode,
    },
    /// Stream an image from HTTP(S) and print its checksum as JSON, writing nothing: how this
    /// machine receives and verifies the image before any disk is involved.
    ChecksumImage {
        /// Image URL (http:// or https://).
        #[arg(long)]
        url: String,
        /// sha256, sha512 or md5 (md5 needs --allow-md5).
        #[arg(long, default_value = "sha256")]
        algo: String,
        #[command(flatten)]
        transfer: Transfer,
    },
}

/// How an image is fetched.
#[derive(clap::Args, Debug)]
struct Transfer {
    /// PEM bundle of CA certificates to trust instead of the built-in roots.
    #[arg(long, value_name = "PEM")]
    ca_bundle: Option<PathBuf>,
    /// Accept md5 checksums (weak; refused by default).
    #[arg(long)]
    allow_md5: bool,
    /// Resume attempts after a dropped connection.
    #[arg(long, default_value_t = 5)]
    max_retries: u32,
    /// Seconds without a byte before the connection counts as dropped.
    #[arg(long, default_value_t = 30)]
    stall_timeout: u64,
}

#[derive(clap::Args, Debug)]
struct Safety {
    /// Write removable, virtual or md/dm-held devices too (never mounted or read-only ones).
    #[arg(long)]
    force: bool,
    /// Accept a regular file as the target (testing).
    #[arg(long)]
    allow_file: bool,
}

impl Safety {
    fn policy(&self) -> GuardPolicy {
        GuardPolicy {
            force: self.force,
            allow_regular_file: self.allow_file,
            ..GuardPolicy::default()
        }
    }
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum WipeMode {
    Metadata,
    Full,
}

/// How progress is shown on stderr.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, nothing otherwise.
    Auto,
    Bar,
    /// One JSON object per line (agent-proto `Progress`).
    Json,
    None,
}

fn main() -> ExitCode {
    // As the ramdisk's /init the kernel hands us its unknown command-line words as arguments:
    // PID 1 never parses argv, it reads /proc/cmdline.
    if std::process::id() == 1 {
        agent_ramdisk::boot::pid1();
    }
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            // The chain is printed once, here, at the top.
            eprintln!("ferrox-agent: error: {}", chain(&err));
            ExitCode::FAILURE
        }
    }
}

fn chain(err: &anyhow::Error) -> String {
    err.chain()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(value).context("encoding JSON")?;
    println!("{s}");
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Dhcp {
            interface,
            configure,
            attempts,
        } => {
            let mac = std::fs::read_to_string(format!("/sys/class/net/{interface}/address"))
                .ok()
                .and_then(|m| agent_ramdisk::cmdline::Mac::parse(m.trim()))
                .with_context(|| format!("{interface}: no such Ethernet interface"))?;
            agent_sys::netif::set_up(&interface)
                .with_context(|| format!("setting {interface} up"))?;
            let lease = agent_ramdisk::dhcp::acquire(&interface, mac, attempts)?;
            if configure {
                agent_ramdisk::net::configure(&interface, &lease)?;
            }
            print_json(&lease)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { full, root } => {
            let root = root
                .map(agent_inspect::Root::at)
                .unwrap_or_else(agent_inspect::Root::host);
            let inv = agent_inspect::inspect(&root).context("inspecting the hardware")?;
            if full {
                print_json(&inv)?;
            } else {
                print_json(&inv.hardware)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Wipe {
            mode,
            safety,
            progress,
            devices,
        } => {
            let opts = agent_wipe::WipeOptions {
                mode: match mode {
                    WipeMode::Metadata => agent_wipe::Mode::Metadata,
                    WipeMode::Full => agent_wipe::Mode::Full,
                },
                guard: safety.policy(),
                progress: progress::reporter(progress),
            };
            let reports = agent_wipe::wipe_devices(&devices, &opts);
            progress::finish();
            print_json(&reports)?;
            let failed: Vec<_> = reports.iter().filter(|r| !r.ok).collect();
            for r in &failed {
                eprintln!(
                    "ferrox-agent: wipe of {} failed: {}",
                    r.device.display(),
                    r.error.as_deref().unwrap_or("unknown error")
                );
            }
            Ok(match failed.len() {
                0 => ExitCode::SUCCESS,
                n if n == reports.len() => ExitCode::FAILURE,
                _ => ExitCode::from(EXIT_PARTIAL),
            })
        }
        Command::WriteImage {
            url,
            checksum,
            device,
            root_device_hints,
            transfer,
            safety,
            progress,
        } => {
            let checksum: ChecksumSpec = checksum.parse().context("parsing --checksum")?;
            let device = match (device, root_device_hints) {
                (Some(d), _) => d,
                (None, Some(json)) => device_from_hints(&json)?,
                (None, None) => bail!("give --device or --root-device-hints"),
            };
            let req = WriteRequest {
                url,
                checksum,
                device,
                ca_bundle: transfer.ca_bundle,
                allow_md5: transfer.allow_md5,
                guard: safety.policy(),
                max_retries: transfer.max_retries,
                stall_timeout: Duration::from_secs(transfer.stall_timeout),
                progress: progress::reporter(progress),
            };
            let result = agent_image::write_image(&req);
            progress::finish();
            let report = result
                .with_context(|| format!("writing {} to {}", req.url, req.device.display()))?;
            print_json(&report)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ChecksumImage {
            url,
            algo,
            transfer,
        } => {
            let algo = ChecksumAlgo::from_name(&algo)
                .with_context(|| format!("unknown --algo {algo:?} (sha256, sha512 or md5)"))?;
            let req = ChecksumRequest {
                url,
                algo,
                ca_bundle: transfer.ca_bundle,
                allow_md5: transfer.allow_md5,
                max_retries: transfer.max_retries,
                stall_timeout: Duration::from_secs(transfer.stall_timeout),
            };
            let report = agent_image::checksum_image(&req)
                .with_context(|| format!("checksumming {}", req.url))?;
            print_json(&report)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Resolves metal3 root device hints against this machine's inventory.
fn device_from_hints(json: &str) -> Result<PathBuf> {
    let hints: RootDeviceHints =
        serde_json::from_str(json).context("parsing --root-device-hints")?;
    let inv = agent_inspect::inspect(&agent_inspect::Root::host())
        .context("inspecting disks for root device hints")?;
    let disk = agent_image::hints::select_device(&hints, &inv.hardware.storage)
        .context("applying root device hints")?;
    let name = disk
        .name
        .clone()
        .context("the matching disk has no device name")?;
    // `name` may be a by-path link that only udev would create; open the kernel's node.
    let device = agent_inspect::kernel_device(&inv, &name)
        .with_context(|| format!("no device node for {name}"))?;
    tracing::info!(disk = %name, device = %device.display(), "root device hints selected a disk");
    Ok(device)
}
