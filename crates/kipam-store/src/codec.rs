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

use ipnet::IpNet;
use kipam_core::{BlockSummary, Lease, Millis};
use serde::Deserialize;

/// Format byte of a block body record.
pub const BLOCK_FORMAT: u8 = 1;
/// Format byte of a node summaries record written now (2: varint deltas; 1, fixed-width
/// fields, is still read).
pub const NODE_FORMAT: u8 = 2;

/// Format byte of an event record (`events/{seq}`) written now: binary. Records written
/// before are JSON (they start with `{`) and are still read.
pub const EVENT_FORMAT: u8 = 1;

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

/// One history event as stored under `events/{seq}` (kipamd writes them; its history,
/// its log tail and its history index read them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// Sequence number, increasing.
    pub seq: u64,
    /// When (ms since the epoch).
    pub time: Millis,
    /// What: `allocate`, `release`, `reclaim`, `lease`, `lease-release` (a kind this
    /// version does not know is kept as its name).
    pub kind: String,
    /// The pool.
    pub pool: String,
    /// The address, for address events.
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// The prefix, for lease events.
    #[serde(default)]
    pub prefix: Option<IpNet>,
    /// The handle (or lease owner).
    pub handle: String,
    /// The node.
    #[serde(default)]
    pub node: Option<String>,
    /// The handle's attributes at the time.
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
}

/// An event's fields, borrowed, for [`encode_event`] (the writer encodes its own event
/// type without copying its strings).
#[derive(Clone, Copy, Debug)]
pub struct EventFields<'a> {
    /// Sequence number.
    pub seq: u64,
    /// When.
    pub time: Millis,
    /// The kind's name.
    pub kind: &'a str,
    /// The pool.
    pub pool: &'a str,
    /// The address.
    pub address: Option<IpAddr>,
    /// The prefix.
    pub prefix: Option<IpNet>,
    /// The handle.
    pub handle: &'a str,
    /// The node.
    pub node: Option<&'a str>,
    /// The attributes.
    pub attrs: &'a BTreeMap<String, String>,
}

impl EventRecord {
    /// Its fields, borrowed.
    pub fn fields(&self) -> EventFields<'_> {
        EventFields {
            seq: self.seq,
            time: self.time,
            kind: &self.kind,
            pool: &self.pool,
            address: self.address,
            prefix: self.prefix,
            handle: &self.handle,
            node: self.node.as_deref(),
            attrs: &self.attrs,
        }
    }
}

/// Event kinds with a one-byte code (0: the name follows as a string).
const EVENT_KINDS: [&str; 5] = ["allocate", "release", "reclaim", "lease", "lease-release"];

const EV_ADDRESS: u8 = 1;
const EV_PREFIX: u8 = 2;
const EV_NODE: u8 = 4;
const EV_ATTRS: u8 = 8;

impl Writer {
    /// A string with a varint length (short strings are the common case here).
    fn vstr(&mut self, s: &str) {
        self.varint(s.len() as u128);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn ip(&mut self, a: IpAddr) {
        match a {
            IpAddr::V4(v4) => {
                self.u8(4);
                self.0.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                self.u8(6);
                self.0.extend_from_slice(&v6.octets());
            }
        }
    }
}

impl Reader<'_> {
    fn vstr(&mut self) -> Result<String, String> {
        let n = usize::try_from(self.varint()?)
            .map_err(|_| format!("{} record has a string too long", self.what))?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| format!("{} record holds a non-UTF-8 string", self.what))
    }
    fn ip(&mut self) -> Result<IpAddr, String> {
        match self.u8()? {
            4 => Ok(IpAddr::from(self.array::<4>()?)),
            6 => Ok(IpAddr::from(self.array::<16>()?)),
            other => Err(format!(
                "{} record has an address of family {other}",
                self.what
            )),
        }
    }
}

