//! Encodings of the IPAM records.
//!
//! Records that are small and rarely written (pool configs, handles, scope networks,
//! leases) are JSON: readable with `sqlite3` or `etcdctl`, easy to evolve. The two records
//! written on every allocation — a block body and a node's block summaries — use a compact
//! little-endian binary form, because a CNI exec reads and rewrites them on its hot path.
//! Each binary record starts with a format byte ([`BLOCK_FORMAT`], [`NODE_FORMAT`]) so a
//! later version can read old data; docs/storage.md describes both layouts.

use kipam_core::{BlockSummary, Millis};

/// Format byte of a block body record.
pub const BLOCK_FORMAT: u8 = 1;
/// Format byte of a node summaries record.
pub const NODE_FORMAT: u8 = 1;

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
    fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
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
    let mut w = Writer(Vec::with_capacity(32 + b.held.len() * 80));
    w.u8(BLOCK_FORMAT);
    w.str(&b.node);
    w.u32(b.cursor);
    w.opt(b.empty_since);
    w.u32(b.held.len() as u32);
    for (offset, key) in &b.held {
        w.u32(*offset);
        w.str(key);
    }
    w.u32(b.quarantined.len() as u32);
    for (offset, until) in &b.quarantined {
        w.u32(*offset);
        w.u64(*until);
    }
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

/// Encodes a node's block summaries (block base as a number, then the counts).
pub fn encode_node(summaries: &[(u128, BlockSummary)]) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(5 + summaries.len() * 50));
    w.u8(NODE_FORMAT);
    w.u32(summaries.len() as u32);
    for (base, s) in summaries {
        w.u128(*base);
        w.u32(s.free);
        w.u32(s.held);
        w.u32(s.quarantined);
        w.u32(s.reserved);
        w.u64(s.quarantine_until);
        w.opt(s.empty_since);
    }
    w.0
}

/// Decodes a node's block summaries.
pub fn decode_node(buf: &[u8]) -> Result<Vec<(u128, BlockSummary)>, String> {
    let mut r = Reader { buf, what: "node" };
    r.format(NODE_FORMAT)?;
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
        let v = vec![(u128::MAX - 63, s), (0, BlockSummary::default())];
        assert_eq!(decode_node(&encode_node(&v)), Ok(v));
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
        }
    }
}
