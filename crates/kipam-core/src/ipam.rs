//! The engine: pools, handles, external networks and reservations, and the operations
//! users ask for (allocate, release, lease, check overlaps).
//!
//! An [`Ipam`] is an in-memory state machine. The store layer fills it with what an
//! operation needs (everything, for kipamd; one handle and a block or two, for a CNI exec),
//! runs the operation, and writes back what [`Ipam::take_dirty`] names. Requests that touch
//! several addresses (dual-stack) are all-or-nothing: every step is recorded and undone if
//! a later step fails.
//!
//! Handle records and their keys live in [`crate::handles`], shaped for the hot path: a
//! request's key is hashed once, its record is one slot next to its key, and
//! [`Ipam::allocate_held`] / [`Ipam::release_held`] hand back the record's own addresses
//! (`allocate` and `release_handle` are the same with a copy into a `Vec`).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use foldhash::HashSet;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use crate::handles::{Handle, HeldAddr, HeldAddrs};

use crate::block::{Block, HandleId, Millis};
use crate::error::{Error, Need, Result};
use crate::handles::HandleTable;
use crate::overlap::{NetObject, ObjectKind, ObjectRef, Overlap, find_overlaps, first_conflict};
use crate::pool::{Lease, Pool, PoolConfig, PoolDirty, Purpose, Undo, validate_name};
use crate::prefix::{AddrRange, Family, Prefix};

/// Where one address of a request comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// These pools, tried in order.
    Pools(Vec<String>),
    /// Any pool of this family (and purpose, if given), in name order.
    Family {
        /// Family.
        family: Family,
        /// Purpose.
        purpose: Option<Purpose>,
    },
}

/// One address of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Want {
    /// Where from.
    pub source: Source,
    /// A specific address (static request).
    pub addr: Option<IpAddr>,
}

/// A request: addresses for a handle on a node, all or nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocRequest {
    /// The owner.
    pub handle: String,
    /// The node asking.
    pub node: String,
    /// Attributes recorded on the handle.
    pub attrs: BTreeMap<String, String>,
    /// One entry per address (e.g. one IPv4, one IPv6).
    pub wants: Vec<Want>,
}

impl AllocRequest {
    /// One address from each of `pools` (in that order), for `handle` on `node`, with no
    /// attributes.
    pub fn from_pools(handle: &str, node: &str, pools: &[&str]) -> AllocRequest {
        AllocRequest {
            handle: handle.into(),
            node: node.into(),
            attrs: BTreeMap::new(),
            wants: pools
                .iter()
                .map(|p| Want {
                    source: Source::Pools(vec![p.to_string()]),
                    addr: None,
                })
                .collect(),
        }
    }
}

/// A network outside kipam, or a range reserved in a scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeNetwork {
    /// Unique name (per kind).
    pub name: String,
    /// The network.
    pub cidr: IpNet,
    /// Scope.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Free text (owner, site, provider).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

fn default_scope() -> String {
    "default".into()
}

/// What changed since the store layer last looked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Pools whose config changed or that were removed.
    pub pool_configs: BTreeSet<String>,
    /// Per pool: claims, blocks, nodes.
    pub pools: BTreeMap<String, PoolDirty>,
    /// Handles that changed or were removed.
    pub handles: BTreeSet<String>,
    /// External networks and reservations changed.
    pub scope_networks: bool,
}

impl Dirty {
    /// Adds what `other` names (changes seen later than this set's).
    pub fn merge(&mut self, other: Dirty) {
        self.pool_configs.extend(other.pool_configs);
        for (pool, d) in other.pools {
            self.pools.entry(pool).or_default().merge(d);
        }
        self.handles.extend(other.handles);
        self.scope_networks |= other.scope_networks;
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.pool_configs.is_empty()
            && self.handles.is_empty()
            && !self.scope_networks
            && self.pools.values().all(PoolDirty::is_empty)
    }
}

