//! kipamd's log tail (`kipam_store::log`): handle records, block bodies and node summaries
//! are written after their change, in slices, each as the engine holds it at that later
//! moment. Whenever a load happens — after any commit, as after a crash — it must see
//! exactly what the engine held: every handle with its addresses, node and attributes,
//! every held and quarantined address of every block, and nothing the engine no longer
//! holds.
//!
//! A writer is simulated here the way kipamd's is (`crates/kipam-server/src/engine.rs`):
//! the engine runs a batch, an event per address changed goes into the batch's commit
//! with what [`Folder::plan`] says to write; folds come due at random.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kipam_core::{AllocRequest, Ipam, Millis, PoolConfig};
use kipam_store::codec::{EventRecord, encode_event};
use kipam_store::ipam::write_changes;
use kipam_store::log::{self, Folder};
use kipam_store::{IpamError, IpamStore, MemStore, Txn, transact};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Writer {
    store: MemStore,
    ipam: Ipam,
    folder: Folder,
    seq: u64,
    now: Millis,
    events: Vec<EventRecord>,
}

impl Writer {
    fn new() -> Writer {
        let mut ipam = Ipam::new();
        for (name, cidr) in [("v4", "10.1.0.0/24"), ("v6", "fd00:1::/120")] {
            let mut c = PoolConfig::new(name, cidr.parse().expect("test CIDR"));
            c.block_prefix_length = Some(if name == "v4" { 28 } else { 124 });
            c.reuse_delay_seconds = 30;
            c.empty_block_grace_seconds = 0;
            ipam.create_pool(c).expect("pool");
        }
        let mut w = Writer {
            store: MemStore::new(),
            ipam,
            folder: Folder::new(0),
            seq: 0,
            now: 1_000_000,
            events: Vec::new(),
        };
        w.commit(false, true);
        w
    }

    fn event(&mut self, kind: &str, pool: &str, addr: IpAddr, handle: &str, node: &str) {
        self.seq += 1;
        self.events.push(EventRecord {
            seq: self.seq,
            time: self.now,
            kind: kind.into(),
            pool: pool.into(),
            address: Some(addr),
            prefix: None,
            handle: handle.into(),
            node: Some(node.into()),
            attrs: BTreeMap::from([("k8s_pod_name".into(), format!("pod-{handle}"))]),
        });
    }

    /// An event as kipamd writes it (binary), every third as earlier versions did (JSON):
    /// a tail written across an upgrade holds both.
    fn stored(e: &EventRecord) -> Vec<u8> {
        if e.seq.is_multiple_of(3) {
            serde_json::to_vec(&serde_json::json!({
                "seq": e.seq,
                "time": e.time,
                "kind": e.kind,
                "pool": e.pool,
                "address": e.address,
                "handle": e.handle,
                "node": e.node,
                "attrs": e.attrs,
            }))
            .unwrap_or_default()
        } else {
            encode_event(&e.fields())
        }
    }

    fn allocate(&mut self, handle: &str, node: &str, dual: bool) {
        let pools: &[&str] = if dual { &["v4", "v6"] } else { &["v4"] };
        let mut req = AllocRequest::from_pools(handle, node, pools);
        req.attrs = BTreeMap::from([("k8s_pod_name".into(), format!("pod-{handle}"))]);
        // Exhaustion refuses and changes nothing: no event.
        if let Ok(got) = self.ipam.allocate(&req, self.now) {
            for a in got {
                self.event("allocate", &a.pool, a.addr, handle, node);
            }
        }
    }

    fn release(&mut self, handle: &str) {
        let Some(h) = self.ipam.handle(handle).cloned() else {
            return;
        };
        let got = self.ipam.release_handle(handle, self.now).expect("release");
        for a in got {
            self.event("release", &a.pool, a.addr, handle, &h.node);
        }
    }

    /// Commits the batch's events with what the folder plans.
    fn commit(&mut self, due: bool, all: bool) {
        let dirty = self.ipam.take_dirty();
        let plan = self.folder.plan(dirty, &self.ipam, self.seq, due, all);
        let events = std::mem::take(&mut self.events);
        let (ipam, seq) = (&self.ipam, self.seq);
        transact(&self.store, |txn: &mut dyn Txn| -> Result<(), IpamError> {
            write_changes(txn, ipam, &plan.changes, seq)?;
            for e in &events {
                txn.put(&log::event_key(e.seq), Writer::stored(e))?;
            }
            txn.put(log::SEQ_KEY, seq.to_string().into_bytes())?;
            txn.put(log::FOLDED_KEY, plan.folded.to_string().into_bytes())?;
            Ok(())
        })
        .expect("commit");
        self.folder.committed(&plan);
    }
}

