//! The error body every kipamd refusal carries: `{"error": {"code", "message", ...}}`.
//!
//! `code` is a stable, machine-readable word (a client branches on it); `message` is for
//! the person reading it and names the field or the conflicting object. The optional
//! `field` and `conflict` repeat those names in structured form.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Machine-readable error codes. New codes may be added; clients treat unknown ones by
/// their HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request is malformed or a field is invalid (`field` names it).
    InvalidArgument,
    /// 401: no token, or a token kipamd does not know.
    Unauthenticated,
    /// 403: the token's role may not do this.
    PermissionDenied,
    /// 404: no such route, pool, handle, lease or network.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 409: the object exists already.
    AlreadyExists,
    /// 409: the CIDR overlaps another object of the scope (`conflict` names it).
    Overlap,
    /// 409: the pool still holds allocations or leases.
    PoolInUse,
    /// 409: a static address is held by another handle (`conflict` names it).
    AddressInUse,
    /// 409: a static address is reserved, outside the pool or inside a prefix lease.
    AddressUnavailable,
    /// 413: the request body is larger than the limit.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 422: the pool(s) have no address, or no prefix of that length, left.
    Exhausted,
    /// 422: the subnet planner cannot fit the request; `details` says what would fit.
    Infeasible,
    /// 501: not available in this build.
    NotImplemented,
    /// 503: the store is not loaded yet, failed, or kipamd is shutting down.
    Unavailable,
    /// 504: the request took longer than the daemon's request timeout.
    Timeout,
    /// 500: a bug in kipamd; the message says what.
    Internal,
}

impl ErrorCode {
    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Overlap => "overlap",
            ErrorCode::PoolInUse => "pool_in_use",
            ErrorCode::AddressInUse => "address_in_use",
            ErrorCode::AddressUnavailable => "address_unavailable",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Exhausted => "exhausted",
            ErrorCode::Infeasible => "infeasible",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An object named by an error: `{"kind": "pool", "name": "pods-a"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ObjectName {
    /// Kind: `pool`, `prefix-lease`, `external-network`, `reservation`, `handle`.
    pub kind: String,
    /// Name (for a lease: `pool/prefix`).
    pub name: String,
}

/// The inside of an error body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
    /// The request field at fault, as written in the request (e.g. `blockPrefixLength`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The existing object the request conflicts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<ObjectName>,
    /// Structured facts of the refusal, for programs (the planner's refusals: `kind` and
    /// the numbers of its message, e.g. the prefix needed and the largest free block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Boxed: keeps every `Result` that carries an error body small.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Box<serde_json::Value>>,
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

impl ErrorBody {
    /// An error with just a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
                field: None,
                conflict: None,
                details: None,
            },
        }
    }
}
