//! DHCP: the pure decision ([`decide`]) from one received packet to at most one reply, and the
//! thin socket shell around it ([`server`]).
//!
//! [`decide`] takes the raw bytes, so everything a packet can do to us — wrong cookie, truncated
//! header, absurd `hlen`, oversized or malformed options — is decided (and fuzzed) in one place.

pub mod leases;
pub mod server;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use dhcproto::v4::{
    Architecture, DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode, UnknownOption,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use crate::config::{Config, Mode, Pool, UnknownPolicy};
use crate::hosts::{Arch, Host, HostSource, MacAddr};
use leases::Leases;

/// Client port.
pub const CLIENT_PORT: u16 = 68;
/// Server port.
pub const SERVER_PORT: u16 = 67;
/// PXE boot server port (proxyDHCP REQUESTs from UEFI and PXE ROMs).
pub const PXE_PORT: u16 = 4011;
/// The DHCP magic cookie.
pub const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Longest packet considered (larger datagrams are dropped as malformed).
pub const MAX_PACKET: usize = 4096;

/// Where a packet came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingress {
    /// Interface index it arrived on.
    pub ifindex: u32,
    /// Our address on that interface (or the unicast address it was sent to): the server
    /// identifier and next-server of any reply.
    pub server_ip: Ipv4Addr,
    /// The local port it arrived on (67, or 4011 for PXE boot-server requests).
    pub local_port: u16,
    /// Its source address.
    pub src: SocketAddrV4,
}

/// A reply to send.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The message.
    pub msg: Message,
    /// Where to send it.
    pub dest: SocketAddrV4,
    /// Out of which interface (for broadcasts), from which address.
    pub ifindex: u32,
    /// Source address.
    pub src_ip: Ipv4Addr,
}

impl Reply {
    /// Wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(576);
        // Encoding a message we built cannot fail (dhcproto errors only on overlong fields,
        // which we never construct); an empty buffer would be dropped by the shell.
        if self.msg.encode(&mut Encoder::new(&mut buf)).is_err() {
            buf.clear();
        }
        buf
    }
}

/// What was decided, for logs and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// DISCOVER → OFFER (full mode).
    Offer,
    /// REQUEST/INFORM → ACK (full mode).
    Ack,
    /// REQUEST for an address the client may not have → NAK.
    Nak,
    /// proxyDHCP OFFER (boot information only).
    ProxyOffer,
    /// proxyDHCP ACK (port 4011 or a REQUEST naming us).
    ProxyAck,
    /// RELEASE processed.
    Release,
    /// DECLINE processed.
    Decline,
    /// Unknown MAC and `--unknown ignore`.
    IgnoredUnknownMac,
    /// proxy mode, and not a PXE/iPXE/HTTP boot client.
    IgnoredNotPxe,
    /// A REQUEST for another server's offer.
    IgnoredOtherServer,
    /// No pool for the subnet the request came from.
    IgnoredNoPool,
    /// A message type this server does not answer (e.g. a REQUEST to another server in proxy mode).
    IgnoredType,
    /// The pool has no free address.
    PoolExhausted,
    /// Not a well-formed BOOTREQUEST.
    Malformed,
}

impl Outcome {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Offer => "offer",
            Outcome::Ack => "ack",
            Outcome::Nak => "nak",
            Outcome::ProxyOffer => "proxy_offer",
            Outcome::ProxyAck => "proxy_ack",
            Outcome::Release => "release",
            Outcome::Decline => "decline",
            Outcome::IgnoredUnknownMac => "ignored_unknown_mac",
            Outcome::IgnoredNotPxe => "ignored_not_pxe",
            Outcome::IgnoredOtherServer => "ignored_other_server",
            Outcome::IgnoredNoPool => "ignored_no_pool",
            Outcome::IgnoredType => "ignored_type",
            Outcome::PoolExhausted => "pool_exhausted",
            Outcome::Malformed => "malformed",
        }
    }
}

/// The result of [`decide`].
#[derive(Debug)]
pub struct Decision {
    /// What happened.
    pub outcome: Outcome,
    /// The client, when the packet was well-formed enough to say.
    pub mac: Option<MacAddr>,
    /// Transaction id (0 when malformed).
    pub xid: u32,
    /// Why it was malformed, or what was handed out.
    pub detail: String,
    /// The reply, if any.
    pub reply: Option<Reply>,
}

