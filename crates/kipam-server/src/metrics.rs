//! Prometheus metrics (`/metrics`, text format, prometheus-client).
//!
//! Counters and histograms are fed as things happen: by the engine through the
//! [`Observer`] hooks (commits, batch sizes, reclaims) and by the allocation handler
//! (allocations with their end-to-end latency, commit included). Pool gauges are not
//! kept up to date on every change; they are read from the engine at scrape time, which
//! costs one pass over the pools per scrape instead of work on the allocation path.
//!
//! Names: `kipam_pool_addresses{pool,family,state}`, `kipam_pool_utilization_ratio{pool}`,
//! `kipam_allocations_total{pool,result}`, `kipam_allocation_duration_seconds`,
//! `kipam_blocks{pool,node}`, `kipam_store_commit_duration_seconds`,
//! `kipam_commit_batch_size`, `kipam_reclaimed_total`, `kipam_mutations_total{kind,result}`,
//! `kipam_ready`, `kipam_pool_exhaustion_eta_seconds{pool}`.
//!
//! `kipam_pool_exhaustion_eta_seconds` is the forecast's time to exhaustion, in seconds
//! from the scrape, of pools that are growing (0 for full ones). A pool that is not
//! growing, declining or without enough samples has no series at all rather than +Inf:
//! an alert `kipam_pool_exhaustion_eta_seconds < 7*86400` reads the same either way, and
//! an absent series does not put infinities into sums and graphs. It is refreshed with
//! the forecasts after each housekeeping run ([`crate::forecasts`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::engine::{Engine, Observer};
use crate::forecasts::Forecasts;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolState {
    pool: String,
    family: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolResult {
    pool: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolNode {
    pool: String,
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindResult {
    kind: String,
    result: String,
}

/// kipamd's metrics.
pub struct Metrics {
    registry: Registry,
    pool_addresses: Family<PoolState, Gauge<f64, AtomicU64>>,
    utilization: Family<PoolLabel, Gauge<f64, AtomicU64>>,
    allocations: Family<PoolResult, Counter>,
    allocation_duration: Histogram,
    blocks: Family<PoolNode, Gauge>,
    commit_duration: Histogram,
    sync_duration: Histogram,
    wal_bytes: Gauge,
    unfolded: Gauge,
    batch_size: Histogram,
    reclaimed: Counter,
    mutations: Family<KindResult, Counter>,
    ready: Gauge,
    exhaustion_eta: Family<PoolLabel, Gauge<f64, AtomicU64>>,
    /// One scrape at a time: gauges are cleared and refilled per scrape.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let pool_addresses = Family::<PoolState, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "kipam_pool_addresses",
            "Addresses of a pool by state (held, free, quarantined, reserved, leased)",
            pool_addresses.clone(),
        );
        let utilization = Family::<PoolLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "kipam_pool_utilization_ratio",
            "Share of a pool's usable addresses that are held, quarantined or leased (0..1)",
            utilization.clone(),
        );
        let allocations = Family::<PoolResult, Counter>::default();
        registry.register(
            "kipam_allocations",
            "Allocation requests by pool (of each address granted, or the pools asked for) and result (ok or the error code)",
            allocations.clone(),
        );
        let allocation_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "kipam_allocation_duration_seconds",
            "Time to answer an allocation request, durable commit included",
            allocation_duration.clone(),
        );
        let blocks = Family::<PoolNode, Gauge>::default();
        registry.register(
            "kipam_blocks",
            "Blocks of a pool affine to a node",
            blocks.clone(),
        );
        let commit_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "kipam_store_commit_duration_seconds",
            "Time from the start of a batch (group commit) to its WAL sync",
            commit_duration.clone(),
        );
        let sync_duration = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register(
            "kipam_store_sync_duration_seconds",
            "Time of one WAL fsync; each covers every batch committed since the last",
            sync_duration.clone(),
        );
        let wal_bytes = Gauge::default();
        registry.register(
            "kipam_store_wal_bytes",
            "Size of the store's write-ahead log file (started over in place; truncated at 256 MiB)",
            wal_bytes.clone(),
        );
        let unfolded = Gauge::default();
        registry.register(
            "kipam_store_unfolded_events",
            "Events after the fold watermark: changes only the event log holds yet",
            unfolded.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "kipam_commit_batch_size",
            "Mutations per committed batch",
            batch_size.clone(),
        );
        let reclaimed = Counter::default();
        registry.register(
            "kipam_reclaimed",
            "Leaked addresses reclaimed by GC",
            reclaimed.clone(),
        );
        let mutations = Family::<KindResult, Counter>::default();
        registry.register(
            "kipam_mutations",
            "Mutations applied, by kind and result",
            mutations.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "kipam_ready",
            "1 when the engine is loaded and serving",
            ready.clone(),
        );
        let exhaustion_eta = Family::<PoolLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "kipam_pool_exhaustion_eta_seconds",
            "Forecast seconds until a growing pool runs out (0 when full; absent when not growing or without enough samples)",
            exhaustion_eta.clone(),
        );
        Metrics {
            exhaustion_eta,
            registry,
            pool_addresses,
            utilization,
            allocations,
            allocation_duration,
            blocks,
            commit_duration,
            sync_duration,
            wal_bytes,
            unfolded,
            batch_size,
            reclaimed,
            mutations,
            ready,
            scrape: Mutex::new(()),
        }
    }

    /// Records one allocation request: `pools` are the pools of the addresses granted
    /// (or those asked for, on failure; `*` for a request by family).
    pub fn allocation(&self, pools: &[String], result: &str, took: Duration) {
        for pool in pools {
            self.allocations
                .get_or_create(&PoolResult {
                    pool: pool.clone(),
                    result: result.to_string(),
                })
                .inc();
        }
        self.allocation_duration.observe(took.as_secs_f64());
    }

    /// The text exposition, with pool gauges read from `engine` now and ETAs from
    /// `forecasts`.
    pub fn render(
        &self,
        engine: Option<&Engine>,
        forecasts: &Forecasts,
    ) -> Result<String, std::fmt::Error> {
        let _one = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.pool_addresses.clear();
        self.utilization.clear();
        self.blocks.clear();
        self.exhaustion_eta.clear();
        self.ready.set(i64::from(engine.is_some_and(Engine::ready)));
        self.wal_bytes.set(
            engine
                .and_then(Engine::wal_bytes)
                .and_then(|b| i64::try_from(b).ok())
                .unwrap_or(0),
        );
        self.unfolded.set(engine.map_or(0, |e| {
            i64::try_from(e.stats().unfolded_events.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
        }));
        if let Some(engine) = engine {
            engine.read(|ipam| {
                for p in ipam.pools() {
                    let c = p.config();
                    let u = p.usage();
                    let family = c.family().to_string();
                    for (state, n) in [
                        ("held", u.held),
                        ("free", u.free),
                        ("quarantined", u.quarantined),
                        ("reserved", u.reserved),
                        ("leased", u.leased),
                    ] {
                        self.pool_addresses
                            .get_or_create(&PoolState {
                                pool: c.name.clone(),
                                family: family.clone(),
                                state: state.into(),
                            })
                            .set(n as f64);
                    }
                    self.utilization
                        .get_or_create(&PoolLabel {
                            pool: c.name.clone(),
                        })
                        .set(u.percent_used() / 100.0);
                    for node in p.loaded_nodes() {
                        let n = p.node_summaries(node).len();
                        if n > 0 {
                            self.blocks
                                .get_or_create(&PoolNode {
                                    pool: c.name.clone(),
                                    node: node.to_string(),
                                })
                                .set(i64::try_from(n).unwrap_or(i64::MAX));
                        }
                    }
                }
            });
            for (pool, secs) in forecasts.etas(engine.now()) {
                self.exhaustion_eta
                    .get_or_create(&PoolLabel { pool })
                    .set(secs);
            }
        }
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Observer for Metrics {
    fn commit(&self, batch: usize, took: Duration, ok: bool) {
        if ok {
            self.commit_duration.observe(took.as_secs_f64());
            self.batch_size.observe(batch as f64);
        }
    }

    fn synced(&self, took: Duration) {
        self.sync_duration.observe(took.as_secs_f64());
    }

    fn mutation(&self, kind: &'static str, _pool: Option<&str>, ok: bool, _took: Duration) {
        self.mutations
            .get_or_create(&KindResult {
                kind: kind.into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
    }

    fn reclaimed(&self, n: u64) {
        self.reclaimed.inc_by(n);
    }
}
