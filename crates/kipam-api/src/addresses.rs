//! Address info on the wire: who holds an address now (or at `?at=`), and its history.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// What an address is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AddressState {
    /// Held by a handle.
    Held,
    /// Free in a claimed block.
    Free,
    /// Released, waiting out the reuse delay.
    Quarantined,
    /// Never handed out (network, broadcast, gateway, excluded).
    Reserved,
    /// Inside a prefix lease.
    Leased,
    /// In a pool but in no block yet: free.
    Unclaimed,
    /// In no pool.
    Unmanaged,
}

/// The holder of an address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Holder {
    /// The handle.
    pub handle: String,
    /// Its node, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its attributes (at allocation time, for a past holder).
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
    /// Since when it holds the address (RFC 3339), if recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// One history event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Sequence number (increasing).
    pub seq: u64,
    /// When (RFC 3339).
    pub time: String,
    /// `allocate`, `release`, `lease`, `lease-release` or `reclaim`.
    pub kind: String,
    /// Pool.
    pub pool: String,
    /// The address, for address events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The prefix, for lease events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The handle (or lease owner).
    pub handle: String,
    /// The node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The handle's attributes then.
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
}

/// Query of `GET /v1/addresses/{ip}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AddressQuery {
    /// Answer who held the address at this moment (RFC 3339) instead of now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "2025-05-01T12:00:00Z")]
    pub at: Option<String>,
}

/// `GET /v1/addresses/{ip}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddressInfo {
    /// The address.
    pub address: String,
    /// The pool containing it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Its state now.
    pub state: AddressState,
    /// The moment asked about (`?at=`, RFC 3339), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// The holder now, or at `at` if asked; absent when nobody held it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
    /// Its events, oldest first (within the event retention).
    pub history: Vec<EventView>,
}
