//! Crash consistency of kipamd with real processes: 64 concurrent clients allocate and
//! release while the daemon is killed with SIGKILL and restarted, again and again.
//!
//! What it proves (issue 4, "Durability and concurrency"): kipamd answers a mutation only
//! after its group commit is durable, so after any number of kills
//!
//! - every allocation a client got a success for, and did not release, is still there with
//!   the same address (checked through the API after the final restart);
//! - a release a client got a success for stays released;
//! - no address is held twice, and nothing is held that no client asked for;
//! - the history of every address held at the end ends with its holder's allocation;
//! - the store passes SQLite's integrity check and kipam's own
//!   (`IpamStore::check_integrity`: every address in one state, handles agree with blocks,
//!   summaries agree with bodies), opened after the last kill.
//!
//! Clients behave as real ones should: half over TCP, half over the unix socket; a request
//! whose answer is lost (connection refused or reset, 503 while kipamd loads, 504) is
//! retried — allocate and release are idempotent per handle — until a definite answer,
//! with a bounded wait. An operation still unanswered when its wait runs out is recorded
//! as uncertain: the final check then accepts either outcome for that handle.
//!
//! Kills come at random moments: mostly while the clients are busy, sometimes right after
//! the process starts (before or while it loads). The seed is printed; set
//! `KIPAM_CRASH_SEED` to replay the same kill schedule and client choices (thread
//! interleaving is not replayable). `KIPAM_CRASH_ROUNDS` changes the number of kills.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::TempDir;
use kipam_api::allocations::{AllocateRequest, AllocationQuery};
use kipam_api::client::{Client, ClientError, Endpoint};
use kipam_store::{IpamStore, SqliteOptions, SqliteStore};

const CLIENTS: usize = 64;
const DEFAULT_ROUNDS: u32 = 30;
const POOL: &str = "crash-pods";
const POOL_CIDR: &str = "10.96.0.0/14";
/// Handles a client holds at most before it releases one.
const HOLD_MAX: usize = 24;
/// How long one operation may go unanswered (kipamd down, loading) before the client
/// gives up on it and records it as uncertain.
const OP_WAIT: Duration = Duration::from_secs(60);

/// A small xorshift generator (the seed is printed for replay).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// Where the current kipamd listens; clients read it before every attempt.
struct Target {
    tcp: RwLock<String>,
    socket: PathBuf,
}

/// A kipamd process and what it logged.
struct Proc {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// Starts kipamd on `listen`; returns it with the TCP address it bound, or None if it
/// exited before listening (for instance the port was taken meanwhile).
fn spawn(dir: &Path, listen: &str) -> (Proc, Option<String>) {
    let (child, log, addr) = common::spawn_kipamd(dir, listen, &[]);
    (Proc { child, log }, addr)
}

/// Starts kipamd, on the previous port when it can be had again.
fn start(dir: &Path, target: &Target) -> Proc {
    let prev = target.tcp.read().unwrap().clone();
    for listen in [prev.as_str(), "127.0.0.1:0"] {
        if listen.is_empty() {
            continue;
        }
        let (mut p, addr) = spawn(dir, listen);
        match addr {
            Some(a) => {
                *target.tcp.write().unwrap() = a;
                return p;
            }
            None => {
                let _ = p.child.kill();
                let _ = p.child.wait();
                eprintln!("kipamd did not listen on {listen}: {:?}", p.log());
            }
        }
    }
    panic!("kipamd does not start");
}

fn wait_ready(p: &Proc, target: &Target) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = Client::new(Endpoint::Tcp(target.tcp.read().unwrap().clone()))
            .with_timeout(Duration::from_secs(5));
        if c.ready().is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "kipamd not ready: {:?}", p.log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill(p: &mut Proc) {
    // Child::kill is SIGKILL on Unix.
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}

/// Whether the answer to a request may have been lost to a kill (retry it) rather than
/// being a definite refusal.
fn answer_lost(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable { .. } | ClientError::Io { .. } => true,
        ClientError::Status { status, .. } => matches!(status, 503 | 504),
        _ => false,
    }
}

/// What one client saw.
#[derive(Default)]
struct Ledger {
    /// Allocations answered with success and not released (successfully) since.
    held: BTreeMap<String, IpAddr>,
    /// Operations never answered (their wait ran out): handle -> the address it had, if
    /// known. Either outcome is accepted for these.
    uncertain: BTreeMap<String, Option<IpAddr>>,
    allocated: u64,
    released: u64,
    /// Requests retried because their answer was lost.
    retried: u64,
    /// Definite refusals (a bug in this workload: the pool is never exhausted).
    refused: Vec<String>,
}

