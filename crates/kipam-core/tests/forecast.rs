//! Tests of the exhaustion forecast on synthetic usage series with known answers, with an
//! injected clock (`now` is an argument; nothing sleeps): linear growth, growth under
//! heavy churn, flat, declining, step changes (and how the window makes the forecast
//! adapt), full pools, too little data, and the at-risk threshold.

use kipam_core::Millis;
use kipam_core::forecast::{
    Confidence, DAY_MS, ForecastOptions, ForecastStatus, Risk, RiskThresholds, Sample, at_risk,
    forecast,
};

/// The injected clock's origin: day 0 of every series.
const T0: Millis = 1_700_000_000_000;
const HOUR: Millis = 3_600_000;

/// Samples every `step` from `from_day` to `to_day` (inclusive), `used` given by `f(day)`.
fn series(
    from_day: f64,
    to_day: f64,
    step: Millis,
    size: u64,
    mut f: impl FnMut(f64) -> f64,
) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut at = T0 + (from_day * DAY_MS as f64) as Millis;
    let end = T0 + (to_day * DAY_MS as f64) as Millis;
    while at <= end {
        let day = (at - T0) as f64 / DAY_MS as f64;
        out.push(Sample {
            at,
            used: f(day).round().max(0.0) as u64,
            size,
        });
        at += step;
    }
    out
}

fn day(d: f64) -> Millis {
    T0 + (d * DAY_MS as f64) as Millis
}

/// A deterministic noise source (xorshift64*), uniform in `[-amp, amp]`.
struct Noise(u64);

impl Noise {
    fn next(&mut self, amp: f64) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        (r as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * amp
    }
}

fn rel_err(got: Millis, want: Millis, now: Millis) -> f64 {
    (got as f64 - want as f64).abs() / (want - now) as f64
}

#[test]
fn linear_growth_eta_within_one_percent() {
    // 20,000 + 1,000/day in a 100,000 pool: at day 10, 30,000 used, 70 days left.
    let samples = series(0.0, 10.0, HOUR, 100_000, |d| 20_000.0 + 1_000.0 * d);
    let now = day(10.0);
    let f = forecast(&samples, now, &ForecastOptions::default());
    assert_eq!(f.status, ForecastStatus::Growing);
    assert_eq!(f.samples, 7 * 24 + 1, "the 7-day window");
    assert_eq!((f.from, f.to), (day(3.0), now));
    assert!(
        (f.growth_per_day - 1_000.0).abs() < 10.0,
        "{}",
        f.growth_per_day
    );
    assert!(f.r_squared > 0.999);
    assert_eq!(f.confidence, Confidence::High);
    assert_eq!((f.used, f.size), (30_000, 100_000));
    assert!((f.usage_pct - 30.0).abs() < 1e-9);
    let eta = f.eta.expect("growing has an ETA");
    let truth = day(80.0);
    assert!(rel_err(eta, truth, now) < 0.01, "eta {eta} vs {truth}");
    assert_eq!(f.at_risk(now, &RiskThresholds::default()), None);
}

#[test]
fn growth_under_heavy_churn_stays_close() {
    // The same 1,000/day trend buried in ±5,000 of churn every 5 minutes: any two
    // samples disagree by more than days of growth, the fitted line does not.
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let samples = series(0.0, 20.0, 5 * 60_000, 200_000, |d| {
        40_000.0 + 1_000.0 * d + noise.next(5_000.0)
    });
    let now = day(20.0);
    let opts = ForecastOptions {
        window_ms: 14 * DAY_MS,
        ..ForecastOptions::default()
    };
    let f = forecast(&samples, now, &opts);
    assert_eq!(f.status, ForecastStatus::Growing);
    assert!(
        (f.growth_per_day - 1_000.0).abs() < 50.0,
        "{}",
        f.growth_per_day
    );
    // At day 20: 60,000 used of 200,000 → 140 days left.
    let truth = day(160.0);
    let eta = f.eta.expect("growing");
    assert!(
        rel_err(eta, truth, now) < 0.05,
        "eta off by {:.3}",
        rel_err(eta, truth, now)
    );
    // The fit explains only part of the variation: confidence says so.
    assert!(f.r_squared > 0.5 && f.r_squared < 0.95, "{}", f.r_squared);
    assert_ne!(f.confidence, Confidence::Low);
}

