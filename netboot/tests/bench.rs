//! Side by side with dnsmasq (Debian's dnsmasq-base) on the same namespaces in one run:
//! DISCOVER→ACK transactions per second and server CPU per transaction from a load generator
//! with distinct MACs, and the time to fetch ipxe.efi by TFTP. Prints the numbers (README
//! records them); asserts only that every client was served. Needs root.

mod common;

use std::collections::HashMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::*;
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use socket2::{Domain, Protocol, Socket, Type};

#[derive(Debug, Default)]
struct Load {
    done: u32,
    failed: u32,
    naks: u32,
    elapsed: Duration,
}

fn packet(xid: u32, mac: [u8; 6], t: MessageType, req: Option<(Ipv4Addr, Ipv4Addr)>) -> Vec<u8> {
    let mut m = Message::default();
    m.set_xid(xid)
        .set_flags(Flags::default().set_broadcast())
        .set_chaddr(&mac);
    m.opts_mut().insert(DhcpOption::MessageType(t));
    m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
    ]));
    if let Some((ip, server)) = req {
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    }
    let mut b = Vec::new();
    m.encode(&mut Encoder::new(&mut b)).unwrap();
    b
}

enum State {
    Discover,
    Request(Ipv4Addr, Ipv4Addr),
    Done,
}

/// DORA for `clients` distinct MACs, `window` in flight, from a thread inside `ns`.
fn dora(ns: &str, iface: &str, clients: u32, window: u32) -> Load {
    let ns = ns.to_owned();
    let iface = iface.to_owned();
    std::thread::spawn(move || {
        let f = fs::File::open(format!("/run/netns/{ns}")).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_broadcast(true).unwrap();
        s.bind_device(Some(iface.as_bytes())).unwrap();
        s.set_recv_buffer_size(4 << 20).unwrap();
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())
            .unwrap();
        let sock: std::net::UdpSocket = s.into();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
        let mac = |i: u32| {
            [
                0x02,
                0x42,
                (i >> 24) as u8,
                (i >> 16) as u8,
                (i >> 8) as u8,
                i as u8,
            ]
        };
        let mut state: HashMap<u32, (State, Instant, u32)> = HashMap::new();
        let mut load = Load::default();
        let (mut next, mut inflight) = (0u32, 0u32);
        let start = Instant::now();
        let mut buf = [0u8; 1500];
        let mut last_scan = Instant::now();
        while (load.done + load.failed) < clients && start.elapsed() < Duration::from_secs(60) {
            while inflight < window && next < clients {
                let xid = next + 1;
                sock.send_to(&packet(xid, mac(next), MessageType::Discover, None), to)
                    .unwrap();
                state.insert(xid, (State::Discover, Instant::now(), 0));
                next += 1;
                inflight += 1;
            }
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n])) else {
                    continue;
                };
                let xid = m.xid();
                let Some(entry) = state.get_mut(&xid) else {
                    continue;
                };
                match (m.opts().msg_type(), &entry.0) {
                    (Some(MessageType::Offer), State::Discover) => {
                        let server = match m.opts().get(OptionCode::ServerIdentifier) {
                            Some(DhcpOption::ServerIdentifier(s)) => *s,
                            _ => continue,
                        };
                        let ip = m.yiaddr();
                        sock.send_to(
                            &packet(xid, mac(xid - 1), MessageType::Request, Some((ip, server))),
                            to,
                        )
                        .unwrap();
                        *entry = (State::Request(ip, server), Instant::now(), 0);
                    }
                    (Some(MessageType::Ack), State::Request(..)) => {
                        entry.0 = State::Done;
                        load.done += 1;
                        inflight -= 1;
                    }
                    (Some(MessageType::Nak), State::Request(..)) => {
                        entry.0 = State::Done;
                        load.naks += 1;
                        load.failed += 1;
                        inflight -= 1;
                    }
                    _ => {}
                }
            }
            // Retransmit after 1 s, give up after 3 tries (looked at every 100 ms: a scan per
            // packet would make the generator quadratic).
            if last_scan.elapsed() < Duration::from_millis(100) {
                continue;
            }
            last_scan = Instant::now();
            for (xid, (st, at, tries)) in state.iter_mut() {
                if matches!(st, State::Done) || at.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                if *tries >= 3 {
                    *st = State::Done;
                    load.failed += 1;
                    inflight -= 1;
                    continue;
                }
                *tries += 1;
                *at = Instant::now();
                let p = match st {
                    State::Discover => packet(*xid, mac(xid - 1), MessageType::Discover, None),
                    State::Request(ip, s) => {
                        packet(*xid, mac(xid - 1), MessageType::Request, Some((*ip, *s)))
                    }
                    State::Done => continue,
                };
                sock.send_to(&p, to).unwrap();
            }
        }
        load.elapsed = start.elapsed();
        load
    })
    .join()
    .unwrap()
}

