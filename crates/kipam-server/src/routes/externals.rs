//! `/v1/external-networks`: CIDRs used outside kipam, per scope. Pools and leases are
//! never handed out inside them; overlaps with them are reported.

use axum::extract::State;
use axum::http::StatusCode;
use kipam_api::networks::ExternalNetworkList;
use kipam_core::{ObjectKind, ScopeNetwork};

use crate::engine::{Mutation, Outcome};
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::state::AppState;

/// External networks, by name.
#[utoipa::path(get, path = "/v1/external-networks", tag = "external-networks",
    responses((status = 200, body = ExternalNetworkList)))]
pub async fn list(
    State(state): State<AppState>,
) -> Result<axum::Json<ExternalNetworkList>, ApiError> {
    let items = state
        .engine()?
        .read(|i| i.scope_networks(ObjectKind::External).cloned().collect());
    Ok(axum::Json(ExternalNetworkList { items }))
}

/// Registers an external network (409 if the name exists). It may overlap existing
/// pools — `GET /v1/overlaps` shows that — but nothing new is handed out inside it.
#[utoipa::path(post, path = "/v1/external-networks", tag = "external-networks",
    request_body = kipam_api::schema::ScopeNetwork,
    responses((status = 201, body = kipam_api::schema::ScopeNetwork)))]
pub async fn add(
    State(state): State<AppState>,
    ApiJson(net): ApiJson<ScopeNetwork>,
) -> Result<(StatusCode, axum::Json<ScopeNetwork>), ApiError> {
    state
        .engine()?
        .apply(Mutation::AddExternal(net.clone()))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(net)))
}

/// Removes an external network (404 if there is none).
#[utoipa::path(delete, path = "/v1/external-networks/{name}", tag = "external-networks",
    params(("name" = String, Path, description = "Its name (percent-encoded)")),
    responses((status = 204, description = "removed")))]
pub async fn remove(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    match state
        .engine()?
        .apply(Mutation::RemoveExternal { name: name.clone() })
        .await?
    {
        Outcome::Removed(true) => Ok(StatusCode::NO_CONTENT),
        _ => Err(ApiError::not_found(format!("no external network {name:?}"))),
    }
}
