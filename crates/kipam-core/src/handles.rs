//! Handle records and the index from handle keys to them.
//!
//! Every handle key the engine knows gets a dense id ([`HandleId`]): a block's owner array
//! names a holder in 4 bytes, and ids are recycled. The table is shaped so that an
//! allocate or release touches as few cache lines as possible at a million handles:
//!
//! - `slots`, at `id - 1`: the handle's record itself ([`Handle`], addresses inline), an
//!   interned key without a loaded record (a holder named by a loaded block), or a retired
//!   key (see below). The key is stored once, in the slot.
//! - `index` ([`crate::keyindex`]): 8-byte entries of an id and 32 bits of its key's
//!   hash, in one open-addressing array; a candidate's key is compared through its slot.
//!   A request's key is hashed once and that hash serves the lookup, the insertion and the
//!   removal.
//! - Dirty ids: a bit per id and the list of ids whose bit is set, so noting a change costs
//!   no hashing. A handle that goes away while dirty keeps its key and id as *retired* until
//!   [`HandleTable::take_dirty`] reports its removal: the dirty set stays bounded by the
//!   keys touched between two takes, and a key that comes back before then (a CNI retry,
//!   a restarted pod) finds its id and key allocation again.
//!
//! [`HeldAddrs`] keeps one address inline (most handles hold one or two): a single-stack
//! record needs no heap allocation besides its key.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::block::{HandleId, Millis};
use crate::keyindex::KeyIndex;

/// An address held by a handle.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HeldAddr {
    /// The pool it came from (the engine's interned name: cloning it allocates nothing).
    pub pool: Arc<str>,
    /// The address.
    pub addr: IpAddr,
}

/// The owner of allocations: its key, node, attributes and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    /// The key (for CNI: `<network>/<containerID>/<ifname>`); the engine's interned key.
    pub key: Arc<str>,
    /// The node it allocated for; the engine's interned node name.
    pub node: Arc<str>,
    /// Attributes (pod namespace/name/uid, labels).
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
    /// What it holds, in request order.
    pub addrs: HeldAddrs,
    /// When it first allocated.
    pub created: Millis,
}

/// A handle's addresses, in request order: a slice of [`HeldAddr`] that keeps one address
/// inline and more on the heap, in an allocation of exactly their number. Serialized as a
/// plain list.
#[derive(Clone)]
pub struct HeldAddrs(Repr);

#[derive(Clone)]
enum Repr {
    One(HeldAddr),
    // A boxed slice, not a Vec: it keeps the type at the size of one address.
    Many(Box<[HeldAddr]>),
}

impl HeldAddrs {
    /// No addresses.
    pub fn new() -> HeldAddrs {
        HeldAddrs(Repr::Many(Box::default()))
    }

    /// The addresses.
    pub fn as_slice(&self) -> &[HeldAddr] {
        match &self.0 {
            Repr::One(a) => std::slice::from_ref(a),
            Repr::Many(b) => b,
        }
    }

    /// The addresses, to change in place.
    pub fn as_mut_slice(&mut self) -> &mut [HeldAddr] {
        match &mut self.0 {
            Repr::One(a) => std::slice::from_mut(a),
            Repr::Many(b) => b,
        }
    }

    /// Appends an address.
    pub fn push(&mut self, addr: HeldAddr) {
        let mut all = std::mem::take(self).into_vec();
        if all.is_empty() {
            self.0 = Repr::One(addr);
            return;
        }
        all.push(addr);
        *self = HeldAddrs::from(all);
    }

    /// Keeps only the addresses `keep` says yes to.
    pub fn retain(&mut self, keep: impl FnMut(&HeldAddr) -> bool) {
        let mut all = std::mem::take(self).into_vec();
        all.retain(keep);
        *self = HeldAddrs::from(all);
    }

    /// The addresses as a vector.
    pub fn into_vec(self) -> Vec<HeldAddr> {
        match self.0 {
            Repr::One(a) => vec![a],
            Repr::Many(b) => b.into_vec(),
        }
    }
}

impl Default for HeldAddrs {
    fn default() -> HeldAddrs {
        HeldAddrs::new()
    }
}

impl Deref for HeldAddrs {
    type Target = [HeldAddr];

    fn deref(&self) -> &[HeldAddr] {
        self.as_slice()
    }
}

