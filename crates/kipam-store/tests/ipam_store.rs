//! The IPAM layer over every backend: operations persist, partial loading sees the same
//! state as a full load, concurrent writers never hand out an address twice.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use common::TempDir;
use kipam_core::{AllocRequest, Error, Family, LeaseWant, ObjectKind, PoolConfig, ScopeNetwork};
use kipam_store::{IpamError, IpamStore, MemStore, SqliteOptions, SqliteStore, Store};

fn sqlite(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(
        dir.path(),
        &SqliteOptions {
            create_dir: true,
            ..SqliteOptions::default()
        },
    )
    .expect("open sqlite store")
}

fn pool(name: &str, cidr: &str) -> PoolConfig {
    let mut c = PoolConfig::new(name, cidr.parse().expect("test CIDR"));
    c.reuse_delay_seconds = 0;
    c
}

fn req(handle: &str, node: &str, pools: &[&str]) -> AllocRequest {
    AllocRequest::from_pools(handle, node, pools)
}

fn assert_ok<S: Store>(ipam: &IpamStore<S>, now: u64) {
    let report = ipam.check_integrity(now).expect("integrity check runs");
    assert!(report.ok(), "integrity problems: {:?}", report.problems);
}

/// Runs `f` against a MemStore and a SqliteStore.
fn each_backend(f: impl Fn(&dyn Fn() -> Box<dyn AnyIpam>)) {
    f(&|| Box::new(IpamStore::new(MemStore::new())));
    let dir = Arc::new(TempDir::new("ipam"));
    f(&move || Box::new(IpamStore::new(sqlite(&dir))));
}

/// Object-safe view of `IpamStore<S>` for the backend loop.
trait AnyIpam {
    fn inner_sqlite(&self) -> Option<&IpamStore<SqliteStore>>;
    fn inner_mem(&self) -> Option<&IpamStore<MemStore>>;
}
impl AnyIpam for IpamStore<MemStore> {
    fn inner_sqlite(&self) -> Option<&IpamStore<SqliteStore>> {
        None
    }
    fn inner_mem(&self) -> Option<&IpamStore<MemStore>> {
        Some(self)
    }
}
impl AnyIpam for IpamStore<SqliteStore> {
    fn inner_sqlite(&self) -> Option<&IpamStore<SqliteStore>> {
        Some(self)
    }
    fn inner_mem(&self) -> Option<&IpamStore<MemStore>> {
        None
    }
}

macro_rules! with_store {
    ($boxed:expr, |$s:ident| $body:block) => {
        if let Some($s) = $boxed.inner_mem() {
            $body
        } else if let Some($s) = $boxed.inner_sqlite() {
            $body
        }
    };
}

#[test]
fn allocations_persist_and_release() {
    each_backend(|open| {
        let b = open();
        with_store!(b, |s| {
            s.create_pool(&pool("pods", "10.20.0.0/24"), 0)
                .expect("create");
            let got = s
                .allocate(&req("h1", "n1", &["pods"]), 1)
                .expect("allocate");
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].addr.to_string(), "10.20.0.1");
            let again = s
                .allocate(&req("h1", "n1", &["pods"]), 2)
                .expect("idempotent");
            assert_eq!(again, got);
            let h = s.handle("h1").expect("read").expect("handle stored");
            assert_eq!(h.addrs, got);
            assert_ok(s, 3);
            assert_eq!(s.release("h1", 4).expect("release"), got);
            assert!(s.handle("h1").expect("read").is_none());
            assert_eq!(s.release("h1", 5).expect("release twice"), vec![]);
            assert_ok(s, 6);
        });
    });
}

#[test]
fn partial_loads_agree_with_full_load() {
    each_backend(|open| {
        let b = open();
        with_store!(b, |s| {
            let mut c = pool("big", "10.30.0.0/20");
            c.reuse_delay_seconds = 5;
            s.create_pool(&c, 0).expect("create");
            let mut held: BTreeMap<String, IpAddr> = BTreeMap::new();
            let mut now = 0;
            for i in 0..600u32 {
                now += 100;
                let node = format!("n{}", i % 3);
                let h = format!("h{i}");
                let got = s
                    .allocate(&req(&h, &node, &["big"]), now)
                    .expect("allocate");
                held.insert(h, got[0].addr);
                if i % 4 == 0 {
                    let victim = format!("h{}", i / 2);
                    if held.remove(&victim).is_some() {
                        s.release(&victim, now).expect("release");
                    }
                }
            }
            let all = s.load_all(now).expect("load all");
            let from_engine: BTreeMap<String, IpAddr> = all
                .handles()
                .map(|h| (h.key.to_string(), h.addrs[0].addr))
                .collect();
            assert_eq!(from_engine, held);
            let distinct: BTreeSet<IpAddr> = held.values().copied().collect();
            assert_eq!(distinct.len(), held.len(), "no address held twice");
            assert_ok(s, now);
        });
    });
}

