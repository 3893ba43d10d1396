//! The blocking kipamd client: one HTTP/1.1 request per connection over a unix socket or
//! TCP, typed methods for every route, typed errors.
//!
//! Blocking and std-only on purpose: the CNI plugin links it and runs once per container
//! start, where starting an async runtime would cost more than the request itself.
//! kipamctl and the tests use the same client, so every route is exercised as a real
//! program would call it.

pub mod http;

use std::io;
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use kipam_core::{Millis, PoolConfig, ScopeNetwork};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::addresses::AddressInfo;
use crate::allocations::{
    AllocateRequest, AllocationList, AllocationQuery, AllocationView, ReleaseResponse,
};
use crate::error::{ErrorBody, ErrorCode};
use crate::gc::{GcRequest, GcResponse};
use crate::networks::{ExternalNetworkList, OverlapList};
use crate::pools::{PoolList, PoolView};
use crate::prefixes::{LeaseList, LeaseQuery, LeaseRequest, LeaseView};
use crate::usage::UsageReport;
use http::{encode_query, encode_segment};

pub use http::Response;

/// Where kipamd listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket.
    Unix(PathBuf),
    /// `host:port` over TCP.
    Tcp(String),
}

impl Endpoint {
    /// Parses `unix:/path`, `/path` (a socket), `http://host:port[/]` or `host:port`.
    pub fn parse(s: &str) -> Result<Endpoint, ClientError> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(Endpoint::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') || s.starts_with("./") {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        if s.starts_with("https://") {
            return Err(ClientError::Endpoint {
                endpoint: s.into(),
                reason: "https is not supported; put kipamd behind a TLS proxy and use http, or use the unix socket".into(),
            });
        }
        let hp = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
        if hp.is_empty() || hp.contains('/') || !hp.contains(':') {
            return Err(ClientError::Endpoint {
                endpoint: s.into(),
                reason: "expected unix:/path, http://host:port or host:port".into(),
            });
        }
        Ok(Endpoint::Tcp(hp.into()))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(hp) => write!(f, "http://{hp}"),
        }
    }
}

