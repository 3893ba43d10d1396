//! Encodings of the IPAM records.
//!
//! Records that are small and rarely written (pool configs, handles, scope networks)
//! are JSON: readable with `sqlite3` or `etcdctl`, easy to evolve. The records written on
//! every allocation — a block body and a node's block summaries — and a pool's claims
//! index, rewritten whole when the claims change and ~200 KB of JSON for a pool of 15,000
//! blocks, use a compact little-endian binary form. Each binary record starts with a
//! format byte ([`BLOCK_FORMAT`], [`NODE_FORMAT`], [`CLAIMS_FORMAT`]) so a later version
//! can read old data; docs/storage.md describes the layouts.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kipam_core::{BlockSummary, Lease, Millis};

/// Format byte of a block body record.
pub const BLOCK_FORMAT: u8 = 1;
/// Format byte of a node summaries record written now (2: varint deltas; 1, fixed-width
/// fields, is still read).
pub const NODE_FORMAT: u8 = 2;

/// Format byte of a claims index record written now (3: binary, with the event seq it is
/// complete up to). Format 2 (the same without the seq) and the JSON form before it
/// (which starts with `{`) are still read.
pub const CLAIMS_FORMAT: u8 = 3;

/// Format byte of the binary claims index without a seq (written before format 3).
const CLAIMS_FORMAT_NO_SEQ: u8 = 2;

/// A pool's claims index: the blocks claimed, per node, and the prefix leases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimsRecord {
    /// Every block claimed by an event up to this seq is in the record (kipamd writes a
    /// claim with the next fold; a load claims later ones from its log's tail, see
    /// `crate::log`). `None` in records of the older formats, written with every change.
    pub seq: Option<u64>,
    /// Block bases (first address as a 128-bit number) per node, in any order.
    pub blocks: BTreeMap<String, Vec<u128>>,
    /// Prefix leases.
    pub leases: Vec<Lease>,
}

/// The JSON form of the claims index (written before [`CLAIMS_FORMAT`]).
#[derive(serde::Deserialize)]
struct ClaimsJson {
    #[serde(default)]
    blocks: BTreeMap<String, Vec<IpAddr>>,
    #[serde(default)]
    leases: Vec<Lease>,
}

/// Encodes a claims index: format byte 3, the seq as a varint (0 for `None`), a varint
/// node count, then per node its name (string) and block count (varint) and its block
/// bases in ascending order as varint deltas (the first from 0); then the leases as one
/// JSON string (they are few, and carry free-form attributes). A /26 block of a node
/// takes 1-2 bytes.
pub fn encode_claims(c: &ClaimsRecord) -> Vec<u8> {
    let blocks: usize = c.blocks.values().map(Vec::len).sum();
    let mut w = Writer(Vec::with_capacity(16 + blocks * 2 + c.blocks.len() * 24));
    w.u8(CLAIMS_FORMAT);
    w.varint(u128::from(c.seq.unwrap_or(0)));
    w.varint(c.blocks.len() as u128);
    for (node, bases) in &c.blocks {
        w.str(node);
        let mut sorted = bases.clone();
        sorted.sort_unstable();
        w.varint(sorted.len() as u128);
        let mut prev = 0u128;
        for base in sorted {
            w.varint(base - prev);
            prev = base;
        }
    }
    // Serialising leases (string keys, no floats) cannot fail.
    w.str(&serde_json::to_string(&c.leases).unwrap_or_else(|_| "[]".into()));
    w.0
}

