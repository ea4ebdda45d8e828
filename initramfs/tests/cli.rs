//! The `ferrox-mkinitramfs` command line on a generated module tree: options and the TOML
//! config file, the report, --strict, errors, and byte-identical output across runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let kver = root.join("modules/6.1.0-test");
        std::fs::create_dir_all(&kver).unwrap();
        ferrox_mkinitramfs::modules::write_fixture_tree(&kver);
        // A second, older tree: the default must pick the newest.
        let old = root.join("modules/5.10.0-old");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("modules.dep"), "").unwrap();
        std::fs::create_dir_all(root.join("firmware/vendor")).unwrap();
        std::fs::write(root.join("firmware/vendor/a.bin"), b"fw a").unwrap();
        std::fs::write(root.join("firmware/vendor/b.bin"), b"fw b").unwrap();
        std::fs::write(root.join("agent"), b"\x7fELF agent").unwrap();
        Fixture { _dir: dir, root }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_ferrox-mkinitramfs"))
            .current_dir(&self.root)
            .env_remove("SOURCE_DATE_EPOCH")
            .args([
                "--agent",
                "agent",
                "--modules-dir",
                "modules",
                "--firmware-dir",
                "firmware",
            ])
            .args(args)
            .output()
            .unwrap()
    }

    fn report(&self, path: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.p(path)).unwrap()).unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn modules_flag_picks_newest_tree_and_writes_report() {
    let f = Fixture::new();
    let o = f.run(&[
        "--modules",
        "a",
        "-o",
        "out/initrd.img",
        "--report",
        "r.json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = f.report("r.json");
    assert_eq!(r["kernel_version"], "6.1.0-test");
    assert_eq!(names(&r["modules"]), ["a", "b_core", "c", "d", "soft"]);
    assert_eq!(names(&r["firmware"]), ["vendor/a.bin", "vendor/b.bin"]);
    assert_eq!(
        names(&r["firmware_missing"]),
        ["vendor/absent.bin (b_core)"]
    );
    let size = std::fs::metadata(f.p("out/initrd.img")).unwrap().len();
    assert_eq!(r["compressed_bytes"], size);
    let err = stderr(&o);
    assert!(err.contains("modules: 5"), "{err}");
    assert!(
        err.contains("firmware missing: vendor/absent.bin (b_core)"),
        "{err}"
    );
    // zstd magic.
    assert_eq!(
        &std::fs::read(f.p("out/initrd.img")).unwrap()[..4],
        b"\x28\xb5\x2f\xfd"
    );

    let o = f.run(&[
        "--modules",
        "a",
        "-o",
        "extra.img",
        "--add-file",
        "firmware/vendor/a.bin:etc/x.bin",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cpio = zstd::decode_all(&std::fs::read(f.p("extra.img")).unwrap()[..]).unwrap();
    let name = b"etc/x.bin\0";
    assert!(
        cpio.windows(name.len()).any(|w| w == name),
        "etc/x.bin not in the archive"
    );
    let o = f.run(&[
        "--modules",
        "a",
        "-o",
        "bad.img",
        "--add-file",
        "missing:etc/y",
    ]);
    assert!(stderr(&o).contains("--add-file missing:"), "{}", stderr(&o));
}

#[test]
fn config_file_fills_in_and_the_command_line_wins() {
    let f = Fixture::new();
    std::fs::write(
        f.p("ramdisk.toml"),
        "modules = [\"c\"]\nadd-modules = [\"z\"]\nno-firmware = true\nreport = \"from-file.json\"\n\
         compression-level = 3\nsource-date-epoch = 5\n",
    )
    .unwrap();
    let o = f.run(&[
        "--config",
        "ramdisk.toml",
        "-o",
        "x.img",
        "--add-module",
        "soft",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = f.report("from-file.json");
    assert_eq!(names(&r["modules"]), ["c", "d", "soft", "z"]);
    assert!(
        names(&r["firmware"]).is_empty(),
        "no-firmware from the file"
    );

    let o = f.run(&[
        "--config",
        "ramdisk.toml",
        "-o",
        "y.img",
        "--modules",
        "a",
        "--report",
        "cli.json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // --modules replaced the file's set; the file's add-modules still apply.
    assert_eq!(
        names(&f.report("cli.json")["modules_requested"]),
        ["a", "z"]
    );

    std::fs::write(f.p("bad.toml"), "modulez = [\"a\"]\n").unwrap();
    let o = f.run(&["--config", "bad.toml", "-o", "z.img"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("parsing bad.toml"), "{}", stderr(&o));
}

#[test]
fn strict_fails_on_missing_modules_or_firmware() {
    let f = Fixture::new();
    let o = f.run(&["--modules", "d,nope", "-o", "a.img"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("module nope is not in this kernel"));
    let o = f.run(&["--modules", "d,nope", "-o", "b.img", "--strict"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = f.run(&["--modules", "d", "-o", "c.img", "--strict"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn same_inputs_same_bytes_and_epoch_matters() {
    let f = Fixture::new();
    for out in ["1.img", "2.img"] {
        assert!(f.run(&["--modules", "a", "-o", out]).status.success());
    }
    assert!(std::fs::read(f.p("1.img")).unwrap() == std::fs::read(f.p("2.img")).unwrap());
    let o = Command::new(env!("CARGO_BIN_EXE_ferrox-mkinitramfs"))
        .current_dir(&f.root)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args([
            "--agent",
            "agent",
            "--modules-dir",
            "modules",
            "--modules",
            "a",
            "-o",
            "3.img",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(f.p("1.img")).unwrap() != std::fs::read(f.p("3.img")).unwrap());
}

#[test]
fn clear_errors() {
    let f = Fixture::new();
    let o = Command::new(env!("CARGO_BIN_EXE_ferrox-mkinitramfs"))
        .current_dir(&f.root)
        .args(["--modules-dir", "modules", "-o", "x.img"])
        .output()
        .unwrap();
    assert!(stderr(&o).contains("--agent is required"), "{}", stderr(&o));
    let o = f.run(&["-o", "x.img", "--kernel-version", "9.9.9"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("building the ramdisk for kernel 9.9.9"), "{e}");
    assert!(e.contains("modules.dep"), "{e}");
    let o = Command::new(env!("CARGO_BIN_EXE_ferrox-mkinitramfs"))
        .current_dir(&f.root)
        .args([
            "--agent",
            "agent",
            "--modules-dir",
            "nowhere",
            "-o",
            "x.img",
        ])
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("no kernel module tree"),
        "{}",
        stderr(&o)
    );
    assert!(!Path::new(&f.p("x.img")).exists());
}
