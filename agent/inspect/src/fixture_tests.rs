//! Whole-inventory tests on fixture trees: the recorded VM under `fixtures/`, and a hand-built
//! server (SATA SSD + HDD behind AHCI, NVMe, a MegaRAID volume, an attached loop device, two
//! NICs, BOOTIF, UEFI with Secure Boot, a real-looking SMBIOS table).
//!
//! Full-JSON expectations live in `fixtures/*.expected.json`; regenerate them with
//! `FERROX_BLESS=1 cargo test -p agent-inspect` and review the diff.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{inspect, kernel_device, smbios, vpd, Root};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Compares with (or, when blessing, writes) `fixtures/NAME.expected.json`.
fn assert_golden(name: &str, actual: &Value) {
    let path = fixtures().join(format!("{name}.expected.json"));
    let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("FERROX_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with FERROX_BLESS=1 to create it)",
            path.display()
        )
    });
    let expected: Value = serde_json::from_str(&expected).unwrap();
    assert!(
        &expected == actual,
        "{name}: inventory differs from {}:\n{text}",
        path.display()
    );
}

/// A fixture tree under construction.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        Tree {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn file(&self, rel: &str, contents: impl AsRef<[u8]>) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
        self
    }
    fn dir(&self, rel: &str) -> &Self {
        std::fs::create_dir_all(self.path(rel)).unwrap();
        self
    }
    fn link(&self, rel: &str, target: &str) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
        self
    }
    fn root(&self) -> Root {
        Root::at(self.dir.path())
    }
}

/// Adds a block device at `devices/<devpath>` with the usual attributes and its /sys/block link.
fn block(t: &Tree, devpath: &str, kname: &str, sectors: u64, rotational: bool) -> String {
    let dir = format!("sys/devices/{devpath}");
    t.link(
        &format!("sys/block/{kname}"),
        &format!("../devices/{devpath}"),
    )
    .file(&format!("{dir}/size"), format!("{sectors}\n"))
    .file(&format!("{dir}/ro"), "0\n")
    .file(&format!("{dir}/removable"), "0\n")
    .file(
        &format!("{dir}/queue/rotational"),
        if rotational { "1\n" } else { "0\n" },
    )
    .file(&format!("{dir}/queue/logical_block_size"), "512\n")
    .file(&format!("{dir}/queue/physical_block_size"), "4096\n")
    .file(
        &format!("{dir}/queue/discard_max_bytes"),
        if rotational { "0\n" } else { "2147450880\n" },
    )
    .dir(&format!("{dir}/holders"));
    dir
}

/// A SCSI disk under `parent` (the host's parent directory) at H:C:T:L.
fn scsi_disk(
    t: &Tree,
    parent: &str,
    hctl: [u32; 4],
    kname: &str,
    sectors: u64,
    rotational: bool,
) -> String {
    let [h, c, tg, l] = hctl;
    let sdev = format!("{parent}/host{h}/target{h}:{c}:{tg}/{h}:{c}:{tg}:{l}");
    let dir = block(
        t,
        &format!("{sdev}/block/{kname}"),
        kname,
        sectors,
        rotational,
    );
    t.link(
        &format!("{dir}/device"),
        &format!("../../../{h}:{c}:{tg}:{l}"),
    )
    .dir(&format!("sys/devices/{sdev}/scsi_device/{h}:{c}:{tg}:{l}"));
    format!("sys/devices/{sdev}")
}

