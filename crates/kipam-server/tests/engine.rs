//! The engine against a real SQLite store: group commit is durable, concurrent requests
//! never share an address, history answers "who held it when", GC reclaims only after the
//! grace period and only what was not reported again, usage samples accumulate.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{TempDir, skip};
use kipam_core::{AllocRequest, PoolConfig};
use kipam_server::engine::{Clock, Engine, EngineOptions, EventKind, GcReport, Mutation, Outcome};

fn clock() -> (Clock, Arc<AtomicU64>) {
    let t = Arc::new(AtomicU64::new(1_700_000_000_000));
    let c = t.clone();
    (Arc::new(move || c.load(Ordering::SeqCst)), t)
}

fn open(dir: &TempDir, clock: &Clock) -> Engine {
    Engine::open(&dir.0, EngineOptions::default(), clock.clone(), None).unwrap()
}

fn alloc(handle: &str, node: &str, pools: &[&str]) -> Mutation {
    let mut req = AllocRequest::from_pools(handle, node, pools);
    req.attrs = BTreeMap::from([("k8s.pod.name".to_string(), handle.to_string())]);
    Mutation::Allocate(req)
}

fn addrs(o: Outcome) -> Vec<IpAddr> {
    match o {
        Outcome::Addresses(a) => a.into_iter().map(|h| h.addr).collect(),
        Outcome::Allocated(h) => h.addrs.into_iter().map(|h| h.addr).collect(),
        other => panic!("expected addresses, got {other:?}"),
    }
}

async fn pool(e: &Engine, name: &str, cidr: &str) {
    let mut c = PoolConfig::new(name, cidr.parse().unwrap());
    c.reuse_delay_seconds = 0;
    e.apply(Mutation::CreatePool(c)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_allocations_are_durable_and_distinct() {
    let dir = TempDir::new("conc");
    let (c, _) = clock();
    let e = open(&dir, &c);
    pool(&e, "pods", "10.80.0.0/20").await;
    let mut tasks = Vec::new();
    for i in 0..400 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            addrs(
                e.apply(alloc(&format!("h{i}"), &format!("n{}", i % 4), &["pods"]))
                    .await
                    .unwrap(),
            )
        }));
    }
    let mut all = BTreeMap::new();
    for (i, t) in tasks.into_iter().enumerate() {
        all.insert(format!("h{i}"), t.await.unwrap()[0]);
    }
    let distinct: BTreeSet<IpAddr> = all.values().copied().collect();
    assert_eq!(distinct.len(), 400, "every request got its own address");
    let commits = e.stats().commits.load(Ordering::Relaxed);
    assert!(
        commits < 401,
        "requests were batched: {commits} commits for 401 mutations"
    );
    e.shutdown();
    drop(e);

    let e = open(&dir, &c);
    let held: BTreeMap<String, IpAddr> = e.read(|ipam| {
        ipam.check().unwrap();
        ipam.handles()
            .map(|h| (h.key.to_string(), h.addrs[0].addr))
            .collect()
    });
    assert_eq!(held, all, "every answered allocation survived the restart");
    e.shutdown();
}

#[tokio::test]
async fn history_answers_who_held_an_address_when() {
    let dir = TempDir::new("hist");
    let (c, t) = clock();
    let e = open(&dir, &c);
    pool(&e, "pods", "10.81.0.0/30").await;
    let a = addrs(e.apply(alloc("first", "n1", &["pods"])).await.unwrap())[0];
    let t1 = t.load(Ordering::SeqCst);
    t.fetch_add(10_000, Ordering::SeqCst);
    e.apply(Mutation::Release {
        handle: "first".into(),
    })
    .await
    .unwrap();
    let t2 = t.load(Ordering::SeqCst);
    t.fetch_add(10_000, Ordering::SeqCst);
    // The /30 has two usable addresses; take both so `a` comes back to a new holder.
    addrs(e.apply(alloc("second", "n1", &["pods"])).await.unwrap());
    let b = addrs(e.apply(alloc("third", "n1", &["pods"])).await.unwrap())[0];
    let holder_now = if b == a { "third" } else { "second" };
    let history = e.history(a).unwrap();
    let kinds: Vec<EventKind> = history.iter().map(|ev| ev.kind).collect();
    assert_eq!(
        kinds,
        vec![EventKind::Allocate, EventKind::Release, EventKind::Allocate]
    );
    assert_eq!(
        history[0].attrs.get("k8s.pod.name").map(String::as_str),
        Some("first")
    );
    assert_eq!(
        e.holder_at(a, t1 + 1).unwrap().map(|ev| ev.handle),
        Some("first".to_string())
    );
    assert_eq!(
        e.holder_at(a, t2 + 1).unwrap(),
        None,
        "free between release and reuse"
    );
    assert_eq!(
        e.holder_at(a, t.load(Ordering::SeqCst))
            .unwrap()
            .map(|ev| ev.handle),
        Some(holder_now.to_string())
    );
    e.shutdown();
}

