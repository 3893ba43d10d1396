//! What every handler shares: the engine (once loaded), the auth mode, the metrics, the
//! pools' forecasts.
//!
//! The engine is set once, after kipamd has loaded its state in the background; until
//! then the listeners already answer (`/healthz` 200, `/readyz` and the API 503), so an
//! orchestrator sees a live process that is not ready yet instead of a refused connection.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::auth::AuthMode;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::forecasts::Forecasts;
use crate::metrics::Metrics;

/// The shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    engine: Arc<OnceLock<Engine>>,
    /// How requests are authenticated.
    pub auth: Arc<AuthMode>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The default GC grace period (reported in docs and answers).
    pub gc_grace: Duration,
    /// Every pool's forecast (refreshed by housekeeping) and the at-risk thresholds.
    pub forecasts: Arc<Forecasts>,
}

impl AppState {
    /// A state whose engine is not loaded yet.
    pub fn new(auth: AuthMode, metrics: Arc<Metrics>, gc_grace: Duration) -> AppState {
        AppState {
            engine: Arc::new(OnceLock::new()),
            auth: Arc::new(auth),
            metrics,
            gc_grace,
            forecasts: Arc::new(Forecasts::default()),
        }
    }

    /// Uses `forecasts` (with the configured risk thresholds) instead of the default.
    pub fn with_forecasts(mut self, forecasts: Arc<Forecasts>) -> AppState {
        self.forecasts = forecasts;
        self
    }

    /// Installs the loaded engine (the first call wins).
    pub fn set_engine(&self, engine: Engine) {
        let _ = self.engine.set(engine);
    }

    /// The engine, or 503 while it loads or after it stopped.
    pub fn engine(&self) -> Result<&Engine, ApiError> {
        match self.engine.get() {
            Some(e) if e.ready() => Ok(e),
            _ => Err(ApiError::not_ready()),
        }
    }

    /// The engine whether ready or not (for shutdown).
    pub fn engine_if_loaded(&self) -> Option<&Engine> {
        self.engine.get()
    }
}