/// What kind of boot client sent the packet, and what it should fetch next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Already running iPXE (option 77 "iPXE"): gets its script URL.
    Ipxe,
    /// UEFI HTTP boot (option 60 "HTTPClient"): gets an iPXE binary URL.
    Http(Arch),
    /// PXE ROM (option 60 "PXEClient"): gets an iPXE binary over TFTP.
    Pxe(Arch),
    /// Firmware architecture we have no iPXE for.
    UnsupportedArch(u16),
    /// Anything else (an OS's DHCP client): an address only.
    Plain,
}

/// Classifies a request by options 60, 77 and 93.
pub fn classify(msg: &Message) -> Client {
    let opts = msg.opts();
    if let Some(DhcpOption::UserClass(uc)) = opts.get(OptionCode::UserClass) {
        if uc.windows(4).any(|w| w == b"iPXE") {
            return Client::Ipxe;
        }
    }
    let class = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(c)) => c.as_slice(),
        _ => &[],
    };
    let http = class.starts_with(b"HTTPClient");
    if !http && !class.starts_with(b"PXEClient") {
        return Client::Plain;
    }
    let code: u16 = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => (*a).into(),
        _ => 0,
    };
    let arch = match Architecture::from(code) {
        Architecture::Intelx86PC => Arch::Bios,
        Architecture::BC | Architecture::X86_64 | Architecture::Unknown(16) => Arch::UefiX64,
        Architecture::Unknown(11) | Architecture::Unknown(19) => Arch::UefiArm64,
        _ => return Client::UnsupportedArch(code),
    };
    if http {
        Client::Http(arch)
    } else {
        Client::Pxe(arch)
    }
}

/// The iPXE binary `host` gets for `arch`.
pub fn binary_for<'a>(cfg: &'a Config, host: &'a Host, arch: Arch) -> &'a str {
    if let Some(b) = host.arch_binary.get(&arch) {
        return b;
    }
    match arch {
        Arch::Bios => "undionly.kpxe",
        Arch::UefiX64 => &cfg.uefi_binary,
        Arch::UefiArm64 => &cfg.arm64_binary,
    }
}

/// URL of `mac`'s iPXE script on the server at `server`.
pub fn script_url(server: Ipv4Addr, port: u16, mac: MacAddr) -> String {
    format!("http://{server}:{port}/ipxe/{}.ipxe", mac.dashed())
}

fn malformed(detail: &str) -> Decision {
    Decision {
        outcome: Outcome::Malformed,
        mac: None,
        xid: 0,
        detail: detail.to_owned(),
        reply: None,
    }
}

/// Walks the options' code/length structure before dhcproto does. dhcproto 0.14 reads some
/// options with fixed-size readers whatever their length, and panics (debug assertions, `u8`
/// underflow) on a few of them: RapidCommit (80) with data, ClientFQDN (81) shorter than 3,
/// ClientNetworkInterface (94) not 3, BLQ status (151) empty, BLQ times (152–155) not 4.
/// Options this server relies on must have their RFC sizes.
pub fn scan_options(opts: &[u8]) -> Result<(), String> {
    let mut i = 0;
    while i < opts.len() {
        let code = opts[i];
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => return Ok(()),
            _ => {}
        }
        let Some(&len) = opts.get(i + 1) else {
            return Err(format!("option {code} has no length"));
        };
        let len = usize::from(len);
        if i + 2 + len > opts.len() {
            return Err(format!("option {code} overruns the packet"));
        }
        let ok = match code {
            80 => len == 0,
            81 | 94 => len >= 3 && (code != 94 || len == 3),
            151 => len >= 1,
            152..=155 => len == 4,
            53 | 156 | 157 => len == 1,
            50 | 54 => len == 4,
            93 => len >= 2 && len % 2 == 0,
            _ => true,
        };
        if !ok {
            return Err(format!("option {code} has length {len}"));
        }
        i += 2 + len;
    }
    Ok(())
}

