//! Network queries sysfs can't answer: the permanent (burned-in) MAC address of an interface,
//! which sysfs doesn't export when the current address was changed (bond slaves, randomised or
//! user-set MACs), and the IPv4 addresses per interface in the kernel's order (getifaddrs).

use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `#define SIOCETHTOOL 0x8946` (<uapi/linux/sockios.h>) — ethtool request, `ifr_data` points
/// at the command structure.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// `#define ETHTOOL_GPERMADDR 0x00000020` (<uapi/linux/ethtool.h>) — get permanent hardware
/// address.
const ETHTOOL_GPERMADDR: u32 = 0x20;
/// `#define MAX_ADDR_LEN 32` (<linux/netdevice.h>) — the largest hardware address.
const MAX_ADDR_LEN: usize = 32;
/// `#define IFNAMSIZ 16` (<uapi/linux/if.h>).
const IFNAMSIZ: usize = 16;

/// `struct ethtool_perm_addr { __u32 cmd; __u32 size; __u8 data[]; }` with room for
/// MAX_ADDR_LEN bytes of data.
#[repr(C)]
struct EthtoolPermAddr {
    cmd: u32,
    size: u32,
    data: [u8; MAX_ADDR_LEN],
}

/// `struct ifreq`: the name, then a union whose largest member (`struct ifmap`) is 24 bytes on
/// 64-bit; we use its `ifr_data` pointer and pad to the full size.
#[repr(C)]
struct IfreqData {
    name: [u8; IFNAMSIZ],
    data: *mut EthtoolPermAddr,
    _pad: [u8; 24],
}

/// The permanent MAC of `ifname` as `aa:bb:cc:dd:ee:ff`; `Ok(None)` when the driver reports
/// none (all zeros, or a zero-length address). Errors when the interface doesn't exist or the
/// driver doesn't implement the request.
pub fn permanent_mac(ifname: &str) -> io::Result<Option<String>> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid interface name",
        ));
    }
    // SAFETY: socket(2) takes no pointers; the returned descriptor is checked before use and
    // owned by the OwnedFd below, which closes it.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly created, valid descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut perm = EthtoolPermAddr {
        cmd: ETHTOOL_GPERMADDR,
        size: MAX_ADDR_LEN as u32,
        data: [0; MAX_ADDR_LEN],
    };
    let mut req = IfreqData {
        name: [0; IFNAMSIZ],
        data: &mut perm,
        _pad: [0; 24],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: SIOCETHTOOL with ETHTOOL_GPERMADDR reads `struct ifreq` (name NUL-terminated,
    // checked above) and copies at most `perm.size` (= MAX_ADDR_LEN, the capacity of
    // `perm.data`) address bytes into `*ifr_data`, then writes the actual length to
    // `perm.size`. Both structures live on this stack frame for the whole call.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            SIOCETHTOOL as _,
            &mut req as *mut IfreqData,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = (perm.size as usize).min(MAX_ADDR_LEN);
    let addr = &perm.data[..len];
    if addr.is_empty() || addr.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    Ok(Some(
        addr.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    ))
}

/// IPv4 addresses with their interface, in the kernel's order (each interface's primary
/// address first), from getifaddrs(3). Alias labels (`eth0:1`) are reduced to the interface.
pub fn ipv4_addresses() -> io::Result<Vec<(String, Ipv4Addr)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs(3) writes a list head to the pointer we pass, which points at a local
    // variable; on success the list is ours until freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned; it stays valid until the
        // freeifaddrs call below, and we only read it.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() && !ifa.ifa_name.is_null() {
            // SAFETY: a non-null `ifa_addr` points at a sockaddr, whose family field is always
            // readable.
            let family = unsafe { (*ifa.ifa_addr).sa_family };
            if i32::from(family) == libc::AF_INET {
                // SAFETY: the family is AF_INET, so the sockaddr is a `struct sockaddr_in`.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                // SAFETY: `ifa_name` is a NUL-terminated string owned by the list; it is copied
                // into an owned String before the list is freed.
                let label = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
                let name = label.split(':').next().unwrap_or_default().to_string();
                out.push((name, addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once; nothing
    // borrowed from the list outlives this point (`out` holds owned copies).
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names() {
        assert!(permanent_mac("").is_err());
        assert!(permanent_mac("a-very-long-interface-name").is_err());
        assert!(permanent_mac("eth\0").is_err());
    }

    #[test]
    fn loopback_has_127_0_0_1() {
        let addrs = ipv4_addresses().unwrap();
        assert!(
            addrs.contains(&("lo".to_string(), Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
    }

    #[test]
    fn loopback_has_no_permanent_address() {
        // lo exists in every network namespace; it either reports no address or refuses.
        if let Ok(mac) = permanent_mac("lo") {
            assert_eq!(mac, None);
        }
    }
}
