//! A pool: a named CIDR with a purpose, carved into blocks and prefix leases.
//!
//! The pool owns the one [`PrefixAllocator`] of its CIDR; blocks and leases are claims on
//! it. Address allocation goes block by block, in this order:
//! 1. the node's own (affine) blocks that have a free address;
//! 2. a new block claimed for the node (unless it has `maxBlocksPerNode` already);
//! 3. unless `strictAffinity`: a free address in another node's block (borrowing);
//! 4. only then, across the pools of a request: a quarantined address (oldest first).
//!
//! State can be partly loaded. The per-node block summaries say which blocks have room
//! without their bodies; when the allocator needs something that is not loaded it returns
//! [`Error::NeedLoad`] before changing anything, and the store layer loads it and asks again.
//! A fully loaded pool (kipamd, tests, benches) never returns it.
//!
//! Per node, the pool keeps the indexes that pick a block (blocks with a free address,
//! blocks with quarantine) and the summaries of the blocks whose bodies are not loaded; a
//! loaded body is its own summary and remembers its node's slot and what it put in the
//! indexes, so an allocation or release that does not change whether its block has room
//! costs no index or summary update at all.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use foldhash::HashMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::block::{AddrState, Block, BlockSummary, HandleId, Millis};
use crate::buddy::{Fit, PrefixAllocator};
use crate::error::{Error, Need, ReservedReason, Result};
use crate::prefix::{AddrRange, Family, Prefix, addr_to_u128, u128_to_addr};

/// What a pool's addresses are for.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// Pod addresses.
    Pod,
    /// Service cluster IPs.
    Service,
    /// LoadBalancer addresses.
    LoadBalancer,
    /// Node pod-CIDRs (prefix leases).
    NodeCidr,
    /// Anything else.
    #[default]
    Generic,
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Purpose::Pod => "pod",
            Purpose::Service => "service",
            Purpose::LoadBalancer => "load-balancer",
            Purpose::NodeCidr => "node-cidr",
            Purpose::Generic => "generic",
        })
    }
}

fn default_scope() -> String {
    "default".to_string()
}

fn default_reuse_delay() -> u64 {
    30
}

fn default_grace() -> u64 {
    300
}

/// A pool's configuration, as users write it (camelCase in JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolConfig {
    /// Unique name.
    pub name: String,
    /// The CIDR (host bits must be zero).
    pub cidr: IpNet,
    /// What the addresses are for.
    #[serde(default)]
    pub purpose: Purpose,
    /// Address space; overlaps are refused within a scope.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Block size as a prefix length; default /26 (IPv4) and /122 (IPv6), never shorter
    /// than the pool itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_prefix_length: Option<u8>,
    /// Addresses never handed out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusions: Vec<AddrRange>,
    /// The gateway, never handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Seconds a released address waits before dynamic reuse (0: none).
    #[serde(default = "default_reuse_delay")]
    pub reuse_delay_seconds: u64,
    /// Most blocks one node may claim (then it borrows, unless strict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_blocks_per_node: Option<u32>,
    /// Never hand out addresses from another node's blocks.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Seconds an empty block stays with its node before it goes back to the pool.
    #[serde(default = "default_grace")]
    pub empty_block_grace_seconds: u64,
}

impl PoolConfig {
    /// A config with defaults for everything but the name and CIDR.
    pub fn new(name: &str, cidr: IpNet) -> PoolConfig {
        PoolConfig {
            name: name.to_string(),
            cidr,
            purpose: Purpose::Generic,
            scope: default_scope(),
            block_prefix_length: None,
            exclusions: Vec::new(),
            gateway: None,
            reuse_delay_seconds: default_reuse_delay(),
            max_blocks_per_node: None,
            strict_affinity: false,
            empty_block_grace_seconds: default_grace(),
        }
    }

    /// The family of the CIDR.
    pub fn family(&self) -> Family {
        Family::of(self.cidr.addr())
    }

    /// The block prefix length in effect.
    pub fn block_len(&self) -> u8 {
        let default = match self.family() {
            Family::Ipv4 => 26,
            Family::Ipv6 => 122,
        };
        self.block_prefix_length
            .unwrap_or(default.max(self.cidr.prefix_len()))
    }

    /// Checks every field; the error names the field and says what would be right.
    pub fn validate(&self) -> Result<()> {
        validate_name("name", &self.name)?;
        validate_name("scope", &self.scope)?;
        let trunc = self.cidr.trunc();
        if trunc != self.cidr {
            return Err(invalid(
                "cidr",
                format!("{} has host bits set; did you mean {trunc}?", self.cidr),
            ));
        }
        let family = self.family();
        let block_len = self.block_len();
        let host_bits = family.bits().saturating_sub(block_len);
        if block_len < self.cidr.prefix_len()
            || block_len > family.bits()
            || host_bits > Block::MAX_HOST_BITS
        {
            return Err(invalid(
                "blockPrefixLength",
                format!(
                    "/{block_len} must lie between the pool's /{} and /{} and hold at most 2^{} addresses",
                    self.cidr.prefix_len(),
                    family.bits(),
                    Block::MAX_HOST_BITS
                ),
            ));
        }
        let pool = AddrRange::of_net(self.cidr);
        for ex in &self.exclusions {
            if ex.family() != family || Family::of(ex.last) != family {
                return Err(invalid("exclusions", format!("{ex} is not {family}")));
            }
            if ex.bounds().0 > ex.bounds().1 {
                return Err(invalid("exclusions", format!("{ex} ends before it starts")));
            }
            if !pool.contains(ex.first) || !pool.contains(ex.last) {
                return Err(invalid(
                    "exclusions",
                    format!("{ex} is not inside {}", self.cidr),
                ));
            }
        }
        if let Some(gw) = self.gateway
            && !pool.contains(gw)
        {
            return Err(invalid(
                "gateway",
                format!("{gw} is not inside {}", self.cidr),
            ));
        }
        Ok(())
    }
}

fn invalid(field: &str, reason: String) -> Error {
    Error::Invalid {
        field: field.to_string(),
        reason,
    }
}

