//! `/v1/overlaps`: every overlapping pair of pools, leases, external networks and
//! reservations within each scope.

use axum::extract::State;
use kipam_api::networks::{OverlapList, OverlapView};

use crate::error::ApiError;
use crate::state::AppState;

/// Every overlap, by scope and address.
#[utoipa::path(get, path = "/v1/overlaps", tag = "overlaps",
    responses((status = 200, body = OverlapList)))]
pub async fn list(State(state): State<AppState>) -> Result<axum::Json<OverlapList>, ApiError> {
    let items = state
        .engine()?
        .read(|i| i.overlaps().iter().map(OverlapView::from).collect());
    Ok(axum::Json(OverlapList { items }))
}
