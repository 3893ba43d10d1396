//! `/v1/plan` (subnet planner) and `/v1/pools/{name}/forecast` (time to exhaustion, of a
//! pool or of one node's blocks in it).
//!
//! Both are thin: the arithmetic is kipam-core's ([`kipam_core::planner`],
//! [`kipam_core::forecast`]). The planner is pure and needs no engine, so it answers while
//! the store loads. Its refusals keep their structure: an inconsistent request (no
//! cluster, duplicate names, a family without a supernet...) is a 400 naming the field;
//! a request that is consistent but cannot fit is a 422 `infeasible`. Both carry the
//! refusal's fields in `error.details` (`kind` plus the numbers of the message), so a
//! program can act on "needs a /15, the largest free block is a /16" without parsing it.

use axum::extract::State;
use axum::http::StatusCode;
use kipam_api::ErrorCode;
use kipam_api::planning::{
    AtRisk, ForecastNodeQuery, ForecastQuery, ForecastView, Plan, PlanRequest, parse_duration,
};
use kipam_core::forecast::{DAY_MS, ForecastOptions, at_risk, forecast as fit};
use kipam_core::planner::PlanError;
use serde_json::json;

use crate::engine::{EngineError, Sample, node_usage};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::forecasts::to_sample;
use crate::state::AppState;

/// The longest forecast window accepted (samples are kept 90 days by default).
const MAX_WINDOW_MS: u64 = 365 * DAY_MS;

/// Plans cluster (pod) CIDRs, node masks, service CIDRs and LoadBalancer ranges for
/// growth, clear of each other and of every network to avoid. Pure: nothing is created
/// (`kipamctl plan --apply` creates the pools).
#[utoipa::path(post, path = "/v1/plan", tag = "planning",
    request_body = kipam_api::schema::PlanRequest,
    responses(
        (status = 200, body = kipam_api::schema::Plan),
        (status = 422, description = "the request cannot fit (`infeasible`; `details` says what would), or valid JSON of the wrong shape", body = kipam_api::ErrorBody)))]
pub async fn plan(ApiJson(req): ApiJson<PlanRequest>) -> Result<axum::Json<Plan>, ApiError> {
    // Planning is CPU work bounded by the request's size (1 MiB at most); the
    // blocking pool keeps it off the reactor.
    let planned = tokio::task::spawn_blocking(move || kipam_core::planner::plan(&req))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                format!("the planner failed: {e}"),
            )
        })?;
    planned.map(axum::Json).map_err(plan_error)
}

/// The answer to a planner refusal: status, code, field and details.
pub fn plan_error(e: PlanError) -> ApiError {
    let message = e.to_string();
    let (status, code, field, details) = match &e {
        PlanError::NoClusters => (
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            "clusters".to_string(),
            json!({"kind": "no-clusters"}),
        ),
        PlanError::EmptyName { index } => (
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            format!("clusters[{index}].name"),
            json!({"kind": "empty-name", "index": index}),
        ),
        PlanError::DuplicateCluster { name } => (
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            "clusters".into(),
            json!({"kind": "duplicate-cluster", "name": name}),
        ),
        PlanError::NoDemand { cluster } => (
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            "clusters".into(),
            json!({"kind": "no-demand", "cluster": cluster}),
        ),
        PlanError::ZeroPodsPerNode { cluster } => (
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            "maxPodsPerNode".into(),
            json!({"kind": "zero-pods-per-node", "cluster": cluster}),
        ),
        PlanError::InvalidHeadroom {
            cluster,
            percent,
            max,
        } => (
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            "headroomPct".into(),
            json!({"kind": "invalid-headroom", "cluster": cluster, "percent": percent, "max": max}),
        ),
        PlanError::InvalidNodeMask {
            cluster,
            family,
            mask,
            min,
            max,
        } => (
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            match family {
                kipam_core::Family::Ipv4 => "nodeMaskV4",
                kipam_core::Family::Ipv6 => "nodeMaskV6",
            }
            .into(),
            json!({"kind": "invalid-node-mask", "cluster": cluster, "family": family,
                   "mask": mask, "min": min, "max": max}),
        ),
        PlanError::NoSupernet { cluster, family } => (
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            "supernets".into(),
            json!({"kind": "no-supernet", "cluster": cluster, "family": family}),
        ),
        PlanError::OverlappingSupernets { a, b } => (
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            "supernets".into(),
            json!({"kind": "overlapping-supernets", "a": a, "b": b}),
        ),
        PlanError::TooLarge {
            cluster,
            family,
            what,
            needed_bits,
            max_bits,
            limit,
        } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Infeasible,
            "clusters".into(),
            json!({"kind": "too-large", "cluster": cluster, "family": family, "what": what,
                   "neededBits": needed_bits, "maxBits": max_bits, "limit": limit}),
        ),
        PlanError::DoesNotFit(d) => {
            let mut v = serde_json::to_value(d.as_ref()).unwrap_or_else(|_| json!({}));
            if let Some(o) = v.as_object_mut() {
                o.insert("kind".into(), json!("does-not-fit"));
            }
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::Infeasible,
                "supernets".into(),
                v,
            )
        }
    };
    let mut err = ApiError::new(status, code, message);
    err.body.error.field = Some(field);
    err.body.error.details = Some(Box::new(details));
    err
}