fn server() -> Tree {
    let t = Tree::new();
    // CPU: 2 sockets × 2 cores × 2 threads.
    let mut cpuinfo = String::new();
    for p in 0..8 {
        cpuinfo += &format!(
            "processor\t: {p}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\ncpu MHz\t\t: 800.000\nphysical id\t: {}\ncore id\t\t: {}\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sse sse2 ht vmx aes avx avx2\n\n",
            p / 4,
            (p / 2) % 2
        );
    }
    t.file("proc/cpuinfo", cpuinfo)
        .file("sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", "3200000\n")
        .file("proc/meminfo", "MemTotal:       98304000 kB\nMemFree:  1 kB\n")
        .file("proc/sys/kernel/hostname", "server-01\n")
        .file("proc/sys/kernel/arch", "x86_64\n")
        .file(
            "proc/cmdline",
            "BOOT_IMAGE=/vmlinuz console=ttyS0,115200n8 ipa-api-url=\"http://[fd00::1]:6385\" BOOTIF=01-aa-bb-cc-dd-ee-01 quiet\n",
        );
    // SMBIOS table and UEFI with Secure Boot on.
    t.file("sys/firmware/dmi/tables/DMI", smbios::build::server_table())
        .file(
            "sys/firmware/dmi/tables/smbios_entry_point",
            smbios::build::entry_point_3_3(),
        )
        .file(
            "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c",
            [0x06, 0, 0, 0, 1],
        );

    // SATA SSD on AHCI port 1, with a partition.
    let ahci = "pci0000:00/0000:00:17.0";
    let sda = scsi_disk(
        &t,
        &format!("{ahci}/ata1"),
        [0, 0, 0, 0],
        "sda",
        976_773_168,
        false,
    );
    t.file(
        &format!("sys/devices/{ahci}/ata1/ata_port/ata1/port_no"),
        "1\n",
    )
    .file(&format!("{sda}/vendor"), "ATA     \n")
    .file(&format!("{sda}/model"), "Samsung SSD 860 \n")
    .file(
        &format!("{sda}/vpd_pg80"),
        vpd::build::vpd80("S3Z9NB0K123456A"),
    )
    .file(
        &format!("{sda}/vpd_pg83"),
        vpd::build::vpd83(&[(0, 3, &[0x50, 0x02, 0x53, 0x8e, 0x40, 0xa1, 0xb2, 0xc3])]),
    )
    .file(
        &format!("{sda}/vpd_pg89"),
        vpd::build::vpd89(
            "Samsung SSD 860 EVO 500GB",
            "S3Z9NB0K123456A",
            Some(0x5002538e40a1b2c3),
        ),
    )
    .file(&format!("{sda}/block/sda/sda1/partition"), "1\n");
    // SATA HDD on port 2, member of an md array (md127 itself is not a disk).
    let sdb = scsi_disk(
        &t,
        &format!("{ahci}/ata2"),
        [1, 0, 0, 0],
        "sdb",
        7_814_037_168,
        true,
    );
    t.file(
        &format!("sys/devices/{ahci}/ata2/ata_port/ata2/port_no"),
        "2\n",
    )
    .file(&format!("{sdb}/vendor"), "ATA     \n")
    .file(&format!("{sdb}/model"), "ST4000NM0035-1V4\n")
    .file(&format!("{sdb}/vpd_pg80"), vpd::build::vpd80("ZC1A2B3C"))
    .file(
        &format!("{sdb}/vpd_pg83"),
        vpd::build::vpd83(&[(0, 3, &[0x50, 0x00, 0xc5, 0x00, 0xa1, 0xb2, 0xc3, 0xd4])]),
    )
    .link(
        &format!("{sdb}/block/sdb/holders/md127"),
        "../../../../../../../../../virtual/block/md127",
    );
    block(&t, "virtual/block/md127", "md127", 7_814_000_000, true);

    // NVMe behind a root port.
    let nvme = "pci0000:00/0000:00:01.1/0000:03:00.0/nvme/nvme0";
    block(
        &t,
        &format!("{nvme}/nvme0n1"),
        "nvme0n1",
        3_750_748_848,
        false,
    );
    t.link(&format!("sys/devices/{nvme}/nvme0n1/device"), "../../nvme0")
        .file(&format!("sys/devices/{nvme}/nvme0n1/nsid"), "1\n")
        .file(
            &format!("sys/devices/{nvme}/nvme0n1/wwid"),
            "eui.0025388b71b0ef21\n",
        )
        .file(
            &format!("sys/devices/{nvme}/model"),
            "SAMSUNG MZQL21T9HCJR-00A07              \n",
        )
        .file(
            &format!("sys/devices/{nvme}/serial"),
            "S64GNE0R123456      \n",
        );

    // NVMe with native multipath: the head under nvme-subsystem, the hidden per-path device
    // under the controller.
    let subsys = "virtual/nvme-subsystem/nvme-subsys1";
    let ctrl1 = "pci0000:00/0000:00:01.2/0000:04:00.0/nvme/nvme1";
    block(
        &t,
        &format!("{subsys}/nvme1n1"),
        "nvme1n1",
        1_875_385_008,
        false,
    );
    block(
        &t,
        &format!("{ctrl1}/nvme1c1n1"),
        "nvme1c1n1",
        1_875_385_008,
        false,
    );
    t.file(&format!("sys/devices/{ctrl1}/nvme1c1n1/hidden"), "1\n")
        .link(
            &format!("sys/devices/{subsys}/nvme1n1/device"),
            "../../nvme-subsys1",
        )
        .link(
            &format!("sys/devices/{subsys}/nvme1"),
            &format!("../../../{ctrl1}"),
        )
        .file(
            &format!("sys/devices/{subsys}/model"),
            "INTEL SSDPE2KX010T8\n",
        )
        .file(
            &format!("sys/devices/{subsys}/serial"),
            "PHLJ9123456X1P0FGN\n",
        );

    // A MegaRAID virtual drive (NAA 6 with vendor extension).
    let raid = "pci0000:00/0000:00:02.0/0000:02:00.0";
    let sdc = scsi_disk(&t, raid, [2, 2, 0, 0], "sdc", 3_904_897_024, false);
    t.file(&format!("{sdc}/vendor"), "AVAGO   \n")
        .file(&format!("{sdc}/model"), "MR9361-8i       \n")
        .file(
            &format!("{sdc}/vpd_pg80"),
            vpd::build::vpd80("0042d4d8a3b1c2d32a00b0a6f2d0a301"),
        )
        .file(
            &format!("{sdc}/vpd_pg83"),
            vpd::build::vpd83(&[(
                0,
                3,
                &[
                    0x60, 0x0, 0x56, 0x4c, 0x4f, 0x6e, 0x2c, 0x00, 0x2a, 0x00, 0xd3, 0xa1, 0x3b,
                    0x8d, 0x42, 0x00,
                ],
            )]),
        );

    // Loop devices: one attached (reported), one detached (skipped); zram skipped.
    block(&t, "virtual/block/loop0", "loop0", 2_097_152, false);
    t.file(
        "sys/devices/virtual/block/loop0/loop/backing_file",
        "/var/tmp/disk.img\n",
    );
    block(&t, "virtual/block/loop1", "loop1", 0, false);
    block(&t, "virtual/block/zram0", "zram0", 8_388_608, false);

    // NICs: eno1 with an IPv4 and an IPv6 address (the PXE one), eno2 enslaved to a bond with
    // eno1's MAC (its own permanent MAC only in bonding_slave), lo and bond0 virtual.
    let eno1 = "pci0000:00/0000:00:1c.0/0000:18:00.0";
    let eno2 = "pci0000:00/0000:00:1c.0/0000:18:00.1";
    for (name, pci, addr, assign) in [
        ("eno1", eno1, "aa:bb:cc:dd:ee:01", "0"),
        ("eno2", eno2, "aa:bb:cc:dd:ee:01", "3"),
    ] {
        let d = format!("sys/devices/{pci}/net/{name}");
        t.link(
            &format!("sys/class/net/{name}"),
            &format!("../../devices/{pci}/net/{name}"),
        )
        .link(
            &format!("{d}/device"),
            &format!("../../../{}", pci.rsplit('/').next().unwrap()),
        )
        .file(&format!("{d}/address"), format!("{addr}\n"))
        .file(&format!("{d}/addr_assign_type"), format!("{assign}\n"))
        .file(&format!("{d}/mtu"), "9000\n")
        .file(&format!("sys/devices/{pci}/vendor"), "0x8086\n")
        .file(&format!("sys/devices/{pci}/device"), "0x158b\n")
        .dir("sys/bus/pci/drivers/i40e")
        .link(
            &format!("sys/devices/{pci}/driver"),
            "../../../../bus/pci/drivers/i40e",
        );
    }
    t.file(&format!("sys/devices/{eno1}/net/eno1/carrier"), "1\n")
        .file(&format!("sys/devices/{eno1}/net/eno1/speed"), "25000\n")
        .file(&format!("sys/devices/{eno2}/net/eno2/carrier"), "0\n")
        .file(&format!("sys/devices/{eno2}/net/eno2/speed"), "-1\n")
        .file(&format!("sys/devices/{eno2}/net/eno2/bonding_slave/perm_hwaddr"), "aa:bb:cc:dd:ee:02\n")
        .link("sys/class/net/lo", "../../devices/virtual/net/lo")
        .file("sys/devices/virtual/net/lo/address", "00:00:00:00:00:00\n")
        .link("sys/class/net/bond0", "../../devices/virtual/net/bond0")
        .file("sys/devices/virtual/net/bond0/address", "aa:bb:cc:dd:ee:01\n")
        .file(
            "proc/net/fib_trie",
            "Main:\n  +-- 0.0.0.0/0 3 0 5\n     +-- 192.0.2.0/24 2 0 2\n        |-- 192.0.2.0\n           /24 link UNICAST\n        |-- 192.0.2.10\n           /32 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\n",
        )
        .file(
            "proc/net/route",
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\neno1\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\neno1\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
        )
        .file(
            "proc/net/if_inet6",
            "fe80000000000000a8bbccfffedd0001 02 40 20 80     eno1\n20010db8000000000000000000000010 02 40 00 80     eno1\n00000000000000000000000000000001 01 80 10 80       lo\n",
        );
    t
}

