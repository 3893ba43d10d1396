//! kipamd, the kipam IPAM daemon: the central authority for pools shared by many nodes.
//!
//! It serves the JSON API of `kipam-api` over TCP and a unix socket, with bearer-token
//! roles, Prometheus metrics, a small dashboard and background housekeeping, on top of the
//! [`engine`], which keeps the whole state in memory and commits mutations in batches.
//! `main.rs` only parses flags; everything else is here so tests and embedders can run a
//! daemon with a [`config::Config`] and their own shutdown signal.
//!
//! ## Layout
//! - [`engine`]: the in-memory engine, the group-commit writer, history events, usage
//!   samples and GC of leaked handles.
//! - `history`: the per-address history index (events grouped in chunks of 64 addresses).
//! - [`server`]: listeners, start-up and graceful shutdown ([`run`]).
//! - [`routes`]: the HTTP handlers, one module per resource, and the router.
//! - [`auth`]: tokens, roles and the trust given to each listener.
//! - [`error`]: one mapping from engine errors to HTTP answers.
//! - [`forecasts`]: every pool's exhaustion forecast, refreshed by housekeeping, and the
//!   at-risk marker.
//! - [`metrics`]: Prometheus metrics and the engine [`engine::Observer`].
//! - [`openapi`]: the OpenAPI document assembled from the handlers and `kipam-api` types.
//! - [`config`]: flags, env vars and the TOML file.
//! - [`state`]: what handlers share.

pub mod auth;
pub mod config;
pub mod engine;
pub mod error;
pub mod forecasts;
mod history;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod state;

pub use server::{Listeners, ServerError, run};

/// Largest request body accepted (larger: 413).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// An error with its causes, `a: b: c`, for a one-line log or terminal message.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
    }
}
