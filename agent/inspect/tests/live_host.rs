//! Inspection of the machine the tests run on. The loop-device test needs root and is
//! `#[ignore]`d in a plain `cargo test` (hack/test.sh runs it).

use std::time::{Duration, Instant};

use agent_inspect::{inspect, Root};

#[test]
fn host_inspection_is_sane_and_fast() {
    let root = Root::host();
    inspect(&root).unwrap(); // warm the dentry cache
    let start = Instant::now();
    let inv = inspect(&root).unwrap();
    let took = start.elapsed();
    let cpu = inv.hardware.cpu.as_ref().unwrap();
    assert!(cpu.count.unwrap_or(0) >= 1);
    assert_eq!(cpu.arch.as_deref(), Some(std::env::consts::ARCH));
    assert!(inv.hardware.ram_mebibytes.unwrap_or(0) > 0);
    assert_eq!(inv.hardware.storage.len(), inv.ferrox_extra.disks.len());
    // The budget is 50 ms; allow for a loaded CI machine.
    assert!(took < Duration::from_millis(250), "inspect took {took:?}");
}

#[test]
#[ignore = "needs root and loop devices"]
fn attached_loop_device_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let lo = tests::loopdev::Loop::whole(&img).unwrap();
    let dev = lo.dev().to_string();
    let result = std::panic::catch_unwind(|| {
        let inv = inspect(&Root::host()).unwrap();
        let disk = inv
            .hardware
            .storage
            .iter()
            .find(|s| s.name.as_deref() == Some(dev.as_str()))
            .unwrap_or_else(|| panic!("{dev} not in {:#?}", inv.hardware.storage));
        assert_eq!(disk.size_bytes, Some(64 << 20));
        assert_eq!(disk.alternate_names, [dev.as_str()]);
        assert_eq!(
            agent_inspect::kernel_device(&inv, &dev).unwrap().to_str(),
            Some(dev.as_str())
        );
    });
    drop(lo);
    // Detached again: no longer reported.
    let inv = inspect(&Root::host()).unwrap();
    assert!(result.is_ok());
    assert!(inv
        .hardware
        .storage
        .iter()
        .all(|s| s.name.as_deref() != Some(dev.as_str())));
}