impl DerefMut for HeldAddrs {
    fn deref_mut(&mut self) -> &mut [HeldAddr] {
        self.as_mut_slice()
    }
}

impl From<Vec<HeldAddr>> for HeldAddrs {
    fn from(mut all: Vec<HeldAddr>) -> HeldAddrs {
        match all.pop() {
            Some(one) if all.is_empty() => HeldAddrs(Repr::One(one)),
            Some(last) => {
                all.push(last);
                // Moved into an allocation of exactly their number rather than shrunk in
                // place: a `Vec` from serde has room to spare, and shrinking each in place
                // while loading a million records leaves holes later allocations of the
                // load are too big to reuse.
                let mut exact = Vec::with_capacity(all.len());
                exact.append(&mut all);
                HeldAddrs(Repr::Many(exact.into_boxed_slice()))
            }
            None => HeldAddrs::new(),
        }
    }
}

impl From<HeldAddrs> for Vec<HeldAddr> {
    fn from(addrs: HeldAddrs) -> Vec<HeldAddr> {
        addrs.into_vec()
    }
}

impl FromIterator<HeldAddr> for HeldAddrs {
    fn from_iter<I: IntoIterator<Item = HeldAddr>>(iter: I) -> HeldAddrs {
        HeldAddrs::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl std::fmt::Debug for HeldAddrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

impl PartialEq for HeldAddrs {
    fn eq(&self, other: &HeldAddrs) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for HeldAddrs {}

impl PartialEq<Vec<HeldAddr>> for HeldAddrs {
    fn eq(&self, other: &Vec<HeldAddr>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl PartialEq<HeldAddrs> for Vec<HeldAddr> {
    fn eq(&self, other: &HeldAddrs) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl PartialEq<[HeldAddr]> for HeldAddrs {
    fn eq(&self, other: &[HeldAddr]) -> bool {
        self.as_slice() == other
    }
}

impl Hash for HeldAddrs {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl Serialize for HeldAddrs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.as_slice())
    }
}

impl<'de> Deserialize<'de> for HeldAddrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HeldAddrs, D::Error> {
        Vec::<HeldAddr>::deserialize(d).map(HeldAddrs::from)
    }
}

impl<'a> IntoIterator for &'a HeldAddrs {
    type Item = &'a HeldAddr;
    type IntoIter = std::slice::Iter<'a, HeldAddr>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl<'a> IntoIterator for &'a mut HeldAddrs {
    type Item = &'a mut HeldAddr;
    type IntoIter = std::slice::IterMut<'a, HeldAddr>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_mut_slice().iter_mut()
    }
}

impl IntoIterator for HeldAddrs {
    type Item = HeldAddr;
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        IntoIter(match self.0 {
            Repr::One(a) => IterRepr::One(Some(a)),
            Repr::Many(b) => IterRepr::Many(b.into_vec().into_iter()),
        })
    }
}

/// The addresses of a [`HeldAddrs`], by value.
pub struct IntoIter(IterRepr);

enum IterRepr {
    One(Option<HeldAddr>),
    Many(std::vec::IntoIter<HeldAddr>),
}

impl Iterator for IntoIter {
    type Item = HeldAddr;

    fn next(&mut self) -> Option<HeldAddr> {
        match &mut self.0 {
            IterRepr::One(a) => a.take(),
            IterRepr::Many(it) => it.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            IterRepr::One(a) => (usize::from(a.is_some()), Some(usize::from(a.is_some()))),
            IterRepr::Many(it) => it.size_hint(),
        }
    }
}

/// What an id stands for.
#[derive(Clone, Debug, Default)]
enum Slot {
    /// Not in use (on the free list).
    #[default]
    Free,
    /// A key without a loaded record.
    Interned(Arc<str>),
    /// A handle that went away and whose removal is not taken yet (always dirty).
    Retired(Arc<str>),
    /// A loaded record.
    Loaded(Handle),
}

impl Slot {
    fn key(&self) -> Option<&Arc<str>> {
        match self {
            Slot::Free => None,
            Slot::Interned(k) | Slot::Retired(k) => Some(k),
            Slot::Loaded(h) => Some(&h.key),
        }
    }
}

/// Interned handle keys and their records (see the module doc).
#[derive(Clone, Debug, Default)]
pub(crate) struct HandleTable {
    index: KeyIndex,
    hasher: foldhash::fast::RandomState,
    slots: Vec<Slot>,
    free: Vec<HandleId>,
    dirty_bits: Vec<u64>,
    dirty: Vec<HandleId>,
}

/// The slot index of an id (ids start at 1; 0 means nobody).
fn at(id: HandleId) -> usize {
    (id as usize).wrapping_sub(1)
}

impl HandleTable {
    /// The hash of a key, for [`Self::find`] and [`Self::insert`].
    pub(crate) fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The id of `key` (interned, loaded or retired).
    pub(crate) fn find(&self, hash: u64, key: &str) -> Option<HandleId> {
        let slots = &self.slots;
        self.index.find(hash, |id| {
            slots
                .get(at(id))
                .and_then(Slot::key)
                .is_some_and(|k| **k == *key)
        })
    }