/// When a pool will run out, from its usage samples: a least-squares trend over the
/// window, with the growth rate, R², a confidence and the at-risk marker. "Not growing"
/// and "not enough data" are answers, not errors.
///
/// With `node`, the same for that node's blocks in the pool, from the node's own
/// samples: when they are full (with `maxBlocksPerNode`, when the node can take no more
/// addresses without borrowing).
#[utoipa::path(get, path = "/v1/pools/{name}/forecast", tag = "planning",
    params(("name" = String, Path, description = "Pool name (percent-encoded)"), ForecastQuery, ForecastNodeQuery),
    responses((status = 200, body = ForecastView)))]
pub async fn forecast(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ForecastQuery>,
    ApiQuery(nq): ApiQuery<ForecastNodeQuery>,
) -> Result<axum::Json<ForecastView>, ApiError> {
    let opts = options(&q)?;
    if let Some(node) = nq.node {
        return node_forecast(&state, name, node, opts).await;
    }
    let engine = state.engine()?;
    // The pool's usage now, as the engine's samples count it: held + quarantined +
    // leased of the usable (size - reserved) addresses.
    let live = engine.read(|i| {
        i.pool(&name).map(|p| {
            let u = p.usage();
            (
                u.held + u.quarantined + u.leased,
                u.size.saturating_sub(u.reserved),
                u.percent_used(),
            )
        })
    });
    let Some((used, usable, usage_pct)) = live else {
        return Err(kipam_core::Error::PoolNotFound { pool: name }.into());
    };
    let now = engine.now();
    let e = engine.clone();
    let pool = name.clone();
    let samples =
        read_samples(move || e.samples(&pool, now.saturating_sub(opts.window_ms))).await?;
    let f = fit(&samples, now, &opts);
    Ok(axum::Json(view_now(
        &state,
        &name,
        &f,
        now,
        (used, usable),
        usage_pct,
    )))
}

/// The forecast's view with usage and risk as of now, like pool lists report them, not
/// as of the last sample (which may be a sample interval old, or missing for a new pool).
fn view_now(
    state: &AppState,
    pool: &str,
    f: &kipam_core::forecast::Forecast,
    now: u64,
    (used, usable): (u128, u128),
    usage_pct: f64,
) -> ForecastView {
    let thresholds = state.forecasts.thresholds();
    let mut view = ForecastView::new(pool, f, now, thresholds);
    view.used = used.to_string();
    view.size = usable.to_string();
    view.usage_pct = usage_pct;
    view.at_risk = at_risk(usage_pct, f.eta, now, thresholds)
        .as_ref()
        .map(AtRisk::new);
    view
}

/// The forecast of `node`'s blocks in `pool`, from the node's samples (read from the
/// store: nodes are too many to cache), with its usage now.
async fn node_forecast(
    state: &AppState,
    pool: String,
    node: String,
    opts: ForecastOptions,
) -> Result<axum::Json<ForecastView>, ApiError> {
    if node.is_empty() {
        return Err(ApiError::invalid("node", "the node name is empty"));
    }
    let engine = state.engine()?;
    // Used (held + quarantined) and usable addresses of the node's blocks now, as the
    // node samples count them; None when it has no blocks (left the pool, or never came).
    let live = engine.read(|i| i.pool(&pool).map(|p| node_usage(p, &node)));
    let Some(live) = live else {
        return Err(kipam_core::Error::PoolNotFound { pool }.into());
    };
    let now = engine.now();
    let e = engine.clone();
    let (p, n) = (pool.clone(), node.clone());
    let samples =
        read_samples(move || e.node_samples(&p, &n, now.saturating_sub(opts.window_ms))).await?;
    if live.is_none() && samples.is_empty() {
        let mut err = ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!(
                "node {node:?} has no blocks in pool {pool:?} and no usage samples in the window"
            ),
        );
        err.body.error.field = Some("node".into());
        return Err(err);
    }
    let (used, usable) = live.unwrap_or((0, 0));
    let usage_pct = match (used, usable) {
        (_, 0) if live.is_none() => 0.0,
        (_, 0) => 100.0,
        (u, s) => (u as f64) * 100.0 / (s as f64),
    };
    let f = fit(&samples, now, &opts);
    let mut view = view_now(state, &pool, &f, now, (used, usable), usage_pct);
    view.node = Some(node);
    Ok(axum::Json(view))
}

