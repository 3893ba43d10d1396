//! Authentication and authorization: bearer tokens with roles, and the trust given to
//! the unix socket.
//!
//! The tokens file holds one line per token, `ROLE SHA256HEX [name]` (`#` starts a
//! comment); `kipamd hash-token` prints such a line. Only hashes are stored, so the file
//! leaks no token. A presented token is hashed and compared with every entry in constant
//! time. Roles are ordered `viewer < allocator < admin`.
//!
//! Who gets what:
//! - unix socket (created 0600, so only its owner connects): `allocator` — node-local
//!   clients (the CNI plugin) allocate and release; a valid token raises it.
//! - TCP with a tokens file: the token's role; no or unknown token is 401.
//! - TCP without a tokens file: `admin`, allowed only when every TCP listener is on a
//!   loopback address (kipamd refuses to start otherwise): the machine's users are
//!   trusted, as with a local database.
//!
//! What needs what is one table, [`required_role`], so it can be read in one place.

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use kipam_api::ErrorCode;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// A role, ordered by power.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Reads, allocates, releases, reports GC.
    Allocator,
    /// Everything: pools, external networks, prefix leases.
    Admin,
}

impl Role {
    /// Parses `viewer`, `allocator` or `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "allocator" => Some(Role::Allocator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Allocator => "allocator",
            Role::Admin => "admin",
        }
    }
}

/// Which listener a request came in on (set per listener by the server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// The unix socket.
    Unix,
}

/// One token entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEntry {
    /// Its role.
    pub role: Role,
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    /// A name for logs.
    pub name: String,
}

/// Errors reading a tokens file.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file cannot be read.
    #[error("cannot read tokens file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error(
        "tokens file {path}, line {line}: {reason} (expected `ROLE SHA256HEX [name]`; `kipamd hash-token` prints one)"
    )]
    Line {
        /// The file.
        path: String,
        /// Line number (1-based).
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The tokens kipamd accepts.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

/// SHA-256 of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The tokens-file line for `token`.
pub fn token_line(role: Role, token: &str, name: Option<&str>) -> String {
    let mut line = format!("{} {}", role.as_str(), hex(&hash_token(token)));
    if let Some(n) = name {
        line.push(' ');
        line.push_str(n);
    }
    line
}

impl Tokens {
    /// Parses a tokens file's text.
    pub fn parse(path: &str, text: &str) -> Result<Tokens, TokensError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: String| TokensError::Line {
                path: path.into(),
                line: i + 1,
                reason,
            };
            let mut parts = line.split_whitespace();
            let role_s = parts.next().unwrap_or_default();
            let role = Role::parse(role_s).ok_or_else(|| {
                bad(format!(
                    "unknown role {role_s:?}; use viewer, allocator or admin"
                ))
            })?;
            let hash_s = parts
                .next()
                .ok_or_else(|| bad("missing the SHA-256 hex of the token".into()))?;
            let hash = unhex32(hash_s)
                .ok_or_else(|| bad("the hash must be 64 hex digits (SHA-256)".into()))?;
            let name = parts.collect::<Vec<_>>().join(" ");
            entries.push(TokenEntry {
                role,
                hash,
                name: if name.is_empty() {
                    format!("line {}", i + 1)
                } else {
                    name
                },
            });
        }
        Ok(Tokens { entries })
    }

    /// Reads a tokens file.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: p.clone(),
            source,
        })?;
        Tokens::parse(&p, &text)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of a presented token. Compares against every entry, in constant time
    /// per entry, whether or not an earlier one matched.
    pub fn check(&self, token: &str) -> Option<&TokenEntry> {
        let h = hash_token(token);
        let mut found = None;
        for e in &self.entries {
            let diff = e
                .hash
                .iter()
                .zip(h.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(e);
            }
        }
        found
    }
}

/// How kipamd authenticates.
#[derive(Clone, Debug)]
pub enum AuthMode {
    /// No tokens file: TCP (loopback only) is trusted as admin.
    LoopbackTrusted,
    /// Tokens required on TCP.
    Tokens(Tokens),
}

/// The role a route needs; `None`: public (health, readiness, the OpenAPI document, the
/// dashboard shell).
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    if matches!(path, "/healthz" | "/readyz" | "/v1/openapi.json" | "/") {
        return None;
    }
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        return Some(Role::Viewer);
    }
    let allocator = (method == Method::POST && (path == "/v1/allocations" || path == "/v1/gc"))
        || (method == Method::DELETE && path.starts_with("/v1/allocations/"));
    if allocator {
        return Some(Role::Allocator);
    }
    // The planner computes and changes nothing.
    if method == Method::POST && path == "/v1/plan" {
        return Some(Role::Viewer);
    }
    Some(Role::Admin)
}