/// Names are 1–253 printable ASCII characters without spaces (CNI pool names such as
/// `net1:10.22.0.0/16` must fit).
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 253 || !graphic(name.as_bytes()) {
        return Err(invalid(
            field,
            format!("{name:?} must be 1 to 253 printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

/// Whether every byte is printable ASCII other than space (`is_ascii_graphic`), eight bytes
/// at a time: this runs for every new handle key, and keys are short enough that a
/// vectorised loop spends most of its time in its scalar tail.
fn graphic(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte below 0x21 sets its high bit in the first term, one above 0x7e in the second
    // (exact as a whole-word answer, which is all that is needed).
    let bad = |w: u64| ((w.wrapping_sub(ONES * 0x21) & !w) | w.wrapping_add(ONES) | w) & HIGH != 0;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        if bad(u64::from_le_bytes(w)) {
            return false;
        }
    }
    // The tail, padded with a graphic byte.
    let mut w = [b'!'; 8];
    let tail = words.remainder();
    w[..tail.len()].copy_from_slice(tail);
    !bad(u64::from_le_bytes(w))
}

/// A prefix leased out of a pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The leased prefix.
    pub prefix: IpNet,
    /// Who holds it (e.g. `node/worker-1`, `cluster/prod-eu`).
    pub owner: String,
    /// When it was leased.
    pub created: Millis,
    /// Free-form attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
}

/// What changed since the store layer last looked (see [`Pool::take_dirty`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolDirty {
    /// Blocks were claimed or given back (the claims index changed).
    pub claims: bool,
    /// Prefix leases changed (they are kept in the claims index too).
    pub leases: bool,
    /// Blocks whose body changed (or that were removed).
    pub blocks: BTreeSet<u128>,
    /// Nodes whose summaries changed.
    pub nodes: BTreeSet<String>,
}

impl PoolDirty {
    /// Adds what `other` names (changes seen later than this set's).
    pub fn merge(&mut self, other: PoolDirty) {
        self.claims |= other.claims;
        self.leases |= other.leases;
        self.blocks.extend(other.blocks);
        self.nodes.extend(other.nodes);
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.claims && !self.leases && self.blocks.is_empty() && self.nodes.is_empty()
    }
}

/// What a block contributes to its node's indexes: whether it has a free address, and
/// when its last quarantine ends if it has quarantined addresses.
pub(crate) type IndexKey = (bool, Option<Millis>);

fn index_key(s: &BlockSummary) -> IndexKey {
    (
        s.free > 0,
        (s.quarantined > 0).then_some(s.quarantine_until),
    )
}

/// The bases of a node's blocks that have a free address, highest first. Allocation takes
/// from the lowest (the last entry), and the blocks that get room again are mostly the
/// low ones it took from lately, so changes happen near the end: a lookup searches from
/// the end, in O(log d) for a base d entries from it, and an insertion or removal shifts
/// only the entries below it, with no allocation (a B-tree set splits and merges nodes,
/// allocating, when a fill near 100% makes blocks go full and back on every operation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct FreeBlocks(Vec<u128>);

impl FreeBlocks {
    /// Where `base` is (`Ok`) or would go (`Err`). An exponential search from the end
    /// narrows the range, then a binary search finishes it: at 99% fill every allocation
    /// and every release changes a node's list, and a binary search of the whole list
    /// (~160 entries, 2.5 KB, per node of the bench's /12) read five lines in series
    /// that the cache had lost, where the changes happen within a line of the end.
    fn find(&self, base: u128) -> std::result::Result<usize, usize> {
        let v = &self.0;
        // `at`: the number of entries above `base`, within lo..=hi.
        let (mut lo, mut hi) = (0, v.len());
        let mut step = 1;
        while step <= hi {
            let j = hi - step;
            if v[j] > base {
                lo = j + 1;
                break;
            }
            hi = j;
            step *= 2;
        }
        let at = lo + v[lo..hi].partition_point(|&b| b > base);
        if v.get(at) == Some(&base) {
            Ok(at)
        } else {
            Err(at)
        }
    }

    fn insert(&mut self, base: u128) {
        if let Err(i) = self.find(base) {
            self.0.insert(i, base);
        }
    }

    fn remove(&mut self, base: u128) {
        // Most often the lowest, which the allocation just filled.
        if self.0.last() == Some(&base) {
            self.0.pop();
        } else if let Ok(i) = self.find(base) {
            self.0.remove(i);
        }
    }

    /// Lowest first.
    fn ascending(&self) -> impl Iterator<Item = u128> + '_ {
        self.0.iter().rev().copied()
    }
}

/// One node's blocks, indexed so that picking a block to allocate from costs O(log blocks)
/// whatever the fill: blocks with a free address by address, blocks with quarantined
/// addresses by when their last quarantine ends.
///
/// A loaded block's summary is its body's own (the body remembers what it put in the
/// indexes, so an operation that does not change that touches no index); only the blocks
/// whose bodies are not loaded keep a stored summary.
#[derive(Clone, Debug, Default)]
struct NodeBlocks {
    name: String,
    /// Blocks whose body is loaded.
    loaded: BTreeSet<u128>,
    /// Summaries of the blocks whose body is not loaded.
    stored: HashMap<u128, BlockSummary>,
    /// Blocks with a free address.
    free: FreeBlocks,
    /// Blocks with quarantined addresses: `(quarantine_until, base)`.
    quarantine: BTreeSet<(Millis, u128)>,
    /// Listed in `PoolDirty::nodes` already (spares a string search per operation).
    dirty: bool,
}

impl NodeBlocks {
    /// Moves `base` in the indexes from `old` to `new` (`None`: not indexed).
    fn reindex(&mut self, base: u128, old: Option<IndexKey>, new: Option<IndexKey>) {
        if old == new {
            return;
        }
        if let Some((free, quarantine)) = old {
            if free {
                self.free.remove(base);
            }
            if let Some(until) = quarantine {
                self.quarantine.remove(&(until, base));
            }
        }
        if let Some((free, quarantine)) = new {
            if free {
                self.free.insert(base);
            }
            if let Some(until) = quarantine {
                self.quarantine.insert((until, base));
            }
        }
    }

    /// Records the summary of a block whose body is not loaded (`None`: forget it).
    fn set_stored(&mut self, base: u128, s: Option<BlockSummary>) {
        let old = match s {
            Some(s) => self.stored.insert(base, s),
            None => self.stored.remove(&base),
        };
        self.reindex(base, old.as_ref().map(index_key), s.as_ref().map(index_key));
    }

    /// Number of blocks.
    fn len(&self) -> usize {
        self.loaded.len() + self.stored.len()
    }