/// Runs a blocking read of engine samples off the async runtime.
async fn read_samples(
    read: impl FnOnce() -> Result<Vec<Sample>, EngineError> + Send + 'static,
) -> Result<Vec<kipam_core::forecast::Sample>, ApiError> {
    let samples = tokio::task::spawn_blocking(read).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("reading samples failed: {e}"),
        )
    })??;
    Ok(samples.iter().map(to_sample).collect())
}

/// The forecast options of a query; bad values are 400s naming the parameter.
fn options(q: &ForecastQuery) -> Result<ForecastOptions, ApiError> {
    let mut opts = ForecastOptions::default();
    if let Some(w) = &q.window {
        opts.window_ms =
            parse_duration(w).map_err(|e| ApiError::invalid("window", e.to_string()))?;
        if opts.window_ms > MAX_WINDOW_MS {
            return Err(ApiError::invalid(
                "window",
                format!("{w:?} is longer than the largest window, 365d"),
            ));
        }
    }
    opts.min_span_ms = opts.min_span_ms.min(opts.window_ms / 4);
    if let Some(s) = &q.min_span {
        opts.min_span_ms =
            parse_duration(s).map_err(|e| ApiError::invalid("minSpan", e.to_string()))?;
        if opts.min_span_ms > opts.window_ms {
            return Err(ApiError::invalid(
                "minSpan",
                format!("{s:?} is longer than the window; samples cannot span it"),
            ));
        }
    }
    if let Some(n) = q.min_samples {
        if n < 3 {
            return Err(ApiError::invalid(
                "minSamples",
                "a trend needs at least 3 samples (2 always fit a line exactly)",
            ));
        }
        opts.min_samples = n as usize;
    }
    Ok(opts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn q(window: Option<&str>, span: Option<&str>, n: Option<u32>) -> ForecastQuery {
        ForecastQuery {
            window: window.map(Into::into),
            min_span: span.map(Into::into),
            min_samples: n,
        }
    }

    #[test]
    fn forecast_options_from_queries() {
        let o = options(&q(None, None, None)).unwrap();
        assert_eq!(o, ForecastOptions::default());
        let o = options(&q(Some("60s"), None, None)).unwrap();
        assert_eq!((o.window_ms, o.min_span_ms), (60_000, 15_000));
        let o = options(&q(Some("1h"), Some("5s"), Some(4))).unwrap();
        assert_eq!((o.min_span_ms, o.min_samples), (5_000, 4));
        for bad in [
            q(Some("0s"), None, None),
            q(Some("400d"), None, None),
            q(Some("x"), None, None),
            q(Some("1m"), Some("2m"), None),
            q(None, None, Some(2)),
        ] {
            assert_eq!(options(&bad).unwrap_err().status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn plan_refusals_keep_their_fields() {
        use kipam_core::planner::{ClusterSpec, PlanRequest, plan};
        let req = PlanRequest {
            clusters: vec![ClusterSpec {
                name: "big".into(),
                nodes: 5000,
                ..ClusterSpec::default()
            }],
            supernets: vec!["10.0.0.0/16".parse().unwrap()],
            ..PlanRequest::default()
        };
        let e = plan_error(plan(&req).unwrap_err());
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.body.error.code, ErrorCode::Infeasible);
        let d = e.body.error.details.unwrap();
        assert_eq!(d["kind"], "does-not-fit");
        assert!(d["needed"].is_u64() && d["largestFree"].is_string(), "{d}");

        let e = plan_error(plan(&PlanRequest::default()).unwrap_err());
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body.error.field.as_deref(), Some("clusters"));
        assert_eq!(e.body.error.details.unwrap()["kind"], "no-clusters");
    }
}