#[test]
fn server_full_inventory() {
    let t = server();
    let inv = inspect(&t.root()).unwrap();
    let hw = &inv.hardware;

    // CPU: max frequency (IPA's choice), rounded; counts from cpuinfo.
    let cpu = hw.cpu.as_ref().unwrap();
    assert_eq!(cpu.clock_megahertz, Some(3200.0));
    assert_eq!(cpu.count, Some(8));
    let cx = inv.ferrox_extra.cpu.as_ref().unwrap();
    assert_eq!((cx.sockets, cx.physical_cores), (Some(2), Some(4)));

    // RAM from SMBIOS type 17 (16 + 16 + 64 GiB), not MemTotal.
    assert_eq!(hw.ram_mebibytes, Some(96 * 1024));
    assert_eq!(
        hw.system_vendor.as_ref().unwrap().product_name.as_deref(),
        Some("PowerEdge R650")
    );

    // Disks: md127, loop1 (detached), zram0 skipped; natural order.
    let names: Vec<&str> = inv
        .ferrox_extra
        .disks
        .iter()
        .map(|d| d.kname.as_str())
        .collect();
    assert_eq!(names, ["loop0", "nvme0n1", "nvme1n1", "sda", "sdb", "sdc"]);
    let by = |k: &str| {
        let i = names.iter().position(|n| *n == k).unwrap();
        (&hw.storage[i], &inv.ferrox_extra.disks[i])
    };
    let (sda, sda_x) = by("sda");
    assert_eq!(
        sda.name.as_deref(),
        Some("/dev/disk/by-path/pci-0000:00:17.0-ata-1.0")
    );
    assert_eq!(
        sda.alternate_names,
        [
            "/dev/sda",
            "/dev/disk/by-path/pci-0000:00:17.0-ata-1.0",
            "/dev/disk/by-path/pci-0000:00:17.0-ata-1",
            "/dev/disk/by-id/ata-Samsung_SSD_860_EVO_500GB_S3Z9NB0K123456A",
            "/dev/disk/by-id/wwn-0x5002538e40a1b2c3",
        ]
    );
    assert_eq!(sda.model.as_deref(), Some("Samsung SSD 860 EVO 500GB"));
    assert_eq!(sda.wwn.as_deref(), Some("0x5002538e40a1b2c3"));
    assert_eq!(sda.hctl.as_deref(), Some("0:0:0:0"));
    assert_eq!(sda_x.partitions, ["sda1"]);
    assert_eq!(sda_x.transport.as_deref(), Some("sata"));
    let (sdb, sdb_x) = by("sdb");
    assert_eq!(sdb.disk_type, Some(agent_proto::DiskType::Hdd));
    assert_eq!(
        sdb.name.as_deref(),
        Some("/dev/disk/by-path/pci-0000:00:17.0-ata-2.0")
    );
    assert_eq!(sdb_x.holders, ["md127"]);
    assert!(!sdb_x.discard);
    let (nvme, _) = by("nvme0n1");
    assert_eq!(
        nvme.name.as_deref(),
        Some("/dev/disk/by-path/pci-0000:03:00.0-nvme-1")
    );
    assert_eq!(nvme.disk_type, Some(agent_proto::DiskType::Nvme));
    assert_eq!(nvme.wwn.as_deref(), Some("eui.0025388b71b0ef21"));
    assert!(nvme
        .alternate_names
        .contains(&"/dev/disk/by-id/nvme-SAMSUNG_MZQL21T9HCJR-00A07_S64GNE0R123456".to_string()));
    let (mp, _) = by("nvme1n1");
    assert_eq!(
        mp.name.as_deref(),
        Some("/dev/disk/by-path/pci-0000:04:00.0-nvme-1")
    );
    assert_eq!(mp.serial_number.as_deref(), Some("PHLJ9123456X1P0FGN"));
    let (sdc, _) = by("sdc");
    assert_eq!(sdc.hctl.as_deref(), Some("2:2:0:0"));
    assert_eq!(
        sdc.name.as_deref(),
        Some("/dev/disk/by-path/pci-0000:02:00.0-scsi-0:2:0:0")
    );
    assert_eq!(
        sdc.wwn_vendor_extension.as_deref(),
        Some("0x2a00d3a13b8d4200")
    );
    assert_eq!(
        sdc.wwn.as_deref(),
        Some("0x6000564c4f6e2c002a00d3a13b8d4200")
    );
    let (loop0, _) = by("loop0");
    assert_eq!(loop0.name.as_deref(), Some("/dev/loop0"));
    assert_eq!(loop0.size_bytes, Some(1 << 30));
    assert_eq!(
        kernel_device(&inv, "/dev/disk/by-path/pci-0000:02:00.0-scsi-0:2:0:0"),
        Some(PathBuf::from("/dev/sdc"))
    );

    // NICs: eno1 twice (v4, v6), PXE; eno2 once with its permanent MAC; lo/bond0 skipped.
    type Row<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<bool>);
    let nics: Vec<Row<'_>> = hw
        .nics
        .iter()
        .map(|n| {
            (
                n.name.as_deref().unwrap(),
                n.ip.as_deref(),
                n.mac.as_deref(),
                n.pxe,
            )
        })
        .collect();
    assert_eq!(
        nics,
        [
            (
                "eno1",
                Some("192.0.2.10"),
                Some("aa:bb:cc:dd:ee:01"),
                Some(true)
            ),
            (
                "eno1",
                Some("2001:db8::10"),
                Some("aa:bb:cc:dd:ee:01"),
                Some(true)
            ),
            ("eno2", None, Some("aa:bb:cc:dd:ee:02"), None),
        ]
    );
    assert_eq!(hw.nics[0].model.as_deref(), Some("0x8086 0x158b"));
    assert_eq!(hw.nics[0].speed_gbps, Some(25));
    assert_eq!(hw.nics[2].pci_address.as_deref(), Some("0000:18:00.1"));

    let boot = &inv.ferrox_extra.boot;
    assert_eq!(boot.mode, Some(agent_proto::BootMode::Uefi));
    assert_eq!(boot.secure_boot, Some(true));
    assert_eq!(boot.pxe_mac.as_deref(), Some("aa:bb:cc:dd:ee:01"));
    assert_eq!(boot.pxe_interface.as_deref(), Some("eno1"));

    assert_golden("server", &serde_json::to_value(&inv).unwrap());
}