#[test]
fn dual_stack_is_all_or_nothing_on_disk() {
    each_backend(|open| {
        let b = open();
        with_store!(b, |s| {
            s.create_pool(&pool("v4", "10.40.0.0/24"), 0)
                .expect("create v4");
            s.create_pool(&pool("v6", "fd00:40::/126"), 0)
                .expect("create v6");
            // The /126 has 3 usable addresses (the network address is reserved).
            for i in 0..3 {
                s.allocate(&req(&format!("d{i}"), "n1", &["v4", "v6"]), 1)
                    .expect("dual");
            }
            let err = s
                .allocate(&req("d3", "n1", &["v4", "v6"]), 2)
                .expect_err("v6 is full");
            assert!(
                matches!(
                    err,
                    IpamError::Engine(Error::PoolExhausted {
                        family: Family::Ipv6,
                        ..
                    })
                ),
                "{err}"
            );
            assert!(s.handle("d3").expect("read").is_none());
            let usage: BTreeMap<String, _> = s.usage(3).expect("usage").into_iter().collect();
            assert_eq!(usage["v4"].held, 3, "the failed request left nothing in v4");
            assert_ok(s, 3);
        });
    });
}

#[test]
fn pools_leases_and_overlaps_persist() {
    each_backend(|open| {
        let b = open();
        with_store!(b, |s| {
            let mut nodes = pool("node-cidrs", "10.64.0.0/16");
            nodes.purpose = kipam_core::Purpose::NodeCidr;
            s.create_pool(&nodes, 0).expect("create");
            let err = s
                .create_pool(&pool("clash", "10.64.128.0/17"), 0)
                .expect_err("overlap");
            assert!(err.to_string().contains("pool node-cidrs"), "{err}");
            let l1 = s
                .lease(
                    "node-cidrs",
                    LeaseWant::Length(24),
                    "node/w1",
                    &BTreeMap::new(),
                    1,
                )
                .expect("lease");
            let l2 = s
                .lease(
                    "node-cidrs",
                    LeaseWant::Length(24),
                    "node/w2",
                    &BTreeMap::new(),
                    1,
                )
                .expect("lease");
            assert_ne!(l1.prefix, l2.prefix);
            let office = ScopeNetwork {
                name: "office".into(),
                cidr: "10.64.2.0/23".parse().expect("cidr"),
                scope: "default".into(),
                description: String::new(),
            };
            s.add_scope_network(ObjectKind::External, &office, 2)
                .expect("external");
            let l3 = s
                .lease(
                    "node-cidrs",
                    LeaseWant::Length(24),
                    "node/w3",
                    &BTreeMap::new(),
                    3,
                )
                .expect("lease");
            assert_eq!(
                l3.prefix.to_string(),
                "10.64.4.0/24",
                "leases avoid the external network"
            );
            let overlaps = s.overlaps(4).expect("overlaps");
            assert_eq!(overlaps.len(), 1, "{overlaps:?}");
            assert_eq!(overlaps[0].b.name, "office");
            assert_eq!(
                s.release_lease("node-cidrs", l1.prefix, 5)
                    .expect("release")
                    .map(|l| l.owner),
                Some("node/w1".into())
            );
            assert_ok(s, 6);
        });
    });
}

#[test]
fn pool_names_with_slashes_keep_prefixes_exact() {
    let s = IpamStore::new(MemStore::new());
    s.create_pool(&pool("net:10.50.0.0/24", "10.50.0.0/24"), 0)
        .expect("create a");
    let mut other = pool("net:10.50.0.0/24/x", "10.51.0.0/24");
    other.scope = "other".into();
    s.create_pool(&other, 0).expect("create b");
    s.allocate(&req("net/c1/eth0", "n", &["net:10.50.0.0/24"]), 1)
        .expect("alloc a");
    s.allocate(&req("net/c2/eth0", "n", &["net:10.50.0.0/24/x"]), 1)
        .expect("alloc b");
    s.delete_pool("net:10.50.0.0/24/x", true, 2)
        .expect("delete b");
    assert_eq!(s.handles_with_prefix("net/").expect("list").len(), 1);
    assert_ok(&s, 3);
}

