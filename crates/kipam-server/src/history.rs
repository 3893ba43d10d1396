//! The per-address history index: which events concern an address.
//!
//! Every event is stored once, in order, under `events/{seq}` — appending there costs
//! the group commit almost nothing, since consecutive events share B-tree pages. Finding
//! an address's events needs an index by address, and an index row per event (what
//! `history/{addr}/{seq}` was) costs a B-tree page of its own per allocation: the events
//! of one batch concern addresses all over the pool. That page was about a third of what
//! a group commit wrote.
//!
//! So the index groups addresses into *buckets* of 64 (an IPv4 /26, an IPv6 /122; fixed,
//! independent of any pool, so history outlives pools) and writes a bucket's entries —
//! (offset in the bucket, event seq) — as one *chunk* record, `hist/{bucket}/{last seq}`,
//! once [`CHUNK_ENTRIES`] have gathered: one page write per 16 events instead of one per
//! event. Until then the entries wait in [`Pending`], in memory.
//!
//! Durability does not depend on the index: the events themselves are committed with
//! their batch. `meta/history-indexed` holds a watermark below which every event's entry
//! is in a chunk; at start the entries of the events after it are rebuilt from
//! `events/` ([`Pending::add`] per event). Entries may then be written twice (a bucket
//! flushed before a crash that did not advance the watermark), so readers de-duplicate by
//! seq. [`Pending::take_due`] keeps the watermark close behind the newest event
//! ([`MAX_LAG`]), which bounds that rebuild.
//!
//! Records written by earlier versions, one `history/{addr}/{seq}` per event with the
//! event's JSON, are still read and expired.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Entries per chunk record.
pub const CHUNK_ENTRIES: usize = 16;

/// How far (in events) the watermark may fall behind the newest event before the
/// oldest buckets are written out early; bounds the events re-read at start.
pub const MAX_LAG: u64 = 65_536;

/// Buckets written early per batch at most (so that no batch pays for many at once).
const EARLY_PER_BATCH: usize = 64;

/// The watermark's key.
pub const WATERMARK_KEY: &str = "meta/history-indexed";

/// Chunk record format.
const FORMAT: u8 = 1;

/// The bucket of `addr` (its first address) and the address's offset in it.
pub fn bucket_of(addr: IpAddr) -> (IpAddr, u8) {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            (
                IpAddr::V4(Ipv4Addr::from(bits & !0x3f)),
                (bits & 0x3f) as u8,
            )
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            (
                IpAddr::V6(Ipv6Addr::from(bits & !0x3f)),
                (bits & 0x3f) as u8,
            )
        }
    }
}

/// The prefix of every chunk record of a bucket.
pub fn chunk_prefix(bucket: IpAddr) -> String {
    format!("hist/{bucket}/")
}

/// The key of a bucket's chunk whose last entry is `last_seq`: keys sort by it, so
/// expiry deletes a bucket's chunks oldest first.
pub fn chunk_key(bucket: IpAddr, last_seq: u64) -> String {
    format!("hist/{bucket}/{last_seq:020}")
}

/// The last seq of a chunk, from its key.
pub fn chunk_last_seq(key: &str) -> Option<u64> {
    key.rsplit('/').next().and_then(|s| s.parse().ok())
}

