//! Pools on the wire: a pool's configuration ([`kipam_core::PoolConfig`], the body of
//! create and the result of a merge patch) and the view kipamd answers with, which adds
//! the pool's current usage.
//!
//! Address counts of a pool can exceed 2^53 (an IPv6 /64 has 2^64 addresses), which
//! JSON numbers in most clients cannot hold exactly. So `size`, `free`, `reserved` and
//! `leased` are decimal strings; `held` and `quarantined` are bounded by the blocks
//! claimed and stay numbers.

use kipam_core::{Family, PoolConfig, PoolUsage};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Address counts of a pool. `size = free + held + quarantined + reserved + leased`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageCounts {
    /// Family of the pool.
    #[schema(value_type = crate::schema::Family)]
    pub family: Family,
    /// All addresses of the CIDR, as a decimal string (may exceed 2^53).
    #[schema(example = "65536")]
    pub size: String,
    /// Addresses held by handles.
    pub held: u64,
    /// Free addresses, as a decimal string (may exceed 2^53).
    #[schema(example = "65000")]
    pub free: String,
    /// Released addresses waiting out the pool's reuse delay.
    pub quarantined: u64,
    /// Addresses never handed out (network, broadcast, gateway, exclusions, external
    /// networks of the scope), as a decimal string.
    #[schema(example = "2")]
    pub reserved: String,
    /// Addresses inside prefix leases, as a decimal string.
    #[schema(example = "0")]
    pub leased: String,
    /// Blocks claimed.
    pub blocks: u64,
    /// Prefix leases.
    pub leases: u64,
    /// Share of usable addresses (size minus reserved) that are held, quarantined or
    /// leased, in percent.
    pub percent_used: f64,
}

impl UsageCounts {
    /// The wire form of an engine usage.
    pub fn new(family: Family, u: &PoolUsage) -> UsageCounts {
        UsageCounts {
            family,
            size: u.size.to_string(),
            held: u64::try_from(u.held).unwrap_or(u64::MAX),
            free: u.free.to_string(),
            quarantined: u64::try_from(u.quarantined).unwrap_or(u64::MAX),
            reserved: u.reserved.to_string(),
            leased: u.leased.to_string(),
            blocks: u.blocks,
            leases: u.leases,
            percent_used: u.percent_used(),
        }
    }
}

/// A pool: its configuration and its usage now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolView {
    /// The configuration, as created or patched.
    #[schema(value_type = crate::schema::PoolConfig)]
    pub config: PoolConfig,
    /// Address counts.
    pub usage: UsageCounts,
    /// Present when the pool is at risk of running out (see kipamd's risk thresholds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_risk: Option<crate::planning::AtRisk>,
}

/// `GET /v1/pools`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolList {
    /// Pools in name order.
    pub items: Vec<PoolView>,
}

/// Query of `DELETE /v1/pools/{name}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeletePoolQuery {
    /// Delete even while the pool holds allocations or leases (they are released).
    #[serde(default)]
    pub force: Option<bool>,
}
