//! Prefix leases on the wire: a whole sub-prefix of a pool handed to an owner (a node's
//! pod-CIDR, a cluster's subnet).

use std::collections::BTreeMap;

use ipnet::IpNet;
use kipam_core::{Lease, LeaseWant};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::allocations::FieldError;

/// `POST /v1/prefixes`: give `prefixLength` (the lowest free prefix of that length) or
/// `prefix` (exactly that one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseRequest {
    /// The pool to lease from.
    pub pool: String,
    /// Length of the prefix wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 128, example = 24)]
    pub prefix_length: Option<u8>,
    /// Exactly this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "10.240.3.0/24")]
    pub prefix: Option<IpNet>,
    /// Who holds it (e.g. `node/worker-1`, `cluster/prod-eu`).
    pub owner: String,
    /// Free attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
}

impl LeaseRequest {
    /// Which prefix the engine is asked for.
    pub fn want(&self) -> Result<LeaseWant, FieldError> {
        match (self.prefix_length, self.prefix) {
            (Some(len), None) => Ok(LeaseWant::Length(len)),
            (None, Some(p)) => Ok(LeaseWant::Exact(p)),
            (Some(_), Some(_)) => Err(FieldError {
                field: "prefix".into(),
                reason: "give prefixLength or prefix, not both".into(),
            }),
            (None, None) => Err(FieldError {
                field: "prefixLength".into(),
                reason: "give prefixLength or prefix".into(),
            }),
        }
    }
}

/// A prefix lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseView {
    /// The pool it came from.
    pub pool: String,
    /// The leased prefix.
    #[schema(value_type = String, example = "10.240.3.0/24")]
    pub prefix: IpNet,
    /// Who holds it.
    pub owner: String,
    /// When it was leased (RFC 3339).
    pub created: String,
    /// Free attributes.
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
}

impl LeaseView {
    /// The wire form of a lease of `pool`.
    pub fn new(pool: &str, l: &Lease) -> LeaseView {
        LeaseView {
            pool: pool.to_string(),
            prefix: l.prefix,
            owner: l.owner.clone(),
            created: crate::time::format(l.created),
            attrs: l.attrs.clone(),
        }
    }
}

/// Query of `GET /v1/prefixes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LeaseQuery {
    /// Only leases of this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Only leases of this owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// `GET /v1/prefixes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeaseList {
    /// Leases by pool, then address.
    pub items: Vec<LeaseView>,
}
