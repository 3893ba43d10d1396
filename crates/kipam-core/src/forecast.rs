//! Exhaustion forecast: when will a pool (or a node's blocks) run out, from its usage
//! samples, and is it at risk.
//!
//! kipamd records usage samples (time, addresses used, size); this module turns them into
//! an estimate with its evidence: the window used, the growth rate in addresses per day,
//! R², a confidence level, the ETA and a status. "Not growing" is a valid answer, and so
//! is "not enough data": a forecast that guesses is worse than none.
//!
//! # Method, and why
//! An ordinary least-squares line through the samples of a trailing window
//! (`[now - window, now]`). Pods churn: a pool's usage jumps up and down by hundreds as
//! pods come and go, so the last sample, or the difference of two, says little; a fitted
//! line averages the churn out, and its slope's standard error tells a real trend from
//! noise. The level the ETA starts from is the fitted value at `now`, not the last sample,
//! for the same reason. Holt's linear smoothing would do as well on churn but needs two
//! tuning constants and has no R² to show; the window is the one knob here.
//!
//! - **Status**: `full` when the latest sample is at or over the size; `not-enough-data`
//!   with fewer than `minSamples` samples or a span shorter than `minSpanMs` in the
//!   window; otherwise the slope's t-statistic (slope / standard error) decides:
//!   `growing` above [`SIGNIFICANT_T`], `declining` below its negative, else
//!   `not-growing` (the trend is indistinguishable from churn).
//! - **Confidence**: for a trend (growing, declining), R² and the sample count: high with
//!   R² ≥ 0.8 and 20+ samples, medium with R² ≥ 0.5 and 10+, else low. For not-growing,
//!   R² says nothing (there is no trend to explain), so it follows the sample count and
//!   how much of the window they span. A full pool is high, missing data low.
//! - **Step changes**: a jump in usage (a batch of pods) inside the window reads as
//!   growth until the window has moved past it; a change of growth rate is picked up in
//!   proportion to how much of the window lies after it. The window bounds how long the
//!   past lingers: short windows adapt fast and are noisier, long ones are steadier.
//!
//! Pure: time is the `now` argument, so tests use an injected clock.

use serde::{Deserialize, Serialize};

use crate::block::Millis;

/// Milliseconds in a day.
pub const DAY_MS: Millis = 86_400_000;
/// |t| of the slope above which it counts as a trend (about 3 standard errors: a flat,
/// churning pool is called growing by chance about once in a thousand forecasts).
pub const SIGNIFICANT_T: f64 = 3.0;

/// One usage sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// When it was taken.
    pub at: Millis,
    /// Addresses (or prefixes' addresses) in use.
    pub used: u64,
    /// Addresses the pool holds at that time.
    pub size: u64,
}

/// How the forecast reads the samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ForecastOptions {
    /// Trailing window of samples to fit (default 7 days).
    pub window_ms: Millis,
    /// Fewest samples in the window to fit a trend (default 6).
    pub min_samples: usize,
    /// Shortest span the window's samples must cover (default 1 hour).
    pub min_span_ms: Millis,
}

impl Default for ForecastOptions {
    fn default() -> Self {
        ForecastOptions {
            window_ms: 7 * DAY_MS,
            min_samples: 6,
            min_span_ms: 3_600_000,
        }
    }
}

/// What the forecast concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForecastStatus {
    /// Usage grows beyond churn; `eta` says when the pool runs out.
    Growing,
    /// No trend beyond churn.
    NotGrowing,
    /// Usage falls beyond churn.
    Declining,
    /// The latest sample is at or over the size.
    Full,
    /// Too few samples, or too short a span, in the window.
    NotEnoughData,
}

/// How far to trust the forecast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Confidence {
    /// Few samples or a poor fit.
    Low,
    /// A usable estimate.
    Medium,
    /// Many samples and a good fit.
    High,
}

/// The forecast of one pool, with its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Forecast {
    /// The conclusion.
    pub status: ForecastStatus,
    /// The window asked for.
    pub window_ms: Millis,
    /// First sample used (`now - window` when there was none).
    pub from: Millis,
    /// Last sample used (`now` when there was none).
    pub to: Millis,
    /// Samples in the window.
    pub samples: usize,
    /// Addresses used at the latest sample (0 without samples).
    pub used: u64,
    /// Pool size at the latest sample (0 without samples).
    pub size: u64,
    /// `used / size` in percent (100 for a pool of size 0).
    pub usage_pct: f64,
    /// Fitted growth, addresses per day (negative when declining; 0 without a fit).
    pub growth_per_day: f64,
    /// Share of the variation the line explains (0 without a fit or without variation).
    pub r_squared: f64,
    /// How far to trust it.
    pub confidence: Confidence,
    /// When the pool runs out: in the future when growing, the first sample of the
    /// current full streak when full, else `None` (also when too far to represent).
    pub eta: Option<Millis>,
}