    /// A block to try, not in `skip`: for a fresh address, one with a free address (lowest
    /// first), else one whose quarantine is over at `now`; for the last resort
    /// (`quarantined`), the one whose quarantine ends first.
    fn pick(&self, now: Millis, quarantined: bool, skip: &[u128]) -> Option<u128> {
        let fresh = |b: &u128| !skip.contains(b);
        if quarantined {
            return self.quarantine.iter().map(|&(_, b)| b).find(fresh);
        }
        self.free.ascending().find(fresh).or_else(|| {
            self.quarantine
                .range(..=(now, u128::MAX))
                .map(|&(_, b)| b)
                .find(fresh)
        })
    }
}

/// The nodes whose summaries are loaded: a slot per node, found by name once per request;
/// a loaded block body remembers its node's slot, so keeping its summary current costs no
/// name lookup.
#[derive(Clone, Debug, Default)]
struct Nodes {
    slots: HashMap<String, u32>,
    list: Vec<NodeBlocks>,
}

impl Nodes {
    fn slot(&self, name: &str) -> Option<usize> {
        self.slots.get(name).map(|&i| i as usize)
    }

    fn get(&self, name: &str) -> Option<&NodeBlocks> {
        self.list.get(self.slot(name)?)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut NodeBlocks> {
        let i = self.slot(name)?;
        self.list.get_mut(i)
    }

    /// The slot of `name`, added (with no blocks) if need be.
    fn slot_or_add(&mut self, name: &str) -> usize {
        if let Some(i) = self.slot(name) {
            return i;
        }
        self.list.push(NodeBlocks {
            name: name.to_string(),
            ..NodeBlocks::default()
        });
        let i = self.list.len() - 1;
        self.slots.insert(name.to_string(), i as u32);
        i
    }

    fn contains(&self, name: &str) -> bool {
        self.slots.contains_key(name)
    }

    fn iter(&self) -> impl Iterator<Item = &NodeBlocks> {
        self.list.iter()
    }
}

/// Which pool an undo step belongs to: the address of the pool's interned name, a stable
/// identity for the length of one request (pools are neither added nor removed during
/// one). Not an `Arc` clone: an atomic increment and decrement per step for nothing.
pub(crate) type PoolTag = usize;

/// One step of an operation, recorded so a multi-address request can be rolled back.
#[derive(Clone, Debug)]
pub(crate) enum Undo {
    Took {
        pool: PoolTag,
        block: u128,
        offset: u32,
        cursor: u32,
        quarantined: Option<Millis>,
        empty_since: Option<Millis>,
    },
    Claimed {
        pool: PoolTag,
        block: u128,
    },
}

/// A pool and its (possibly partly loaded) state.
#[derive(Clone, Debug)]
pub struct Pool {
    config: PoolConfig,
    /// The name, shared with undo records (cheaper to clone than the `String`).
    name: Arc<str>,
    prefix: Prefix,
    block_len: u8,
    /// Merged, sorted ranges of addresses never handed out (network, broadcast, gateway,
    /// exclusions, scope objects inside the pool).
    addr_excl: Vec<(u128, u128)>,
    /// Merged, sorted ranges no claim may touch (exclusions and scope objects).
    prefix_excl: Vec<(u128, u128)>,
    scope_excl: Vec<AddrRange>,
    /// Built on first need from the claims (`block_nodes`, `leases`): an operation that
    /// finds room in an existing block never pays for it (a CNI exec at 60,000 held).
    alloc: Option<PrefixAllocator>,
    block_nodes: BTreeMap<u128, String>,
    leases: BTreeMap<u128, Lease>,
    nodes: Nodes,
    all_nodes: bool,
    bodies: HashMap<u128, Block>,
    dirty: PoolDirty,
}

fn merge(mut ranges: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    ranges.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The merged range holding `v`, if any.
fn find(ranges: &[(u128, u128)], v: u128) -> Option<(u128, u128)> {
    let i = ranges.partition_point(|r| r.1 < v);
    ranges.get(i).copied().filter(|r| r.0 <= v)
}

fn fit(ranges: &[(u128, u128)], p: Prefix) -> Fit {
    let i = ranges.partition_point(|r| r.1 < p.first());
    match ranges.get(i) {
        Some(&(a, b)) if a <= p.first() && b >= p.last() => Fit::Nothing,
        Some(&(a, _)) if a <= p.last() => Fit::Partly,
        _ => Fit::Whole,
    }
}

/// Brings a block's entries in its node's indexes up to date and marks both dirty. A free
/// function over the pool's fields, so callers can hold the block borrowed meanwhile.
fn note_summary(nodes: &mut Nodes, dirty: &mut PoolDirty, base: u128, block: &mut Block) {
    let key = index_key(&block.summary());
    let slot = match nodes.list.get(block.node_slot as usize) {
        Some(_) => block.node_slot as usize,
        None => {
            // Bodies get their slot when installed; this only mends a stray one.
            let i = nodes.slot_or_add(block.node());
            block.node_slot = i as u32;
            i
        }
    };
    let Some(entry) = nodes.list.get_mut(slot) else {
        return;
    };
    if block.indexed != Some(key) {
        if block.indexed.is_none() {
            // A new body: its summary is its own from now on.
            entry.loaded.insert(base);
            let old = entry.stored.remove(&base);
            entry.reindex(base, old.as_ref().map(index_key), None);
        }
        entry.reindex(base, block.indexed, Some(key));
        block.indexed = Some(key);
    }
    if !entry.dirty {
        entry.dirty = true;
        dirty.nodes.insert(entry.name.clone());
    }
    if !block.dirty {
        block.dirty = true;
        dirty.blocks.insert(base);
    }
}

impl Pool {
    /// A new, empty pool. The config is validated.
    pub fn new(config: PoolConfig) -> Result<Pool> {
        config.validate()?;
        let prefix = Prefix::from_net(config.cidr);
        let mut pool = Pool {
            block_len: config.block_len(),
            prefix,
            addr_excl: Vec::new(),
            prefix_excl: Vec::new(),
            scope_excl: Vec::new(),
            alloc: None,
            block_nodes: BTreeMap::new(),
            leases: BTreeMap::new(),
            nodes: Nodes::default(),
            all_nodes: false,
            bodies: HashMap::default(),
            dirty: PoolDirty::default(),
            name: Arc::from(config.name.as_str()),
            config,
        };
        pool.recompute_exclusions();
        Ok(pool)
    }

    fn recompute_exclusions(&mut self) {
        let p = self.prefix;
        let clip = |r: &AddrRange| {
            let (a, b) = r.bounds();
            (a.max(p.first()), b.min(p.last()))
        };
        let mut prefix_ranges: Vec<(u128, u128)> =
            self.config.exclusions.iter().map(clip).collect();
        prefix_ranges.extend(
            self.scope_excl
                .iter()
                .filter(|r| r.intersects(&p.range()))
                .map(clip),
        );
        let mut addr_ranges = prefix_ranges.clone();
        if let Some(gw) = self.config.gateway {
            let v = addr_to_u128(gw);
            addr_ranges.push((v, v));
        }
        let (bits, len) = (p.family.bits(), p.len);
        if (p.family == Family::Ipv4 && len <= 30) || (p.family == Family::Ipv6 && len <= 126) {
            addr_ranges.push((p.first(), p.first()));
        }
        if p.family == Family::Ipv4 && len <= 30 && bits == 32 {
            addr_ranges.push((p.last(), p.last()));
        }
        self.prefix_excl = merge(prefix_ranges);
        self.addr_excl = merge(addr_ranges);
        let reserved = self.addr_excl.clone();
        for block in self.bodies.values_mut() {
            let base = block.prefix().base;
            block.set_reserved(|o| find(&reserved, base + u128::from(o)).is_some());
        }
        let bases: Vec<u128> = self.bodies.keys().copied().collect();
        for base in bases {
            self.refresh(base);
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The pool's prefix.
    pub fn prefix(&self) -> Prefix {
        self.prefix
    }

    /// Block prefix length in effect.
    pub fn block_len(&self) -> u8 {
        self.block_len
    }

    /// Replaces the settings that may change on a live pool: purpose, exclusions, gateway,
    /// reuse delay, block limits, affinity, grace. The CIDR, scope and block size may not
    /// change (existing blocks depend on them).
    pub fn update(&mut self, config: PoolConfig) -> Result<()> {
        config.validate()?;
        for (field, same) in [
            ("cidr", config.cidr == self.config.cidr),
            ("scope", config.scope == self.config.scope),
            ("blockPrefixLength", config.block_len() == self.block_len),
            ("name", config.name == self.config.name),
        ] {
            if !same {
                return Err(invalid(
                    field,
                    "cannot change on an existing pool; create a new pool".into(),
                ));
            }
        }
        self.config = config;
        self.recompute_exclusions();
        Ok(())
    }

    /// Sets the ranges of external networks and reservations of the pool's scope; they
    /// are excluded like the pool's own exclusions.
    pub fn set_scope_exclusions(&mut self, ranges: Vec<AddrRange>) {
        if ranges != self.scope_excl {
            self.scope_excl = ranges;
            self.recompute_exclusions();
        }
    }

    /// Why `addr` is never handed out, if it is not.
    pub fn reserved_reason(&self, addr: IpAddr) -> Option<ReservedReason> {
        let v = addr_to_u128(addr);
        find(&self.addr_excl, v)?;
        let p = self.prefix;
        Some(if self.config.gateway == Some(addr) {
            ReservedReason::Gateway
        } else if v == p.first() && find(&self.prefix_excl, v).is_none() {
            ReservedReason::Network
        } else if v == p.last() && p.family == Family::Ipv4 && find(&self.prefix_excl, v).is_none()
        {
            ReservedReason::Broadcast
        } else {
            ReservedReason::Excluded
        })
    }

    // ----- loading (store layer) -----

    /// Restores the claims index: blocks with their node, and leases. Fails when claims
    /// overlap (a corrupt index).
    pub fn load_claims(
        &mut self,
        blocks: &[(Prefix, String)],
        leases: Vec<Lease>,
    ) -> std::result::Result<(), String> {
        for (p, node) in blocks {
            if p.len != self.block_len || !self.prefix.covers(p) {
                return Err(format!(
                    "block {p} is not a /{} of {}",
                    self.block_len, self.prefix
                ));
            }
            if self.block_nodes.insert(p.base, node.clone()).is_some() {
                return Err(format!(
                    "block {p} is claimed twice in pool {}",
                    self.config.name
                ));
            }
        }
        for lease in leases {
            let p = Prefix::from_net(lease.prefix);
            if !self.prefix.covers(&p) {
                return Err(format!("lease {p} is not inside {}", self.prefix));
            }
            self.leases.insert(p.base, lease);
        }
        // Overlaps between claims are found when the allocator is built (on first need,
        // and by `check`), not on every load.
        self.alloc = None;
        Ok(())
    }

    /// The buddy allocator over the current claims, built from them if need be.
    fn build_allocator(&self) -> std::result::Result<PrefixAllocator, String> {
        let mut a = PrefixAllocator::new(self.prefix);
        let family = self.prefix.family;
        for &base in self.block_nodes.keys() {
            let p = Prefix {
                family,
                base,
                len: self.block_len,
            };
            a.claim(p)
                .map_err(|w| format!("block {p} overlaps {w:?} in pool {}", self.config.name))?;
        }
        for l in self.leases.values() {
            let p = Prefix::from_net(l.prefix);
            a.claim(p)
                .map_err(|w| format!("lease {p} overlaps {w:?} in pool {}", self.config.name))?;
        }
        Ok(a)
    }

    fn ensure_allocator(&mut self) -> Result<()> {
        if self.alloc.is_none() {
            let a = self
                .build_allocator()
                .map_err(|reason| invalid("claims", reason))?;
            self.alloc = Some(a);
        }
        Ok(())
    }

    /// The name, as the engine shares it (with held addresses).
    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The pool's identity in undo records (see [`PoolTag`]).
    pub(crate) fn tag(&self) -> PoolTag {
        Arc::as_ptr(&self.name).cast::<u8>() as usize
    }

    /// Restores one node's block summaries.
    pub fn load_node(&mut self, node: &str, summaries: Vec<(u128, BlockSummary)>) {
        let i = self.nodes.slot_or_add(node);
        let entry = &mut self.nodes.list[i];
        for (base, s) in summaries {
            if self.bodies.contains_key(&base) {
                continue;
            }
            entry.set_stored(base, Some(s));
        }
    }

    /// Says that every node's summaries are loaded (borrowing may look at all of them).
    pub fn mark_all_nodes_loaded(&mut self) {
        self.all_nodes = true;
    }

    /// Whether every node's summaries are loaded.
    pub fn all_nodes_loaded(&self) -> bool {
        self.all_nodes
    }

    /// Whether a node's summaries are loaded.
    pub fn node_loaded(&self, node: &str) -> bool {
        self.all_nodes || self.nodes.contains(node)
    }

    /// Whether a block's body is loaded.
    pub fn block_loaded(&self, base: u128) -> bool {
        self.bodies.contains_key(&base)
    }

    /// An empty body for a claimed block, to be filled with [`Block::load_held`] and
    /// [`Block::load_quarantined`] and handed to [`Self::load_block`].
    pub fn block_shell(&self, base: u128, now: Millis) -> Option<Block> {
        let node = self.block_nodes.get(&base)?;
        let prefix = Prefix {
            family: self.prefix.family,
            base,
            len: self.block_len,
        };
        Some(self.new_block(prefix, node, now))
    }

    fn new_block(&self, prefix: Prefix, node: &str, now: Millis) -> Block {
        let excl = &self.addr_excl;
        let mut block = Block::new(prefix, node, now, |o| {
            find(excl, prefix.base + u128::from(o)).is_some()
        });
        if let Some(i) = self.nodes.slot(node) {
            block.node_slot = i as u32;
        }
        block
    }

    /// Installs a loaded block body; its summary is recomputed from it.
    pub fn load_block(&mut self, mut block: Block) {
        // A body may come from a clone of another engine's state: it is not in this
        // pool's dirty set, whatever its flag says.
        block.dirty = false;
        let base = block.prefix().base;
        // A body replaced by a new one leaves the indexes first.
        if let Some(old) = self.bodies.remove(&base)
            && let Some(n) = self.nodes.list.get_mut(old.node_slot as usize)
        {
            n.loaded.remove(&base);
            n.reindex(base, old.indexed, None);
        }
        let i = self.nodes.slot_or_add(block.node());
        block.node_slot = i as u32;
        block.indexed = None;
        let n = &mut self.nodes.list[i];
        let key = index_key(&block.summary());
        let old = n.stored.remove(&base);
        n.reindex(base, old.as_ref().map(index_key), Some(key));
        n.loaded.insert(base);
        block.indexed = Some(key);
        self.bodies.insert(base, block);
    }

    // ----- reading -----

    /// The block base that holds `addr` (whether claimed or not).
    pub fn block_of(&self, addr: IpAddr) -> Prefix {
        Prefix::containing(self.prefix.family, addr_to_u128(addr), self.block_len)
    }

    /// A loaded block body.
    pub fn block(&self, base: u128) -> Option<&Block> {
        self.bodies.get(&base)
    }

    /// Loaded block bodies.
    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.bodies.values()
    }

    /// Every block in the claims index with its node.
    pub fn block_claims(&self) -> impl Iterator<Item = (Prefix, &str)> {
        let (family, len) = (self.prefix.family, self.block_len);
        self.block_nodes
            .iter()
            .map(move |(&base, node)| (Prefix { family, base, len }, node.as_str()))
    }

    /// Prefix leases, in address order.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    /// Nodes whose summaries are loaded.
    pub fn loaded_nodes(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.name.as_str())
    }

    /// A node's block summaries (loaded ones), in address order.
    pub fn node_summaries(&self, node: &str) -> Vec<(u128, BlockSummary)> {
        let mut all: Vec<(u128, BlockSummary)> = self
            .nodes
            .get(node)
            .map(|n| self.summaries(n).collect())
            .unwrap_or_default();
        all.sort_unstable_by_key(|(b, _)| *b);
        all
    }

    /// A node's blocks with their summaries: a loaded body's own, else the stored one.
    fn summaries<'a>(
        &'a self,
        n: &'a NodeBlocks,
    ) -> impl Iterator<Item = (u128, BlockSummary)> + 'a {
        let loaded = n
            .loaded
            .iter()
            .filter_map(|b| Some((*b, self.bodies.get(b)?.summary())));
        loaded.chain(n.stored.iter().map(|(b, s)| (*b, *s)))
    }