fn bearer(req: &Request) -> Result<Option<&str>, ApiError> {
    let Some(v) = req.headers().get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| unauthenticated("the Authorization header is not ASCII"))?;
    let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(unauthenticated("use Authorization: Bearer TOKEN"));
    }
    Ok(Some(token.trim()))
}

fn unauthenticated(msg: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, msg)
}

/// The role of a request, or the refusal.
pub fn role_of(mode: &AuthMode, transport: Transport, req: &Request) -> Result<Role, ApiError> {
    let token = bearer(req)?;
    let from_token = match (mode, token) {
        (AuthMode::Tokens(t), Some(tok)) => Some(
            t.check(tok)
                .map(|e| e.role)
                .ok_or_else(|| unauthenticated("unknown token"))?,
        ),
        (AuthMode::LoopbackTrusted, Some(_)) | (_, None) => None,
    };
    Ok(match (transport, mode) {
        (Transport::Unix, _) => from_token.map_or(Role::Allocator, |r| r.max(Role::Allocator)),
        (Transport::Tcp, AuthMode::LoopbackTrusted) => Role::Admin,
        (Transport::Tcp, AuthMode::Tokens(_)) => from_token.ok_or_else(|| {
            unauthenticated("this route needs a token: Authorization: Bearer TOKEN")
        })?,
    })
}

/// The middleware: refuses a request whose role is too low (401 without a valid token,
/// 403 with one of a lower role).
pub async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(need) = required_role(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let transport = req
        .extensions()
        .get::<Transport>()
        .copied()
        .unwrap_or(Transport::Tcp);
    match role_of(&state.auth, transport, &req) {
        Ok(role) if role >= need => next.run(req).await,
        Ok(role) => axum::response::IntoResponse::into_response(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::PermissionDenied,
            format!(
                "{} {} needs the {} role; this client has {}",
                req.method(),
                req.uri().path(),
                need.as_str(),
                role.as_str()
            ),
        )),
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens_file_and_checks_tokens() {
        let text = format!(
            "# comment\n\n{}\n{}  # trailing\n",
            token_line(Role::Admin, "s3cret", Some("ops team")),
            token_line(Role::Viewer, "look", None)
        );
        let t = Tokens::parse("f", &text).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.check("s3cret").unwrap().role, Role::Admin);
        assert_eq!(t.check("s3cret").unwrap().name, "ops team");
        assert_eq!(t.check("look").unwrap().role, Role::Viewer);
        assert!(t.check("nope").is_none());
        assert!(t.check("").is_none());
    }

    #[test]
    fn refuses_bad_lines_with_their_number() {
        for (text, line) in [
            ("root abc", 1),
            ("# c\nadmin", 2),
            ("admin zz", 1),
            (&format!("admin {}", "a".repeat(63)) as &str, 1),
        ] {
            match Tokens::parse("f", text) {
                Err(TokensError::Line { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn route_roles() {
        use Method as M;
        assert_eq!(required_role(&M::GET, "/healthz"), None);
        assert_eq!(required_role(&M::GET, "/v1/pools"), Some(Role::Viewer));
        assert_eq!(required_role(&M::GET, "/metrics"), Some(Role::Viewer));
        assert_eq!(
            required_role(&M::POST, "/v1/allocations"),
            Some(Role::Allocator)
        );
        assert_eq!(
            required_role(&M::DELETE, "/v1/allocations/a%2Fb"),
            Some(Role::Allocator)
        );
        assert_eq!(required_role(&M::POST, "/v1/gc"), Some(Role::Allocator));
        assert_eq!(required_role(&M::POST, "/v1/pools"), Some(Role::Admin));
        assert_eq!(required_role(&M::DELETE, "/v1/pools/x"), Some(Role::Admin));
        assert_eq!(required_role(&M::POST, "/v1/prefixes"), Some(Role::Admin));
        assert_eq!(
            required_role(&M::POST, "/v1/external-networks"),
            Some(Role::Admin)
        );
        assert_eq!(required_role(&M::PUT, "/v1/anything"), Some(Role::Admin));
    }
}