/// Decodes a claims index, binary (format 3 or 2) or JSON (before them).
pub fn decode_claims(buf: &[u8]) -> Result<ClaimsRecord, String> {
    if buf.first() == Some(&b'{') {
        let j: ClaimsJson = serde_json::from_slice(buf).map_err(|e| e.to_string())?;
        return Ok(ClaimsRecord {
            seq: None,
            blocks: j
                .blocks
                .into_iter()
                .map(|(node, bases)| {
                    let bases = bases.into_iter().map(kipam_core::prefix::addr_to_u128);
                    (node, bases.collect())
                })
                .collect(),
            leases: j.leases,
        });
    }
    let mut r = Reader {
        buf,
        what: "claims",
    };
    let seq = match r.u8()? {
        CLAIMS_FORMAT => Some(r.varint64()?),
        CLAIMS_FORMAT_NO_SEQ => None,
        v => {
            return Err(format!(
                "claims record has format {v}; this kipam reads formats {CLAIMS_FORMAT_NO_SEQ} and {CLAIMS_FORMAT}"
            ));
        }
    };
    let nodes = r.varint()?;
    let mut blocks = BTreeMap::new();
    for _ in 0..nodes {
        // Every node takes at least 5 bytes: a corrupt count runs out of record first.
        let node = r.str()?;
        let n = r.varint()?;
        let n = usize::try_from(n)
            .ok()
            .filter(|n| *n <= r.buf.len())
            .ok_or_else(|| format!("claims record claims {n} blocks but is too short"))?;
        let mut bases = Vec::with_capacity(n);
        let mut prev = 0u128;
        for _ in 0..n {
            prev = prev
                .checked_add(r.varint()?)
                .ok_or("claims record has a block base out of range")?;
            bases.push(prev);
        }
        if blocks.insert(node, bases).is_some() {
            return Err("claims record names a node twice".into());
        }
    }
    let leases = serde_json::from_str(&r.str()?).map_err(|e| format!("claims leases: {e}"))?;
    r.end()?;
    Ok(ClaimsRecord {
        seq,
        blocks,
        leases,
    })
}

/// A block body as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockRecord {
    /// The node the block is affine to.
    pub node: String,
    /// Next-fit cursor.
    pub cursor: u32,
    /// Since when the block has been empty.
    pub empty_since: Option<Millis>,
    /// Held addresses: offset and handle key.
    pub held: Vec<(u32, String)>,
    /// Quarantined addresses, oldest first: offset and expiry.
    pub quarantined: Vec<(u32, Millis)>,
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn varint(&mut self, mut v: u128) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }
    /// A `u32` count, then each item: the count is filled in after the items.
    fn counted<T>(&mut self, items: impl Iterator<Item = T>, mut each: impl FnMut(&mut Self, T)) {
        let at = self.0.len();
        self.u32(0);
        let mut n: u32 = 0;
        for item in items {
            each(self, item);
            n += 1;
        }
        self.0[at..at + 4].copy_from_slice(&n.to_le_bytes());
    }
    fn opt(&mut self, v: Option<u64>) {
        match v {
            Some(t) => {
                self.u8(1);
                self.u64(t);
            }
            None => self.u8(0),
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!("{} record is truncated", self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn u128(&mut self) -> Result<u128, String> {
        Ok(u128::from_le_bytes(self.array()?))
    }
    fn str(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| format!("{} record holds a non-UTF-8 string", self.what))
    }
    fn varint(&mut self) -> Result<u128, String> {
        let mut v: u128 = 0;
        for shift in (0..19 * 7).step_by(7) {
            let byte = self.u8()?;
            v |= u128::from(byte & 0x7f)
                .checked_shl(shift)
                .filter(|x| x >> shift == u128::from(byte & 0x7f))
                .ok_or_else(|| format!("{} record has a varint too large", self.what))?;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("{} record has a varint too long", self.what))
    }
    fn varint32(&mut self) -> Result<u32, String> {
        u32::try_from(self.varint()?)
            .map_err(|_| format!("{} record has a count too large", self.what))
    }
    fn varint64(&mut self) -> Result<u64, String> {
        u64::try_from(self.varint()?)
            .map_err(|_| format!("{} record has a number too large for 64 bits", self.what))
    }
    fn opt(&mut self) -> Result<Option<u64>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            other => Err(format!("{} record has a bad option tag {other}", self.what)),
        }
    }
    /// A count of items each at least `min` bytes long, checked against what is left, so
    /// a corrupt count cannot make us reserve gigabytes.
    fn count(&mut self, min: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.buf.len() {
            return Err(format!(
                "{} record claims {n} items but is too short",
                self.what
            ));
        }
        Ok(n)
    }
    fn format(&mut self, want: u8) -> Result<(), String> {
        match self.u8()? {
            v if v == want => Ok(()),
            v => Err(format!(
                "{} record has format {v}; this kipam reads format {want}",
                self.what
            )),
        }
    }
    fn end(&self) -> Result<(), String> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} record has {} trailing bytes",
                self.what,
                self.buf.len()
            ))
        }
    }
}

/// Encodes a block body.
pub fn encode_block(b: &BlockRecord) -> Vec<u8> {
    encode_block_from(
        &b.node,
        b.cursor,
        b.empty_since,
        b.held.iter().map(|(o, k)| (*o, k.as_str())),
        b.quarantined.iter().copied(),
    )
}