#[test]
fn flat_usage_is_not_growing() {
    let mut noise = Noise(42);
    let samples = series(0.0, 7.0, HOUR, 100_000, |_| 40_000.0 + noise.next(2_000.0));
    let f = forecast(&samples, day(7.0), &ForecastOptions::default());
    assert_eq!(f.status, ForecastStatus::NotGrowing);
    assert_eq!(f.eta, None);
    assert!(f.growth_per_day.abs() < 200.0, "{}", f.growth_per_day);
    assert_eq!(
        f.confidence,
        Confidence::High,
        "many samples over the whole window"
    );

    // Exactly flat, no churn at all: still not growing, and no NaN anywhere.
    let still = series(0.0, 7.0, HOUR, 100_000, |_| 40_000.0);
    let f = forecast(&still, day(7.0), &ForecastOptions::default());
    assert_eq!(f.status, ForecastStatus::NotGrowing);
    assert_eq!((f.growth_per_day, f.r_squared), (0.0, 0.0));
}

#[test]
fn declining_usage_has_no_eta() {
    let mut noise = Noise(7);
    let samples = series(0.0, 7.0, HOUR, 100_000, |d| {
        60_000.0 - 800.0 * d + noise.next(500.0)
    });
    let f = forecast(&samples, day(7.0), &ForecastOptions::default());
    assert_eq!(f.status, ForecastStatus::Declining);
    assert_eq!(f.eta, None);
    assert!(
        (f.growth_per_day + 800.0).abs() < 20.0,
        "{}",
        f.growth_per_day
    );
    assert_eq!(f.confidence, Confidence::High);
}

/// A one-off jump (a batch of 20,000 pods at day 20) reads as growth while it lies in the
/// window, and stops counting once the window has moved past it: the window length bounds
/// how long a step lingers.
#[test]
fn step_jump_counts_until_the_window_moves_past_it() {
    let samples = series(0.0, 30.0, HOUR, 100_000, |d| {
        if d < 20.0 { 10_000.0 } else { 30_000.0 }
    });
    let opts = ForecastOptions::default(); // 7 days

    let during = forecast(&samples, day(22.0), &opts);
    assert_eq!(
        during.status,
        ForecastStatus::Growing,
        "the step is in the window"
    );
    assert!(during.eta.is_some());
    assert_eq!(during.used, 30_000);

    let after = forecast(&samples, day(27.5), &opts);
    assert!(after.from > day(20.0), "the window starts after the step");
    assert_eq!(after.status, ForecastStatus::NotGrowing);
    assert_eq!(after.eta, None);
    assert_eq!(after.used, 30_000);
}

/// Growth speeding up from 100 to 1,000 a day at day 20: a window that lies after the
/// change sees only the new rate (ETA within 1%); a 30-day window averages old and new
/// and lags behind.
#[test]
fn growth_rate_change_is_picked_up_by_a_short_window() {
    let used = |d: f64| {
        if d < 20.0 {
            10_000.0 + 100.0 * d
        } else {
            12_000.0 + 1_000.0 * (d - 20.0)
        }
    };
    let samples = series(0.0, 23.0, HOUR, 100_000, used);
    let now = day(23.0);

    let short = ForecastOptions {
        window_ms: 2 * DAY_MS,
        ..ForecastOptions::default()
    };
    let f = forecast(&samples, now, &short);
    assert_eq!(f.status, ForecastStatus::Growing);
    assert!(
        (f.growth_per_day - 1_000.0).abs() < 10.0,
        "{}",
        f.growth_per_day
    );
    // 15,000 used at day 23 → 85 days left at 1,000/day.
    let truth = day(108.0);
    let eta = f.eta.expect("growing");
    assert!(rel_err(eta, truth, now) < 0.01);

    let long = ForecastOptions {
        window_ms: 30 * DAY_MS,
        ..ForecastOptions::default()
    };
    let f = forecast(&samples, now, &long);
    assert_eq!(f.status, ForecastStatus::Growing);
    assert!(
        f.growth_per_day > 100.0 && f.growth_per_day < 700.0,
        "a long window lags: {}",
        f.growth_per_day
    );
    assert!(f.eta.expect("growing") > truth, "and so is optimistic");
}

