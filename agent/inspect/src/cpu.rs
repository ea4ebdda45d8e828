//! CPU facts from /proc/cpuinfo and cpufreq.
//!
//! IPA 13 takes its numbers from `lscpu`: the frequency is "CPU max MHz" (cpufreq's
//! `cpuinfo_max_freq`) and only falls back to "CPU MHz"; metal3 then rounds it. util-linux ≥ 2.37
//! no longer prints "CPU MHz", so IPA reports no frequency at all on VMs without cpufreq; we fall
//! back to cpuinfo's `cpu MHz` instead of reporting nothing.

use std::collections::BTreeSet;

/// What /proc/cpuinfo says, reduced to what inspection needs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CpuInfo {
    pub model_name: Option<String>,
    pub vendor: Option<String>,
    /// `cpu MHz` of the first processor.
    pub mhz: Option<f64>,
    /// `flags` (x86) or `Features` (arm64) of the first processor.
    pub flags: Vec<String>,
    /// Number of `processor` stanzas: logical CPUs online.
    pub logical: u32,
    /// Distinct `physical id`s, when the kernel reports them.
    pub sockets: Option<u32>,
    /// Distinct (`physical id`, `core id`) pairs, when reported.
    pub physical_cores: Option<u32>,
}

/// Parses /proc/cpuinfo (x86 and arm64 layouts).
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    let mut sockets = BTreeSet::new();
    let mut cores = BTreeSet::new();
    let mut phys: Option<String> = None;
    let mut first = true;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            // A new stanza (arm64 may also have a global, non-numeric "processor" line).
            "processor" if value.parse::<u32>().is_ok() => {
                if info.logical > 0 {
                    first = false;
                }
                info.logical += 1;
                phys = None;
            }
            "model name" if first && info.model_name.is_none() && !value.is_empty() => {
                info.model_name = Some(value.to_string());
            }
            "vendor_id" | "CPU implementer" if first && info.vendor.is_none() => {
                info.vendor = Some(value.to_string());
            }
            "cpu MHz" if first && info.mhz.is_none() => info.mhz = value.parse().ok(),
            "flags" | "Features" if first && info.flags.is_empty() => {
                info.flags = value.split_whitespace().map(str::to_string).collect();
            }
            "physical id" => {
                sockets.insert(value.to_string());
                phys = Some(value.to_string());
            }
            "core id" => {
                cores.insert((phys.clone().unwrap_or_default(), value.to_string()));
            }
            _ => {}
        }
    }
    info.sockets = (!sockets.is_empty()).then_some(sockets.len() as u32);
    info.physical_cores = (!cores.is_empty()).then_some(cores.len() as u32);
    info.flags.sort();
    info.flags.dedup();
    info
}

/// cpufreq's `cpuinfo_max_freq` is in kHz.
pub fn max_freq_mhz(khz: u64) -> f64 {
    khz as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_SOCKETS: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz\ncpu MHz\t\t: 1000.123\nphysical id\t: 0\ncore id\t\t: 0\nflags\t\t: sse2 fpu vmx fpu\n\n\
processor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz\ncpu MHz\t\t: 2100.000\nphysical id\t: 0\ncore id\t\t: 0\nflags\t\t: sse2 fpu vmx\n\n\
processor\t: 2\nphysical id\t: 1\ncore id\t\t: 0\n\nprocessor\t: 3\nphysical id\t: 1\ncore id\t\t: 1\n";

    #[test]
    fn x86_two_sockets_with_hyperthreads() {
        let c = parse_cpuinfo(TWO_SOCKETS);
        assert_eq!(c.logical, 4);
        assert_eq!(c.sockets, Some(2));
        // (0,0) twice (a hyperthread pair), (1,0), (1,1).
        assert_eq!(c.physical_cores, Some(3));
        assert_eq!(
            c.model_name.as_deref(),
            Some("Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz")
        );
        assert_eq!(c.vendor.as_deref(), Some("GenuineIntel"));
        assert_eq!(c.mhz, Some(1000.123));
        assert_eq!(c.flags, ["fpu", "sse2", "vmx"]);
    }

    #[test]
    fn arm64_layout() {
        let text = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm\nCPU implementer\t: 0x41\n\nprocessor\t: 1\nFeatures\t: fp asimd evtstrm\n";
        let c = parse_cpuinfo(text);
        assert_eq!(c.logical, 2);
        assert_eq!(c.model_name, None);
        assert_eq!(c.vendor.as_deref(), Some("0x41"));
        assert_eq!(c.flags, ["asimd", "evtstrm", "fp"]);
        assert_eq!(c.sockets, None);
        assert_eq!(c.physical_cores, None);
    }

    #[test]
    fn garbage_is_empty_not_a_panic() {
        let c = parse_cpuinfo("::::\n\0\0\nprocessor: x\n");
        assert_eq!(c.logical, 0);
        assert_eq!(max_freq_mhz(3_400_000), 3400.0);
    }
}