#[tokio::test]
async fn gc_reclaims_after_grace_unless_reported_again() {
    let dir = TempDir::new("gc");
    let (c, t) = clock();
    let e = open(&dir, &c);
    pool(&e, "pods", "10.82.0.0/24").await;
    let mut addr_of = BTreeMap::new();
    for h in ["net/a/eth0", "net/b/eth0", "net/c/eth0"] {
        addr_of.insert(
            h,
            addrs(e.apply(alloc(h, "node-1", &["pods"])).await.unwrap())[0],
        );
    }
    let report = |valid: &[&str]| {
        Mutation::GcReport(GcReport {
            node: Some("node-1".into()),
            network: None,
            valid: valid.iter().map(|s| s.to_string()).collect(),
            grace_seconds: Some(30),
        })
    };
    match e.apply(report(&["net/a/eth0"])).await.unwrap() {
        Outcome::Gc(p) => assert_eq!(p.len(), 2),
        other => panic!("{other:?}"),
    }
    t.fetch_add(10_000, Ordering::SeqCst);
    e.apply(Mutation::Housekeeping).await.unwrap();
    assert_eq!(
        e.read(|i| i.handles().count()),
        3,
        "nothing reclaimed inside the grace period"
    );
    // b comes back: it must survive; c stays stale.
    e.apply(report(&["net/a/eth0", "net/b/eth0"]))
        .await
        .unwrap();
    t.fetch_add(30_000, Ordering::SeqCst);
    e.apply(Mutation::Housekeeping).await.unwrap();
    let left: BTreeSet<String> = e.read(|i| i.handles().map(|h| h.key.to_string()).collect());
    assert_eq!(
        left,
        BTreeSet::from(["net/a/eth0".to_string(), "net/b/eth0".to_string()])
    );
    let history = e.history(addr_of["net/c/eth0"]).unwrap();
    assert_eq!(
        history.last().map(|ev| (ev.kind, ev.handle.as_str())),
        Some((EventKind::Reclaim, "net/c/eth0"))
    );
    assert!(e.pending_reclaims().is_empty());
    e.shutdown();
    // Pending state and the reclaim survive a restart consistently.
    let e = open(&dir, &c);
    assert_eq!(e.read(|i| i.handles().count()), 2);
    e.shutdown();
}

#[tokio::test]
async fn gc_report_without_owner_is_refused() {
    let dir = TempDir::new("gc-owner");
    let (c, _) = clock();
    let e = open(&dir, &c);
    pool(&e, "pods", "10.86.0.0/24").await;
    e.apply(alloc("net/a/eth0", "node-1", &["pods"]))
        .await
        .unwrap();
    let err = e
        .apply(Mutation::GcReport(GcReport {
            node: None,
            network: None,
            valid: vec![],
            grace_seconds: Some(0),
        }))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("node"), "{err}");
    assert!(
        e.pending_reclaims().is_empty(),
        "nothing was scheduled for reclaim"
    );
    e.shutdown();
}

#[tokio::test]
async fn housekeeping_records_usage_samples() {
    let dir = TempDir::new("samples");
    let (c, t) = clock();
    let e = open(&dir, &c);
    pool(&e, "pods", "10.83.0.0/24").await;
    let start = t.load(Ordering::SeqCst);
    for i in 0..5 {
        e.apply(alloc(&format!("h{i}"), "n", &["pods"]))
            .await
            .unwrap();
        t.fetch_add(60_000, Ordering::SeqCst);
        e.apply(Mutation::Housekeeping).await.unwrap();
    }
    let samples = e.samples("pods", start).unwrap();
    let used: Vec<u64> = samples.iter().map(|s| s.used).collect();
    assert_eq!(used, vec![1, 2, 3, 4, 5]);
    assert!(samples.iter().all(|s| s.usable == 254));
    e.shutdown();
}

