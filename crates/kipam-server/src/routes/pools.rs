//! `/v1/pools`: create, list, show, patch (JSON merge patch), delete.
//!
//! Pools in list and show answers carry `atRisk` when their forecast or usage crosses
//! kipamd's risk thresholds ([`crate::forecasts`]).

use axum::extract::State;
use axum::http::StatusCode;
use kipam_api::pools::{DeletePoolQuery, PoolList, PoolView, UsageCounts};
use kipam_core::{Ipam, Pool, PoolConfig};

use crate::engine::Mutation;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

fn view(p: &Pool) -> PoolView {
    PoolView {
        config: p.config().clone(),
        usage: UsageCounts::new(p.config().family(), &p.usage()),
        at_risk: None,
    }
}

fn find(ipam: &Ipam, name: &str) -> Result<PoolView, ApiError> {
    ipam.pool(name)
        .map(view)
        .ok_or_else(|| kipam_core::Error::PoolNotFound { pool: name.into() }.into())
}

/// Adds the at-risk marker to a view made at `now`.
fn judged(state: &AppState, now: kipam_core::Millis, mut v: PoolView) -> PoolView {
    v.at_risk = state
        .forecasts
        .at_risk(&v.config.name, v.usage.percent_used, now);
    v
}

/// Every pool with its usage, by name.
#[utoipa::path(get, path = "/v1/pools", tag = "pools",
    responses((status = 200, body = PoolList)))]
pub async fn list(State(state): State<AppState>) -> Result<axum::Json<PoolList>, ApiError> {
    let engine = state.engine()?;
    let now = engine.now();
    let items = engine.read(|i| i.pools().map(view).collect::<Vec<_>>());
    let items = items.into_iter().map(|v| judged(&state, now, v)).collect();
    Ok(axum::Json(PoolList { items }))
}

/// Creates a pool. Refused (409) when the name exists or the CIDR overlaps another pool,
/// external network or reservation of its scope; the error names it.
#[utoipa::path(post, path = "/v1/pools", tag = "pools",
    request_body = kipam_api::schema::PoolConfig,
    responses((status = 201, body = PoolView)))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(config): ApiJson<PoolConfig>,
) -> Result<(StatusCode, axum::Json<PoolView>), ApiError> {
    let engine = state.engine()?;
    let name = config.name.clone();
    engine.apply(Mutation::CreatePool(config)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(engine.read(|i| find(i, &name))?),
    ))
}

/// A pool with its usage.
#[utoipa::path(get, path = "/v1/pools/{name}", tag = "pools",
    params(("name" = String, Path, description = "Pool name (percent-encoded)")),
    responses((status = 200, body = PoolView)))]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<axum::Json<PoolView>, ApiError> {
    let engine = state.engine()?;
    let v = engine.read(|i| find(i, &name))?;
    Ok(axum::Json(judged(&state, engine.now(), v)))
}

/// RFC 7386 merge: objects merge key by key, `null` removes, anything else replaces.
fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Changes a pool's settings with a JSON merge patch of its configuration. `name` and
/// `cidr` cannot change; the engine refuses settings that do not fit what the pool holds.
#[utoipa::path(patch, path = "/v1/pools/{name}", tag = "pools",
    params(("name" = String, Path, description = "Pool name (percent-encoded)")),
    request_body = kipam_api::schema::PoolPatch,
    responses((status = 200, body = PoolView)))]
pub async fn update(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(patch): ApiJson<serde_json::Value>,
) -> Result<axum::Json<PoolView>, ApiError> {
    let engine = state.engine()?;
    if !patch.is_object() {
        return Err(ApiError::invalid(
            "body",
            "a merge patch must be a JSON object",
        ));
    }
    let current = engine.read(|i| find(i, &name))?.config;
    let mut doc =
        serde_json::to_value(&current).map_err(|e| ApiError::invalid("body", e.to_string()))?;
    merge(&mut doc, &patch);
    let config: PoolConfig = serde_json::from_value(doc).map_err(|e| {
        ApiError::invalid("body", format!("the patched configuration is invalid: {e}"))
    })?;
    if config.name != current.name {
        return Err(ApiError::invalid(
            "name",
            "a pool cannot be renamed; create a new one",
        ));
    }
    if config.cidr != current.cidr {
        return Err(ApiError::invalid(
            "cidr",
            "a pool's CIDR cannot change; create a new pool",
        ));
    }
    engine.apply(Mutation::UpdatePool(config)).await?;
    let v = engine.read(|i| find(i, &name))?;
    Ok(axum::Json(judged(&state, engine.now(), v)))
}

/// Deletes a pool. Refused (409) while it holds allocations or leases unless
/// `force=true`, which releases them.
#[utoipa::path(delete, path = "/v1/pools/{name}", tag = "pools",
    params(("name" = String, Path, description = "Pool name (percent-encoded)"), DeletePoolQuery),
    responses((status = 204, description = "deleted")))]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeletePoolQuery>,
) -> Result<StatusCode, ApiError> {
    let engine = state.engine()?;
    engine
        .apply(Mutation::DeletePool {
            name,
            force: q.force.unwrap_or(false),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        super::merge(
            &mut t,
            &json!({"a": null, "b": {"c": 5}, "e": [2], "f": "x"}),
        );
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}, "e": [2], "f": "x"}));
    }
}
