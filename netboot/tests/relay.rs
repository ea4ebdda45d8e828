//! DHCP through a real relay: busybox udhcpc in one namespace, ISC dhcrelay in a second
//! (routing between two subnets), ferrox-netboot in a third. The pool is chosen by the relay's
//! giaddr and the replies go back through the relay.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;

#[test]
#[ignore = "needs root and network namespaces"]
fn udhcpc_through_isc_dhcrelay_gets_the_relayed_subnets_pool() {
    let dir = tempfile::tempdir().unwrap();
    let server_ns = Ns::new("srv");
    let relay = Ns::new("rly");
    let client = Ns::new("cli");
    veth(&server_ns, "srv0", &relay, "up0");
    veth(&relay, "down0", &client, "cli0");
    server_ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "srv0"]);
    server_ns.ip(&["route", "add", "10.88.0.0/24", "via", "10.77.0.2"]);
    relay.ip(&["addr", "add", "10.77.0.2/24", "dev", "up0"]);
    relay.ip(&["addr", "add", "10.88.0.1/24", "dev", "down0"]);
    run(relay
        .cmd("sysctl")
        .args(["-q", "-w", "net.ipv4.ip_forward=1"]));
    client.ip(&["link", "set", "cli0", "address", "52:54:00:cc:00:01"]);

    let mut server_cmd = server_ns.cmd(env!("CARGO_BIN_EXE_ferrox-netboot"));
    server_cmd.args([
        "--pool",
        POOL,
        "--pool",
        "10.88.0.0/24,10.88.0.100-10.88.0.150,router=10.88.0.1",
        "--unknown",
        "discovery",
        "--tftp-port",
        "0",
    ]);
    let mut server = Proc::spawn(server_cmd, &dir.path().join("server.log"));
    server.wait_log("listening", Duration::from_secs(10));
    let mut relay_cmd = relay.cmd("dhcrelay");
    relay_cmd.args([
        "-4",
        "-d",
        "--no-pid",
        "-id",
        "down0",
        "-iu",
        "up0",
        "10.77.0.1",
    ]);
    let mut dhcrelay = Proc::spawn(relay_cmd, &dir.path().join("dhcrelay.log"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(dhcrelay.alive(), "dhcrelay: {}", dhcrelay.log());

    let out = dir.path().join("udhcpc.out");
    let script = dir.path().join("udhcpc.sh");
    fs::write(&script, format!("#!/bin/sh\necho \"$1 ip=$ip router=$router serverid=$serverid boot_file=$boot_file\" >> {}\n", out.display())).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    run(client
        .cmd("timeout")
        .args([
            "30", "busybox", "udhcpc", "-i", "cli0", "-f", "-q", "-n", "-t", "5", "-T", "2",
        ])
        .args([
            "-s",
            script.to_str().unwrap(),
            "-V",
            "PXEClient:Arch:00007:UNDI:003016",
            "-x",
            "0x5d:0007",
        ]));
    let got = fs::read_to_string(&out).unwrap();
    let bound = got
        .lines()
        .find(|l| l.starts_with("bound"))
        .unwrap_or_else(|| panic!("{got}\n{}", server.log()));
    assert!(
        bound.contains("ip=10.88.0.100 "),
        "pool chosen by giaddr: {bound}"
    );
    assert!(bound.contains("router=10.88.0.1 "), "{bound}");
    assert!(
        bound.contains("boot_file=ipxe.efi"),
        "UEFI x64 by option 93: {bound}"
    );
    let log = server.log();
    assert!(
        log.contains("outcome=\"offer\"") && log.contains("outcome=\"ack\""),
        "{log}"
    );
}