#[tokio::test]
async fn housekeeping_records_node_usage_samples() {
    let dir = TempDir::new("node-samples");
    let (c, t) = clock();
    let e = open(&dir, &c);
    // /26 blocks (64 addresses); the pool's network address is reserved in the first.
    pool(&e, "pods", "10.85.0.0/24").await;
    let mut lim = PoolConfig::new("lim", "10.86.0.0/24".parse().unwrap());
    lim.reuse_delay_seconds = 0;
    lim.max_blocks_per_node = Some(2);
    e.apply(Mutation::CreatePool(lim)).await.unwrap();
    e.apply(alloc("other", "n2", &["pods"])).await.unwrap();
    let start = t.load(Ordering::SeqCst);
    for i in 0..5 {
        e.apply(alloc(&format!("h{i}"), "n1", &["pods", "lim"]))
            .await
            .unwrap();
        t.fetch_add(60_000, Ordering::SeqCst);
        e.apply(Mutation::Housekeeping).await.unwrap();
    }
    let used = |v: &[kipam_server::engine::Sample]| v.iter().map(|s| s.used).collect::<Vec<_>>();
    let n1 = e.node_samples("pods", "n1", start).unwrap();
    assert_eq!(used(&n1), vec![1, 2, 3, 4, 5]);
    // n2 came first: its block is 10.85.0.0/26, less the reserved network address.
    assert!(n1.iter().all(|s| s.usable == 64), "{n1:?}");
    let n2 = e.node_samples("pods", "n2", start).unwrap();
    assert_eq!(used(&n2), vec![1; 5]);
    assert!(n2.iter().all(|s| s.usable == 63), "{n2:?}");
    // With maxBlocksPerNode = 2: two blocks' addresses, less its block's reserved one.
    let lim = e.node_samples("lim", "n1", start).unwrap();
    assert_eq!(used(&lim), vec![1, 2, 3, 4, 5]);
    assert!(lim.iter().all(|s| s.usable == 127), "{lim:?}");
    assert!(e.node_samples("lim", "n2", start).unwrap().is_empty());
    assert!(e.node_samples("pods", "nobody", start).unwrap().is_empty());
    // `since` is inclusive.
    assert_eq!(e.node_samples("pods", "n1", n1[3].time).unwrap().len(), 2);
    e.shutdown();

    // Durable; past the retention (90 days) only the newest survive.
    let e = open(&dir, &c);
    assert_eq!(e.node_samples("pods", "n1", start).unwrap().len(), 5);
    // Samples were taken 1 to 5 minutes after `start`, and the clock is at 5: a run at
    // 90 days and 2.5 minutes after `start` expires the first two and takes one more.
    t.fetch_add(90 * 86_400_000 - 150_000, Ordering::SeqCst);
    e.apply(Mutation::Housekeeping).await.unwrap();
    let kept = e.node_samples("pods", "n1", 0).unwrap();
    assert_eq!(used(&kept), vec![3, 4, 5, 5], "{kept:?}");
    assert_eq!(e.node_samples("pods", "n2", 0).unwrap().len(), 4);
    assert_eq!(e.node_samples("lim", "n1", 0).unwrap().len(), 4);
    // Deleting the pool deletes its node samples, and no other pool's.
    e.apply(Mutation::DeletePool {
        name: "pods".into(),
        force: true,
    })
    .await
    .unwrap();
    assert!(e.node_samples("pods", "n1", 0).unwrap().is_empty());
    assert!(e.node_samples("pods", "n2", 0).unwrap().is_empty());
    assert_eq!(e.node_samples("lim", "n1", 0).unwrap().len(), 4);
    e.shutdown();
}

#[tokio::test]
async fn refused_mutations_change_nothing() {
    let dir = TempDir::new("refuse");
    let (c, _) = clock();
    let e = open(&dir, &c);
    pool(&e, "v4", "10.84.0.0/30").await;
    pool(&e, "v6", "fd00:84::/126").await;
    e.apply(alloc("a", "n", &["v4", "v6"])).await.unwrap();
    e.apply(alloc("b", "n", &["v4", "v6"])).await.unwrap();
    let err = e.apply(alloc("c", "n", &["v6", "v4"])).await.unwrap_err();
    assert!(err.to_string().contains("no ipv4 address left"), "{err}");
    let overlap = e
        .apply(Mutation::CreatePool(PoolConfig::new(
            "clash",
            "10.84.0.0/24".parse().unwrap(),
        )))
        .await
        .unwrap_err();
    assert!(overlap.to_string().contains("pool v4"), "{overlap}");
    e.shutdown();
    let e = open(&dir, &c);
    e.read(|i| {
        i.check().unwrap();
        assert_eq!(i.handles().count(), 2);
        assert!(i.pool("clash").is_none());
    });
    e.shutdown();
}