/// Encodes an event: format byte 1; varints seq and time; the kind as a byte (1
/// allocate, 2 release, 3 reclaim, 4 lease, 5 lease-release; 0 and the name as a string);
/// pool and handle as strings; a flags byte (bit 0 address, 1 prefix, 2 node, 3
/// attributes follow); the address (a byte 4 or 6, then its octets); the prefix (the same,
/// then its length as a byte); the node as a string; a varint count of attributes, then
/// each name and value as strings. Strings are a varint byte length and UTF-8 bytes.
/// An allocate event takes a third of its JSON when its strings are short, two thirds for
/// a CNI attachment with pod attributes (the key and the attributes are most of it).
pub fn encode_event(e: &EventFields<'_>) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(
        32 + e.pool.len() + e.handle.len() + e.node.map_or(0, str::len),
    ));
    w.u8(EVENT_FORMAT);
    w.varint(u128::from(e.seq));
    w.varint(u128::from(e.time));
    match EVENT_KINDS.iter().position(|k| *k == e.kind) {
        Some(i) => w.u8(i as u8 + 1),
        None => {
            w.u8(0);
            w.vstr(e.kind);
        }
    }
    w.vstr(e.pool);
    w.vstr(e.handle);
    let mut flags = 0;
    if e.address.is_some() {
        flags |= EV_ADDRESS;
    }
    if e.prefix.is_some() {
        flags |= EV_PREFIX;
    }
    if e.node.is_some() {
        flags |= EV_NODE;
    }
    if !e.attrs.is_empty() {
        flags |= EV_ATTRS;
    }
    w.u8(flags);
    if let Some(a) = e.address {
        w.ip(a);
    }
    if let Some(p) = e.prefix {
        w.ip(p.network());
        w.u8(p.prefix_len());
    }
    if let Some(n) = e.node {
        w.vstr(n);
    }
    if !e.attrs.is_empty() {
        w.varint(e.attrs.len() as u128);
        for (k, v) in e.attrs {
            w.vstr(k);
            w.vstr(v);
        }
    }
    w.0
}