/// Decides what to answer to one packet. Pure apart from the lease table it is handed: the same
/// bytes, ingress, config, hosts, leases and clock give the same decision.
pub fn decide(
    bytes: &[u8],
    ingress: &Ingress,
    cfg: &Config,
    hosts: &dyn HostSource,
    leases: &mut Leases,
    now: u64,
) -> Decision {
    // The fixed header is 236 bytes, then the cookie. dhcproto trusts `hlen` (and would panic
    // slicing chaddr with hlen > 16) and does not check the cookie: do both here.
    if bytes.len() < 240 {
        return malformed("shorter than a BOOTP header");
    }
    if bytes.len() > MAX_PACKET {
        return malformed("oversized");
    }
    if bytes[0] != 1 {
        return malformed("not a BOOTREQUEST");
    }
    if bytes[1] != 1 || bytes[2] != 6 {
        return malformed("not Ethernet (htype 1, hlen 6)");
    }
    if bytes[236..240] != MAGIC {
        return malformed("wrong magic cookie");
    }
    if let Err(why) = scan_options(&bytes[240..]) {
        return malformed(&why);
    }
    // Last line of defence: a panic inside the decoder (the scan above covers every one we
    // know of) drops the packet instead of the handler. Under cargo-fuzz the panic hook still
    // aborts, so the fuzzer keeps finding them.
    let decoded = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(bytes)));
    let msg = match decoded {
        Ok(Ok(m)) => m,
        Ok(Err(_)) => return malformed("undecodable options"),
        Err(_) => return malformed("options crashed the decoder"),
    };
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&msg.chaddr()[..6]);
    let mac = MacAddr(mac);
    let xid = msg.xid();
    let mut d = Decision {
        outcome: Outcome::Malformed,
        mac: Some(mac),
        xid,
        detail: String::new(),
        reply: None,
    };
    if msg.opcode() != Opcode::BootRequest || msg.htype() != HType::Eth {
        d.detail = "not an Ethernet BOOTREQUEST".into();
        return d;
    }
    let Some(mtype) = msg.opts().msg_type() else {
        d.detail = "no message type (BOOTP is not served)".into();
        return d;
    };

    let host = match hosts.lookup(&mac) {
        Some(h) => h,
        None if cfg.unknown == UnknownPolicy::Discovery => Arc::new(Host::discovery(mac)),
        None => {
            // Releases and declines from unknown clients change nothing either.
            d.outcome = Outcome::IgnoredUnknownMac;
            return d;
        }
    };
    let client = classify(&msg);
    let ctx = Ctx {
        msg: &msg,
        ingress,
        cfg,
        host: &host,
        client,
        now,
    };
    match cfg.mode {
        Mode::Full => full(ctx, mtype, leases, d),
        Mode::Proxy => proxy(ctx, mtype, d),
    }
}

struct Ctx<'a> {
    msg: &'a Message,
    ingress: &'a Ingress,
    cfg: &'a Config,
    host: &'a Host,
    client: Client,
    now: u64,
}

