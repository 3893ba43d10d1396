//! The IPAM key space on top of a [`Store`]: runs engine operations as store transactions.
//!
//! Every operation is one [`transact`] call: it builds an empty [`Ipam`], loads what the
//! operation needs, runs it, and writes back exactly what [`Ipam::take_dirty`] names. The
//! engine asks for more state with [`Error::NeedLoad`] instead of reading the store
//! itself (kipam-core has no IO); the loader here fetches what was named and the
//! operation runs again. So a CNI exec on a /16 with 60,000 addresses held reads the pool,
//! its claims index, one node's summaries and one block — not 60,000 allocations.
//!
//! ## Keys (the same in every backend; an etcd backend puts them under `/kipam/v1/`)
//! | key | value |
//! |---|---|
//! | `pools/{pool}` | pool config, JSON |
//! | `claims/{pool}` | claims index: blocks with their node, prefix leases; binary (JSON before) |
//! | `nodes/{pool}/{node}` | the node's block summaries, binary ([`codec`]) |
//! | `blocks/{pool}/{block base}` | block body: holders, quarantine, cursor; binary |
//! | `handles/{handle}` | handle: node, attributes, addresses; JSON |
//! | `externals/{name}`, `reservations/{name}` | scope networks, JSON |
//!
//! Path components are escaped (`%` and `/` as `%25`, `%2F`), so names that contain `/`
//! (CNI pool names like `net:10.0.0.0/24`, handles like `net/ctr/eth0`) keep prefixes exact.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use kipam_core::{
    AllocRequest, Dirty, Error, Handle, HeldAddr, Ipam, Lease, LeaseWant, Millis, Need, ObjectKind,
    Overlap, Pool, PoolConfig, PoolUsage, Prefix, ScopeNetwork,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::codec;
use crate::log::{self, Tail, TailEvent};
use crate::store::{Store, StoreError, Txn, transact};

/// Applies a block's events from kipamd's log tail to its loaded body, oldest first: the
/// last event about an address decides its state, whatever the body held (see
/// [`crate::log`]).
fn replay(
    ipam: &mut Ipam,
    pool: &str,
    key: &str,
    b: &mut kipam_core::Block,
    block: Prefix,
    events: &[TailEvent],
) -> Result<()> {
    use kipam_core::AddrState;
    let delay = ipam
        .pool(pool)
        .map_or(0, |p| p.config().reuse_delay_seconds.saturating_mul(1000));
    for e in events {
        let offset = (kipam_core::prefix::addr_to_u128(e.addr) - block.base) as u32;
        let id = ipam.intern(&e.handle);
        match (b.state(offset), e.allocate) {
            (AddrState::Held(x), true) if x == id => {}
            (state, true) => {
                if let AddrState::Held(_) = state {
                    // A body newer than the event: the later events give it back.
                    b.release(offset, e.time, e.time);
                }
                b.take_exact(offset, id, e.time)
                    .map_err(|state| IpamError::Corrupt {
                        key: key.to_string(),
                        detail: format!(
                            "event {} gives {} to {}, but it is {state:?}",
                            e.seq, e.addr, e.handle
                        ),
                    })?;
                b.set_cursor((offset + 1) % b.size());
            }
            (AddrState::Held(x), false) if x == id => {
                b.release(offset, e.time, e.time.saturating_add(delay));
            }
            (_, false) => {}
        }
    }
    Ok(())
}

/// Errors of IPAM operations on a store.
#[derive(Debug, Error)]
pub enum IpamError {
    /// The engine refused (exhausted, overlap, invalid input, ...).
    #[error(transparent)]
    Engine(#[from] Error),
    /// The store failed (busy, disk full, corrupt file, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record cannot be decoded or contradicts another.
    #[error("record {key} is corrupt: {detail}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// kipamd's log has events its block records do not include yet (see [`crate::log`]):
    /// only a full load reads them. Start kipamd once, or stop it cleanly, to fold them.
    #[error(
        "the store has events {} to {last} that kipamd has not folded into its block records yet; start kipamd once (or stop it cleanly) first",
        folded + 1
    )]
    Unfolded {
        /// The fold watermark.
        folded: u64,
        /// The newest event.
        last: u64,
    },
}

/// Result alias.
pub type Result<T, E = IpamError> = std::result::Result<T, E>;

/// Escapes a path component.
pub fn esc(s: &str) -> String {
    if !s.contains(['%', '/']) {
        return s.to_string();
    }
    s.replace('%', "%25").replace('/', "%2F")
}