/// Decodes an event, binary (format 1) or JSON (before it).
pub fn decode_event(buf: &[u8]) -> Result<EventRecord, String> {
    if buf.first() == Some(&b'{') {
        return serde_json::from_slice(buf).map_err(|e| format!("event record: {e}"));
    }
    let mut r = Reader { buf, what: "event" };
    r.format(EVENT_FORMAT)?;
    let seq = r.varint64()?;
    let time = r.varint64()?;
    let kind = match r.u8()? {
        0 => r.vstr()?,
        code => EVENT_KINDS
            .get(usize::from(code) - 1)
            .ok_or_else(|| format!("event record has kind code {code}"))?
            .to_string(),
    };
    let pool = r.vstr()?;
    let handle = r.vstr()?;
    let flags = r.u8()?;
    if flags & !(EV_ADDRESS | EV_PREFIX | EV_NODE | EV_ATTRS) != 0 {
        return Err(format!("event record has unknown flags {flags:#x}"));
    }
    let address = if flags & EV_ADDRESS != 0 {
        Some(r.ip()?)
    } else {
        None
    };
    let prefix = if flags & EV_PREFIX != 0 {
        let net = r.ip()?;
        let len = r.u8()?;
        Some(IpNet::new(net, len).map_err(|_| format!("event record has a prefix /{len}"))?)
    } else {
        None
    };
    let node = if flags & EV_NODE != 0 {
        Some(r.vstr()?)
    } else {
        None
    };
    let mut attrs = BTreeMap::new();
    if flags & EV_ATTRS != 0 {
        let n = r.varint()?;
        // Each attribute takes at least two bytes: a corrupt count runs out of record.
        if n > r.buf.len() as u128 {
            return Err(format!(
                "event record claims {n} attributes but is too short"
            ));
        }
        for _ in 0..n {
            let k = r.vstr()?;
            let v = r.vstr()?;
            attrs.insert(k, v);
        }
    }
    r.end()?;
    Ok(EventRecord {
        seq,
        time,
        kind,
        pool,
        address,
        prefix,
        handle,
        node,
        attrs,
    })
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
            let _ = decode_event(&bytes);
            let mut event = vec![EVENT_FORMAT];
            event.extend_from_slice(&bytes);
            let _ = decode_event(&event);
        }
    }

    fn cni_event() -> EventRecord {
        EventRecord {
            seq: 1_234_567,
            time: 1_795_696_224_697,
            kind: "allocate".into(),
            pool: "pods-v4".into(),
            address: "10.22.3.4".parse().ok(),
            prefix: None,
            handle: format!("cni-net/{}/eth0", "3f2a".repeat(16)),
            node: Some("worker-17".into()),
            attrs: BTreeMap::from([
                ("K8S_POD_NAMESPACE".to_string(), "default".to_string()),
                (
                    "K8S_POD_NAME".to_string(),
                    "web-6d4cf56db6-x7k2p".to_string(),
                ),
                (
                    "K8S_POD_UID".to_string(),
                    "0b5a8f3e-6c1d-4f2a-9e7b-2d8c4a1f5e90".to_string(),
                ),
            ]),
        }
    }

    #[test]
    fn events_round_trip_and_json_is_still_read() {
        let e = cni_event();
        let bytes = encode_event(&e.fields());
        assert_eq!(decode_event(&bytes), Ok(e.clone()));
        let lease = EventRecord {
            kind: "lease-release".into(),
            address: None,
            prefix: "fd00:5::/64".parse().ok(),
            node: None,
            attrs: BTreeMap::new(),
            ..e.clone()
        };
        assert_eq!(decode_event(&encode_event(&lease.fields())), Ok(lease));
        let odd = EventRecord {
            kind: "renumber".into(),
            ..e.clone()
        };
        assert_eq!(
            decode_event(&encode_event(&odd.fields())).map(|r| r.kind),
            Ok("renumber".to_string()),
            "a kind without a code keeps its name"
        );
        // What earlier versions wrote.
        let json = r#"{"seq":7,"time":9,"kind":"release","pool":"p","address":"10.0.0.1","handle":"h","node":"n"}"#;
        let old = decode_event(json.as_bytes()).map(|r| (r.seq, r.kind, r.address, r.node));
        assert_eq!(
            old,
            Ok((
                7,
                "release".to_string(),
                "10.0.0.1".parse().ok(),
                Some("n".to_string())
            ))
        );
        // Why binary: the field names and the address text go; a CNI allocate event,
        // mostly its handle key and pod attributes, takes two thirds of its JSON.
        let as_json = format!(
            r#"{{"seq":{},"time":{},"kind":"allocate","pool":"{}","address":"10.22.3.4","handle":"{}","node":"worker-17","attrs":{}}}"#,
            e.seq,
            e.time,
            e.pool,
            e.handle,
            serde_json::to_string(&e.attrs).unwrap_or_default()
        );
        assert!(
            bytes.len() * 3 < as_json.len() * 2 + 30,
            "{} bytes against {} of JSON",
            bytes.len(),
            as_json.len()
        );
    }

    #[test]
    fn bad_events_are_refused() {
        let good = encode_event(&cni_event().fields());
        for cut in 1..good.len() {
            assert!(decode_event(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode_event(&trailing).is_err(), "trailing bytes");
        assert!(decode_event(&[2]).is_err(), "unknown format");
        assert!(
            decode_event(&[1, 1, 1, 9, 0, 0, 0]).is_err(),
            "unknown kind code"
        );
        assert!(
            decode_event(&[1, 1, 1, 1, 0, 0, 0x10]).is_err(),
            "unknown flag"
        );
        assert!(
            decode_event(&[1, 1, 1, 1, 0, 0, 1, 5, 0, 0, 0, 0]).is_err(),
            "family 5"
        );
        assert!(decode_event(b"{").is_err(), "bad JSON");
    }
}
