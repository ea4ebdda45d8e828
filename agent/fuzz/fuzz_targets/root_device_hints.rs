#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = serde_json::from_slice::<agent_image::hints::RootDeviceHints>(data) {
        let disks = vec![agent_proto::Storage { name: Some("/dev/sda".into()), size_bytes: Some(1 << 40), ..Default::default() }];
        let _ = agent_image::hints::select_device(&h, &disks);
    }
});