    /// Marks the claims index changed, so the store layer writes it again (kipamd, after
    /// claiming blocks from its log of events).
    pub fn touch_claims(&mut self) {
        self.dirty.claims = true;
    }

    /// Marks a loaded block and its node's summaries changed, so the store layer writes
    /// them again (kipamd, after rebuilding a block from its log of events). Returns
    /// false when the block is not loaded.
    pub fn touch_block(&mut self, base: u128) -> bool {
        let Some(block) = self.bodies.get_mut(&base) else {
            return false;
        };
        note_summary(&mut self.nodes, &mut self.dirty, base, block);
        true
    }

    /// What changed since the last call, and forget it.
    pub fn take_dirty(&mut self) -> PoolDirty {
        let dirty = std::mem::take(&mut self.dirty);
        for base in &dirty.blocks {
            if let Some(b) = self.bodies.get_mut(base) {
                b.dirty = false;
            }
        }
        for node in &dirty.nodes {
            if let Some(n) = self.nodes.get_mut(node) {
                n.dirty = false;
            }
        }
        dirty
    }

    /// Usage counts over the loaded state (exact when everything is loaded).
    pub fn usage(&self) -> PoolUsage {
        let mut u = PoolUsage {
            size: self.prefix.size(),
            blocks: self.block_nodes.len() as u64,
            leases: self.leases.len() as u64,
            ..PoolUsage::default()
        };
        let stored = self.nodes.iter().flat_map(|n| n.stored.values().copied());
        for s in self.bodies.values().map(Block::summary).chain(stored) {
            u.held += u128::from(s.held);
            u.quarantined += u128::from(s.quarantined);
        }
        u.leased = self
            .leases
            .keys()
            .map(|&b| self.lease_prefix(b).size())
            .sum();
        u.reserved = self
            .addr_excl
            .iter()
            .map(|(a, b)| (b - a).saturating_add(1))
            .fold(0u128, u128::saturating_add);
        u.free = u
            .size
            .saturating_sub(u.held)
            .saturating_sub(u.quarantined)
            .saturating_sub(u.reserved)
            .saturating_sub(u.leased);
        u
    }