#[test]
fn ensure_pool_updates_ranges_in_place() {
    let s = IpamStore::new(MemStore::new());
    let mut c = pool("net:10.60.0.0/24", "10.60.0.0/24");
    s.ensure_pool(&c, 0).expect("create");
    let rev = s.store().current_revision().expect("rev");
    s.ensure_pool(&c, 1).expect("same again");
    assert_eq!(
        s.store().current_revision().expect("rev"),
        rev,
        "an equal config writes nothing"
    );
    let got = s
        .allocate(&req("a", "n", &["net:10.60.0.0/24"]), 2)
        .expect("alloc");
    assert_eq!(got[0].addr.to_string(), "10.60.0.1");
    c.exclusions = vec![
        kipam_core::AddrRange::new(
            "10.60.0.0".parse().expect("ip"),
            "10.60.0.9".parse().expect("ip"),
        )
        .expect("range"),
    ];
    s.ensure_pool(&c, 3).expect("update");
    let got = s
        .allocate(&req("b", "n", &["net:10.60.0.0/24"]), 4)
        .expect("alloc");
    assert_eq!(
        got[0].addr.to_string(),
        "10.60.0.10",
        "new exclusions apply to an existing block"
    );
    assert_ok(&s, 5);
}

#[test]
fn concurrent_sqlite_writers_never_double_allocate() {
    let dir = TempDir::new("ipam-conc");
    let s = IpamStore::new(sqlite(&dir));
    s.create_pool(&pool("shared", "10.70.0.0/22"), 0)
        .expect("create");
    let mut threads = Vec::new();
    for t in 0..8 {
        let path = dir.path().to_path_buf();
        threads.push(std::thread::spawn(move || {
            let store = SqliteStore::open(&path, &SqliteOptions::default()).expect("open");
            let s = IpamStore::new(store);
            let mut mine = Vec::new();
            for i in 0..40 {
                let h = format!("t{t}-{i}");
                let got = s
                    .allocate(&req(&h, &format!("n{}", t % 2), &["shared"]), 10)
                    .expect("allocate");
                mine.push(got[0].addr);
                if i % 5 == 4 {
                    s.release(&h, 11).expect("release");
                    mine.pop();
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().expect("thread"));
    }
    let distinct: BTreeSet<IpAddr> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "an address was handed out twice");
    let report = s.check_integrity(12).expect("integrity");
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.held as usize, all.len());
}

/// Handle records keep their JSON form now that the engine shares names as `Arc<str>`:
/// records written before read back, and records written now are byte-identical.
#[test]
fn handle_record_json_is_unchanged() {
    let json = r#"{"key":"net/abc/eth0","node":"node-1","attrs":{"pod":"default/web"},"addrs":[{"pool":"v4","addr":"10.0.0.5"},{"pool":"v6","addr":"fd00::5"}],"created":1700000000000}"#;
    let h: kipam_core::Handle = serde_json::from_str(json).expect("old record parses");
    assert_eq!(&*h.key, "net/abc/eth0");
    assert_eq!(&*h.node, "node-1");
    assert_eq!(&*h.addrs[1].pool, "v6");
    assert_eq!(serde_json::to_string(&h).expect("serialize"), json);
    // A record the engine made (names shared with the engine) serializes the same way.
    let mut ipam = kipam_core::Ipam::new();
    ipam.create_pool(pool("v4", "10.0.0.0/24")).expect("pool");
    let got = ipam
        .allocate(&req("net/abc/eth0", "node-1", &["v4"]), 1_700_000_000_000)
        .expect("allocate");
    let made = ipam.handle("net/abc/eth0").expect("record");
    let text = serde_json::to_string(made).expect("serialize");
    assert_eq!(
        text,
        format!(
            r#"{{"key":"net/abc/eth0","node":"node-1","attrs":{{}},"addrs":[{{"pool":"v4","addr":"{}"}}],"created":1700000000000}}"#,
            got[0].addr
        )
    );
    let back: kipam_core::Handle = serde_json::from_str(&text).expect("round trip");
    assert_eq!(&back, made);
}
