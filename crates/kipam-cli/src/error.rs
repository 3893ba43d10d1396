//! kipamctl's errors and exit codes.
//!
//! Every failure is a [`CliError`]; [`CliError::exit_code`] turns it into the documented
//! exit code and [`CliError::hint`] into one line that says what to do, so a script can
//! branch on the code and a person can act on the hint. kipamd's refusals keep their
//! HTTP status and error code ([`ClientError::Status`]); the code is chosen from them.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (and, for `overlaps` and `host-check`, nothing found) |
//! | 1 | kipamd failed or refused in a way not listed below |
//! | 2 | usage: bad flags or arguments (invalid CIDR, address, time), a bad input file |
//! | 3 | kipamd unreachable (not running, wrong `--server`, socket permissions, timeout) |
//! | 4 | authentication or authorization: no token, unknown token, role too low |
//! | 5 | conflict or overlap: kipamd refused with 409, or `overlaps` / `host-check` found some |
//! | 6 | not found: unknown pool, handle, lease or external network |
//! | 7 | does not fit: a pool is exhausted, or the planner cannot fit the request |

use std::path::PathBuf;

use kipam_api::ErrorCode;
use kipam_api::client::ClientError;
use kipam_core::planner::PlanError;
use thiserror::Error;

/// Success.
pub const EXIT_OK: u8 = 0;
/// kipamd failed or refused (other than below).
pub const EXIT_SERVER: u8 = 1;
/// Bad usage or input.
pub const EXIT_USAGE: u8 = 2;
/// kipamd unreachable.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Authentication or authorization.
pub const EXIT_AUTH: u8 = 4;
/// A conflict or overlap.
pub const EXIT_CONFLICT: u8 = 5;
/// Something named does not exist.
pub const EXIT_NOT_FOUND: u8 = 6;
/// Exhausted, or a plan that cannot fit.
pub const EXIT_NO_FIT: u8 = 7;

/// Why kipamctl failed.
#[derive(Debug, Error)]
pub enum CliError {
    /// Bad arguments, found after parsing (clap reports its own).
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
    },
    /// A file cannot be read.
    #[error("cannot read {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is not what the command expects.
    #[error("{}: {detail}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line when known.
        detail: String,
    },
    /// kipamd could not be asked, or refused.
    #[error(transparent)]
    Api(#[from] ClientError),
    /// The offline planner refused the request.
    #[error("the plan cannot be made")]
    Plan(#[from] PlanError),
    /// Some items of a batch (import, `plan --apply`) failed; each was reported.
    #[error("{failed} of {total} {what} failed (see above)")]
    Batch {
        /// How many failed.
        failed: usize,
        /// How many were tried.
        total: usize,
        /// What they were ("external networks", "pools").
        what: &'static str,
        /// The exit code of the first failure.
        code: u8,
    },
    /// Writing the output failed.
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
    /// A host command (`ip`) or file could not be read for `host-check`.
    #[error("cannot read the host's {what}")]
    Host {
        /// Routes or addresses.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// A usage error.
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::Usage {
            message: message.into(),
        }
    }

    /// The documented exit code (see the module doc).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage { .. } | CliError::ReadFile { .. } | CliError::BadFile { .. } => {
                EXIT_USAGE
            }
            CliError::Api(e) => client_exit_code(e),
            CliError::Plan(e) => match e {
                PlanError::TooLarge { .. } | PlanError::DoesNotFit(_) => EXIT_NO_FIT,
                _ => EXIT_USAGE,
            },
            CliError::Batch { code, .. } => *code,
            CliError::Output(_) | CliError::Host { .. } => EXIT_SERVER,
        }
    }

    /// What to do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            CliError::Api(e) => client_hint(e),
            CliError::Plan(PlanError::DoesNotFit(_) | PlanError::TooLarge { .. }) => Some(
                "add a supernet, lower the headroom (--headroom) or the demand, or remove an overlapping avoid entry".into(),
            ),
            CliError::Host { .. } => Some(
                "host-check reads `ip -j route`/`ip -j addr` (iproute2) or /proc/net; install iproute2 or run it where /proc is mounted".into(),
            ),
            _ => None,
        }
    }
}