    fn lease_prefix(&self, base: u128) -> Prefix {
        self.leases
            .get(&base)
            .map(|l| Prefix::from_net(l.prefix))
            .unwrap_or(Prefix {
                family: self.prefix.family,
                base,
                len: self.prefix.family.bits(),
            })
    }

    // ----- allocation -----

    fn refresh(&mut self, base: u128) {
        if let Some(block) = self.bodies.get_mut(&base) {
            note_summary(&mut self.nodes, &mut self.dirty, base, block);
        }
    }

    fn need_block(&self, base: u128) -> Error {
        Error::NeedLoad(Need::Block {
            pool: self.config.name.clone(),
            block: Prefix {
                family: self.prefix.family,
                base,
                len: self.block_len,
            },
        })
    }

    fn take_from(
        &mut self,
        base: u128,
        handle: HandleId,
        now: Millis,
        quarantined: bool,
        undo: &mut Vec<Undo>,
    ) -> Result<Option<u128>> {
        let Some(block) = self.bodies.get_mut(&base) else {
            return Err(self.need_block(base));
        };
        let cursor = block.cursor();
        let empty_since = block.empty_since();
        let (offset, was) = if quarantined {
            let until = block.quarantined().next().map(|(_, t)| t);
            match block.take_quarantined(handle) {
                Some(o) => (o, until),
                None => return Ok(None),
            }
        } else {
            match block.take_next(handle, now) {
                Some(o) => (o, None),
                None => {
                    // The summary was stale (quarantine not yet expired); keep it honest.
                    note_summary(&mut self.nodes, &mut self.dirty, base, block);
                    return Ok(None);
                }
            }
        };
        note_summary(&mut self.nodes, &mut self.dirty, base, block);
        undo.push(Undo::Took {
            pool: self.tag(),
            block: base,
            offset,
            cursor,
            quarantined: was,
            empty_since,
        });
        Ok(Some(base + u128::from(offset)))
    }