/// Sends `op` until it gets a definite answer or [`OP_WAIT`] runs out (None).
fn until_answered<T>(
    target: &Target,
    tcp: bool,
    ledger: &mut Ledger,
    op: impl Fn(&Client) -> Result<T, ClientError>,
) -> Option<Result<T, ClientError>> {
    let deadline = Instant::now() + OP_WAIT;
    let mut first = true;
    loop {
        let endpoint = if tcp {
            Endpoint::Tcp(target.tcp.read().unwrap().clone())
        } else {
            Endpoint::Unix(target.socket.clone())
        };
        let client = Client::new(endpoint).with_timeout(Duration::from_secs(20));
        if !first {
            ledger.retried += 1;
        }
        first = false;
        match op(&client) {
            Err(e) if answer_lost(&e) => {
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return Some(other),
        }
    }
}

fn client_loop(
    id: usize,
    seed: u64,
    target: &Target,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> Ledger {
    let mut rng = Rng::new(seed);
    let mut ledger = Ledger::default();
    let tcp = id.is_multiple_of(2);
    let node = format!("crash-node-{}", id % 8);
    let mut next = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let release =
            !ledger.held.is_empty() && (ledger.held.len() >= HOLD_MAX || rng.range(0, 100) < 40);
        if release {
            let i = rng.range(0, ledger.held.len() as u64) as usize;
            let (handle, addr) = ledger
                .held
                .iter()
                .nth(i)
                .map(|(h, a)| (h.clone(), *a))
                .unwrap();
            match until_answered(target, tcp, &mut ledger, |c| c.release(&handle)) {
                Some(Ok(r)) => {
                    // A retried release may find it already released by the lost try.
                    assert!(
                        r.released.is_empty() || r.released.iter().all(|a| a.address == addr),
                        "release of {handle} returned {:?}, it held {addr}",
                        r.released
                    );
                    ledger.held.remove(&handle);
                    ledger.released += 1;
                }
                Some(Err(e)) => ledger.refused.push(format!("release {handle}: {e}")),
                None => {
                    ledger.held.remove(&handle);
                    ledger.uncertain.insert(handle, Some(addr));
                }
            }
        } else {
            let handle = format!("crash/c{id}/{next}");
            next += 1;
            let req = AllocateRequest::from_pools(&handle, &node, &[POOL]);
            match until_answered(target, tcp, &mut ledger, |c| c.allocate(&req)) {
                Some(Ok(v)) => {
                    assert_eq!(v.addresses.len(), 1, "{v:?}");
                    ledger.held.insert(handle, v.addresses[0].address);
                    ledger.allocated += 1;
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(e)) => ledger.refused.push(format!("allocate {handle}: {e}")),
                None => {
                    ledger.uncertain.insert(handle, None);
                }
            }
        }
    }
    ledger
}

fn seed() -> u64 {
    match std::env::var("KIPAM_CRASH_SEED") {
        Ok(s) => s.parse().expect("KIPAM_CRASH_SEED must be a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Every allocation kipamd lists, through the paginated API.
fn list_all(c: &Client) -> BTreeMap<String, Vec<IpAddr>> {
    let mut out = BTreeMap::new();
    let mut q = AllocationQuery {
        limit: Some(5000),
        ..AllocationQuery::default()
    };
    loop {
        let page = c.list_allocations(&q).unwrap();
        for v in page.items {
            let addrs = v.addresses.iter().map(|a| a.address).collect();
            assert!(
                out.insert(v.handle.clone(), addrs).is_none(),
                "{} twice",
                v.handle
            );
        }
        match page.continue_token {
            Some(t) => q.continue_token = Some(t),
            None => return out,
        }
    }
}

#[test]
fn kipamd_survives_sigkill_under_64_concurrent_clients() {
    let seed = seed();
    let rounds: u32 = std::env::var("KIPAM_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    println!("crash test seed {seed} (replay: KIPAM_CRASH_SEED={seed}), {rounds} kills");
    eprintln!("crash test seed {seed} (replay: KIPAM_CRASH_SEED={seed}), {rounds} kills");
    let mut rng = Rng::new(seed);
    let started = Instant::now();

    let dir = TempDir::new("crash");
    let target = Arc::new(Target {
        tcp: RwLock::new(String::new()),
        socket: dir.path().join("kipamd.sock"),
    });
    let mut proc_ = start(dir.path(), &target);
    wait_ready(&proc_, &target);
    let admin = Client::new(Endpoint::Tcp(target.tcp.read().unwrap().clone()));
    admin.create_pool(&common::pool(POOL, POOL_CIDR)).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (target, stop, progress) = (target.clone(), stop.clone(), progress.clone());
            let seed = rng.next();
            std::thread::Builder::new()
                .name(format!("client-{id}"))
                .spawn(move || client_loop(id, seed, &target, &stop, &progress))
                .unwrap()
        })
        .collect();

    let mut per_round = Vec::new();
    let mut early_kills = 0;
    for round in 0..rounds {
        let before = progress.load(Ordering::Relaxed);
        // Every fifth kill or so comes right after the start, before or while the store
        // loads; the others while the clients are busy.
        if round > 0 && rng.range(0, 5) == 0 {
            std::thread::sleep(Duration::from_millis(rng.range(0, 40)));
            early_kills += 1;
        } else {
            wait_ready(&proc_, &target);
            std::thread::sleep(Duration::from_millis(rng.range(200, 1200)));
        }
        kill(&mut proc_);
        per_round.push(progress.load(Ordering::Relaxed) - before);
        proc_ = start(dir.path(), &target);
    }
    wait_ready(&proc_, &target);
    // A last stretch of work on the final process, then the clients finish what they
    // have in flight and stop.
    let before = progress.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let ledgers: Vec<Ledger> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    per_round.push(progress.load(Ordering::Relaxed) - before);
    println!("successful allocations between kills: {per_round:?} ({early_kills} early kills)");

    let refused: Vec<&String> = ledgers.iter().flat_map(|l| &l.refused).collect();
    assert!(refused.is_empty(), "definite refusals: {refused:?}");
    let allocated: u64 = ledgers.iter().map(|l| l.allocated).sum();
    let released: u64 = ledgers.iter().map(|l| l.released).sum();
    let retried: u64 = ledgers.iter().map(|l| l.retried).sum();
    let busy_rounds = per_round.iter().filter(|n| **n > 0).count();
    assert!(
        busy_rounds as u32 >= rounds / 2,
        "too few rounds made progress: {per_round:?}"
    );

    // The final check, through the API of the restarted daemon.
    let c = Client::new(Endpoint::Tcp(target.tcp.read().unwrap().clone()));
    let listed = list_all(&c);
    let mut expected: BTreeMap<&str, IpAddr> = BTreeMap::new();
    let mut uncertain: BTreeMap<&str, Option<IpAddr>> = BTreeMap::new();
    for l in &ledgers {
        for (h, a) in &l.held {
            expected.insert(h, *a);
        }
        for (h, a) in &l.uncertain {
            uncertain.insert(h, *a);
        }
    }
    for (h, addr) in &expected {
        let got = c.get_allocation(h).unwrap_or_else(|e| {
            panic!("{h} was allocated ({addr}) and never released, but kipamd says {e}")
        });
        let got: Vec<IpAddr> = got.addresses.iter().map(|a| a.address).collect();
        assert_eq!(
            got,
            vec![*addr],
            "{h} holds other addresses than it was given"
        );
        assert_eq!(listed.get(*h), Some(&got), "{h} missing from the list");
    }
    let mut owners: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for (h, addrs) in &listed {
        assert!(
            expected.contains_key(h.as_str()) || uncertain.contains_key(h.as_str()),
            "{h} is held ({addrs:?}) but no client holds it: a release that succeeded was lost, or an allocation nobody asked for"
        );
        if let Some(Some(a)) = uncertain.get(h.as_str()) {
            assert_eq!(addrs, &vec![*a], "{h} changed address");
        }
        for a in addrs {
            if let Some(other) = owners.insert(*a, h) {
                panic!("{a} is held by both {other} and {h}");
            }
        }
    }
    // History survived the kills too: its index is partly rebuilt from the events at
    // every start (crates/kipam-server/src/history.rs). Each address held at the end was
    // last allocated to its holder.
    for (h, addrs) in &listed {
        for a in addrs {
            let history = c.address(*a, None).unwrap().history;
            let last = history.last().map(|e| (e.kind.as_str(), e.handle.as_str()));
            assert_eq!(
                last,
                Some(("allocate", h.as_str())),
                "history of {a}, held by {h}: {history:?}"
            );
        }
    }
    let usage = c.get_pool(POOL).unwrap().usage;
    assert_eq!(
        usage.held as usize,
        listed.len(),
        "pool usage disagrees: {usage:?}"
    );

    // Integrity of the store itself, opened after one more SIGKILL.
    kill(&mut proc_);
    let store = SqliteStore::open(dir.path(), &SqliteOptions::default()).unwrap();
    store.check_integrity().unwrap();
    let report = IpamStore::new(store).check_integrity(now_millis()).unwrap();
    assert!(report.ok(), "integrity: {:?}", report.problems);
    assert_eq!(report.handles as usize, listed.len(), "{report:?}");
    assert_eq!(report.held as usize, listed.len(), "{report:?}");

    println!(
        "{rounds} SIGKILLs ({early_kills} during start-up), {allocated} allocations and {released} releases answered, \
         {retried} requests retried after a lost answer; {} allocations checked present with their address, \
         {} uncertain, {} held at the end, no address held twice; integrity ok; took {:.1?}",
        expected.len(),
        uncertain.len(),
        listed.len(),
        started.elapsed()
    );
}
