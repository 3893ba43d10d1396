//! A block: a fixed power-of-two slice of a pool whose addresses are handed out one by one.
//!
//! Every address of a block is in exactly one state: free, held (by a handle), quarantined
//! (released less than the pool's reuse delay ago) or reserved (network, broadcast, gateway,
//! excluded). A `busy` bitmap (held | quarantined | reserved) makes finding a free address a
//! scan of 64-bit words from a next-fit cursor, so a just-freed address is the last one the
//! cursor comes back to. The owner array and the busy, reserved and quarantined bitmaps
//! sit inside the block for blocks of up to 64 addresses (see [`Cells`]). Quarantine is a
//! queue in release order; with one reuse delay per pool and a clock that only moves
//! forward, release order is expiry order, so expired entries leave from the front in
//! amortised O(1).
//!
//! A block never reads a clock and never sees its pool: the pool passes the time and says
//! which addresses are reserved.

use std::collections::VecDeque;

use crate::prefix::Prefix;

/// Milliseconds since the Unix epoch. Time is always an argument; the core has no clock.
pub type Millis = u64;

/// An interned handle number; `0` means "nobody".
pub type HandleId = u32;

/// The state of one address in a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrState {
    /// Can be handed out.
    Free,
    /// Held by a handle.
    Held(HandleId),
    /// Released; not handed out again before the time given unless nothing else is free.
    Quarantined(Millis),
    /// Never handed out (network, broadcast, gateway, excluded).
    Reserved,
}

/// Counts of a block's addresses per state, and what allocation needs to know about it
/// without loading it. `free + held + quarantined + reserved == size`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockSummary {
    /// Free addresses (not quarantined).
    pub free: u32,
    /// Held addresses.
    pub held: u32,
    /// Quarantined addresses.
    pub quarantined: u32,
    /// Reserved addresses.
    pub reserved: u32,
    /// When the last quarantine entry expires (0 when none).
    pub quarantine_until: Millis,
    /// Since when the block has held nothing, if it holds nothing.
    pub empty_since: Option<Millis>,
}

impl BlockSummary {
    /// Whether a fresh (non-quarantined) address is known to be free at `now`.
    pub fn has_fresh(&self, now: Millis) -> bool {
        self.free > 0 || (self.quarantined > 0 && self.quarantine_until <= now)
    }

    /// Whether anything at all could be handed out (quarantine included).
    pub fn has_any(&self) -> bool {
        self.free > 0 || self.quarantined > 0
    }
}

/// Addresses per block kept inline in the block (the /26 and /122 defaults).
const INLINE: usize = 64;

/// A block's owner array and its three bitmaps (`busy`, `reserved` and `quar`
/// (quarantined), each `size / 64` words, at least one).
///
/// Up to [`INLINE`] addresses they sit inside the block itself, beside its counters: the
/// pool keeps its blocks in a hash map by value, so finding a block's entry also finds the
/// owner of each of its addresses, with no pointer to follow to another allocation. At a
/// million held addresses the blocks an operation touches are rarely in cache, and a
/// pointer chase is one more memory latency paid in series (docs/BENCHMARKS.md).
#[derive(Clone, Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "inline is the point: boxing the large variant brings back the pointer chase"
)]
enum Cells {
    Inline {
        owners: [HandleId; INLINE],
        bits: [u64; 3],
    },
    Heap {
        owners: Box<[HandleId]>,
        bits: Box<[u64]>,
    },
}

/// One block's addresses.
#[derive(Clone, Debug)]
pub struct Block {
    prefix: Prefix,
    node: String,
    /// Number of addresses.
    size: u32,
    cells: Cells,
    quarantine: VecDeque<(u32, Millis)>,
    cursor: u32,
    held: u32,
    reserved_count: u32,
    empty_since: Option<Millis>,
    /// Listed in the pool's dirty set already (see `Pool::take_dirty`).
    pub(crate) dirty: bool,
    /// The pool's slot for `node` (set when the pool installs the body), so keeping the
    /// node's summaries current needs no lookup by name.
    pub(crate) node_slot: u32,
    /// What the pool's node index holds for this body (`None`: not indexed yet).
    pub(crate) indexed: Option<crate::pool::IndexKey>,
}

/// Which of a block's bitmaps.
#[derive(Clone, Copy)]
enum Plane {
    Busy = 0,
    Reserved = 1,
    Quar = 2,
}

