//! The blocking kipamd client: HTTP/1.1 over a unix socket or TCP with a kept-alive
//! connection, typed methods for every route, typed errors.
//!
//! Blocking and std-only on purpose: the CNI plugin links it and runs once per container
//! start, where starting an async runtime would cost more than the request itself.
//! kipamctl and the tests use the same client, so every route is exercised as a real
//! program would call it.
//!
//! # Connections
//!
//! A [`Client`] keeps one idle connection and sends its next request on it (HTTP/1.1
//! keep-alive; kipamd keeps connections open with no idle timeout). Responses are read
//! exactly by `Content-Length` or chunked framing; a response with `Connection: close`,
//! an unframed body, or any error drops the connection, and the next request connects
//! again. Timeouts (connect, read, write) apply to every request as before.
//!
//! - **Clones do not share the connection**: a clone starts with none and keeps its own.
//!   A clone is how a client is handed to another thread, and sharing one socket would
//!   serialize them.
//! - **Concurrent requests on one `Client`** do not wait for each other: a request takes
//!   the idle connection if there is one and opens a new one otherwise; afterwards the
//!   connection is kept if the slot is empty and closed if not. So a `Client` used by N
//!   threads at once holds at most one idle connection (plus those in flight).
//!
//! # Retry after a stale connection
//!
//! A kept connection may have been closed by the server in the meantime (a restart, a
//! graceful shutdown, a proxy's idle timeout). When a request on a *reused* connection
//! fails before any byte of a response arrived (EOF, reset, broken pipe), the client
//! connects again and sends the request once more, but only when sending it twice is
//! harmless ([`retry_safe`]):
//!
//! - `GET`, `HEAD`, `OPTIONS`, `PUT`, `PATCH` (pool patches are JSON merge patches) and
//!   `DELETE` (releases are idempotent; a repeated delete of a pool, prefix or external
//!   network whose first attempt did reach kipamd answers 404),
//! - `POST /v1/allocations` (idempotent per handle), `POST /v1/gc` (a repeated report
//!   is harmless), `POST /v1/plan` (computes, changes nothing).
//!
//! Every other request — `POST /v1/pools` (a repeat answers 409), `POST /v1/prefixes` (a
//! repeat with `prefixLength` would lease a second prefix), `POST /v1/external-networks`
//! (409), anything unknown — is never retried, and is always sent on a fresh connection so
//! a stale kept connection cannot make it fail.

pub mod http;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Mutex;
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

/// A kipamd client. Keeps one connection alive between requests (see the module docs);
/// clones start without a connection and keep their own.
#[derive(Debug)]
pub struct Client {
    endpoint: Endpoint,
    token: Option<String>,
    timeout: Duration,
    /// The idle kept-alive connection, if any.
    idle: Mutex<Option<Conn>>,
}

impl Clone for Client {
    fn clone(&self) -> Client {
        Client {
            endpoint: self.endpoint.clone(),
            token: self.token.clone(),
            timeout: self.timeout,
            idle: Mutex::new(None),
        }
    }
}

/// An open connection to kipamd.
#[derive(Debug)]
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// A connection with its read buffer (kept with it: nothing read ahead is lost).
#[derive(Debug)]
struct Conn {
    reader: BufReader<Stream>,
}

/// How one exchange on a connection failed.
enum ExchangeError {
    /// The connection was closed or reset before any byte of a response arrived: the
    /// server may never have seen the request.
    Stale(io::Error),
    /// Anything else (timeout, malformed response, closed mid-response).
    Failed(io::Error),
}

/// Whether a request may be sent a second time after a kept connection turned out
/// closed before any response byte (see the module docs). `path` may carry a query.
pub fn retry_safe(method: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let m = method.to_ascii_uppercase();
    match m.as_str() {
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "PATCH" | "DELETE" => true,
        "POST" => matches!(path, "/v1/allocations" | "/v1/gc" | "/v1/plan"),
        _ => false,
    }
}

/// Errors that mean "the peer closed this connection" when they come before a response.
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
    )
}

impl Conn {
    /// Sends `request` and reads the answer; returns it and whether the connection may
    /// be kept.
    fn exchange(&mut self, request: &[u8], head: bool) -> Result<(Response, bool), ExchangeError> {
        let s = self.reader.get_mut();
        if let Err(e) = s.write_all(request).and_then(|()| s.flush()) {
            return Err(if is_closed(&e) {
                ExchangeError::Stale(e)
            } else {
                ExchangeError::Failed(e)
            });
        }
        // Wait for the first byte apart, so "closed before answering" is told from
        // "closed mid-response".
        loop {
            match self.reader.fill_buf().map(|b| b.is_empty()) {
                Ok(true) => {
                    return Err(ExchangeError::Stale(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before the response",
                    )));
                }
                Ok(false) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_closed(&e) => return Err(ExchangeError::Stale(e)),
                Err(e) => return Err(ExchangeError::Failed(e)),
            }
        }
        http::read_response_on(&mut self.reader, head).map_err(ExchangeError::Failed)
    }
}

