//! A kernel's module tree (`/lib/modules/<version>/`) as depmod describes it: `modules.dep`
//! (which module needs which), `modules.alias`, `modules.softdep` and `modules.builtin`; and the
//! closure of a requested module set over those dependencies.
//!
//! Module names are compared the way kmod does: `-` and `_` are the same character, so
//! `nvme-core`, the file `nvme-core.ko` and the name `nvme_core` are one module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: malformed line")]
    Malformed { path: PathBuf, line: usize },
}

/// One loadable module from `modules.dep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Normalized name (`_` for `-`).
    pub name: String,
    /// Path relative to the tree root, as in modules.dep (`kernel/drivers/nvme/host/nvme.ko`,
    /// possibly ending in `.xz`/`.zst`/`.gz`).
    pub path: String,
    /// Direct and indirect hard dependencies, as depmod lists them (already a closure).
    pub deps: Vec<String>,
}

/// The parsed module tree of one kernel.
#[derive(Debug, Clone)]
pub struct ModuleTree {
    root: PathBuf,
    /// In modules.dep order.
    modules: Vec<Module>,
    by_name: BTreeMap<String, usize>,
    builtin: BTreeSet<String>,
    /// `alias <pattern> <module>` lines, in file order.
    aliases: Vec<(String, String)>,
    /// Module → soft dependencies (pre: and post: together; both are wanted in a ramdisk).
    softdeps: BTreeMap<String, Vec<String>>,
    /// The raw `softdep` lines, kept to write a subset.
    softdep_lines: Vec<(String, String)>,
}

/// What [`ModuleTree::resolve`] found for a requested set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Every module to include (requested ones, their dependencies and soft dependencies),
    /// in modules.dep order.
    pub modules: Vec<String>,
    /// Requested names that are built into the kernel: nothing to include.
    pub builtin: Vec<String>,
    /// Requested names that are neither modules nor built in.
    pub missing: Vec<String>,
}

/// `-` and `_` are interchangeable in module names.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// A module's name from its path: the file name up to `.ko`, normalized.
pub fn name_from_path(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.split_once(".ko")?.0;
    (!stem.is_empty()).then(|| normalize(stem))
}

/// Strips the compression suffix: the ramdisk holds modules uncompressed (the whole archive is
/// compressed once, which is both smaller and what `finit_module` loads without
/// `MODULE_INIT_COMPRESSED_FILE`).
pub fn uncompressed_path(path: &str) -> &str {
    [".xz", ".zst", ".gz"]
        .iter()
        .find_map(|s| path.strip_suffix(s))
        .unwrap_or(path)
}

/// The newest `<dir>/<version>` that has a `modules.dep`, comparing versions by their numeric
/// parts (`6.10` after `6.9`).
pub fn newest_kernel_version(dir: &Path) -> Option<String> {
    let mut versions: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().join("modules.dep").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    versions.sort_by_key(|v| version_key(v));
    versions.pop()
}

fn version_key(v: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = v;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (num, tail) = rest.split_at(digits);
        let text_len = tail.len() - tail.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
        let (text, tail) = tail.split_at(text_len);
        key.push((num.parse().unwrap_or(0), text.to_owned()));
        rest = tail;
    }
    key
}

