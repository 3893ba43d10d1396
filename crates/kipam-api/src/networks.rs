//! External networks and overlaps on the wire.
//!
//! An external network is a [`kipam_core::ScopeNetwork`] (sent and answered unchanged).
//! Overlaps are re-shaped from [`kipam_core::Overlap`] into camelCase with plain strings.

use kipam_core::{AddrRange, ObjectKind, Overlap, ScopeNetwork};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/external-networks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExternalNetworkList {
    /// External networks by name.
    #[schema(value_type = Vec<crate::schema::ScopeNetwork>)]
    pub items: Vec<ScopeNetwork>,
}

/// An inclusive address range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RangeView {
    /// First address.
    pub first: String,
    /// Last address.
    pub last: String,
}

impl From<&AddrRange> for RangeView {
    fn from(r: &AddrRange) -> RangeView {
        RangeView {
            first: r.first.to_string(),
            last: r.last.to_string(),
        }
    }
}

/// The wire name of an object kind (`pool`, `prefix-lease`, `external-network`,
/// `reservation`).
pub fn kind_name(k: ObjectKind) -> &'static str {
    match k {
        ObjectKind::Pool => "pool",
        ObjectKind::Lease => "prefix-lease",
        ObjectKind::External => "external-network",
        ObjectKind::Reservation => "reservation",
    }
}

/// One side of an overlap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OverlapSide {
    /// `pool`, `prefix-lease`, `external-network` or `reservation`.
    pub kind: String,
    /// Its name (a lease: `pool/prefix`).
    pub name: String,
    /// Its addresses.
    pub range: RangeView,
}

/// Two objects of one scope that share addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OverlapView {
    /// The scope.
    pub scope: String,
    /// One object.
    pub a: OverlapSide,
    /// The other.
    pub b: OverlapSide,
    /// The addresses both hold.
    pub shared: RangeView,
}

impl From<&Overlap> for OverlapView {
    fn from(o: &Overlap) -> OverlapView {
        OverlapView {
            scope: o.scope.clone(),
            a: OverlapSide {
                kind: kind_name(o.a.kind).into(),
                name: o.a.name.clone(),
                range: (&o.a_range).into(),
            },
            b: OverlapSide {
                kind: kind_name(o.b.kind).into(),
                name: o.b.name.clone(),
                range: (&o.b_range).into(),
            },
            shared: (&o.shared).into(),
        }
    }
}

/// `GET /v1/overlaps`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OverlapList {
    /// Every overlapping pair, by scope and address.
    pub items: Vec<OverlapView>,
}