impl Forecast {
    /// Whether the pool is at risk by `thresholds` (see [`at_risk`]).
    pub fn at_risk(&self, now: Millis, thresholds: &RiskThresholds) -> Option<Risk> {
        at_risk(self.usage_pct, self.eta, now, thresholds)
    }
}

/// Forecasts exhaustion from `samples` (any order; those after `now` are ignored).
///
/// Never panics and never returns NaN: degenerate inputs (no samples, one instant, size
/// 0, values near `u64::MAX`) give `not-enough-data` or `full`.
pub fn forecast(samples: &[Sample], now: Millis, opts: &ForecastOptions) -> Forecast {
    let mut past: Vec<&Sample> = samples.iter().filter(|s| s.at <= now).collect();
    past.sort_by_key(|s| s.at);
    let from_limit = now.saturating_sub(opts.window_ms);
    let window: Vec<&Sample> = past
        .iter()
        .copied()
        .filter(|s| s.at >= from_limit)
        .collect();

    let mut out = Forecast {
        status: ForecastStatus::NotEnoughData,
        window_ms: opts.window_ms,
        from: window.first().map_or(from_limit, |s| s.at),
        to: window.last().map_or(now, |s| s.at),
        samples: window.len(),
        used: 0,
        size: 0,
        usage_pct: 0.0,
        growth_per_day: 0.0,
        r_squared: 0.0,
        confidence: Confidence::Low,
        eta: None,
    };
    let Some(latest) = past.last() else {
        return out;
    };
    out.used = latest.used;
    out.size = latest.size;
    out.usage_pct = usage_pct(latest.used, latest.size);

    let fit = fit_line(&window, opts);
    if let Some(fit) = &fit {
        out.growth_per_day = fit.slope;
        out.r_squared = fit.r_squared;
    }

    if latest.used >= latest.size {
        out.status = ForecastStatus::Full;
        out.confidence = Confidence::High;
        let since = past
            .iter()
            .rev()
            .take_while(|s| s.used >= s.size)
            .last()
            .map_or(latest.at, |s| s.at);
        out.eta = Some(since);
        return out;
    }
    let Some(fit) = fit else {
        return out;
    };

    let n = window.len();
    out.status = if fit.t >= SIGNIFICANT_T {
        ForecastStatus::Growing
    } else if fit.t <= -SIGNIFICANT_T {
        ForecastStatus::Declining
    } else {
        ForecastStatus::NotGrowing
    };
    out.confidence = match out.status {
        ForecastStatus::Growing | ForecastStatus::Declining => {
            if n >= 20 && fit.r_squared >= 0.8 {
                Confidence::High
            } else if n >= 10 && fit.r_squared >= 0.5 {
                Confidence::Medium
            } else {
                Confidence::Low
            }
        }
        _ => {
            let span = out.to.saturating_sub(out.from);
            if n >= 20 && span >= opts.window_ms / 2 {
                Confidence::High
            } else if n >= 10 {
                Confidence::Medium
            } else {
                Confidence::Low
            }
        }
    };
    if out.status == ForecastStatus::Growing {
        out.eta = eta(&fit, latest.size, now);
    }
    out
}

fn usage_pct(used: u64, size: u64) -> f64 {
    if size == 0 {
        100.0
    } else {
        // Precision loss above 2^53 addresses is irrelevant for a percentage.
        used as f64 / size as f64 * 100.0
    }
}

/// A least-squares line through the window, in days since its first sample.
struct Line {
    /// Addresses per day.
    slope: f64,
    /// Fitted usage at `x_mean`.
    y_mean: f64,
    x_mean: f64,
    /// Days from the first sample; `x = 0` is `origin`.
    origin: Millis,
    r_squared: f64,
    /// slope / standard error (±infinity for an exact, non-flat line; 0 when flat).
    t: f64,
}

