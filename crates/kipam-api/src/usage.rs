//! Usage on the wire: per pool (counts, as in [`crate::pools::UsageCounts`]) and per node.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::pools::UsageCounts;

/// A node's share of a pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeUsage {
    /// Node name.
    pub node: String,
    /// Blocks affine to the node.
    pub blocks: u64,
    /// Addresses its blocks hold (for any node's handles).
    pub held: u64,
    /// Free addresses in its blocks.
    pub free: u64,
}

/// One pool's usage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsageView {
    /// Pool name.
    pub pool: String,
    /// Its CIDR.
    pub cidr: String,
    /// Its scope.
    pub scope: String,
    /// Its purpose.
    #[schema(value_type = crate::schema::Purpose)]
    pub purpose: kipam_core::Purpose,
    /// Address counts.
    #[serde(flatten)]
    pub counts: UsageCounts,
    /// Per node, by name.
    pub nodes: Vec<NodeUsage>,
    /// Present when the pool is at risk of running out (see kipamd's risk thresholds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_risk: Option<crate::planning::AtRisk>,
}

/// A node across all pools.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeTotal {
    /// Node name.
    pub node: String,
    /// Blocks affine to it, all pools.
    pub blocks: u64,
    /// Addresses held in them.
    pub held: u64,
}

/// `GET /v1/usage`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    /// When it was taken (RFC 3339).
    pub time: String,
    /// Per pool, by name.
    pub pools: Vec<PoolUsageView>,
    /// Per node, by name.
    pub nodes: Vec<NodeTotal>,
}