/// A tmpfs mount undone on drop.
struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[tokio::test]
async fn disk_full_fails_the_batch_and_loses_nothing() {
    if !is_root() {
        skip(
            "disk_full_fails_the_batch_and_loses_nothing",
            "needs root to mount a small tmpfs",
        );
        return;
    }
    let dir = TempDir::new("full");
    std::fs::create_dir_all(&dir.0).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&dir.0)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs");
    let _mount = Mount(dir.0.clone());
    let (c, _) = clock();
    let e = open(&dir, &c);
    pool(&e, "pods", "10.85.0.0/16").await;
    // Leave a little room (the tmpfs holds 1 MiB), then allocate until the disk is full.
    let filler = dir.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let mut written = 0;
        while written < 900 * 1024 && f.write_all(&[0u8; 4096]).is_ok() {
            written += 4096;
        }
    }
    let mut ok = BTreeMap::new();
    let mut failure = None;
    for i in 0..5000 {
        match e.apply(alloc(&format!("h{i}"), "n", &["pods"])).await {
            Ok(o) => {
                ok.insert(format!("h{i}"), addrs(o)[0]);
            }
            Err(err) => {
                failure = Some(err.to_string());
                break;
            }
        }
    }
    let failure = failure.expect("the disk filled up");
    assert!(failure.contains("full"), "a disk-full error, not {failure}");
    let in_memory: BTreeMap<String, IpAddr> = e.read(|i| {
        i.handles()
            .map(|h| (h.key.to_string(), h.addrs[0].addr))
            .collect()
    });
    assert_eq!(
        in_memory, ok,
        "the failed batch left nothing behind in memory"
    );
    std::fs::remove_file(&filler).unwrap();
    let after = addrs(e.apply(alloc("after", "n", &["pods"])).await.unwrap())[0];
    assert!(!ok.values().any(|a| *a == after));
    e.shutdown();
    let e = open(&dir, &c);
    let on_disk: BTreeMap<String, IpAddr> = e.read(|i| {
        i.check().unwrap();
        i.handles()
            .map(|h| (h.key.to_string(), h.addrs[0].addr))
            .collect()
    });
    ok.insert("after".into(), after);
    assert_eq!(
        on_disk, ok,
        "every answered allocation is on disk, nothing else"
    );
    e.shutdown();
}