fn pool_key(pool: &str) -> String {
    format!("pools/{}", esc(pool))
}
fn claims_key(pool: &str) -> String {
    format!("claims/{}", esc(pool))
}
fn node_key(pool: &str, node: &str) -> String {
    format!("nodes/{}/{}", esc(pool), esc(node))
}
fn block_key(pool: &str, block: Prefix) -> String {
    format!("blocks/{}/{}", esc(pool), block.range().first)
}
fn handle_key(handle: &str) -> String {
    format!("handles/{}", esc(handle))
}
fn scope_key(kind: ObjectKind, name: &str) -> String {
    match kind {
        ObjectKind::Reservation => format!("reservations/{}", esc(name)),
        _ => format!("externals/{}", esc(name)),
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail (string keys, no non-finite floats).
    serde_json::to_vec(v).unwrap_or_default()
}

fn parse<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| IpamError::Corrupt {
        key: key.into(),
        detail: e.to_string(),
    })
}

/// A handle record. Its address list holds exactly its addresses ([`kipam_core::HeldAddrs`]
/// keeps one inline and moves more into an allocation of exactly their number), so the
/// room serde leaves in a `Vec` it grows by pushing does not stay taken: at 1,000,000
/// loaded handles that room was 120 MB of kipamd's memory after a restart.
fn parse_handle(key: &str, bytes: &[u8]) -> Result<Handle> {
    parse(key, bytes)
}

/// Asks for every node summary of the first pool that lacks some: whole-pool answers
/// (usage, empty blocks) need them all.
fn all_nodes_loaded(ipam: &Ipam) -> std::result::Result<(), Error> {
    match ipam.pools().find(|p| !p.all_nodes_loaded()) {
        Some(p) => Err(Error::NeedLoad(Need::AllNodes {
            pool: p.config().name.clone(),
        })),
        None => Ok(()),
    }
}

/// What an operation loads up front.
#[derive(Clone, Debug, Default)]
struct Scope {
    /// Pools to load (config and claims).
    pools: Vec<String>,
    /// Every pool (for overlap checks).
    all_pools: bool,
    /// Load every node and block of the loaded pools.
    full: bool,
    /// Handles to load.
    handles: Vec<String>,
    /// Load every handle.
    all_handles: bool,
    /// Apply kipamd's log tail to the blocks (a full load; see [`crate::log`]). Without
    /// it, a store with a tail is refused.
    replay: bool,
}

/// Loads records into an [`Ipam`] inside one transaction.
struct Loader<'t> {
    txn: &'t mut dyn Txn,
    now: Millis,
    loaded: BTreeSet<String>,
    /// kipamd's log tail, during a full load.
    tail: Option<Tail>,
    /// Per pool loaded, the seq its claims record is complete up to (`None`: an older
    /// record, complete; a pool without a record: 0).
    claims_read: HashMap<String, Option<u64>>,
    /// The seq written in claims records ([`codec::ClaimsRecord::seq`]): the last event
    /// of the commit (kipamd), 0 for operations that write no events.
    claims_seq: u64,
}