fn fit_line(window: &[&Sample], opts: &ForecastOptions) -> Option<Line> {
    let n = window.len();
    let (first, last) = (window.first()?, window.last()?);
    if n < opts.min_samples.max(3) || last.at - first.at < opts.min_span_ms.max(1) {
        return None;
    }
    let origin = first.at;
    let day = DAY_MS as f64;
    let xs: Vec<f64> = window
        .iter()
        .map(|s| (s.at - origin) as f64 / day)
        .collect();
    let ys: Vec<f64> = window.iter().map(|s| s.used as f64).collect();
    let nf = n as f64;
    let x_mean = xs.iter().sum::<f64>() / nf;
    let y_mean = ys.iter().sum::<f64>() / nf;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(&ys) {
        let (dx, dy) = (x - x_mean, y - y_mean);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if sxx.is_nan() || sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let ss_res = (syy - slope * sxy).max(0.0);
    let r_squared = if syy > 0.0 {
        (1.0 - ss_res / syy).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let se = (ss_res / (nf - 2.0) / sxx).sqrt();
    // Relative to the spread of usage, an error this small is rounding: an exact line.
    let t = if slope == 0.0 {
        0.0
    } else if se <= f64::EPSILON * slope.abs() * 1e3 {
        f64::INFINITY.copysign(slope)
    } else {
        slope / se
    };
    Some(Line {
        slope,
        y_mean,
        x_mean,
        origin,
        r_squared,
        t,
    })
}

/// When the fitted line reaches `size`, starting from its value at `now`.
fn eta(line: &Line, size: u64, now: Millis) -> Option<Millis> {
    if line.slope.is_nan() || line.slope <= 0.0 {
        return None;
    }
    let day = DAY_MS as f64;
    let x_now = now.saturating_sub(line.origin) as f64 / day;
    let level = line.y_mean + line.slope * (x_now - line.x_mean);
    let remaining = size as f64 - level;
    if remaining <= 0.0 {
        return Some(now);
    }
    let ms = remaining / line.slope * day;
    // `u64::MAX as f64` rounds up to 2^64, so `<` keeps the cast in range.
    (ms.is_finite() && ms < u64::MAX as f64).then(|| now.saturating_add(ms.round() as u64))
}

/// When a pool counts as at risk.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RiskThresholds {
    /// An ETA sooner than this (default 7 days).
    pub eta_within_ms: Millis,
    /// Usage above this percentage (default 80).
    pub usage_pct: f64,
}

impl Default for RiskThresholds {
    fn default() -> Self {
        RiskThresholds {
            eta_within_ms: 7 * DAY_MS,
            usage_pct: 80.0,
        }
    }
}

/// Why a pool is at risk.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Risk {
    /// Exhaustion is expected within the threshold (or has happened: `eta ≤ now`).
    EtaSoon {
        /// The ETA.
        eta: Millis,
        /// Milliseconds until then (0 when past).
        in_ms: Millis,
    },
    /// Usage is over the threshold.
    HighUsage {
        /// Usage, percent.
        usage_pct: f64,
        /// The threshold, percent.
        threshold_pct: f64,
    },
}

/// Whether a pool with `usage_pct` used and exhaustion expected at `eta` is at risk at
/// `now`. The ETA is checked first, being the more urgent; `None` when neither threshold
/// is crossed (a NaN usage crosses nothing).
pub fn at_risk(
    usage_pct: f64,
    eta: Option<Millis>,
    now: Millis,
    thresholds: &RiskThresholds,
) -> Option<Risk> {
    if let Some(eta) = eta {
        let in_ms = eta.saturating_sub(now);
        if in_ms < thresholds.eta_within_ms {
            return Some(Risk::EtaSoon { eta, in_ms });
        }
    }
    (usage_pct > thresholds.usage_pct).then_some(Risk::HighUsage {
        usage_pct,
        threshold_pct: thresholds.usage_pct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: Millis, used: u64) -> Sample {
        Sample {
            at,
            used,
            size: 1000,
        }
    }

    #[test]
    fn exact_line_has_infinite_t_and_full_r_squared() {
        let w: Vec<Sample> = (0..10).map(|i| s(i * DAY_MS, 100 + 10 * i)).collect();
        let refs: Vec<&Sample> = w.iter().collect();
        let line = fit_line(&refs, &ForecastOptions::default()).expect("fit");
        assert!((line.slope - 10.0).abs() < 1e-9);
        assert!(line.t.is_infinite() && line.t > 0.0);
        assert!((line.r_squared - 1.0).abs() < 1e-12);
    }

    #[test]
    fn one_instant_is_no_line() {
        let w: Vec<Sample> = (0..10).map(|i| s(5, i)).collect();
        let refs: Vec<&Sample> = w.iter().collect();
        assert!(fit_line(&refs, &ForecastOptions::default()).is_none());
    }
}
