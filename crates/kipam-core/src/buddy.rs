//! The one prefix allocator: carves a pool's CIDR into aligned sub-prefixes.
//!
//! Blocks (fixed size, for address allocation) and prefix leases (any size: node pod-CIDRs,
//! cluster subnets) both come out of this allocator, so they can never overlap.
//!
//! It is a buddy allocator: free space is kept as lists of free aligned prefixes, one list
//! per prefix length. Claiming splits a free prefix in halves down to the wanted length;
//! releasing merges a prefix with its free buddy back up. Nothing enumerates the pool, so
//! memory and time depend on the number of claims (times the prefix depth), never on the
//! pool's size: an IPv6 /48 pool with a thousand /64 leases costs the same as an IPv4 /16
//! with a thousand /24s.

use std::collections::{BTreeMap, BTreeSet};

use crate::prefix::Prefix;

/// How much of a candidate prefix a caller may use (see [`PrefixAllocator::allocate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Every sub-prefix is usable: take the lowest.
    Whole,
    /// Nothing inside is usable: skip it.
    Nothing,
    /// Some parts are usable: look at the halves.
    Partly,
}

/// The claims on a pool's CIDR and the free space between them.
#[derive(Clone, Debug)]
pub struct PrefixAllocator {
    root: Prefix,
    /// Free aligned prefixes, indexed by prefix length.
    free: Vec<BTreeSet<u128>>,
    /// Claimed prefixes: base -> length.
    claimed: BTreeMap<u128, u8>,
    claimed_size: u128,
}

impl PrefixAllocator {
    /// An allocator over `root` with nothing claimed.
    pub fn new(root: Prefix) -> PrefixAllocator {
        let mut free = vec![BTreeSet::new(); usize::from(root.family.bits()) + 1];
        free[usize::from(root.len)].insert(root.base);
        PrefixAllocator {
            root,
            free,
            claimed: BTreeMap::new(),
            claimed_size: 0,
        }
    }

    /// The prefix this allocator carves.
    pub fn root(&self) -> Prefix {
        self.root
    }

    /// Number of addresses claimed (saturating).
    pub fn claimed_size(&self) -> u128 {
        self.claimed_size
    }

    /// Number of claims.
    pub fn claim_count(&self) -> usize {
        self.claimed.len()
    }

