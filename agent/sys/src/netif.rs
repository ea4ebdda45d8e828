//! Bringing an interface up in the ramdisk: link up, an IPv4 address, a default route and a
//! VLAN interface, through the classic socket ioctls (no netlink library in the static agent).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `#define IFNAMSIZ 16` (<uapi/linux/if.h>).
const IFNAMSIZ: usize = 16;
/// `#define SIOCGIFFLAGS 0x8913` (<uapi/linux/sockios.h>) — get flags.
const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
/// `#define SIOCSIFFLAGS 0x8914` — set flags.
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
/// `#define SIOCSIFADDR 0x8916` — set PA address.
const SIOCSIFADDR: libc::c_ulong = 0x8916;
/// `#define SIOCSIFNETMASK 0x891c` — set network PA mask.
const SIOCSIFNETMASK: libc::c_ulong = 0x891c;
/// `#define SIOCADDRT 0x890B` — add routing table entry.
const SIOCADDRT: libc::c_ulong = 0x890B;
/// `#define SIOCSIFVLAN 0x8983` — set 802.1Q VLAN options.
const SIOCSIFVLAN: libc::c_ulong = 0x8983;
/// `ADD_VLAN_CMD` = 0 in `enum vlan_ioctl_cmds` (<uapi/linux/if_vlan.h>).
const ADD_VLAN_CMD: libc::c_int = 0;

/// `struct ifreq` as 40 bytes: the name, then the 24-byte union (`struct ifmap` is its
/// largest member on 64-bit), which we fill as `short ifr_flags` or `struct sockaddr`.
#[repr(C)]
struct Ifreq {
    name: [u8; IFNAMSIZ],
    union: [u8; 24],
}

/// `struct vlan_ioctl_args { int cmd; char device1[24]; union { ...; int VID; ... } u;
/// short vlan_qos; }`.
#[repr(C)]
struct VlanIoctlArgs {
    cmd: libc::c_int,
    device1: [u8; 24],
    u: [u8; 24],
    vlan_qos: libc::c_short,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

fn ifname(name: &str) -> io::Result<[u8; IFNAMSIZ]> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= IFNAMSIZ || b.contains(&0) || b.contains(&b'/') {
        return Err(invalid("invalid interface name"));
    }
    let mut out = [0u8; IFNAMSIZ];
    out[..b.len()].copy_from_slice(b);
    Ok(out)
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the descriptor is checked and then owned.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `struct sockaddr_in` bytes for `addr`, as the 16-byte `struct sockaddr` the ioctls take.
fn sockaddr_in(addr: Ipv4Addr) -> [u8; 16] {
    let mut sa = [0u8; 16];
    sa[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    sa[4..8].copy_from_slice(&addr.octets());
    sa
}

fn ifreq_ioctl(request: libc::c_ulong, req: &mut Ifreq) -> io::Result<()> {
    let sock = socket()?;
    // SAFETY: the SIOC[GS]IF* requests read and write a `struct ifreq`; `req` is a properly
    // sized (40-byte) #[repr(C)] ifreq that lives across the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, req as *mut Ifreq) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets `IFF_UP` on `name` (like `ip link set NAME up`).
pub fn set_up(name: &str) -> io::Result<()> {
    let mut req = Ifreq {
        name: ifname(name)?,
        union: [0; 24],
    };
    ifreq_ioctl(SIOCGIFFLAGS, &mut req)?;
    let flags = i16::from_ne_bytes([req.union[0], req.union[1]]) | libc::IFF_UP as i16;
    req.union[..2].copy_from_slice(&flags.to_ne_bytes());
    ifreq_ioctl(SIOCSIFFLAGS, &mut req)
}

/// Gives `name` the address `addr/prefix` (replacing its primary IPv4 address).
pub fn set_ipv4(name: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    if prefix > 32 {
        return Err(invalid("prefix length over 32"));
    }
    let mut req = Ifreq {
        name: ifname(name)?,
        union: [0; 24],
    };
    req.union[..16].copy_from_slice(&sockaddr_in(addr));
    ifreq_ioctl(SIOCSIFADDR, &mut req)?;
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    req.union[..16].copy_from_slice(&sockaddr_in(Ipv4Addr::from(mask)));
    ifreq_ioctl(SIOCSIFNETMASK, &mut req)
}

/// Adds a default route through `gateway` on `name`. An existing default route is left
/// alone (`EEXIST` counts as done).
pub fn add_default_route(name: &str, gateway: Ipv4Addr) -> io::Result<()> {
    let mut dev = ifname(name)?;
    let sock = socket()?;
    // SAFETY: `struct rtentry` is plain old data; all-zero is a valid (empty) value.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    let to_sockaddr = |a: Ipv4Addr| {
        // SAFETY: `struct sockaddr` is 16 bytes of plain data, like the bytes copied in.
        unsafe { std::mem::transmute::<[u8; 16], libc::sockaddr>(sockaddr_in(a)) }
    };
    rt.rt_dst = to_sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = to_sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = to_sockaddr(gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    rt.rt_dev = dev.as_mut_ptr().cast();
    // SAFETY: SIOCADDRT reads a `struct rtentry`; `rt` and the name buffer `rt_dev` points to
    // both live across the call.
    let r = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            SIOCADDRT as _,
            &mut rt as *mut libc::rtentry,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EEXIST) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// Creates the 802.1Q interface `PARENT.VID` on `parent` (needs the 8021q module); returns
/// its name. An existing one counts as done.
pub fn add_vlan(parent: &str, vid: u16) -> io::Result<String> {
    if vid == 0 || vid > 4094 {
        return Err(invalid("VLAN id must be 1..4094"));
    }
    let name = format!("{parent}.{vid}");
    ifname(&name)?;
    let mut args = VlanIoctlArgs {
        cmd: ADD_VLAN_CMD,
        device1: [0; 24],
        u: [0; 24],
        vlan_qos: 0,
    };
    args.device1[..parent.len()].copy_from_slice(parent.as_bytes());
    args.u[..4].copy_from_slice(&libc::c_int::from(vid).to_ne_bytes());
    let sock = socket()?;
    // SAFETY: SIOCSIFVLAN reads a `struct vlan_ioctl_args`; `args` is that #[repr(C)] layout
    // and lives across the call.
    let r = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            SIOCSIFVLAN as _,
            &mut args as *mut VlanIoctlArgs,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_ioctl() {
        assert!(set_up("").is_err());
        assert!(set_up("a-name-that-is-too-long").is_err());
        assert!(set_up("eth\0x").is_err());
        assert!(set_ipv4("lo", Ipv4Addr::LOCALHOST, 33).is_err());
        assert!(add_vlan("eth0", 0).is_err());
        assert!(add_vlan("eth0", 4095).is_err());
        assert!(
            add_vlan("abcdefghijklm", 100).is_err(),
            "name too long with .100"
        );
    }

    #[test]
    fn unknown_interface_is_an_error() {
        let e = set_up("ferroxnope0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV), "{e}");
    }

    #[test]
    fn sockaddr_layout() {
        let sa = sockaddr_in(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(u16::from_ne_bytes([sa[0], sa[1]]), libc::AF_INET as u16);
        assert_eq!(&sa[4..8], &[10, 1, 2, 3]);
        assert_eq!(std::mem::size_of::<Ifreq>(), 40);
        assert_eq!(std::mem::size_of::<libc::sockaddr>(), 16);
    }
}
