//! Memory size.
//!
//! IPA 13 reports `physical_mb` from `lshw`, and metal3 copies it into `ramMebibytes`. lshw sums
//! the SMBIOS memory devices (type 17); without SMBIOS it counts the online memory blocks in
//! /sys/devices/system/memory (when that is more than the kernel's usable total), else uses the
//! kernel total. We follow the same order, so a VM without SMBIOS reports what IPA reports
//! (e.g. 24576 MiB on a 24 GiB guest whose MemTotal is 23.5 GiB).

use std::path::Path;

use crate::fsread;

/// `MemTotal` from /proc/meminfo, in bytes.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("MemTotal:") {
            let mut it = rest.split_whitespace();
            let n: u64 = it.next()?.parse().ok()?;
            return match it.next() {
                Some("kB") | None => n.checked_mul(1024),
                _ => None,
            };
        }
    }
    None
}

/// Online memory blocks × block size (what lshw calls the hotplug size), in bytes.
pub fn hotplug_bytes(memory_dir: &Path) -> Option<u64> {
    let block = fsread::read_str(&memory_dir.join("block_size_bytes"))?;
    let block = u64::from_str_radix(block.trim_start_matches("0x"), 16).ok()?;
    let mut online = 0u64;
    for name in fsread::list_dir(memory_dir) {
        let is_block = name.len() > 6
            && name.starts_with("memory")
            && name[6..].chars().all(|c| c.is_ascii_digit());
        if is_block
            && fsread::read_str(&memory_dir.join(&name).join("online")).as_deref() == Some("1")
        {
            online += 1;
        }
    }
    (online > 0).then(|| online * block)
}

/// The size metal3 reports, lshw's way: SMBIOS sum, else hotplug blocks when larger than the
/// kernel total, else the kernel total. In bytes.
pub fn physical_bytes(
    smbios: Option<u64>,
    hotplug: Option<u64>,
    kernel: Option<u64>,
) -> Option<u64> {
    if let Some(s) = smbios.filter(|&s| s > 0) {
        return Some(s);
    }
    match (hotplug, kernel) {
        (Some(h), Some(k)) if h > k => Some(h),
        (Some(h), None) => Some(h),
        (_, k) => k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let t = "MemTotal:       24684084 kB\nMemFree:        23204744 kB\n";
        assert_eq!(parse_meminfo_total(t), Some(24684084 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn hotplug_counts_online_blocks() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("block_size_bytes"), "8000000\n").unwrap();
        for (i, on) in [(0, "1"), (1, "1"), (2, "0")] {
            let m = d.path().join(format!("memory{i}"));
            std::fs::create_dir(&m).unwrap();
            std::fs::write(m.join("online"), on).unwrap();
        }
        std::fs::create_dir(d.path().join("memory_tiers")).unwrap();
        assert_eq!(hotplug_bytes(d.path()), Some(2 * 0x800_0000));
    }

    #[test]
    fn lshw_order() {
        let gib = 1u64 << 30;
        assert_eq!(
            physical_bytes(Some(32 * gib), Some(24 * gib), Some(23 * gib)),
            Some(32 * gib)
        );
        assert_eq!(
            physical_bytes(Some(0), Some(24 * gib), Some(23 * gib)),
            Some(24 * gib)
        );
        assert_eq!(
            physical_bytes(None, Some(gib), Some(2 * gib)),
            Some(2 * gib)
        );
        assert_eq!(physical_bytes(None, None, None), None);
    }
}