/// Encodes a block body from its parts, as [`encode_block`] does, without building a
/// [`BlockRecord`] first: a block is rewritten on every allocation in it, and a
/// `BlockRecord` copies every holder's key into a `String` of its own (up to 64 heap
/// allocations per write of a /26).
pub fn encode_block_from<'k>(
    node: &str,
    cursor: u32,
    empty_since: Option<Millis>,
    held: impl Iterator<Item = (u32, &'k str)>,
    quarantined: impl Iterator<Item = (u32, Millis)>,
) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64 + held.size_hint().0 * 32));
    w.u8(BLOCK_FORMAT);
    w.str(node);
    w.u32(cursor);
    w.opt(empty_since);
    w.counted(held, |w, (offset, key)| {
        w.u32(offset);
        w.str(key);
    });
    w.counted(quarantined, |w, (offset, until)| {
        w.u32(offset);
        w.u64(until);
    });
    w.0
}

/// Decodes a block body; the error says what is wrong.
pub fn decode_block(buf: &[u8]) -> Result<BlockRecord, String> {
    let mut r = Reader { buf, what: "block" };
    r.format(BLOCK_FORMAT)?;
    let node = r.str()?;
    let cursor = r.u32()?;
    let empty_since = r.opt()?;
    let n = r.count(8)?;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push((r.u32()?, r.str()?));
    }
    let n = r.count(12)?;
    let mut quarantined = Vec::with_capacity(n);
    for _ in 0..n {
        quarantined.push((r.u32()?, r.u64()?));
    }
    r.end()?;
    Ok(BlockRecord {
        node,
        cursor,
        empty_since,
        held,
        quarantined,
    })
}

/// Encodes a node's block summaries, format 2: per block, in address order, the base as
/// a varint delta from the previous block's, the four counts as varints and a flags byte
/// saying which of the two times follow (as varints). A full /26 block takes 6 bytes,
/// so a node with a thousand blocks rewrites ~6 KiB per allocation, not ~46 KiB.
pub fn encode_node(summaries: &[(u128, BlockSummary)]) -> Vec<u8> {
    let mut sorted: Vec<&(u128, BlockSummary)> = summaries.iter().collect();
    sorted.sort_by_key(|(base, _)| *base);
    let mut w = Writer(Vec::with_capacity(8 + summaries.len() * 8));
    w.u8(NODE_FORMAT);
    w.varint(sorted.len() as u128);
    let mut prev = 0u128;
    for (base, s) in sorted {
        w.varint(base - prev);
        prev = *base;
        for count in [s.free, s.held, s.quarantined, s.reserved] {
            w.varint(u128::from(count));
        }
        let flags = u8::from(s.quarantine_until != 0) | (u8::from(s.empty_since.is_some()) << 1);
        w.u8(flags);
        if s.quarantine_until != 0 {
            w.varint(u128::from(s.quarantine_until));
        }
        if let Some(t) = s.empty_since {
            w.varint(u128::from(t));
        }
    }
    w.0
}

/// Decodes a node's block summaries (format 2, or the older fixed-width format 1).
pub fn decode_node(buf: &[u8]) -> Result<Vec<(u128, BlockSummary)>, String> {
    let mut r = Reader { buf, what: "node" };
    match buf.first() {
        Some(1) => return decode_node_v1(r),
        Some(_) => r.format(NODE_FORMAT)?,
        None => return Err("node record is empty".into()),
    }
    let n = r.varint()?;
    let n = usize::try_from(n)
        .ok()
        .filter(|n| n.saturating_mul(6) <= r.buf.len())
        .ok_or_else(|| format!("node record claims {n} blocks but is too short"))?;
    let mut out = Vec::with_capacity(n);
    let mut prev = 0u128;
    for _ in 0..n {
        let base = prev
            .checked_add(r.varint()?)
            .ok_or("node record has a block base out of range")?;
        prev = base;
        let (free, held, quarantined, reserved) =
            (r.varint32()?, r.varint32()?, r.varint32()?, r.varint32()?);
        let flags = r.u8()?;
        if flags & !3 != 0 {
            return Err(format!("node record has unknown flags {flags:#x}"));
        }
        let quarantine_until = if flags & 1 != 0 { r.varint64()? } else { 0 };
        let empty_since = if flags & 2 != 0 {
            Some(r.varint64()?)
        } else {
            None
        };
        out.push((
            base,
            BlockSummary {
                free,
                held,
                quarantined,
                reserved,
                quarantine_until,
                empty_since,
            },
        ));
    }
    r.end()?;
    Ok(out)
}