fn read(path: &Path) -> Result<String, ModulesError> {
    std::fs::read_to_string(path).map_err(|source| ModulesError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a file that depmod may not have written (builtin, softdep): absent means empty.
fn read_optional(path: &Path) -> Result<String, ModulesError> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        other => other.map_err(|source| ModulesError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

impl ModuleTree {
    /// Loads `root/modules.dep` (required) and `modules.alias`, `modules.softdep`,
    /// `modules.builtin` (optional).
    pub fn load(root: &Path) -> Result<Self, ModulesError> {
        let dep_path = root.join("modules.dep");
        let mut modules = Vec::new();
        let mut by_name = BTreeMap::new();
        for (i, line) in read(&dep_path)?.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let malformed = || ModulesError::Malformed {
                path: dep_path.clone(),
                line: i + 1,
            };
            let (path, deps) = line.split_once(':').ok_or_else(malformed)?;
            let name = name_from_path(path).ok_or_else(malformed)?;
            let deps = deps
                .split_whitespace()
                .map(|d| name_from_path(d).ok_or_else(malformed))
                .collect::<Result<_, _>>()?;
            by_name.insert(name.clone(), modules.len());
            modules.push(Module {
                name,
                path: path.to_owned(),
                deps,
            });
        }

        let builtin = read_optional(&root.join("modules.builtin"))?
            .lines()
            .filter_map(name_from_path)
            .collect();

        let aliases = read_optional(&root.join("modules.alias"))?
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next()? == "alias").then_some(())?;
                Some((w.next()?.to_owned(), normalize(w.next()?)))
            })
            .collect();

        let mut softdeps: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut softdep_lines = Vec::new();
        for l in read_optional(&root.join("modules.softdep"))?.lines() {
            let mut w = l.split_whitespace();
            if w.next() != Some("softdep") {
                continue;
            }
            let Some(module) = w.next().map(normalize) else {
                continue;
            };
            let entry = softdeps.entry(module.clone()).or_default();
            entry.extend(w.filter(|t| !t.ends_with(':')).map(normalize));
            softdep_lines.push((module, l.to_owned()));
        }

        Ok(Self {
            root: root.to_owned(),
            modules,
            by_name,
            builtin,
            aliases,
            softdeps,
            softdep_lines,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn module(&self, name: &str) -> Option<&Module> {
        self.by_name
            .get(&normalize(name))
            .map(|&i| &self.modules[i])
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// Modules providing an exact alias (`crypto-crc32c` → crc32c_generic, crc32c_intel...).
    /// Wildcard patterns (device aliases) are not matched: names are resolved, not devices.
    fn modules_for_alias(&self, alias: &str) -> Vec<&str> {
        self.aliases
            .iter()
            .filter(|(a, _)| a == alias || normalize(a) == normalize(alias))
            .map(|(_, m)| m.as_str())
            .collect()
    }

    /// The closure of `requested` over hard dependencies and (if `softdeps`) soft ones.
    /// A name may be a module name or an exact alias.
    pub fn resolve<S: AsRef<str>>(&self, requested: &[S], softdeps: bool) -> Resolution {
        let mut res = Resolution::default();
        let mut wanted = BTreeSet::new();
        let mut queue: Vec<(String, bool)> = requested
            .iter()
            .map(|s| (s.as_ref().to_owned(), true))
            .collect();
        while let Some((name, is_request)) = queue.pop() {
            let n = normalize(&name);
            if wanted.contains(&n) {
                continue;
            }
            let targets: Vec<String> = if self.by_name.contains_key(&n) {
                vec![n.clone()]
            } else if self.builtin.contains(&n) {
                if is_request {
                    res.builtin.push(n);
                }
                continue;
            } else {
                let via_alias: Vec<String> = self
                    .modules_for_alias(&name)
                    .into_iter()
                    .filter(|m| self.by_name.contains_key(*m))
                    .map(str::to_owned)
                    .collect();
                if via_alias.is_empty() {
                    // A soft dependency that this kernel does not have (or has built in under
                    // another name) is not an error, as in modprobe.
                    if is_request {
                        res.missing.push(name);
                    }
                    continue;
                }
                via_alias
            };
            for t in targets {
                if !wanted.insert(t.clone()) {
                    continue;
                }
                let m = self.module(&t).expect("checked above");
                queue.extend(m.deps.iter().map(|d| (d.clone(), false)));
                if softdeps {
                    if let Some(s) = self.softdeps.get(&t) {
                        queue.extend(s.iter().map(|d| (d.clone(), false)));
                    }
                }
            }
        }
        res.modules = self
            .modules
            .iter()
            .filter(|m| wanted.contains(&m.name))
            .map(|m| m.name.clone())
            .collect();
        res.builtin.sort();
        res.builtin.dedup();
        res.missing.sort();
        res.missing.dedup();
        res
    }

    /// Load order for `names`: every module after all of its dependencies (a depth-first walk
    /// of modules.dep, which is how modprobe orders them too).
    pub fn load_order<S: AsRef<str>>(&self, names: &[S]) -> Vec<String> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        fn visit(
            tree: &ModuleTree,
            name: &str,
            done: &mut BTreeSet<String>,
            order: &mut Vec<String>,
        ) {
            if !done.insert(name.to_owned()) {
                return;
            }
            if let Some(m) = tree.module(name) {
                for d in &m.deps {
                    visit(tree, d, done, order);
                }
                order.push(m.name.clone());
            }
        }
        for n in names {
            visit(self, &normalize(n.as_ref()), &mut done, &mut order);
        }
        order
    }

    /// modules.dep, modules.alias and modules.softdep restricted to `included` (module names),
    /// with compression suffixes dropped from paths (the ramdisk stores modules uncompressed).
    pub fn subset_files(&self, included: &BTreeSet<String>) -> SubsetFiles {
        let mut dep = String::new();
        for m in self.modules.iter().filter(|m| included.contains(&m.name)) {
            dep.push_str(uncompressed_path(&m.path));
            dep.push(':');
            for d in &m.deps {
                let p = &self.module(d).expect("deps are modules").path;
                dep.push(' ');
                dep.push_str(uncompressed_path(p));
            }
            dep.push('\n');
        }
        let mut alias = String::new();
        for (a, m) in self.aliases.iter().filter(|(_, m)| included.contains(m)) {
            alias.push_str(&format!("alias {a} {m}\n"));
        }
        let mut softdep = String::new();
        for (_, l) in self
            .softdep_lines
            .iter()
            .filter(|(m, _)| included.contains(m))
        {
            softdep.push_str(l);
            softdep.push('\n');
        }
        let mut builtin = String::new();
        if let Ok(s) = std::fs::read_to_string(self.root.join("modules.builtin")) {
            builtin = s;
        }
        SubsetFiles {
            dep,
            alias,
            softdep,
            builtin,
        }
    }
}

/// A small fake module tree in depmod's formats, with ELF .ko files carrying .modinfo
/// (firmware declarations), one compressed with xz and one with zstd. For tests (unit tests
/// here, the CLI tests in tests/).
#[doc(hidden)]
pub fn write_fixture_tree(root: &Path) {
    let files: &[(&str, &str)] = &[
        (
            "kernel/net/a.ko",
            "firmware=vendor/a.bin\0alias=pci:v00001234d*\0",
        ),
        (
            "kernel/lib/b-core.ko.xz",
            "firmware=vendor/b.bin\0firmware=vendor/absent.bin\0",
        ),
        ("kernel/lib/c.ko.zst", "license=GPL\0"),
        ("kernel/lib/d.ko", "license=GPL\0"),
        ("kernel/lib/soft.ko", "license=GPL\0"),
        ("kernel/unrelated/z.ko", "firmware=vendor/z.bin\0"),
    ];
    for (path, modinfo) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let elf = crate::modinfo::fake_elf(&[(".modinfo", modinfo.as_bytes())]);
        let data = if path.ends_with(".xz") {
            let mut enc = xz2::write::XzEncoder::new(Vec::new(), 6);
            std::io::Write::write_all(&mut enc, &elf).unwrap();
            enc.finish().unwrap()
        } else if path.ends_with(".zst") {
            zstd::encode_all(&elf[..], 3).unwrap()
        } else {
            elf
        };
        std::fs::write(p, data).unwrap();
    }
    // a needs b-core and c (and c needs d: depmod lists the closure).
    std::fs::write(
        root.join("modules.dep"),
        "kernel/net/a.ko: kernel/lib/b-core.ko.xz kernel/lib/c.ko.zst kernel/lib/d.ko\n\
         kernel/lib/b-core.ko.xz:\n\
         kernel/lib/c.ko.zst: kernel/lib/d.ko\n\
         kernel/lib/d.ko:\n\
         kernel/lib/soft.ko:\n\
         kernel/unrelated/z.ko:\n",
    )
    .unwrap();
    std::fs::write(
        root.join("modules.alias"),
        "# Aliases extracted from modules themselves.\n\
         alias pci:v00001234d* a\n\
         alias crypto-soft soft\n\
         alias pci:v00005678d* z\n",
    )
    .unwrap();
    std::fs::write(
        root.join("modules.softdep"),
        "softdep a pre: crypto-soft post: gone\n",
    )
    .unwrap();
    std::fs::write(
        root.join("modules.builtin"),
        "kernel/net/packet/af_packet.ko\n",
    )
    .unwrap();
}

/// Index files for the modules inside the ramdisk, in depmod's formats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubsetFiles {
    pub dep: String,
    pub alias: String,
    pub softdep: String,
    /// modules.builtin as is, so coldplug can tell "built in" from "missing".
    pub builtin: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use write_fixture_tree as fixture_tree;

    #[test]
    fn resolves_dependencies_softdeps_builtins_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        fixture_tree(dir.path());
        let tree = ModuleTree::load(dir.path()).unwrap();
        assert_eq!(
            tree.module("b_core").unwrap().path,
            "kernel/lib/b-core.ko.xz"
        );
        assert_eq!(tree.module("b-core").unwrap().name, "b_core");

        let r = tree.resolve(&["a", "af-packet", "nope"], true);
        assert_eq!(r.modules, ["a", "b_core", "c", "d", "soft"]);
        assert_eq!(r.builtin, ["af_packet"]);
        assert_eq!(r.missing, ["nope"]);

        let r = tree.resolve(&["a"], false);
        assert_eq!(r.modules, ["a", "b_core", "c", "d"]);
        let r = tree.resolve(&["c"], true);
        assert_eq!(r.modules, ["c", "d"]);
        // An exact alias resolves to its module.
        assert_eq!(tree.resolve(&["crypto-soft"], true).modules, ["soft"]);
    }

    #[test]
    fn load_order_puts_dependencies_first() {
        let dir = tempfile::tempdir().unwrap();
        fixture_tree(dir.path());
        let tree = ModuleTree::load(dir.path()).unwrap();
        let order = tree.load_order(&["a", "z"]);
        let pos = |n: &str| order.iter().position(|o| o == n).unwrap();
        assert!(pos("d") < pos("c") && pos("c") < pos("a") && pos("b_core") < pos("a"));
        assert_eq!(order.len(), 5);
    }

    #[test]
    fn subset_files_rewrite_paths_and_keep_only_included() {
        let dir = tempfile::tempdir().unwrap();
        fixture_tree(dir.path());
        let tree = ModuleTree::load(dir.path()).unwrap();
        let included = tree.resolve(&["a"], true).modules.into_iter().collect();
        let s = tree.subset_files(&included);
        assert_eq!(
            s.dep,
            "kernel/net/a.ko: kernel/lib/b-core.ko kernel/lib/c.ko kernel/lib/d.ko\n\
             kernel/lib/b-core.ko:\n\
             kernel/lib/c.ko: kernel/lib/d.ko\n\
             kernel/lib/d.ko:\n\
             kernel/lib/soft.ko:\n"
        );
        assert_eq!(s.alias, "alias pci:v00001234d* a\nalias crypto-soft soft\n");
        assert_eq!(s.softdep, "softdep a pre: crypto-soft post: gone\n");
        assert_eq!(s.builtin, "kernel/net/packet/af_packet.ko\n");
    }

    #[test]
    fn malformed_modules_dep_is_an_error_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("modules.dep"),
            "kernel/a.ko:\nno colon here\n",
        )
        .unwrap();
        let err = ModuleTree::load(dir.path()).unwrap_err();
        assert!(
            matches!(err, ModulesError::Malformed { line: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn newest_kernel_version_compares_numerically() {
        let dir = tempfile::tempdir().unwrap();
        for v in [
            "6.9.0-1-amd64",
            "6.10.0-1-amd64",
            "6.1.0-56-amd64",
            "7.0-nodep",
        ] {
            std::fs::create_dir(dir.path().join(v)).unwrap();
            if v != "7.0-nodep" {
                std::fs::write(dir.path().join(v).join("modules.dep"), "").unwrap();
            }
        }
        assert_eq!(
            newest_kernel_version(dir.path()).as_deref(),
            Some("6.10.0-1-amd64")
        );
    }
}
