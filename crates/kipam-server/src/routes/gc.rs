//! `/v1/gc`: a node or network reports the attachments it still has; the rest of what
//! belongs to it is reclaimed after a grace period (re-checked then), each reclaim
//! recorded as an event.

use axum::extract::State;
use kipam_api::gc::{GcRequest, GcResponse, PendingReclaimView};

use crate::engine::{GcReport, Mutation, Outcome, PendingReclaim};
use crate::error::{ApiError, ApiJson};
use crate::state::AppState;

fn view(p: &PendingReclaim) -> PendingReclaimView {
    PendingReclaimView {
        handle: p.handle.clone(),
        due: kipam_api::time::format(p.due),
        reporter: p.reporter.clone(),
    }
}

/// Takes a GC report. `node` or `network` must be given (a report naming neither would
/// claim every handle of every node); the answer lists the reporter's handles now
/// pending reclaim.
#[utoipa::path(post, path = "/v1/gc", tag = "gc",
    request_body = GcRequest,
    responses((status = 200, body = GcResponse)))]
pub async fn report(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<GcRequest>,
) -> Result<axum::Json<GcResponse>, ApiError> {
    let engine = state.engine()?;
    if req.node.is_none() && req.network.is_none() {
        return Err(ApiError::invalid(
            "node",
            "give node, network or both: they say which handles the report covers",
        ));
    }
    let report = GcReport {
        node: req.node,
        network: req.network,
        valid: req.valid,
        grace_seconds: req.grace_seconds,
    };
    match engine.apply(Mutation::GcReport(report)).await? {
        Outcome::Gc(p) => Ok(axum::Json(GcResponse {
            pending: p.iter().map(view).collect(),
        })),
        _ => Ok(axum::Json(GcResponse {
            pending: Vec::new(),
        })),
    }
}

/// Every reclaim waiting for its grace period.
#[utoipa::path(get, path = "/v1/gc", tag = "gc",
    responses((status = 200, body = GcResponse)))]
pub async fn pending(State(state): State<AppState>) -> Result<axum::Json<GcResponse>, ApiError> {
    let p = state.engine()?.pending_reclaims();
    Ok(axum::Json(GcResponse {
        pending: p.iter().map(view).collect(),
    }))
}