/// The engine's state.
#[derive(Clone, Debug, Default)]
pub struct Ipam {
    pools: BTreeMap<String, Pool>,
    /// Interned handle keys and the loaded handle records (see [`crate::handles`]).
    handles: HandleTable,
    /// Interned node names, shared by the handle records of each node.
    nodes: HashSet<Arc<str>>,
    externals: BTreeMap<String, ScopeNetwork>,
    reservations: BTreeMap<String, ScopeNetwork>,
    dirty_configs: BTreeSet<String>,
    dirty_scope: bool,
    /// The undo log of the running request, kept to reuse its allocation.
    undo: Vec<Undo>,
}

impl Ipam {
    /// An empty engine.
    pub fn new() -> Ipam {
        Ipam::default()
    }

    // ----- handles -----

    /// The id of a handle key, interning it.
    pub fn intern(&mut self, key: &str) -> HandleId {
        self.handles.intern(key)
    }

    /// The interned name of a node (allocated once per node name).
    fn intern_node(&mut self, node: &str) -> Arc<str> {
        if let Some(n) = self.nodes.get(node) {
            return Arc::clone(n);
        }
        let n: Arc<str> = Arc::from(node);
        self.nodes.insert(Arc::clone(&n));
        n
    }

    /// The key of a handle id.
    pub fn key_of(&self, id: HandleId) -> &str {
        self.handles.key_of(id).map_or("<unknown>", |k| k)
    }

    /// Installs a handle record read from the store.
    pub fn load_handle(&mut self, mut handle: Handle) {
        // The record shares the engine's interned strings (one copy of each name).
        handle.node = self.intern_node(&handle.node);
        for a in handle.addrs.iter_mut() {
            if let Some(p) = self.pools.get(&*a.pool) {
                a.pool = Arc::clone(p.name_arc());
            }
        }
        self.handles.load(handle);
    }

    /// Marks a handle changed, so the store layer writes its record again — or deletes
    /// it, when no record is loaded (kipamd, after rebuilding handles from its log).
    pub fn touch_handle(&mut self, key: &str) {
        let id = self.handles.intern(key);
        self.handles.mark_dirty(id);
    }

    /// A loaded handle.
    pub fn handle(&self, key: &str) -> Option<&Handle> {
        self.handles.by_key(key)
    }

