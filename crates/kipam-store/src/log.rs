//! kipamd's event log as the record of recent changes, and the fold watermark.
//!
//! kipamd writes an event (`events/{seq}`) for every allocate, release and reclaim, in the
//! commit that makes the change. The records such a change touches — the handle, the
//! block body, the node summary — are the costly part of a commit: each lands on its own
//! B-tree page (random handle keys split leaves all over the table), and every page written
//! goes to the WAL and again to the main file. So kipamd writes them later than the change,
//! in a **fold**: at most every second it takes the set of records changed since the last
//! fold and writes them, a slice per commit so no commit stalls, each as the engine holds
//! it *then*; when the last slice is written, the watermark [`FOLDED_KEY`] moves to the
//! seq the set was taken at. A record changed many times between folds is written once.
//!
//! Every record therefore holds its state as of some moment at or after the watermark, and
//! the events after it — the **tail** — say what happened since. A full load
//! ([`crate::IpamStore::load_all`]) applies the tail, oldest first, to what it read. The
//! application is idempotent, so it does not matter which of those moments a record holds:
//! - allocate (handle, pool, address, node, attributes, time): the handle holds the address
//!   (a handle that held nothing takes the event's node, attributes and time as new), and
//!   the block gives the address to the handle, taking it from whoever the record shows
//!   (the later events put that right) and moving the next-fit cursor past it;
//! - release and reclaim: the handle no longer holds the address (a handle left with none
//!   is deleted); the block frees it, quarantined for the pool's reuse delay from the
//!   event's time, if the handle holds it there.
//!
//! The last event about an address or a handle decides its state, whatever the record held.
//! Block claims wait for the fold as well: the claims index records the seq it is complete
//! up to ([`crate::codec::ClaimsRecord::seq`]), and a block it does not name whose first
//! allocate event after that seq is in the tail was claimed by that event's node (only the
//! node that claims a block allocates in it before the claim, and it claims by allocating).
//! Such a block has no body yet and starts empty. Records the load rebuilt come back
//! marked changed, for the next fold.
//!
//! What keeps this exact (kipamd's writer keeps these rules; `crates/kipam-server/src/
//! engine.rs`, `Writer::batch`):
//! - every change of which addresses a handle or a block holds is an event in the same
//!   commit (a quarantine entry that expires needs none: expiry follows from the time);
//! - a claims index that only grew is written by the first slice of the next fold, with
//!   the seq of that commit's last event; a claims index that shrank (a block given back)
//!   or whose leases changed is written, complete, in the batch's own commit (lease events
//!   are not replayed), and so are pool configs, scope networks and the removal of a
//!   block's body, with every waiting summary of that pool when a body went: the
//!   summaries on disk never name a block the claims index and the tail do not, and a full
//!   load recomputes the counts from the bodies;
//! - a change of pool config and the expiry of old events happen only in a commit that
//!   writes everything deferred and moves the watermark to its own last event, so the tail
//!   never crosses either.
//!
//! A store without [`FOLDED_KEY`] has no tail: every other writer (the CNI plugin, kipamd
//! before this log) writes each record with its change. An operation other than a full load
//! refuses a store with a tail ([`crate::IpamError::Unfolded`]): it would read stale records.
//! kipamd folds at start and when it stops cleanly, and leaves none.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use kipam_core::{Dirty, Handle, HeldAddr, HeldAddrs, Ipam, Millis, PoolDirty, Prefix};

use crate::ipam::{IpamError, Result};
use crate::store::{Record, Store, StoreError, Txn};

/// The key prefix of events: `events/{seq}`, seq zero-padded to 20 digits.
pub const EVENTS_PREFIX: &str = "events/";

/// The seq of the newest event, decimal text.
pub const SEQ_KEY: &str = "meta/event-seq";

/// The fold watermark, decimal text: block bodies and node summaries include every
/// event up to this seq.
pub const FOLDED_KEY: &str = "meta/folded";

/// Events read per page when reading the tail.
const PAGE: usize = 10_000;

/// The key of event `seq`.
pub fn event_key(seq: u64) -> String {
    format!("{EVENTS_PREFIX}{seq:020}")
}

/// One address change of the tail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailEvent {
    /// The event's seq.
    pub seq: u64,
    /// When it happened.
    pub time: Millis,
    /// Whether the handle took the address (else it gave it back: release, reclaim).
    pub allocate: bool,
    /// The pool.
    pub pool: String,
    /// The address.
    pub addr: IpAddr,
    /// The handle.
    pub handle: String,
    /// The handle's node.
    pub node: String,
    /// The handle's attributes.
    pub attrs: BTreeMap<String, String>,
}

