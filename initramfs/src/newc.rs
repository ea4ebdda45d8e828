//! An in-memory file tree written out as a reproducible "newc" cpio archive, the format the
//! kernel unpacks into its initial rootfs (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Reproducibility is the point of owning this writer rather than piping `find | cpio`: entries
//! are written sorted by path (parents always before children), inode numbers are assigned in
//! that order starting at 1, owner is root, every mtime is the one given, and nothing of the
//! building machine (device numbers, link counts of the source files, umask) leaks in.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// `S_IFMT` file type bits, from `include/uapi/linux/stat.h`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Errors building the tree; writing only fails with the writer's `io::Error`.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("invalid archive path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("archive path {path:?} is already a {existing}, cannot add a {new} there")]
    Conflict {
        path: String,
        existing: &'static str,
        new: &'static str,
    },
}

/// One node of the tree. Permissions only (no file type bits) in `mode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDevice { mode: u32, major: u32, minor: u32 },
}

impl Entry {
    fn kind(&self) -> &'static str {
        match self {
            Entry::Dir { .. } => "directory",
            Entry::File { .. } => "file",
            Entry::Symlink { .. } => "symlink",
            Entry::CharDevice { .. } => "character device",
        }
    }

    fn full_mode(&self) -> u32 {
        match self {
            Entry::Dir { mode } => S_IFDIR | (mode & 0o7777),
            Entry::File { mode, .. } => S_IFREG | (mode & 0o7777),
            Entry::Symlink { .. } => S_IFLNK | 0o777,
            Entry::CharDevice { mode, .. } => S_IFCHR | (mode & 0o7777),
        }
    }

    fn body(&self) -> &[u8] {
        match self {
            Entry::File { data, .. } => data,
            Entry::Symlink { target } => target.as_bytes(),
            _ => &[],
        }
    }
}

/// A file tree keyed by relative path (`"lib/modules/6.1.0/modules.dep"`; a leading `/` is
/// accepted and dropped). Missing parent directories are created with mode 0755.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (and its parents). Adding an existing directory again is a no-op.
    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<(), ArchiveError> {
        self.insert(path, Entry::Dir { mode })
    }

    /// Adds a regular file. Adding the same path twice with identical content and mode is a
    /// no-op; anything else at that path is a conflict.
    pub fn add_file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<(), ArchiveError> {
        self.insert(path, Entry::File { mode, data })
    }

    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), ArchiveError> {
        self.insert(
            path,
            Entry::Symlink {
                target: target.to_owned(),
            },
        )
    }

    /// Adds a character device node. No privileges are needed: the node is only described in
    /// the archive and the kernel creates it when it unpacks the rootfs.
    pub fn add_char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), ArchiveError> {
        self.insert(path, Entry::CharDevice { mode, major, minor })
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        normalize(path).ok().and_then(|p| self.entries.get(&p))
    }

    /// Paths in archive order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, path: &str, entry: Entry) -> Result<(), ArchiveError> {
        let path = normalize(path)?;
        // Parents first, so a file can never be created under a non-directory.
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            match self.entries.get(parent) {
                Some(Entry::Dir { .. }) => {}
                Some(other) => {
                    return Err(ArchiveError::Conflict {
                        path: parent.to_owned(),
                        existing: other.kind(),
                        new: "directory",
                    })
                }
                None => {
                    self.entries
                        .insert(parent.to_owned(), Entry::Dir { mode: 0o755 });
                }
            }
            end += i + 1;
        }
        match self.entries.get(&path) {
            None => {
                self.entries.insert(path, entry);
                Ok(())
            }
            // Re-adding a directory keeps the first mode; parents made implicitly get the
            // explicit mode when it comes later.
            Some(Entry::Dir { .. }) if matches!(entry, Entry::Dir { .. }) => {
                self.entries.insert(path, entry);
                Ok(())
            }
            Some(existing) if *existing == entry => Ok(()),
            Some(existing) => Err(ArchiveError::Conflict {
                path,
                existing: existing.kind(),
                new: entry.kind(),
            }),
        }
    }

    /// Writes the archive, trailer included, and returns the number of bytes written. Every
    /// entry gets `mtime`; inode numbers are 1.. in path order.
    pub fn write_to<W: Write>(&self, out: W, mtime: u32) -> io::Result<u64> {
        let mut out = CountingWriter { inner: out, n: 0 };
        for (i, (path, entry)) in self.entries.iter().enumerate() {
            let ino = u32::try_from(i + 1).map_err(|_| io::Error::other("too many entries"))?;
            let (rmaj, rmin) = match entry {
                Entry::CharDevice { major, minor, .. } => (*major, *minor),
                _ => (0, 0),
            };
            let nlink = if matches!(entry, Entry::Dir { .. }) {
                2
            } else {
                1
            };
            let header = Header {
                ino,
                mode: entry.full_mode(),
                nlink,
                mtime,
                rdevmajor: rmaj,
                rdevminor: rmin,
            };
            write_entry(&mut out, &header, path, entry.body())?;
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            rdevmajor: 0,
            rdevminor: 0,
        };
        write_entry(&mut out, &trailer, "TRAILER!!!", &[])?;
        out.flush()?;
        Ok(out.n)
    }

    /// The archive as bytes.
    pub fn to_bytes(&self, mtime: u32) -> Vec<u8> {
        let mut v = Vec::new();
        // Writing to a Vec cannot fail.
        self.write_to(&mut v, mtime).expect("writing to a Vec");
        v
    }
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    rdevmajor: u32,
    rdevminor: u32,
}

