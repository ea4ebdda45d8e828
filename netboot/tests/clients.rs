//! ferrox-netboot against real clients, each test inside network namespaces it creates:
//! busybox udhcpc and ISC dhclient (DHCP), tftp-hpa and atftp (TFTP, incl. windowsize), curl
//! (HTTP), plus garbage sent with busybox nc. Needs root: run by hack/test.sh.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;

const IGNORE: &str = "needs root and network namespaces";

fn script(lab: &Lab, name: &str, body: &str) -> String {
    let p = lab.path(name);
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
#[ignore = "needs root and network namespaces"]
fn udhcpc_gets_reservation_and_boot_file() {
    let _ = IGNORE;
    let lab = Lab::new();
    let mut server = lab.server(&["--pool", POOL, "--dns", "10.77.0.53"]);
    let out = lab.path("udhcpc.out");
    let s = script(
        &lab,
        "udhcpc.sh",
        &format!("echo \"$1 ip=$ip mask=$mask router=$router dns=$dns lease=$lease boot_file=$boot_file siaddr=$siaddr serverid=$serverid\" >> {}", out.display()),
    );
    let t = Instant::now();
    run(lab
        .client
        .cmd("timeout")
        .args([
            "20", "busybox", "udhcpc", "-i", "cli0", "-f", "-q", "-n", "-t", "5", "-T", "1", "-s",
            &s,
        ])
        .args(["-V", "PXEClient:Arch:00000:UNDI:002001"]));
    let elapsed = t.elapsed();
    let got = fs::read_to_string(&out).unwrap();
    let bound = got
        .lines()
        .find(|l| l.starts_with("bound"))
        .unwrap_or_else(|| panic!("no bound event: {got}\n{}", server.log()));
    for want in [
        "ip=10.77.0.50 ",
        "mask=24 ",
        "router=10.77.0.1 ",
        "dns=10.77.0.53 ",
        "lease=3600 ",
        "boot_file=undionly.kpxe ",
        "siaddr=10.77.0.1 ",
        "serverid=10.77.0.1",
    ] {
        assert!(bound.contains(want), "{want:?} missing in {bound:?}");
    }
    eprintln!("udhcpc DORA took {elapsed:?}");
    let log = server.log();
    assert!(
        log.contains("outcome=\"offer\"") && log.contains("outcome=\"ack\""),
        "{log}"
    );
    assert!(
        log.contains("mac=52:54:00:aa:00:01"),
        "decisions are logged with the MAC: {log}"
    );
    // The startup report names each interface, its addresses and what it gets.
    for want in [
        "interface=srv0 addresses=10.77.0.1/24 serving=DHCP from pool 10.77.0.0/24 (10.77.0.100-10.77.0.199), TFTP on 69, HTTP on 8080",
        "interface=lo addresses=127.0.0.1/8 serving=no DHCP (loopback), TFTP on 69, HTTP on 8080",
    ] {
        assert!(log.contains(want), "{want:?} not in {log}");
    }
    assert!(server.alive());
    let m = lab.metrics();
    assert_eq!(counter(&m, "dhcp", "offer"), 1, "{m}");
    assert_eq!(counter(&m, "dhcp", "ack"), 1, "{m}");
}

#[test]
#[ignore = "needs root and network namespaces"]
fn dhclient_gets_pool_address_for_discovery_and_unknown_is_ignored_by_default() {
    let lab = Lab::new();
    lab.client
        .ip(&["link", "set", "cli0", "address", "52:54:00:bb:00:07"]);
    let out = lab.path("dhclient.out");
    let s = script(
        &lab,
        "dhclient.sh",
        &format!(
            "echo \"$reason ip=$new_ip_address routers=$new_routers mask=$new_subnet_mask\" >> {}",
            out.display()
        ),
    );
    let dhclient = |tag: &str| {
        let mut c = lab.client.cmd("dhclient");
        c.args(["-4", "-d", "-1", "-v", "-sf", &s])
            .args(["-lf", lab.path(&format!("{tag}.leases")).to_str().unwrap()])
            .args(["-pf", lab.path(&format!("{tag}.pid")).to_str().unwrap()])
            .arg("cli0");
        Proc::spawn(c, &lab.path(&format!("{tag}.log")))
    };

    // Default policy: an unknown MAC gets nothing.
    {
        let server = lab.server(&["--pool", POOL]);
        let mut c = dhclient("ignored");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) && c.alive() {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("BOUND"));
        assert!(
            server.log().contains("ignored_unknown_mac"),
            "{}",
            server.log()
        );
        assert!(counter(&lab.metrics(), "dhcp", "ignored_unknown_mac") >= 1);
    }

    let _server = lab.server(&["--pool", POOL, "--unknown", "discovery"]);
    let _c = dhclient("discovery");
    let got = wait_file(&out, "BOUND", Duration::from_secs(20));
    let bound = got.lines().find(|l| l.starts_with("BOUND")).unwrap();
    assert!(bound.contains("ip=10.77.0.100 "), "{bound}");
    assert!(bound.contains("routers=10.77.0.1 "), "{bound}");
    assert!(bound.contains("mask=255.255.255.0"), "{bound}");
}