/// The exit code of a client error.
pub fn client_exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::Endpoint { .. } => EXIT_USAGE,
        ClientError::Unreachable { .. } | ClientError::Io { .. } => EXIT_UNREACHABLE,
        ClientError::Decode { .. } => EXIT_SERVER,
        ClientError::Status { status, code, .. } => match (status, code) {
            (401 | 403, _) => EXIT_AUTH,
            (404, _) => EXIT_NOT_FOUND,
            (409, _) => EXIT_CONFLICT,
            (_, ErrorCode::Exhausted | ErrorCode::Infeasible) => EXIT_NO_FIT,
            (400 | 413 | 415 | 422, _) => EXIT_USAGE,
            _ => EXIT_SERVER,
        },
    }
}

fn client_hint(e: &ClientError) -> Option<String> {
    Some(match e {
        ClientError::Endpoint { .. } => {
            "--server takes http://HOST:PORT or unix:/path/to/kipamd.sock".into()
        }
        ClientError::Unreachable { .. } => {
            "is kipamd running? start it with `cargo run --release --bin kipamd` (it listens on http://127.0.0.1:7733), or point --server (or KIPAM_SERVER) at it".into()
        }
        ClientError::Io { .. } => {
            "kipamd accepted the connection but did not answer in time; check its log, or raise --timeout".into()
        }
        ClientError::Decode { .. } => {
            "kipamd's answer was not what this kipamctl expects; are kipamctl and kipamd the same version?".into()
        }
        ClientError::Status { status, code, .. } => match (status, code) {
            (401, _) => "kipamd needs a valid token: set KIPAM_TOKEN or pass --token-file FILE with a token from kipamd's tokens file (`kipamd hash-token` makes its hash)".into(),
            (403, _) => "this token's role may not do this; use a token with the role named above".into(),
            (404, _) => "check the name: `kipamctl pool list`, `kipamctl lease list` and `kipamctl external list` show what exists".into(),
            (409, ErrorCode::Overlap) => "choose a CIDR that overlaps nothing in its scope (`kipamctl overlaps`, `kipamctl plan` find one), or use another --scope".into(),
            (409, ErrorCode::AlreadyExists) => "the name is taken; choose another or delete the existing one first".into(),
            (409, ErrorCode::PoolInUse) => "release what the pool holds first, or delete with --force (releases it)".into(),
            (_, ErrorCode::Exhausted) => "the pool is full: release addresses (`kipamctl gc`), or add a pool for the same purpose".into(),
            (_, ErrorCode::Infeasible) => "add a supernet, lower the headroom or the demand".into(),
            (503, _) => "kipamd is loading its store or shutting down; retry in a moment".into(),
            _ => return None,
        },
    })
}

/// The error with its causes, `a: b: c`, for one line on stderr.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn status(status: u16, code: ErrorCode) -> CliError {
        CliError::Api(ClientError::Status {
            status,
            code,
            message: "m".into(),
            body: None,
        })
    }

    #[test]
    fn exit_codes_follow_the_table() {
        assert_eq!(status(401, ErrorCode::Unauthenticated).exit_code(), 4);
        assert_eq!(status(403, ErrorCode::PermissionDenied).exit_code(), 4);
        assert_eq!(status(404, ErrorCode::NotFound).exit_code(), 6);
        assert_eq!(status(409, ErrorCode::Overlap).exit_code(), 5);
        assert_eq!(status(422, ErrorCode::Exhausted).exit_code(), 7);
        assert_eq!(status(422, ErrorCode::Infeasible).exit_code(), 7);
        assert_eq!(status(400, ErrorCode::InvalidArgument).exit_code(), 2);
        assert_eq!(status(422, ErrorCode::InvalidArgument).exit_code(), 2);
        assert_eq!(status(503, ErrorCode::Unavailable).exit_code(), 1);
        let unreachable = CliError::Api(ClientError::Unreachable {
            endpoint: "http://127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        });
        assert_eq!(unreachable.exit_code(), 3);
        assert!(unreachable.hint().unwrap().contains("is kipamd running?"));
        assert!(chain(&unreachable).contains("cannot reach kipamd at http://127.0.0.1:1: "));
        assert_eq!(CliError::usage("x").exit_code(), 2);
        assert_eq!(CliError::Plan(PlanError::NoClusters).exit_code(), 2);
    }
}