/// utime + stime of `pid`, in seconds.
fn cpu(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn atftp_ms(client: &Ns, dir: &std::path::Path, window: Option<u16>) -> f64 {
    let mut times = vec![];
    for i in 0..5 {
        let dst = dir.join(format!("ipxe-{i}.efi"));
        let mut c = client.cmd("atftp");
        c.args(["--option", "blksize 1468"]);
        if let Some(w) = window {
            c.args(["--option", &format!("windowsize {w}")]);
        }
        c.args([
            "-g",
            "-r",
            "ipxe.efi",
            "-l",
            dst.to_str().unwrap(),
            "10.77.0.1",
        ]);
        let t = Instant::now();
        run(&mut c);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(
            fs::metadata(&dst).unwrap().len(),
            fs::metadata("/usr/lib/ipxe/ipxe.efi").unwrap().len()
        );
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[2]
}

#[test]
#[ignore = "needs root and network namespaces"]
fn side_by_side_with_dnsmasq() {
    const CLIENTS: u32 = 5000;
    const WINDOW: u32 = 64;
    let dir = tempfile::tempdir().unwrap();
    let srv = Ns::new("bsrv");
    let cli = Ns::new("bcli");
    veth(&srv, "srv0", &cli, "cli0");
    srv.ip(&["addr", "add", "10.77.0.1/16", "dev", "srv0"]);
    cli.ip(&["addr", "add", "10.77.0.2/16", "dev", "cli0"]);
    let mut report = String::new();

    // ferrox-netboot, full mode, discovery for every MAC, logging at info (one line per decision).
    let (ferrox, ferrox_tftp, ferrox_tftp_w) = {
        let mut c = srv.cmd(env!("CARGO_BIN_EXE_ferrox-netboot"));
        c.args([
            "--pool",
            "10.77.0.0/16,10.77.1.0-10.77.200.255",
            "--unknown",
            "discovery",
            "--ipv6-ra",
            "off",
        ]);
        let mut p = Proc::spawn(c, &dir.path().join("ferrox.log"));
        p.wait_log("listening", Duration::from_secs(10));
        let pid = p.child.id();
        let c0 = cpu(pid);
        let load = dora(&srv_name(&cli), "cli0", CLIENTS, WINDOW);
        let used = cpu(pid) - c0;
        assert_eq!(
            (load.done, load.failed),
            (CLIENTS, 0),
            "ferrox-netboot: {load:?}"
        );
        let tftp = atftp_ms(&cli, dir.path(), None);
        let tftp_w = atftp_ms(&cli, dir.path(), Some(16));
        ((load, used), tftp, tftp_w)
    };

    // dnsmasq, the same pool, no ping, no lease file, TFTP from the same directory.
    let (dnsmasq, dnsmasq_tftp, dnsmasq_tftp_w) = {
        let mut c = srv.cmd("dnsmasq");
        c.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--no-ping",
            "--leasefile-ro",
            "--log-facility=-",
            "--dhcp-range=10.77.1.0,10.77.200.255,255.255.0.0,1h",
            "--dhcp-lease-max=100000",
            "--enable-tftp",
            "--tftp-root=/usr/lib/ipxe",
        ]);
        let mut p = Proc::spawn(c, &dir.path().join("dnsmasq.log"));
        p.wait_log("DHCP, IP range", Duration::from_secs(10));
        let pid = p.child.id();
        let c0 = cpu(pid);
        let load = dora(&srv_name(&cli), "cli0", CLIENTS, WINDOW);
        let used = cpu(pid) - c0;
        let tftp = atftp_ms(&cli, dir.path(), None);
        let tftp_w = atftp_ms(&cli, dir.path(), Some(16));
        ((load, used), tftp, tftp_w)
    };

    for (name, (load, used)) in [("ferrox-netboot", &ferrox), ("dnsmasq", &dnsmasq)] {
        let rate = f64::from(load.done) / load.elapsed.as_secs_f64();
        let us = used * 1e6 / f64::from(load.done.max(1));
        report += &format!(
            "{name:>15}: {} DORA in {:.2} s = {rate:.0}/s, {us:.0} µs server CPU per DORA, {} failed ({} NAK)\n",
            load.done,
            load.elapsed.as_secs_f64(),
            load.failed,
            load.naks
        );
    }
    report += &format!("ipxe.efi by TFTP (atftp, blksize 1468, median of 5): ferrox-netboot {ferrox_tftp:.1} ms lock-step, {ferrox_tftp_w:.1} ms windowsize 16; dnsmasq {dnsmasq_tftp:.1} ms, {dnsmasq_tftp_w:.1} ms (ignores windowsize)\n");
    eprintln!("{report}");
}

fn srv_name(ns: &Ns) -> String {
    ns.name.clone()
}