impl Ctx<'_> {
    fn pool(&self) -> Option<&Pool> {
        let giaddr = self.msg.giaddr();
        let key = if giaddr.is_unspecified() {
            self.ingress.server_ip
        } else {
            giaddr
        };
        self.cfg.pools.iter().find(|p| p.subnet_contains(key))
    }

    fn requested(&self) -> Option<Ipv4Addr> {
        match self.msg.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ if !self.msg.ciaddr().is_unspecified() => Some(self.msg.ciaddr()),
            _ => None,
        }
    }

    fn server_id(&self) -> Option<Ipv4Addr> {
        match self.msg.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        }
    }

    /// A reply skeleton: BOOTREPLY echoing xid, flags, giaddr, chaddr.
    fn reply(&self, mtype: MessageType, nak: bool) -> Reply {
        let m = self.msg;
        let mut r = Message::default();
        r.set_opcode(Opcode::BootReply)
            .set_htype(HType::Eth)
            .set_xid(m.xid())
            .set_flags(m.flags())
            .set_giaddr(m.giaddr())
            .set_chaddr(m.chaddr());
        r.opts_mut().insert(DhcpOption::MessageType(mtype));
        r.opts_mut()
            .insert(DhcpOption::ServerIdentifier(self.ingress.server_ip));
        // RFC 3046 2.2: a relayed request's Relay Agent Information goes back unchanged, so
        // the relay can find the client's circuit (and strips it before forwarding).
        if !m.giaddr().is_unspecified() {
            if let Some(info @ DhcpOption::RelayAgentInformation(_)) =
                m.opts().get(OptionCode::RelayAgentInformation)
            {
                r.opts_mut().insert(info.clone());
            }
        }
        let dest = if self.ingress.local_port != SERVER_PORT {
            // PXE boot-server request (port 4011): answer where it came from.
            self.ingress.src
        } else if !m.giaddr().is_unspecified() {
            // Relayed: back to the relay's server port.
            if nak {
                r.set_flags(Flags::default().set_broadcast());
            }
            SocketAddrV4::new(m.giaddr(), SERVER_PORT)
        } else if !nak && !m.ciaddr().is_unspecified() {
            SocketAddrV4::new(m.ciaddr(), CLIENT_PORT)
        } else {
            // A client without an address cannot take unicast before it has ARP: broadcast.
            SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
        };
        Reply {
            msg: r,
            dest,
            ifindex: self.ingress.ifindex,
            src_ip: self.ingress.server_ip,
        }
    }

    /// Adds the boot information for this client to `r`. Returns false if it gets none.
    fn add_boot(&self, r: &mut Message, proxy: bool) -> bool {
        if !self.host.netboot {
            return false;
        }
        let server = self.ingress.server_ip;
        let port = self.cfg.http_port;
        let (file, class) = match self.client {
            // iPXE recognises a ProxyDHCP offer by option 60 "PXEClient" and no address.
            Client::Ipxe => (
                script_url(server, port, self.host.mac),
                Some(&b"PXEClient"[..]),
            ),
            Client::Http(arch) => {
                let bin = binary_for(self.cfg, self.host, arch);
                (
                    format!("http://{server}:{port}/ipxe/{bin}"),
                    Some(&b"HTTPClient"[..]),
                )
            }
            Client::Pxe(arch) => (
                binary_for(self.cfg, self.host, arch).to_owned(),
                Some(&b"PXEClient"[..]),
            ),
            Client::Plain | Client::UnsupportedArch(_) => return false,
        };
        r.set_siaddr(server);
        if file.len() < 128 {
            r.set_fname_str(&file);
        }
        let opts = r.opts_mut();
        opts.insert(DhcpOption::BootfileName(file.into_bytes()));
        opts.insert(DhcpOption::TFTPServerName(server.to_string().into_bytes()));
        if let Some(class) = class {
            // UEFI HTTP boot requires HTTPClient echoed; proxyDHCP requires PXEClient.
            if proxy || class == b"HTTPClient" {
                opts.insert(DhcpOption::ClassIdentifier(class.to_vec()));
            }
        }
        if proxy && matches!(self.client, Client::Pxe(_)) {
            // PXE_DISCOVERY_CONTROL = 8: boot the file named here, no boot-server discovery.
            opts.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
        }
        if !proxy && self.client == Client::Ipxe {
            // iPXE option 175.176 (no-pxedhcp) = 1: don't wait for ProxyDHCP offers (~3 s).
            opts.insert(DhcpOption::Unknown(UnknownOption::new(
                OptionCode::from(175u8),
                vec![176, 1, 1],
            )));
        }
        true
    }

    fn add_lease_opts(&self, r: &mut Message, pool: &Pool) {
        let lease = self.cfg.lease_time;
        let opts = r.opts_mut();
        opts.insert(DhcpOption::AddressLeaseTime(lease));
        opts.insert(DhcpOption::Renewal(lease / 2));
        opts.insert(DhcpOption::Rebinding(lease / 8 * 7));
        opts.insert(DhcpOption::SubnetMask(pool.mask()));
        if let Some(router) = pool.router {
            opts.insert(DhcpOption::Router(vec![router]));
        }
        if !self.cfg.dns.is_empty() {
            opts.insert(DhcpOption::DomainNameServer(self.cfg.dns.clone()));
        }
        if let Some(name) = &self.host.hostname {
            opts.insert(DhcpOption::Hostname(name.clone()));
        }
    }
}

