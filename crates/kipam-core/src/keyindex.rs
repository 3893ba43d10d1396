//! The index from handle keys to their ids: an open-addressing hash table of 8-byte
//! entries, each the low 32 bits of the key's hash beside the id.
//!
//! Why not a general hash table: at a million handles the index is far larger than the
//! caches, and a lookup's cost is the cache lines it reads. A SwissTable keeps its control
//! bytes and its entries in two places (two lines per lookup, before the handle's slot and
//! its key); here the entry that says "this id, probably" is the line the probe starts on.
//! The stored hash bits filter candidates before any key is read (a false candidate costs
//! one key comparison in about 2,000 at a million handles) and let the table grow, and
//! remove entries, without reading a single key.
//!
//! Linear probing with backward-shift deletion (no tombstones), at most 3/4 full. An entry
//! of 0 is empty: ids start at 1.

use crate::block::HandleId;

/// Keys to ids; the caller owns the keys and compares them (see [`KeyIndex::find`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyIndex {
    /// `hash as u32` in the high half, the id in the low half; 0 when empty. The length
    /// is zero or a power of two.
    entries: Vec<u64>,
    len: usize,
}

fn entry(hash: u64, id: HandleId) -> u64 {
    (u64::from(hash as u32) << 32) | u64::from(id)
}

fn id_of(e: u64) -> HandleId {
    e as u32
}

fn hash_of(e: u64) -> u64 {
    e >> 32
}

impl KeyIndex {
    fn mask(&self) -> usize {
        self.entries.len().wrapping_sub(1)
    }

    /// The id whose key `is_key` accepts, among those stored under `hash`.
    pub(crate) fn find(
        &self,
        hash: u64,
        mut is_key: impl FnMut(HandleId) -> bool,
    ) -> Option<HandleId> {
        if self.entries.is_empty() {
            return None;
        }
        let mask = self.mask();
        let want = u64::from(hash as u32);
        let mut i = hash as usize & mask;
        loop {
            let e = self.entries[i];
            if e == 0 {
                return None;
            }
            if hash_of(e) == want && is_key(id_of(e)) {
                return Some(id_of(e));
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `id` under `hash` (its key must not be in the index).
    pub(crate) fn insert(&mut self, hash: u64, id: HandleId) {
        if (self.len + 1) * 4 > self.entries.len() * 3 {
            self.grow();
        }
        self.place(entry(hash, id));
        self.len += 1;
    }

    fn place(&mut self, e: u64) {
        let mask = self.mask();
        let mut i = hash_of(e) as usize & mask;
        while self.entries[i] != 0 {
            i = (i + 1) & mask;
        }
        self.entries[i] = e;
    }

    fn grow(&mut self) {
        let size = (self.entries.len() * 2).max(16);
        let old = std::mem::replace(&mut self.entries, vec![0; size]);
        for e in old.into_iter().filter(|&e| e != 0) {
            self.place(e);
        }
    }

    /// Removes `id`, stored under `hash`; false when it is not there.
    pub(crate) fn remove(&mut self, hash: u64, id: HandleId) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            let e = self.entries[i];
            if e == 0 {
                return false;
            }
            if id_of(e) == id {
                break;
            }
            i = (i + 1) & mask;
        }
        // Backward shift: move later entries of the run into the hole when their home is
        // not between the hole and where they sit.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let e = self.entries[j];
            if e == 0 {
                break;
            }
            let home = hash_of(e) as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.entries[hole] = e;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.entries[hole] = 0;
        self.len -= 1;
        true
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Against a map, through growth, runs that wrap around the end of the table, and
    /// keys whose 32 stored bits collide (told apart only by the caller's comparison).
    #[test]
    fn agrees_with_a_map_through_inserts_and_removes() {
        let mut index = KeyIndex::default();
        let mut model: HashMap<HandleId, u64> = HashMap::new();
        let mut x: u64 = 0x1234_5678_9ABC_DEF1;
        let mut next: HandleId = 1;
        for step in 0..60_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let remove = !model.is_empty() && x % 5 < 2;
            if remove {
                let id = *model
                    .keys()
                    .nth((x >> 8) as usize % model.len())
                    .expect("some");
                let hash = model.remove(&id).expect("known");
                assert!(index.remove(hash, id), "step {step}: remove {id}");
                assert!(!index.remove(hash, id), "step {step}: removed twice");
            } else {
                // Some keys share all 32 stored bits (and so a home and a run); the
                // rest are random.
                let hash = if x.is_multiple_of(300) {
                    0xABCD_0000_0FFF
                } else {
                    x >> 3
                };
                let id = next;
                next += 1;
                index.insert(hash, id);
                model.insert(id, hash);
            }
            if step % 997 == 0 || step > 59_900 {
                assert_eq!(index.len(), model.len());
                for (&id, &hash) in &model {
                    assert_eq!(index.find(hash, |c| c == id), Some(id), "step {step}: {id}");
                }
            }
        }
    }

    #[test]
    fn empty_index_finds_nothing() {
        let mut index = KeyIndex::default();
        assert_eq!(index.find(1, |_| true), None);
        assert!(!index.remove(1, 1));
    }
}