use Plane::{Busy, Quar, Reserved};

impl Block {
    /// Largest block, in host bits: 2^16 addresses.
    pub const MAX_HOST_BITS: u8 = 16;

    fn words(&self) -> usize {
        self.size.div_ceil(64) as usize
    }

    fn owners(&self) -> &[HandleId] {
        match &self.cells {
            Cells::Inline { owners, .. } => &owners[..self.size as usize],
            Cells::Heap { owners, .. } => owners,
        }
    }

    fn owners_mut(&mut self) -> &mut [HandleId] {
        match &mut self.cells {
            Cells::Inline { owners, .. } => &mut owners[..self.size as usize],
            Cells::Heap { owners, .. } => owners,
        }
    }

    fn bits(&self) -> &[u64] {
        match &self.cells {
            Cells::Inline { bits, .. } => bits,
            Cells::Heap { bits, .. } => bits,
        }
    }

    fn bits_mut(&mut self) -> &mut [u64] {
        match &mut self.cells {
            Cells::Inline { bits, .. } => bits,
            Cells::Heap { bits, .. } => bits,
        }
    }

    fn bit(&self, plane: Plane, i: u32) -> bool {
        self.bits()[plane as usize * self.words() + (i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, plane: Plane, i: u32, on: bool) {
        let at = plane as usize * self.words() + (i / 64) as usize;
        let w = &mut self.bits_mut()[at];
        if on {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }

    /// A block of `prefix` affine to `node`, empty since `now`; `reserved(offset)` says which
    /// addresses are never handed out. `prefix` must have at most [`Self::MAX_HOST_BITS`]
    /// host bits (the pool validates this).
    pub fn new(prefix: Prefix, node: &str, now: Millis, reserved: impl Fn(u32) -> bool) -> Block {
        let size = 1u32 << prefix.host_bits().min(Self::MAX_HOST_BITS);
        let words = size.div_ceil(64) as usize;
        let cells = if size as usize <= INLINE {
            Cells::Inline {
                owners: [0; INLINE],
                bits: [0; 3],
            }
        } else {
            Cells::Heap {
                owners: vec![0; size as usize].into_boxed_slice(),
                bits: vec![0; 3 * words].into_boxed_slice(),
            }
        };
        let mut b = Block {
            prefix,
            node: node.to_string(),
            size,
            cells,
            quarantine: VecDeque::new(),
            cursor: 0,
            held: 0,
            reserved_count: 0,
            empty_since: Some(now),
            dirty: false,
            node_slot: u32::MAX,
            indexed: None,
        };
        // Bits past the end of a block smaller than a word stay busy forever.
        if size < 64 {
            b.bits_mut()[0] = !0u64 << size;
        }
        b.set_reserved(reserved);
        b
    }

    /// Recomputes which free addresses are reserved (after the pool's exclusions change).
    /// Held and quarantined addresses keep their state; a reserved address they hold
    /// becomes reserved when released.
    pub fn set_reserved(&mut self, reserved: impl Fn(u32) -> bool) {
        for i in 0..self.size() {
            let r = reserved(i);
            self.set(Reserved, i, r);
            if matches!(self.state(i), AddrState::Free | AddrState::Reserved) {
                self.set(Busy, i, r);
            }
        }
        self.recount_reserved();
    }

    fn recount_reserved(&mut self) {
        self.reserved_count = (0..self.size())
            .filter(|&i| matches!(self.state(i), AddrState::Reserved))
            .count() as u32;
    }

    /// The block's prefix.
    pub fn prefix(&self) -> Prefix {
        self.prefix
    }

    /// The node the block is affine to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Number of addresses.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The next-fit cursor (persisted so restarts keep the reuse order).
    pub fn cursor(&self) -> u32 {
        self.cursor
    }

    /// Sets the cursor (when loading).
    pub fn set_cursor(&mut self, cursor: u32) {
        self.cursor = cursor % self.size();
    }

    /// Since when the block has been empty.
    pub fn empty_since(&self) -> Option<Millis> {
        self.empty_since
    }

    /// Restores the empty-since time (when loading).
    pub fn set_empty_since(&mut self, t: Option<Millis>) {
        self.empty_since = if self.held == 0 { t } else { None };
    }

    /// The state of the address at `offset` (which must be `< size`).
    pub fn state(&self, offset: u32) -> AddrState {
        let owner = self.owners()[offset as usize];
        if owner != 0 {
            AddrState::Held(owner)
        } else if self.bit(Quar, offset) {
            let until = self
                .quarantine
                .iter()
                .find(|(o, _)| *o == offset)
                .map_or(0, |&(_, t)| t);
            AddrState::Quarantined(until)
        } else if self.bit(Reserved, offset) {
            AddrState::Reserved
        } else {
            AddrState::Free
        }
    }

    fn in_queue(&self, offset: u32) -> bool {
        self.quarantine.iter().any(|(o, _)| *o == offset)
    }

    /// Held addresses: `(offset, handle)` in offset order.
    pub fn held(&self) -> impl Iterator<Item = (u32, HandleId)> + '_ {
        self.owners()
            .iter()
            .enumerate()
            .filter(|(_, h)| **h != 0)
            .map(|(i, h)| (i as u32, *h))
    }

    /// Quarantined addresses, oldest first: `(offset, until)`.
    pub fn quarantined(&self) -> impl Iterator<Item = (u32, Millis)> + '_ {
        self.quarantine.iter().copied()
    }

    /// The counts (see [`BlockSummary`]).
    pub fn summary(&self) -> BlockSummary {
        let quarantined = self.quarantine.len() as u32;
        BlockSummary {
            free: self.size() - self.held - quarantined - self.reserved_count,
            held: self.held,
            quarantined,
            reserved: self.reserved_count,
            quarantine_until: self.quarantine.back().map_or(0, |&(_, t)| t),
            empty_since: self.empty_since,
        }
    }

    /// Moves expired quarantine entries back to free (or reserved).
    pub fn expire(&mut self, now: Millis) {
        while let Some(&(offset, until)) = self.quarantine.front() {
            if until > now {
                break;
            }
            self.quarantine.pop_front();
            self.set(Quar, offset, false);
            let reserved = self.bit(Reserved, offset);
            self.set(Busy, offset, reserved);
            self.reserved_count += u32::from(reserved);
        }
    }

    fn hold(&mut self, offset: u32, handle: HandleId) {
        self.owners_mut()[offset as usize] = handle;
        self.set(Busy, offset, true);
        self.held += 1;
        self.empty_since = None;
    }

    /// Hands out the next free address after the cursor to `handle`. Expired quarantine
    /// counts as free. Returns the offset, or `None` when only quarantined (or nothing) is left.
    pub fn take_next(&mut self, handle: HandleId, now: Millis) -> Option<u32> {
        self.expire(now);
        let offset = self.next_free()?;
        self.hold(offset, handle);
        self.cursor = (offset + 1) % self.size();
        Some(offset)
    }

    fn next_free(&self) -> Option<u32> {
        let words = self.words();
        let busy = &self.bits()[..words];
        let start = self.cursor as usize;
        let (w0, b0) = (start / 64, start % 64);
        // First the rest of the cursor's word, then the following words, then wrap around.
        let first = !busy[w0] & (!0u64 << b0);
        if first != 0 {
            return Some((w0 * 64) as u32 + first.trailing_zeros());
        }
        for k in 1..=words {
            let w = (w0 + k) % words;
            let free = !busy[w];
            if free != 0 {
                return Some((w * 64) as u32 + free.trailing_zeros());
            }
        }
        None
    }

    /// Hands out the oldest quarantined address to `handle` (used only when nothing else
    /// in the pool is free).
    pub fn take_quarantined(&mut self, handle: HandleId) -> Option<u32> {
        let (offset, _) = self.quarantine.pop_front()?;
        self.set(Quar, offset, false);
        self.hold(offset, handle);
        Some(offset)
    }

    /// Hands out exactly `offset` to `handle` (a static request). A quarantined address may
    /// be taken: quarantine protects against dynamic reuse, not against an explicit ask.
    /// Returns the state that prevented it otherwise.
    pub fn take_exact(
        &mut self,
        offset: u32,
        handle: HandleId,
        now: Millis,
    ) -> Result<(), AddrState> {
        self.expire(now);
        match self.state(offset) {
            AddrState::Free => {}
            AddrState::Quarantined(_) => {
                self.quarantine.retain(|(o, _)| *o != offset);
                self.set(Quar, offset, false);
            }
            other => return Err(other),
        }
        self.hold(offset, handle);
        Ok(())
    }

    /// Releases `offset`. The address is quarantined until `until` when `until > now`,
    /// else it is free at once (or reserved, if the pool has since excluded it). Returns
    /// the handle that held it, or `None` if it was not held.
    pub fn release(&mut self, offset: u32, now: Millis, until: Millis) -> Option<HandleId> {
        let owner = self.owners()[offset as usize];
        if owner == 0 {
            return None;
        }
        self.owners_mut()[offset as usize] = 0;
        self.held -= 1;
        if until > now {
            self.quarantine.push_back((offset, until));
            self.set(Quar, offset, true);
        } else {
            let reserved = self.bit(Reserved, offset);
            self.set(Busy, offset, reserved);
            self.reserved_count += u32::from(reserved);
        }
        if self.held == 0 {
            self.empty_since = Some(now);
        }
        Some(owner)
    }

    /// Undoes a take within the same operation: the address goes back to the state it had
    /// (free, or quarantined until `was_quarantined`) and the cursor to `cursor`.
    pub fn untake(
        &mut self,
        offset: u32,
        cursor: u32,
        was_quarantined: Option<Millis>,
        empty_since: Option<Millis>,
    ) {
        if self.owners()[offset as usize] == 0 {
            return;
        }
        self.owners_mut()[offset as usize] = 0;
        self.held -= 1;
        match was_quarantined {
            Some(until) => {
                // Back where it was in expiry order: the front for the oldest entry taken
                // as a last resort; in the middle for one taken by a static request (the
                // queue must stay sorted by expiry for `expire` and the summary).
                let at = self.quarantine.partition_point(|&(_, t)| t < until);
                self.quarantine.insert(at, (offset, until));
                self.set(Quar, offset, true);
            }
            None => self.set(Busy, offset, false),
        }
        self.cursor = cursor;
        if self.held == 0 {
            self.empty_since = empty_since;
        }
    }

    /// Restores a held address when loading from the store.
    pub fn load_held(&mut self, offset: u32, handle: HandleId) -> Result<(), AddrState> {
        if offset >= self.size() {
            return Err(AddrState::Reserved);
        }
        match self.state(offset) {
            AddrState::Free => {}
            AddrState::Reserved => self.reserved_count -= 1,
            other => return Err(other),
        }
        self.hold(offset, handle);
        Ok(())
    }

    /// Restores a quarantined address when loading from the store (oldest first).
    pub fn load_quarantined(&mut self, offset: u32, until: Millis) -> Result<(), AddrState> {
        if offset >= self.size() {
            return Err(AddrState::Reserved);
        }
        match self.state(offset) {
            AddrState::Free => {}
            AddrState::Reserved => self.reserved_count -= 1,
            other => return Err(other),
        }
        self.set(Busy, offset, true);
        self.set(Quar, offset, true);
        self.quarantine.push_back((offset, until));
        Ok(())
    }

    /// Checks that the counts and bitmaps agree (for tests and integrity checks).
    pub fn check(&self) -> Result<(), String> {
        let (mut free, mut held, mut quarantined, mut reserved) = (0u32, 0u32, 0u32, 0u32);
        for i in 0..self.size() {
            let busy = self.bit(Busy, i);
            match self.state(i) {
                AddrState::Free => {
                    free += 1;
                    if busy {
                        return Err(format!("{}: offset {i} free but busy", self.prefix));
                    }
                }
                AddrState::Held(_) => held += 1,
                AddrState::Quarantined(_) => quarantined += 1,
                AddrState::Reserved => reserved += 1,
            }
            if !matches!(self.state(i), AddrState::Free) && !busy {
                return Err(format!("{}: offset {i} in use but not busy", self.prefix));
            }
            if matches!(self.state(i), AddrState::Quarantined(_)) != self.in_queue(i) {
                return Err(format!(
                    "{}: offset {i} quarantine index disagrees",
                    self.prefix
                ));
            }
        }
        let s = self.summary();
        if (s.free, s.held, s.quarantined, s.reserved) != (free, held, quarantined, reserved) {
            return Err(format!(
                "{}: counts {:?} disagree with states free={free} held={held} quarantined={quarantined} reserved={reserved}",
                self.prefix, s
            ));
        }
        if free + held + quarantined + reserved != self.size() {
            return Err(format!("{}: states do not add up to the size", self.prefix));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefix::Prefix;

    fn block(cidr: &str, reserved: &[u32]) -> Block {
        let p = Prefix::from_net(cidr.parse().expect("test CIDR"));
        let reserved = reserved.to_vec();
        Block::new(p, "node-a", 0, move |o| reserved.contains(&o))
    }

    #[test]
    fn next_fit_does_not_reuse_at_once() {
        let mut b = block("10.0.0.0/29", &[0, 7]);
        let a = b.take_next(1, 0).expect("free");
        assert_eq!(a, 1);
        b.release(a, 0, 0);
        assert_eq!(
            b.take_next(2, 0),
            Some(2),
            "the cursor moved past the freed address"
        );
        b.check().expect("consistent");
    }

    #[test]
    fn quarantine_holds_until_expiry_then_frees() {
        let mut b = block("10.0.0.0/30", &[]);
        for h in 1..=4 {
            b.take_next(h, 0).expect("free");
        }
        assert_eq!(b.release(2, 10, 110), Some(3));
        assert_eq!(b.take_next(9, 50), None, "quarantined only");
        assert_eq!(b.summary().quarantined, 1);
        assert!(!b.summary().has_fresh(50));
        assert!(b.summary().has_fresh(110));
        assert_eq!(b.take_next(9, 110), Some(2));
        b.check().expect("consistent");
    }

    #[test]
    fn quarantined_address_is_last_resort_and_static_may_take_it() {
        let mut b = block("10.0.0.0/30", &[]);
        for h in 1..=4 {
            b.take_next(h, 0).expect("free");
        }
        b.release(0, 0, 1000);
        b.release(1, 0, 1000);
        assert_eq!(b.take_quarantined(7), Some(0));
        assert_eq!(b.take_exact(1, 8, 5), Ok(()));
        assert_eq!(b.take_exact(1, 9, 5), Err(AddrState::Held(8)));
        b.check().expect("consistent");
    }

    #[test]
    fn untake_restores_exactly() {
        let mut b = block("10.0.0.0/28", &[0]);
        let before = b.clone();
        let cursor = b.cursor();
        let o = b.take_next(4, 0).expect("free");
        b.untake(o, cursor, None, before.empty_since());
        assert_eq!(b.summary(), before.summary());
        assert_eq!(b.cursor(), before.cursor());
        b.check().expect("consistent");
    }

    /// Blocks of up to 64 addresses keep their cells inline, larger ones on the heap:
    /// both behave alike, across words and through the cursor's wrap-around.
    #[test]
    fn inline_and_heap_cells_agree() {
        for (cidr, size) in [
            ("10.0.0.0/29", 8),
            ("10.0.0.0/26", 64),
            ("10.0.0.0/24", 256),
        ] {
            let mut b = block(cidr, &[0]);
            assert_eq!(b.size(), size);
            let mut held = Vec::new();
            for h in 1..size {
                let o = b.take_next(h, 0).expect("free");
                assert_eq!(b.state(o), AddrState::Held(h));
                held.push(o);
            }
            assert_eq!(b.take_next(999, 0), None, "{cidr}: full");
            // Free every third address, quarantine every fifth of the rest.
            for (i, &o) in held.iter().enumerate() {
                let until = if i % 5 == 0 { 100 } else { 0 };
                if i % 3 == 0 {
                    assert_eq!(b.release(o, 0, until), Some(i as u32 + 1));
                }
            }
            b.check().expect("consistent");
            let s = b.summary();
            assert_eq!(s.free + s.held + s.quarantined + s.reserved, size, "{cidr}");
            // What is free is handed out again before anything quarantined, in offset order
            // from the cursor, which wraps.
            while let Some(o) = b.take_next(1000, 0) {
                assert!(matches!(b.state(o), AddrState::Held(1000)));
            }
            assert_eq!(b.summary().free, 0, "{cidr}");
            assert_eq!(b.summary().quarantined, s.quarantined, "{cidr}");
            assert!(b.take_next(1001, 100).is_some(), "{cidr}: quarantine over");
            b.check().expect("consistent");
        }
    }

    #[test]
    fn reserved_set_changes_keep_holders() {
        let mut b = block("10.0.0.0/30", &[]);
        let o = b.take_next(1, 0).expect("free");
        b.set_reserved(|_| true);
        assert_eq!(b.state(o), AddrState::Held(1));
        assert_eq!(b.summary().reserved, 3);
        b.release(o, 1, 0);
        assert_eq!(b.state(o), AddrState::Reserved);
        b.check().expect("consistent");
    }
}