/// What a loaded engine holds, comparably: handles with node, attributes and addresses;
/// per block, its holders and its quarantine that has not expired at `now`.
type Handles = BTreeMap<String, (String, BTreeMap<String, String>, BTreeSet<IpAddr>)>;
type Blocks = BTreeMap<(String, u128), (BTreeSet<(u32, String)>, BTreeSet<(u32, Millis)>)>;
/// Every claimed block, held or empty, with its node.
type Claims = BTreeSet<(String, u128, String)>;

fn view(ipam: &Ipam, now: Millis) -> (Handles, Blocks, Claims) {
    let claims = ipam
        .pools()
        .flat_map(|p| {
            p.block_claims()
                .map(|(b, node)| (p.config().name.clone(), b.base, node.to_string()))
        })
        .collect();
    let handles = ipam
        .handles()
        .map(|h| {
            (
                h.key.to_string(),
                (
                    h.node.to_string(),
                    h.attrs.clone(),
                    h.addrs.iter().map(|a| a.addr).collect(),
                ),
            )
        })
        .collect();
    let mut blocks = Blocks::new();
    for p in ipam.pools() {
        for b in p.blocks() {
            let held = b
                .held()
                .map(|(o, id)| (o, ipam.key_of(id).to_string()))
                .collect();
            let quarantined = b.quarantined().filter(|&(_, t)| t > now).collect();
            blocks.insert(
                (p.config().name.clone(), b.prefix().base),
                (held, quarantined),
            );
        }
    }
    blocks
        .retain(|_, (held, q): &mut (BTreeSet<_>, BTreeSet<_>)| !held.is_empty() || !q.is_empty());
    (handles, blocks, claims)
}

fn assert_load_matches(w: &Writer, at: &str) {
    let store = IpamStore::new(w.store.clone());
    let loaded = store.load_all(w.now).expect("load");
    loaded.check().expect("loaded engine consistent");
    let (got_h, got_b, got_c) = view(&loaded, w.now);
    let (want_h, want_b, want_c) = view(&w.ipam, w.now);
    assert_eq!(got_h, want_h, "handles after {at}");
    assert_eq!(got_b, want_b, "blocks after {at}");
    assert_eq!(got_c, want_c, "claims after {at}");
    let report = store.check_integrity(w.now).expect("integrity check runs");
    assert!(report.ok(), "integrity after {at}: {:?}", report.problems);
}

#[test]
fn a_load_at_any_commit_sees_what_the_engine_held() {
    for seed in 1..=12u64 {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let mut w = Writer::new();
        let mut live: Vec<String> = Vec::new();
        let mut next = 0;
        for batch in 0..300 {
            for _ in 0..=rng.below(6) {
                if live.is_empty() || rng.below(100) < 55 {
                    let h = format!("net/{seed}-{next}/eth0");
                    next += 1;
                    let node = format!("node-{}", rng.below(3));
                    w.allocate(&h, &node, rng.below(4) == 0);
                    if w.ipam.handle(&h).is_some() {
                        live.push(h);
                    }
                } else {
                    let i = rng.below(live.len() as u64) as usize;
                    let h = live.swap_remove(i);
                    w.release(&h);
                }
            }
            w.now += rng.below(8_000);
            // kipamd gives empty blocks back in housekeeping, which writes everything;
            // a block given back in any other commit must leave the store exact too.
            let housekeeping = rng.below(40) == 0;
            if housekeeping || rng.below(8) == 0 {
                w.ipam.reclaim_empty_blocks(w.now);
            }
            w.commit(rng.below(5) == 0, housekeeping);
            if rng.below(4) == 0 {
                assert_load_matches(&w, &format!("seed {seed}, batch {batch}"));
            }
        }
        assert_load_matches(&w, &format!("seed {seed}, the end"));
    }
}

#[test]
fn operations_other_than_a_full_load_refuse_a_tail() {
    let mut w = Writer::new();
    w.allocate("net/a/eth0", "node-0", false);
    w.commit(false, false);
    let store = IpamStore::new(w.store.clone());
    let (folded, last) = transact(&w.store, |txn: &mut dyn Txn| -> Result<_, IpamError> {
        Ok(log::watermark(txn)?.unwrap_or_default())
    })
    .expect("read the watermark");
    assert!(last > folded, "the allocation waits for a fold");
    match store.handle("net/a/eth0") {
        Err(IpamError::Unfolded { folded: f, last: l }) => assert_eq!((f, l), (folded, last)),
        other => panic!("expected Unfolded, got {other:?}"),
    }
    // A full load reads the tail; a fold of everything leaves none.
    assert!(
        store
            .load_all(w.now)
            .expect("load")
            .handle("net/a/eth0")
            .is_some()
    );
    w.commit(false, true);
    assert!(store.handle("net/a/eth0").expect("no tail").is_some());
}
