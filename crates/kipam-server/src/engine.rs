//! The engine: kipamd's one in-memory [`Ipam`] and the writer that makes it durable.
//!
//! At start the whole state is loaded from the store. Every mutation goes through one
//! writer thread: it takes a request, then drains whatever else is queued (up to
//! [`EngineOptions::batch_max`]), applies them one by one to the in-memory engine, and
//! writes what they changed — their history events, and the records that cannot wait —
//! in **one** store transaction (group commit). Handle records, block bodies, node
//! summaries and claims that only grew are written by folds instead, a slice per commit,
//! once a second
//! ([`FOLD_EVERY`]); until then the events are their record (`kipam_store::log`). If the
//! commit fails, the in-memory state is reloaded from the store (which still holds the
//! state before the batch: its last fold plus the events after it) and every request of
//! the batch gets the store's error: nothing is half-written.
//!
//! Three threads share the work of making a batch durable, so that the disk and the CPU
//! are busy at once:
//! - `kipam-writer` applies and commits; its connection does not fsync at commit
//!   (`SqliteStore::with_deferred_sync`), so it goes on with the next batch at once.
//! - `kipam-sync` fsyncs the WAL (one `fdatasync` covers every batch committed since the
//!   last) and only then answers the requests of those batches. Nothing is answered that
//!   is not on disk. A failed sync answers its batches with the error and stops all
//!   further mutations (not ready; restart kipamd), since what reached the disk is
//!   unknown.
//! - `kipam-checkpoint` copies the WAL into the main file beside the writer, at most
//!   every [`CHECKPOINT_EVERY`], so no commit waits for a checkpoint.
//!
//! Reads ([`Engine::read`], history, samples) may run while a batch they see is still
//! being synced: each waits until the last batch applied when it read is durable (at
//! most one sync, well under a millisecond to a few), so a reader never answers with
//! state that is not on disk.
//!
//! History lives in the store: an event per allocate / release / lease / reclaim, under
//! `events/{seq}`, kept for the retention period, and an index from addresses to their
//! events in chunks of 64 addresses (the `history` module).
//! Usage samples per pool (`samples/{pool}/{time}`) and per node of a pool
//! (`node-samples/{pool}/{node}/{time}`, the node's blocks) feed the exhaustion forecast.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use kipam_core::{
    AllocRequest, Error as CoreError, HeldAddr, Ipam, Lease, LeaseWant, Millis, ObjectKind,
    PoolConfig, ScopeNetwork,
};
use kipam_store::ipam::write_changes;
use kipam_store::log;
use kipam_store::{
    Checkpoint, IpamError, IpamStore, SqliteOptions, SqliteStore, Store, StoreError, Txn,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::history;

/// A source of time (milliseconds since the Unix epoch); injected so tests control it.
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

/// Tuning of the engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Most mutations committed in one transaction.
    pub batch_max: usize,
    /// How long history events are kept.
    pub event_retention: Duration,
    /// How long usage samples are kept.
    pub sample_retention: Duration,
    /// Default grace period before a GC report's stale attachments are reclaimed.
    pub gc_grace: Duration,
    /// How long `open` waits for the store's lock.
    pub busy_timeout: Duration,
    /// How often the writer starts a fold of the records changed since the last one
    /// (`kipam_store::log`); also how long, about, changes stay only in the event log.
    pub fold_every: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            batch_max: 512,
            event_retention: Duration::from_secs(30 * 24 * 3600),
            sample_retention: Duration::from_secs(90 * 24 * 3600),
            gc_grace: Duration::from_secs(60),
            busy_timeout: Duration::from_secs(10),
            fold_every: FOLD_EVERY,
        }
    }
}

/// Something that changes state. Each is atomic on its own.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Create a pool.
    CreatePool(PoolConfig),
    /// Change a pool's mutable settings.
    UpdatePool(PoolConfig),
    /// Delete a pool (`force`: even while it holds addresses).
    DeletePool {
        /// Pool name.
        name: String,
        /// Release what it holds.
        force: bool,
    },
    /// Allocate for a handle.
    Allocate(AllocRequest),
    /// Release everything a handle holds.
    Release {
        /// The handle.
        handle: String,
    },
    /// Lease a prefix.
    Lease {
        /// Pool name.
        pool: String,
        /// Which prefix.
        want: LeaseWant,
        /// Owner.
        owner: String,
        /// Attributes.
        attrs: BTreeMap<String, String>,
    },
    /// End a lease.
    ReleaseLease {
        /// Pool name.
        pool: String,
        /// The prefix.
        prefix: IpNet,
    },
    /// Register an external network.
    AddExternal(ScopeNetwork),
    /// Remove an external network.
    RemoveExternal {
        /// Its name.
        name: String,
    },
    /// A node or network reports the attachments it still has; the others it owns are
    /// reclaimed after the grace period unless a later report lists them again.
    GcReport(GcReport),
    /// Take a usage sample of every pool and drop expired history (background job).
    Housekeeping,
}

/// A GC report: who reports, what is still valid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// Handles allocated for this node belong to the reporter.
    pub node: Option<String>,
    /// Handles whose key starts with `{network}/` belong to the reporter.
    pub network: Option<String>,
    /// Handle keys that are still in use.
    pub valid: Vec<String>,
    /// Grace period in seconds (default: the daemon's).
    pub grace_seconds: Option<u64>,
}

/// A reclaim waiting for its grace period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingReclaim {
    /// The handle.
    pub handle: String,
    /// Reclaimed at this time unless listed as valid again.
    pub due: Millis,
    /// Who reported it stale (`node:NAME` or `network:NAME`).
    pub reporter: String,
}

/// What a mutation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to report.
    Done,
    /// Addresses released (or, for an allocation, held without a handle record).
    Addresses(Vec<HeldAddr>),
    /// An allocation: the handle as committed, so callers need not read the engine again
    /// (a read would wait for the next batch's commit).
    Allocated(Box<kipam_core::Handle>),
    /// A lease made.
    Lease(Lease),
    /// A lease or network removed (false: there was none).
    Removed(bool),
    /// A GC report was taken: these handles are now pending reclaim.
    Gc(Vec<PendingReclaim>),
}

/// Kinds of history events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// An address was handed out.
    Allocate,
    /// An address was given back.
    Release,
    /// A prefix was leased.
    Lease,
    /// A prefix lease ended.
    LeaseRelease,
    /// A leaked address was reclaimed by GC.
    Reclaim,
}

