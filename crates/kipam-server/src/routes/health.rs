//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kipam_api::health::Status;

use crate::error::ApiError;
use crate::state::AppState;

/// Alive: answers as soon as the listeners are up.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "kipamd runs", body = Status)))]
pub async fn healthz() -> axum::Json<Status> {
    axum::Json(Status {
        status: "ok".into(),
    })
}

/// Ready: the store is open, migrated and loaded (503 before, and while shutting down).
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, description = "ready", body = Status)))]
pub async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Status>, ApiError> {
    state.engine()?;
    Ok(axum::Json(Status {
        status: "ready".into(),
    }))
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state
        .metrics
        .render(state.engine_if_loaded(), &state.forecasts)
    {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            kipam_api::ErrorCode::Internal,
            "cannot encode metrics",
        )
        .into_response(),
    }
}
