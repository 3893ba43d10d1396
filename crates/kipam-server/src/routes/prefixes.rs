//! `/v1/prefixes`: prefix leases (node pod-CIDRs, cluster subnets) — lease, list, release.

use axum::extract::State;
use axum::http::StatusCode;
use ipnet::IpNet;
use kipam_api::prefixes::{LeaseList, LeaseQuery, LeaseRequest, LeaseView};

use crate::engine::{Mutation, Outcome};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Leases the lowest free prefix of `prefixLength`, or exactly `prefix`, to `owner`.
#[utoipa::path(post, path = "/v1/prefixes", tag = "prefixes",
    request_body = LeaseRequest,
    responses((status = 201, body = LeaseView)))]
pub async fn lease(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LeaseRequest>,
) -> Result<(StatusCode, axum::Json<LeaseView>), ApiError> {
    let engine = state.engine()?;
    let want = req.want()?;
    let out = engine
        .apply(Mutation::Lease {
            pool: req.pool.clone(),
            want,
            owner: req.owner.clone(),
            attrs: req.attrs.clone(),
        })
        .await?;
    match out {
        Outcome::Lease(l) => Ok((
            StatusCode::CREATED,
            axum::Json(LeaseView::new(&req.pool, &l)),
        )),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            kipam_api::ErrorCode::Internal,
            format!("the engine answered a lease with {other:?}"),
        )),
    }
}

/// Leases, by pool then address; filter by pool and owner.
#[utoipa::path(get, path = "/v1/prefixes", tag = "prefixes",
    params(LeaseQuery),
    responses((status = 200, body = LeaseList)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<LeaseQuery>,
) -> Result<axum::Json<LeaseList>, ApiError> {
    let items = state.engine()?.read(|ipam| {
        ipam.pools()
            .filter(|p| q.pool.as_ref().is_none_or(|n| &p.config().name == n))
            .flat_map(|p| {
                p.leases()
                    .filter(|l| q.owner.as_ref().is_none_or(|o| &l.owner == o))
                    .map(|l| LeaseView::new(&p.config().name, l))
            })
            .collect()
    });
    Ok(axum::Json(LeaseList { items }))
}

/// Ends a lease (404 if there is none).
#[utoipa::path(delete, path = "/v1/prefixes/{pool}/{prefix}", tag = "prefixes",
    params(
        ("pool" = String, Path, description = "Pool name (percent-encoded)"),
        ("prefix" = String, Path, description = "The leased prefix, percent-encoded (`10.240.3.0%2F24`)"),
    ),
    responses((status = 204, description = "released")))]
pub async fn release(
    State(state): State<AppState>,
    ApiPath((pool, prefix)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let engine = state.engine()?;
    let net: IpNet = prefix.parse().map_err(|_| {
        ApiError::invalid(
            "prefix",
            format!("{prefix:?} is not a CIDR like 10.240.3.0/24"),
        )
    })?;
    match engine
        .apply(Mutation::ReleaseLease {
            pool: pool.clone(),
            prefix: net,
        })
        .await?
    {
        Outcome::Removed(true) => Ok(StatusCode::NO_CONTENT),
        _ => Err(ApiError::not_found(format!(
            "pool {pool} has no lease {net}"
        ))),
    }
}
