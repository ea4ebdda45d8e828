//! In-memory lease table for full mode. Offered addresses are held (so two clients never get the
//! same offer, unlike dnsmasq's unreserved offers), declined ones are parked, reservations are
//! never handed to anyone else. Allocation walks each pool from a cursor, so handing out N
//! addresses costs O(N), not O(N²).
//!
//! Nothing is written to disk: a restarted server re-learns bound clients from their REQUESTs
//! (INIT-REBOOT and RENEW both name the address), which is all a provisioning network needs.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use crate::config::Pool;
use crate::hosts::MacAddr;

/// Seconds an offered address stays held for its client.
pub const OFFER_HOLD_SECS: u64 = 60;
/// Seconds a declined address is kept out of the pool.
pub const DECLINE_HOLD_SECS: u64 = 600;

#[derive(Debug, Clone, Copy)]
struct Lease {
    ip: Ipv4Addr,
    expires: u64,
}

#[derive(Debug, Clone, Copy)]
enum Holder {
    Mac(MacAddr),
    Declined { until: u64 },
}

/// The lease table.
#[derive(Debug, Default)]
pub struct Leases {
    by_mac: HashMap<MacAddr, Lease>,
    by_ip: HashMap<Ipv4Addr, Holder>,
    reserved: HashSet<Ipv4Addr>,
    cursors: HashMap<Ipv4Addr, u32>,
}

impl Leases {
    /// A table that never hands out `reserved` from a pool.
    pub fn new(reserved: impl IntoIterator<Item = Ipv4Addr>) -> Leases {
        Leases {
            reserved: reserved.into_iter().collect(),
            ..Leases::default()
        }
    }