/// The writer commits without an fsync and a thread of its own syncs the WAL before any
/// answer: when that sync fails, the batch it covered is answered with an error (never
/// as a success), kipamd reports not ready, and refuses mutations from then on, since
/// what reached the disk is unknown. Reads do not hang.
#[tokio::test]
async fn a_failed_wal_sync_fails_its_batch_and_stops_mutations() {
    let dir = TempDir::new("walsync");
    let (c, _) = clock();
    let e = open(&dir, &c);
    pool(&e, "pods", "10.90.0.0/24").await;
    let first = addrs(e.apply(alloc("h1", "n", &["pods"])).await.unwrap());
    assert!(e.ready());
    // The WAL disappears under kipamd (SQLite keeps writing to its open descriptor):
    // the sync thread cannot reach the file any more.
    std::fs::remove_file(dir.0.join("kipam.db-wal")).unwrap();
    let err = e
        .apply(alloc("h2", "n", &["pods"]))
        .await
        .expect_err("an allocation whose sync failed is not a success");
    assert!(err.to_string().contains("kipam.db-wal"), "{err}");
    assert!(!e.ready(), "not ready after a failed sync");
    let later = e
        .apply(alloc("h3", "n", &["pods"]))
        .await
        .expect_err("no mutation after a failed sync");
    let mut chain = later.to_string();
    let mut source = std::error::Error::source(&later);
    while let Some(cause) = source {
        chain.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(chain.contains("restart kipamd"), "{chain}");
    let held = e.read(|i| i.handle("h1").map(|h| h.addrs[0].addr));
    assert_eq!(held, Some(first[0]));
    e.shutdown();
}

fn store_keys(dir: &TempDir, prefix: &str) -> Vec<String> {
    use kipam_store::Store;
    let s = kipam_store::SqliteStore::open(&dir.0, &kipam_store::SqliteOptions::default()).unwrap();
    s.list(prefix).unwrap().into_iter().map(|r| r.key).collect()
}

/// The history index groups addresses by 64 and writes a group's entries 16 at a time;
/// the entries still in memory are rebuilt from the events after a restart, records of
/// the older one-row-per-event format are still read, and expiry removes both.
#[tokio::test]
async fn history_is_indexed_in_chunks_survives_restarts_and_expires() {
    let dir = TempDir::new("chunks");
    let (c, t) = clock();
    let e = open(&dir, &c);
    pool(&e, "pods", "10.82.0.0/28").await;
    // 20 allocate + release pairs: 40 events in one group of 64 addresses.
    let mut expected: BTreeMap<IpAddr, Vec<(EventKind, String)>> = BTreeMap::new();
    for i in 0..20 {
        let h = format!("h{i}");
        let a = addrs(e.apply(alloc(&h, "n1", &["pods"])).await.unwrap())[0];
        t.fetch_add(1_000, Ordering::SeqCst);
        e.apply(Mutation::Release { handle: h.clone() })
            .await
            .unwrap();
        t.fetch_add(1_000, Ordering::SeqCst);
        let log = expected.entry(a).or_default();
        log.push((EventKind::Allocate, h.clone()));
        log.push((EventKind::Release, h));
    }
    let seen = |e: &Engine| -> BTreeMap<IpAddr, Vec<(EventKind, String)>> {
        expected
            .keys()
            .map(|a| {
                let h = e.history(*a).unwrap();
                (*a, h.into_iter().map(|ev| (ev.kind, ev.handle)).collect())
            })
            .collect()
    };
    assert_eq!(seen(&e), expected);
    assert_eq!(
        store_keys(&dir, "hist/10.82.0.0/").len(),
        2,
        "40 entries: two chunks of 16 written, 8 waiting"
    );
    assert!(store_keys(&dir, "history/").is_empty(), "no row per event");
    e.shutdown();

    // An event recorded the old way, one `history/{addr}/{seq}` row with the event.
    {
        use kipam_store::{Expect, Op, Store};
        let s =
            kipam_store::SqliteStore::open(&dir.0, &kipam_store::SqliteOptions::default()).unwrap();
        let old = r#"{"seq":1000,"time":1700000000000,"kind":"allocate","pool":"pods","address":"10.82.0.50","handle":"old/one"}"#;
        let put = |key: &str| Op::Put {
            key: key.into(),
            value: old.as_bytes().to_vec(),
            expect: Expect::Any,
        };
        s.commit(&[
            put("events/00000000000000001000"),
            put("history/10.82.0.50/00000000000000001000"),
        ])
        .unwrap();
    }
    let e = open(&dir, &c);
    assert_eq!(
        seen(&e),
        expected,
        "the 8 waiting entries are rebuilt at start"
    );
    let old = e.history("10.82.0.50".parse().unwrap()).unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].handle, "old/one");

    // Past the retention (30 days) housekeeping deletes events, chunks and old rows.
    t.fetch_add(31 * 24 * 3600 * 1000, Ordering::SeqCst);
    e.apply(Mutation::Housekeeping).await.unwrap();
    for a in expected.keys() {
        assert!(e.history(*a).unwrap().is_empty(), "{a}");
    }
    assert!(store_keys(&dir, "events/").is_empty());
    assert!(store_keys(&dir, "hist/").is_empty());
    assert!(store_keys(&dir, "history/").is_empty());
    e.shutdown();
}

/// Handle records and block bodies are written by folds (`kipam_store::log`); when the
/// load stops, the writer folds on its own, so the records on disk catch up with the log
/// and other readers of the store can use it again.
#[tokio::test]
async fn an_idle_writer_folds_what_waits_in_the_log() {
    let dir = TempDir::new("idle-fold");
    let (c, _) = clock();
    let opts = EngineOptions {
        fold_every: std::time::Duration::from_millis(100),
        ..EngineOptions::default()
    };
    let e = Engine::open(&dir.0, opts, c.clone(), None).unwrap();
    pool(&e, "pods", "10.86.0.0/16").await;
    let mut held = BTreeMap::new();
    for i in 0..300 {
        let h = format!("net/idle-{i}/eth0");
        let got = addrs(
            e.apply(alloc(&h, &format!("n{}", i % 3), &["pods"]))
                .await
                .unwrap(),
        );
        held.insert(h, got[0]);
    }
    for i in (0..300).step_by(2) {
        let h = format!("net/idle-{i}/eth0");
        e.apply(Mutation::Release { handle: h.clone() })
            .await
            .unwrap();
        held.remove(&h);
    }
    // No more requests: the writer writes the fold by itself.
    let reader = kipam_store::IpamStore::new(
        kipam_store::SqliteStore::open(&dir.0, &kipam_store::SqliteOptions::default()).unwrap(),
    );
    let started = std::time::Instant::now();
    while e.stats().unfolded_events.load(Ordering::Relaxed) > 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the log's tail never emptied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for i in 0..300 {
        let h = format!("net/idle-{i}/eth0");
        let on_disk = reader.handle(&h).unwrap();
        match held.get(&h) {
            Some(a) => assert_eq!(
                on_disk.map(|r| r.addrs[0].addr),
                Some(*a),
                "{h} on disk after the fold"
            ),
            None => assert!(on_disk.is_none(), "{h} was released: {on_disk:?}"),
        }
    }
    let report = reader.check_integrity(c()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.handles as usize, held.len());
}