#[test]
fn not_enough_data() {
    let opts = ForecastOptions::default();
    let now = day(10.0);

    let f = forecast(&[], now, &opts);
    assert_eq!(f.status, ForecastStatus::NotEnoughData);
    assert_eq!((f.samples, f.used, f.size, f.eta), (0, 0, 0, None));
    assert_eq!(f.confidence, Confidence::Low);

    // Three samples: too few, but the latest usage is still reported.
    let few = series(9.0, 10.0, 12 * HOUR, 10_000, |d| 100.0 * d);
    let f = forecast(&few, now, &opts);
    assert_eq!(f.status, ForecastStatus::NotEnoughData);
    assert_eq!((f.samples, f.used), (3, 1_000));

    // Many samples, but over ten minutes only.
    let burst = series(10.0 - 10.0 / 1440.0, 10.0, 60_000, 1_000, |d| d * 10.0);
    assert!(burst.len() >= 10);
    assert_eq!(
        forecast(&burst, now, &opts).status,
        ForecastStatus::NotEnoughData
    );

    // Many samples at one instant.
    let instant: Vec<Sample> = (0..50)
        .map(|i| Sample {
            at: now,
            used: i,
            size: 1_000,
        })
        .collect();
    assert_eq!(
        forecast(&instant, now, &opts).status,
        ForecastStatus::NotEnoughData
    );

    // Plenty of history, but all of it older than the window.
    let old = series(0.0, 2.0, HOUR, 1_000, |d| 100.0 * d);
    let f = forecast(&old, now, &opts);
    assert_eq!(
        (f.status, f.samples, f.used),
        (ForecastStatus::NotEnoughData, 0, 200)
    );

    // Samples "from the future" (clock skew) are ignored.
    let future = series(11.0, 12.0, HOUR, 1_000, |d| 10.0 * d);
    let f = forecast(&future, now, &opts);
    assert_eq!(
        (f.status, f.samples, f.used),
        (ForecastStatus::NotEnoughData, 0, 0)
    );
}

#[test]
fn full_pool_and_degenerate_sizes() {
    let mut samples = series(0.0, 5.0, HOUR, 1_000, |d| (300.0 * d).min(1_000.0));
    let now = day(5.0);
    let f = forecast(&samples, now, &ForecastOptions::default());
    assert_eq!(f.status, ForecastStatus::Full);
    // Full since the first sample at 1,000 (day 3.33..., rounded up to the hour).
    let since = samples
        .iter()
        .find(|s| s.used >= 1_000)
        .map(|s| s.at)
        .expect("fills up");
    assert_eq!(f.eta, Some(since));
    assert_eq!(f.usage_pct, 100.0);
    assert_eq!(
        f.at_risk(now, &RiskThresholds::default()),
        Some(Risk::EtaSoon {
            eta: since,
            in_ms: 0
        })
    );

    // Input order does not matter.
    samples.reverse();
    assert_eq!(
        forecast(&samples, now, &ForecastOptions::default()).eta,
        Some(since)
    );

    // A pool of size 0 is full; huge values do not overflow.
    let zero = [Sample {
        at: now,
        used: 0,
        size: 0,
    }];
    assert_eq!(
        forecast(&zero, now, &ForecastOptions::default()).status,
        ForecastStatus::Full
    );
    let huge = series(0.0, 7.0, HOUR, u64::MAX, |d| 1e18 * d);
    let f = forecast(&huge, day(7.0), &ForecastOptions::default());
    assert_eq!(f.status, ForecastStatus::Growing);
    assert!(f.eta.is_some_and(|e| e > day(7.0)));
}

#[test]
fn at_risk_thresholds() {
    let t = RiskThresholds::default();
    let now = day(0.0);
    assert_eq!(at_risk(50.0, None, now, &t), None);
    assert_eq!(at_risk(50.0, Some(day(30.0)), now, &t), None);
    assert_eq!(
        at_risk(50.0, Some(day(3.0)), now, &t),
        Some(Risk::EtaSoon {
            eta: day(3.0),
            in_ms: 3 * DAY_MS
        })
    );
    assert_eq!(
        at_risk(85.0, None, now, &t),
        Some(Risk::HighUsage {
            usage_pct: 85.0,
            threshold_pct: 80.0
        })
    );
    assert_eq!(at_risk(80.0, None, now, &t), None, "over 80%, not at 80%");
    assert_eq!(at_risk(f64::NAN, None, now, &t), None);
    // The ETA is reported first when both apply.
    assert!(matches!(
        at_risk(95.0, Some(day(1.0)), now, &t),
        Some(Risk::EtaSoon { .. })
    ));
    // Exactly seven days away is not sooner than seven days.
    assert_eq!(at_risk(10.0, Some(day(7.0)), now, &t), None);
}
