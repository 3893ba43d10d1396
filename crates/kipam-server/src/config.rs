//! kipamd's settings: command-line flags, environment variables and a TOML file.
//!
//! Every setting has one name used three ways: the flag `--sample-interval`, the env var
//! `KIPAM_SAMPLE_INTERVAL`, the TOML key `sample-interval`. A flag or env var wins over
//! the file, the file over the default. The result is a plain [`Config`] that
//! [`crate::run`] takes, so tests and embedders need no command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

/// The default TCP listen address: loopback, a fixed port so the quick start and the
/// docs can name it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7733";

/// Flags of `kipamd` (serve). Each also reads `KIPAM_<NAME>` and the config file.
#[derive(Args, Clone, Debug, Default)]
pub struct ServeArgs {
    /// TOML file with any of these settings (keys as the flags: `data`, `listen`, ...).
    #[arg(long, env = "KIPAM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of the SQLite store [default: ./kipam-data].
    #[arg(long, env = "KIPAM_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// TCP address for the HTTP API, or `off` [default: 127.0.0.1:7733]. A non-loopback
    /// address needs --tokens.
    #[arg(long, env = "KIPAM_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Unix socket for node-local clients (created 0600), or `off` [default: <data>/kipamd.sock].
    #[arg(long, env = "KIPAM_SOCKET", value_name = "PATH")]
    pub socket: Option<String>,
    /// Tokens file: lines `ROLE SHA256HEX [name]` (see `kipamd hash-token`).
    #[arg(long, env = "KIPAM_TOKENS", value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Seconds between housekeeping runs: usage samples, reclaims due, history expiry
    /// [default: 60].
    #[arg(long, env = "KIPAM_SAMPLE_INTERVAL", value_name = "SECONDS")]
    pub sample_interval: Option<u64>,
    /// Seconds a GC report's stale handles wait before they are reclaimed [default: 60].
    #[arg(long, env = "KIPAM_GC_GRACE", value_name = "SECONDS")]
    pub gc_grace: Option<u64>,
    /// Days history events are kept [default: 30].
    #[arg(long, env = "KIPAM_EVENT_RETENTION_DAYS", value_name = "DAYS")]
    pub event_retention_days: Option<u64>,
    /// Seconds a request may take before it is answered 504 [default: 30].
    #[arg(long, env = "KIPAM_REQUEST_TIMEOUT", value_name = "SECONDS")]
    pub request_timeout: Option<u64>,
    /// Seconds of usage samples behind the forecasts of pool lists, usage and metrics
    /// [default: 604800, 7 days]. `/v1/pools/{name}/forecast` takes any window.
    #[arg(long, env = "KIPAM_FORECAST_WINDOW", value_name = "SECONDS")]
    pub forecast_window: Option<u64>,
    /// A pool is at risk when its forecast runs out within this many days [default: 7].
    #[arg(long, env = "KIPAM_RISK_ETA_DAYS", value_name = "DAYS")]
    pub risk_eta_days: Option<u64>,
    /// A pool is at risk when more than this percentage is used [default: 80].
    #[arg(long, env = "KIPAM_RISK_USAGE_PERCENT", value_name = "PERCENT")]
    pub risk_usage_percent: Option<u32>,
}

/// The TOML file: the same keys as the flags.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    data: Option<PathBuf>,
    listen: Option<String>,
    socket: Option<String>,
    tokens: Option<PathBuf>,
    sample_interval: Option<u64>,
    gc_grace: Option<u64>,
    event_retention_days: Option<u64>,
    request_timeout: Option<u64>,
    forecast_window: Option<u64>,
    risk_eta_days: Option<u64>,
    risk_usage_percent: Option<u32>,
}

/// Errors of the settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML of the expected keys.
    #[error("config file {path}: {detail}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A value is invalid.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// kipamd's resolved settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Store directory.
    pub data: PathBuf,
    /// TCP listen address (None: no TCP).
    pub listen: Option<SocketAddr>,
    /// Unix socket path (None: no socket).
    pub socket: Option<PathBuf>,
    /// Tokens file (None: trust loopback TCP as admin).
    pub tokens: Option<PathBuf>,
    /// Housekeeping interval.
    pub sample_interval: Duration,
    /// Default GC grace.
    pub gc_grace: Duration,
    /// History retention.
    pub event_retention: Duration,
    /// Request timeout.
    pub request_timeout: Duration,
    /// Window of the forecasts kept for pool lists, usage and metrics.
    pub forecast_window: Duration,
    /// A pool whose forecast runs out sooner than this is at risk.
    pub risk_eta: Duration,
    /// A pool with more than this percentage used is at risk.
    pub risk_usage_percent: u32,
}

impl Config {
    /// Defaults for a data directory: TCP on [`DEFAULT_LISTEN`], socket in the directory.
    pub fn with_data(data: &Path) -> Config {
        Config {
            data: data.to_path_buf(),
            listen: DEFAULT_LISTEN.parse().ok(),
            socket: Some(data.join("kipamd.sock")),
            tokens: None,
            sample_interval: Duration::from_secs(60),
            gc_grace: Duration::from_secs(60),
            event_retention: Duration::from_secs(30 * 86_400),
            request_timeout: Duration::from_secs(30),
            forecast_window: Duration::from_secs(7 * 86_400),
            risk_eta: Duration::from_secs(7 * 86_400),
            risk_usage_percent: 80,
        }
    }

