//! Running kipamd: bind the listeners, load the engine in the background, serve until
//! told to stop, then drain.
//!
//! Order of a start: listeners first (so `/healthz` answers at once and `/readyz` says
//! 503 while the state loads), then the engine, then the housekeeping task. Order of a
//! stop: stop accepting, let in-flight requests finish (each is bounded by the request
//! timeout), stop housekeeping, then [`Engine::shutdown`] commits what is queued and
//! closes the store.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Extension;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::auth::{AuthMode, Tokens, TokensError, Transport};
use crate::config::Config;
use crate::engine::{Engine, EngineError, EngineOptions, Mutation, Observer, system_clock};
use crate::forecasts::Forecasts;
use crate::metrics::Metrics;
use crate::state::AppState;

/// Errors that stop kipamd.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener cannot be bound.
    #[error("cannot listen on {what}")]
    Bind {
        /// The address or path.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another kipamd answers on the socket.
    #[error("{} is in use by a running kipamd; stop it or choose another --socket", path.display())]
    SocketInUse {
        /// The socket.
        path: PathBuf,
    },
    /// TCP on a non-loopback address without tokens.
    #[error(
        "refusing to listen on {addr} without --tokens: anyone who reaches it would be admin; add --tokens FILE or listen on 127.0.0.1"
    )]
    OpenWithoutTokens {
        /// The address.
        addr: SocketAddr,
    },
    /// The tokens file is bad.
    #[error(transparent)]
    Tokens(#[from] TokensError),
    /// The store cannot be opened or loaded.
    #[error("cannot load the store in {}", dir.display())]
    Engine {
        /// The data directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: EngineError,
    },
    /// Serving failed.
    #[error("serving failed")]
    Serve(#[source] std::io::Error),
}

/// The bound listeners.
pub struct Listeners {
    tcp: Option<TcpListener>,
    unix: Option<(UnixListener, PathBuf)>,
}

impl Listeners {
    /// Binds what `config` asks for: the TCP address and the unix socket (a stale socket
    /// file is removed; a live one is refused; the new one is made 0600).
    pub async fn bind(config: &Config) -> Result<Listeners, ServerError> {
        let tcp = match config.listen {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ServerError::Bind {
                            what: addr.to_string(),
                            source,
                        })?,
                )
            }
            None => None,
        };
        let unix = match &config.socket {
            Some(path) => Some((bind_socket(path).await?, path.clone())),
            None => None,
        };
        Ok(Listeners { tcp, unix })
    }

    /// The TCP address actually bound (port 0 resolved).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }
}

async fn bind_socket(path: &Path) -> Result<UnixListener, ServerError> {
    let err = |source| ServerError::Bind {
        what: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )));
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ServerError::SocketInUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let l = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(l)
}

fn auth_mode(config: &Config, listeners: &Listeners) -> Result<AuthMode, ServerError> {
    match &config.tokens {
        Some(path) => Ok(AuthMode::Tokens(Tokens::load(path)?)),
        None => {
            if let Some(addr) = listeners.tcp_addr()
                && !addr.ip().is_loopback()
            {
                return Err(ServerError::OpenWithoutTokens { addr });
            }
            Ok(AuthMode::LoopbackTrusted)
        }
    }
}

/// Serves until `shutdown` resolves, then drains and closes the store.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let auth = auth_mode(&config, &listeners)?;
    if let AuthMode::Tokens(t) = &auth {
        tracing::info!(tokens = t.len(), "bearer tokens required on TCP");
    } else {
        tracing::info!("no --tokens: loopback TCP clients are trusted as admin");
    }
    let metrics = Arc::new(Metrics::new());
    let forecasts = Arc::new(Forecasts::new(
        config.risk_thresholds(),
        u64::try_from(config.forecast_window.as_millis()).unwrap_or(u64::MAX),
    ));
    let state =
        AppState::new(auth, metrics.clone(), config.gc_grace).with_forecasts(forecasts.clone());
    let app = crate::routes::router(state.clone(), &config);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    if let Some(tcp) = listeners.tcp {
        if let Ok(addr) = tcp.local_addr() {
            tracing::info!("kipamd listening on http://{addr} (API, /metrics, dashboard at /)");
        }
        let app = app.clone().layer(Extension(Transport::Tcp));
        let mut rx = stop_rx.clone();
        servers.spawn(async move {
            axum::serve(tcp, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
        });
    }
    let socket_path = listeners.unix.as_ref().map(|(_, p)| p.clone());
    if let Some((unix, path)) = listeners.unix {
        tracing::info!(
            "kipamd listening on unix:{} (mode 0600, trusted as allocator)",
            path.display()
        );
        let app = app.clone().layer(Extension(Transport::Unix));
        let mut rx = stop_rx.clone();
        servers.spawn(async move {
            axum::serve(unix, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
        });
    }
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing requests in flight");
        let _ = stop_tx.send(true);
    });

    let opts = EngineOptions {
        gc_grace: config.gc_grace,
        event_retention: config.event_retention,
        ..EngineOptions::default()
    };
    let dir = config.data.clone();
    let observer: Arc<dyn Observer> = metrics;
    let started = std::time::Instant::now();
    let loaded = tokio::task::spawn_blocking(move || {
        Engine::open(&dir, opts, system_clock(), Some(observer))
    })
    .await;
    let engine = match loaded {
        Ok(Ok(e)) => e,
        Ok(Err(source)) => {
            return Err(ServerError::Engine {
                dir: config.data.clone(),
                source,
            });
        }
        Err(join) => {
            return Err(ServerError::Serve(std::io::Error::other(join.to_string())));
        }
    };
    let (pools, handles) = engine.read(|i| (i.pools().count(), i.handles().count()));
    tracing::info!(
        data = %config.data.display(),
        pools,
        handles,
        took_ms = started.elapsed().as_millis() as u64,
        "store loaded; ready"
    );
    state.set_engine(engine.clone());

    let housekeeping = tokio::spawn(housekeeping(
        engine.clone(),
        forecasts,
        config.sample_interval,
        stop_rx.clone(),
    ));

    let mut result = Ok(());
    while let Some(done) = servers.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(ServerError::Serve(e)),
            Err(e) => result = Err(ServerError::Serve(std::io::Error::other(e.to_string()))),
        }
    }
    housekeeping.abort();
    let _ = housekeeping.await;
    let e = engine.clone();
    let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
    if let Some(p) = socket_path {
        let _ = std::fs::remove_file(p);
    }
    tracing::info!("kipamd stopped");
    result
}

/// Every `interval`: usage samples, reclaims that are due, history expiry; then the
/// pools' forecasts are refit with the new samples.
async fn housekeeping(
    engine: Engine,
    forecasts: Arc<Forecasts>,
    interval: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = engine.apply(Mutation::Housekeeping).await {
            tracing::warn!(error = %e, "housekeeping failed; retrying next interval");
        }
        let (e, f) = (engine.clone(), forecasts.clone());
        match tokio::task::spawn_blocking(move || f.refresh(&e)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "forecast refresh failed; retrying next interval")
            }
            Err(e) => tracing::warn!(error = %e, "forecast refresh panicked (a bug in kipamd)"),
        }
    }
}
