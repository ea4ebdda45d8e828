#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let (params, problems) = agent_ramdisk::cmdline::parse(&line);
    // Whatever was accepted is well-formed.
    if let Some(c) = &params.controller {
        assert!(c.starts_with("http://") || c.starts_with("https://"));
    }
    if let Some(v) = params.vlan {
        assert!((1..=4094).contains(&v));
    }
    for p in problems {
        assert!(p.to_string().len() < 400);
    }
});
