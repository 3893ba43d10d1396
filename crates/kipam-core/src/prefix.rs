//! Prefix math on 128-bit integers, so IPv4 and IPv6 share one code path.
//!
//! An IPv4 address is held as its 32-bit value widened to `u128`; the [`Family`] says how
//! many bits are significant. Every range is inclusive (`first..=last`) because the last
//! IPv6 address, `u128::MAX`, has no exclusive end.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4: 32-bit addresses.
    Ipv4,
    /// IPv6: 128-bit addresses.
    Ipv6,
}

impl Family {
    /// Address width in bits (32 or 128).
    pub fn bits(self) -> u8 {
        match self {
            Family::Ipv4 => 32,
            Family::Ipv6 => 128,
        }
    }

    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
    }
}

/// An address as a number.
pub fn addr_to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// A number as an address of `family`. For IPv4 only the low 32 bits are used; callers
/// only pass values that came from IPv4 prefixes.
pub fn u128_to_addr(family: Family, value: u128) -> IpAddr {
    match family {
        // Truncation is the intent: IPv4 values never exceed 32 bits here.
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// An inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AddrRange {
    /// First address in the range.
    pub first: IpAddr,
    /// Last address in the range (inclusive).
    pub last: IpAddr,
}

impl AddrRange {
    /// A range from `first` to `last`; `None` if the families differ or `first > last`.
    pub fn new(first: IpAddr, last: IpAddr) -> Option<AddrRange> {
        if Family::of(first) != Family::of(last) || addr_to_u128(first) > addr_to_u128(last) {
            return None;
        }
        Some(AddrRange { first, last })
    }

    /// The range a network covers.
    pub fn of_net(net: IpNet) -> AddrRange {
        let p = Prefix::from_net(net);
        AddrRange {
            first: u128_to_addr(p.family, p.first()),
            last: u128_to_addr(p.family, p.last()),
        }
    }

    /// The family of the range.
    pub fn family(&self) -> Family {
        Family::of(self.first)
    }

    /// `(first, last)` as numbers.
    pub fn bounds(&self) -> (u128, u128) {
        (addr_to_u128(self.first), addr_to_u128(self.last))
    }

    /// Whether the ranges share an address.
    pub fn intersects(&self, other: &AddrRange) -> bool {
        self.intersection(other).is_some()
    }

    /// The addresses both ranges hold, if any.
    pub fn intersection(&self, other: &AddrRange) -> Option<AddrRange> {
        if self.family() != other.family() {
            return None;
        }
        let (a0, a1) = self.bounds();
        let (b0, b1) = other.bounds();
        let (lo, hi) = (a0.max(b0), a1.min(b1));
        (lo <= hi).then(|| AddrRange {
            first: u128_to_addr(self.family(), lo),
            last: u128_to_addr(self.family(), hi),
        })
    }

    /// Whether `addr` is inside the range.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let (a0, a1) = self.bounds();
        Family::of(addr) == self.family() && (a0..=a1).contains(&addr_to_u128(addr))
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A CIDR prefix as numbers: the network value, its length and family.
///
/// The base is always aligned (host bits zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    /// Address family.
    pub family: Family,
    /// The network address as a number.
    pub base: u128,
    /// Prefix length in bits.
    pub len: u8,
}

impl Prefix {
    /// The prefix of a network, with host bits cleared.
    pub fn from_net(net: IpNet) -> Prefix {
        let net = net.trunc();
        Prefix {
            family: Family::of(net.addr()),
            base: addr_to_u128(net.addr()),
            len: net.prefix_len(),
        }
    }

    /// A prefix from numbers; `None` if `len` is too long or `base` is not aligned.
    pub fn new(family: Family, base: u128, len: u8) -> Option<Prefix> {
        let p = Prefix { family, base, len };
        (len <= family.bits() && base & p.host_mask() == 0 && base <= max_value(family))
            .then_some(p)
    }

    /// Number of host bits (`bits - len`).
    pub fn host_bits(&self) -> u8 {
        self.family.bits() - self.len
    }

    /// Mask of the host bits.
    pub fn host_mask(&self) -> u128 {
        match self.host_bits() {
            128 => u128::MAX,
            h => (1u128 << h) - 1,
        }
    }

    /// Number of addresses, saturating at `u128::MAX` for `::/0`.
    pub fn size(&self) -> u128 {
        self.host_mask().saturating_add(1)
    }

    /// First address (the network address).
    pub fn first(&self) -> u128 {
        self.base
    }

    /// Last address.
    pub fn last(&self) -> u128 {
        self.base | self.host_mask()
    }

    /// Whether `value` (same family) lies in the prefix.
    pub fn contains_value(&self, value: u128) -> bool {
        (self.first()..=self.last()).contains(&value)
    }

    /// Whether `other` lies entirely within `self`.
    pub fn covers(&self, other: &Prefix) -> bool {
        self.family == other.family && other.len >= self.len && self.contains_value(other.base)
    }

    /// The prefix of length `len` (≤ `bits`) that contains `value`.
    pub fn containing(family: Family, value: u128, len: u8) -> Prefix {
        let host_bits = family.bits() - len;
        let mask = match host_bits {
            128 => u128::MAX,
            h => (1u128 << h) - 1,
        };
        Prefix {
            family,
            base: value & !mask,
            len,
        }
    }

    /// The prefix as an `ipnet` network.
    pub fn to_net(&self) -> IpNet {
        match u128_to_addr(self.family, self.base) {
            // `len` is bounded by the family's width by construction.
            IpAddr::V4(a) => IpNet::V4(Ipv4Net::new_assert(a, self.len)),
            IpAddr::V6(a) => IpNet::V6(Ipv6Net::new_assert(a, self.len)),
        }
    }

    /// The address range the prefix covers.
    pub fn range(&self) -> AddrRange {
        AddrRange {
            first: u128_to_addr(self.family, self.first()),
            last: u128_to_addr(self.family, self.last()),
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_net())
    }
}

/// The largest address value of a family.
pub fn max_value(family: Family) -> u128 {
    match family {
        Family::Ipv4 => u128::from(u32::MAX),
        Family::Ipv6 => u128::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test CIDR")
    }

    #[test]
    fn prefix_bounds_v4_and_v6() {
        let p = Prefix::from_net(net("10.1.2.3/24"));
        assert_eq!(p.to_net(), net("10.1.2.0/24"));
        assert_eq!(p.size(), 256);
        assert_eq!(u128_to_addr(p.family, p.last()).to_string(), "10.1.2.255");

        let all = Prefix::from_net(net("::/0"));
        assert_eq!(all.last(), u128::MAX);
        assert_eq!(all.size(), u128::MAX);

        let p64 = Prefix::from_net(net("fd00:1::/64"));
        assert_eq!(p64.size(), 1u128 << 64);
        assert!(p64.covers(&Prefix::from_net(net("fd00:1::40/122"))));
        assert!(!p64.covers(&Prefix::from_net(net("fd00:2::/122"))));
    }

    #[test]
    fn new_rejects_unaligned_or_too_long() {
        assert!(Prefix::new(Family::Ipv4, 1, 24).is_none());
        assert!(Prefix::new(Family::Ipv4, 0, 33).is_none());
        assert!(Prefix::new(Family::Ipv4, 1 << 32, 32).is_none());
        assert!(Prefix::new(Family::Ipv6, 0, 128).is_some());
    }

    #[test]
    fn ranges_intersect_within_family_only() {
        let a = AddrRange::of_net(net("10.0.0.0/16"));
        let b = AddrRange::of_net(net("10.0.255.0/24"));
        let c = AddrRange::of_net(net("::/0"));
        assert_eq!(a.intersection(&b), Some(b));
        assert!(!a.intersects(&c));
        assert!(
            AddrRange::new(
                "10.0.0.2".parse().expect("ip"),
                "10.0.0.1".parse().expect("ip")
            )
            .is_none()
        );
    }
}