#[test]
fn udev_links_win_over_synthesized_names() {
    let t = server();
    t.link("dev/disk/by-path/pci-0000:00:17.0-ata-1", "../../sda")
        .link("dev/disk/by-path/pci-0000:00:17.0-ata-1.0", "../../sda")
        .link(
            "dev/disk/by-path/pci-0000:00:17.0-ata-1.0-part1",
            "../../sda1",
        )
        .link("dev/disk/by-id/wwn-0x5002538e40a1b2c3", "../../sda");
    let inv = inspect(&t.root()).unwrap();
    let sda = &inv.hardware.storage[3];
    assert_eq!(
        sda.name.as_deref(),
        Some("/dev/disk/by-path/pci-0000:00:17.0-ata-1.0")
    );
    assert_eq!(
        sda.alternate_names,
        [
            "/dev/sda",
            "/dev/disk/by-path/pci-0000:00:17.0-ata-1.0",
            "/dev/disk/by-path/pci-0000:00:17.0-ata-1",
            "/dev/disk/by-id/wwn-0x5002538e40a1b2c3",
        ]
    );
    // With udev present, a disk it gave no by-path link to keeps its kernel name.
    assert_eq!(inv.hardware.storage[5].name.as_deref(), Some("/dev/sdc"));
}

#[test]
fn minimal_root_degrades_to_none() {
    let t = Tree::new();
    t.file("proc/cpuinfo", "processor\t: 0\nmodel name\t: Some CPU\n");
    let inv = inspect(&t.root()).unwrap();
    assert_eq!(inv.hardware.cpu.as_ref().unwrap().count, Some(1));
    assert_eq!(inv.hardware.cpu.as_ref().unwrap().arch, None);
    assert_eq!(inv.hardware.ram_mebibytes, None);
    assert!(inv.hardware.storage.is_empty() && inv.hardware.nics.is_empty());
    assert_eq!(
        inv.ferrox_extra.boot.mode,
        Some(agent_proto::BootMode::Bios)
    );
    assert_eq!(inv.ferrox_extra.boot.secure_boot, None);
    assert!(inv.ferrox_extra.system.is_none());
}