    fn free_for(&self, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool {
        if self.reserved.contains(&ip) {
            return false;
        }
        match self.by_ip.get(&ip) {
            None => true,
            Some(Holder::Mac(m)) if *m == mac => true,
            Some(Holder::Mac(m)) => self
                .by_mac
                .get(m)
                .is_none_or(|l| l.ip != ip || l.expires <= now),
            Some(Holder::Declined { until }) => *until <= now,
        }
    }

    /// The address `mac` currently holds in `pool`, if its lease has not expired.
    pub fn current(&self, mac: MacAddr, pool: &Pool, now: u64) -> Option<Ipv4Addr> {
        self.by_mac
            .get(&mac)
            .filter(|l| l.expires > now && pool.range_contains(l.ip))
            .map(|l| l.ip)
    }

    /// An address for `mac` from `pool`: the one it holds, else `preferred` if free, else the
    /// next free one. Holds it for [`OFFER_HOLD_SECS`]. `None`: the pool is exhausted.
    pub fn allocate(
        &mut self,
        mac: MacAddr,
        pool: &Pool,
        preferred: Option<Ipv4Addr>,
        now: u64,
    ) -> Option<Ipv4Addr> {
        if let Some(ip) = self.current(mac, pool, now) {
            return Some(ip);
        }
        let pick = match preferred {
            Some(p) if pool.range_contains(p) && self.free_for(p, mac, now) => Some(p),
            _ => self.scan(mac, pool, now),
        }?;
        self.hold(mac, pick, now + OFFER_HOLD_SECS);
        Some(pick)
    }

    fn scan(&mut self, mac: MacAddr, pool: &Pool, now: u64) -> Option<Ipv4Addr> {
        let first = u32::from(pool.first);
        let size = u32::from(pool.last) - first + 1;
        let cursor = self.cursors.entry(pool.first).or_insert(0);
        let start = *cursor % size;
        for i in 0..size {
            let off = (start + i) % size;
            let ip = Ipv4Addr::from(first + off);
            let free = {
                let this = &*self;
                this.free_for(ip, mac, now)
            };
            if free {
                self.cursors.insert(pool.first, (off + 1) % size);
                return Some(ip);
            }
        }
        None
    }

    fn hold(&mut self, mac: MacAddr, ip: Ipv4Addr, expires: u64) {
        if let Some(old) = self.by_mac.insert(mac, Lease { ip, expires }) {
            if old.ip != ip {
                self.by_ip.remove(&old.ip);
            }
        }
        // The address's previous (expired) holder forgets it, so the table stays bounded by
        // the pool size whatever number of MACs passes through.
        if let Some(Holder::Mac(prev)) = self.by_ip.insert(ip, Holder::Mac(mac)) {
            if prev != mac && self.by_mac.get(&prev).is_some_and(|l| l.ip == ip) {
                self.by_mac.remove(&prev);
            }
        }
    }

    /// Number of clients holding a lease record.
    pub fn clients(&self) -> usize {
        self.by_mac.len()
    }

    /// Binds `ip` to `mac` for `secs` (after an ACK). Reservations are not recorded: they are
    /// always the host's.
    pub fn bind(&mut self, mac: MacAddr, ip: Ipv4Addr, secs: u32, now: u64) {
        if !self.reserved.contains(&ip) {
            self.hold(mac, ip, now + u64::from(secs));
        }
    }

    /// Forgets `mac`'s lease on `ip` (RELEASE, or the client chose another server's offer).
    pub fn release(&mut self, mac: MacAddr, ip: Option<Ipv4Addr>) {
        if let Some(l) = self.by_mac.get(&mac) {
            if ip.is_none_or(|ip| ip == l.ip) {
                self.by_ip.remove(&l.ip);
                self.by_mac.remove(&mac);
            }
        }
    }

    /// `mac` found `ip` in use (DECLINE): park it for [`DECLINE_HOLD_SECS`].
    pub fn decline(&mut self, mac: MacAddr, ip: Ipv4Addr, now: u64) {
        if self.by_mac.get(&mac).is_some_and(|l| l.ip == ip) {
            self.by_mac.remove(&mac);
        }
        if !self.reserved.contains(&ip) {
            self.by_ip.insert(
                ip,
                Holder::Declined {
                    until: now + DECLINE_HOLD_SECS,
                },
            );
        }
    }

    /// Whether `ip` may be confirmed for `mac` (it is not someone else's).
    pub fn available_to(&self, mac: MacAddr, ip: Ipv4Addr, now: u64) -> bool {
        self.free_for(ip, mac, now)
    }

    /// Number of addresses held (offered, bound or declined).
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        "10.0.0.0/24,10.0.0.10-10.0.0.12".parse().unwrap()
    }
    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    #[test]
    fn allocation_holds_and_exhausts() {
        let p = pool();
        let mut l = Leases::new([Ipv4Addr::new(10, 0, 0, 11)]);
        let a = l.allocate(mac(1), &p, None, 0).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 0, 0, 10));
        assert_eq!(
            l.allocate(mac(1), &p, None, 1),
            Some(a),
            "same client, same offer"
        );
        let b = l.allocate(mac(2), &p, None, 1).unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 0, 0, 12), "reservation skipped");
        assert_eq!(l.allocate(mac(3), &p, None, 2), None, "exhausted");
        // Offers lapse.
        assert!(l.allocate(mac(3), &p, None, 2 + OFFER_HOLD_SECS).is_some());
        // A flood of new MACs never grows the table past the pool.
        for n in 10..=250 {
            l.allocate(mac(n), &p, None, 1000 * u64::from(n));
        }
        assert!(l.clients() <= 2, "{} clients held", l.clients());
    }

    #[test]
    fn preferred_bind_release_decline() {
        let p = pool();
        let mut l = Leases::new([]);
        let want = Ipv4Addr::new(10, 0, 0, 12);
        assert_eq!(l.allocate(mac(1), &p, Some(want), 0), Some(want));
        l.bind(mac(1), want, 3600, 0);
        assert!(!l.available_to(mac(2), want, 1000));
        assert!(l.available_to(mac(2), want, 3601), "expired");
        l.release(mac(1), Some(want));
        assert!(l.available_to(mac(2), want, 1));
        l.decline(mac(2), want, 10);
        assert!(!l.available_to(mac(3), want, 11));
        assert!(l.available_to(mac(3), want, 10 + DECLINE_HOLD_SECS));
    }
}