    /// Every claim, in address order.
    pub fn claims(&self) -> impl Iterator<Item = Prefix> + '_ {
        let family = self.root.family;
        self.claimed
            .iter()
            .map(move |(&base, &len)| Prefix { family, base, len })
    }

    /// Whether `p` is claimed exactly.
    pub fn is_claimed(&self, p: Prefix) -> bool {
        self.claimed.get(&p.base) == Some(&p.len)
    }

    /// The claim that holds `value`, if any.
    pub fn claim_containing(&self, value: u128) -> Option<Prefix> {
        let (&base, &len) = self.claimed.range(..=value).next_back()?;
        let p = Prefix {
            family: self.root.family,
            base,
            len,
        };
        p.contains_value(value).then_some(p)
    }

    /// Claims that intersect `p`, in address order.
    pub fn claims_intersecting(&self, p: Prefix) -> Vec<Prefix> {
        let family = self.root.family;
        let mut out: Vec<Prefix> = self.claim_containing(p.first()).into_iter().collect();
        out.extend(
            self.claimed
                .range(p.first()..=p.last())
                .map(|(&base, &len)| Prefix { family, base, len }),
        );
        out.sort();
        out.dedup();
        out
    }

    /// Claims the lowest free prefix of length `len` that `fit` accepts, preferring free
    /// space of exactly that size (buddy best fit) so that large prefixes stay whole.
    ///
    /// `fit` is asked about candidate prefixes from the largest down; it returns
    /// [`Fit::Partly`] to have a candidate split. Returns `None` when nothing fits.
    pub fn allocate(&mut self, len: u8, fit: &dyn Fn(Prefix) -> Fit) -> Option<Prefix> {
        if len < self.root.len || len > self.root.family.bits() {
            return None;
        }
        let family = self.root.family;
        for level in (self.root.len..=len).rev() {
            for &base in &self.free[usize::from(level)] {
                let candidate = Prefix {
                    family,
                    base,
                    len: level,
                };
                if let Some(found) = search(candidate, len, fit) {
                    self.claim_free(found);
                    return Some(found);
                }
            }
        }
        None
    }

    /// Claims exactly `p`. Returns the claims in the way when any part of `p` is taken,
    /// or an empty list when `p` is outside the root.
    pub fn claim(&mut self, p: Prefix) -> Result<(), Vec<Prefix>> {
        if !self.root.covers(&p) {
            return Err(Vec::new());
        }
        if self.free_ancestor(p).is_none() {
            return Err(self.claims_intersecting(p));
        }
        self.claim_free(p);
        Ok(())
    }

    /// Releases the claim `p` (exactly as claimed). Returns false when `p` is not a claim.
    pub fn release(&mut self, p: Prefix) -> bool {
        if !self.is_claimed(p) {
            return false;
        }
        self.claimed.remove(&p.base);
        self.claimed_size = self.claimed_size.saturating_sub(p.size());
        let (mut base, mut len) = (p.base, p.len);
        while len > self.root.len {
            let bit = 1u128 << (self.root.family.bits() - len);
            let buddy = base ^ bit;
            if !self.free[usize::from(len)].remove(&buddy) {
                break;
            }
            base &= !bit;
            len -= 1;
        }
        self.free[usize::from(len)].insert(base);
        true
    }

    /// The free prefix that contains `p`, if `p` is entirely free.
    fn free_ancestor(&self, p: Prefix) -> Option<Prefix> {
        (self.root.len..=p.len).rev().find_map(|level| {
            let anc = Prefix::containing(self.root.family, p.base, level);
            self.free[usize::from(level)]
                .contains(&anc.base)
                .then_some(anc)
        })
    }

    /// Claims `p`, which must lie inside a free prefix: splits that prefix down to `p`.
    fn claim_free(&mut self, p: Prefix) {
        let Some(anc) = self.free_ancestor(p) else {
            return;
        };
        self.free[usize::from(anc.len)].remove(&anc.base);
        let bits = self.root.family.bits();
        for level in anc.len + 1..=p.len {
            // The half at this level that does not hold `p` stays free.
            let bit = 1u128 << (bits - level);
            let here = Prefix::containing(self.root.family, p.base, level).base;
            self.free[usize::from(level)].insert(here ^ bit);
        }
        self.claimed.insert(p.base, p.len);
        self.claimed_size = self.claimed_size.saturating_add(p.size());
    }

    /// Checks the internal invariants (used by tests and the store's integrity check):
    /// claims and free prefixes tile the root exactly, without overlap.
    pub fn check(&self) -> Result<(), String> {
        let family = self.root.family;
        let mut pieces: Vec<Prefix> = self.claims().collect();
        for (len, set) in self.free.iter().enumerate() {
            for &base in set {
                let len = u8::try_from(len).map_err(|_| "prefix length overflow".to_string())?;
                pieces.push(Prefix { family, base, len });
            }
        }
        pieces.sort();
        let mut next = self.root.first();
        let mut done = false;
        for p in &pieces {
            if done || p.first() != next {
                return Err(format!("gap or overlap at {p} in {}", self.root));
            }
            if p.last() == self.root.last() {
                done = true;
            } else {
                next = p.last() + 1;
            }
        }
        if !done {
            return Err(format!("claims and free space do not cover {}", self.root));
        }
        Ok(())
    }

    /// The largest free prefix length available (smallest number), if any space is free.
    pub fn largest_free(&self) -> Option<Prefix> {
        let family = self.root.family;
        self.free.iter().enumerate().find_map(|(len, set)| {
            let base = *set.iter().next()?;
            Some(Prefix {
                family,
                base,
                len: u8::try_from(len).ok()?,
            })
        })
    }
}