    /// Interns a key that [`Self::find`] did not find.
    pub(crate) fn insert(&mut self, hash: u64, key: Arc<str>) -> HandleId {
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[at(id)] = Slot::Interned(key);
                id
            }
            None => {
                self.slots.push(Slot::Interned(key));
                if self.dirty_bits.len() * 64 < self.slots.len() {
                    self.dirty_bits.push(0);
                }
                self.slots.len() as HandleId
            }
        };
        self.index.insert(hash, id);
        id
    }

    /// The id of `key`, interning it; a retired key is interned again under its id.
    pub(crate) fn intern(&mut self, key: &str) -> HandleId {
        let hash = self.hash(key);
        match self.find(hash, key) {
            Some(id) => {
                if let Some(slot @ Slot::Retired(_)) = self.slots.get_mut(at(id))
                    && let Slot::Retired(k) = std::mem::take(slot)
                {
                    *slot = Slot::Interned(k);
                }
                id
            }
            None => self.insert(hash, Arc::from(key)),
        }
    }

    /// The key of a live id (not of a free or retired one).
    pub(crate) fn key_of(&self, id: HandleId) -> Option<&Arc<str>> {
        match self.slots.get(at(id))? {
            Slot::Interned(k) => Some(k),
            Slot::Loaded(h) => Some(&h.key),
            Slot::Free | Slot::Retired(_) => None,
        }
    }

    /// The loaded record of an id.
    pub(crate) fn get(&self, id: HandleId) -> Option<&Handle> {
        match self.slots.get(at(id))? {
            Slot::Loaded(h) => Some(h),
            _ => None,
        }
    }

    /// The loaded record of an id, to change (the caller marks it dirty).
    pub(crate) fn get_mut(&mut self, id: HandleId) -> Option<&mut Handle> {
        match self.slots.get_mut(at(id))? {
            Slot::Loaded(h) => Some(h),
            _ => None,
        }
    }

    /// The loaded record of a key.
    pub(crate) fn by_key(&self, key: &str) -> Option<&Handle> {
        self.get(self.find(self.hash(key), key)?)
    }

    /// Loaded records with their ids.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (HandleId, &Handle)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| match s {
            Slot::Loaded(h) => Some(((i + 1) as HandleId, h)),
            _ => None,
        })
    }

    /// Makes `build(key)` the record of the interned id (its key is the interned one).
    pub(crate) fn install(&mut self, id: HandleId, build: impl FnOnce(Arc<str>) -> Handle) {
        let Some(slot) = self.slots.get_mut(at(id)) else {
            return;
        };
        let key = match std::mem::take(slot) {
            Slot::Interned(k) | Slot::Retired(k) => k,
            Slot::Loaded(h) => h.key,
            Slot::Free => return,
        };
        *slot = Slot::Loaded(build(key));
    }

    /// Installs a record read from the store, sharing the interned key.
    pub(crate) fn load(&mut self, mut handle: Handle) {
        let hash = self.hash(&handle.key);
        let id = match self.find(hash, &handle.key) {
            Some(id) => id,
            None => self.insert(hash, Arc::clone(&handle.key)),
        };
        self.install(id, |key| {
            handle.key = key;
            handle
        });
    }

    /// Drops an id's record and returns what it held. The id goes back to the free list,
    /// unless it is dirty: then its key stays, retired, until the removal is taken.
    pub(crate) fn forget(&mut self, id: HandleId) -> HeldAddrs {
        let dirty = self.is_dirty(id);
        let Some(slot) = self.slots.get_mut(at(id)) else {
            return HeldAddrs::new();
        };
        let (key, addrs) = match std::mem::take(slot) {
            Slot::Free => return HeldAddrs::new(),
            Slot::Interned(k) | Slot::Retired(k) => (k, HeldAddrs::new()),
            Slot::Loaded(h) => (h.key, h.addrs),
        };
        if dirty {
            *slot = Slot::Retired(key);
        } else {
            self.release_id(id, &key);
        }
        addrs
    }

    /// Takes a free slot's id out of the index and puts it on the free list.
    fn release_id(&mut self, id: HandleId, key: &str) {
        self.index.remove(self.hasher.hash_one(key), id);
        self.free.push(id);
    }

    fn is_dirty(&self, id: HandleId) -> bool {
        let i = at(id);
        self.dirty_bits
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Notes that the live id changed (the store layer writes or deletes its record).
    pub(crate) fn mark_dirty(&mut self, id: HandleId) {
        let i = at(id);
        if !matches!(self.slots.get(i), Some(Slot::Interned(_) | Slot::Loaded(_))) {
            return;
        }
        if let Some(w) = self.dirty_bits.get_mut(i / 64)
            && *w & (1 << (i % 64)) == 0
        {
            *w |= 1 << (i % 64);
            self.dirty.push(id);
        }
    }

    /// The keys that changed since the last call; retired ids are freed.
    pub(crate) fn take_dirty(&mut self) -> BTreeSet<String> {
        let ids = std::mem::take(&mut self.dirty);
        let mut keys = BTreeSet::new();
        for id in ids {
            let i = at(id);
            if let Some(w) = self.dirty_bits.get_mut(i / 64) {
                *w &= !(1 << (i % 64));
            }
            let Some(slot) = self.slots.get_mut(i) else {
                continue;
            };
            if let Some(k) = slot.key() {
                keys.insert(k.to_string());
            }
            if matches!(slot, Slot::Retired(_))
                && let Slot::Retired(k) = std::mem::take(slot)
            {
                self.release_id(id, &k);
            }
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: Arc<str>) -> Handle {
        Handle {
            key,
            node: Arc::from("n"),
            attrs: BTreeMap::new(),
            addrs: HeldAddrs::from(vec![HeldAddr {
                pool: Arc::from("p"),
                addr: IpAddr::from([10, 0, 0, 1]),
            }]),
            created: 0,
        }
    }

    /// A handle that goes away while dirty keeps its id until its removal is taken; a key
    /// that comes back meanwhile gets that id again, and is reported once.
    #[test]
    fn retired_keys_are_reported_then_freed() {
        let mut t = HandleTable::default();
        let a = t.intern("a");
        t.install(a, record);
        t.mark_dirty(a);
        assert_eq!(t.forget(a).len(), 1);
        assert!(t.by_key("a").is_none());
        assert_eq!(t.key_of(a), None);
        assert_eq!(t.intern("a"), a, "a retired key comes back with its id");
        t.install(a, record);
        t.mark_dirty(a);
        t.forget(a);
        assert_eq!(t.take_dirty(), BTreeSet::from(["a".to_string()]));
        assert_eq!(t.find(t.hash("a"), "a"), None, "taken: the id is free");
        assert_eq!(t.intern("b"), a, "and reused");
        assert!(t.take_dirty().is_empty(), "interning is not a change");
    }

    #[test]
    fn held_addrs_keep_one_inline_and_compare_as_lists() {
        let one = HeldAddr {
            pool: Arc::from("p"),
            addr: IpAddr::from([10, 0, 0, 1]),
        };
        let mut addrs = HeldAddrs::new();
        addrs.push(one.clone());
        assert!(matches!(addrs.0, Repr::One(_)));
        addrs.push(one.clone());
        assert_eq!(addrs, vec![one.clone(), one.clone()]);
        addrs.retain(|_| false);
        assert!(addrs.is_empty());
        // `Debug` (and serde, tested on the store's JSON) show a plain list, as for a Vec.
        let single = HeldAddrs::from(vec![one.clone()]);
        assert_eq!(format!("{single:?}"), format!("{:?}", vec![one]));
    }
}