impl Client {
    /// A client for `endpoint` with no token and a 30 s timeout.
    pub fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            token: None,
            timeout: Duration::from_secs(30),
            idle: Mutex::new(None),
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
        // A kept connection carries the old timeouts: start afresh.
        *self.idle.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        self
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one request as given and returns the response whatever its status.
    /// `path` must be percent-encoded (with its query); `headers` are added after the
    /// client's own (`Host`, `Authorization`, `Content-Length`). The request goes on the
    /// kept connection when there is one; see the module docs for when it is retried.
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
        let host = match &self.endpoint {
            Endpoint::Unix(_) => "kipamd",
            Endpoint::Tcp(hp) => hp.as_str(),
        };
        let request =
            http::encode_request(method, host, path, &all, body, false).map_err(io_err)?;
        let head = method.eq_ignore_ascii_case("HEAD");
        let safe = retry_safe(method, path);
        // A request that must not be repeated never goes on a reused connection.
        let kept = if safe { self.take_idle() } else { None };
        let (mut conn, mut reused) = match kept {
            Some(c) => (c, true),
            None => (self.connect()?, false),
        };
        loop {
            match conn.exchange(&request, head) {
                Ok((resp, keep)) => {
                    // Bytes beyond the response would put the next exchange out of step.
                    if keep && conn.reader.buffer().is_empty() {
                        self.put_idle(conn);
                    }
                    return Ok(resp);
                }
                Err(ExchangeError::Stale(_)) if reused => {
                    // The kept connection was closed under us; `safe` holds here.
                    conn = self.connect()?;
                    reused = false;
                }
                Err(ExchangeError::Stale(e) | ExchangeError::Failed(e)) => return Err(io_err(e)),
            }
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Option<Conn>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_idle(&self) -> Option<Conn> {
        self.lock_idle().take()
    }

    fn put_idle(&self, conn: Conn) {
        let mut idle = self.lock_idle();
        if idle.is_none() {
            *idle = Some(conn);
        }
    }

    /// A new connection with the client's timeouts.
    fn connect(&self) -> Result<Conn, ClientError> {
        let io_err = |source| ClientError::Io {
            endpoint: self.endpoint.to_string(),
            source,
        };
        let stream = match &self.endpoint {
            Endpoint::Unix(path) => {
                let s = UnixStream::connect(path).map_err(|source| ClientError::Unreachable {
                    endpoint: self.endpoint.to_string(),
                    source,
                })?;
                s.set_read_timeout(Some(self.timeout)).map_err(io_err)?;
                s.set_write_timeout(Some(self.timeout)).map_err(io_err)?;
                Stream::Unix(s)
            }
            Endpoint::Tcp(hp) => {
                let s = self.connect_tcp(hp)?;
                s.set_read_timeout(Some(self.timeout)).map_err(io_err)?;
                s.set_write_timeout(Some(self.timeout)).map_err(io_err)?;
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }
        };
        Ok(Conn {
            reader: BufReader::with_capacity(16 * 1024, stream),
        })
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
        self.forecast_of(pool, None, q)
    }

    /// `GET /v1/pools/{name}/forecast?node=...`: the forecast of one node's blocks.
    pub fn node_forecast(
        &self,
        pool: &str,
        node: &str,
        q: &crate::planning::ForecastQuery,
    ) -> Result<crate::planning::ForecastView, ClientError> {
        self.forecast_of(pool, Some(node), q)
    }

    fn forecast_of(
        &self,
        pool: &str,
        node: Option<&str>,
        q: &crate::planning::ForecastQuery,
    ) -> Result<crate::planning::ForecastView, ClientError> {
        let mut params: Vec<String> = node
            .map(|n| format!("node={}", encode_query(n)))
            .into_iter()
            .collect();
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

    /// A tiny HTTP/1.1 server on 127.0.0.1: connection `i` answers `script[i]` requests
    /// (each with a 200 and a JSON body), then closes without saying so. Records
    /// `(connection, request line)` for every request; `close_header` answers the last
    /// request of every connection with `Connection: close` instead.
    type Seen = std::sync::Arc<Mutex<Vec<(usize, String)>>>;

    fn test_server(
        script: Vec<usize>,
        close_header: bool,
    ) -> (Endpoint, Seen, std::thread::JoinHandle<()>) {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let server = std::thread::spawn(move || {
            for (i, n) in script.into_iter().enumerate() {
                let (s, _) = listener.accept().unwrap();
                let mut r = BufReader::new(s);
                for k in 0..n {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap() == 0 {
                        break;
                    }
                    let mut len = 0;
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        assert!(!h.eq_ignore_ascii_case("connection: close"));
                        if let Some((name, v)) = h.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    log.lock().unwrap().push((i, line.trim_end().to_string()));
                    let close = if close_header && k + 1 == n {
                        "Connection: close\r\n"
                    } else {
                        ""
                    };
                    let answer = format!("{{\"n\":{k}}}");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\n{close}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    r.get_mut().write_all(resp.as_bytes()).unwrap();
                }
                // Dropping the stream closes the connection.
            }
        });
        (Endpoint::Tcp(addr.to_string()), seen, server)
    }

    fn lines(seen: &Mutex<Vec<(usize, String)>>) -> Vec<(usize, String)> {
        seen.lock().unwrap().clone()
    }

    #[test]
    fn requests_reuse_the_kept_connection() {
        let (ep, seen, server) = test_server(vec![3, 1], false);
        let c = Client::new(ep).with_timeout(Duration::from_secs(10));
        for k in 0..3 {
            let r = c.raw("GET", "/v1/pools", &[], None).unwrap();
            assert_eq!(r.body, format!("{{\"n\":{k}}}").as_bytes());
        }
        // A clone does not share the connection: it opens its own.
        let d = c.clone();
        d.raw("DELETE", "/v1/allocations/h", &[], None).unwrap();
        server.join().unwrap();
        assert_eq!(
            lines(&seen),
            vec![
                (0, "GET /v1/pools HTTP/1.1".to_string()),
                (0, "GET /v1/pools HTTP/1.1".to_string()),
                (0, "GET /v1/pools HTTP/1.1".to_string()),
                (1, "DELETE /v1/allocations/h HTTP/1.1".to_string()),
            ]
        );
    }

    #[test]
    fn a_connection_closed_by_the_server_is_replaced_and_safe_requests_resent() {
        // Connection 0 answers once and closes silently; the second request finds it
        // closed (EOF or reset before any response byte), reconnects and is sent again.
        let (ep, seen, server) = test_server(vec![1, 1, 1], false);
        let c = Client::new(ep).with_timeout(Duration::from_secs(10));
        c.raw("GET", "/healthz", &[], None).unwrap();
        let r = c.raw("POST", "/v1/allocations", &[], Some(b"{}")).unwrap();
        assert_eq!(r.body, b"{\"n\":0}");
        // Connection 1 is kept; a request that must not be repeated still goes on a
        // fresh connection.
        let r = c.raw("POST", "/v1/pools", &[], Some(b"{}")).unwrap();
        assert_eq!(r.body, b"{\"n\":0}");
        server.join().unwrap();
        assert_eq!(
            lines(&seen),
            vec![
                (0, "GET /healthz HTTP/1.1".to_string()),
                (1, "POST /v1/allocations HTTP/1.1".to_string()),
                (2, "POST /v1/pools HTTP/1.1".to_string()),
            ]
        );
    }

    #[test]
    fn connection_close_answers_end_the_connection() {
        let (ep, seen, server) = test_server(vec![1, 1], true);
        let c = Client::new(ep).with_timeout(Duration::from_secs(10));
        c.raw("GET", "/v1/usage", &[], None).unwrap();
        c.raw("GET", "/v1/usage", &[], None).unwrap();
        server.join().unwrap();
        assert_eq!(
            lines(&seen).iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 1]
        );
    }

    #[test]
    fn unsafe_requests_are_not_resent() {
        assert!(retry_safe("GET", "/v1/pools?x=1"));
        assert!(retry_safe("DELETE", "/v1/allocations/a%2Fb"));
        assert!(retry_safe("PATCH", "/v1/pools/p"));
        assert!(retry_safe("POST", "/v1/allocations"));
        assert!(retry_safe("POST", "/v1/gc"));
        assert!(!retry_safe("POST", "/v1/pools"));
        assert!(!retry_safe("POST", "/v1/prefixes"));
        assert!(!retry_safe("POST", "/v1/external-networks"));
        assert!(!retry_safe("POST", "/v1/whatever"));
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
