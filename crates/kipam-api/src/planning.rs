//! Planning on the wire: the subnet planner (`POST /v1/plan`) and the exhaustion forecast
//! (`GET /v1/pools/{name}/forecast`), with the at-risk marker that pools and usage carry.
//!
//! The planner's request and plan are kipam-core's [`PlanRequest`] and [`Plan`] as they
//! are: they were written as a wire format (camelCase, unknown fields refused), and
//! `kipamctl plan` reads the same shape from YAML or JSON files, so a file that plans
//! offline plans the same on kipamd. The forecast is converted: engine times
//! (milliseconds) become RFC 3339 strings like every other time of the API, and `used` and
//! `size` are decimal strings like every count that may exceed 2^53.
//!
//! Durations in queries and flags (`window=7d`) are parsed and printed here so that
//! kipamd and kipamctl agree on their syntax: [`parse_duration`], [`format_duration`].

use kipam_core::Millis;
use kipam_core::forecast::{Confidence, Forecast, ForecastStatus, Risk, RiskThresholds};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use utoipa::ToSchema;

pub use kipam_core::planner::{Plan, PlanRequest};

/// Why a pool is at risk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RiskReason {
    /// The forecast runs out sooner than the ETA threshold (or has run out).
    EtaSoon,
    /// Usage is above the utilization threshold.
    HighUsage,
}

/// The at-risk marker of a pool: why, in words and as a code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AtRisk {
    /// The threshold crossed (the ETA first, being the more urgent).
    pub reason: RiskReason,
    /// For a person: "runs out in 2d 3h" or "91.2% used, above the 80% threshold".
    pub message: String,
    /// Expected exhaustion (RFC 3339), for `eta-soon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<String>,
    /// Seconds until then (0 when past), for `eta-soon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
}

impl AtRisk {
    /// The marker of a [`Risk`] found by [`kipam_core::forecast::at_risk`].
    pub fn new(risk: &Risk) -> AtRisk {
        match *risk {
            Risk::EtaSoon { eta, in_ms } => AtRisk {
                reason: RiskReason::EtaSoon,
                message: if in_ms == 0 {
                    "has run out".into()
                } else {
                    format!("runs out in {}", format_duration(in_ms))
                },
                eta: Some(crate::time::format(eta)),
                eta_seconds: Some(in_ms / 1000),
            },
            Risk::HighUsage {
                usage_pct,
                threshold_pct,
            } => AtRisk {
                reason: RiskReason::HighUsage,
                message: format!("{usage_pct:.1}% used, above the {threshold_pct}% threshold"),
                eta: None,
                eta_seconds: None,
            },
        }
    }
}

/// Query of `GET /v1/pools/{name}/forecast`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ForecastQuery {
    /// Trailing window of usage samples to fit: `30s`, `90m`, `12h`, `7d` or seconds
    /// (default `7d`, at most `365d`).
    #[serde(default)]
    pub window: Option<String>,
    /// Fewest samples in the window to fit a trend (default 6, at least 3).
    #[serde(default)]
    pub min_samples: Option<u32>,
    /// Shortest span the window's samples must cover (default the smaller of 1 hour and a
    /// quarter of the window).
    #[serde(default)]
    pub min_span: Option<String>,
}

/// The node parameter of `GET /v1/pools/{name}/forecast` (a query of its own beside
/// [`ForecastQuery`], which [`crate::client::Client::forecast`] sends whole).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ForecastNodeQuery {
    /// Forecast this node's blocks in the pool instead of the whole pool: when they are
    /// full (with `maxBlocksPerNode`, when the node can take no more addresses without
    /// borrowing from other nodes' blocks). 404 when the node has no blocks in the pool
    /// and no samples in the window.
    #[serde(default)]
    pub node: Option<String>,
}

/// A pool's exhaustion forecast, with its evidence (`GET /v1/pools/{name}/forecast`),
/// or that of one node's blocks in the pool (`?node=`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForecastView {
    /// The pool.
    pub pool: String,
    /// The node whose blocks are forecast (`?node=`); absent for the whole pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When the forecast was made (RFC 3339).
    pub time: String,
    /// The conclusion: `growing`, `not-growing`, `declining`, `full`, `not-enough-data`.
    #[schema(value_type = crate::schema::ForecastStatus)]
    pub status: ForecastStatus,
    /// The window used, as given or defaulted (`7d`).
    pub window: String,
    /// The window in seconds.
    pub window_seconds: u64,
    /// First sample used (RFC 3339; the window's start when there was none).
    pub from: String,
    /// Last sample used (RFC 3339; now when there was none).
    pub to: String,
    /// Samples in the window.
    pub samples: u64,
    /// Addresses in use now (held, quarantined, leased; for a node, held and quarantined
    /// in its blocks), as a decimal string.
    #[schema(example = "1200")]
    pub used: String,
    /// Usable addresses now (size minus reserved; for a node, what its blocks can hold:
    /// `maxBlocksPerNode` blocks, or its current blocks without a limit, minus the reserved
    /// addresses of its current blocks), as a decimal string.
    #[schema(example = "65280")]
    pub size: String,
    /// `used / size` in percent, now.
    pub usage_pct: f64,
    /// Fitted growth in addresses per day (negative when declining).
    pub growth_per_day: f64,
    /// Share of the variation the fitted line explains (0..1).
    pub r_squared: f64,
    /// How far to trust it: `low`, `medium`, `high`.
    #[schema(value_type = crate::schema::Confidence)]
    pub confidence: Confidence,
    /// When the pool runs out (RFC 3339): in the future when growing, when it filled up
    /// when full; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<String>,
    /// Seconds from `time` until `eta` (0 when past).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    /// Present when the pool is at risk by kipamd's thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_risk: Option<AtRisk>,
}