impl EventKind {
    /// The kind's name, as stored and as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Allocate => "allocate",
            EventKind::Release => "release",
            EventKind::Lease => "lease",
            EventKind::LeaseRelease => "lease-release",
            EventKind::Reclaim => "reclaim",
        }
    }

    fn from_name(name: &str) -> Option<EventKind> {
        [
            EventKind::Allocate,
            EventKind::Release,
            EventKind::Lease,
            EventKind::LeaseRelease,
            EventKind::Reclaim,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// One history event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Sequence number, increasing.
    pub seq: u64,
    /// When (ms since the epoch).
    pub time: Millis,
    /// What.
    pub kind: EventKind,
    /// Pool.
    pub pool: String,
    /// The address, for address events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// The prefix, for lease events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<IpNet>,
    /// The handle (or lease owner).
    pub handle: String,
    /// The node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The handle's attributes at the time.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
}

impl Event {
    /// The stored form: `kipam_store::codec::encode_event` (binary since format 1;
    /// docs/storage.md).
    pub fn encode(&self) -> Vec<u8> {
        kipam_store::codec::encode_event(&kipam_store::codec::EventFields {
            seq: self.seq,
            time: self.time,
            kind: self.kind.name(),
            pool: &self.pool,
            address: self.address,
            prefix: self.prefix,
            handle: &self.handle,
            node: self.node.as_deref(),
            attrs: &self.attrs,
        })
    }

    /// Reads a stored event (binary, or the JSON of earlier versions) found at `key`.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Event, EngineError> {
        let r = kipam_store::codec::decode_event(bytes).map_err(|d| corrupt(key, d))?;
        let kind = EventKind::from_name(&r.kind)
            .ok_or_else(|| corrupt(key, format!("unknown event kind {:?}", r.kind)))?;
        Ok(Event {
            seq: r.seq,
            time: r.time,
            kind,
            pool: r.pool,
            address: r.address,
            prefix: r.prefix,
            handle: r.handle,
            node: r.node,
            attrs: r.attrs,
        })
    }
}

/// A usage sample of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// When.
    pub time: Millis,
    /// Held + quarantined + leased addresses (saturating at u64::MAX).
    pub used: u64,
    /// Usable addresses (size minus reserved; saturating).
    pub usable: u64,
}

/// Errors of the engine.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The engine refused the request.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The store failed; nothing of the batch was written.
    #[error("store failure: {0}")]
    Store(#[from] StoreError),
    /// Loading or encoding records failed.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// The engine is shutting down.
    #[error("kipamd is shutting down")]
    ShuttingDown,
}