    /// The at-risk thresholds of pools, as the forecast takes them.
    pub fn risk_thresholds(&self) -> kipam_core::forecast::RiskThresholds {
        kipam_core::forecast::RiskThresholds {
            eta_within_ms: u64::try_from(self.risk_eta.as_millis()).unwrap_or(u64::MAX),
            usage_pct: f64::from(self.risk_usage_percent),
        }
    }
}

fn off(s: &str) -> bool {
    matches!(s, "off" | "none" | "")
}

impl ServeArgs {
    /// Resolves flags, env vars, the config file and defaults.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(p) => {
                let path = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                    path,
                    detail: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let data = self
            .data
            .clone()
            .or(file.data)
            .unwrap_or_else(|| PathBuf::from("./kipam-data"));
        let mut c = Config::with_data(&data);
        if let Some(l) = self.listen.clone().or(file.listen) {
            c.listen = if off(&l) {
                None
            } else {
                Some(l.parse().map_err(|_| ConfigError::Invalid {
                    setting: "listen",
                    reason: format!(
                        "{l:?} is not ADDR:PORT (like 127.0.0.1:7733 or [::1]:7733) or off"
                    ),
                })?)
            };
        }
        if let Some(s) = self.socket.clone().or(file.socket) {
            c.socket = if off(&s) {
                None
            } else {
                Some(PathBuf::from(s))
            };
        }
        c.tokens = self.tokens.clone().or(file.tokens);
        let secs = |v: Option<u64>, setting: &'static str, default: Duration| match v {
            Some(0) => Err(ConfigError::Invalid {
                setting,
                reason: "must be at least 1".into(),
            }),
            Some(s) => Ok(Duration::from_secs(s)),
            None => Ok(default),
        };
        c.sample_interval = secs(
            self.sample_interval.or(file.sample_interval),
            "sample-interval",
            c.sample_interval,
        )?;
        c.request_timeout = secs(
            self.request_timeout.or(file.request_timeout),
            "request-timeout",
            c.request_timeout,
        )?;
        c.event_retention = secs(
            self.event_retention_days
                .or(file.event_retention_days)
                .map(|d| d.saturating_mul(86_400)),
            "event-retention-days",
            c.event_retention,
        )?;
        c.forecast_window = secs(
            self.forecast_window.or(file.forecast_window),
            "forecast-window",
            c.forecast_window,
        )?;
        c.risk_eta = secs(
            self.risk_eta_days
                .or(file.risk_eta_days)
                .map(|d| d.saturating_mul(86_400)),
            "risk-eta-days",
            c.risk_eta,
        )?;
        if let Some(p) = self.risk_usage_percent.or(file.risk_usage_percent) {
            if !(1..=100).contains(&p) {
                return Err(ConfigError::Invalid {
                    setting: "risk-usage-percent",
                    reason: format!("{p} is not a percentage from 1 to 100"),
                });
            }
            c.risk_usage_percent = p;
        }
        if let Some(g) = self.gc_grace.or(file.gc_grace) {
            c.gc_grace = Duration::from_secs(g);
        }
        if c.listen.is_none() && c.socket.is_none() {
            return Err(ConfigError::Invalid {
                setting: "listen",
                reason: "both --listen and --socket are off; kipamd would be unreachable".into(),
            });
        }
        Ok(c)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(c.data, PathBuf::from("./kipam-data"));
        assert_eq!(c.listen, Some("127.0.0.1:7733".parse().unwrap()));
        assert_eq!(c.socket, Some(PathBuf::from("./kipam-data/kipamd.sock")));
        assert_eq!(c.sample_interval, Duration::from_secs(60));
        let r = c.risk_thresholds();
        assert_eq!(r.eta_within_ms, 7 * 86_400_000);
        assert_eq!(r.usage_pct, 80.0);
    }

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("kipamd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("kipamd.toml");
        std::fs::write(&f, "data = \"/var/lib/kipam\"\nlisten = \"[::1]:8000\"\nsample-interval = 5\nsocket = \"off\"\nrisk-usage-percent = 90\nrisk-eta-days = 3\n").unwrap();
        let args = ServeArgs {
            config: Some(f.clone()),
            sample_interval: Some(7),
            ..ServeArgs::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.data, PathBuf::from("/var/lib/kipam"));
        assert_eq!(c.listen, Some("[::1]:8000".parse().unwrap()));
        assert_eq!(c.socket, None);
        assert_eq!(c.sample_interval, Duration::from_secs(7));
        assert_eq!(c.risk_usage_percent, 90);
        assert_eq!(c.risk_eta, Duration::from_secs(3 * 86_400));
        std::fs::write(&f, "lisen = \"x\"\n").unwrap();
        assert!(matches!(args.resolve(), Err(ConfigError::Parse { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_values() {
        let a = ServeArgs {
            listen: Some("localhost".into()),
            ..ServeArgs::default()
        };
        assert!(a.resolve().is_err());
        let a = ServeArgs {
            sample_interval: Some(0),
            ..ServeArgs::default()
        };
        assert!(a.resolve().is_err());
        let a = ServeArgs {
            risk_usage_percent: Some(101),
            ..ServeArgs::default()
        };
        assert!(a.resolve().is_err());
        let a = ServeArgs {
            risk_eta_days: Some(0),
            ..ServeArgs::default()
        };
        assert!(a.resolve().is_err());
        let a = ServeArgs {
            listen: Some("off".into()),
            socket: Some("off".into()),
            ..ServeArgs::default()
        };
        assert!(a.resolve().is_err());
    }
}
