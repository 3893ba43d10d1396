//! Garbage collection on the wire: a node or network reports the attachments it still
//! has; kipamd reclaims the rest of what belongs to it after a grace period.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/gc`. Give `node`, `network` or both to say what belongs to the reporter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcRequest {
    /// Handles allocated for this node belong to the reporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Handles whose key starts with `{network}/` belong to the reporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Handle keys still in use.
    #[serde(default)]
    pub valid: Vec<String>,
    /// Grace period in seconds before a stale handle is reclaimed (default: the
    /// daemon's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub grace_seconds: Option<u64>,
}

/// A reclaim waiting for its grace period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PendingReclaimView {
    /// The handle.
    pub handle: String,
    /// Reclaimed at this time (RFC 3339) unless reported valid again.
    pub due: String,
    /// Who reported it stale (`node:NAME` or `network:NAME`).
    pub reporter: String,
}

/// The answer to `POST /v1/gc` and `GET /v1/gc`: reclaims pending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcResponse {
    /// Handles waiting to be reclaimed.
    pub pending: Vec<PendingReclaimView>,
}