fn decode_node_v1(mut r: Reader<'_>) -> Result<Vec<(u128, BlockSummary)>, String> {
    r.format(1)?;
    let n = r.count(41)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let base = r.u128()?;
        let s = BlockSummary {
            free: r.u32()?,
            held: r.u32()?,
            quarantined: r.u32()?,
            reserved: r.u32()?,
            quarantine_until: r.u64()?,
            empty_since: r.opt()?,
        };
        out.push((base, s));
    }
    r.end()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn claims_round_trip_and_json_is_still_read() {
        let v6 =
            kipam_core::prefix::addr_to_u128("fd00:1::".parse().unwrap_or(IpAddr::from([0u8; 16])));
        let c = ClaimsRecord {
            seq: Some(300),
            blocks: BTreeMap::from([
                (
                    "worker-1".to_string(),
                    vec![167_772_224, 167_772_160, 167_772_288],
                ),
                ("worker-2".to_string(), vec![v6, v6 + 64]),
                ("empty".to_string(), vec![]),
            ]),
            leases: vec![Lease {
                prefix: "10.9.0.0/24"
                    .parse()
                    .unwrap_or_else(|_| ipnet::IpNet::default()),
                owner: "node/a".into(),
                created: 5,
                attrs: BTreeMap::from([("k".to_string(), "v".to_string())]),
            }],
        };
        let bytes = encode_claims(&c);
        let mut sorted = c.clone();
        for bases in sorted.blocks.values_mut() {
            bases.sort_unstable();
        }
        assert_eq!(decode_claims(&bytes), Ok(sorted));
        // worker-1's three /26 bases cost 4 + 2 + 2 bytes.
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
        let json = r#"{"blocks":{"n1":["10.0.0.64","10.0.0.0"]},"leases":[]}"#;
        let old = decode_claims(json.as_bytes());
        assert_eq!(
            old.map(|c| c.blocks),
            Ok(BTreeMap::from([(
                "n1".to_string(),
                vec![167_772_224, 167_772_160]
            )]))
        );
        // Format 2: the same without the seq.
        let mut two = vec![2u8];
        two.extend_from_slice(&bytes[3..]);
        assert_eq!(
            decode_claims(&two).map(|c| (c.seq, c.blocks.len(), c.leases.len())),
            Ok((None, 3, 1))
        );
        assert!(decode_claims(&[4]).is_err(), "unknown format");
        assert!(decode_claims(&[2, 1]).is_err(), "truncated");
        assert!(decode_claims(&[3, 5]).is_err(), "truncated after the seq");
        assert!(decode_claims(b"{").is_err(), "bad JSON");
    }

    #[test]
    fn block_round_trips() {
        let b = BlockRecord {
            node: "worker-1".into(),
            cursor: 7,
            empty_since: None,
            held: vec![(1, "net/abc/eth0".into()), (5, "net/def/eth0".into())],
            quarantined: vec![(3, 1_000)],
        };
        assert_eq!(decode_block(&encode_block(&b)), Ok(b));
    }

    #[test]
    fn node_round_trips() {
        let s = BlockSummary {
            free: 3,
            held: 60,
            quarantined: 1,
            reserved: 0,
            quarantine_until: 9,
            empty_since: Some(4),
        };
        let v = vec![(0, BlockSummary::default()), (64, s), (u128::MAX - 63, s)];
        assert_eq!(decode_node(&encode_node(&v)), Ok(v.clone()));
        let mut unsorted = v.clone();
        unsorted.reverse();
        assert_eq!(decode_node(&encode_node(&unsorted)), Ok(v));
        let full = BlockSummary {
            free: 0,
            held: 64,
            quarantined: 0,
            reserved: 0,
            quarantine_until: 0,
            empty_since: None,
        };
        let many: Vec<(u128, BlockSummary)> = (0..1000u128)
            .map(|i| (0x0a7b_0000 + i * 64, full))
            .collect();
        assert!(
            encode_node(&many).len() < 7 * 1000,
            "compact: {}",
            encode_node(&many).len()
        );
    }

    #[test]
    fn refuses_newer_formats_and_truncation() {
        let mut bytes = encode_block(&BlockRecord::default());
        bytes[0] = 9;
        assert!(decode_block(&bytes).is_err_and(|e| e.contains("format 9")));
        let bytes = encode_node(&[(1, BlockSummary::default())]);
        assert!(decode_node(&bytes[..bytes.len() - 1]).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_block(&bytes);
            let _ = decode_node(&bytes);
            let _ = decode_claims(&bytes);
        }
    }
}