    /// Hands out one address to `handle` for `node` (steps 1–3 of the module doc, or step 4
    /// when `quarantined`). `Ok(None)`: nothing here.
    pub(crate) fn allocate(
        &mut self,
        handle: HandleId,
        node: &str,
        now: Millis,
        quarantined: bool,
        undo: &mut Vec<Undo>,
    ) -> Result<Option<u128>> {
        let slot = self.nodes.slot(node);
        if slot.is_none() && !self.all_nodes {
            return Err(Error::NeedLoad(Need::Node {
                pool: self.config.name.clone(),
                node: node.to_string(),
            }));
        }
        // A block is picked from the node's indexes, not from a list built per call: the
        // cost follows the blocks touched, not the node's block count or the fill. A miss
        // (a summary that promised more than the body has) is skipped from then on.
        let mut tried = Vec::new();
        while let Some(base) = slot
            .and_then(|i| self.nodes.list.get(i))
            .and_then(|n| n.pick(now, quarantined, &tried))
        {
            if let Some(v) = self.take_from(base, handle, now, quarantined, undo)? {
                return Ok(Some(v));
            }
            tried.push(base);
        }
        if !quarantined && let Some(v) = self.claim_block(handle, node, now, undo)? {
            return Ok(Some(v));
        }
        if self.config.strict_affinity {
            return Ok(None);
        }
        if !self.all_nodes {
            return Err(Error::NeedLoad(Need::AllNodes {
                pool: self.config.name.clone(),
            }));
        }
        // Borrowing: other nodes in name order, each node's blocks in address order.
        let mut others: Vec<(&str, usize)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.name != node)
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        others.sort_unstable();
        let others: Vec<usize> = others.into_iter().map(|(_, i)| i).collect();
        for other in others {
            while let Some(base) = self
                .nodes
                .list
                .get(other)
                .and_then(|n| n.pick(now, quarantined, &tried))
            {
                if let Some(v) = self.take_from(base, handle, now, quarantined, undo)? {
                    return Ok(Some(v));
                }
                tried.push(base);
            }
        }
        Ok(None)
    }

    fn claim_block(
        &mut self,
        handle: HandleId,
        node: &str,
        now: Millis,
        undo: &mut Vec<Undo>,
    ) -> Result<Option<u128>> {
        let count = self.nodes.get(node).map_or(0, NodeBlocks::len);
        if self
            .config
            .max_blocks_per_node
            .is_some_and(|m| count >= m as usize)
        {
            return Ok(None);
        }
        self.ensure_allocator()?;
        let (excl, block_len) = (&self.addr_excl, self.block_len);
        let block_fit = |c: Prefix| match fit(excl, c) {
            Fit::Partly if c.len == block_len => Fit::Whole,
            other => other,
        };
        let Some(prefix) = self
            .alloc
            .as_mut()
            .and_then(|a| a.allocate(block_len, &block_fit))
        else {
            return Ok(None);
        };
        self.install_block(prefix, node, now, undo);
        self.take_from(prefix.base, handle, now, false, undo)
    }

    fn install_block(&mut self, prefix: Prefix, node: &str, now: Millis, undo: &mut Vec<Undo>) {
        let block = self.new_block(prefix, node, now);
        self.block_nodes.insert(prefix.base, node.to_string());
        self.bodies.insert(prefix.base, block);
        self.dirty.claims = true;
        undo.push(Undo::Claimed {
            pool: self.tag(),
            block: prefix.base,
        });
        self.refresh(prefix.base);
    }

    /// Hands out exactly `addr` (a static request) to `handle`; claims its block for
    /// `node` if nobody has. `holder` names a handle for the error.
    pub(crate) fn allocate_exact(
        &mut self,
        addr: IpAddr,
        handle: HandleId,
        node: &str,
        now: Millis,
        undo: &mut Vec<Undo>,
        holder: &dyn Fn(HandleId) -> String,
    ) -> Result<()> {
        let pool = self.config.name.clone();
        let v = addr_to_u128(addr);
        if Family::of(addr) != self.prefix.family || !self.prefix.contains_value(v) {
            return Err(Error::AddressOutsidePool { addr, pool });
        }
        if let Some(reason) = self.reserved_reason(addr) {
            return Err(Error::AddressReserved { addr, pool, reason });
        }
        let block = self.block_of(addr);
        if !self.block_nodes.contains_key(&block.base) {
            self.ensure_allocator()?;
            match self
                .alloc
                .as_mut()
                .map_or(Err(Vec::new()), |a| a.claim(block))
            {
                Ok(()) => self.install_block(block, node, now, undo),
                Err(in_the_way) => {
                    let lease = in_the_way
                        .into_iter()
                        .find(|p| p.contains_value(v))
                        .unwrap_or(block);
                    return Err(Error::AddressInLease { addr, pool, lease });
                }
            }
        }
        let Some(body) = self.bodies.get_mut(&block.base) else {
            return Err(self.need_block(block.base));
        };
        let offset = (v - block.base) as u32;
        // Expire first, so that an address whose quarantine is over is taken (and undone)
        // as free, and so that the summary refreshed below matches the body whether the
        // take succeeds or not (expiring is a change even when the request is refused).
        body.expire(now);
        let cursor = body.cursor();
        let empty_since = body.empty_since();
        let was = match body.state(offset) {
            AddrState::Quarantined(t) => Some(t),
            _ => None,
        };
        let taken = body.take_exact(offset, handle, now);
        note_summary(&mut self.nodes, &mut self.dirty, block.base, body);
        match taken {
            Ok(()) => {
                undo.push(Undo::Took {
                    pool: self.tag(),
                    block: block.base,
                    offset,
                    cursor,
                    quarantined: was,
                    empty_since,
                });
                Ok(())
            }
            Err(AddrState::Held(h)) => Err(Error::AddressInUse {
                addr,
                holder: holder(h),
            }),
            Err(_) => Err(Error::AddressReserved {
                addr,
                pool,
                reason: ReservedReason::Excluded,
            }),
        }
    }

    pub(crate) fn undo(&mut self, step: &Undo) {
        match step {
            Undo::Took {
                block,
                offset,
                cursor,
                quarantined,
                empty_since,
                ..
            } => {
                if let Some(b) = self.bodies.get_mut(block) {
                    b.untake(*offset, *cursor, *quarantined, *empty_since);
                }
                self.refresh(*block);
            }
            Undo::Claimed { block, .. } => {
                self.remove_block(*block);
            }
        }
    }

    fn remove_block(&mut self, base: u128) {
        let prefix = Prefix {
            family: self.prefix.family,
            base,
            len: self.block_len,
        };
        if let Some(a) = self.alloc.as_mut() {
            a.release(prefix);
        }
        if let Some(body) = self.bodies.remove(&base)
            && let Some(n) = self.nodes.list.get_mut(body.node_slot as usize)
        {
            n.loaded.remove(&base);
            n.reindex(base, body.indexed, None);
        }
        if let Some(node) = self.block_nodes.remove(&base) {
            if let Some(n) = self.nodes.get_mut(&node) {
                n.set_stored(base, None);
            }
            self.dirty.nodes.insert(node);
        }
        self.dirty.claims = true;
        self.dirty.blocks.insert(base);
    }

    /// Releases `addr` if `holder` holds it (any holder when `None`): quarantined for the
    /// reuse delay, or free at once when the delay is 0. Returns the handle that held it
    /// (`None`: it was not held, or not by `holder`).
    pub(crate) fn release_if(
        &mut self,
        addr: IpAddr,
        holder: Option<HandleId>,
        now: Millis,
    ) -> Result<Option<HandleId>> {
        let v = addr_to_u128(addr);
        if Family::of(addr) != self.prefix.family || !self.prefix.contains_value(v) {
            return Ok(None);
        }
        let base = self.block_of(addr).base;
        let Some(body) = self.bodies.get_mut(&base) else {
            if self.block_nodes.contains_key(&base) {
                return Err(self.need_block(base));
            }
            return Ok(None);
        };
        let offset = (v - base) as u32;
        if let Some(h) = holder
            && body.state(offset) != AddrState::Held(h)
        {
            return Ok(None);
        }
        let until = now.saturating_add(self.config.reuse_delay_seconds.saturating_mul(1000));
        let released = body.release(offset, now, until);
        if released.is_some() {
            note_summary(&mut self.nodes, &mut self.dirty, base, body);
        }
        Ok(released)
    }

    /// Whether the block at `base` is claimed (loaded or not).
    pub fn block_claimed(&self, base: u128) -> bool {
        self.bodies.contains_key(&base) || self.block_nodes.contains_key(&base)
    }

    /// Gives blocks back to the pool that have held nothing for the grace period and have
    /// no quarantine left. Looks at loaded nodes only; needs no bodies.
    pub fn reclaim_empty_blocks(&mut self, now: Millis) -> Vec<Prefix> {
        let grace = self.config.empty_block_grace_seconds.saturating_mul(1000);
        let mut gone = Vec::new();
        for n in self.nodes.iter() {
            for (base, s) in self.summaries(n) {
                let expired = s
                    .empty_since
                    .is_some_and(|t| t.saturating_add(grace) <= now);
                if s.held == 0 && expired && (s.quarantined == 0 || s.quarantine_until <= now) {
                    gone.push(base);
                }
            }
        }
        gone.sort_unstable();
        let family = self.prefix.family;
        gone.into_iter()
            .map(|base| {
                self.remove_block(base);
                Prefix {
                    family,
                    base,
                    len: self.block_len,
                }
            })
            .collect()
    }

    // ----- prefix leases -----

    /// Leases the lowest free prefix of length `len` to `owner`, avoiding exclusions.
    pub fn lease(
        &mut self,
        len: u8,
        owner: &str,
        attrs: BTreeMap<String, String>,
        now: Millis,
    ) -> Result<Lease> {
        if len < self.prefix.len || len > self.prefix.family.bits() {
            return Err(invalid(
                "prefixLength",
                format!(
                    "/{len} must lie between the pool's /{} and /{}",
                    self.prefix.len,
                    self.prefix.family.bits()
                ),
            ));
        }
        self.ensure_allocator()?;
        let excl = &self.prefix_excl;
        let lease_fit = |c: Prefix| fit(excl, c);
        let Some(p) = self
            .alloc
            .as_mut()
            .and_then(|a| a.allocate(len, &lease_fit))
        else {
            return Err(Error::NoRoomForPrefix {
                pool: self.config.name.clone(),
                len,
                largest: self.largest_free(),
            });
        };
        Ok(self.record_lease(p, owner, attrs, now))
    }

    /// Leases exactly `prefix` to `owner`.
    pub fn lease_exact(
        &mut self,
        prefix: IpNet,
        owner: &str,
        attrs: BTreeMap<String, String>,
        now: Millis,
    ) -> Result<Lease> {
        let p = Prefix::from_net(prefix);
        if !self.prefix.covers(&p) {
            return Err(invalid(
                "prefix",
                format!("{prefix} is not inside pool {}", self.config.cidr),
            ));
        }
        if fit(&self.prefix_excl, p) != Fit::Whole {
            return Err(invalid(
                "prefix",
                format!(
                    "{prefix} overlaps an exclusion of pool {}",
                    self.config.name
                ),
            ));
        }
        self.ensure_allocator()?;
        if let Err(in_the_way) = self.alloc.as_mut().map_or(Err(Vec::new()), |a| a.claim(p)) {
            let taken_by = in_the_way
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::PrefixTaken {
                pool: self.config.name.clone(),
                prefix,
                taken_by,
            });
        }
        Ok(self.record_lease(p, owner, attrs, now))
    }

    fn record_lease(
        &mut self,
        p: Prefix,
        owner: &str,
        attrs: BTreeMap<String, String>,
        now: Millis,
    ) -> Lease {
        let lease = Lease {
            prefix: p.to_net(),
            owner: owner.to_string(),
            created: now,
            attrs,
        };
        self.leases.insert(p.base, lease.clone());
        self.dirty.leases = true;
        lease
    }

    /// Ends the lease of exactly `prefix`; returns it, or `None` if there was none.
    pub fn release_lease(&mut self, prefix: IpNet) -> Option<Lease> {
        let p = Prefix::from_net(prefix);
        let lease = self
            .leases
            .get(&p.base)
            .filter(|l| l.prefix == prefix)?
            .clone();
        self.leases.remove(&p.base);
        if let Some(a) = self.alloc.as_mut() {
            a.release(p);
        }
        self.dirty.leases = true;
        Some(lease)
    }

    /// The largest free prefix.
    pub fn largest_free(&self) -> Option<Prefix> {
        match &self.alloc {
            Some(a) => a.largest_free(),
            None => self.build_allocator().ok()?.largest_free(),
        }
    }

    /// Checks the pool's invariants over its loaded state.
    pub fn check(&self) -> std::result::Result<(), String> {
        let built;
        let alloc = match &self.alloc {
            Some(a) => a,
            None => {
                built = self.build_allocator()?;
                &built
            }
        };
        alloc.check()?;
        let claims: BTreeSet<u128> = alloc.claims().map(|p| p.base).collect();
        let recorded: BTreeSet<u128> = self
            .block_nodes
            .keys()
            .chain(self.leases.keys())
            .copied()
            .collect();
        if claims != recorded {
            return Err(format!(
                "pool {}: claims index disagrees with blocks and leases",
                self.config.name
            ));
        }
        for (base, body) in &self.bodies {
            body.check()?;
            let node = self
                .block_nodes
                .get(base)
                .ok_or_else(|| format!("block {} not claimed", body.prefix()))?;
            if node != body.node() {
                return Err(format!("block {} affinity disagrees", body.prefix()));
            }
            let key = index_key(&body.summary());
            let indexed = self
                .nodes
                .list
                .get(body.node_slot as usize)
                .filter(|n| n.name == *node)
                .is_some_and(|n| n.loaded.contains(base) && !n.stored.contains_key(base));
            if body.indexed != Some(key) || !indexed {
                return Err(format!(
                    "block {} summary disagrees with its node's index",
                    body.prefix()
                ));
            }
        }
        for n in self.nodes.iter() {
            let mut free = BTreeSet::new();
            let mut quarantine = BTreeSet::new();
            for (base, s) in self.summaries(n) {
                let (has_free, until) = index_key(&s);
                if has_free {
                    free.insert(base);
                }
                if let Some(t) = until {
                    quarantine.insert((t, base));
                }
            }
            if !free.into_iter().eq(n.free.ascending()) || quarantine != n.quarantine {
                return Err(format!(
                    "pool {}: node {}'s index disagrees with its blocks",
                    self.config.name, n.name
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn addr(&self, value: u128) -> IpAddr {
        u128_to_addr(self.prefix.family, value)
    }
}

/// Address counts of a pool. `size = free + held + quarantined + reserved + leased`
/// (saturating for huge IPv6 pools).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    /// All addresses of the CIDR.
    pub size: u128,
    /// Held by handles.
    pub held: u128,
    /// Free.
    pub free: u128,
    /// In quarantine.
    pub quarantined: u128,
    /// Never handed out.
    pub reserved: u128,
    /// Inside prefix leases.
    pub leased: u128,
    /// Blocks claimed.
    pub blocks: u64,
    /// Prefix leases.
    pub leases: u64,
}

impl PoolUsage {
    /// Share of the usable addresses that are held, quarantined or leased, in percent.
    pub fn percent_used(&self) -> f64 {
        let usable = self.size.saturating_sub(self.reserved);
        if usable == 0 {
            return 100.0;
        }
        let used = self.held + self.quarantined + self.leased;
        (used as f64) * 100.0 / (usable as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::{FreeBlocks, graphic};
    use proptest::prelude::*;

    proptest! {
        /// The search from the end finds what a binary search of the whole list finds,
        /// for bases in the list, between its entries and beyond both ends.
        #[test]
        fn free_blocks_find_agrees_with_binary_search(
            bases in proptest::collection::btree_set(0u128..4_000, 0..300),
            probes in proptest::collection::vec(0u128..4_100, 1..50),
        ) {
            let list = FreeBlocks(bases.iter().rev().copied().collect());
            for base in probes.into_iter().chain(bases.iter().copied()) {
                prop_assert_eq!(
                    list.find(base),
                    list.0.binary_search_by(|probe| base.cmp(probe)),
                    "base {}", base
                );
            }
        }
    }

    #[test]
    fn free_blocks_insert_and_remove_keep_the_order() {
        let mut list = FreeBlocks::default();
        for base in [5, 1, 9, 3, 7, 3, 0, 10] {
            list.insert(base);
        }
        assert_eq!(list.0, [10, 9, 7, 5, 3, 1, 0]);
        for base in [0, 10, 4, 5] {
            list.remove(base);
        }
        assert_eq!(list.0, [9, 7, 3, 1]);
        assert_eq!(list.ascending().collect::<Vec<_>>(), [1, 3, 7, 9]);
    }

    #[test]
    fn graphic_agrees_with_is_ascii_graphic() {
        for b in 0..=255u8 {
            for at in 0..11 {
                let mut name = vec![b'a'; 11];
                name[at] = b;
                assert_eq!(
                    graphic(&name),
                    b.is_ascii_graphic(),
                    "byte {b:#04x} at {at}"
                );
                assert_eq!(graphic(&name[..at + 1]), b.is_ascii_graphic());
            }
        }
        assert!(graphic(b""));
        assert!(graphic(b"cni-net/0123456789abcdef/eth0"));
    }
}
