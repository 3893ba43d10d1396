//! `/v1/allocations`: allocate for a handle (all or nothing, idempotent), show, release,
//! list with filters and pagination.

use std::time::Instant;

use axum::extract::State;
use kipam_api::allocations::{
    AllocateRequest, AllocationList, AllocationQuery, AllocationView, ReleaseResponse,
    continue_token, parse_continue_token,
};
use kipam_core::Source;

use crate::engine::{Mutation, Outcome};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

const DEFAULT_LIMIT: u32 = 500;
const MAX_LIMIT: u32 = 5000;

/// Allocates one address per entry of `requests` for the handle, all or nothing. A
/// handle that holds addresses already gets them back unchanged.
#[utoipa::path(post, path = "/v1/allocations", tag = "allocations",
    request_body = AllocateRequest,
    responses((status = 200, description = "the addresses the handle holds", body = AllocationView)))]
pub async fn allocate(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<AllocateRequest>,
) -> Result<axum::Json<AllocationView>, ApiError> {
    let engine = state.engine()?;
    let core = req.to_core()?;
    let asked: Vec<String> = core
        .wants
        .iter()
        .flat_map(|w| match &w.source {
            Source::Pools(p) => p.first().cloned(),
            Source::Family { .. } => Some("*".to_string()),
        })
        .collect();
    let started = Instant::now();
    match engine.apply(Mutation::Allocate(core)).await {
        Ok(outcome) => {
            // The committed handle comes with the answer; reading the engine here would
            // wait for the writer's next commit.
            let view = match outcome {
                Outcome::Allocated(h) => Some(AllocationView::from(h.as_ref())),
                _ => engine.read(|i| i.handle(&req.handle).map(AllocationView::from)),
            };
            let view = view.ok_or_else(|| {
                ApiError::not_found(format!(
                    "handle {:?} was released while it was being allocated",
                    req.handle
                ))
            })?;
            let pools: Vec<String> = view.addresses.iter().map(|a| a.pool.clone()).collect();
            state.metrics.allocation(&pools, "ok", started.elapsed());
            Ok(axum::Json(view))
        }
        Err(e) => {
            let e = ApiError::from(e);
            state
                .metrics
                .allocation(&asked, e.body.error.code.as_str(), started.elapsed());
            Err(e)
        }
    }
}

/// A handle and what it holds (404 when it holds nothing).
#[utoipa::path(get, path = "/v1/allocations/{handle}", tag = "allocations",
    params(("handle" = String, Path, description = "The handle, percent-encoded (`net%2Fc1%2Feth0`)")),
    responses((status = 200, body = AllocationView)))]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(handle): ApiPath<String>,
) -> Result<axum::Json<AllocationView>, ApiError> {
    state
        .engine()?
        .read(|i| {
            i.handle(&handle)
                .filter(|h| !h.addrs.is_empty())
                .map(AllocationView::from)
        })
        .map(axum::Json)
        .ok_or_else(|| kipam_core::Error::HandleNotFound { handle }.into())
}

/// Releases everything the handle holds. Idempotent: a handle that holds nothing
/// answers 200 with nothing released.
#[utoipa::path(delete, path = "/v1/allocations/{handle}", tag = "allocations",
    params(("handle" = String, Path, description = "The handle, percent-encoded (`net%2Fc1%2Feth0`)")),
    responses((status = 200, body = ReleaseResponse)))]
pub async fn release(
    State(state): State<AppState>,
    ApiPath(handle): ApiPath<String>,
) -> Result<axum::Json<ReleaseResponse>, ApiError> {
    let engine = state.engine()?;
    let out = engine
        .apply(Mutation::Release {
            handle: handle.clone(),
        })
        .await?;
    let released = match out {
        Outcome::Addresses(a) => a.iter().map(Into::into).collect(),
        _ => Vec::new(),
    };
    Ok(axum::Json(ReleaseResponse { handle, released }))
}

/// Handles in key order, filtered by pool, node and handle prefix, a page at a time.
#[utoipa::path(get, path = "/v1/allocations", tag = "allocations",
    params(AllocationQuery),
    responses((status = 200, body = AllocationList)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AllocationQuery>,
) -> Result<axum::Json<AllocationList>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        ));
    }
    let after = match &q.continue_token {
        Some(t) => Some(
            parse_continue_token(t)
                .ok_or_else(|| ApiError::invalid("continue", "not a token kipamd gave out"))?,
        ),
        None => None,
    };
    let limit = limit as usize;
    let (items, more) = state.engine()?.read(|ipam| {
        let mut hits: Vec<&kipam_core::Handle> = ipam
            .handles()
            .filter(|h| !h.addrs.is_empty())
            .filter(|h| q.node.as_ref().is_none_or(|n| *h.node == **n))
            .filter(|h| {
                q.handle
                    .as_ref()
                    .is_none_or(|p| h.key.starts_with(p.as_str()))
            })
            .filter(|h| {
                q.pool
                    .as_ref()
                    .is_none_or(|p| h.addrs.iter().any(|a| *a.pool == **p))
            })
            .filter(|h| after.as_ref().is_none_or(|a| &*h.key > a.as_str()))
            .collect();
        // Only the page is sorted in full; the rest is only partitioned.
        let more = hits.len() > limit;
        if more {
            hits.select_nth_unstable_by(limit, |a, b| a.key.cmp(&b.key));
            hits.truncate(limit);
        }
        hits.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        (
            hits.into_iter()
                .map(AllocationView::from)
                .collect::<Vec<_>>(),
            more,
        )
    });
    let continue_token = if more {
        items.last().map(|v| continue_token(&v.handle))
    } else {
        None
    };
    Ok(axum::Json(AllocationList {
        items,
        continue_token,
    }))
}