/// Errors of the client.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The endpoint string is not one the client understands.
    #[error("bad endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// What was given.
        endpoint: String,
        /// Why not.
        reason: String,
    },
    /// kipamd could not be reached (not running, wrong address, socket permissions).
    #[error("cannot reach kipamd at {endpoint}")]
    Unreachable {
        /// Where.
        endpoint: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The exchange failed after connecting (timeout, reset, malformed response).
    #[error("request to kipamd at {endpoint} failed")]
    Io {
        /// Where.
        endpoint: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// kipamd refused the request.
    #[error("kipamd answered {status} ({code}): {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The error code of the body (`internal` when the body had none).
        code: ErrorCode,
        /// The message of the body (or the raw body).
        message: String,
        /// The whole decoded body, when it was one (boxed: keeps every `Result` small).
        body: Option<Box<ErrorBody>>,
    },
    /// The answer was not the JSON expected.
    #[error("cannot decode kipamd's answer ({status})")]
    Decode {
        /// HTTP status.
        status: u16,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } | ClientError::Decode { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The error code of a refusal.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A kipamd client. Cheap to clone; each request opens its own connection.
#[derive(Clone, Debug)]
pub struct Client {
    endpoint: Endpoint,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// A client for `endpoint` with no token and a 30 s timeout.
    pub fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            token: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// Sends `Authorization: Bearer TOKEN` with every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    /// Connect, read and write timeout of each request.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one request as given and returns the response whatever its status.
    /// `path` must be percent-encoded (with its query); `headers` are added after the
    /// client's own (`Host`, `Connection`, `Authorization`, `Content-Length`).
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 1);
        if let Some(a) = &auth {
            all.push(("Authorization", a));
        }
        all.extend_from_slice(headers);
        let io_err = |source| ClientError::Io {
            endpoint: self.endpoint.to_string(),
            source,
        };
        let head = method.eq_ignore_ascii_case("HEAD");
        match &self.endpoint {
            Endpoint::Unix(path_) => {
                let mut s =
                    UnixStream::connect(path_).map_err(|source| ClientError::Unreachable {
                        endpoint: self.endpoint.to_string(),
                        source,
                    })?;
                s.set_read_timeout(Some(self.timeout)).map_err(io_err)?;
                s.set_write_timeout(Some(self.timeout)).map_err(io_err)?;
                http::write_request(&mut s, method, "kipamd", path, &all, body).map_err(io_err)?;
                http::read_response(s, head).map_err(io_err)
            }
            Endpoint::Tcp(hp) => {
                let mut s = self.connect_tcp(hp)?;
                s.set_read_timeout(Some(self.timeout)).map_err(io_err)?;
                s.set_write_timeout(Some(self.timeout)).map_err(io_err)?;
                let _ = s.set_nodelay(true);
                http::write_request(&mut s, method, hp, path, &all, body).map_err(io_err)?;
                http::read_response(s, head).map_err(io_err)
            }
        }
    }

    fn connect_tcp(&self, hp: &str) -> Result<TcpStream, ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            endpoint: self.endpoint.to_string(),
            source,
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
        for addr in hp.to_socket_addrs().map_err(unreachable)? {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(unreachable(last))
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let json = match body {
            Some(b) => Some(
                serde_json::to_vec(b)
                    .map_err(|source| ClientError::Decode { status: 0, source })?,
            ),
            None => None,
        };
        let headers: &[(&str, &str)] = if json.is_some() {
            &[("Content-Type", "application/json")]
        } else {
            &[]
        };
        let resp = self.raw(method, path, headers, json.as_deref())?;
        decode(resp)
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(method::GET, path, None::<&()>)
    }

    /// `GET /healthz`.
    pub fn health(&self) -> Result<crate::health::Status, ClientError> {
        self.get("/healthz")
    }

    /// `GET /readyz`: Ok when the engine is loaded, a 503 [`ClientError::Status`] before.
    pub fn ready(&self) -> Result<crate::health::Status, ClientError> {
        self.get("/readyz")
    }

    /// `GET /v1/pools`.
    pub fn list_pools(&self) -> Result<PoolList, ClientError> {
        self.get("/v1/pools")
    }

    /// `GET /v1/pools/{name}`.
    pub fn get_pool(&self, name: &str) -> Result<PoolView, ClientError> {
        self.get(&format!("/v1/pools/{}", encode_segment(name)))
    }

    /// `POST /v1/pools`.
    pub fn create_pool(&self, config: &PoolConfig) -> Result<PoolView, ClientError> {
        self.call(method::POST, "/v1/pools", Some(config))
    }

    /// `PATCH /v1/pools/{name}` with a JSON merge patch.
    pub fn update_pool(
        &self,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<PoolView, ClientError> {
        self.call(
            method::PATCH,
            &format!("/v1/pools/{}", encode_segment(name)),
            Some(patch),
        )
    }

    /// `DELETE /v1/pools/{name}[?force=true]`.
    pub fn delete_pool(&self, name: &str, force: bool) -> Result<(), ClientError> {
        let q = if force { "?force=true" } else { "" };
        let resp = self.raw(
            method::DELETE,
            &format!("/v1/pools/{}{q}", encode_segment(name)),
            &[],
            None,
        )?;
        expect_empty(resp)
    }

    /// `POST /v1/allocations`.
    pub fn allocate(&self, req: &AllocateRequest) -> Result<AllocationView, ClientError> {
        self.call(method::POST, "/v1/allocations", Some(req))
    }

    /// `GET /v1/allocations/{handle}`.
    pub fn get_allocation(&self, handle: &str) -> Result<AllocationView, ClientError> {
        self.get(&format!("/v1/allocations/{}", encode_segment(handle)))
    }

    /// `DELETE /v1/allocations/{handle}`: idempotent.
    pub fn release(&self, handle: &str) -> Result<ReleaseResponse, ClientError> {
        self.call(
            method::DELETE,
            &format!("/v1/allocations/{}", encode_segment(handle)),
            None::<&()>,
        )
    }

    /// `GET /v1/allocations?...`: one page.
    pub fn list_allocations(&self, q: &AllocationQuery) -> Result<AllocationList, ClientError> {
        let mut params = Vec::new();
        for (k, v) in [
            ("pool", &q.pool),
            ("node", &q.node),
            ("handle", &q.handle),
            ("continue", &q.continue_token),
        ] {
            if let Some(v) = v {
                params.push(format!("{k}={}", encode_query(v)));
            }
        }
        if let Some(l) = q.limit {
            params.push(format!("limit={l}"));
        }
        self.get(&with_query("/v1/allocations", &params))
    }

    /// `POST /v1/prefixes`.
    pub fn lease_prefix(&self, req: &LeaseRequest) -> Result<LeaseView, ClientError> {
        self.call(method::POST, "/v1/prefixes", Some(req))
    }

    /// `GET /v1/prefixes?...`.
    pub fn list_prefixes(&self, q: &LeaseQuery) -> Result<LeaseList, ClientError> {
        let mut params = Vec::new();
        for (k, v) in [("pool", &q.pool), ("owner", &q.owner)] {
            if let Some(v) = v {
                params.push(format!("{k}={}", encode_query(v)));
            }
        }
        self.get(&with_query("/v1/prefixes", &params))
    }

    /// `DELETE /v1/prefixes/{pool}/{prefix}`.
    pub fn release_prefix(&self, pool: &str, prefix: IpNet) -> Result<(), ClientError> {
        let path = format!(
            "/v1/prefixes/{}/{}",
            encode_segment(pool),
            encode_segment(&prefix.to_string())
        );
        expect_empty(self.raw(method::DELETE, &path, &[], None)?)
    }

    /// `GET /v1/external-networks`.
    pub fn list_external_networks(&self) -> Result<ExternalNetworkList, ClientError> {
        self.get("/v1/external-networks")
    }

    /// `POST /v1/external-networks`.
    pub fn add_external_network(&self, net: &ScopeNetwork) -> Result<ScopeNetwork, ClientError> {
        self.call(method::POST, "/v1/external-networks", Some(net))
    }

    /// `DELETE /v1/external-networks/{name}`.
    pub fn delete_external_network(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/external-networks/{}", encode_segment(name));
        expect_empty(self.raw(method::DELETE, &path, &[], None)?)
    }

    /// `GET /v1/overlaps`.
    pub fn overlaps(&self) -> Result<OverlapList, ClientError> {
        self.get("/v1/overlaps")
    }

    /// `GET /v1/usage`.
    pub fn usage(&self) -> Result<UsageReport, ClientError> {
        self.get("/v1/usage")
    }

    /// `GET /v1/addresses/{ip}[?at=...]`.
    pub fn address(&self, ip: IpAddr, at: Option<Millis>) -> Result<AddressInfo, ClientError> {
        let q = at
            .map(|t| format!("?at={}", encode_query(&crate::time::format(t))))
            .unwrap_or_default();
        self.get(&format!(
            "/v1/addresses/{}{q}",
            encode_segment(&ip.to_string())
        ))
    }

    /// `POST /v1/gc`.
    pub fn gc(&self, report: &GcRequest) -> Result<GcResponse, ClientError> {
        self.call(method::POST, "/v1/gc", Some(report))
    }

    /// `POST /v1/plan`: the subnet planner on kipamd.
    pub fn plan(
        &self,
        req: &crate::planning::PlanRequest,
    ) -> Result<crate::planning::Plan, ClientError> {
        self.call(method::POST, "/v1/plan", Some(req))
    }

    /// `GET /v1/pools/{name}/forecast?...`.
    pub fn forecast(
        &self,
        pool: &str,
        q: &crate::planning::ForecastQuery,
    ) -> Result<crate::planning::ForecastView, ClientError> {
        let mut params = Vec::new();
        if let Some(w) = &q.window {
            params.push(format!("window={}", encode_query(w)));
        }
        if let Some(n) = q.min_samples {
            params.push(format!("minSamples={n}"));
        }
        if let Some(s) = &q.min_span {
            params.push(format!("minSpan={}", encode_query(s)));
        }
        self.get(&with_query(
            &format!("/v1/pools/{}/forecast", encode_segment(pool)),
            &params,
        ))
    }

    /// `GET /v1/gc`: reclaims pending.
    pub fn pending_reclaims(&self) -> Result<GcResponse, ClientError> {
        self.get("/v1/gc")
    }
}

mod method {
    pub const GET: &str = "GET";
    pub const POST: &str = "POST";
    pub const PATCH: &str = "PATCH";
    pub const DELETE: &str = "DELETE";
}

fn with_query(path: &str, params: &[String]) -> String {
    if params.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", params.join("&"))
    }
}