#[test]
fn no_cpuinfo_is_an_error() {
    let t = Tree::new();
    let err = inspect(&t.root()).unwrap_err();
    assert!(err.to_string().starts_with("reading "), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn recorded_firecracker_vm() {
    let root = Root::at(fixtures().join("firecracker-vm"));
    let inv = inspect(&root).unwrap();
    // What IPA 13 reported on the same VM (lshw's hotplug-memory count, the virtio disk).
    assert_eq!(inv.hardware.ram_mebibytes, Some(24576));
    let disk = &inv.hardware.storage[0];
    assert_eq!(inv.hardware.storage.len(), 1);
    assert_eq!(disk.alternate_names[0], "/dev/vda");
    assert_eq!(disk.size_bytes, Some(274_877_906_944));
    assert_eq!(disk.disk_type, Some(agent_proto::DiskType::Hdd));
    assert_eq!(disk.vendor.as_deref(), Some("0x1af4"));
    assert_eq!(inv.hardware.nics.len(), 2);
    assert_golden("firecracker-vm", &serde_json::to_value(&inv).unwrap());
}

/// A small structural validator for the CRD's openAPIV3Schema: types, properties (unknown
/// fields rejected, as the API server prunes them), items, enums, int32 and the MAC pattern.
fn validate(v: &Value, schema: &serde_yaml::Value, at: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let ty = schema.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let ok = match (ty, v) {
        ("object", Value::Object(_))
        | ("array", Value::Array(_))
        | ("string", Value::String(_))
        | ("boolean", Value::Bool(_))
        | ("number", Value::Number(_))
        | ("", _) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        _ => false,
    };
    if !ok {
        errs.push(format!("{at}: expected {ty}, got {v}"));
        return errs;
    }
    if let Some(e) = schema.get("enum").and_then(|e| e.as_sequence()) {
        if !e.iter().any(|x| x.as_str() == v.as_str()) {
            errs.push(format!("{at}: {v} not in enum"));
        }
    }
    let int32 = schema.get("format").and_then(|f| f.as_str()) == Some("int32");
    if int32 && v.as_i64().and_then(|n| i32::try_from(n).ok()).is_none() {
        errs.push(format!("{at}: {v} is not int32"));
    }
    if schema.get("pattern").is_some() {
        let s = v.as_str().unwrap_or_default();
        if crate::nics::normalize_mac(s).as_deref() != Some(&s.to_ascii_lowercase()) {
            errs.push(format!("{at}: {s} doesn't match the MAC pattern"));
        }
    }
    match v {
        Value::Object(map) => {
            let props = schema.get("properties");
            for (k, child) in map {
                match props.and_then(|p| p.get(k.as_str())) {
                    Some(s) => errs.extend(validate(child, s, &format!("{at}.{k}"))),
                    None => errs.push(format!("{at}.{k}: not in the CRD schema")),
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    errs.extend(validate(item, s, &format!("{at}[{i}]")));
                }
            }
        }
        _ => {}
    }
    errs
}

#[test]
fn hardware_details_fit_the_crd_schema() {
    let crd_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/metal3/metal3.io_hardwaredata.yaml");
    let Ok(text) = std::fs::read_to_string(&crd_path) else {
        // The shared checkout isn't part of the repository; nothing to check against.
        eprintln!("skipping: {} not found", crd_path.display());
        return;
    };
    let crd: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["hardware"];
    assert!(
        schema.get("properties").is_some(),
        "hardware schema not found in the CRD"
    );
    for root in [server().root(), Root::at(fixtures().join("firecracker-vm"))] {
        let hw = serde_json::to_value(inspect(&root).unwrap().hardware).unwrap();
        let errs = validate(&hw, schema, "hardware");
        assert!(errs.is_empty(), "{errs:#?}");
    }
    // The validator itself rejects what the CRD doesn't allow.
    let bad = serde_json::json!({"storage": [{"type": "TAPE", "sizeBytes": "1"}], "nics": [{"mac": "zz", "vlanId": 1u64 << 40}], "bogus": 1});
    assert_eq!(validate(&bad, schema, "hardware").len(), 5);
}