fn full(c: Ctx<'_>, mtype: MessageType, leases: &mut Leases, mut d: Decision) -> Decision {
    let mac = c.host.mac;
    if c.ingress.local_port != SERVER_PORT {
        d.outcome = Outcome::IgnoredType;
        d.detail = "port 4011 is served in proxy mode only".into();
        return d;
    }
    let Some(pool) = c.pool() else {
        d.outcome = Outcome::IgnoredNoPool;
        return d;
    };
    match mtype {
        MessageType::Discover => {
            let ip = match c.host.ip {
                Some(ip) if pool.subnet_contains(ip) => Some(ip),
                Some(_) => {
                    d.outcome = Outcome::IgnoredNoPool;
                    d.detail = "reserved address is outside the request's subnet".into();
                    return d;
                }
                None => leases.allocate(mac, pool, c.requested(), c.now),
            };
            let Some(ip) = ip else {
                d.outcome = Outcome::PoolExhausted;
                return d;
            };
            let mut r = c.reply(MessageType::Offer, false);
            r.msg.set_yiaddr(ip);
            c.add_lease_opts(&mut r.msg, pool);
            c.add_boot(&mut r.msg, false);
            d.outcome = Outcome::Offer;
            d.detail = ip.to_string();
            d.reply = Some(r);
        }
        MessageType::Request => {
            if let Some(sid) = c.server_id() {
                if sid != c.ingress.server_ip {
                    leases.release(mac, None);
                    d.outcome = Outcome::IgnoredOtherServer;
                    return d;
                }
            }
            let requested = c.requested();
            let ok = match (requested, c.host.ip) {
                (Some(req), Some(reserved)) => req == reserved && pool.subnet_contains(req),
                (Some(req), None) => {
                    pool.range_contains(req)
                        && leases.available_to(mac, req, c.now)
                        && leases.allocate(mac, pool, Some(req), c.now) == Some(req)
                }
                (None, _) => false,
            };
            if !ok {
                let mut r = c.reply(MessageType::Nak, true);
                r.msg.opts_mut().insert(DhcpOption::Message(
                    "requested address not available".into(),
                ));
                d.outcome = Outcome::Nak;
                d.detail = requested.map(|i| i.to_string()).unwrap_or_default();
                d.reply = Some(r);
                return d;
            }
            let ip = requested.unwrap_or(Ipv4Addr::UNSPECIFIED);
            leases.bind(mac, ip, c.cfg.lease_time, c.now);
            let mut r = c.reply(MessageType::Ack, false);
            r.msg.set_yiaddr(ip);
            r.msg.set_ciaddr(c.msg.ciaddr());
            c.add_lease_opts(&mut r.msg, pool);
            c.add_boot(&mut r.msg, false);
            d.outcome = Outcome::Ack;
            d.detail = ip.to_string();
            d.reply = Some(r);
        }
        MessageType::Inform => {
            let mut r = c.reply(MessageType::Ack, false);
            r.msg.set_ciaddr(c.msg.ciaddr());
            c.add_boot(&mut r.msg, false);
            d.outcome = Outcome::Ack;
            d.detail = "inform".into();
            d.reply = Some(r);
        }
        MessageType::Release => {
            leases.release(mac, Some(c.msg.ciaddr()));
            d.outcome = Outcome::Release;
            d.detail = c.msg.ciaddr().to_string();
        }
        MessageType::Decline => {
            if let Some(ip) = c.requested() {
                leases.decline(mac, ip, c.now);
                d.detail = ip.to_string();
            }
            d.outcome = Outcome::Decline;
        }
        _ => d.outcome = Outcome::IgnoredType,
    }
    d
}

fn proxy(c: Ctx<'_>, mtype: MessageType, mut d: Decision) -> Decision {
    let (reply_type, outcome) = match (mtype, c.ingress.local_port) {
        (MessageType::Discover, SERVER_PORT) => (MessageType::Offer, Outcome::ProxyOffer),
        (MessageType::Request | MessageType::Inform, PXE_PORT) => {
            (MessageType::Ack, Outcome::ProxyAck)
        }
        (MessageType::Request, SERVER_PORT) if c.server_id() == Some(c.ingress.server_ip) => {
            (MessageType::Ack, Outcome::ProxyAck)
        }
        _ => {
            d.outcome = Outcome::IgnoredType;
            return d;
        }
    };
    let mut r = c.reply(reply_type, false);
    if !c.add_boot(&mut r.msg, true) {
        d.outcome = Outcome::IgnoredNotPxe;
        d.detail = match c.client {
            Client::UnsupportedArch(a) => format!("no iPXE for architecture {a}"),
            _ if !c.host.netboot => "host has netboot: false".into(),
            _ => String::new(),
        };
        return d;
    }
    d.detail = r
        .msg
        .fname_str()
        .and_then(|f| f.ok())
        .unwrap_or("")
        .to_owned();
    d.outcome = outcome;
    d.reply = Some(r);
    d
}

#[cfg(test)]
mod tests;
