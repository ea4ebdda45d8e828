//! Reads a kernel module's `.modinfo` ELF section: the NUL-separated `key=value` strings that
//! `modinfo(8)` prints (`firmware=`, `alias=`, `depends=`, `softdep=`, `vermagic=`...).
//!
//! Only what is needed is parsed: the ELF64 little-endian header and section headers (x86_64,
//! the only target Ferrox builds a ramdisk for), with every offset bounds-checked, since the
//! file may be truncated or not an ELF at all.

use std::io::Read;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ModinfoError {
    #[error("not an ELF64 little-endian object")]
    NotElf64Le,
    #[error("ELF section headers out of bounds")]
    Truncated,
    #[error("no .modinfo section")]
    NoModinfo,
}

/// The `.modinfo` strings of one module, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    pub fields: Vec<(String, String)>,
}

impl ModInfo {
    /// All values of `key`, in file order.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Firmware files the module may request (`MODULE_FIRMWARE()`), relative to /lib/firmware.
    pub fn firmware(&self) -> Vec<&str> {
        self.values("firmware").collect()
    }
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, ModinfoError> {
    let s = b.get(off..off + 2).ok_or(ModinfoError::Truncated)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, ModinfoError> {
    let s = b.get(off..off + 4).ok_or(ModinfoError::Truncated)?;
    Ok(u32::from_le_bytes(s.try_into().expect("4 bytes")))
}

fn u64_at(b: &[u8], off: usize) -> Result<usize, ModinfoError> {
    let s = b.get(off..off + 8).ok_or(ModinfoError::Truncated)?;
    usize::try_from(u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .map_err(|_| ModinfoError::Truncated)
}

fn range(b: &[u8], off: usize, len: usize) -> Result<&[u8], ModinfoError> {
    let end = off.checked_add(len).ok_or(ModinfoError::Truncated)?;
    b.get(off..end).ok_or(ModinfoError::Truncated)
}

/// Parses the `.modinfo` section of an (uncompressed) ELF64 LE kernel module.
pub fn parse(elf: &[u8]) -> Result<ModInfo, ModinfoError> {
    // e_ident: magic, EI_CLASS = ELFCLASS64 (2), EI_DATA = ELFDATA2LSB (1).
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return Err(ModinfoError::NotElf64Le);
    }
    let shoff = u64_at(elf, 0x28)?;
    let shentsize = usize::from(u16_at(elf, 0x3a)?);
    let shnum = usize::from(u16_at(elf, 0x3c)?);
    let shstrndx = usize::from(u16_at(elf, 0x3e)?);
    if shentsize < 64 || shstrndx >= shnum {
        return Err(ModinfoError::Truncated);
    }
    let section = |i: usize| -> Result<(u32, &[u8]), ModinfoError> {
        let h = range(elf, shoff + i * shentsize, 64)?;
        let name = u32_at(h, 0)?;
        let sh_type = u32_at(h, 4)?;
        // SHT_NOBITS (8) occupies no file space.
        let data = if sh_type == 8 {
            &[][..]
        } else {
            range(elf, u64_at(h, 0x18)?, u64_at(h, 0x20)?)?
        };
        Ok((name, data))
    };
    let (_, shstrtab) = section(shstrndx)?;
    for i in 0..shnum {
        let (name_off, data) = section(i)?;
        let name = shstrtab
            .get(name_off as usize..)
            .and_then(|s| s.split(|&c| c == 0).next())
            .ok_or(ModinfoError::Truncated)?;
        if name == b".modinfo" {
            return Ok(parse_strings(data));
        }
    }
    Err(ModinfoError::NoModinfo)
}

fn parse_strings(data: &[u8]) -> ModInfo {
    let fields = data
        .split(|&c| c == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let s = String::from_utf8_lossy(s);
            let (k, v) = s.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect();
    ModInfo { fields }
}

/// Reads a module file, decompressing `.ko.xz`, `.ko.zst` and `.ko.gz` (the kernel's
/// `CONFIG_MODULE_COMPRESS_*` choices); anything else is read as is.
pub fn read_module(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let name = path.as_os_str().to_string_lossy();
    let mut out = Vec::new();
    if name.ends_with(".xz") {
        xz2::read::XzDecoder::new(file).read_to_end(&mut out)?;
    } else if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(file)?.read_to_end(&mut out)?;
    } else if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(file).read_to_end(&mut out)?;
    } else {
        let mut file = file;
        file.read_to_end(&mut out)?;
    }
    Ok(out)
}

/// Builds a minimal ELF64 LE relocatable object with the given sections, for tests (here and
/// in the module tree fixtures).
#[doc(hidden)]
pub fn fake_elf(sections: &[(&str, &[u8])]) -> Vec<u8> {
    // Layout: header (64) | section data... | shstrtab | section headers.
    let mut shstrtab = vec![0u8];
    let mut names = Vec::new();
    for (name, _) in sections {
        names.push(shstrtab.len() as u32);
        shstrtab.extend_from_slice(name.as_bytes());
        shstrtab.push(0);
    }
    let shstrtab_name = shstrtab.len() as u32;
    shstrtab.extend_from_slice(b".shstrtab\0");

    let mut body = vec![0u8; 64];
    let mut offsets = Vec::new();
    for (_, data) in sections {
        offsets.push(body.len() as u64);
        body.extend_from_slice(data);
    }
    let shstrtab_off = body.len() as u64;
    body.extend_from_slice(&shstrtab);
    while body.len() & 7 != 0 {
        body.push(0);
    }
    let shoff = body.len() as u64;
    let shnum = sections.len() + 2; // null section, the sections, .shstrtab
    let mut sh = |name: u32, ty: u32, off: u64, size: u64| {
        let mut h = [0u8; 64];
        h[0..4].copy_from_slice(&name.to_le_bytes());
        h[4..8].copy_from_slice(&ty.to_le_bytes());
        h[0x18..0x20].copy_from_slice(&off.to_le_bytes());
        h[0x20..0x28].copy_from_slice(&size.to_le_bytes());
        body.extend_from_slice(&h);
    };
    sh(0, 0, 0, 0);
    for (i, (_, data)) in sections.iter().enumerate() {
        sh(names[i], 1, offsets[i], data.len() as u64); // SHT_PROGBITS
    }
    sh(shstrtab_name, 3, shstrtab_off, shstrtab.len() as u64); // SHT_STRTAB

    body[..4].copy_from_slice(b"\x7fELF");
    body[4] = 2; // ELFCLASS64
    body[5] = 1; // ELFDATA2LSB
    body[6] = 1; // EV_CURRENT
    body[0x10..0x12].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
    body[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    body[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    body[0x34..0x36].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    body[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    body[0x3c..0x3e].copy_from_slice(&(shnum as u16).to_le_bytes());
    body[0x3e..0x40].copy_from_slice(&((shnum - 1) as u16).to_le_bytes());
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modinfo_strings_among_other_sections() {
        let elf = fake_elf(&[
            (".text", b"\x90\x90\xc3"),
            (
                ".modinfo",
                b"license=GPL\0firmware=tigon/tg3.bin\0\0alias=pci:v000014E4d*\0firmware=tigon/tg3_tso.bin\0junk\0",
            ),
            (".data", b"modinfo=not this"),
        ]);
        let info = parse(&elf).unwrap();
        assert_eq!(info.firmware(), ["tigon/tg3.bin", "tigon/tg3_tso.bin"]);
        assert_eq!(info.values("license").collect::<Vec<_>>(), ["GPL"]);
        assert_eq!(info.fields.len(), 4);
    }

    #[test]
    fn errors_instead_of_panicking_on_bad_input() {
        assert!(matches!(parse(b"\x7fELF"), Err(ModinfoError::NotElf64Le)));
        assert!(matches!(parse(&[0u8; 200]), Err(ModinfoError::NotElf64Le)));
        let elf = fake_elf(&[(".text", b"x")]);
        assert!(matches!(parse(&elf), Err(ModinfoError::NoModinfo)));
        let good = fake_elf(&[(".modinfo", b"firmware=a\0")]);
        // Every truncation must be an error, never a panic.
        for len in 0..good.len() {
            assert!(parse(&good[..len]).is_err(), "truncated at {len} parsed");
        }
        // Section offsets pointing past the end.
        let mut bad = good.clone();
        let shoff = u64::from_le_bytes(bad[0x28..0x30].try_into().unwrap()) as usize;
        bad[shoff + 64 + 0x18..shoff + 64 + 0x20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn reads_compressed_modules() {
        let elf = fake_elf(&[(".modinfo", b"firmware=x.bin\0")]);
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("m.ko");
        std::fs::write(&plain, &elf).unwrap();
        let zst = dir.path().join("m.ko.zst");
        std::fs::write(&zst, zstd::encode_all(&elf[..], 3).unwrap()).unwrap();
        let xz = dir.path().join("m.ko.xz");
        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 6);
        std::io::Write::write_all(&mut enc, &elf).unwrap();
        std::fs::write(&xz, enc.finish().unwrap()).unwrap();
        for p in [plain, zst, xz] {
            assert_eq!(read_module(&p).unwrap(), elf, "{}", p.display());
        }
    }

    /// Compares the parser with kmod's `modinfo -F firmware` on real Debian modules.
    #[test]
    #[ignore = "needs linux-image-amd64 (hack/deps.sh) and kmod's modinfo"]
    fn matches_kmod_modinfo_on_debian_modules() {
        let kver = crate::modules::newest_kernel_version(Path::new("/lib/modules"))
            .expect("no /lib/modules/*/modules.dep: install linux-image-amd64");
        let tree =
            crate::modules::ModuleTree::load(&Path::new("/lib/modules").join(&kver)).unwrap();
        let mut with_firmware = 0;
        for name in [
            "tg3",
            "ice",
            "e1000e",
            "bnxt_en",
            "nvme",
            "mlx5_core",
            "virtio_net",
        ] {
            let m = tree
                .module(name)
                .unwrap_or_else(|| panic!("{name} not in modules.dep"));
            let info = parse(&read_module(&tree.root().join(&m.path)).unwrap()).unwrap();
            let out = std::process::Command::new("modinfo")
                .args(["-k", &kver, "-F", "firmware", name])
                .output()
                .unwrap();
            assert!(out.status.success());
            let mut kmod: Vec<_> = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect();
            let mut ours: Vec<_> = info.firmware().into_iter().map(str::to_owned).collect();
            kmod.sort();
            ours.sort();
            assert_eq!(ours, kmod, "{name}");
            assert!(info
                .values("vermagic")
                .next()
                .unwrap()
                .starts_with(&kver[..3]));
            with_firmware += usize::from(!ours.is_empty());
        }
        assert!(with_firmware >= 2, "tg3 and ice declare firmware");
    }
}