fn number(key: &str, rec: Option<Record>) -> Result<Option<u64>> {
    let Some(rec) = rec else {
        return Ok(None);
    };
    std::str::from_utf8(&rec.value)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| IpamError::Corrupt {
            key: key.to_string(),
            detail: "not a number".into(),
        })
}

/// The watermark and the newest event's seq, when the store has a watermark, read
/// through `get` (a transaction's or a store's).
fn watermark_with(
    mut get: impl FnMut(&str) -> std::result::Result<Option<Record>, StoreError>,
) -> Result<Option<(u64, u64)>> {
    let Some(folded) = number(FOLDED_KEY, get(FOLDED_KEY)?)? else {
        return Ok(None);
    };
    let last = number(SEQ_KEY, get(SEQ_KEY)?)?.unwrap_or(0);
    Ok(Some((folded, last)))
}

/// The watermark and the newest event's seq, when the store has a watermark.
pub fn watermark(txn: &mut dyn Txn) -> Result<Option<(u64, u64)>> {
    watermark_with(|key| txn.get(key))
}

/// [`watermark`], read outside a transaction.
pub fn stored_watermark(store: &impl Store) -> Result<Option<(u64, u64)>> {
    watermark_with(|key| store.get(key))
}

/// The address events after the watermark, oldest first; `None` when the store has no
/// watermark. Lease events change no block and are left out.
pub fn read_tail(txn: &mut dyn Txn) -> Result<Option<Vec<TailEvent>>> {
    let Some((folded, last)) = watermark(txn)? else {
        return Ok(None);
    };
    let mut tail = Vec::new();
    if last <= folded {
        return Ok(Some(tail));
    }
    let mut after = event_key(folded);
    loop {
        let page = txn.list_page(EVENTS_PREFIX, Some(&after), PAGE)?;
        for rec in &page {
            let e =
                crate::codec::decode_event(&rec.value).map_err(|detail| IpamError::Corrupt {
                    key: rec.key.clone(),
                    detail,
                })?;
            let allocate = match e.kind.as_str() {
                "allocate" => true,
                "release" | "reclaim" => false,
                _ => continue,
            };
            let Some(addr) = e.address else {
                return Err(IpamError::Corrupt {
                    key: rec.key.clone(),
                    detail: format!("{} event without an address", e.kind),
                });
            };
            tail.push(TailEvent {
                seq: e.seq,
                time: e.time,
                allocate,
                pool: e.pool,
                addr,
                handle: e.handle,
                node: e.node.unwrap_or_default(),
                attrs: e.attrs,
            });
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = last.key.clone(),
            _ => break,
        }
    }
    Ok(Some(tail))
}

/// The tail grouped by block and by handle, for the loader. Events of pools or addresses
/// the engine does not know are left out of the blocks: their pool was deleted, which only
/// a folding commit does.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    by_block: HashMap<(String, u128), Vec<usize>>,
    by_handle: BTreeMap<String, Vec<usize>>,
    events: Vec<TailEvent>,
    /// Blocks rebuilt from the tail, to mark changed once loaded.
    pub(crate) blocks: Vec<(String, u128)>,
}