/// The refusal in a non-2xx response.
fn refusal(resp: &Response) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(&resp.body) {
        Ok(b) => ClientError::Status {
            status: resp.status,
            code: b.error.code,
            message: b.error.message.clone(),
            body: Some(Box::new(b)),
        },
        Err(_) => ClientError::Status {
            status: resp.status,
            code: ErrorCode::Internal,
            message: String::from_utf8_lossy(&resp.body).into_owned(),
            body: None,
        },
    }
}

fn decode<T: DeserializeOwned>(resp: Response) -> Result<T, ClientError> {
    if !(200..300).contains(&resp.status) {
        return Err(refusal(&resp));
    }
    serde_json::from_slice(&resp.body).map_err(|source| ClientError::Decode {
        status: resp.status,
        source,
    })
}

fn expect_empty(resp: Response) -> Result<(), ClientError> {
    if (200..300).contains(&resp.status) {
        Ok(())
    } else {
        Err(refusal(&resp))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            Endpoint::parse("unix:/run/k.sock").unwrap(),
            Endpoint::Unix("/run/k.sock".into())
        );
        assert_eq!(
            Endpoint::parse("/run/k.sock").unwrap(),
            Endpoint::Unix("/run/k.sock".into())
        );
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:7733/").unwrap(),
            Endpoint::Tcp("127.0.0.1:7733".into())
        );
        assert_eq!(
            Endpoint::parse("localhost:1").unwrap(),
            Endpoint::Tcp("localhost:1".into())
        );
        assert!(Endpoint::parse("https://x:1").is_err());
        assert!(Endpoint::parse("http://x").is_err());
        assert!(Endpoint::parse("").is_err());
    }

    #[test]
    fn unreachable_is_typed() {
        let c = Client::new(Endpoint::Unix("/nonexistent/kipamd.sock".into()));
        assert!(matches!(
            c.list_pools(),
            Err(ClientError::Unreachable { .. })
        ));
    }

    #[test]
    fn refusals_decode_the_error_body() {
        let resp = Response {
            status: 409,
            headers: vec![],
            body: br#"{"error":{"code":"overlap","message":"pool a overlaps pool b"}}"#.to_vec(),
        };
        let e = decode::<PoolView>(resp).unwrap_err();
        assert_eq!(e.status(), Some(409));
        assert_eq!(e.code(), Some(ErrorCode::Overlap));
        let resp = Response {
            status: 502,
            headers: vec![],
            body: b"bad gateway".to_vec(),
        };
        assert!(matches!(
            decode::<PoolView>(resp),
            Err(ClientError::Status {
                status: 502,
                body: None,
                ..
            })
        ));
        let resp = Response {
            status: 200,
            headers: vec![],
            body: b"{".to_vec(),
        };
        assert!(matches!(
            decode::<PoolView>(resp),
            Err(ClientError::Decode { status: 200, .. })
        ));
    }
}
