//! Errors as HTTP answers: every refusal leaves kipamd as `{"error": {...}}` with the
//! status that fits it.
//!
//! One mapping from the engine's structured errors ([`kipam_core::Error`],
//! [`EngineError`]) to statuses and codes lives here, so handlers just use `?`. Bad input
//! is a 4xx naming the field, never a 500; store trouble is a 503 (the client may retry);
//! a 500 only means a bug in kipamd. The extractors [`ApiJson`] and [`ApiQuery`] wrap
//! axum's so that its rejections (malformed JSON, wrong content type, body too large)
//! come out in the same shape.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use kipam_api::error::ObjectName;
use kipam_api::networks::kind_name;
use kipam_api::{ErrorBody, ErrorCode, ErrorDetail};
use kipam_core::Error as CoreError;
use serde::de::DeserializeOwned;

use crate::engine::EngineError;

/// An error answer: a status and the body.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody::new(code, message),
        }
    }

    /// 400 naming the field.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidArgument, message);
        e.body.error.field = Some(field.to_string());
        e
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    /// 503 while the engine loads.
    pub fn not_ready() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "kipamd is still loading its state; retry shortly",
        )
    }

    fn conflict(mut self, kind: &str, name: &str) -> ApiError {
        self.body.error.conflict = Some(ObjectName {
            kind: kind.into(),
            name: name.into(),
        });
        self
    }

    fn with_field(mut self, field: &str) -> ApiError {
        self.body.error.field = Some(field.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        use StatusCode as S;
        let msg = e.to_string();
        let new = |s, c| ApiError::new(s, c, msg.clone());
        match &e {
            CoreError::PoolNotFound { .. } | CoreError::HandleNotFound { .. } => {
                new(S::NOT_FOUND, ErrorCode::NotFound)
            }
            CoreError::NoPoolForFamily { .. } => new(S::NOT_FOUND, ErrorCode::NotFound),
            CoreError::PoolExhausted { .. }
            | CoreError::NoRoomForPrefix { .. }
            | CoreError::NodeBlockLimit { .. } => {
                new(S::UNPROCESSABLE_ENTITY, ErrorCode::Exhausted)
            }
            CoreError::AddressInUse { holder, .. } => {
                new(S::CONFLICT, ErrorCode::AddressInUse).conflict("handle", holder)
            }
            CoreError::AddressReserved { pool, .. } => {
                new(S::CONFLICT, ErrorCode::AddressUnavailable).conflict("pool", pool)
            }
            CoreError::AddressInLease { pool, lease, .. } => {
                new(S::CONFLICT, ErrorCode::AddressUnavailable)
                    .conflict("prefix-lease", &format!("{pool}/{}", lease.to_net()))
            }
            CoreError::PrefixTaken { pool, prefix, .. } => new(S::CONFLICT, ErrorCode::Overlap)
                .conflict("prefix-lease", &format!("{pool}/{prefix}")),
            CoreError::AddressOutsidePool { .. } => {
                new(S::BAD_REQUEST, ErrorCode::InvalidArgument).with_field("address")
            }
            CoreError::Overlap(o) => {
                new(S::CONFLICT, ErrorCode::Overlap).conflict(kind_name(o.b.kind), &o.b.name)
            }
            CoreError::Invalid { field, .. } => {
                new(S::BAD_REQUEST, ErrorCode::InvalidArgument).with_field(field)
            }
            CoreError::AlreadyExists { kind, name } => {
                let kind = kind.replace(' ', "-");
                new(S::CONFLICT, ErrorCode::AlreadyExists).conflict(&kind, name)
            }
            CoreError::PoolInUse { pool, .. } => {
                new(S::CONFLICT, ErrorCode::PoolInUse).conflict("pool", pool)
            }
            CoreError::NeedLoad(_) => {
                tracing::error!(error = %e, "engine asked kipamd to load state (a bug: kipamd loads everything)");
                new(S::INTERNAL_SERVER_ERROR, ErrorCode::Internal)
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Core(c) | EngineError::Ipam(kipam_store::IpamError::Engine(c)) => c.into(),
            EngineError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "kipamd is shutting down; retry against the new instance",
            ),
            e @ (EngineError::Store(_) | EngineError::Ipam(_)) => {
                // With its causes: "…: I/O error" alone does not say what to do.
                let mut message = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    message.push_str(": ");
                    message.push_str(&c.to_string());
                    cause = c.source();
                }
                tracing::error!(error = %message, "store failure");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    message,
                )
            }
        }
    }
}

