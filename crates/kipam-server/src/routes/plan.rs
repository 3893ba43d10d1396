//! `/v1/plan` (subnet planner) and `/v1/pools/{name}/forecast` (time to exhaustion).
//!
//! Both are answered 501 in this build: the planner and the forecast live in kipam-core
//! and are being written; these routes are wired to them when they land.

use axum::http::StatusCode;
use kipam_api::ErrorCode;

use crate::error::ApiError;

/// The subnet planner (not in this build: 501).
#[utoipa::path(post, path = "/v1/plan", tag = "planning",
    request_body(content = Object, description = "a plan request"),
    responses((status = 501, description = "not in this build", body = kipam_api::ErrorBody)))]
pub async fn plan() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        ErrorCode::NotImplemented,
        "the subnet planner is not in this build of kipamd yet",
    )
}

/// A pool's exhaustion forecast (not in this build: 501).
#[utoipa::path(get, path = "/v1/pools/{name}/forecast", tag = "planning",
    params(("name" = String, Path, description = "Pool name (percent-encoded)")),
    responses((status = 501, description = "not in this build", body = kipam_api::ErrorBody)))]
pub async fn forecast() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        ErrorCode::NotImplemented,
        "the exhaustion forecast is not in this build of kipamd yet",
    )
}
