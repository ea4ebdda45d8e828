//! Hardware inspection: reads /sys, /proc and the SMBIOS table under an injectable [`Root`] and
//! produces metal3's `HardwareDetails` plus Ferrox's extras ([`agent_proto::FullInventory`]).
//!
//! Never shells out (no lshw, dmidecode, lsblk, udevadm: the ramdisk has none of them and no
//! udev). Each fact is optional: a missing file makes a field `None`, never an error. Only a
//! missing /proc/cpuinfo — which means `root` isn't a Linux root at all — fails.
//!
//! The output mirrors what metal3 shows for a host inspected by IPA 13 (baremetal-operator's
//! conversion applied: frequency rounded, flags sorted, one NIC entry per address family,
//! by-path disk names); see each module for the IPA behaviour it follows.

use std::path::{Path, PathBuf};

use agent_proto::{
    Bios, BootInfo, BootMode, Cpu, CpuExtra, Extra, Firmware, FullInventory, HardwareDetails,
    HardwareSystemVendor, MemoryExtra, SystemExtra,
};

pub mod bypath;
pub mod cmdline;
pub mod cpu;
mod disks;
mod fsread;
pub mod memory;
pub mod nics;
pub mod smbios;
pub mod vpd;

#[cfg(test)]
mod fixture_tests;

/// Where the kernel's pseudo-filesystems are: the live host, or a recorded fixture tree.
#[derive(Debug, Clone)]
pub struct Root {
    sys: PathBuf,
    proc_: PathBuf,
    dev: PathBuf,
    /// Live host: ioctls (permanent MAC) are allowed; `std::env::consts::ARCH` may stand in
    /// for /proc/sys/kernel/arch.
    live: bool,
}

impl Root {
    /// The running system (`/sys`, `/proc`, `/dev`).
    pub fn host() -> Self {
        Root {
            sys: "/sys".into(),
            proc_: "/proc".into(),
            dev: "/dev".into(),
            live: true,
        }
    }

    /// A fixture tree: `dir/sys`, `dir/proc`, `dir/dev`. Nothing outside it is read and no
    /// ioctl is issued.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Root {
            sys: dir.join("sys"),
            proc_: dir.join("proc"),
            dev: dir.join("dev"),
            live: false,
        }
    }

    pub fn sys(&self) -> &Path {
        &self.sys
    }

    pub fn proc(&self) -> &Path {
        &self.proc_
    }
}

/// Why inspection produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// /proc/cpuinfo is the one file every Linux has; without it `root` is not a Linux root.
    #[error("reading {path}")]
    CpuInfo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The EFI global variable GUID (UEFI spec, EFI_GLOBAL_VARIABLE).
const EFI_GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// Boot mode and Secure Boot state. efivarfs files are 4 attribute bytes, then the value.
fn boot_info(sys: &Path) -> BootInfo {
    let efi = sys.join("firmware/efi");
    if !efi.is_dir() {
        return BootInfo {
            mode: Some(BootMode::Bios),
            ..BootInfo::default()
        };
    }
    let var = efi.join("efivars").join(format!("SecureBoot-{EFI_GLOBAL}"));
    let secure_boot = fsread::read_limited(&var, 64)
        .ok()
        .and_then(|b| b.get(4).map(|&v| v == 1));
    BootInfo {
        mode: Some(BootMode::Uefi),
        secure_boot,
        ..BootInfo::default()
    }
}

/// Permanent MAC through the ETHTOOL_GPERMADDR ioctl (live hosts only).
fn live_perm_addr(name: &str) -> Option<String> {
    agent_sys::net::permanent_mac(name).ok().flatten()
}