fn claims_on_disk(dir: &TempDir, pool: &str) -> Option<kipam_store::codec::ClaimsRecord> {
    use kipam_store::Store;
    let s = kipam_store::SqliteStore::open(&dir.0, &kipam_store::SqliteOptions::default()).unwrap();
    s.get(&format!("claims/{pool}"))
        .unwrap()
        .map(|r| kipam_store::codec::decode_claims(&r.value).unwrap())
}

/// Every claimed block with its node, as a comparable set.
fn claimed(ipam: &kipam_core::Ipam, pool: &str) -> BTreeSet<(u128, String)> {
    ipam.pool(pool)
        .map(|p| {
            p.block_claims()
                .map(|(b, n)| (b.base, n.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Blocks claimed while the pool grows wait for the fold (the claims index is one record
/// of all the pool's blocks); meanwhile a load — as after a crash — claims them from the
/// log's tail for the right nodes. A start writes every claims index with the seq it is
/// complete up to, replacing a record of the older format.
#[tokio::test]
async fn claims_wait_for_the_fold_and_a_load_claims_them_from_the_log() {
    let dir = TempDir::new("claims-fold");
    let (c, _) = clock();
    let opts = EngineOptions {
        fold_every: std::time::Duration::from_secs(3600),
        ..EngineOptions::default()
    };
    let e = Engine::open(&dir.0, opts.clone(), c.clone(), None).unwrap();
    let mut config = PoolConfig::new("pods", "10.87.0.0/24".parse().unwrap());
    config.block_prefix_length = Some(28);
    e.apply(Mutation::CreatePool(config)).await.unwrap();
    for i in 0..40 {
        e.apply(alloc(
            &format!("net/claim-{i}/eth0"),
            &format!("n{}", i % 3),
            &["pods"],
        ))
        .await
        .unwrap();
    }
    let held = e.read(|ipam| claimed(ipam, "pods"));
    assert!(held.len() >= 3, "each node claimed a block: {held:?}");
    let on_disk = claims_on_disk(&dir, "pods").map_or(0, |r| r.blocks.values().map(Vec::len).sum());
    assert!(
        on_disk < held.len(),
        "the claims wait for the fold: {on_disk} on disk, {} held",
        held.len()
    );
    let reader = kipam_store::IpamStore::new(
        kipam_store::SqliteStore::open(&dir.0, &kipam_store::SqliteOptions::default()).unwrap(),
    );
    let loaded = reader.load_all(c()).unwrap();
    assert_eq!(
        claimed(&loaded, "pods"),
        held,
        "a load claims them from the log"
    );
    let report = reader.check_integrity(c()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    e.shutdown();

    // A record of the older format (no seq; written with every change) is replaced at start.
    let record = claims_on_disk(&dir, "pods").unwrap();
    assert!(record.seq.is_some());
    {
        use kipam_store::Store;
        let mut old = kipam_store::codec::encode_claims(&record);
        let seq_len = old[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
        old.drain(..=seq_len);
        old.insert(0, 2);
        let s =
            kipam_store::SqliteStore::open(&dir.0, &kipam_store::SqliteOptions::default()).unwrap();
        s.commit(&[kipam_store::Op::Put {
            key: "claims/pods".into(),
            value: old,
            expect: kipam_store::Expect::Any,
        }])
        .unwrap();
    }
    assert_eq!(claims_on_disk(&dir, "pods").unwrap().seq, None);
    let e = Engine::open(&dir.0, opts, c.clone(), None).unwrap();
    let record = claims_on_disk(&dir, "pods").unwrap();
    assert!(
        record.seq.is_some(),
        "rewritten in the current format at start"
    );
    assert_eq!(e.read(|ipam| claimed(ipam, "pods")), held);
    e.shutdown();
}