/// The lowest sub-prefix of length `len` in `candidate` that `fit` accepts.
fn search(candidate: Prefix, len: u8, fit: &dyn Fn(Prefix) -> Fit) -> Option<Prefix> {
    match fit(candidate) {
        Fit::Nothing => None,
        Fit::Whole => Some(Prefix {
            family: candidate.family,
            base: candidate.base,
            len,
        }),
        Fit::Partly if candidate.len >= len => None,
        Fit::Partly => {
            let child_len = candidate.len + 1;
            let low = Prefix {
                len: child_len,
                ..candidate
            };
            let high = Prefix {
                base: candidate.base | (1u128 << (candidate.family.bits() - child_len)),
                ..low
            };
            search(low, len, fit).or_else(|| search(high, len, fit))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        Prefix::from_net(s.parse().expect("test CIDR"))
    }

    fn any(_: Prefix) -> Fit {
        Fit::Whole
    }

    #[test]
    fn allocates_lowest_and_merges_back() {
        let mut a = PrefixAllocator::new(p("10.0.0.0/8"));
        let first = a.allocate(24, &any).expect("room");
        let second = a.allocate(24, &any).expect("room");
        assert_eq!(first, p("10.0.0.0/24"));
        assert_eq!(second, p("10.0.1.0/24"));
        a.check().expect("tiling");
        assert!(a.release(first));
        assert!(a.release(second));
        a.check().expect("tiling");
        assert_eq!(a.largest_free(), Some(p("10.0.0.0/8")));
    }

    #[test]
    fn prefers_exact_size_fragments() {
        let mut a = PrefixAllocator::new(p("10.0.0.0/16"));
        let x = a.allocate(24, &any).expect("room");
        let _y = a.allocate(24, &any).expect("room");
        assert!(a.release(x));
        // A /24 goes into the freed hole, not into a split of the larger free space.
        assert_eq!(a.allocate(24, &any), Some(x));
    }

    #[test]
    fn claim_reports_what_is_in_the_way() {
        let mut a = PrefixAllocator::new(p("10.0.0.0/16"));
        a.claim(p("10.0.4.0/22")).expect("free");
        assert_eq!(a.claim(p("10.0.5.0/24")), Err(vec![p("10.0.4.0/22")]));
        assert_eq!(a.claim(p("10.0.0.0/16")), Err(vec![p("10.0.4.0/22")]));
        assert_eq!(a.claim(p("10.1.0.0/24")), Err(vec![]));
        a.claim(p("10.0.8.0/24")).expect("free");
        a.check().expect("tiling");
    }

    #[test]
    fn fit_skips_excluded_space() {
        let mut a = PrefixAllocator::new(p("10.0.0.0/16"));
        let excluded = p("10.0.0.0/17");
        let fit = |c: Prefix| {
            if excluded.covers(&c) {
                Fit::Nothing
            } else if c.covers(&excluded) {
                Fit::Partly
            } else {
                Fit::Whole
            }
        };
        assert_eq!(a.allocate(24, &fit), Some(p("10.0.128.0/24")));
    }

    #[test]
    fn ipv6_at_full_size_costs_per_claim() {
        let mut a = PrefixAllocator::new(p("fd00::/48"));
        for _ in 0..1000 {
            a.allocate(64, &any).expect("room");
        }
        assert_eq!(a.claim_count(), 1000);
        let free_entries: usize = a.free.iter().map(BTreeSet::len).sum();
        assert!(free_entries <= 16, "free list stays small: {free_entries}");
        let all = PrefixAllocator::new(p("::/0"));
        assert_eq!(all.largest_free(), Some(p("::/0")));
    }
}