fn write_entry<W: Write>(
    out: &mut CountingWriter<W>,
    h: &Header,
    name: &str,
    body: &[u8],
) -> io::Result<()> {
    let filesize =
        u32::try_from(body.len()).map_err(|_| io::Error::other(format!("{name}: over 4 GiB")))?;
    let namesize = name.len() + 1;
    // c_magic, then 13 fields of 8 hex digits: ino mode uid gid nlink mtime filesize
    // devmajor devminor rdevmajor rdevminor namesize check.
    let header = format!(
        "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        h.ino,
        h.mode,
        0,
        0,
        h.nlink,
        h.mtime,
        filesize,
        0,
        0,
        h.rdevmajor,
        h.rdevminor,
        namesize,
        0
    );
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.pad4()?;
    out.write_all(body)?;
    out.pad4()
}

struct CountingWriter<W> {
    inner: W,
    n: u64,
}

impl<W: Write> CountingWriter<W> {
    fn pad4(&mut self) -> io::Result<()> {
        let pad = ((4 - self.n % 4) % 4) as usize;
        self.write_all(&[0u8; 3][..pad])
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn normalize(path: &str) -> Result<String, ArchiveError> {
    let invalid = |reason| ArchiveError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    let p = path.trim_start_matches('/');
    if p.is_empty() {
        return Err(invalid("empty"));
    }
    if p.contains('\0') {
        return Err(invalid("contains NUL"));
    }
    if p == "TRAILER!!!" {
        return Err(invalid("reserved name"));
    }
    for c in p.split('/') {
        match c {
            "" => return Err(invalid("empty component or trailing slash")),
            "." | ".." => return Err(invalid("'.' or '..' component")),
            _ => {}
        }
    }
    Ok(p.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use std::process::{Command, Stdio};

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.add_file("/init", 0o755, b"#!not really\n".to_vec())
            .unwrap();
        a.add_dir("proc", 0o555).unwrap();
        a.add_dir("tmp", 0o1777).unwrap();
        a.add_file("lib/modules/6.1.0/modules.dep", 0o644, b"x.ko:\n".to_vec())
            .unwrap();
        a.add_file("lib/empty", 0o600, Vec::new()).unwrap();
        a.add_symlink("bin", "lib").unwrap();
        a.add_char_device("dev/console", 0o600, 5, 1).unwrap();
        a
    }

    /// A minimal newc reader: (name, mode, ino, mtime, uid, body) per entry, trailer excluded.
    fn parse(mut b: &[u8]) -> Vec<(String, u32, u32, u32, u32, Vec<u8>)> {
        let total = b.len();
        let mut out = Vec::new();
        loop {
            let off = total - b.len();
            assert_eq!(off % 4, 0, "entry not 4-aligned");
            assert_eq!(&b[..6], b"070701");
            let f = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (ino, mode, uid, mtime, size, namesize) = (f(0), f(1), f(2), f(5), f(6), f(11));
            let name_end = 110 + namesize as usize;
            let name = std::str::from_utf8(&b[110..name_end - 1])
                .unwrap()
                .to_owned();
            let data_start = (name_end + 3) & !3;
            let data_end = data_start + size as usize;
            let body = b[data_start..data_end].to_vec();
            b = &b[(data_end + 3) & !3..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty(), "bytes after the trailer");
                return out;
            }
            out.push((name, mode, ino, mtime, uid, body));
        }
    }

    #[test]
    fn entries_sorted_parents_first_with_sequential_inodes() {
        let entries = parse(&sample().to_bytes(1234));
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/empty",
                "lib/modules",
                "lib/modules/6.1.0",
                "lib/modules/6.1.0/modules.dep",
                "proc",
                "tmp"
            ]
        );
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.2 as usize, i + 1, "inode of {}", e.0);
            assert_eq!(e.3, 1234, "mtime of {}", e.0);
            assert_eq!(e.4, 0, "uid of {}", e.0);
        }
        let tmp = entries.iter().find(|e| e.0 == "tmp").unwrap();
        assert_eq!(tmp.1, 0o041_777);
        let bin = entries.iter().find(|e| e.0 == "bin").unwrap();
        assert_eq!((bin.1, bin.5.as_slice()), (0o120_777, &b"lib"[..]));
    }

    #[test]
    fn same_tree_same_bytes_whatever_the_insertion_order() {
        let mut b = Archive::new();
        b.add_char_device("dev/console", 0o600, 5, 1).unwrap();
        b.add_symlink("bin", "lib").unwrap();
        b.add_file("lib/empty", 0o600, Vec::new()).unwrap();
        b.add_file("lib/modules/6.1.0/modules.dep", 0o644, b"x.ko:\n".to_vec())
            .unwrap();
        b.add_dir("tmp", 0o1777).unwrap();
        b.add_dir("proc", 0o555).unwrap();
        b.add_file("init", 0o755, b"#!not really\n".to_vec())
            .unwrap();
        assert_eq!(sample().to_bytes(7), b.to_bytes(7));
        assert_ne!(sample().to_bytes(7), b.to_bytes(8));
    }

    #[test]
    fn rejects_bad_paths_and_conflicts() {
        let mut a = Archive::new();
        for bad in ["", "/", "a//b", "a/../b", "./a", "a/", "TRAILER!!!", "a\0b"] {
            assert!(
                matches!(a.add_dir(bad, 0o755), Err(ArchiveError::InvalidPath { .. })),
                "{bad:?} accepted"
            );
        }
        a.add_file("etc/x", 0o644, b"1".to_vec()).unwrap();
        a.add_file("etc/x", 0o644, b"1".to_vec()).unwrap();
        assert!(matches!(
            a.add_file("etc/x", 0o644, b"2".to_vec()),
            Err(ArchiveError::Conflict { .. })
        ));
        assert!(matches!(
            a.add_dir("etc/x/y", 0o755),
            Err(ArchiveError::Conflict { .. })
        ));
        assert!(matches!(
            a.add_file("etc", 0o644, Vec::new()),
            Err(ArchiveError::Conflict { .. })
        ));
    }

    fn run(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {cmd:?} (hack/deps.sh installs it): {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// GNU cpio (Debian's `cpio` package) is the reference reader: it must list and extract
    /// exactly what was put in, through a real `zstd -d`.
    #[test]
    fn gnu_cpio_reads_it_back_through_zstd() {
        let mut a = sample();
        // A file whose size is not a multiple of 4, and a bigger one, to exercise padding.
        a.add_file("data/odd", 0o644, b"abcde".to_vec()).unwrap();
        let big: Vec<u8> = (0..100_003u32).map(|i| (i * 7 % 251) as u8).collect();
        a.add_file("data/big", 0o640, big.clone()).unwrap();
        let compressed = zstd::encode_all(&a.to_bytes(0)[..], 3).unwrap();

        let raw = run(Command::new("zstd").args(["-d", "-c", "-q"]), &compressed);
        assert_eq!(raw, a.to_bytes(0));

        let listing = run(Command::new("cpio").args(["-t", "--quiet"]), &raw);
        let listed: Vec<_> = String::from_utf8(listing)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let expected: Vec<_> = a.paths().map(str::to_owned).collect();
        assert_eq!(listed, expected);

        // Extract everything but the device node (mknod needs root; cpio -t covered it).
        let dir = tempfile::tempdir().unwrap();
        let mut without_dev = a.clone();
        without_dev.entries.remove("dev/console");
        run(
            Command::new("cpio")
                .args([
                    "-i",
                    "--quiet",
                    "--make-directories",
                    "--preserve-modification-time",
                ])
                .current_dir(dir.path()),
            &without_dev.to_bytes(0),
        );
        let d = dir.path();
        assert_eq!(std::fs::read(d.join("data/big")).unwrap(), big);
        assert_eq!(std::fs::read(d.join("data/odd")).unwrap(), b"abcde");
        assert_eq!(std::fs::read(d.join("lib/empty")).unwrap(), b"");
        assert_eq!(
            std::fs::read_link(d.join("bin")).unwrap().to_str(),
            Some("lib")
        );
        let init = std::fs::metadata(d.join("init")).unwrap();
        assert_eq!(init.permissions().mode() & 0o7777, 0o755);
        assert_eq!(init.mtime(), 0);
        let tmp = std::fs::metadata(d.join("tmp")).unwrap();
        assert!(tmp.is_dir());
        assert_eq!(
            std::fs::metadata(d.join("data/big"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o640
        );

        // The device entry itself, as cpio describes it.
        let verbose = run(Command::new("cpio").args(["-t", "-v", "--quiet"]), &raw);
        let verbose = String::from_utf8(verbose).unwrap();
        let console = verbose
            .lines()
            .find(|l| l.ends_with(" dev/console"))
            .unwrap();
        assert!(console.starts_with("crw-------"), "{console}");
        assert!(console.contains("5,"), "{console}");
        assert!(
            !d.join("dev/console").exists()
                || d.join("dev/console")
                    .metadata()
                    .unwrap()
                    .file_type()
                    .is_char_device()
        );
    }
}
