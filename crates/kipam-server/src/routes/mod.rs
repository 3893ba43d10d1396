//! The HTTP surface: one module per resource, and the router that puts them together
//! with the cross-cutting layers (auth, body limit, timeout, panic guard, error-shaped
//! 404/405).
//!
//! Route paths follow DESIGN.md's API sketch. Handles and pool names may contain `/`
//! (CNI handles are `net/containerID/ifname`): clients percent-encode them as one segment
//! (`net%2Fabc%2Feth0`); the handle and prefix routes also accept them unencoded.

pub mod addresses;
pub mod allocations;
pub mod dashboard;
pub mod externals;
pub mod gc;
pub mod health;
pub mod overlaps;
pub mod plan;
pub mod pools;
pub mod prefixes;
pub mod usage;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kipam_api::ErrorCode;

use crate::config::Config;
use crate::error::ApiError;
use crate::state::AppState;

/// The whole application (without the per-listener [`crate::auth::Transport`] layer).
pub fn router(state: AppState, config: &Config) -> Router {
    let timeout = config.request_timeout;
    Router::new()
        .route("/", get(dashboard::page))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/openapi.json", get(crate::openapi::serve))
        .route("/v1/pools", get(pools::list).post(pools::create))
        .route(
            "/v1/pools/{name}",
            get(pools::show).patch(pools::update).delete(pools::delete),
        )
        .route("/v1/pools/{name}/forecast", get(plan::forecast))
        .route(
            "/v1/allocations",
            get(allocations::list).post(allocations::allocate),
        )
        .route(
            "/v1/allocations/{*handle}",
            get(allocations::show).delete(allocations::release),
        )
        .route("/v1/addresses/{ip}", get(addresses::show))
        .route("/v1/prefixes", get(prefixes::list).post(prefixes::lease))
        .route(
            "/v1/prefixes/{pool}/{*prefix}",
            axum::routing::delete(prefixes::release),
        )
        .route(
            "/v1/external-networks",
            get(externals::list).post(externals::add),
        )
        .route(
            "/v1/external-networks/{name}",
            axum::routing::delete(externals::remove),
        )
        .route("/v1/overlaps", get(overlaps::list))
        .route("/v1/usage", get(usage::report))
        .route("/v1/plan", post(plan::plan))
        .route("/v1/gc", get(gc::pending).post(gc::report))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authorize,
        ))
        .layer(DefaultBodyLimit::max(crate::BODY_LIMIT))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            with_timeout(timeout, req, next)
        }))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

async fn with_timeout(timeout: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Timeout,
            format!(
                "the request took longer than {} s; a mutation may still complete — read before retrying",
                timeout.as_secs()
            ),
        )
        .into_response(),
    }
}

fn panicked(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(panic = %what, "a handler panicked (a bug in kipamd)");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        "internal error (a bug in kipamd; see its log)",
    )
    .into_response()
}