/// Encodes entries (in seq order): format byte 1, LEB128 count, then per entry the
/// offset byte and the LEB128 difference to the previous entry's seq (the first: to 0).
pub fn encode_chunk(entries: &[(u8, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + entries.len() * 4);
    out.push(FORMAT);
    put_varint(&mut out, entries.len() as u64);
    let mut prev = 0;
    for &(offset, seq) in entries {
        out.push(offset);
        put_varint(&mut out, seq.wrapping_sub(prev));
        prev = seq;
    }
    out
}

/// Decodes a chunk; an error says what is wrong (the caller names the key).
pub fn decode_chunk(mut buf: &[u8]) -> Result<Vec<(u8, u64)>, String> {
    let Some((&format, rest)) = buf.split_first() else {
        return Err("empty chunk".into());
    };
    if format != FORMAT {
        return Err(format!("unknown chunk format {format}"));
    }
    buf = rest;
    let count = get_varint(&mut buf)?;
    // Every entry takes at least two bytes: refuse counts the record cannot hold.
    if count > buf.len() as u64 / 2 {
        return Err(format!("count {count} exceeds the record"));
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut seq = 0u64;
    for _ in 0..count {
        let Some((&offset, rest)) = buf.split_first() else {
            return Err("truncated entry".into());
        };
        buf = rest;
        if offset > 0x3f {
            return Err(format!("offset {offset} outside a bucket of 64"));
        }
        seq = seq
            .checked_add(get_varint(&mut buf)?)
            .ok_or("seq overflows")?;
        out.push((offset, seq));
    }
    if !buf.is_empty() {
        return Err(format!("{} bytes after the last entry", buf.len()));
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&b, rest)) = buf.split_first() else {
            return Err("truncated varint".into());
        };
        *buf = rest;
        v |= u64::from(b & 0x7f)
            .checked_shl(shift)
            .filter(|x| x >> shift == u64::from(b & 0x7f))
            .ok_or("varint overflows")?;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

/// Index entries not yet written as chunks, per bucket.
#[derive(Debug, Default)]
pub struct Pending {
    buckets: HashMap<IpAddr, Vec<(u8, u64)>>,
    /// (oldest pending seq, bucket) of every bucket with entries.
    oldest: BTreeSet<(u64, IpAddr)>,
    /// Buckets that reached [`CHUNK_ENTRIES`].
    full: Vec<IpAddr>,
}

impl Pending {
    /// Records that event `seq` concerns `addr`. Seqs must come in increasing order.
    pub fn add(&mut self, addr: IpAddr, seq: u64) {
        let (bucket, offset) = bucket_of(addr);
        let entries = self.buckets.entry(bucket).or_default();
        if entries.is_empty() {
            self.oldest.insert((seq, bucket));
        }
        entries.push((offset, seq));
        if entries.len() == CHUNK_ENTRIES {
            self.full.push(bucket);
        }
    }

    /// The seqs of the pending entries for `addr`.
    pub fn seqs_of(&self, addr: IpAddr) -> Vec<u64> {
        let (bucket, offset) = bucket_of(addr);
        self.buckets.get(&bucket).map_or_else(Vec::new, |e| {
            e.iter()
                .filter(|(o, _)| *o == offset)
                .map(|(_, s)| *s)
                .collect()
        })
    }

    /// Takes the buckets to write now, as (chunk key, record): every full bucket, and
    /// the oldest ones (a few per call) while the oldest entry is more than [`MAX_LAG`]
    /// events behind `newest`.
    pub fn take_due(&mut self, newest: u64) -> Vec<(String, Vec<u8>)> {
        let mut due: Vec<IpAddr> = std::mem::take(&mut self.full);
        due.extend(
            self.oldest
                .iter()
                .take(EARLY_PER_BATCH)
                .take_while(|(seq, _)| newest.saturating_sub(*seq) > MAX_LAG)
                .map(|(_, bucket)| *bucket),
        );
        let mut out = Vec::with_capacity(due.len());
        for bucket in due {
            let Some(entries) = self.buckets.remove(&bucket) else {
                continue; // listed twice: full and old
            };
            if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
                self.oldest.remove(&(first.1, bucket));
                out.push((chunk_key(bucket, last.1), encode_chunk(&entries)));
            }
        }
        out
    }

    /// The highest seq whose entry, and every earlier one, is written: just below the
    /// oldest pending entry, or `newest` when nothing is pending.
    pub fn watermark(&self, newest: u64) -> u64 {
        self.oldest
            .first()
            .map_or(newest, |(seq, _)| seq.saturating_sub(1))
    }
}

#[cfg(test)]
impl Pending {
    fn len(&self) -> usize {
        self.buckets.values().map(Vec::len).sum()
    }

    fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn buckets_are_64_addresses() {
        assert_eq!(bucket_of(ip("10.0.0.5")), (ip("10.0.0.0"), 5));
        assert_eq!(bucket_of(ip("10.0.0.200")), (ip("10.0.0.192"), 8));
        assert_eq!(bucket_of(ip("fd00::7f")), (ip("fd00::40"), 0x3f));
    }

    #[test]
    fn a_full_bucket_becomes_one_chunk_and_the_watermark_follows() {
        let mut p = Pending::default();
        for seq in 1..=20 {
            p.add(ip(&format!("10.0.0.{seq}")), seq);
        }
        p.add(ip("10.0.1.1"), 21);
        assert_eq!(p.watermark(21), 0);
        let due = p.take_due(21);
        assert_eq!(due.len(), 1, "one bucket reached 16 entries");
        // Written with everything it gathered by then, keyed by its last seq.
        assert_eq!(due[0].0, "hist/10.0.0.0/00000000000000000020");
        let entries = decode_chunk(&due[0].1).unwrap_or_default();
        assert_eq!(entries.len(), 20);
        assert_eq!(entries[0], (1, 1));
        assert!(p.seqs_of(ip("10.0.0.18")).is_empty());
        assert_eq!(p.seqs_of(ip("10.0.1.1")), vec![21]);
        assert_eq!(p.watermark(21), 20);
        assert_eq!(p.len(), 1);
        assert!(p.take_due(21).is_empty(), "nothing else is due");
    }

    #[test]
    fn old_buckets_are_written_early() {
        let mut p = Pending::default();
        p.add(ip("10.0.0.1"), 1);
        p.add(ip("10.9.0.1"), 2);
        assert!(p.take_due(1000).is_empty());
        let due = p.take_due(MAX_LAG + 2);
        assert_eq!(due.len(), 1, "only the bucket more than MAX_LAG behind");
        assert_eq!(p.watermark(MAX_LAG + 2), 1);
        assert!(p.take_due(MAX_LAG + 3).len() == 1 && p.is_empty());
        assert_eq!(p.watermark(MAX_LAG + 3), MAX_LAG + 3);
    }

    #[test]
    fn bad_chunks_are_errors() {
        assert!(decode_chunk(&[]).is_err());
        assert!(decode_chunk(&[2, 0]).is_err());
        assert!(
            decode_chunk(&[1, 5, 1, 1]).is_err(),
            "count beyond the record"
        );
        assert!(decode_chunk(&[1, 1, 64, 1]).is_err(), "offset beyond 63");
        assert!(decode_chunk(&[1, 1, 1, 0xff]).is_err(), "truncated varint");
        assert!(decode_chunk(&[1, 0, 9]).is_err(), "trailing bytes");
        assert_eq!(decode_chunk(&[1, 0]), Ok(vec![]));
    }

    proptest! {
        #[test]
        fn chunks_round_trip(mut seqs in proptest::collection::vec(any::<u64>(), 0..40),
                             offsets in proptest::collection::vec(0u8..64, 40)) {
            seqs.sort_unstable();
            let entries: Vec<(u8, u64)> =
                seqs.iter().zip(&offsets).map(|(s, o)| (*o, *s)).collect();
            prop_assert_eq!(decode_chunk(&encode_chunk(&entries)), Ok(entries));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_chunk(&bytes);
        }
    }
}