fn tftp_hpa(lab: &Lab, cmd: &str) -> String {
    let out = run(lab
        .client
        .cmd("timeout")
        .args(["20", "tftp", "-v", SERVER_IP, "-m", "binary", "-c"])
        .args(cmd.split(' ')));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
#[ignore = "needs root and network namespaces"]
fn tftp_hpa_and_atftp_fetch_ipxe_binaries() {
    let lab = Lab::new();
    lab.client_addr();
    let mut server = lab.server(&["--pool", POOL]);
    // tftp-hpa: plain RFC 1350, 512-byte lock-step blocks, no options.
    let dst = lab.path("undionly.kpxe");
    let t = Instant::now();
    tftp_hpa(&lab, &format!("get undionly.kpxe {}", dst.display()));
    eprintln!(
        "tftp-hpa undionly.kpxe (512-byte blocks): {:?}",
        t.elapsed()
    );
    assert_eq!(
        fs::read(&dst).unwrap(),
        fs::read("/usr/lib/ipxe/undionly.kpxe").unwrap()
    );

    // atftp: blksize, tsize and windowsize (RFC 7440) over ipxe.efi.
    let want = fs::read("/usr/lib/ipxe/ipxe.efi").unwrap();
    for (blksize, window) in [(1468, 1), (1468, 16), (512, 64)] {
        let dst = lab.path(&format!("ipxe-{blksize}-{window}.efi"));
        let t = Instant::now();
        run(lab
            .client
            .cmd("timeout")
            .args(["20", "atftp", "--verbose"])
            .args([
                "--option",
                &format!("blksize {blksize}"),
                "--option",
                &format!("windowsize {window}"),
                "--option",
                "tsize 0",
                "-g",
                "-r",
                "ipxe.efi",
                "-l",
                dst.to_str().unwrap(),
                SERVER_IP,
            ]));
        eprintln!(
            "atftp ipxe.efi ({} bytes) blksize {blksize} windowsize {window}: {:?}",
            want.len(),
            t.elapsed()
        );
        assert_eq!(
            fs::read(&dst).unwrap(),
            want,
            "blksize {blksize} windowsize {window}"
        );
    }
    let log = server.log();
    assert!(
        log.contains("windowsize=16"),
        "the window was granted: {log}"
    );
    assert!(server.alive());
    assert_eq!(counter(&lab.metrics(), "tftp", "sent"), 4);
}

/// Sends the bytes of `file` as one datagram from the client namespace to the server.
fn send_udp(lab: &Lab, file: &std::path::Path, port: u16) {
    run(lab.client.cmd("python3").args([
        "-c",
        "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(open(sys.argv[1],'rb').read(), (sys.argv[2], int(sys.argv[3])))",
        file.to_str().unwrap(),
        SERVER_IP,
        &port.to_string(),
    ]));
}

#[test]
#[ignore = "needs root and network namespaces"]
fn bad_input_is_refused_and_the_server_keeps_serving() {
    let lab = Lab::new();
    lab.client_addr();
    let mut server = lab.server(&["--pool", POOL]);
    // Refused names: traversal, absolute, not in the allow-list.
    for name in [
        "../../../etc/passwd",
        "/etc/passwd",
        "/usr/lib/ipxe/ipxe.efi",
        "ipxe.lkrn",
        "..",
        "a\\b",
    ] {
        let dst = lab.path("refused");
        let out = tftp_hpa(&lab, &format!("get {name} {}", dst.display()));
        assert!(out.contains("Error code"), "{name}: {out}");
        assert!(
            fs::read(&dst).map(|d| d.is_empty()).unwrap_or(true),
            "{name}: nothing written"
        );
    }
    // Write requests are refused.
    fs::write(lab.path("upload"), b"payload").unwrap();
    let out = tftp_hpa(
        &lab,
        &format!("put {} upload", lab.path("upload").display()),
    );
    assert!(out.contains("Error code 2"), "{out}");

    // Garbage datagrams at the TFTP and DHCP ports, from the client namespace.
    let garbage: &[&[u8]] = &[
        b"\x00\x09junk\x00octet\x00", // unknown opcode
        b"\x00\x01ipxe.efi",          // unterminated
        b"\x00\x01a\x00octet\x00blksize\x0099999999\x00windowsize\x000\x00", // absurd options
        b"\x00\x04\x00\x01",          // ACK to the request port
        &[0u8; 1200],                 // oversized
        b"\x00\x01ipxe.efi\x00/etc/passwd\x00octet\x00", // embedded NUL
    ];
    for (i, g) in garbage.iter().enumerate() {
        let f = lab.path(&format!("g{i}"));
        fs::write(&f, g).unwrap();
        send_udp(&lab, &f, 69);
    }
    // The refusals above used up this second's ten bad-input log lines: a fresh window for
    // the DHCP garbage, whose line the end of the test looks for.
    std::thread::sleep(Duration::from_millis(1100));
    let mut dhcp_junk = vec![1u8, 1, 6, 0];
    dhcp_junk.extend(std::iter::repeat_n(0x5a, 300)); // wrong cookie
    let mut hlen = vec![1u8, 1, 200, 0];
    hlen.extend(std::iter::repeat_n(0, 236));
    hlen[236..240].copy_from_slice(&[99, 130, 83, 99]);
    for (i, g) in [b"short".to_vec(), dhcp_junk, hlen, vec![0xff; 5000]]
        .iter()
        .enumerate()
    {
        let f = lab.path(&format!("d{i}"));
        fs::write(&f, g).unwrap();
        send_udp(&lab, &f, 67);
    }

    // Still serving everyone else.
    assert!(server.alive(), "{}", server.log());
    let dst = lab.path("ok.kpxe");
    tftp_hpa(&lab, &format!("get undionly.kpxe {}", dst.display()));
    assert_eq!(
        fs::read(&dst).unwrap(),
        fs::read("/usr/lib/ipxe/undionly.kpxe").unwrap()
    );
    let m = lab.metrics();
    // Six names refused, plus the request for "a" with absurd options (parsed, options dropped).
    assert_eq!(counter(&m, "tftp", "refused"), 7, "{m}");
    assert_eq!(counter(&m, "tftp", "refused_write"), 1, "{m}");
    assert_eq!(counter(&m, "tftp", "malformed"), 5, "{m}");
    assert_eq!(counter(&m, "dhcp", "malformed"), 4, "{m}");
    let log = server.log();
    assert!(log.contains("dropped malformed packet"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
#[ignore = "needs root and network namespaces"]
fn curl_fetches_script_files_and_binaries() {
    let lab = Lab::new();
    lab.client_addr();
    let mut server = lab.server(&["--pool", POOL, "--cmdline", "console=ttyS0"]);
    let base = format!("http://{SERVER_IP}:8080");
    let (code, body) = lab.curl(&[&format!("{base}/ipxe/52-54-00-aa-00-01.ipxe")]);
    let script = String::from_utf8(body).unwrap();
    assert_eq!(code, 200, "{script}");
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    for want in [
        "kernel --name kernel http://10.77.0.1:8080/files/kernel initrd=initramfs BOOTIF=01-52-54-00-aa-00-01 ferrox.controller=https://10.77.0.1:8443 ferrox.token=tok-123 console=ttyS0 || goto failed",
        "initrd --name initramfs http://10.77.0.1:8080/files/initramfs || goto failed",
        "goto retry",
    ] {
        assert!(script.contains(want), "{want:?} not in\n{script}");
    }
    let kernel = fs::read(lab.path("kernel")).unwrap();
    let (code, body) = lab.curl(&[&format!("{base}/files/kernel")]);
    assert_eq!((code, body.len()), (200, kernel.len()));
    assert_eq!(body, kernel);
    let (code, body) = lab.curl(&["-r", "1000-1099", &format!("{base}/files/kernel")]);
    assert_eq!(code, 206);
    assert_eq!(body, &kernel[1000..1100]);
    let (code, body) = lab.curl(&["-r", "299990-", &format!("{base}/files/kernel")]);
    assert_eq!((code, body.as_slice()), (206, &kernel[299_990..]));
    let (code, _) = lab.curl(&["-r", "400000-", &format!("{base}/files/kernel")]);
    assert_eq!(code, 416);
    let (code, body) = lab.curl(&[&format!("{base}/ipxe/snponly.efi")]);
    assert_eq!(code, 200);
    assert_eq!(body, fs::read("/usr/lib/ipxe/snponly.efi").unwrap());

    for path in [
        "/ipxe/../../../etc/passwd",
        "/files/../../etc/passwd",
        "/ipxe/%2e%2e%2fetc%2fpasswd",
        "/ipxe/52-54-00-00-00-99.ipxe",
        "/ipxe/not-a-mac.ipxe",
        "/files/vmlinuz",
        "/",
        "/usr/lib/ipxe/ipxe.efi",
    ] {
        let (code, _) = lab.curl(&["--path-as-is", &format!("{base}{path}")]);
        assert_eq!(code, 404, "{path}");
    }
    let (code, _) = lab.curl(&["-X", "POST", "-d", "x", &format!("{base}/files/kernel")]);
    assert_eq!(code, 405);
    let (code, body) = lab.curl(&["-I", &format!("{base}/files/kernel")]);
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body)
        .to_ascii_lowercase()
        .contains("content-length: 300000"));

    let m = lab.metrics();
    assert!(counter(&m, "http", "not_found") >= 8, "{m}");
    assert_eq!(counter(&m, "http", "script"), 1, "{m}");
    assert!(server.alive());
}

/// From the client namespace: `dhcp` garbage datagrams to port 67, interleaved with `tftp`
/// valid requests for undionly.kpxe each ended by an ERROR after the first answer (every other
/// one a `tsize` size probe, ended after the OACK), paced over at least `tftp` × 2 ms. Prints
/// "flooding" once under way and "done" at the end.
const FLOOD: &str = r#"
import socket, sys, time
srv, n_dhcp, n_tftp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
per = n_dhcp // n_tftp
for i in range(n_tftp):
    for j in range(per):
        d.sendto(b"\x01\x01\x06\x00" + bytes([(i + j) & 255]) * 300, (srv, 67))  # no cookie
    t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t.settimeout(5)
    probe = i % 2 == 0
    t.sendto(b"\x00\x01undionly.kpxe\x00octet\x00" + (b"tsize\x000\x00" if probe else b""), (srv, 69))
    first, peer = t.recvfrom(2048)
    assert first[:2] == (b"\x00\x06" if probe else b"\x00\x03"), first[:4]
    t.sendto(b"\x00\x05\x00\x00aborted\x00", peer)
    t.close()
    if i == 10:
        print("flooding", flush=True)
    time.sleep(0.002)
print("done", flush=True)
"#;

#[test]
#[ignore = "needs root and network namespaces"]
fn a_flood_of_bad_input_is_logged_in_a_handful_of_lines_and_clients_are_still_served() {
    const DHCP_GARBAGE: u64 = 3000;
    const TFTP_ABORTED: u64 = 1000;
    let lab = Lab::new();
    lab.client_addr();
    let started = Instant::now();
    let mut server = lab.server(&["--pool", POOL]);
    let out = lab.path("udhcpc.out");
    let hook = script(
        &lab,
        "udhcpc.sh",
        &format!("echo \"$1 ip=$ip\" >> {}", out.display()),
    );
    let udhcpc = || {
        let _ = fs::remove_file(&out);
        run(lab.client.cmd("timeout").args([
            "20", "busybox", "udhcpc", "-i", "cli0", "-f", "-q", "-n", "-t", "5", "-T", "1", "-s",
            &hook,
        ]));
        let got = fs::read_to_string(&out).unwrap_or_default();
        assert!(
            got.lines().any(|l| l == "bound ip=10.77.0.50"),
            "udhcpc: {got}"
        );
    };

    let mut c = lab.client.cmd("timeout");
    c.args(["30", "python3", "-c", FLOOD, SERVER_IP])
        .arg(DHCP_GARBAGE.to_string())
        .arg(TFTP_ABORTED.to_string());
    let mut flood = Proc::spawn(c, &lab.path("flood.log"));
    flood.wait_log("flooding", Duration::from_secs(10));
    udhcpc();
    assert!(
        !flood.log().contains("done"),
        "udhcpc was answered while the flood went on"
    );
    let t = Instant::now();
    while flood.alive() && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(flood.log().contains("done"), "flood: {}", flood.log());
    udhcpc();

    // Every event counted; then one more window for the last suppressed count to be logged.
    let m = lab.metrics();
    let events = counter(&m, "dhcp", "malformed")
        + counter(&m, "tftp", "client_error")
        + counter(&m, "tftp", "size_probe");
    assert_eq!(counter(&m, "dhcp", "malformed"), DHCP_GARBAGE, "{m}");
    assert_eq!(
        counter(&m, "tftp", "client_error") + counter(&m, "tftp", "size_probe"),
        TFTP_ABORTED,
        "{m}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let secs = started.elapsed().as_secs() + 1;
    let log = server.log();
    let suppressed = |l: &str| -> Option<u64> {
        let v = l.split_once(" suppressed=")?.1;
        v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let limited: Vec<&str> = log
        .lines()
        .filter(|l| suppressed(l).is_some() && !l.contains("log lines suppressed"))
        .collect();
    let reports: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("log lines suppressed"))
        .collect();
    let total: u64 = log.lines().filter_map(suppressed).sum();
    eprintln!(
        "{events} bad-input events in {secs} s: {} lines, {} suppressed-count lines, {total} suppressed",
        limited.len(),
        reports.len()
    );
    assert!(
        limited.len() as u64 <= 10 * secs,
        "at most 10 lines a second: {} in {secs} s",
        limited.len()
    );
    assert!(
        !reports.is_empty(),
        "the last burst's count is logged: {log}"
    );
    assert_eq!(
        limited.len() as u64 + total,
        events,
        "every event is a line or in a suppressed count"
    );
    for what in [
        "dhcp: dropped malformed packet",
        "tftp transfer failed",
        "size probe",
    ] {
        assert!(limited.iter().any(|l| l.contains(what)), "{what}: {log}");
    }
    assert!(server.alive());
}

#[test]
#[ignore = "needs root and network namespaces"]
fn a_hosts_arch_binary_is_loaded_at_start_and_served_by_dhcp_tftp_and_http() {
    let lab = Lab::new();
    let ipxe = lab.path("ipxe");
    fs::create_dir(&ipxe).unwrap();
    // Not one of the names loaded by default: only the host's override makes it served.
    let custom: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 251) as u8).collect();
    fs::write(ipxe.join("ferrox-custom.efi"), &custom).unwrap();
    let hosts = |binary: &str| {
        format!(
            "hosts:\n  - mac: \"{KNOWN_MAC}\"\n    ip: 10.77.0.50\n    arch_binary: {{ uefi_x64: {binary} }}\n"
        )
    };
    fs::write(lab.path("hosts.yaml"), hosts("ferrox-custom.efi")).unwrap();
    let mut server = lab.server(&["--pool", POOL, "--ipxe-dir", ipxe.to_str().unwrap()]);
    assert!(
        server
            .log()
            .contains("file=\"ferrox-custom.efi\" bytes=200000"),
        "{}",
        server.log()
    );

    // A UEFI x64 PXE ROM (option 93 = 7) with that MAC is told to fetch it.
    let out = lab.path("udhcpc.out");
    let hook = script(
        &lab,
        "udhcpc.sh",
        &format!(
            "echo \"$1 ip=$ip boot_file=$boot_file\" >> {}",
            out.display()
        ),
    );
    run(lab.client.cmd("timeout").args([
        "20",
        "busybox",
        "udhcpc",
        "-i",
        "cli0",
        "-f",
        "-q",
        "-n",
        "-t",
        "5",
        "-T",
        "1",
        "-V",
        "PXEClient:Arch:00007:UNDI:003016",
        "-x",
        "0x5d:0007",
        "-s",
        &hook,
    ]));
    let got = fs::read_to_string(&out).unwrap();
    assert!(
        got.lines()
            .any(|l| l == "bound ip=10.77.0.50 boot_file=ferrox-custom.efi"),
        "{got}"
    );

    // tftp-hpa and curl get its bytes.
    lab.client_addr();
    let dst = lab.path("got.efi");
    tftp_hpa(&lab, &format!("get ferrox-custom.efi {}", dst.display()));
    assert!(fs::read(&dst).unwrap() == custom, "TFTP bytes");
    let (code, body) = lab.curl(&[&format!("http://{SERVER_IP}:8080/ipxe/ferrox-custom.efi")]);
    assert_eq!(code, 200);
    assert!(body == custom, "HTTP bytes");
    assert!(server.alive());

    // A name the directory does not hold stops the start, saying which host and file.
    fs::write(lab.path("bad.yaml"), hosts("absent.efi")).unwrap();
    let out = lab
        .server_ns
        .cmd("timeout")
        .args(["10", env!("CARGO_BIN_EXE_ferrox-netboot")])
        .args(["--pool", POOL, "--ipxe-dir", ipxe.to_str().unwrap()])
        .args(["--hosts", lab.path("bad.yaml").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let want = format!(
        "host {KNOWN_MAC}: arch_binary uefi_x64 is \"absent.efi\", which is not a file in {} (--ipxe-dir)",
        ipxe.display()
    );
    assert!(err.contains(&want), "{want:?} not in {err}");
}

#[test]
#[ignore = "needs root and network namespaces"]
fn sigterm_stops_the_server_even_when_its_log_pipe_is_closed() {
    sigterm_stops_the_server(&[]);
}

#[test]
#[ignore = "needs root and network namespaces"]
fn sigterm_stops_the_server_while_it_retries_an_unreachable_controller() {
    // Nothing listens on port 9 in the namespace: the host feed keeps failing and backing off,
    // and that task must end with the servers.
    sigterm_stops_the_server(&["--controller-hosts", "http://127.0.0.1:9/v1/netboot/hosts"]);
}

/// Starts the server with `extra` arguments, closes its log pipe once it listens, sends
/// SIGTERM and expects a clean exit within 5 s.
fn sigterm_stops_the_server(extra: &[&str]) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let lab = Lab::new();
    let mut c = lab.server_ns.cmd(env!("CARGO_BIN_EXE_ferrox-netboot"));
    c.args(["--pool", POOL, "--ipv6-ra", "off"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    // Read until it listens, then close the pipe, as a log reader that went away would.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(lines
        .by_ref()
        .take(50)
        .any(|l| l.unwrap_or_default().contains("listening")));
    drop(lines);
    // `ip netns exec` execs the server: the child's PID is the server's.
    run(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > Duration::from_secs(5) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        status.is_some_and(|s| s.success()),
        "stopped cleanly within 5 s: {status:?}"
    );
}
