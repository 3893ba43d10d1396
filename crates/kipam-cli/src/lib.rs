//! kipamctl: the command-line tool for kipam — pools, allocations, prefix leases,
//! external networks, overlaps, usage, address history, forecasts, GC, and the subnet
//! planner.
//!
//! It talks to kipamd with the blocking client of `kipam-api` (HTTP over TCP or the unix
//! socket); `plan`, `overlaps --file` and `host-check --file` also work offline, with
//! kipam-core's planner and overlap sweep, so a plan can be made before any daemon
//! exists. It depends on kipam-api and kipam-core only (DESIGN.md: cli -> api).
//!
//! # Layout
//! - [`Cli`] and [`GlobalOpts`]: the command line (clap derive; doc comments are the help).
//! - [`commands`]: one module per subcommand, each with its arguments and its `run`.
//! - [`output`]: tables, bars and JSON; [`parse`]: argument and file parsers.
//! - [`host`]: the machine's routes and addresses, for `host-check` and `plan --avoid-host`.
//! - [`error`]: [`CliError`] and the exit codes (documented there and in docs/cli.md).
//!
//! `main.rs` only parses arguments, calls [`run`] and turns the result into an exit code.

pub mod commands;
pub mod error;
pub mod host;
pub mod output;
pub mod parse;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};
use kipam_api::client::{Client, Endpoint};

pub use commands::Command;
pub use error::CliError;
use output::{Format, Out};

/// Where kipamctl looks for kipamd when `--server` is not given: kipamd's default listener.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7733";

/// kipamctl: plan, allocate and watch IP address space with kipamd.
///
/// Exit codes: 0 ok, 1 kipamd error, 2 usage or bad input, 3 kipamd unreachable,
/// 4 authentication/authorization, 5 conflict or overlap found, 6 not found,
/// 7 exhausted or the plan does not fit.
#[derive(Debug, Parser)]
#[command(name = "kipamctl", version, max_term_width = 100)]
pub struct Cli {
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: GlobalOpts,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Clone, Debug, Args)]
pub struct GlobalOpts {
    /// kipamd to talk to: http://HOST:PORT, HOST:PORT or unix:/path/to/kipamd.sock.
    #[arg(long, global = true, env = "KIPAM_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    pub server: String,
    /// File holding the bearer token (wins over the KIPAM_TOKEN environment variable).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Output format: human-readable tables, or JSON for scripts.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Seconds to wait for kipamd to connect and answer.
    #[arg(long, global = true, default_value_t = 30, value_name = "SECONDS")]
    pub timeout: u64,
}

/// What a command concluded, besides failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done; nothing to report.
    Ok,
    /// A check found problems (overlaps, host collisions): exit code 5.
    Found,
}

/// What commands share: the options, the output, and a way to reach kipamd.
pub struct Ctx {
    /// The global options.
    pub opts: GlobalOpts,
    /// Where results go.
    pub out: Out,
}

impl Ctx {
    /// A context for `opts`.
    pub fn new(opts: GlobalOpts) -> Ctx {
        Ctx {
            out: Out::new(opts.output),
            opts,
        }
    }

    /// A client for `--server` with the token of `--token-file` or `KIPAM_TOKEN`.
    pub fn client(&self) -> Result<Client, CliError> {
        let endpoint = Endpoint::parse(&self.opts.server)?;
        let mut c =
            Client::new(endpoint).with_timeout(Duration::from_secs(self.opts.timeout.max(1)));
        if let Some(t) = self.token()? {
            c = c.with_token(t);
        }
        Ok(c)
    }

    fn token(&self) -> Result<Option<String>, CliError> {
        if let Some(path) = &self.opts.token_file {
            let text = std::fs::read_to_string(path).map_err(|source| CliError::ReadFile {
                path: path.clone(),
                source,
            })?;
            let t = text.trim();
            if t.is_empty() || t.contains(char::is_whitespace) {
                return Err(CliError::usage(format!(
                    "token file {} must hold one token on one line",
                    path.display()
                )));
            }
            return Ok(Some(t.to_string()));
        }
        match std::env::var("KIPAM_TOKEN") {
            Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
            _ => Ok(None),
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<Outcome, CliError> {
    let ctx = Ctx::new(cli.global);
    commands::run(&ctx, cli.command)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