impl ForecastView {
    /// The wire form of `f`, made at `now`, judged by `thresholds`, with the usage of its
    /// latest sample (kipamd replaces it with the usage at `now`).
    pub fn new(pool: &str, f: &Forecast, now: Millis, thresholds: &RiskThresholds) -> ForecastView {
        ForecastView {
            pool: pool.to_string(),
            node: None,
            time: crate::time::format(now),
            status: f.status,
            window: format_duration(f.window_ms),
            window_seconds: f.window_ms / 1000,
            from: crate::time::format(f.from),
            to: crate::time::format(f.to),
            samples: f.samples as u64,
            used: f.used.to_string(),
            size: f.size.to_string(),
            usage_pct: f.usage_pct,
            growth_per_day: f.growth_per_day,
            r_squared: f.r_squared,
            confidence: f.confidence,
            eta: f.eta.map(crate::time::format),
            eta_seconds: f.eta.map(|e| e.saturating_sub(now) / 1000),
            at_risk: f.at_risk(now, thresholds).as_ref().map(AtRisk::new),
        }
    }
}

/// A duration that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{input:?} is not a duration: {reason} (examples: 30s, 90m, 12h, 7d)")]
pub struct DurationError {
    /// What was given.
    pub input: String,
    /// Why not.
    pub reason: &'static str,
}

/// Parses `500ms`, `30s`, `90m`, `12h`, `7d`, `2w` or a bare number of seconds into
/// milliseconds. Zero and overflow are errors.
pub fn parse_duration(input: &str) -> Result<Millis, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(err("it must start with a number"));
    }
    let n: u64 = num.parse().map_err(|_| err("the number is too large"))?;
    let scale: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(err("the unit must be ms, s, m, h, d or w")),
    };
    let ms = n.checked_mul(scale).ok_or_else(|| err("it is too long"))?;
    if ms == 0 {
        return Err(err("it must be longer than zero"));
    }
    Ok(ms)
}

/// Prints milliseconds as the two largest units: `7d`, `2d 3h`, `5h 12m`, `42s`, `250ms`.
pub fn format_duration(ms: Millis) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let mut parts = Vec::new();
    let mut rest = ms;
    for (size, unit) in UNITS {
        if rest >= size {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        } else if !parts.is_empty() {
            // Keep the two units adjacent: "1d 0h" is clearer dropped than padded.
            break;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("7d").unwrap(), 7 * 86_400_000);
        assert_eq!(parse_duration("90m").unwrap(), 5_400_000);
        assert_eq!(parse_duration("12h").unwrap(), 43_200_000);
        assert_eq!(parse_duration("45").unwrap(), 45_000);
        assert_eq!(parse_duration(" 30s ").unwrap(), 30_000);
        assert_eq!(parse_duration("250ms").unwrap(), 250);
        assert_eq!(parse_duration("2w").unwrap(), 14 * 86_400_000);
        for bad in [
            "",
            "d",
            "0s",
            "7y",
            "-1d",
            "1.5h",
            "99999999999999999999d",
            "18446744073709551615d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_print() {
        assert_eq!(format_duration(7 * 86_400_000), "7d");
        assert_eq!(
            format_duration(2 * 86_400_000 + 3 * 3_600_000 + 5_000),
            "2d 3h"
        );
        assert_eq!(format_duration(86_400_000 + 60_000), "1d");
        assert_eq!(format_duration(42_000), "42s");
        assert_eq!(format_duration(250), "250ms");
        assert_eq!(format_duration(3_600_000 + 120_000), "1h 2m");
    }

    #[test]
    fn risk_markers_read_well() {
        let r = AtRisk::new(&Risk::EtaSoon {
            eta: 1_000_000,
            in_ms: 2 * 86_400_000 + 3_600_000,
        });
        assert_eq!(r.reason, RiskReason::EtaSoon);
        assert_eq!(r.message, "runs out in 2d 1h");
        assert_eq!(r.eta_seconds, Some(176_400));
        let r = AtRisk::new(&Risk::HighUsage {
            usage_pct: 91.25,
            threshold_pct: 80.0,
        });
        assert_eq!(r.message, "91.2% used, above the 80% threshold");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["reason"], "high-usage");
        assert!(json.get("eta").is_none());
    }
}
