//! Small, bounded readers for sysfs/procfs attributes. Every read is capped so a surprising
//! file (a huge table, a stuck pseudo-file) can't blow up inspection time or memory.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Attributes and /proc files we read are small; cap at 1 MiB.
pub(crate) const ATTR_LIMIT: u64 = 1 << 20;

/// Reads at most `limit` bytes of a file.
pub(crate) fn read_limited(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}

/// A text attribute, whitespace-trimmed; `None` when missing, unreadable or empty.
pub(crate) fn read_str(path: &Path) -> Option<String> {
    let bytes = read_limited(path, ATTR_LIMIT).ok()?;
    let s = String::from_utf8_lossy(&bytes);
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// A text file, untrimmed (for multi-line /proc files).
pub(crate) fn read_text(path: &Path) -> Option<String> {
    let bytes = read_limited(path, ATTR_LIMIT).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    read_str(path)?.parse().ok()
}

pub(crate) fn read_i64(path: &Path) -> Option<i64> {
    read_str(path)?.parse().ok()
}

/// The last component of a symlink's target (`device/driver` → `ahci`).
pub(crate) fn link_basename(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Sorted names of a directory's entries; empty when it doesn't exist.
pub(crate) fn list_dir(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(path) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort_by(|a, b| natural_cmp(a, b));
    names
}

/// Resolves every symlink of `path` (works for fixture trees whose links are relative).
pub(crate) fn canonical(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// "sda" < "sdb" < "sdaa", "nvme2n1" < "nvme10n1": digits compare as numbers.
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    if a.is_empty() || b.is_empty() {
        return a.cmp(b);
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, sa), (db, sb)) in ca.iter().zip(cb.iter()) {
        let ord = if *da && *db {
            let (ta, tb) = (sa.trim_start_matches('0'), sb.trim_start_matches('0'));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
        } else {
            sa.cmp(sb)
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["sdaa", "sdb", "nvme10n1", "sda", "nvme2n1", "vda"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["nvme2n1", "nvme10n1", "sda", "sdaa", "sdb", "vda"]);
    }

    #[test]
    fn missing_files_are_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_str(&dir.path().join("nope")), None);
        std::fs::write(dir.path().join("blank"), " \n").unwrap();
        assert_eq!(read_str(&dir.path().join("blank")), None);
        std::fs::write(dir.path().join("n"), "42\n").unwrap();
        assert_eq!(read_u64(&dir.path().join("n")), Some(42));
        assert!(list_dir(&dir.path().join("nope")).is_empty());
    }
}
