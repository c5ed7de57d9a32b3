//! IPv4 address management for a bridge network: subnets, the gateway, and a pool that hands
//! out each address to at most one holder and continues after the last address it gave (wrapping
//! around), so that a just-released address is not reused at once. The pool is a plain value
//! kept in the metadata store (one record per network), so the rules hold across restarts.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An IPv4 subnet `addr/prefix` (the address is the network address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// Parses `10.88.0.0/16`; host bits must be zero; prefix between 8 and 30.
    pub fn parse(s: &str) -> Result<Subnet> {
        let bad = || {
            Error::InvalidArgument(format!(
                "invalid subnet {s:?}: expected an IPv4 network like 10.89.0.0/24"
            ))
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
        let prefix: u8 = p.trim().parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(Error::InvalidArgument(format!(
                "invalid subnet {s:?}: the prefix length must be between 8 and 30"
            )));
        }
        let sn = Subnet { addr, prefix };
        if u32::from(addr) & !sn.mask() != 0 {
            return Err(Error::InvalidArgument(format!(
                "invalid subnet {s:?}: host bits are set (did you mean {}/{prefix}?)",
                Ipv4Addr::from(u32::from(addr) & sn.mask())
            )));
        }
        Ok(sn)
    }

    /// The netmask as a number.
    pub fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    /// Number of addresses in the subnet.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The address at `offset` from the network address.
    pub fn nth(&self, offset: u64) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(offset as u32))
    }

    /// The gateway: the first host address (`.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        self.nth(1)
    }

    /// Whether `ip` lies in the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether two subnets share any address.
    pub fn overlaps(&self, o: &Subnet) -> bool {
        self.contains(o.addr) || o.contains(self.addr)
    }
}

/// An IPv6 subnet of a bridge network. A container's IPv6 address is at the same offset in it
/// as its IPv4 address in the IPv4 subnet, so the IPv4 pool's rules (never two holders, no
/// reuse at once, across restarts) hold for IPv6 too, with no pool of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Subnet6 {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

impl Subnet6 {
    /// Parses `fd88::/64`; host bits must be zero; prefix between 48 and 96 (room for any
    /// IPv4 subnet's offsets).
    pub fn parse(s: &str) -> Result<Subnet6> {
        let bad = || {
            Error::InvalidArgument(format!(
                "invalid IPv6 subnet {s:?}: expected a network like fd88::/64"
            ))
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv6Addr = a.trim().parse().map_err(|_| bad())?;
        let prefix: u8 = p.trim().parse().map_err(|_| bad())?;
        if !(48..=96).contains(&prefix) {
            return Err(Error::InvalidArgument(format!(
                "invalid IPv6 subnet {s:?}: the prefix length must be between 48 and 96"
            )));
        }
        let sn = Subnet6 { addr, prefix };
        if u128::from(addr) & !sn.mask() != 0 {
            return Err(Error::InvalidArgument(format!(
                "invalid IPv6 subnet {s:?}: host bits are set (did you mean {}/{prefix}?)",
                Ipv6Addr::from(u128::from(addr) & sn.mask())
            )));
        }
        Ok(sn)
    }

    fn mask(&self) -> u128 {
        u128::MAX << (128 - u32::from(self.prefix))
    }

    /// The address at `offset` from the network address.
    pub fn nth(&self, offset: u64) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr).wrapping_add(u128::from(offset)))
    }

    /// The gateway: the first host address (`::1`).
    pub fn gateway(&self) -> Ipv6Addr {
        self.nth(1)
    }

    /// The `k`-th subnet of the same size after this one (user networks follow the default).
    pub fn sibling(&self, k: u64) -> Subnet6 {
        let step = 1u128 << (128 - u32::from(self.prefix));
        Subnet6 {
            addr: Ipv6Addr::from(
                u128::from(self.addr).wrapping_add(step.wrapping_mul(u128::from(k))),
            ),
            prefix: self.prefix,
        }
    }

    /// The IPv6 address matching `ip` of the IPv4 subnet `v4`.
    pub fn matching(&self, v4: &Subnet, ip: Ipv4Addr) -> Ipv6Addr {
        self.nth(u64::from(u32::from(ip).wrapping_sub(u32::from(v4.addr))))
    }
}

impl std::fmt::Display for Subnet6 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The allocation state of one network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    pub subnet: Subnet,
    /// The offset to try first next time.
    pub next: u64,
    /// Held addresses → holder (`ns/container-id`).
    pub held: BTreeMap<Ipv4Addr, String>,
}

impl Pool {
    /// An empty pool for `subnet`.
    pub fn new(subnet: Subnet) -> Pool {
        Pool {
            subnet,
            next: 2,
            held: BTreeMap::new(),
        }
    }

