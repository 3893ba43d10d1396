//! `/v1/usage`: address counts per pool and per node, and which pools are at risk.

use std::collections::BTreeMap;

use axum::extract::State;
use kipam_api::pools::UsageCounts;
use kipam_api::usage::{NodeTotal, NodeUsage, PoolUsageView, UsageReport};

use crate::error::ApiError;
use crate::state::AppState;

/// Usage of every pool (with each node's share) and of every node across pools.
#[utoipa::path(get, path = "/v1/usage", tag = "usage",
    responses((status = 200, body = UsageReport)))]
pub async fn report(State(state): State<AppState>) -> Result<axum::Json<UsageReport>, ApiError> {
    let engine = state.engine()?;
    let now = engine.now();
    let report = engine.read(|ipam| {
        let mut totals: BTreeMap<String, NodeTotal> = BTreeMap::new();
        let mut pools = Vec::new();
        for p in ipam.pools() {
            let c = p.config();
            let mut nodes = Vec::new();
            let mut names: Vec<&str> = p.loaded_nodes().collect();
            names.sort_unstable();
            for node in names {
                let s = p.node_summaries(node);
                if s.is_empty() {
                    continue;
                }
                let held: u64 = s.iter().map(|(_, b)| u64::from(b.held)).sum();
                let free: u64 = s.iter().map(|(_, b)| u64::from(b.free)).sum();
                let t = totals.entry(node.to_string()).or_insert_with(|| NodeTotal {
                    node: node.to_string(),
                    blocks: 0,
                    held: 0,
                });
                t.blocks += s.len() as u64;
                t.held += held;
                nodes.push(NodeUsage {
                    node: node.to_string(),
                    blocks: s.len() as u64,
                    held,
                    free,
                });
            }
            let counts = UsageCounts::new(c.family(), &p.usage());
            pools.push(PoolUsageView {
                pool: c.name.clone(),
                cidr: c.cidr.to_string(),
                scope: c.scope.clone(),
                purpose: c.purpose,
                at_risk: state.forecasts.at_risk(&c.name, counts.percent_used, now),
                counts,
                nodes,
            });
        }
        UsageReport {
            time: kipam_api::time::format(now),
            pools,
            nodes: totals.into_values().collect(),
        }
    });
    Ok(axum::Json(report))
}
