//! The exhaustion forecast of every pool, kept current by housekeeping, and the at-risk
//! marker derived from it.
//!
//! `GET /v1/pools`, `GET /v1/usage` and `/metrics` all need every pool's ETA. Fitting
//! each pool's samples from the store on every such request would cost a store scan per
//! pool per request, so the samples of one window (`--forecast-window`, 7 days by
//! default; the minimum span is the smaller of 1 hour and a quarter of it) are kept here in
//! memory and refreshed after each housekeeping run, which is also when new samples are
//! taken: each refresh reads only the samples taken since the previous one. The forecast
//! route (`/v1/pools/{name}/forecast`) does not use this cache: it takes any window and
//! reads the store itself.
//!
//! The at-risk marker combines the cached ETA with the pool's usage at the time of the
//! request, so a pool that fills up is marked at once, not at the next housekeeping run.
//! The arithmetic is kipam-core's ([`kipam_core::forecast`]); this module only feeds it.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;

use kipam_api::planning::AtRisk;
use kipam_core::Millis;
use kipam_core::forecast::{
    Forecast, ForecastOptions, ForecastStatus, RiskThresholds, Sample, at_risk, forecast,
};

use crate::engine::{self, Engine, EngineError};

/// An engine usage sample as the forecast reads it: the usable addresses are the size.
pub fn to_sample(s: &engine::Sample) -> Sample {
    Sample {
        at: s.time,
        used: s.used,
        size: s.usable,
    }
}

#[derive(Default)]
struct Series {
    samples: VecDeque<Sample>,
    forecast: Option<Forecast>,
}

/// Every pool's samples of the default window and its latest forecast.
pub struct Forecasts {
    thresholds: RiskThresholds,
    opts: ForecastOptions,
    pools: RwLock<HashMap<String, Series>>,
}

impl Forecasts {
    /// An empty cache of forecasts over `window_ms`, judging risk by `thresholds`.
    pub fn new(thresholds: RiskThresholds, window_ms: Millis) -> Forecasts {
        let defaults = ForecastOptions::default();
        Forecasts {
            thresholds,
            opts: ForecastOptions {
                window_ms,
                min_span_ms: defaults.min_span_ms.min(window_ms / 4),
                ..defaults
            },
            pools: RwLock::new(HashMap::new()),
        }
    }

    /// The at-risk thresholds.
    pub fn thresholds(&self) -> &RiskThresholds {
        &self.thresholds
    }

    /// Reads the samples taken since the last refresh, drops those that left the window,
    /// forgets deleted pools and re-fits every pool. Blocking: reads the store.
    pub fn refresh(&self, engine: &Engine) -> Result<(), EngineError> {
        let now = engine.now();
        let from = now.saturating_sub(self.opts.window_ms);
        let names: Vec<String> =
            engine.read(|i| i.pools().map(|p| p.config().name.clone()).collect());
        let last: HashMap<String, Millis> = {
            let pools = self.read();
            pools
                .iter()
                .filter_map(|(n, s)| s.samples.back().map(|x| (n.clone(), x.at)))
                .collect()
        };
        let mut fresh = Vec::with_capacity(names.len());
        for name in names {
            let since = last.get(&name).map_or(from, |t| t.saturating_add(1));
            let new: Vec<Sample> = engine
                .samples(&name, since)?
                .iter()
                .map(to_sample)
                .collect();
            fresh.push((name, new));
        }
        let mut pools = self
            .pools
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut kept = HashMap::with_capacity(fresh.len());
        for (name, new) in fresh {
            let mut series = pools.remove(&name).unwrap_or_default();
            series.samples.extend(new);
            while series.samples.front().is_some_and(|s| s.at < from) {
                series.samples.pop_front();
            }
            let all: Vec<Sample> = series.samples.iter().copied().collect();
            series.forecast = Some(forecast(&all, now, &self.opts));
            kept.insert(name, series);
        }
        *pools = kept;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Series>> {
        self.pools
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The latest forecast of `pool` (None before its first refresh).
    pub fn get(&self, pool: &str) -> Option<Forecast> {
        self.read().get(pool).and_then(|s| s.forecast.clone())
    }

    /// Whether `pool`, with `usage_pct` used now, is at risk at `now`.
    pub fn at_risk(&self, pool: &str, usage_pct: f64, now: Millis) -> Option<AtRisk> {
        let eta = self
            .read()
            .get(pool)
            .and_then(|s| s.forecast.as_ref())
            .and_then(|f| f.eta);
        at_risk(usage_pct, eta, now, &self.thresholds)
            .as_ref()
            .map(AtRisk::new)
    }

    /// Seconds until exhaustion of every pool that has an ETA: growing pools (seconds
    /// from `now`) and full ones (0). Pools that are not growing, declining or lack data
    /// have none (see `kipam_pool_exhaustion_eta_seconds` in [`crate::metrics`]).
    pub fn etas(&self, now: Millis) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = self
            .read()
            .iter()
            .filter_map(|(name, s)| {
                let f = s.forecast.as_ref()?;
                match f.status {
                    ForecastStatus::Full => Some((name.clone(), 0.0)),
                    ForecastStatus::Growing => f
                        .eta
                        .map(|eta| (name.clone(), eta.saturating_sub(now) as f64 / 1000.0)),
                    _ => None,
                }
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl Default for Forecasts {
    fn default() -> Self {
        Forecasts::new(
            RiskThresholds::default(),
            ForecastOptions::default().window_ms,
        )
    }
}