    /// Gives `holder` an address: the one it holds already, or the first free address at or
    /// after `next` (wrapping), skipping the network, gateway and broadcast addresses.
    pub fn allocate(&mut self, holder: &str) -> Result<Ipv4Addr> {
        if let Some((ip, _)) = self.held.iter().find(|(_, h)| *h == holder) {
            return Ok(*ip);
        }
        let size = self.subnet.size();
        let first = 2; // .0 is the network, .1 the gateway
        let last = size - 2; // size-1 is broadcast
        let span = last - first + 1;
        let start = if (first..=last).contains(&self.next) {
            self.next
        } else {
            first
        };
        for i in 0..span {
            let off = first + (start - first + i) % span;
            let ip = self.subnet.nth(off);
            if let std::collections::btree_map::Entry::Vacant(e) = self.held.entry(ip) {
                e.insert(holder.to_string());
                self.next = if off + 1 > last { first } else { off + 1 };
                return Ok(ip);
            }
        }
        Err(Error::Unavailable(format!(
            "no free address left in {} ({} in use): remove containers or create a network with a larger subnet",
            self.subnet,
            self.held.len()
        )))
    }

    /// Releases every address held by `holder`; returns whether it held one.
    pub fn release(&mut self, holder: &str) -> bool {
        let before = self.held.len();
        self.held.retain(|_, h| h != holder);
        before != self.held.len()
    }
}

/// Picks a /24 for a new user network: 10.89.N.0/24 for the first N that overlaps nothing taken.
pub fn pick_subnet(taken: &[Subnet]) -> Result<Subnet> {
    for second in 89..=255u8 {
        for third in 0..=255u8 {
            let s = Subnet {
                addr: Ipv4Addr::new(10, second, third, 0),
                prefix: 24,
            };
            if !taken.iter().any(|t| t.overlaps(&s)) {
                return Ok(s);
            }
        }
    }
    Err(Error::Unavailable(
        "no free 10.x.y.0/24 subnet left: pass --subnet".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let s = Subnet::parse("10.88.0.0/16").unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(s.size(), 65536);
        assert!(s.contains(Ipv4Addr::new(10, 88, 200, 3)));
        assert!(!s.contains(Ipv4Addr::new(10, 89, 0, 3)));
        assert!(Subnet::parse("10.88.0.1/16")
            .unwrap_err()
            .to_string()
            .contains("10.88.0.0/16"));
        assert!(Subnet::parse("10.88.0.0/31").is_err());
        assert!(Subnet::parse("nope").is_err());
        let t = Subnet::parse("10.88.4.0/24").unwrap();
        assert!(s.overlaps(&t) && t.overlaps(&s));
        assert!(!t.overlaps(&Subnet::parse("10.88.5.0/24").unwrap()));
    }

    #[test]
    fn allocation_never_doubles_and_does_not_reuse_at_once() {
        let mut p = Pool::new(Subnet::parse("10.1.0.0/29").unwrap()); // hosts .2 .. .6
        let a = p.allocate("a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(p.allocate("a").unwrap(), a, "same holder, same address");
        let b = p.allocate("b").unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 1, 0, 3));
        assert!(p.release("a"));
        assert!(!p.release("a"));
        // the released .2 is not handed out next
        assert_eq!(p.allocate("c").unwrap(), Ipv4Addr::new(10, 1, 0, 4));
        assert_eq!(p.allocate("d").unwrap(), Ipv4Addr::new(10, 1, 0, 5));
        assert_eq!(p.allocate("e").unwrap(), Ipv4Addr::new(10, 1, 0, 6));
        // wraps around to the free .2, skipping held .3
        assert_eq!(p.allocate("f").unwrap(), Ipv4Addr::new(10, 1, 0, 2));
        let err = p.allocate("g").unwrap_err();
        assert!(err.to_string().contains("no free address"));
        // the pool survives serialization (it lives in redb)
        let back: Pool = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn ipv6_subnets_follow_the_ipv4_pool() {
        let v4 = Subnet::parse("10.88.0.0/16").unwrap();
        let v6 = Subnet6::parse("fd88::/64").unwrap();
        assert_eq!(v6.gateway().to_string(), "fd88::1");
        assert_eq!(
            v6.matching(&v4, "10.88.1.2".parse().unwrap()).to_string(),
            "fd88::102"
        );
        assert_eq!(v6.sibling(2).to_string(), "fd88:0:0:2::/64");
        assert!(Subnet6::parse("fd88::1/64").is_err());
        assert!(Subnet6::parse("fd88::/120").is_err());
        assert!(Subnet6::parse("10.0.0.0/8").is_err());
    }

    #[test]
    fn picks_free_subnets() {
        let a = pick_subnet(&[]).unwrap();
        assert_eq!(a.to_string(), "10.89.0.0/24");
        let b = pick_subnet(&[a, Subnet::parse("10.89.1.0/24").unwrap()]).unwrap();
        assert_eq!(b.to_string(), "10.89.2.0/24");
        let c = pick_subnet(&[Subnet::parse("10.89.0.0/16").unwrap()]).unwrap();
        assert_eq!(c.to_string(), "10.90.0.0/24");
    }
}
