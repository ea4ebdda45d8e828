//! Coldplug: load the modules for the hardware that is there, as udev would at boot, without
//! udev. Every device under `/sys/devices` with a `modalias` file is matched against
//! `modules.alias` (shell-glob patterns, like modprobe), the matches are expanded with their
//! dependencies from `modules.dep`, and loaded dependencies first with `finit_module`. Loading
//! a bus driver (virtio_pci) makes new devices appear, so rounds repeat until nothing new loads.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// The module database of one kernel: `modules.alias` and `modules.dep` under
/// `/lib/modules/<version>/`.
#[derive(Debug, Default)]
pub struct ModuleDb {
    /// (pattern, module name), in file order.
    aliases: Vec<(String, String)>,
    /// module name → (path relative to the module dir, dependency paths).
    deps: HashMap<String, (String, Vec<String>)>,
}

/// The name modprobe uses for a module file: basename without `.ko*`, `-` as `_`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

impl ModuleDb {
    /// Parses the two files' text. Malformed lines are skipped.
    pub fn parse(alias: &str, dep: &str) -> Self {
        let aliases = alias
            .lines()
            .filter_map(|l| {
                let mut w = l.split_ascii_whitespace();
                (w.next()? == "alias").then_some(())?;
                Some((w.next()?.to_string(), w.next()?.replace('-', "_")))
            })
            .collect();
        let deps = dep
            .lines()
            .filter_map(|l| {
                let (path, rest) = l.split_once(':')?;
                let path = path.trim();
                let d = rest.split_ascii_whitespace().map(str::to_string).collect();
                Some((module_name(path), (path.to_string(), d)))
            })
            .collect();
        Self { aliases, deps }
    }

    /// Reads the database from `dir` (`/lib/modules/<version>`).
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let alias = std::fs::read_to_string(dir.join("modules.alias"))?;
        let dep = std::fs::read_to_string(dir.join("modules.dep"))?;
        Ok(Self::parse(&alias, &dep))
    }

    /// The modules whose alias patterns match `modalias` (module names, deduplicated).
    pub fn matching(&self, modalias: &str) -> BTreeSet<String> {
        self.aliases
            .iter()
            .filter(|(pat, _)| glob_match(pat.as_bytes(), modalias.as_bytes()))
            .map(|(_, m)| m.clone())
            .filter(|m| self.deps.contains_key(m))
            .collect()
    }

    /// The dependencies (module files, the full closure) of the module file `rel`.
    pub fn deps_of(&self, rel: &str) -> &[String] {
        self.deps
            .get(&module_name(rel))
            .map(|(_, d)| d.as_slice())
            .unwrap_or_default()
    }

    /// The module files to load for `names`, each dependency before its users, no file twice.
    pub fn load_order<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for n in names {
            let Some((path, deps)) = self.deps.get(&n.replace('-', "_")) else {
                continue;
            };
            // modules.dep lists the full closure; the last entries are the deepest, so
            // loading them in reverse puts every dependency before its users.
            for p in deps.iter().rev().chain(std::iter::once(path)) {
                if seen.insert(p.clone()) {
                    out.push(p.clone());
                }
            }
        }
        out
    }
}