/// A field error of a wire type's conversion.
impl From<kipam_api::allocations::FieldError> for ApiError {
    fn from(e: kipam_api::allocations::FieldError) -> ApiError {
        ApiError::invalid(&e.field, e.to_string())
    }
}

fn rejection(status: StatusCode, message: String) -> ApiError {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        s if s.is_client_error() => ErrorCode::InvalidArgument,
        _ => ErrorCode::Internal,
    };
    ApiError {
        status,
        body: ErrorBody {
            error: ErrorDetail {
                code,
                message,
                field: None,
                conflict: None,
                details: None,
            },
        },
    }
}

/// A JSON body; rejections come out as [`ApiError`] (400 malformed, 415 not JSON, 413 too
/// large, 422 valid JSON of the wrong shape, naming the field).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(json_rejection(r)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let status = r.status();
    let message = match &r {
        JsonRejection::MissingJsonContentType(_) => {
            "the body must be JSON with Content-Type: application/json".to_string()
        }
        JsonRejection::BytesRejection(_) if status == StatusCode::PAYLOAD_TOO_LARGE => {
            format!(
                "the body is larger than the limit of {} bytes",
                crate::BODY_LIMIT
            )
        }
        _ => r.body_text(),
    };
    rejection(status, message)
}

/// Query parameters; rejections come out as a 400 [`ApiError`].
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(r) => Err(query_rejection(r)),
        }
    }
}

fn query_rejection(r: QueryRejection) -> ApiError {
    rejection(StatusCode::BAD_REQUEST, r.body_text())
}

/// Path parameters; rejections come out as a 400 [`ApiError`].
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(r) => Err(rejection(StatusCode::BAD_REQUEST, r.body_text())),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kipam_core::{Family, ObjectKind, ObjectRef, Overlap};

    #[test]
    fn maps_core_errors_to_statuses() {
        let r = |a: &str| kipam_core::AddrRange::of_net(a.parse().unwrap());
        let cases: Vec<(CoreError, u16, ErrorCode)> = vec![
            (
                CoreError::PoolNotFound { pool: "p".into() },
                404,
                ErrorCode::NotFound,
            ),
            (
                CoreError::PoolExhausted {
                    pool: "p".into(),
                    family: Family::Ipv4,
                },
                422,
                ErrorCode::Exhausted,
            ),
            (
                CoreError::AddressInUse {
                    addr: "10.0.0.1".parse().unwrap(),
                    holder: "h".into(),
                },
                409,
                ErrorCode::AddressInUse,
            ),
            (
                CoreError::Invalid {
                    field: "cidr".into(),
                    reason: "x".into(),
                },
                400,
                ErrorCode::InvalidArgument,
            ),
            (
                CoreError::AlreadyExists {
                    kind: "external network",
                    name: "n".into(),
                },
                409,
                ErrorCode::AlreadyExists,
            ),
            (
                CoreError::PoolInUse {
                    pool: "p".into(),
                    allocations: 1,
                    leases: 0,
                },
                409,
                ErrorCode::PoolInUse,
            ),
            (
                CoreError::Overlap(Box::new(Overlap {
                    scope: "default".into(),
                    a: ObjectRef {
                        kind: ObjectKind::Pool,
                        name: "new".into(),
                    },
                    a_range: r("10.0.0.0/16"),
                    b: ObjectRef {
                        kind: ObjectKind::External,
                        name: "vpn".into(),
                    },
                    b_range: r("10.0.0.0/24"),
                    shared: r("10.0.0.0/24"),
                })),
                409,
                ErrorCode::Overlap,
            ),
        ];
        for (e, status, code) in cases {
            let a = ApiError::from(e);
            assert_eq!(a.status.as_u16(), status);
            assert_eq!(a.body.error.code, code);
        }
        let a = ApiError::from(CoreError::Invalid {
            field: "cidr".into(),
            reason: "x".into(),
        });
        assert_eq!(a.body.error.field.as_deref(), Some("cidr"));
        let a = ApiError::from(CoreError::AlreadyExists {
            kind: "external network",
            name: "n".into(),
        });
        assert_eq!(a.body.error.conflict.unwrap().kind, "external-network");
    }

    #[test]
    fn engine_failures_are_503() {
        let a = ApiError::from(EngineError::ShuttingDown);
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        let a = ApiError::from(EngineError::Store(kipam_store::StoreError::Busy {
            waited: std::time::Duration::from_secs(1),
        }));
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