/// Inspects the machine under `root`.
pub fn inspect(root: &Root) -> Result<FullInventory, InspectError> {
    let cpuinfo_path = root.proc_.join("cpuinfo");
    let cpuinfo =
        fsread::read_limited(&cpuinfo_path, fsread::ATTR_LIMIT * 4).map_err(|source| {
            InspectError::CpuInfo {
                path: cpuinfo_path.clone(),
                source,
            }
        })?;
    let ci = cpu::parse_cpuinfo(&String::from_utf8_lossy(&cpuinfo));

    // CPU.
    let arch = fsread::read_str(&root.proc_.join("sys/kernel/arch"))
        .or_else(|| root.live.then(|| std::env::consts::ARCH.to_string()));
    let max_khz = fsread::read_u64(
        &root
            .sys
            .join("devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"),
    );
    let mhz = max_khz
        .map(cpu::max_freq_mhz)
        .or(ci.mhz)
        .map(f64::round)
        .filter(|m| *m > 0.0);
    let hw_cpu = Cpu {
        arch,
        model: ci.model_name.clone(),
        clock_megahertz: mhz,
        flags: ci.flags.clone(),
        count: (ci.logical > 0).then_some(i64::from(ci.logical)),
    };
    let cpu_extra = CpuExtra {
        logical: ci.logical,
        physical_cores: ci.physical_cores,
        sockets: ci.sockets,
        vendor: ci.vendor.clone(),
    };

    // SMBIOS and memory.
    let sm = smbios::read(&root.sys);
    match &sm {
        Some(s) => tracing::debug!(source = s.source, "SMBIOS read"),
        None => tracing::debug!("no SMBIOS table or dmi/id: vendor and firmware facts unknown"),
    }
    let kernel_total = fsread::read_text(&root.proc_.join("meminfo"))
        .and_then(|t| memory::parse_meminfo_total(&t));
    let smbios_mem = sm.as_ref().and_then(|s| s.memory_bytes);
    // Counting memory blocks reads one file per block (thousands on big hosts): only when
    // SMBIOS has no answer.
    let hotplug = if smbios_mem.is_some_and(|m| m > 0) {
        None
    } else {
        memory::hotplug_bytes(&root.sys.join("devices/system/memory"))
    };
    let physical = memory::physical_bytes(smbios_mem, hotplug, kernel_total);

    // Disks, NICs, boot.
    let (storage, disk_extra) = disks::scan(root);
    let live = root.live.then(|| nics::Live {
        perm_addr: &live_perm_addr,
        ipv4: agent_sys::net::ipv4_addresses().ok(),
    });
    let ifaces = nics::scan(root, live.as_ref());
    let params = fsread::read_text(&root.proc_.join("cmdline"))
        .map(|c| cmdline::parse(&c))
        .unwrap_or_default();
    let pxe_mac = cmdline::get(&params, "BOOTIF").and_then(cmdline::parse_bootif);
    let mut boot = boot_info(&root.sys);
    boot.pxe_interface = pxe_mac.as_deref().and_then(|m| {
        let reported = |i: &&nics::Interface| {
            i.extra
                .permanent_mac
                .as_deref()
                .or(i.extra.current_mac.as_deref())
                == Some(m)
        };
        ifaces.iter().find(reported).map(|i| i.extra.name.clone())
    });
    boot.pxe_mac = pxe_mac.clone();
    let nics_out = ifaces
        .iter()
        .flat_map(|i| nics::to_metal3(i, pxe_mac.as_deref()))
        .collect();

    let sm = sm.unwrap_or_default();
    let hardware = HardwareDetails {
        system_vendor: Some(HardwareSystemVendor {
            manufacturer: sm.manufacturer.clone(),
            product_name: sm.product_name.clone(),
            serial_number: sm.serial_number.clone(),
        }),
        firmware: Some(Firmware {
            bios: Some(Bios {
                date: sm.bios_date.clone(),
                vendor: sm.bios_vendor.clone(),
                version: sm.bios_version.clone(),
            }),
        }),
        ram_mebibytes: physical.map(|b| (b >> 20) as i64),
        nics: nics_out,
        storage,
        cpu: Some(hw_cpu),
        hostname: fsread::read_str(&root.proc_.join("sys/kernel/hostname")),
    };
    let system = (!sm.source.is_empty()).then(|| SystemExtra {
        uuid: sm.uuid.clone(),
        family: sm.family.clone(),
        sku: sm.sku.clone(),
        version: sm.version.clone(),
        smbios_source: Some(sm.source.to_string()),
    });
    let extra = Extra {
        boot,
        system,
        cpu: Some(cpu_extra),
        memory: kernel_total.map(|k| MemoryExtra {
            kernel_total_bytes: k,
            physical_bytes: smbios_mem,
        }),
        disks: disk_extra,
        nics: ifaces.into_iter().map(|i| i.extra).collect(),
    };
    Ok(FullInventory {
        hardware,
        ferrox_extra: extra,
    })
}

/// The kernel device node (`/dev/sda`) for a disk reported by [`inspect`], given any of its
/// names (`name` may be a synthesized /dev/disk/by-path link that doesn't exist in the
/// ramdisk, since there is no udev there).
pub fn kernel_device(inv: &FullInventory, name: &str) -> Option<PathBuf> {
    inv.hardware
        .storage
        .iter()
        .zip(&inv.ferrox_extra.disks)
        .find(|(s, _)| {
            s.name.as_deref() == Some(name) || s.alternate_names.iter().any(|a| a == name)
        })
        .map(|(_, e)| PathBuf::from(format!("/dev/{}", e.kname)))
}