/// Shell-style glob matching as modprobe does it for aliases: `*`, `?` and `[...]` classes
/// (with `!`/`^` negation and ranges).
pub fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(&pat[p..], s[i]) {
                        if matched {
                            p += next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class at the start of `pat` (`[...]`); returns (matched, length of
/// the class), or None when the class is not closed.
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut j = 1;
    let negate = matches!(pat.get(j), Some(b'!') | Some(b'^'));
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    while j < pat.len() {
        if pat[j] == b']' && !first {
            return Some((matched != negate, j + 1));
        }
        first = false;
        if j + 2 < pat.len() && pat[j + 1] == b'-' && pat[j + 2] != b']' {
            if pat[j] <= c && c <= pat[j + 2] {
                matched = true;
            }
            j += 3;
        } else {
            if pat[j] == c {
                matched = true;
            }
            j += 1;
        }
    }
    None
}

/// Every `modalias` under `sys_devices` (`/sys/devices`), deduplicated. Symlinks are not
/// followed, so each device is seen once.
pub fn modaliases(sys_devices: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![sys_devices.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && e.file_name() == "modalias" {
                if let Ok(s) = std::fs::read_to_string(e.path()) {
                    let s = s.trim();
                    if !s.is_empty() {
                        out.insert(s.to_string());
                    }
                }
            }
        }
    }
    out
}

/// What one coldplug did.
#[derive(Debug, Default, serde::Serialize)]
pub struct ColdplugReport {
    /// Modules loaded, in order.
    pub loaded: Vec<String>,
    /// Modules that failed: (module, error).
    pub failed: Vec<(String, String)>,
    /// Rounds run (a round loads what the devices present then asked for).
    pub rounds: u32,
}

/// Loads the modules for every device present, plus `always` (e.g. `8021q` for a VLAN), in
/// rounds until nothing new loads. `load` is the loader (finit_module in the ramdisk).
///
/// Within a round, modules load in waves, a thread per module: each wave holds the modules
/// whose dependencies have all loaded, so the drivers' probes (which wait on hardware: resets,
/// link training, controller start-up) overlap, as udev's parallel loading does. A module
/// whose dependency failed is not tried; the report names the dependency.
pub fn coldplug(
    db: &ModuleDb,
    module_dir: &Path,
    sys_devices: &Path,
    always: &[&str],
    load: impl Fn(&Path) -> std::io::Result<()> + Sync,
) -> ColdplugReport {
    let mut report = ColdplugReport::default();
    let mut tried: BTreeSet<String> = BTreeSet::new();
    let mut failed: BTreeSet<String> = BTreeSet::new();
    for round in 0..8 {
        let mut wanted: BTreeSet<String> = always.iter().map(|s| s.replace('-', "_")).collect();
        for alias in modaliases(sys_devices) {
            wanted.extend(db.matching(&alias));
        }
        let order: Vec<String> = db
            .load_order(wanted.iter().map(String::as_str))
            .into_iter()
            .filter(|p| !tried.contains(p))
            .collect();
        report.rounds = round + 1;
        if order.is_empty() {
            break;
        }
        tried.extend(order.iter().cloned());
        for (rel, r) in load_all(db, module_dir, &order, &failed, &load) {
            match r {
                Ok(()) => report.loaded.push(module_name(&rel)),
                Err(e) => {
                    failed.insert(rel.clone());
                    report.failed.push((module_name(&rel), e));
                }
            }
        }
    }
    report
}

/// Loads `order` (module files, dependencies first), a thread per module, each started as
/// soon as its own dependencies in `order` have loaded (the others loaded in an earlier round),
/// not after unrelated modules: a slow probe (virtio_pci's, ~350 ms under TCG) does not hold
/// back the NVMe driver's chain. A module whose dependency failed now or `before` is not tried.
/// Results in completion order.
fn load_all(
    db: &ModuleDb,
    module_dir: &Path,
    order: &[String],
    before: &BTreeSet<String>,
    load: &(impl Fn(&Path) -> std::io::Result<()> + Sync),
) -> Vec<(String, Result<(), String>)> {
    let index: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, r)| (r.as_str(), i))
        .collect();
    let mut outcome: Vec<Option<bool>> = vec![None; order.len()];
    let mut started = vec![false; order.len()];
    let mut out = Vec::new();
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<(), String>)>();
        let mut running = 0usize;
        loop {
            // Start (or give up on) everything whose dependencies are settled; a give-up can
            // settle others, so look again until nothing changes.
            let mut changed = true;
            while changed {
                changed = false;
                for (i, rel) in order.iter().enumerate() {
                    if started[i] {
                        continue;
                    }
                    let deps = db.deps_of(rel);
                    let broken = deps.iter().find(|d| {
                        before.contains(*d)
                            || index
                                .get(d.as_str())
                                .is_some_and(|&j| outcome[j] == Some(false))
                    });
                    if let Some(d) = broken {
                        started[i] = true;
                        outcome[i] = Some(false);
                        changed = true;
                        let why = format!("not loaded: it needs {}, which failed", module_name(d));
                        out.push((rel.clone(), Err(why)));
                        continue;
                    }
                    let ready = deps.iter().all(|d| {
                        index
                            .get(d.as_str())
                            .is_none_or(|&j| outcome[j] == Some(true))
                    });
                    if ready {
                        started[i] = true;
                        running += 1;
                        let tx = tx.clone();
                        let path = module_dir.join(rel);
                        s.spawn(move || {
                            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                load(&path)
                            }));
                            let r = match r {
                                Ok(r) => r.map_err(|e| e.to_string()),
                                Err(_) => Err("the loader panicked".to_string()),
                            };
                            let _ = tx.send((i, r));
                        });
                    }
                }
            }
            if running == 0 {
                break;
            }
            let Ok((i, r)) = rx.recv() else { break };
            running -= 1;
            outcome[i] = Some(r.is_ok());
            out.push((order[i].clone(), r));
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_as_modprobe_matches_them() {
        let cases: &[(&str, &str, bool)] = &[
            (
                "pci:v00008086d0000100Esv*sd*bc*sc*i*",
                "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
                true,
            ),
            (
                "pci:v00008086d0000100Esv*sd*bc*sc*i*",
                "pci:v00008086d0000100Fsv00001AF4sd00001100bc02sc00i00",
                false,
            ),
            ("virtio:d00000001v*", "virtio:d00000001v00001AF4", true),
            ("virtio:d00000001v*", "virtio:d00000002v00001AF4", false),
            ("scsi:t-0x00*", "scsi:t-0x00", true),
            ("scsi:t-0x0[07]*", "scsi:t-0x07", true),
            ("scsi:t-0x0[!07]*", "scsi:t-0x07", false),
            (
                "pci:v*d*sv*sd*bc01sc08i02*",
                "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02",
                true,
            ),
            ("acpi*:PNP0A0[38]:*", "acpi:PNP0A08:", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*", "", true),
            ("", "x", false),
            ("[", "[", true),
            ("x[a-c]y", "xby", true),
            ("x[a-c]y", "xdy", false),
        ];
        for (pat, s, want) in cases {
            assert_eq!(
                glob_match(pat.as_bytes(), s.as_bytes()),
                *want,
                "{pat} vs {s}"
            );
        }
    }

    fn db() -> ModuleDb {
        ModuleDb::parse(
            "# Aliases extracted from modules themselves.\n\
             alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci\n\
             alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
             alias virtio:d00000001v* virtio_net\n\
             alias virtio:d00000002v* virtio_blk\n\
             alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n\
             alias pci:v*d*sv*sd*bc01sc08i02* nvme\n\
             alias usb:v*p*d*dc*dsc*dp*ic03isc*ip*in* usbhid\n\
             garbage line\n",
            "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko\n\
             kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
             kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
             kernel/net/core/failover.ko:\n\
             kernel/drivers/virtio/virtio_pci_modern_dev.ko:\n\
             kernel/drivers/virtio/virtio_pci_legacy_dev.ko:\n\
             kernel/drivers/block/virtio_blk.ko:\n\
             kernel/drivers/net/ethernet/intel/e1000/e1000.ko:\n\
             kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\n\
             kernel/drivers/nvme/host/nvme-core.ko:\n\
             kernel/net/8021q/8021q.ko: kernel/net/802/mrp.ko kernel/net/802/garp.ko kernel/net/802/stp.ko kernel/net/llc/llc.ko\n\
             kernel/net/802/mrp.ko:\n\
             kernel/net/802/garp.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko\n\
             kernel/net/802/stp.ko: kernel/net/llc/llc.ko\n\
             kernel/net/llc/llc.ko:\n",
        )
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let order = db().load_order(["virtio_net", "8021q", "nvme", "nvme-core", "nope"]);
        let pos = |m: &str| {
            order
                .iter()
                .position(|p| p.ends_with(&format!("/{m}.ko")))
                .unwrap()
        };
        assert!(pos("failover") < pos("net_failover"));
        assert!(pos("net_failover") < pos("virtio_net"));
        assert!(pos("llc") < pos("stp") && pos("stp") < pos("garp") && pos("garp") < pos("8021q"));
        assert!(pos("nvme-core") < pos("nvme"));
        let unique: BTreeSet<_> = order.iter().collect();
        assert_eq!(unique.len(), order.len(), "{order:?}");
        assert_eq!(
            order.len(),
            10,
            "3 for virtio_net, 5 for 8021q, 2 for nvme: {order:?}"
        );
    }

    /// A QEMU NVMe controller's modalias.
    const NVME: &str = "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02";

    /// A device directory with a `modalias` file under a fake `/sys/devices`.
    fn device(sys: &Path, rel: &str, modalias: &str) -> std::path::PathBuf {
        let dir = sys.join(rel);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("modalias"), format!("{modalias}\n")).unwrap();
        dir
    }

    #[test]
    fn coldplug_loads_in_rounds_as_buses_appear() {
        // A fake sysfs: a virtio PCI function first; the virtio bus device appears only once
        // virtio_pci has "loaded", as it does in a real kernel.
        let sys = tempfile::tempdir().unwrap();
        let pci = device(
            sys.path(),
            "pci0000:00/0000:00:03.0",
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
        );
        device(sys.path(), "pci0000:00/0000:00:04.0", NVME);
        let loaded = std::sync::Mutex::new(Vec::new());
        let report = coldplug(
            &db(),
            Path::new("/lib/modules/x"),
            sys.path(),
            &["8021q"],
            |p| {
                let name = module_name(p.to_str().unwrap());
                if name == "virtio_pci" {
                    device(&pci, "virtio0", "virtio:d00000001v00001AF4");
                }
                if name == "garp" {
                    return Err(std::io::Error::from_raw_os_error(libc::ENOEXEC));
                }
                loaded.lock().unwrap().push(name);
                Ok(())
            },
        );
        let loaded = loaded.into_inner().unwrap();
        assert!(loaded.contains(&"virtio_net".to_string()), "{report:?}");
        assert!(loaded.contains(&"nvme".to_string()));
        assert!(!loaded.contains(&"usbhid".to_string()));
        // 8021q needs garp: it is not tried, and the report says why.
        assert!(!loaded.contains(&"8021q".to_string()));
        assert_eq!(report.failed.len(), 2, "{report:?}");
        assert_eq!(report.failed[0].0, "garp");
        assert_eq!(report.failed[1].0, "8021q");
        assert!(report.failed[1].1.contains("needs garp"), "{report:?}");
        assert_eq!(
            report.rounds, 3,
            "virtio_pci, then virtio_net, then nothing new"
        );
        assert_eq!(loaded.iter().filter(|m| *m == "virtio_pci").count(), 1);
    }

    #[test]
    fn a_module_starts_once_its_own_dependencies_loaded_not_after_unrelated_ones() {
        let sys = tempfile::tempdir().unwrap();
        device(sys.path(), "pci0000:00/0000:00:04.0", NVME);
        let db = db();
        let done = std::sync::Mutex::new(Vec::<String>::new());
        let nvme_loaded = (std::sync::Mutex::new(false), std::sync::Condvar::new());
        let report = coldplug(
            &db,
            Path::new("/m"),
            sys.path(),
            &["8021q", "virtio_net"],
            |p| {
                let rel = p.strip_prefix("/m").unwrap().to_str().unwrap();
                for d in db.deps_of(rel) {
                    assert!(
                        done.lock().unwrap().contains(d),
                        "{rel} started before {d} loaded"
                    );
                }
                // mrp (no dependencies) is a slow probe that ends only once nvme, which needs
                // nvme-core, has loaded (at most 10 s): loading by dependency depth would hold
                // nvme back until mrp's level was done, and mrp would time out.
                if rel.ends_with("/mrp.ko") {
                    let (lock, cv) = &nvme_loaded;
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                    let mut loaded = lock.lock().unwrap();
                    while !*loaded {
                        let Some(left) = deadline.checked_duration_since(std::time::Instant::now())
                        else {
                            return Err(std::io::Error::other(
                                "nvme never loaded while mrp probed",
                            ));
                        };
                        loaded = cv.wait_timeout(loaded, left).unwrap().0;
                    }
                }
                done.lock().unwrap().push(rel.to_string());
                if rel.ends_with("/nvme.ko") {
                    *nvme_loaded.0.lock().unwrap() = true;
                    nvme_loaded.1.notify_all();
                }
                Ok(())
            },
        );
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!(report.loaded.len(), 10, "{report:?}");
        // (report.loaded is in the order results reached the scheduler, which two threads
        // finishing close together may swap; the loads' own record is exact.)
        let done = done.into_inner().unwrap();
        let finished: Vec<&str> = done.iter().map(String::as_str).collect();
        let pos = |m: &str| {
            finished
                .iter()
                .position(|r| r.ends_with(&format!("/{m}.ko")))
                .unwrap()
        };
        assert!(pos("nvme") < pos("mrp"), "{finished:?}");
        assert!(
            pos("mrp") < pos("8021q"),
            "8021q waits for its dependency mrp"
        );
    }
}
