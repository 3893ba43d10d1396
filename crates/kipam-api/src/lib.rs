//! kipam-api: kipamd's wire protocol in one place.
//!
//! The request and response types of every route (serde, camelCase), the OpenAPI schemas
//! derived from them (utoipa; kipamd assembles the document and serves it at
//! `/v1/openapi.json`), and the blocking [`client::Client`] that kipamctl, the CNI
//! plugin's daemon mode and the tests use. The server and its clients depend on this crate
//! and not on each other, so a change of the protocol is a change here, visible to both.
//!
//! # Layout
//! - [`pools`], [`allocations`], [`prefixes`], [`networks`] (external networks and
//!   overlaps), [`usage`], [`addresses`], [`gc`], [`health`]: one module per resource.
//! - [`planning`]: the subnet planner's request and plan (kipam-core's types as they are)
//!   and the exhaustion forecast with its at-risk marker.
//! - [`error`]: the error body `{"error": {"code", "message"}}` and its codes.
//! - [`schema`]: OpenAPI schemas of the kipam-core types sent unchanged.
//! - [`time`]: RFC 3339 formatting and parsing of engine times.
//! - [`client`]: the blocking client (HTTP/1.1 over a unix socket or TCP, std only).
//!
//! # Large numbers
//! Address counts of IPv6 pools exceed 2^53, the largest integer a JSON number holds
//! exactly in most clients: `size`, `free`, `reserved` and `leased` are decimal strings.

pub mod addresses;
pub mod allocations;
pub mod client;
pub mod error;
pub mod gc;
pub mod health;
pub mod networks;
pub mod planning;
pub mod pools;
pub mod prefixes;
pub mod schema;
pub mod time;
pub mod usage;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