/// Hooks for metrics.
pub trait Observer: Send + Sync {
    /// A batch was committed (or failed).
    fn commit(&self, batch: usize, took: Duration, ok: bool);
    /// The WAL was synced (one sync covers every batch committed since the last).
    fn synced(&self, _took: Duration) {}
    /// A mutation was applied (`kind` like "allocate"), with its result.
    fn mutation(&self, kind: &'static str, pool: Option<&str>, ok: bool, took: Duration);
    /// Addresses reclaimed by GC.
    fn reclaimed(&self, n: u64);
}

/// Counters the engine keeps itself.
#[derive(Debug, Default)]
pub struct Stats {
    /// Batches committed.
    pub commits: AtomicU64,
    /// Mutations committed.
    pub mutations: AtomicU64,
    /// Batches that failed to commit.
    pub failed_commits: AtomicU64,
    /// Events whose changes only the log holds yet (after the fold watermark): what a
    /// start after a crash would replay.
    pub unfolded_events: AtomicU64,
}

struct Job {
    mutation: Mutation,
    reply: oneshot::Sender<Result<Outcome, EngineError>>,
}

struct Shared {
    ipam: Mutex<Ipam>,
    /// The number of the last batch applied to `ipam` (set under its lock, before the
    /// batch is committed).
    applied: AtomicU64,
    /// The number of the last batch whose commit is durable (or failed); readers wait
    /// for it to reach what they saw (see [`Shared::settle`]).
    durable: Mutex<u64>,
    durable_changed: Condvar,
    /// A WAL sync failed: whether earlier commits reached the disk is unknown, so no
    /// mutation is taken any more (restart kipamd).
    sync_failed: AtomicBool,
    /// History index entries not yet written as chunks (see [`crate::history`]).
    history: Mutex<history::Pending>,
    pending: Mutex<BTreeMap<String, PendingReclaim>>,
    reader: Mutex<SqliteStore>,
    ready: AtomicBool,
    stats: Stats,
}

/// The handle on the engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    /// The store's WAL file (for its size in the metrics).
    wal_path: Arc<PathBuf>,
    tx: Arc<Mutex<Option<mpsc::Sender<Job>>>>,
    clock: Clock,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Shared {
    /// Waits until every batch up to `batch` is durable, so that what a reader saw of
    /// it is on disk before the reader answers. At most one WAL sync.
    fn settle(&self, batch: u64) {
        let mut durable = lock(&self.durable);
        while *durable < batch {
            durable = self
                .durable_changed
                .wait(durable)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Waits until everything applied so far is durable.
    fn settle_all(&self) {
        self.settle(self.applied.load(Ordering::Acquire));
    }

    fn set_durable(&self, batch: u64) {
        let mut durable = lock(&self.durable);
        *durable = (*durable).max(batch);
        self.durable_changed.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the engine half-changed (mutations are
    // atomic in the engine); keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

const SEQ_KEY: &str = log::SEQ_KEY;

/// How often the writer starts a fold (see `kipam_store::log`): the records changed since
/// the last one are written once each, in slices over the next batches, instead of once per
/// batch that changes them. Bounds the events a start after a crash replays (about two
/// periods' worth). The default of [`EngineOptions::fold_every`].
pub const FOLD_EVERY: Duration = Duration::from_secs(1);

/// When no request comes, the pause between two slices of a fold the writer writes alone.
const IDLE_SLICE_PAUSE: Duration = Duration::from_millis(5);

/// WAL frames (4 KiB pages) at which the writer checkpoints the WAL itself, pausing its
/// commits: reached only when the checkpoint thread falls behind. Copying the WAL into
/// the main file on the writer's own thread (every 4,096 frames, as this did before) made
/// every few dozen batches wait 10-20 ms: the p99 latency at 64 clients was twice the
/// median batch's. Bounds the WAL a restart replays to ~256 MiB (~0.3 s).
const WAL_TRIM_FRAMES: u64 = 65_536;

/// How often, at most, the checkpoint thread copies the WAL into the main file while
/// commits come in. Pages rewritten within that time (blocks, node summaries) are copied
/// once.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The WAL file kept on disk when SQLite starts it over after a complete checkpoint.
const WAL_SIZE_LIMIT: u64 = 64 << 20;

/// WAL frames at which, once the checkpoint thread has copied them all, the writer starts
/// the WAL over (`Checkpoint::Restart`). Under steady load a checkpoint never finds the
/// WAL complete, so without this it grows until [`WAL_TRIM_FRAMES`] and is truncated:
/// every commit then appended to the file, and a sync of a growing file costs twice that
/// of one written in place (0.27 vs 0.14 ms here). Restarted every few checkpoints, the
/// file stays at the size it reached and is written over.
const RESTART_FRAMES: u64 = 4096;

fn seq_key(seq: u64) -> String {
    log::event_key(seq)
}

/// A history record as earlier versions wrote it: one per event, the event's JSON
/// (still read and expired; see [`crate::history`]).
fn history_key(addr: IpAddr, seq: u64) -> String {
    format!("history/{addr}/{seq:020}")
}

/// Writes `changes` as `ipam` holds them and the fold watermark `folded`, in one commit
/// (outside the writer's batches: at start and at shutdown).
fn write_fold(
    store: &SqliteStore,
    ipam: &Ipam,
    changes: &kipam_core::Dirty,
    folded: u64,
) -> Result<(), EngineError> {
    kipam_store::transact(store, |txn| -> Result<(), EngineError> {
        write_changes(txn, ipam, changes, folded)?;
        txn.put(log::FOLDED_KEY, folded.to_string().into_bytes())?;
        Ok(())
    })
}

fn corrupt(key: &str, detail: impl ToString) -> EngineError {
    EngineError::Ipam(IpamError::Corrupt {
        key: key.to_string(),
        detail: detail.to_string(),
    })
}

/// The history index entries of the events after the watermark, re-read from
/// `events/`. `seq` is the newest event's: a store without a watermark was written by a
/// version that indexed every event as it came (`history/{addr}/{seq}`).
fn load_history(store: &SqliteStore, seq: u64) -> Result<history::Pending, EngineError> {
    let watermark = match store.get(history::WATERMARK_KEY)? {
        Some(rec) => std::str::from_utf8(&rec.value)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt(history::WATERMARK_KEY, "not a number"))?,
        None => seq,
    };
    let mut pending = history::Pending::default();
    let mut after = seq_key(watermark);
    loop {
        let page = store.list_page("events/", Some(&after), 10_000)?;
        for r in &page {
            let e = Event::decode(&r.key, &r.value)?;
            if let Some(a) = e.address {
                pending.add(a, e.seq);
            }
        }
        match page.last() {
            Some(last) if page.len() == 10_000 => after = last.key.clone(),
            _ => break,
        }
    }
    Ok(pending)
}

fn sample_key(pool: &str, time: Millis) -> String {
    format!("samples/{}/{time:020}", kipam_store::ipam::esc(pool))
}

/// The prefix of every node sample of `pool`.
fn node_samples_prefix(pool: &str) -> String {
    format!("node-samples/{}/", kipam_store::ipam::esc(pool))
}

fn node_sample_key(pool: &str, node: &str, time: Millis) -> String {
    format!(
        "node-samples/{}/{}/{time:020}",
        kipam_store::ipam::esc(pool),
        kipam_store::ipam::esc(node)
    )
}

/// The usage of `node`'s blocks in `pool`, as node samples count it: `(used, usable)`,
/// None when the node has no blocks in the pool. Used is held + quarantined. Usable is
/// what the node's blocks can hold: with `maxBlocksPerNode = m`, m blocks' addresses
/// (at least its current blocks', should the limit have been lowered below them) minus
/// the reserved addresses of its current blocks; without a limit, its current blocks'
/// addresses minus reserved.
pub fn node_usage(pool: &kipam_core::Pool, node: &str) -> Option<(u128, u128)> {
    let blocks = pool.node_summaries(node);
    if blocks.is_empty() {
        return None;
    }
    let (mut used, mut size, mut reserved) = (0u128, 0u128, 0u128);
    for (_, b) in &blocks {
        let held = u128::from(b.held) + u128::from(b.quarantined);
        used += held;
        size += held + u128::from(b.free) + u128::from(b.reserved);
        reserved += u128::from(b.reserved);
    }
    if let Some(m) = pool.config().max_blocks_per_node {
        let bits = pool.prefix().family.bits();
        let block = 1u128
            .checked_shl(u32::from(bits.saturating_sub(pool.block_len())))
            .unwrap_or(u128::MAX);
        let n = u128::from(m).max(blocks.len() as u128);
        size = size.max(n.saturating_mul(block));
    }
    Some((used, size.saturating_sub(reserved)))
}

fn decode_sample(key: &str, value: &[u8]) -> Result<Sample, EngineError> {
    serde_json::from_slice(value).map_err(|e| {
        EngineError::Ipam(IpamError::Corrupt {
            key: key.to_string(),
            detail: e.to_string(),
        })
    })
}

fn gc_key(handle: &str) -> String {
    format!("gc/{}", kipam_store::ipam::esc(handle))
}

fn open_store(dir: &Path, opts: &EngineOptions) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(
        dir,
        &SqliteOptions {
            create_dir: true,
            busy_timeout: opts.busy_timeout,
        },
    )
}

impl Engine {
    /// Opens (or creates) the store in `dir`, loads everything and starts the writer.
    /// Must be called inside a tokio runtime only for [`Engine::apply`]; `open` itself
    /// blocks.
    pub fn open(
        dir: &Path,
        opts: EngineOptions,
        clock: Clock,
        observer: Option<Arc<dyn Observer>>,
    ) -> Result<Engine, EngineError> {
        let store = open_store(dir, &opts)?
            .with_wal_trim_frames(WAL_TRIM_FRAMES)
            .with_wal_size_limit(WAL_SIZE_LIMIT)?
            .with_deferred_sync()?;
        let wal = store.wal_sync();
        let wal_path = Arc::new(wal.path().to_path_buf());
        let reader = open_store(dir, &opts)?;
        let checkpoints = Checkpoints::start(open_store(dir, &opts)?, dir)?;
        let ipam_store = IpamStore::new(store);
        let mut ipam = ipam_store.load_all(clock())?;
        let mut pending = BTreeMap::new();
        for rec in ipam_store.store().list("gc/")? {
            let p: PendingReclaim =
                serde_json::from_slice(&rec.value).map_err(|e| IpamError::Corrupt {
                    key: rec.key.clone(),
                    detail: e.to_string(),
                })?;
            pending.insert(p.handle.clone(), p);
        }
        let seq = match ipam_store.store().get(SEQ_KEY)? {
            Some(rec) => std::str::from_utf8(&rec.value)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            None => 0,
        };
        let history = load_history(ipam_store.store(), seq)?;
        // Blocks rebuilt from the log's tail (a crash), or a store from before the log:
        // fold now, so the tail starts empty. Every claims index is written too, with the
        // seq it is complete up to (a record of an older version has none, and the
        // writer leaves claims that only grow to the folds; `kipam_store::log`).
        let mut rebuilt = ipam.take_dirty();
        for p in ipam.pools() {
            rebuilt
                .pools
                .entry(p.config().name.clone())
                .or_default()
                .claims = true;
        }
        write_fold(ipam_store.store(), &ipam, &rebuilt, seq)?;
        let shared = Arc::new(Shared {
            ipam: Mutex::new(ipam),
            history: Mutex::new(history),
            applied: AtomicU64::new(0),
            durable: Mutex::new(0),
            durable_changed: Condvar::new(),
            sync_failed: AtomicBool::new(false),
            pending: Mutex::new(pending),
            reader: Mutex::new(reader),
            ready: AtomicBool::new(true),
            stats: Stats::default(),
        });
        let (tx, rx) = mpsc::channel::<Job>(opts.batch_max.max(1) * 4);
        let syncer = Syncer::start(wal, shared.clone(), observer.clone(), dir)?;
        let writer = Writer {
            shared: shared.clone(),
            store: ipam_store,
            dir: dir.to_path_buf(),
            opts,
            clock: clock.clone(),
            seq,
            observer,
            checkpoints: Some(checkpoints),
            syncer: Some(syncer),
            batches: 0,
            folder: log::Folder::new(seq),
            last_fold: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("kipam-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
        Ok(Engine {
            shared,
            wal_path,
            tx: Arc::new(Mutex::new(Some(tx))),
            clock,
            writer: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// Applies a mutation; answers after its batch is durable.
    pub async fn apply(&self, mutation: Mutation) -> Result<Outcome, EngineError> {
        let (reply, answer) = oneshot::channel();
        let tx = lock(&self.tx).clone().ok_or(EngineError::ShuttingDown)?;
        tx.send(Job { mutation, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        answer.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Runs `f` on the in-memory state (a short lock: keep `f` quick). Returns once what
    /// `f` saw is durable (at most one WAL sync later).
    pub fn read<R>(&self, f: impl FnOnce(&Ipam) -> R) -> R {
        let (result, seen) = {
            let ipam = lock(&self.shared.ipam);
            (f(&ipam), self.shared.applied.load(Ordering::Acquire))
        };
        self.shared.settle(seen);
        result
    }

    /// Reclaims waiting for their grace period.
    pub fn pending_reclaims(&self) -> Vec<PendingReclaim> {
        let pending: Vec<PendingReclaim> = lock(&self.shared.pending).values().cloned().collect();
        self.shared.settle_all();
        pending
    }

    /// The size of the store's WAL file, if it can be read.
    pub fn wal_bytes(&self) -> Option<u64> {
        std::fs::metadata(&*self.wal_path).ok().map(|m| m.len())
    }

    /// Whether the store is open and loaded and the writer runs.
    pub fn ready(&self) -> bool {
        self.shared.ready.load(Ordering::Relaxed)
    }

    /// The engine's counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The current time of the engine's clock.
    pub fn now(&self) -> Millis {
        (self.clock)()
    }

    /// The history of an address, oldest first.
    pub fn history(&self, addr: IpAddr) -> Result<Vec<Event>, EngineError> {
        // Pending entries before chunks: an entry written out meanwhile is then found
        // twice rather than not at all.
        let mut seqs = lock(&self.shared.history).seqs_of(addr);
        let (bucket, offset) = history::bucket_of(addr);
        let reader = lock(&self.shared.reader);
        for r in reader.list(&history::chunk_prefix(bucket))? {
            let entries = history::decode_chunk(&r.value).map_err(|d| corrupt(&r.key, d))?;
            seqs.extend(
                entries
                    .iter()
                    .filter(|(o, _)| *o == offset)
                    .map(|(_, s)| *s),
            );
        }
        seqs.sort_unstable();
        seqs.dedup();
        let mut events = Vec::with_capacity(seqs.len());
        for r in reader.list(&format!("history/{addr}/"))? {
            events.push(Event::decode(&r.key, &r.value)?);
        }
        for seq in seqs {
            // Absent: expired after the entry was read.
            if let Some(r) = reader.get(&seq_key(seq))? {
                events.push(Event::decode(&r.key, &r.value)?);
            }
        }
        drop(reader);
        events.sort_by_key(|e| e.seq);
        events.dedup_by_key(|e| e.seq);
        // The reader sees commits whose WAL sync may still be running.
        self.shared.settle_all();
        Ok(events)
    }

    /// Who held `addr` at time `at`: the last allocate event at or before `at` that no
    /// release or reclaim followed before `at`.
    pub fn holder_at(&self, addr: IpAddr, at: Millis) -> Result<Option<Event>, EngineError> {
        let mut holder = None;
        for e in self.history(addr)? {
            if e.time > at {
                break;
            }
            match e.kind {
                EventKind::Allocate => holder = Some(e),
                EventKind::Release | EventKind::Reclaim => holder = None,
                EventKind::Lease | EventKind::LeaseRelease => {}
            }
        }
        Ok(holder)
    }

    /// Usage samples of a pool since `since`, oldest first.
    pub fn samples(&self, pool: &str, since: Millis) -> Result<Vec<Sample>, EngineError> {
        let prefix = format!("samples/{}/", kipam_store::ipam::esc(pool));
        self.samples_after(&prefix, sample_key(pool, since.saturating_sub(1)))
    }

    /// The samples under `prefix` whose keys sort after `after`, a page at a time.
    fn samples_after(&self, prefix: &str, after: String) -> Result<Vec<Sample>, EngineError> {
        let reader = lock(&self.shared.reader);
        let mut out = Vec::new();
        let mut cursor = Some(after);
        while let Some(after) = cursor.take() {
            let page = reader.list_page(prefix, Some(&after), 10_000)?;
            for r in &page {
                out.push(decode_sample(&r.key, &r.value)?);
            }
            if page.len() == 10_000 {
                cursor = page.last().map(|r| r.key.clone());
            }
        }
        drop(reader);
        self.shared.settle_all();
        Ok(out)
    }

    /// Usage samples of `node`'s blocks in `pool` since `since`, oldest first (empty when
    /// the node never had blocks there, or none within the retention).
    pub fn node_samples(
        &self,
        pool: &str,
        node: &str,
        since: Millis,
    ) -> Result<Vec<Sample>, EngineError> {
        let prefix = format!(
            "{}{}/",
            node_samples_prefix(pool),
            kipam_store::ipam::esc(node)
        );
        self.samples_after(
            &prefix,
            node_sample_key(pool, node, since.saturating_sub(1)),
        )
    }

    /// Stops taking mutations, lets the queued ones commit and answer, and waits for the
    /// writer to finish. Later [`Engine::apply`] calls get [`EngineError::ShuttingDown`].
    pub fn shutdown(&self) {
        self.shared.ready.store(false, Ordering::Relaxed);
        lock(&self.tx).take();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    store: IpamStore<SqliteStore>,
    dir: PathBuf,
    opts: EngineOptions,
    clock: Clock,
    seq: u64,
    observer: Option<Arc<dyn Observer>>,
    /// The checkpoint thread; None once stopped.
    checkpoints: Option<Checkpoints>,
    /// The WAL sync thread, which answers committed batches; None once stopped.
    syncer: Option<Syncer>,
    /// Batches applied so far (numbers batches for [`Shared::settle`]).
    batches: u64,
    /// Which records each commit writes (`kipam_store::log`).
    folder: log::Folder,
    /// When the writer last started a fold.
    last_fold: Instant,
}

/// A batch handed from the writer to the sync thread.
struct Committed {
    /// Its number.
    batch: u64,
    /// Whether its commit succeeded (else `applied` already holds the errors).
    ok: bool,
    applied: Vec<Applied>,
    started: Instant,
}

/// The thread that makes group commits durable and answers them: one `fdatasync` of the
/// WAL covers every batch committed since the last, and runs while the writer builds
/// and commits the next batch. A request is answered only after the sync that covers
/// its batch (see "Durability" in docs/storage.md).
struct Syncer {
    tx: std::sync::mpsc::Sender<Committed>,
    thread: std::thread::JoinHandle<()>,
}

impl Syncer {
    fn start(
        mut wal: kipam_store::WalSync,
        shared: Arc<Shared>,
        observer: Option<Arc<dyn Observer>>,
        dir: &Path,
    ) -> Result<Syncer, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel::<Committed>();
        let wal_path = wal.path().to_path_buf();
        let thread = std::thread::Builder::new()
            .name("kipam-sync".into())
            .spawn(move || {
                // Readers never wait for a batch this thread will not answer, even if it
                // ends by a panic.
                struct Release(Arc<Shared>);
                impl Drop for Release {
                    fn drop(&mut self) {
                        self.0.set_durable(u64::MAX);
                    }
                }
                let release = Release(shared);
                let shared = &release.0;
                while let Ok(first) = rx.recv() {
                    let mut group = vec![first];
                    group.extend(rx.try_iter());
                    let synced = if group.iter().any(|c| c.ok) {
                        let started = Instant::now();
                        let synced = wal.sync();
                        if let (Ok(()), Some(o)) = (&synced, &observer) {
                            o.synced(started.elapsed());
                        }
                        synced
                    } else {
                        Ok(())
                    };
                    if let Err(e) = &synced {
                        tracing::error!(error = %e, "WAL sync failed; refusing mutations until kipamd restarts");
                        shared.sync_failed.store(true, Ordering::Relaxed);
                        shared.ready.store(false, Ordering::Relaxed);
                    }
                    let last = group.last().map_or(0, |c| c.batch);
                    for c in group {
                        if c.ok {
                            match &synced {
                                Ok(()) => {
                                    shared.stats.commits.fetch_add(1, Ordering::Relaxed);
                                    shared
                                        .stats
                                        .mutations
                                        .fetch_add(c.applied.len() as u64, Ordering::Relaxed);
                                }
                                Err(_) => {
                                    shared.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            // (A commit of nothing but a fold slice, by an idle writer,
                            // is no batch of requests.)
                            if let Some(o) = &observer
                                && !c.applied.is_empty()
                            {
                                o.commit(c.applied.len(), c.started.elapsed(), synced.is_ok());
                            }
                        }
                        for a in c.applied {
                            let result = match (&synced, a.result) {
                                (Err(e), Ok(_)) if c.ok => Err(sync_failure(&wal_path, e)),
                                (_, result) => result,
                            };
                            let _ = a.reply.send(result);
                        }
                    }
                    shared.set_durable(last);
                }
            })
            .map_err(|e| StoreError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
        Ok(Syncer { tx, thread })
    }

    fn send(&self, c: Committed) {
        // The thread only ends when this sender is dropped.
        let _ = self.tx.send(c);
    }

    /// Answers what is queued and ends the thread.
    fn stop(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

/// The thread that copies the WAL into the main file beside the writer
/// ([`Checkpoint::Passive`] on a connection of its own), so that no group commit waits
/// for a checkpoint. The writer nudges it after each commit; it runs at most every
/// [`CHECKPOINT_EVERY`] and stops when the writer drops it.
struct Checkpoints {
    nudge: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<()>,
    /// Set when a checkpoint copied the whole WAL as it was: the writer then starts it
    /// over (see [`RESTART_FRAMES`]).
    restart_due: Arc<AtomicBool>,
}

impl Checkpoints {
    fn start(store: SqliteStore, dir: &Path) -> Result<Checkpoints, StoreError> {
        use std::sync::mpsc::RecvTimeoutError;
        let (nudge, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let restart_due = Arc::new(AtomicBool::new(false));
        let due = restart_due.clone();
        let thread = std::thread::Builder::new()
            .name("kipam-checkpoint".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    let started = Instant::now();
                    match store.checkpoint(Checkpoint::Passive) {
                        Ok(s) => {
                            tracing::debug!(
                                wal_frames = s.wal_frames,
                                copied = s.copied_frames,
                                took_ms = started.elapsed().as_millis() as u64,
                                "checkpoint"
                            );
                            if s.wal_frames >= RESTART_FRAMES && s.copied_frames == s.wal_frames {
                                due.store(true, Ordering::Relaxed);
                            }
                        }
                        // Nothing is lost: the frames stay in the WAL, and the writer
                        // checkpoints itself should the WAL keep growing.
                        Err(e) => tracing::warn!(error = %e, "background checkpoint failed"),
                    }
                    // Nudges that come meanwhile (one per commit) are swallowed: the
                    // next checkpoint takes what they announced.
                    let next = started + CHECKPOINT_EVERY;
                    loop {
                        match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                            Ok(()) => continue,
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
        Ok(Checkpoints {
            nudge,
            thread,
            restart_due,
        })
    }

    /// After a commit, on the writer's thread: when the last checkpoint copied the whole
    /// WAL, start it over. Only what was committed since that checkpoint is left to copy,
    /// so this takes a few milliseconds; a busy reader makes it give up until the next.
    fn restart_if_due(&self, store: &SqliteStore) {
        if self.restart_due.swap(false, Ordering::Relaxed)
            && let Err(e) = store.checkpoint(Checkpoint::Restart)
        {
            tracing::warn!(error = %e, "restarting the WAL failed; it grows until trimmed");
        }
    }

    /// Asks for a checkpoint soon (a no-op when one is already asked for).
    fn nudge(&self) {
        let _ = self.nudge.try_send(());
    }

    fn stop(self) {
        drop(self.nudge);
        let _ = self.thread.join();
    }
}

/// One applied mutation, waiting for the commit.
struct Applied {
    reply: oneshot::Sender<Result<Outcome, EngineError>>,
    result: Result<Outcome, EngineError>,
}

/// What a batch writes besides the engine's dirty records.
#[derive(Default)]
struct Extra {
    events: Vec<Event>,
    samples: Vec<(String, Sample)>,
    /// (pool, node, sample) of each node with blocks.
    node_samples: Vec<(String, String, Sample)>,
    pending_put: BTreeSet<String>,
    pending_del: BTreeSet<String>,
    deletes: Vec<String>,
}

fn mutation_kind(m: &Mutation) -> (&'static str, Option<String>) {
    match m {
        Mutation::CreatePool(c) => ("create-pool", Some(c.name.clone())),
        Mutation::UpdatePool(c) => ("update-pool", Some(c.name.clone())),
        Mutation::DeletePool { name, .. } => ("delete-pool", Some(name.clone())),
        Mutation::Allocate(r) => (
            "allocate",
            r.wants.first().and_then(|w| match &w.source {
                kipam_core::Source::Pools(p) => p.first().cloned(),
                kipam_core::Source::Family { .. } => None,
            }),
        ),
        Mutation::Release { .. } => ("release", None),
        Mutation::Lease { pool, .. } => ("lease", Some(pool.clone())),
        Mutation::ReleaseLease { pool, .. } => ("release-lease", Some(pool.clone())),
        Mutation::AddExternal(_) => ("add-external", None),
        Mutation::RemoveExternal { .. } => ("remove-external", None),
        Mutation::GcReport(_) => ("gc-report", None),
        Mutation::Housekeeping => ("housekeeping", None),
    }
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        // Waits for a request, with a deadline while changed records wait for a fold: an
        // idle writer writes them too, so the log's tail empties when the load stops.
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| tracing::warn!(error = %e, "no timer for idle folds; they wait for the next request"))
            .ok();
        loop {
            let first = match &timer {
                Some(rt) if self.folder.pending() => {
                    let wait = if self.folder.folding() {
                        IDLE_SLICE_PAUSE
                    } else {
                        self.opts
                            .fold_every
                            .saturating_sub(self.last_fold.elapsed())
                            .max(IDLE_SLICE_PAUSE)
                    };
                    // The timer is made inside `block_on`, in the runtime's context.
                    match rt.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
                        Ok(job) => job,
                        Err(_) => {
                            // No request meanwhile: a commit of nothing but the fold.
                            self.batch(Vec::new());
                            continue;
                        }
                    }
                }
                _ => rx.blocking_recv(),
            };
            let Some(first) = first else { break };
            let mut jobs = vec![first];
            while jobs.len() < self.opts.batch_max {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            self.batch(jobs);
        }
        self.fold_at_shutdown();
        if let Some(s) = self.syncer.take() {
            s.stop();
        }
        // Leave an empty WAL behind, so the next start has nothing to replay.
        if let Some(c) = self.checkpoints.take() {
            c.stop();
        }
        if let Err(e) = self.store.store().checkpoint(Checkpoint::Truncate) {
            tracing::warn!(error = %e, "checkpoint at shutdown failed; the next start replays the WAL");
        }
    }

    /// Writes what waits for a fold, so the next start replays nothing. Not after a failed
    /// WAL sync: what is on disk is unknown, and the next start reads it as it is.
    fn fold_at_shutdown(&mut self) {
        if self.shared.sync_failed.load(Ordering::Relaxed) {
            return;
        }
        let shared = self.shared.clone();
        let mut ipam = lock(&shared.ipam);
        let dirty = ipam.take_dirty();
        let plan = self.folder.plan(dirty, &ipam, self.seq, true, true);
        if plan.changes.is_empty() && self.folder.folded() == plan.folded {
            return;
        }
        if let Err(e) = write_fold(self.store.store(), &ipam, &plan.changes, plan.folded) {
            tracing::warn!(error = %e, "fold at shutdown failed; the next start replays the log's tail");
        }
    }

    fn event(
        &mut self,
        extra: &mut Extra,
        now: Millis,
        kind: EventKind,
        pool: &str,
        handle: &str,
    ) -> usize {
        self.seq += 1;
        extra.events.push(Event {
            seq: self.seq,
            time: now,
            kind,
            pool: pool.to_string(),
            address: None,
            prefix: None,
            handle: handle.to_string(),
            node: None,
            attrs: BTreeMap::new(),
        });
        extra.events.len() - 1
    }

    fn release_events(
        &mut self,
        extra: &mut Extra,
        now: Millis,
        kind: EventKind,
        handle: &kipam_core::Handle,
        addrs: &[HeldAddr],
    ) {
        for a in addrs {
            let i = self.event(extra, now, kind, &a.pool, &handle.key);
            let e = &mut extra.events[i];
            e.address = Some(a.addr);
            e.node = Some(handle.node.to_string());
            e.attrs = handle.attrs.clone();
        }
    }

    fn apply_one(
        &mut self,
        ipam: &mut Ipam,
        m: &Mutation,
        now: Millis,
        extra: &mut Extra,
    ) -> Result<Outcome, EngineError> {
        match m {
            Mutation::CreatePool(c) => ipam
                .create_pool(c.clone())
                .map(|()| Outcome::Done)
                .map_err(Into::into),
            Mutation::UpdatePool(c) => {
                if ipam.pool(&c.name).is_none() {
                    return Err(CoreError::PoolNotFound {
                        pool: c.name.clone(),
                    }
                    .into());
                }
                ipam.update_pool(c.clone())
                    .map(|()| Outcome::Done)
                    .map_err(Into::into)
            }
            Mutation::DeletePool { name, force } => {
                let victims: Vec<(kipam_core::Handle, Vec<HeldAddr>)> = ipam
                    .handles()
                    .filter(|h| h.addrs.iter().any(|a| *a.pool == **name))
                    .map(|h| {
                        (
                            h.clone(),
                            h.addrs
                                .iter()
                                .filter(|a| *a.pool == **name)
                                .cloned()
                                .collect(),
                        )
                    })
                    .collect();
                ipam.delete_pool(name, *force)?;
                for (h, addrs) in victims {
                    self.release_events(extra, now, EventKind::Release, &h, &addrs);
                }
                extra
                    .deletes
                    .push(format!("samples/{}/", kipam_store::ipam::esc(name)));
                extra.deletes.push(node_samples_prefix(name));
                Ok(Outcome::Done)
            }
            Mutation::Allocate(req) => {
                let existed = ipam
                    .handle(&req.handle)
                    .is_some_and(|h| !h.addrs.is_empty());
                let got = ipam.allocate(req, now)?;
                if !existed {
                    for a in &got {
                        let i = self.event(extra, now, EventKind::Allocate, &a.pool, &req.handle);
                        let e = &mut extra.events[i];
                        e.address = Some(a.addr);
                        e.node = Some(req.node.clone());
                        e.attrs = req.attrs.clone();
                    }
                    // A handle that allocates again is alive: drop a pending reclaim.
                    if lock(&self.shared.pending).remove(&req.handle).is_some() {
                        extra.pending_del.insert(req.handle.clone());
                    }
                }
                match ipam.handle(&req.handle) {
                    Some(h) => Ok(Outcome::Allocated(Box::new(h.clone()))),
                    None => Ok(Outcome::Addresses(got)),
                }
            }
            Mutation::Release { handle } => {
                let h = ipam.handle(handle).cloned();
                let got = ipam.release_handle(handle, now)?;
                if let Some(h) = h {
                    self.release_events(extra, now, EventKind::Release, &h, &got);
                }
                if lock(&self.shared.pending).remove(handle).is_some() {
                    extra.pending_del.insert(handle.clone());
                }
                Ok(Outcome::Addresses(got))
            }
            Mutation::Lease {
                pool,
                want,
                owner,
                attrs,
            } => {
                let lease = ipam.lease_prefix(pool, *want, owner, attrs.clone(), now)?;
                let i = self.event(extra, now, EventKind::Lease, pool, owner);
                extra.events[i].prefix = Some(lease.prefix);
                extra.events[i].attrs = attrs.clone();
                Ok(Outcome::Lease(lease))
            }
            Mutation::ReleaseLease { pool, prefix } => {
                let gone = ipam.release_lease(pool, *prefix)?;
                if let Some(l) = &gone {
                    let i = self.event(extra, now, EventKind::LeaseRelease, pool, &l.owner);
                    extra.events[i].prefix = Some(l.prefix);
                }
                Ok(Outcome::Removed(gone.is_some()))
            }
            Mutation::AddExternal(n) => ipam
                .add_scope_network(ObjectKind::External, n.clone())
                .map(|()| Outcome::Done)
                .map_err(Into::into),
            Mutation::RemoveExternal { name } => Ok(Outcome::Removed(
                ipam.remove_scope_network(ObjectKind::External, name),
            )),
            Mutation::GcReport(report) => {
                // A report must say whose handles it covers; one without owner would
                // reclaim every handle of every node not listed.
                if report.node.is_none() && report.network.is_none() {
                    return Err(CoreError::Invalid {
                        field: "node".into(),
                        reason: "a GC report names the node or the network it covers".into(),
                    }
                    .into());
                }
                Ok(Outcome::Gc(self.gc_report(ipam, report, now, extra)))
            }
            Mutation::Housekeeping => {
                self.housekeeping(ipam, now, extra)?;
                Ok(Outcome::Done)
            }
        }
    }

    fn gc_report(
        &mut self,
        ipam: &Ipam,
        report: &GcReport,
        now: Millis,
        extra: &mut Extra,
    ) -> Vec<PendingReclaim> {
        let valid: BTreeSet<&str> = report.valid.iter().map(String::as_str).collect();
        let network_prefix = report.network.as_ref().map(|n| format!("{n}/"));
        let reporter = match (&report.node, &report.network) {
            (Some(n), _) => format!("node:{n}"),
            (None, Some(n)) => format!("network:{n}"),
            (None, None) => "all".to_string(),
        };
        let grace = report
            .grace_seconds
            .map_or(self.opts.gc_grace, Duration::from_secs);
        let due = now.saturating_add(grace.as_millis() as u64);
        let mut pending = lock(&self.shared.pending);
        let mut out = Vec::new();
        for h in ipam.handles() {
            let owned = report.node.as_ref().is_none_or(|n| *h.node == **n)
                && network_prefix
                    .as_ref()
                    .is_none_or(|p| h.key.starts_with(p.as_str()));
            if !owned {
                continue;
            }
            if valid.contains(&*h.key) {
                if pending.remove(&*h.key).is_some() {
                    extra.pending_del.insert(h.key.to_string());
                }
                continue;
            }
            let entry = pending.entry(h.key.to_string()).or_insert_with(|| {
                extra.pending_put.insert(h.key.to_string());
                PendingReclaim {
                    handle: h.key.to_string(),
                    due,
                    reporter: reporter.clone(),
                }
            });
            out.push(entry.clone());
        }
        out
    }

    fn housekeeping(
        &mut self,
        ipam: &mut Ipam,
        now: Millis,
        extra: &mut Extra,
    ) -> Result<(), EngineError> {
        // Reclaims whose grace ran out: re-checked here, at release time — a handle that
        // was released, re-reported valid or allocated again is no longer pending.
        let due: Vec<String> = lock(&self.shared.pending)
            .values()
            .filter(|p| p.due <= now)
            .map(|p| p.handle.clone())
            .collect();
        let mut reclaimed = 0u64;
        for key in due {
            lock(&self.shared.pending).remove(&key);
            extra.pending_del.insert(key.clone());
            if let Some(h) = ipam.handle(&key).cloned() {
                let got = ipam.release_handle(&key, now)?;
                reclaimed += got.len() as u64;
                self.release_events(extra, now, EventKind::Reclaim, &h, &got);
            }
        }
        if reclaimed > 0
            && let Some(o) = &self.observer
        {
            o.reclaimed(reclaimed);
        }
        ipam.reclaim_empty_blocks(now);
        for p in ipam.pools() {
            let u = p.usage();
            let used = u.held + u.quarantined + u.leased;
            let usable = u.size.saturating_sub(u.reserved);
            extra.samples.push((
                p.config().name.clone(),
                Sample {
                    time: now,
                    used: u64::try_from(used).unwrap_or(u64::MAX),
                    usable: u64::try_from(usable).unwrap_or(u64::MAX),
                },
            ));
            for node in p.loaded_nodes() {
                let Some((used, usable)) = node_usage(p, node) else {
                    continue;
                };
                extra.node_samples.push((
                    p.config().name.clone(),
                    node.to_string(),
                    Sample {
                        time: now,
                        used: u64::try_from(used).unwrap_or(u64::MAX),
                        usable: u64::try_from(usable).unwrap_or(u64::MAX),
                    },
                ));
            }
        }
        Ok(())
    }

    /// Deletes history and samples past their retention (runs inside the batch's txn).
    /// Candidates are found through the read connection (the writer's own connection is
    /// busy with the transaction), at most a page per run so batches stay short.
    fn expire(&self, txn: &mut dyn Txn, now: Millis) -> Result<(), StoreError> {
        let reader = lock(&self.shared.reader);
        let cutoff = now.saturating_sub(self.opts.event_retention.as_millis() as u64);
        let mut buckets = BTreeSet::new();
        let mut expired = 0;
        for r in reader.list_page("events/", None, 1000)? {
            match Event::decode(&r.key, &r.value) {
                Ok(e) if e.time >= cutoff => break,
                Ok(e) => {
                    if let Some(a) = e.address {
                        txn.delete(&history_key(a, e.seq))?;
                        buckets.insert(history::bucket_of(a).0);
                    }
                    expired = e.seq;
                }
                Err(_) => {}
            }
            txn.delete(&r.key)?;
        }
        // Chunks whose every entry is an expired event (entries are in seq order).
        for bucket in buckets {
            for r in reader.list_page(&history::chunk_prefix(bucket), None, 1000)? {
                match history::chunk_last_seq(&r.key) {
                    Some(last) if last <= expired => txn.delete(&r.key)?,
                    _ => break,
                }
            }
        }
        let sample_cutoff = now.saturating_sub(self.opts.sample_retention.as_millis() as u64);
        for p in reader.list("pools/")? {
            let prefix = format!("samples/{}/", &p.key["pools/".len()..]);
            for r in reader.list_page(&prefix, None, 1000)? {
                let t: Millis = r.key[prefix.len()..].parse().unwrap_or(0);
                if t >= sample_cutoff {
                    break;
                }
                txn.delete(&r.key)?;
            }
            self.expire_node_samples(txn, &reader, &p.key["pools/".len()..], sample_cutoff)?;
        }
        Ok(())
    }

    /// Deletes the node samples of the pool stored as `pool` (escaped) older than
    /// `cutoff`. Keys sort by node, then time: each node's oldest key is found with a
    /// one-row seek past the previous node, and at most a page of its samples is deleted
    /// per run, like pool samples. Nodes that left the pool keep their samples until
    /// these expire.
    fn expire_node_samples(
        &self,
        txn: &mut dyn Txn,
        reader: &SqliteStore,
        pool: &str,
        cutoff: Millis,
    ) -> Result<(), StoreError> {
        let prefix = format!("node-samples/{pool}/");
        let mut after: Option<String> = None;
        loop {
            let Some(first) = reader
                .list_page(&prefix, after.as_deref(), 1)?
                .into_iter()
                .next()
            else {
                break;
            };
            // `{node}/{time}`; node names are escaped, so the last `/` ends the node.
            let rest = &first.key[prefix.len()..];
            let Some(slash) = rest.rfind('/') else {
                after = Some(first.key.clone());
                continue;
            };
            let node_prefix = format!("{prefix}{}", &rest[..=slash]);
            let oldest: Millis = rest[slash + 1..].parse().unwrap_or(0);
            if oldest < cutoff {
                for r in reader.list_page(&node_prefix, None, 1000)? {
                    let t: Millis = r.key[node_prefix.len()..].parse().unwrap_or(0);
                    if t >= cutoff {
                        break;
                    }
                    txn.delete(&r.key)?;
                }
            }
            // Past every `{node}/...` key: `0` is the byte after `/`.
            after = Some(format!("{}0", &node_prefix[..node_prefix.len() - 1]));
        }
        Ok(())
    }

    fn batch(&mut self, jobs: Vec<Job>) {
        if self.shared.sync_failed.load(Ordering::Relaxed) {
            for job in jobs {
                let _ = job.reply.send(Err(EngineError::Store(StoreError::Io {
                    path: self.dir.clone(),
                    source: std::io::Error::other(
                        "an earlier WAL sync failed; restart kipamd to recover from the store",
                    ),
                })));
            }
            return;
        }
        let started = Instant::now();
        let now = (self.clock)();
        let mut extra = Extra::default();
        let mut applied = Vec::with_capacity(jobs.len());
        let mut housekeeping = false;
        let committed_ok;
        {
            let shared = self.shared.clone();
            let mut ipam = lock(&shared.ipam);
            for job in jobs {
                let t0 = Instant::now();
                housekeeping |= matches!(job.mutation, Mutation::Housekeeping);
                let result = self.apply_one(&mut ipam, &job.mutation, now, &mut extra);
                if let Some(o) = &self.observer {
                    let (kind, pool) = mutation_kind(&job.mutation);
                    o.mutation(kind, pool.as_deref(), result.is_ok(), t0.elapsed());
                }
                applied.push(Applied {
                    reply: job.reply,
                    result,
                });
            }
            self.batches += 1;
            shared.applied.store(self.batches, Ordering::Release);
            let seq = self.seq;
            let pending: HashMap<String, PendingReclaim> = lock(&shared.pending)
                .iter()
                .filter(|(k, _)| extra.pending_put.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            // Handle records, block bodies, node summaries and grown claims are written by
            // folds (`kipam_store::log`); housekeeping, which expires events, writes
            // everything.
            let dirty = ipam.take_dirty();
            let due = self.last_fold.elapsed() >= self.opts.fold_every;
            let plan = self.folder.plan(dirty, &ipam, seq, due, housekeeping);
            if plan.started {
                self.last_fold = Instant::now();
            }
            let stored = self.folder.folded();
            let committed =
                kipam_store::transact(self.store.store(), |txn| -> Result<(), EngineError> {
                    write_changes(txn, &ipam, &plan.changes, seq)?;
                    if plan.folded != stored {
                        txn.put(log::FOLDED_KEY, plan.folded.to_string().into_bytes())?;
                    }
                    let mut index = lock(&shared.history);
                    for e in &extra.events {
                        txn.put(&seq_key(e.seq), e.encode())?;
                        if let Some(a) = e.address {
                            index.add(a, e.seq);
                        }
                    }
                    if !extra.events.is_empty() {
                        txn.put(SEQ_KEY, seq.to_string().into_bytes())?;
                        for (key, chunk) in index.take_due(seq) {
                            txn.put(&key, chunk)?;
                        }
                        // Written with every event, even unchanged: beside the event
                        // counter (same page), and its absence means "an older version
                        // indexed everything" (see `load_history`).
                        let watermark = index.watermark(seq);
                        txn.put(history::WATERMARK_KEY, watermark.to_string().into_bytes())?;
                    }
                    drop(index);
                    for (pool, s) in &extra.samples {
                        txn.put(
                            &sample_key(pool, s.time),
                            serde_json::to_vec(s).unwrap_or_default(),
                        )?;
                    }
                    for (pool, node, s) in &extra.node_samples {
                        txn.put(
                            &node_sample_key(pool, node, s.time),
                            serde_json::to_vec(s).unwrap_or_default(),
                        )?;
                    }
                    for k in &extra.pending_del {
                        txn.delete(&gc_key(k))?;
                    }
                    for (k, p) in &pending {
                        txn.put(&gc_key(k), serde_json::to_vec(p).unwrap_or_default())?;
                    }
                    for prefix in &extra.deletes {
                        for r in txn.list(prefix)? {
                            txn.delete(&r.key)?;
                        }
                    }
                    if housekeeping {
                        self.expire(txn, now)?;
                    }
                    Ok(())
                });
            committed_ok = committed.is_ok();
            match committed {
                Ok(()) => {
                    self.folder.committed(&plan);
                    self.shared
                        .stats
                        .unfolded_events
                        .store(seq.saturating_sub(plan.folded), Ordering::Relaxed);
                    // Counted and answered by the sync thread once durable.
                    if let Some(c) = &self.checkpoints {
                        c.nudge();
                    }
                }
                Err(e) => {
                    self.shared
                        .stats
                        .failed_commits
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(o) = &self.observer {
                        o.commit(applied.len(), started.elapsed(), false);
                    }
                    tracing::error!(error = %e, batch = applied.len(), "commit failed; reloading state from the store");
                    let msg = e.to_string();
                    // The store holds the state before the batch: the last fold plus
                    // the log's tail, which the load replays.
                    self.folder.reset();
                    match self.store.load_all(now) {
                        Ok(fresh) => *ipam = fresh,
                        Err(load) => {
                            tracing::error!(error = %load, "reload after a failed commit failed; not ready");
                            self.shared.ready.store(false, Ordering::Relaxed);
                        }
                    }
                    self.reload_pending();
                    self.seq = self
                        .store
                        .store()
                        .get(SEQ_KEY)
                        .ok()
                        .flatten()
                        .and_then(|r| String::from_utf8(r.value).ok())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(self.seq);
                    // The index took the failed batch's entries: rebuild it from what
                    // the store holds.
                    match load_history(self.store.store(), self.seq) {
                        Ok(index) => *lock(&shared.history) = index,
                        Err(load) => {
                            tracing::error!(error = %load, "reloading the history index failed; not ready");
                            self.shared.ready.store(false, Ordering::Relaxed);
                        }
                    }
                    for a in &mut applied {
                        if a.result.is_ok() {
                            a.result = Err(EngineError::Store(store_failure(&e, &msg, &self.dir)));
                        }
                    }
                }
            }
        }
        let batch = Committed {
            batch: self.batches,
            ok: committed_ok,
            applied,
            started,
        };
        match &self.syncer {
            Some(s) => s.send(batch),
            None => batch.applied.into_iter().for_each(|a| {
                let _ = a.reply.send(a.result);
            }),
        }
        if committed_ok && let Some(c) = &self.checkpoints {
            c.restart_if_due(self.store.store());
        }
    }

    fn reload_pending(&self) {
        let mut fresh = BTreeMap::new();
        if let Ok(recs) = self.store.store().list("gc/") {
            for r in recs {
                if let Ok(p) = serde_json::from_slice::<PendingReclaim>(&r.value) {
                    fresh.insert(p.handle.clone(), p);
                }
            }
        }
        *lock(&self.shared.pending) = fresh;
    }
}

/// The store error to hand every request of a failed batch.
/// The error of every request whose batch a failed WAL sync covered (the store error
/// itself goes to the log once; each request gets its own copy).
fn sync_failure(wal: &Path, e: &StoreError) -> EngineError {
    let source = match e {
        StoreError::Io { source, .. } => std::io::Error::new(source.kind(), source.to_string()),
        other => std::io::Error::other(other.to_string()),
    };
    EngineError::Store(StoreError::Io {
        path: wal.to_path_buf(),
        source,
    })
}

fn store_failure(e: &EngineError, msg: &str, dir: &Path) -> StoreError {
    match e {
        EngineError::Store(StoreError::DiskFull { path }) => {
            StoreError::DiskFull { path: path.clone() }
        }
        EngineError::Store(StoreError::ReadOnly { path }) => {
            StoreError::ReadOnly { path: path.clone() }
        }
        EngineError::Store(StoreError::Busy { waited }) => StoreError::Busy { waited: *waited },
        _ => StoreError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other(msg.to_string()),
        },
    }
}