impl Loader<'_> {
    fn once(&mut self, key: &str) -> bool {
        self.loaded.insert(key.to_string())
    }

    fn load_scope_networks(&mut self, ipam: &mut Ipam) -> Result<()> {
        for (kind, prefix) in [
            (ObjectKind::External, "externals/"),
            (ObjectKind::Reservation, "reservations/"),
        ] {
            for rec in self.txn.list(prefix)? {
                ipam.load_scope_network(kind, parse(&rec.key, &rec.value)?);
            }
        }
        Ok(())
    }

    fn load_pool(&mut self, ipam: &mut Ipam, name: &str) -> Result<bool> {
        if ipam.pool(name).is_some() {
            return Ok(true);
        }
        let key = pool_key(name);
        let Some(rec) = self.txn.get(&key)? else {
            return Ok(false);
        };
        let config: PoolConfig = parse(&key, &rec.value)?;
        self.install_pool(ipam, config)?;
        Ok(true)
    }

    fn install_pool(&mut self, ipam: &mut Ipam, config: PoolConfig) -> Result<()> {
        let name = config.name.clone();
        let mut pool = Pool::new(config).map_err(|e| IpamError::Corrupt {
            key: pool_key(&name),
            detail: e.to_string(),
        })?;
        let ckey = claims_key(&name);
        let mut complete_to = Some(0);
        if let Some(rec) = self.txn.get(&ckey)? {
            let claims = codec::decode_claims(&rec.value).map_err(|detail| IpamError::Corrupt {
                key: ckey.clone(),
                detail,
            })?;
            complete_to = claims.seq;
            let family = pool.prefix().family;
            let mut blocks = Vec::new();
            for (node, bases) in claims.blocks {
                for base in bases {
                    let p = Prefix::containing(family, base, pool.block_len());
                    blocks.push((p, node.clone()));
                }
            }
            pool.load_claims(&blocks, claims.leases)
                .map_err(|detail| IpamError::Corrupt { key: ckey, detail })?;
        }
        self.claims_read.insert(name, complete_to);
        ipam.load_pool(pool);
        Ok(())
    }

    /// Claims the blocks kipamd claimed after its claims records were last written: the
    /// first allocation in a block the record does not name, after the seq the record is
    /// complete up to, claimed it for its node (see [`crate::log`]).
    fn claim_from_tail(&mut self, ipam: &mut Ipam) -> Result<()> {
        let Some(tail) = &self.tail else {
            return Ok(());
        };
        for (name, complete_to) in &self.claims_read {
            let (Some(after), Some(p)) = (complete_to, ipam.pool_mut(name)) else {
                continue;
            };
            let (family, len) = (p.prefix().family, p.block_len());
            let mut blocks = Vec::new();
            for (base, node) in tail.first_allocations(name, *after) {
                let block = Prefix { family, base, len };
                if p.block_claimed(base) {
                    continue;
                }
                if node.is_empty() {
                    return Err(IpamError::Corrupt {
                        key: claims_key(name),
                        detail: format!("an allocate event claims block {block} for no node"),
                    });
                }
                blocks.push((block, node.to_string()));
            }
            if !blocks.is_empty() {
                p.load_claims(&blocks, Vec::new())
                    .map_err(|detail| IpamError::Corrupt {
                        key: claims_key(name),
                        detail,
                    })?;
                // Written again by the next fold.
                p.touch_claims();
            }
        }
        Ok(())
    }

    fn load_all_pools(&mut self, ipam: &mut Ipam) -> Result<()> {
        for rec in self.txn.list("pools/")? {
            let config: PoolConfig = parse(&rec.key, &rec.value)?;
            if ipam.pool(&config.name).is_none() {
                self.install_pool(ipam, config)?;
            }
        }
        Ok(())
    }

    fn load_node(&mut self, ipam: &mut Ipam, pool: &str, node: &str) -> Result<()> {
        let key = node_key(pool, node);
        if !self.once(&key) {
            return Ok(());
        }
        let summaries = match self.txn.get(&key)? {
            Some(rec) => codec::decode_node(&rec.value)
                .map_err(|detail| IpamError::Corrupt { key, detail })?,
            None => Vec::new(),
        };
        if let Some(p) = ipam.pool_mut(pool) {
            p.load_node(node, summaries);
        }
        Ok(())
    }

    fn load_all_nodes(&mut self, ipam: &mut Ipam, pool: &str) -> Result<()> {
        let prefix = format!("nodes/{}/", esc(pool));
        for rec in self.txn.list(&prefix)? {
            if !self.once(&rec.key) {
                continue;
            }
            let node = unescape(&rec.key[prefix.len()..]);
            let summaries =
                codec::decode_node(&rec.value).map_err(|detail| IpamError::Corrupt {
                    key: rec.key.clone(),
                    detail,
                })?;
            if let Some(p) = ipam.pool_mut(pool) {
                p.load_node(&node, summaries);
            }
        }
        if let Some(p) = ipam.pool_mut(pool) {
            p.mark_all_nodes_loaded();
        }
        Ok(())
    }

    fn load_block(&mut self, ipam: &mut Ipam, pool: &str, block: Prefix) -> Result<()> {
        let key = block_key(pool, block);
        if !self.once(&key) {
            return Err(IpamError::Corrupt {
                key,
                detail: "loaded, yet the engine asks for it again".into(),
            });
        }
        let events = self.tail.as_mut().and_then(|t| t.take_block(pool, block));
        let body = match self.txn.get(&key)? {
            Some(rec) => {
                Some(
                    codec::decode_block(&rec.value).map_err(|detail| IpamError::Corrupt {
                        key: key.clone(),
                        detail,
                    })?,
                )
            }
            // Claimed after the last fold: its changes are all in the tail.
            None if events.is_some() => None,
            None => {
                return Err(IpamError::Corrupt {
                    key,
                    detail: "claimed in the claims index but missing".into(),
                });
            }
        };
        let shell = ipam
            .pool(pool)
            .and_then(|p| p.block_shell(block.base, self.now));
        let mut b = shell.ok_or_else(|| IpamError::Corrupt {
            key: key.clone(),
            detail: "block is not in the claims index".into(),
        })?;
        // A node's summaries are written back whole, so load them before touching its block.
        let node = body
            .as_ref()
            .map_or(b.node(), |body| &body.node)
            .to_string();
        self.load_node(ipam, pool, &node)?;
        let had_body = body.is_some();
        let body = body.unwrap_or_default();
        for (offset, holder) in &body.held {
            let id = ipam.intern(holder);
            b.load_held(*offset, id)
                .map_err(|state| IpamError::Corrupt {
                    key: key.clone(),
                    detail: format!("offset {offset} held by {holder} is {state:?}"),
                })?;
        }
        for (offset, until) in &body.quarantined {
            b.load_quarantined(*offset, *until)
                .map_err(|state| IpamError::Corrupt {
                    key: key.clone(),
                    detail: format!("quarantined offset {offset} is {state:?}"),
                })?;
        }
        if had_body {
            b.set_cursor(body.cursor);
            b.set_empty_since(body.empty_since);
        }
        if let Some(events) = events {
            replay(ipam, pool, &key, &mut b, block, &events)?;
            if let Some(t) = &mut self.tail {
                t.blocks.push((pool.to_string(), block.base));
            }
        }
        ipam.load_block(pool, b)?;
        Ok(())
    }

    fn load_all_blocks(&mut self, ipam: &mut Ipam, pool: &str) -> Result<()> {
        self.load_all_nodes(ipam, pool)?;
        let blocks: Vec<Prefix> = ipam
            .pool(pool)
            .map(|p| p.block_claims().map(|(b, _)| b).collect())
            .unwrap_or_default();
        for b in blocks {
            if ipam.pool(pool).is_some_and(|p| !p.block_loaded(b.base)) {
                self.load_block(ipam, pool, b)?;
            }
        }
        Ok(())
    }

    fn load_handle(&mut self, ipam: &mut Ipam, key: &str) -> Result<bool> {
        if ipam.handle(key).is_some() {
            return Ok(true);
        }
        let k = handle_key(key);
        if !self.once(&k) {
            return Ok(false);
        }
        match self.txn.get(&k)? {
            Some(rec) => {
                ipam.load_handle(parse_handle(&k, &rec.value)?);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn satisfy(&mut self, ipam: &mut Ipam, need: Need) -> Result<()> {
        match need {
            Need::Block { pool, block } => self.load_block(ipam, &pool, block),
            Need::Node { pool, node } => {
                let key = node_key(&pool, &node);
                if self.loaded.contains(&key) {
                    return Err(IpamError::Corrupt {
                        key,
                        detail: "loaded, yet the engine asks for it again".into(),
                    });
                }
                self.load_node(ipam, &pool, &node)
            }
            Need::AllNodes { pool } => {
                if !self.once(&format!("all-nodes {pool}")) {
                    return Err(IpamError::Corrupt {
                        key: format!("nodes/{}/", esc(&pool)),
                        detail: "loaded, yet the engine asks again".into(),
                    });
                }
                self.load_all_nodes(ipam, &pool)
            }
            Need::Handle { key } => {
                if self.load_handle(ipam, &key)? {
                    Ok(())
                } else {
                    Err(IpamError::Corrupt {
                        key: handle_key(&key),
                        detail: "a block names this holder, but it has no record".into(),
                    })
                }
            }
        }
    }

    fn prepare(&mut self, ipam: &mut Ipam, scope: &Scope) -> Result<()> {
        self.load_scope_networks(ipam)?;
        if scope.all_pools || scope.full {
            self.load_all_pools(ipam)?;
        }
        for p in &scope.pools {
            self.load_pool(ipam, p)?;
        }
        if scope.replay {
            if let Some(events) = log::read_tail(self.txn)? {
                self.tail = Some(Tail::new(events, ipam));
                self.claim_from_tail(ipam)?;
            }
        } else if let Some((folded, last)) = log::watermark(self.txn)? {
            if last > folded {
                return Err(IpamError::Unfolded { folded, last });
            }
            // kipamd's store without a tail: a claims record written now is complete up
            // to its newest event.
            self.claims_seq = last;
        }
        if scope.full {
            let names: Vec<String> = ipam.pools().map(|p| p.config().name.clone()).collect();
            for n in names {
                self.load_all_blocks(ipam, &n)?;
            }
        }
        if let Some(t) = &mut self.tail {
            for (pool, base) in std::mem::take(&mut t.blocks) {
                if let Some(p) = ipam.pool_mut(&pool) {
                    p.touch_block(base);
                }
            }
        }
        if scope.all_handles {
            // A page at a time: at 1,000,000 handles the records of one listing took
            // ~280 MB, which the allocator kept after the start. Nothing before this loads
            // a handle record (blocks only intern their holders' keys), so each is
            // installed without first asking whether it is there (a sixth of the start).
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .txn
                    .list_page("handles/", after.as_deref(), HANDLE_PAGE)?;
                for rec in &page {
                    let h = parse_handle(&rec.key, &rec.value)?;
                    match &mut self.tail {
                        Some(t) if t.has_handle(&h.key) => {
                            let key = Arc::clone(&h.key);
                            if let Some(h) = t.replay_handle(&key, Some(h)) {
                                ipam.load_handle(h);
                            }
                            ipam.touch_handle(&key);
                        }
                        _ => ipam.load_handle(h),
                    }
                }
                match page.last() {
                    Some(last) if page.len() == HANDLE_PAGE => after = Some(last.key.clone()),
                    _ => break,
                }
            }
        }
        if let Some(t) = &mut self.tail {
            // Handles of the tail with no record yet, or whose record changed: rebuilt
            // from the events and written by the next fold.
            for key in t.other_handles() {
                if let Some(h) = t.replay_handle(&key, None) {
                    ipam.load_handle(h);
                }
                ipam.touch_handle(&key);
            }
        }
        for h in &scope.handles {
            self.load_handle(ipam, h)?;
        }
        Ok(())
    }

    fn write_back(&mut self, ipam: &mut Ipam) -> Result<()> {
        let dirty = ipam.take_dirty();
        self.write_changes(ipam, &dirty)
    }

    fn write_changes(&mut self, ipam: &Ipam, dirty: &Dirty) -> Result<()> {
        for name in &dirty.pool_configs {
            match ipam.pool(name) {
                Some(p) => self.txn.put(&pool_key(name), json(p.config()))?,
                None => {
                    self.txn.delete(&pool_key(name))?;
                    self.txn.delete(&claims_key(name))?;
                    for prefix in [
                        format!("nodes/{}/", esc(name)),
                        format!("blocks/{}/", esc(name)),
                    ] {
                        for rec in self.txn.list(&prefix)? {
                            self.txn.delete(&rec.key)?;
                        }
                    }
                }
            }
        }
        for (name, d) in &dirty.pools {
            let Some(p) = ipam.pool(name) else { continue };
            if d.claims || d.leases {
                // Grouped by borrowed names in a hash map first: a `String` and a
                // sorted-map search per block were most of the cost of this record.
                let mut by_node: HashMap<&str, Vec<u128>> = HashMap::new();
                for (b, node) in p.block_claims() {
                    by_node.entry(node).or_default().push(b.base);
                }
                let claims = codec::ClaimsRecord {
                    seq: Some(self.claims_seq),
                    blocks: by_node
                        .into_iter()
                        .map(|(node, bases)| (node.to_string(), bases))
                        .collect(),
                    leases: p.leases().cloned().collect(),
                };
                self.txn
                    .put(&claims_key(name), codec::encode_claims(&claims))?;
            }
            let family = p.prefix().family;
            for &base in &d.blocks {
                let prefix = Prefix {
                    family,
                    base,
                    len: p.block_len(),
                };
                match p.block(base) {
                    Some(b) => {
                        let body = codec::encode_block_from(
                            b.node(),
                            b.cursor(),
                            b.empty_since(),
                            b.held().map(|(o, id)| (o, ipam.key_of(id))),
                            b.quarantined(),
                        );
                        self.txn.put(&block_key(name, prefix), body)?;
                    }
                    None => self.txn.delete(&block_key(name, prefix))?,
                }
            }
            for node in &d.nodes {
                let summaries = p.node_summaries(node);
                if summaries.is_empty() {
                    self.txn.delete(&node_key(name, node))?;
                } else {
                    self.txn
                        .put(&node_key(name, node), codec::encode_node(&summaries))?;
                }
            }
        }
        for key in &dirty.handles {
            match ipam.handle(key) {
                Some(h) => self.txn.put(&handle_key(key), json(h))?,
                None => self.txn.delete(&handle_key(key))?,
            }
        }
        if dirty.scope_networks {
            let mut keep = BTreeSet::new();
            for kind in [ObjectKind::External, ObjectKind::Reservation] {
                for n in ipam.scope_networks(kind) {
                    let key = scope_key(kind, &n.name);
                    self.txn.put(&key, json(n))?;
                    keep.insert(key);
                }
            }
            for prefix in ["externals/", "reservations/"] {
                for rec in self.txn.list(prefix)? {
                    if !keep.contains(&rec.key) {
                        self.txn.delete(&rec.key)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// What [`IpamStore::allocate`] loads up front: the pools named by the wants (every pool
/// for a want by family) and the handle.
fn allocate_scope(req: &AllocRequest) -> Scope {
    let mut pools = Vec::new();
    let mut by_family = false;
    for w in &req.wants {
        match &w.source {
            kipam_core::Source::Pools(names) => pools.extend(names.iter().cloned()),
            kipam_core::Source::Family { .. } => by_family = true,
        }
    }
    Scope {
        pools,
        all_pools: by_family,
        handles: vec![req.handle.clone()],
        ..Scope::default()
    }
}

/// The body of [`IpamStore::allocate`] inside its transaction.
fn allocate_op(ipam: &mut Ipam, req: &AllocRequest, now: Millis) -> Result<Vec<HeldAddr>, Error> {
    // Reclaim this node's long-empty blocks on the way (cheap: summaries only).
    let missing = ipam
        .pools()
        .find(|p| !p.node_loaded(&req.node))
        .map(|p| p.config().name.clone());
    if let Some(pool) = missing {
        return Err(Error::NeedLoad(Need::Node {
            pool,
            node: req.node.clone(),
        }));
    }
    ipam.allocate(req, now)
}

fn unescape(s: &str) -> String {
    s.replace("%2F", "/").replace("%25", "%")
}

/// Handle records read per page when every handle is loaded.
const HANDLE_PAGE: usize = 10_000;

/// How many times one operation may ask for more state before we call it a bug.
const MAX_LOADS: usize = 100_000;

/// IPAM operations over a [`Store`].
#[derive(Debug)]
pub struct IpamStore<S> {
    store: S,
}

impl<S: Store> IpamStore<S> {
    /// Wraps a store.
    pub fn new(store: S) -> Self {
        IpamStore { store }
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Refuses a store whose records lag behind kipamd's log (see [`crate::log`]) for a
    /// read outside a full load. A store without a watermark costs one point read.
    fn refuse_tail(&self) -> Result<()> {
        match log::stored_watermark(&self.store)? {
            Some((folded, last)) if last > folded => Err(IpamError::Unfolded { folded, last }),
            _ => Ok(()),
        }
    }

    fn run<T>(
        &self,
        now: Millis,
        scope: &Scope,
        mut op: impl FnMut(&mut Ipam) -> Result<T, Error>,
    ) -> Result<T> {
        transact(&self.store, |txn| {
            let mut loader = Loader {
                txn,
                now,
                loaded: BTreeSet::new(),
                tail: None,
                claims_read: HashMap::new(),
                claims_seq: 0,
            };
            let mut ipam = Ipam::new();
            loader.prepare(&mut ipam, scope)?;
            for _ in 0..MAX_LOADS {
                match op(&mut ipam) {
                    Err(Error::NeedLoad(need)) => loader.satisfy(&mut ipam, need)?,
                    Err(e) => return Err(IpamError::Engine(e)),
                    Ok(v) => {
                        loader.write_back(&mut ipam)?;
                        return Ok(v);
                    }
                }
            }
            Err(IpamError::Corrupt {
                key: String::new(),
                detail: "operation kept asking for more state".into(),
            })
        })
    }

    /// Creates a pool; refused if the name exists or it overlaps anything in its scope.
    pub fn create_pool(&self, config: &PoolConfig, now: Millis) -> Result<()> {
        let scope = Scope {
            all_pools: true,
            ..Scope::default()
        };
        self.run(now, &scope, |ipam| ipam.create_pool(config.clone()))
    }

    /// Creates the pool, or updates its mutable settings when it exists with others
    /// (the CNI plugin calls this with the ranges of the config it was given). Writes
    /// nothing when the stored config is already equal.
    pub fn ensure_pool(&self, config: &PoolConfig, now: Millis) -> Result<()> {
        let scope = Scope {
            pools: vec![config.name.clone()],
            ..Scope::default()
        };
        let exists = transact(&self.store, |txn| -> Result<Option<PoolConfig>> {
            match txn.get(&pool_key(&config.name))? {
                Some(rec) => Ok(Some(parse(&rec.key, &rec.value)?)),
                None => Ok(None),
            }
        })?;
        match exists {
            Some(c) if &c == config => Ok(()),
            Some(_) => self.run(now, &scope, |ipam| ipam.update_pool(config.clone())),
            None => match self.create_pool(config, now) {
                Err(IpamError::Engine(Error::AlreadyExists { .. })) => {
                    self.run(now, &scope, |ipam| ipam.update_pool(config.clone()))
                }
                other => other,
            },
        }
    }

    /// Changes a pool's mutable settings.
    pub fn update_pool(&self, config: &PoolConfig, now: Millis) -> Result<()> {
        let scope = Scope {
            pools: vec![config.name.clone()],
            ..Scope::default()
        };
        self.run(now, &scope, |ipam| {
            if ipam.pool(&config.name).is_none() {
                return Err(Error::PoolNotFound {
                    pool: config.name.clone(),
                });
            }
            ipam.update_pool(config.clone())
        })
    }

    /// Deletes a pool (see [`Ipam::delete_pool`]).
    pub fn delete_pool(&self, name: &str, force: bool, now: Millis) -> Result<()> {
        let scope = Scope {
            full: true,
            all_handles: force,
            ..Scope::default()
        };
        self.run(now, &scope, |ipam| ipam.delete_pool(name, force))
    }

    /// A pool's config.
    pub fn pool(&self, name: &str) -> Result<Option<PoolConfig>> {
        match self.store.get(&pool_key(name))? {
            Some(rec) => Ok(Some(parse(&rec.key, &rec.value)?)),
            None => Ok(None),
        }
    }

    /// Every pool's config, by name.
    pub fn pools(&self) -> Result<Vec<PoolConfig>> {
        self.store
            .list("pools/")?
            .iter()
            .map(|r| parse(&r.key, &r.value))
            .collect()
    }

    /// Allocates for a handle (see [`Ipam::allocate`]); loads only what it touches.
    pub fn allocate(&self, req: &AllocRequest, now: Millis) -> Result<Vec<HeldAddr>> {
        self.run(now, &allocate_scope(req), |ipam| {
            allocate_op(ipam, req, now)
        })
    }

    /// [`IpamStore::ensure_pool`] for each of `pools`, then [`IpamStore::allocate`]: what
    /// the CNI plugin does on every ADD. When every pool is already stored exactly as
    /// given (every ADD but a network's first, or the first after a config change) this
    /// is one transaction, not one per pool plus one; otherwise the pools are created or
    /// updated first, as `ensure_pool` does, and the allocation follows.
    pub fn ensure_pools_and_allocate(
        &self,
        pools: &[PoolConfig],
        req: &AllocRequest,
        now: Millis,
    ) -> Result<Vec<HeldAddr>> {
        let mut scope = allocate_scope(req);
        scope.pools.extend(pools.iter().map(|c| c.name.clone()));
        let fast = self.run(now, &scope, |ipam| {
            if pools
                .iter()
                .any(|c| ipam.pool(&c.name).is_none_or(|p| p.config() != c))
            {
                return Ok(None);
            }
            allocate_op(ipam, req, now).map(Some)
        })?;
        if let Some(got) = fast {
            return Ok(got);
        }
        for c in pools {
            self.ensure_pool(c, now)?;
        }
        self.allocate(req, now)
    }

    /// Releases everything a handle holds; idempotent (an unknown handle releases nothing).
    pub fn release(&self, handle: &str, now: Millis) -> Result<Vec<HeldAddr>> {
        let scope = Scope {
            handles: vec![handle.to_string()],
            ..Scope::default()
        };
        let pools = match self.handle(handle)? {
            Some(h) => h.addrs.iter().map(|a| a.pool.to_string()).collect(),
            None => return Ok(Vec::new()),
        };
        let scope = Scope { pools, ..scope };
        self.run(now, &scope, |ipam| ipam.release_handle(handle, now))
    }

    /// Releases one address, whoever holds it; returns the holder.
    pub fn release_address(&self, pool: &str, addr: IpAddr, now: Millis) -> Result<Option<String>> {
        let scope = Scope {
            pools: vec![pool.to_string()],
            ..Scope::default()
        };
        self.run(now, &scope, |ipam| {
            if ipam.pool(pool).is_none() {
                return Err(Error::PoolNotFound { pool: pool.into() });
            }
            ipam.release_address(pool, addr, now)
        })
    }

    /// A handle record.
    pub fn handle(&self, key: &str) -> Result<Option<Handle>> {
        self.refuse_tail()?;
        match self.store.get(&handle_key(key))? {
            Some(rec) => Ok(Some(parse(&rec.key, &rec.value)?)),
            None => Ok(None),
        }
    }

    /// Every handle whose key starts with `prefix` (e.g. a CNI network's `name/`).
    pub fn handles_with_prefix(&self, prefix: &str) -> Result<Vec<Handle>> {
        self.refuse_tail()?;
        self.store
            .list(&format!("handles/{}", esc(prefix)))?
            .iter()
            .map(|r| parse(&r.key, &r.value))
            .collect()
    }

    /// Leases a sub-prefix of a pool.
    pub fn lease(
        &self,
        pool: &str,
        want: LeaseWant,
        owner: &str,
        attrs: &BTreeMap<String, String>,
        now: Millis,
    ) -> Result<Lease> {
        let scope = Scope {
            pools: vec![pool.to_string()],
            ..Scope::default()
        };
        self.run(now, &scope, |ipam| {
            ipam.lease_prefix(pool, want, owner, attrs.clone(), now)
        })
    }

    /// Ends a prefix lease.
    pub fn release_lease(&self, pool: &str, prefix: IpNet, now: Millis) -> Result<Option<Lease>> {
        let scope = Scope {
            pools: vec![pool.to_string()],
            ..Scope::default()
        };
        self.run(now, &scope, |ipam| ipam.release_lease(pool, prefix))
    }

    /// Registers an external network or reservation.
    pub fn add_scope_network(
        &self,
        kind: ObjectKind,
        net: &ScopeNetwork,
        now: Millis,
    ) -> Result<()> {
        self.run(now, &Scope::default(), |ipam| {
            ipam.add_scope_network(kind, net.clone())
        })
    }

    /// Removes an external network or reservation.
    pub fn remove_scope_network(&self, kind: ObjectKind, name: &str, now: Millis) -> Result<bool> {
        self.run(now, &Scope::default(), |ipam| {
            Ok(ipam.remove_scope_network(kind, name))
        })
    }

    /// Every overlapping pair within each scope.
    pub fn overlaps(&self, now: Millis) -> Result<Vec<Overlap>> {
        let scope = Scope {
            all_pools: true,
            ..Scope::default()
        };
        self.run(now, &scope, |ipam| Ok(ipam.overlaps()))
    }

    /// Usage of every pool.
    pub fn usage(&self, now: Millis) -> Result<Vec<(String, PoolUsage)>> {
        let scope = Scope {
            all_pools: true,
            ..Scope::default()
        };
        self.run(now, &scope, |ipam| {
            all_nodes_loaded(ipam)?;
            Ok(ipam
                .pools()
                .map(|p| (p.config().name.clone(), p.usage()))
                .collect())
        })
    }

    /// Gives back blocks that stayed empty past their grace period.
    pub fn reclaim_empty_blocks(&self, now: Millis) -> Result<Vec<(String, Prefix)>> {
        let scope = Scope {
            all_pools: true,
            ..Scope::default()
        };
        self.run(now, &scope, |ipam| {
            all_nodes_loaded(ipam)?;
            Ok(ipam.reclaim_empty_blocks(now))
        })
    }

    /// The whole state in memory (kipamd's start, integrity checks, tools).
    pub fn load_all(&self, now: Millis) -> Result<Ipam> {
        let scope = Scope {
            full: true,
            all_handles: true,
            replay: true,
            ..Scope::default()
        };
        // Moved out, not cloned: a clone doubled the peak memory and time of kipamd's
        // start (1,000,000 handles). What is left behind is empty, so the write-back
        // that ends every operation writes nothing.
        self.run(now, &scope, |ipam| Ok(std::mem::take(ipam)))
    }

    /// Checks every invariant of the stored state; see [`IntegrityReport`].
    pub fn check_integrity(&self, now: Millis) -> Result<IntegrityReport> {
        let mut ipam = self.load_all(now)?;
        // Blocks rebuilt from kipamd's log tail: their nodes' summaries on disk are older
        // than the bodies by design (the next fold writes them).
        let rebuilt = ipam.take_dirty();
        let mut report = IntegrityReport::default();
        if let Err(e) = ipam.check() {
            report.problems.push(e);
        }
        for p in ipam.pools() {
            report.pools += 1;
            for b in p.blocks() {
                report.blocks += 1;
                report.held += u64::from(b.summary().held);
            }
        }
        for h in ipam.handles() {
            report.handles += 1;
            for a in &h.addrs {
                if ipam.pool(&a.pool).is_none() {
                    report.problems.push(format!(
                        "handle {} lists {} in unknown pool {}",
                        h.key, a.addr, a.pool
                    ));
                }
            }
        }
        // Summaries on disk must agree with the bodies they summarise.
        for rec in self.store.list("nodes/")? {
            let summaries =
                codec::decode_node(&rec.value).map_err(|detail| IpamError::Corrupt {
                    key: rec.key.clone(),
                    detail,
                })?;
            let rest = &rec.key["nodes/".len()..];
            let mut parts = rest.splitn(2, '/');
            let pool = unescape(parts.next().unwrap_or_default());
            let node = unescape(parts.next().unwrap_or_default());
            if rebuilt
                .pools
                .get(&pool)
                .is_some_and(|d| d.nodes.contains(&node))
            {
                continue;
            }
            let Some(p) = ipam.pool(&pool) else {
                report
                    .problems
                    .push(format!("{} belongs to no pool", rec.key));
                continue;
            };
            for (base, s) in summaries {
                match p.block(base) {
                    Some(b) if b.summary() == s => {}
                    Some(b) => report.problems.push(format!(
                        "{}: summary of {} is {:?}, body says {:?}",
                        rec.key,
                        b.prefix(),
                        s,
                        b.summary()
                    )),
                    None => report
                        .problems
                        .push(format!("{}: summarises unknown block base {base}", rec.key)),
                }
            }
        }
        Ok(report)
    }
}

/// What [`IpamStore::check_integrity`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    /// Pools checked.
    pub pools: u64,
    /// Blocks checked.
    pub blocks: u64,
    /// Addresses held.
    pub held: u64,
    /// Handles checked.
    pub handles: u64,
    /// Every violated invariant (empty: all good).
    pub problems: Vec<String>,
}

impl IntegrityReport {
    /// Whether every invariant holds.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Writes what `ipam` changed since its last [`Ipam::take_dirty`] into `txn`, with the
/// same keys and encodings as every other operation. kipamd keeps one long-lived engine
/// in memory and commits the changes of a whole batch of requests with this.
pub fn write_dirty(txn: &mut dyn Txn, ipam: &mut Ipam) -> Result<()> {
    let dirty = ipam.take_dirty();
    write_changes(txn, ipam, &dirty, 0)
}

/// Writes the records `dirty` names as `ipam` holds them now (kipamd, which takes the
/// dirty set itself to write some records later than others; see [`crate::log`]). `seq`
/// is the commit's last event: a claims record written here holds every block claimed up
/// to it.
pub fn write_changes(txn: &mut dyn Txn, ipam: &Ipam, dirty: &Dirty, seq: u64) -> Result<()> {
    Loader {
        txn,
        now: 0,
        loaded: BTreeSet::new(),
        tail: None,
        claims_read: HashMap::new(),
        claims_seq: seq,
    }
    .write_changes(ipam, dirty)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kipamd loads a million of these at start: no spare room may stay behind.
    #[test]
    fn loaded_handles_hold_no_spare_room() -> Result<()> {
        for n in 1..=3 {
            let addrs: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"pool":"p","addr":"10.0.0.{i}"}}"#))
                .collect();
            let json = format!(
                r#"{{"key":"k","node":"n","attrs":{{}},"addrs":[{}],"created":1}}"#,
                addrs.join(",")
            );
            let h = parse_handle("handles/k", json.as_bytes())?;
            // `HeldAddrs` has no spare room by construction (one address inline, more in a
            // boxed slice of exactly their number): its length is all it holds.
            assert_eq!(h.addrs.len(), n);
        }
        assert!(matches!(
            parse_handle("handles/k", b"{"),
            Err(IpamError::Corrupt { .. })
        ));
        Ok(())
    }
}