    /// Loaded handles.
    pub fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.handles.iter().map(|(_, h)| h)
    }

    // ----- pools -----

    /// Installs a pool read from the store (no overlap check: it was checked when created).
    pub fn load_pool(&mut self, pool: Pool) {
        let name = pool.config().name.clone();
        self.pools.insert(name.clone(), pool);
        self.apply_scope_exclusions(Some(&name));
    }

    /// A pool.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.get(name)
    }

    /// A pool, to load state into.
    pub fn pool_mut(&mut self, name: &str) -> Option<&mut Pool> {
        self.pools.get_mut(name)
    }

    /// Pools in name order.
    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.pools.values()
    }

    /// Installs a loaded block body, interning its holders' keys.
    pub fn load_block(&mut self, pool: &str, block: Block) -> Result<()> {
        let p = self
            .pools
            .get_mut(pool)
            .ok_or_else(|| Error::PoolNotFound { pool: pool.into() })?;
        p.load_block(block);
        Ok(())
    }

    /// Creates a pool. Refused when the name exists or the CIDR overlaps a pool, external
    /// network or reservation of the same scope (the error names it). The store layer must
    /// have loaded every pool and scope network first.
    pub fn create_pool(&mut self, config: PoolConfig) -> Result<()> {
        config.validate()?;
        if self.pools.contains_key(&config.name) {
            return Err(Error::AlreadyExists {
                kind: "pool",
                name: config.name,
            });
        }
        let range = AddrRange::of_net(config.cidr);
        let id = ObjectRef {
            kind: ObjectKind::Pool,
            name: config.name.clone(),
        };
        let objects = self.scope_objects(false);
        if let Some(hit) = first_conflict(&objects, &config.scope, &range, None) {
            return Err(Error::Overlap(Box::new(Overlap {
                scope: config.scope.clone(),
                a: id,
                a_range: range,
                b: hit.id.clone(),
                b_range: hit.range,
                shared: range.intersection(&hit.range).unwrap_or(range),
            })));
        }
        let name = config.name.clone();
        let mut pool = Pool::new(config)?;
        // A pool created here has no state anywhere else: every node's (empty) summaries
        // are known, so allocation never asks the caller to load any.
        pool.mark_all_nodes_loaded();
        self.pools.insert(name.clone(), pool);
        self.apply_scope_exclusions(Some(&name));
        self.dirty_configs.insert(name);
        Ok(())
    }

    /// Changes a pool's mutable settings (see [`Pool::update`]).
    pub fn update_pool(&mut self, config: PoolConfig) -> Result<()> {
        let name = config.name.clone();
        let pool = self
            .pools
            .get_mut(&name)
            .ok_or_else(|| Error::PoolNotFound { pool: name.clone() })?;
        pool.update(config)?;
        self.apply_scope_exclusions(Some(&name));
        self.dirty_configs.insert(name);
        Ok(())
    }

    /// Deletes a pool. Refused while it holds addresses or leases, unless `force`, which
    /// releases them (the handles lose those addresses). Needs the pool fully loaded.
    pub fn delete_pool(&mut self, name: &str, force: bool) -> Result<()> {
        let pool = self
            .pools
            .get(name)
            .ok_or_else(|| Error::PoolNotFound { pool: name.into() })?;
        let u = pool.usage();
        let held = u64::try_from(u.held + u.quarantined).unwrap_or(u64::MAX);
        if !force && (u.held > 0 || u.leases > 0) {
            return Err(Error::PoolInUse {
                pool: name.into(),
                allocations: held,
                leases: u.leases,
            });
        }
        // The store layer deletes every record of a pool whose config is dirty and gone.
        self.pools.remove(name);
        let touched: Vec<HandleId> = self
            .handles
            .iter()
            .filter(|(_, h)| h.addrs.iter().any(|a| &*a.pool == name))
            .map(|(id, _)| id)
            .collect();
        for id in touched {
            self.handles.mark_dirty(id);
            let Some(h) = self.handles.get_mut(id) else {
                continue;
            };
            h.addrs.retain(|a| &*a.pool != name);
            if h.addrs.is_empty() {
                self.handles.forget(id);
            }
        }
        self.dirty_configs.insert(name.to_string());
        Ok(())
    }

    // ----- allocation -----

    fn resolve<'a>(&self, source: &'a Source) -> Result<Cow<'a, [String]>> {
        match source {
            Source::Pools(names) => {
                for n in names {
                    if !self.pools.contains_key(n) {
                        return Err(Error::PoolNotFound { pool: n.clone() });
                    }
                }
                if names.is_empty() {
                    return Err(Error::Invalid {
                        field: "pools".into(),
                        reason: "name at least one pool".into(),
                    });
                }
                Ok(Cow::Borrowed(names))
            }
            Source::Family { family, purpose } => {
                let names: Vec<String> = self
                    .pools
                    .values()
                    .filter(|p| {
                        p.config().family() == *family
                            && purpose.is_none_or(|pp| p.config().purpose == pp)
                    })
                    .map(|p| p.config().name.clone())
                    .collect();
                if names.is_empty() {
                    return Err(Error::NoPoolForFamily {
                        family: *family,
                        purpose: *purpose,
                    });
                }
                Ok(Cow::Owned(names))
            }
        }
    }

    /// Allocates one address per want for the request's handle, all or nothing.
    ///
    /// A handle that already holds addresses gets those back, unchanged (idempotent: a
    /// runtime retrying after a crash neither leaks nor fails). On any error nothing
    /// changes. Quarantined addresses are used only when no pool of a want has anything else.
    /// Returns a copy of the addresses; [`Self::allocate_held`] lends them instead.
    pub fn allocate(&mut self, req: &AllocRequest, now: Millis) -> Result<Vec<HeldAddr>> {
        self.allocate_held(req, now).map(<[HeldAddr]>::to_vec)
    }

    /// [`Self::allocate`], answering with the addresses as the handle's record holds them:
    /// no copy and, for a handle of one address, no allocation besides its interned key.
    /// What a daemon answering allocation requests calls.
    pub fn allocate_held(&mut self, req: &AllocRequest, now: Millis) -> Result<&[HeldAddr]> {
        // Interned names were checked when first seen (or written by the store layer, which
        // checked them then): only new ones are validated here. The key is hashed once.
        let hash = self.handles.hash(&req.handle);
        let known = self.handles.find(hash, &req.handle);
        if known.is_none() {
            validate_name("handle", &req.handle)?;
        }
        let node = self.nodes.get(req.node.as_str()).map(Arc::clone);
        if node.is_none() {
            validate_name("node", &req.node)?;
        }
        if let Some(id) = known
            && self.handles.get(id).is_some_and(|h| !h.addrs.is_empty())
        {
            return Ok(self.handles.get(id).map_or(&[], |h| h.addrs.as_slice()));
        }
        if req.wants.is_empty() {
            return Err(Error::Invalid {
                field: "wants".into(),
                reason: "ask for at least one address".into(),
            });
        }
        // Sources are resolved as each want is served; an error there (a missing pool)
        // rolls back what earlier wants took, like any other failure.
        let id = match known {
            Some(id) => id,
            None => self.handles.insert(hash, Arc::from(req.handle.as_str())),
        };
        let mut undo = std::mem::take(&mut self.undo);
        undo.clear();
        let mut got = HeldAddrs::new();
        let mut failed = None;
        for want in &req.wants {
            let step = match (&want.source, want.addr) {
                // One pool, any address: serving the want looks the pool up (and fails the
                // same way when it is missing), so it is not looked up twice.
                (Source::Pools(names), None) if names.len() == 1 => {
                    self.allocate_one(want, names, id, &req.node, now, &mut undo)
                }
                _ => self.resolve(&want.source).and_then(|pools| {
                    self.allocate_one(want, &pools, id, &req.node, now, &mut undo)
                }),
            };
            match step {
                Ok(a) => got.push(a),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            self.rollback(&undo);
            undo.clear();
            self.undo = undo;
            if known.is_none() {
                self.handles.forget(id);
            }
            return Err(e);
        }
        undo.clear();
        self.undo = undo;
        let node = match node {
            Some(node) => node,
            None => self.intern_node(&req.node),
        };
        // The record takes the interned key.
        self.handles.install(id, |key| Handle {
            key,
            node,
            attrs: req.attrs.clone(),
            addrs: got,
            created: now,
        });
        self.handles.mark_dirty(id);
        Ok(self.handles.get(id).map_or(&[], |h| h.addrs.as_slice()))
    }

    fn allocate_one(
        &mut self,
        want: &Want,
        pools: &[String],
        id: HandleId,
        node: &str,
        now: Millis,
        undo: &mut Vec<Undo>,
    ) -> Result<HeldAddr> {
        if let Some(addr) = want.addr {
            let Some(name) = pools.iter().find(|n| {
                self.pools.get(*n).is_some_and(|p| {
                    p.config().family() == Family::of(addr)
                        && p.prefix().contains_value(crate::prefix::addr_to_u128(addr))
                })
            }) else {
                return Err(Error::AddressOutsidePool {
                    addr,
                    pool: pools.join(","),
                });
            };
            let handles = &self.handles;
            let holder = |h: HandleId| handles.key_of(h).map_or("<unknown>", |k| k).to_string();
            let pool = self
                .pools
                .get_mut(name)
                .ok_or_else(|| Error::PoolNotFound { pool: name.clone() })?;
            pool.allocate_exact(addr, id, node, now, undo, &holder)?;
            return Ok(HeldAddr {
                pool: Arc::clone(pool.name_arc()),
                addr,
            });
        }
        for quarantined in [false, true] {
            for name in pools {
                let pool = self
                    .pools
                    .get_mut(name)
                    .ok_or_else(|| Error::PoolNotFound { pool: name.clone() })?;
                if let Some(v) = pool.allocate(id, node, now, quarantined, undo)? {
                    return Ok(HeldAddr {
                        pool: Arc::clone(pool.name_arc()),
                        addr: pool.addr(v),
                    });
                }
            }
        }
        let family = pools
            .first()
            .and_then(|n| self.pools.get(n))
            .map_or(Family::Ipv4, |p| p.config().family());
        if let [only] = pools
            && let Some(p) = self.pools.get(only)
            && let Some(max) = p
                .config()
                .max_blocks_per_node
                .filter(|_| p.config().strict_affinity)
            && p.node_summaries(node).len() >= max as usize
        {
            return Err(Error::NodeBlockLimit {
                pool: only.clone(),
                node: node.into(),
                max,
            });
        }
        Err(Error::PoolExhausted {
            pool: pools.join(","),
            family,
        })
    }

    fn rollback(&mut self, undo: &[Undo]) {
        for step in undo.iter().rev() {
            let tag = match step {
                Undo::Took { pool, .. } | Undo::Claimed { pool, .. } => *pool,
            };
            if let Some(p) = self.pools.values_mut().find(|p| p.tag() == tag) {
                p.undo(step);
            }
        }
    }

    /// Releases everything `key` holds; returns what it held (empty for an unknown handle:
    /// release is idempotent). The store layer must load the handle and its blocks.
    pub fn release_handle(&mut self, key: &str, now: Millis) -> Result<Vec<HeldAddr>> {
        self.release_held(key, now).map(HeldAddrs::into_vec)
    }

    /// [`Self::release_handle`], answering with the record's own address list (no copy;
    /// no allocation for a handle of one address). What a daemon calls.
    pub fn release_held(&mut self, key: &str, now: Millis) -> Result<HeldAddrs> {
        let Some(id) = self.handles.find(self.handles.hash(key), key) else {
            return Ok(HeldAddrs::new());
        };
        let Some(h) = self.handles.get(id) else {
            return Ok(HeldAddrs::new());
        };
        // Check everything is loaded before changing anything. (A single address needs no
        // separate check: releasing it fails before it changes anything.)
        if h.addrs.len() > 1 {
            for a in &h.addrs {
                if let Some(p) = self.pools.get(&*a.pool) {
                    let block = p.block_of(a.addr);
                    if !p.block_loaded(block.base) && p.block_claimed(block.base) {
                        return Err(Error::NeedLoad(Need::Block {
                            pool: a.pool.to_string(),
                            block,
                        }));
                    }
                }
            }
        }
        for a in &h.addrs {
            if let Some(p) = self.pools.get_mut(&*a.pool) {
                // Only what this handle holds goes (an address released by address and
                // held by another handle since is left alone).
                p.release_if(a.addr, Some(id), now)?;
            }
        }
        self.handles.mark_dirty(id);
        Ok(self.handles.forget(id))
    }

    /// Releases one address, whoever holds it; returns the holder's key. The store layer
    /// must load the block and the holder's handle.
    pub fn release_address(
        &mut self,
        pool: &str,
        addr: IpAddr,
        now: Millis,
    ) -> Result<Option<String>> {
        let p = self
            .pools
            .get(pool)
            .ok_or_else(|| Error::PoolNotFound { pool: pool.into() })?;
        let v = crate::prefix::addr_to_u128(addr);
        if Family::of(addr) != p.prefix().family || !p.prefix().contains_value(v) {
            return Ok(None);
        }
        let block = p.block_of(addr);
        let holder = match p.block(block.base) {
            Some(b) => match b.state(offset(block, addr)) {
                crate::block::AddrState::Held(id) => id,
                _ => return Ok(None),
            },
            None if p.block_claimed(block.base) => {
                return Err(Error::NeedLoad(Need::Block {
                    pool: pool.into(),
                    block,
                }));
            }
            None => return Ok(None),
        };
        let key = self.key_of(holder).to_string();
        if self.handles.get(holder).is_none() {
            return Err(Error::NeedLoad(Need::Handle { key }));
        }
        if let Some(p) = self.pools.get_mut(pool) {
            p.release_if(addr, Some(holder), now)?;
        }
        self.handles.mark_dirty(holder);
        if let Some(h) = self.handles.get_mut(holder) {
            h.addrs.retain(|a| !(&*a.pool == pool && a.addr == addr));
            if h.addrs.is_empty() {
                self.handles.forget(holder);
            }
        }
        Ok(Some(key))
    }

    /// Gives back blocks that stayed empty past their pool's grace period.
    pub fn reclaim_empty_blocks(&mut self, now: Millis) -> Vec<(String, Prefix)> {
        let mut out = Vec::new();
        for (name, p) in &mut self.pools {
            out.extend(
                p.reclaim_empty_blocks(now)
                    .into_iter()
                    .map(|b| (name.clone(), b)),
            );
        }
        out
    }

    // ----- prefix leases -----

    /// Leases a sub-prefix of `pool` to `owner`: exactly `prefix` if given, else the lowest
    /// free one of length `len`.
    pub fn lease_prefix(
        &mut self,
        pool: &str,
        want: LeaseWant,
        owner: &str,
        attrs: BTreeMap<String, String>,
        now: Millis,
    ) -> Result<Lease> {
        validate_name("owner", owner)?;
        let p = self
            .pools
            .get_mut(pool)
            .ok_or_else(|| Error::PoolNotFound { pool: pool.into() })?;
        match want {
            LeaseWant::Length(len) => p.lease(len, owner, attrs, now),
            LeaseWant::Exact(prefix) => p.lease_exact(prefix, owner, attrs, now),
        }
    }

    /// Ends a lease; `None` if there was none.
    pub fn release_lease(&mut self, pool: &str, prefix: IpNet) -> Result<Option<Lease>> {
        let p = self
            .pools
            .get_mut(pool)
            .ok_or_else(|| Error::PoolNotFound { pool: pool.into() })?;
        Ok(p.release_lease(prefix))
    }

    // ----- external networks and reservations -----

    /// Installs a scope network read from the store.
    pub fn load_scope_network(&mut self, kind: ObjectKind, net: ScopeNetwork) {
        match kind {
            ObjectKind::Reservation => self.reservations.insert(net.name.clone(), net),
            _ => self.externals.insert(net.name.clone(), net),
        };
        self.apply_scope_exclusions(None);
    }

    /// Registers an external network (`kind = External`) or a reservation. It may overlap
    /// existing pools (that is what it reports), but no new address or lease is handed out
    /// inside it from then on.
    pub fn add_scope_network(&mut self, kind: ObjectKind, net: ScopeNetwork) -> Result<()> {
        validate_name("name", &net.name)?;
        validate_name("scope", &net.scope)?;
        if net.cidr.trunc() != net.cidr {
            return Err(Error::Invalid {
                field: "cidr".into(),
                reason: format!(
                    "{} has host bits set; did you mean {}?",
                    net.cidr,
                    net.cidr.trunc()
                ),
            });
        }
        let map = match kind {
            ObjectKind::Reservation => &mut self.reservations,
            ObjectKind::External => &mut self.externals,
            _ => {
                return Err(Error::Invalid {
                    field: "kind".into(),
                    reason: "only external networks and reservations".into(),
                });
            }
        };
        if map.contains_key(&net.name) {
            return Err(Error::AlreadyExists {
                kind: if kind == ObjectKind::External {
                    "external network"
                } else {
                    "reservation"
                },
                name: net.name,
            });
        }
        map.insert(net.name.clone(), net);
        self.dirty_scope = true;
        self.apply_scope_exclusions(None);
        Ok(())
    }

    /// Removes an external network or reservation; false if there was none.
    pub fn remove_scope_network(&mut self, kind: ObjectKind, name: &str) -> bool {
        let removed = match kind {
            ObjectKind::Reservation => self.reservations.remove(name).is_some(),
            _ => self.externals.remove(name).is_some(),
        };
        if removed {
            self.dirty_scope = true;
            self.apply_scope_exclusions(None);
        }
        removed
    }

    /// External networks and reservations, by kind.
    pub fn scope_networks(&self, kind: ObjectKind) -> impl Iterator<Item = &ScopeNetwork> {
        match kind {
            ObjectKind::Reservation => self.reservations.values(),
            _ => self.externals.values(),
        }
    }

    fn apply_scope_exclusions(&mut self, only: Option<&str>) {
        let nets: Vec<(String, AddrRange)> = self
            .externals
            .values()
            .chain(self.reservations.values())
            .map(|n| (n.scope.clone(), AddrRange::of_net(n.cidr)))
            .collect();
        for (name, p) in &mut self.pools {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let scope = p.config().scope.clone();
            let ranges = nets
                .iter()
                .filter(|(s, _)| *s == scope)
                .map(|(_, r)| *r)
                .collect();
            p.set_scope_exclusions(ranges);
        }
    }

    fn scope_objects(&self, with_leases: bool) -> Vec<NetObject> {
        let mut out = Vec::new();
        for p in self.pools.values() {
            let c = p.config();
            out.push(NetObject {
                id: ObjectRef {
                    kind: ObjectKind::Pool,
                    name: c.name.clone(),
                },
                scope: c.scope.clone(),
                range: AddrRange::of_net(c.cidr),
                parent: None,
            });
            if with_leases {
                for l in p.leases() {
                    out.push(NetObject {
                        id: ObjectRef {
                            kind: ObjectKind::Lease,
                            name: format!("{}/{}", c.name, l.prefix),
                        },
                        scope: c.scope.clone(),
                        range: AddrRange::of_net(l.prefix),
                        parent: Some(c.name.clone()),
                    });
                }
            }
        }
        for (kind, map) in [
            (ObjectKind::External, &self.externals),
            (ObjectKind::Reservation, &self.reservations),
        ] {
            out.extend(map.values().map(|n| NetObject {
                id: ObjectRef {
                    kind,
                    name: n.name.clone(),
                },
                scope: n.scope.clone(),
                range: AddrRange::of_net(n.cidr),
                parent: None,
            }));
        }
        out
    }

    /// Every overlapping pair within each scope.
    pub fn overlaps(&self) -> Vec<Overlap> {
        find_overlaps(&self.scope_objects(true))
    }

    // ----- bookkeeping -----

    /// What changed since the last call, and forget it.
    pub fn take_dirty(&mut self) -> Dirty {
        let mut pools = BTreeMap::new();
        for (name, p) in &mut self.pools {
            let d = p.take_dirty();
            if d != PoolDirty::default() {
                pools.insert(name.clone(), d);
            }
        }
        Dirty {
            pool_configs: std::mem::take(&mut self.dirty_configs),
            pools,
            handles: self.handles.take_dirty(),
            scope_networks: std::mem::take(&mut self.dirty_scope),
        }
    }

    /// Checks every invariant over the loaded state: pools tile correctly, every block's
    /// counts add up, every held address is listed by its handle and every handle's
    /// address is held by it, and no address is held twice.
    pub fn check(&self) -> std::result::Result<(), String> {
        let mut held: BTreeMap<IpAddr, String> = BTreeMap::new();
        for p in self.pools.values() {
            p.check()?;
            for b in p.blocks() {
                for (off, id) in b.held() {
                    let addr = p.addr(b.prefix().base + u128::from(off));
                    let key = self.key_of(id).to_string();
                    if let Some(other) = held.insert(addr, key.clone()) {
                        return Err(format!("{addr} held twice: by {other} and {key}"));
                    }
                    if let Some(h) = self.handle(&key) {
                        if !h
                            .addrs
                            .iter()
                            .any(|a| a.addr == addr && *a.pool == *p.config().name)
                        {
                            return Err(format!(
                                "{addr} is held by {key} but the handle does not list it"
                            ));
                        }
                    } else {
                        return Err(format!(
                            "{addr} is held by {key}, which has no handle record"
                        ));
                    }
                }
            }
        }
        for h in self.handles() {
            for a in &h.addrs {
                let Some(p) = self.pools.get(&*a.pool) else {
                    return Err(format!(
                        "handle {} lists {} in missing pool {}",
                        h.key, a.addr, a.pool
                    ));
                };
                let block = p.block_of(a.addr);
                if p.block_loaded(block.base)
                    && held.get(&a.addr).map(String::as_str) != Some(&*h.key)
                {
                    return Err(format!(
                        "handle {} lists {} but does not hold it",
                        h.key, a.addr
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Which sub-prefix a lease asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseWant {
    /// The lowest free prefix of this length.
    Length(u8),
    /// Exactly this prefix.
    Exact(IpNet),
}

fn offset(block: Prefix, addr: IpAddr) -> u32 {
    (crate::prefix::addr_to_u128(addr).wrapping_sub(block.base)) as u32
}