impl Tail {
    pub(crate) fn new(events: Vec<TailEvent>, ipam: &Ipam) -> Tail {
        let mut by_block: HashMap<(String, u128), Vec<usize>> = HashMap::new();
        let mut by_handle: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            by_handle.entry(e.handle.clone()).or_default().push(i);
            let Some(p) = ipam.pool(&e.pool) else {
                continue;
            };
            let v = kipam_core::prefix::addr_to_u128(e.addr);
            if kipam_core::Family::of(e.addr) != p.prefix().family || !p.prefix().contains_value(v)
            {
                continue;
            }
            let block = p.block_of(e.addr);
            by_block
                .entry((e.pool.clone(), block.base))
                .or_default()
                .push(i);
        }
        Tail {
            by_block,
            by_handle,
            events,
            blocks: Vec::new(),
        }
    }

    /// The blocks of `pool` whose first allocate event after seq `after` is in the tail,
    /// with that event's node, in address order: claimed by it if the claims index does
    /// not name them (kipamd writes claims with folds; nobody can take an address of an
    /// unclaimed block but the node that claims it, and only by allocating it).
    pub(crate) fn first_allocations(&self, pool: &str, after: u64) -> Vec<(u128, &str)> {
        let mut out: Vec<(u128, &str)> = self
            .by_block
            .iter()
            .filter(|((p, _), _)| p == pool)
            .filter_map(|((_, base), idx)| {
                let e = idx
                    .iter()
                    .map(|&i| &self.events[i])
                    .find(|e| e.allocate && e.seq > after)?;
                Some((*base, e.node.as_str()))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// The events of one block, oldest first (taken: a block is loaded once).
    pub(crate) fn take_block(&mut self, pool: &str, block: Prefix) -> Option<Vec<TailEvent>> {
        let idx = self.by_block.remove(&(pool.to_string(), block.base))?;
        Some(idx.iter().map(|&i| self.events[i].clone()).collect())
    }

    /// Whether the tail has events of a handle not replayed yet.
    pub(crate) fn has_handle(&self, key: &str) -> bool {
        self.by_handle.contains_key(key)
    }

    /// Applies a handle's events to its record as read (`None`: no record); `None` when
    /// it ends up holding nothing. The events are taken. (Pool and node names are new
    /// strings here; `Ipam::load_handle` swaps in the engine's interned ones.)
    pub(crate) fn replay_handle(
        &mut self,
        key: &str,
        mut handle: Option<Handle>,
    ) -> Option<Handle> {
        let Some(idx) = self.by_handle.remove(key) else {
            return handle;
        };
        for i in idx {
            let e = &self.events[i];
            let pool: Arc<str> = Arc::from(e.pool.as_str());
            match (&mut handle, e.allocate) {
                (Some(h), true) if !h.addrs.is_empty() => {
                    if !h.addrs.iter().any(|a| a.addr == e.addr && *a.pool == *pool) {
                        h.addrs.push(HeldAddr { pool, addr: e.addr });
                    }
                }
                (_, true) => {
                    let mut addrs = HeldAddrs::new();
                    addrs.push(HeldAddr { pool, addr: e.addr });
                    handle = Some(Handle {
                        key: Arc::from(key),
                        node: Arc::from(e.node.as_str()),
                        attrs: e.attrs.clone(),
                        addrs,
                        created: e.time,
                    });
                }
                (Some(h), false) => {
                    h.addrs.retain(|a| !(a.addr == e.addr && *a.pool == *pool));
                }
                (None, false) => {}
            }
            if handle.as_ref().is_some_and(|h| h.addrs.is_empty()) {
                handle = None;
            }
        }
        handle
    }

    /// The keys of handles whose events are not replayed yet (they have no record).
    pub(crate) fn other_handles(&self) -> Vec<String> {
        self.by_handle.keys().cloned().collect()
    }
}

/// Splits a batch's changes into what its commit must write and what may wait for a fold
/// (added to `deferred`), by the rules above: handle records, block bodies that still
/// exist, node summaries and the claims index of a pool whose claims only grew wait;
/// everything else is written now: the claims index (complete, so nothing of it waits
/// any more) when a block's body went or a lease changed, with every waiting summary of
/// the pool when a body went, and all of a pool that is gone.
pub fn split(dirty: Dirty, ipam: &Ipam, deferred: &mut Dirty) -> Dirty {
    deferred.handles.extend(dirty.handles);
    let mut now = Dirty {
        pool_configs: dirty.pool_configs,
        pools: BTreeMap::new(),
        handles: BTreeSet::new(),
        scope_networks: dirty.scope_networks,
    };
    for (name, d) in dirty.pools {
        let Some(pool) = ipam.pool(&name) else {
            now.pools.insert(name, d);
            continue;
        };
        let later = deferred.pools.entry(name.clone()).or_default();
        let mut here = PoolDirty::default();
        for base in d.blocks {
            if pool.block(base).is_some() {
                later.blocks.insert(base);
            } else {
                here.blocks.insert(base);
            }
        }
        later.nodes.extend(d.nodes);
        let body_went = !here.blocks.is_empty();
        if body_went || d.leases {
            here.claims = d.claims || later.claims;
            here.leases = d.leases;
            later.claims = false;
        } else if d.claims {
            // Claims only grew: the tail's allocate events say which node claimed what
            // until the fold writes the index.
            later.claims = true;
        }
        if body_went {
            // Any waiting summary may name the block whose body went.
            here.nodes = std::mem::take(&mut later.nodes);
        }
        if later.is_empty() {
            deferred.pools.remove(&name);
        }
        if !here.is_empty() {
            now.pools.insert(name, here);
        }
    }
    now
}

/// How many records `dirty` names.
pub fn records(dirty: &Dirty) -> usize {
    dirty.handles.len()
        + dirty
            .pools
            .values()
            .map(|d| d.blocks.len() + d.nodes.len())
            .sum::<usize>()
}

/// Takes up to `n` of the records `dirty` names (handles first, then blocks and nodes),
/// for one slice of a fold; every claims index goes with the first slice.
pub fn take_some(dirty: &mut Dirty, n: usize) -> Dirty {
    if records(dirty) <= n {
        return std::mem::take(dirty);
    }
    let mut out = Dirty::default();
    dirty.pools.retain(|name, d| {
        if d.claims {
            d.claims = false;
            out.pools.entry(name.clone()).or_default().claims = true;
        }
        !d.is_empty()
    });
    let mut left = n;
    while left > 0 {
        let Some(key) = dirty.handles.pop_first() else {
            break;
        };
        out.handles.insert(key);
        left -= 1;
    }
    while left > 0 {
        let Some(mut entry) = dirty.pools.first_entry() else {
            break;
        };
        let d = entry.get_mut();
        let mut part = PoolDirty::default();
        while left > 0 {
            if let Some(b) = d.blocks.pop_first() {
                part.blocks.insert(b);
            } else if let Some(node) = d.nodes.pop_first() {
                part.nodes.insert(node);
            } else {
                break;
            }
            left -= 1;
        }
        let emptied = d.is_empty();
        let name = entry.key().clone();
        if emptied {
            entry.remove();
        }
        out.pools.entry(name).or_default().merge(part);
    }
    out
}

/// A fold is written in slices of at least this many records, and at most this many
/// slices (so a fold of a second's changes is done within a few dozen commits).
const SLICE_MIN: usize = 64;
const SLICES: usize = 64;

/// Changed records waiting at which a fold starts without being asked.
pub const FOLD_RECORDS: usize = 65_536;

/// The writer's side of the rules above: which records each commit writes, and the
/// watermark after it. One per writer; the caller says when a fold is due (it owns the
/// clock) and tells it what committed.
#[derive(Debug, Default)]
pub struct Folder {
    /// Changed since the running fold was taken.
    deferred: Dirty,
    /// What the running fold has still to write.
    folding: Dirty,
    /// Its slice size.
    slice: usize,
    /// The seq it was taken at: the watermark once it is written.
    at: u64,
    /// The watermark as stored.
    folded: u64,
}

/// What one commit writes.
#[derive(Debug)]
pub struct Plan {
    /// The records to write (as the engine holds them now).
    pub changes: Dirty,
    /// The watermark after the commit.
    pub folded: u64,
    /// Whether a fold started with this commit.
    pub started: bool,
}

impl Folder {
    /// A writer whose store holds watermark `folded` and nothing deferred.
    pub fn new(folded: u64) -> Folder {
        Folder {
            folded,
            ..Folder::default()
        }
    }

    /// The watermark as stored.
    pub fn folded(&self) -> u64 {
        self.folded
    }

    /// Whether changed records wait for a fold (started or not).
    pub fn pending(&self) -> bool {
        !self.deferred.is_empty() || !self.folding.is_empty()
    }

    /// Whether a fold is being written (a slice goes with each commit).
    pub fn folding(&self) -> bool {
        !self.folding.is_empty()
    }

    /// Plans the commit of a batch whose changes are `dirty` and whose last event is
    /// `seq`. `due`: the caller's period since the last fold has passed. `all`: write
    /// everything (a change of pool config, the expiry of events, shutdown).
    pub fn plan(&mut self, dirty: Dirty, ipam: &Ipam, seq: u64, due: bool, all: bool) -> Plan {
        let mut changes = split(dirty, ipam, &mut self.deferred);
        if all || !changes.pool_configs.is_empty() {
            changes.merge(std::mem::take(&mut self.folding));
            changes.merge(std::mem::take(&mut self.deferred));
            return Plan {
                changes,
                folded: seq,
                started: true,
            };
        }
        let mut started = false;
        if self.folding.is_empty()
            && !self.deferred.is_empty()
            && (due || records(&self.deferred) >= FOLD_RECORDS)
        {
            self.folding = std::mem::take(&mut self.deferred);
            self.at = seq;
            self.slice = (records(&self.folding) / SLICES).max(SLICE_MIN);
            started = true;
        }
        let folded = if !self.folding.is_empty() {
            changes.merge(take_some(&mut self.folding, self.slice));
            if self.folding.is_empty() {
                self.at
            } else {
                self.folded
            }
        } else if self.deferred.is_empty() {
            seq
        } else {
            self.folded
        };
        Plan {
            changes,
            folded,
            started,
        }
    }

    /// The commit of the last plan succeeded: its watermark is the stored one now.
    pub fn committed(&mut self, plan: &Plan) {
        self.folded = plan.folded;
    }

    /// The commit of the last plan failed and the engine was reloaded from the store
    /// (whose load replays the tail and marks what it rebuilt changed).
    pub fn reset(&mut self) {
        *self = Folder::new(self.folded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kipam_core::{AllocRequest, LeaseWant, PoolConfig, Source, Want};

    fn allocate(ipam: &mut Ipam, handle: &str, node: &str) {
        let req = AllocRequest {
            handle: handle.into(),
            node: node.into(),
            attrs: BTreeMap::new(),
            wants: vec![Want {
                source: Source::Pools(vec!["p".into()]),
                addr: None,
            }],
        };
        ipam.allocate(&req, 0).expect("room");
    }

    fn nodes(d: &Dirty) -> Vec<&str> {
        d.pools
            .get("p")
            .map(|p| p.nodes.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn claims(d: &Dirty) -> bool {
        d.pools.get("p").is_some_and(|p| p.claims)
    }

    /// Claims that only grow wait with the summaries; a body that goes takes the complete
    /// claims index and every waiting summary with it; a lease takes the index, not the
    /// summaries. The first slice of a fold carries the index.
    #[test]
    fn claims_wait_while_they_grow_and_go_whole_when_they_shrink() {
        let mut ipam = Ipam::new();
        let mut config = PoolConfig::new("p", "10.0.0.0/24".parse().expect("CIDR"));
        config.block_prefix_length = Some(28);
        config.reuse_delay_seconds = 0;
        config.empty_block_grace_seconds = 0;
        ipam.create_pool(config).expect("pool");
        let mut deferred = Dirty::default();

        allocate(&mut ipam, "h1", "a");
        let now = split(ipam.take_dirty(), &ipam, &mut deferred);
        assert!(now.pools.is_empty(), "a's block claimed: it all waits");
        assert!(claims(&deferred));
        assert_eq!(nodes(&deferred), ["a"]);

        allocate(&mut ipam, "h3", "b");
        let now = split(ipam.take_dirty(), &ipam, &mut deferred);
        assert!(now.pools.is_empty(), "claims grew again: still waiting");
        assert_eq!(nodes(&deferred), ["a", "b"]);

        ipam.lease_prefix("p", LeaseWant::Length(28), "cluster-1", BTreeMap::new(), 0)
            .expect("lease");
        let now = split(ipam.take_dirty(), &ipam, &mut deferred);
        assert!(
            now.pools["p"].leases && now.pools["p"].claims,
            "a lease writes the index, with the claims that waited"
        );
        assert!(nodes(&now).is_empty(), "summaries keep waiting");
        assert!(!claims(&deferred));
        assert_eq!(nodes(&deferred), ["a", "b"]);

        allocate(&mut ipam, "h4", "c");
        drop(split(ipam.take_dirty(), &ipam, &mut deferred));
        ipam.release_handle("h3", 0).expect("release");
        assert_eq!(ipam.reclaim_empty_blocks(1).len(), 1, "b's block goes back");
        let now = split(ipam.take_dirty(), &ipam, &mut deferred);
        assert_eq!(
            now.pools["p"].blocks.len(),
            1,
            "the body's deletion goes now"
        );
        assert!(claims(&now), "with the index");
        assert_eq!(nodes(&now), ["a", "b", "c"], "and every waiting summary");
        assert!(!claims(&deferred) && nodes(&deferred).is_empty());

        allocate(&mut ipam, "h5", "d");
        let mut folding = Dirty::default();
        drop(split(ipam.take_dirty(), &ipam, &mut folding));
        for i in 0..10 {
            folding.handles.insert(format!("x{i}"));
        }
        let first = take_some(&mut folding, 2);
        assert!(claims(&first), "the index goes with the first slice");
        assert!(!claims(&folding));
    }
}
