//! The subcommands, one module each: its arguments (clap derive; doc comments are the
//! help text) and its `run`, which talks to kipamd (or works offline) and prints a table
//! or JSON through [`crate::Ctx`].

pub mod alloc;
pub mod completions;
pub mod external;
pub mod forecast;
pub mod gc;
pub mod history;
pub mod host_check;
pub mod lease;
pub mod overlaps;
pub mod plan;
pub mod pool;
pub mod release;
pub mod usage;
pub mod whois;

use clap::Subcommand;

use crate::{CliError, Ctx, Outcome};

/// kipamctl's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, show, change and delete pools.
    #[command(subcommand)]
    Pool(pool::PoolCmd),
    /// Allocate addresses for a handle (one per --pool/--family/--ip, all or nothing).
    Alloc(alloc::AllocArgs),
    /// Release every address a handle holds (idempotent).
    Release(release::ReleaseArgs),
    /// Lease a whole sub-prefix of a pool (a node's pod CIDR, a cluster's subnet); also
    /// `lease list` and `lease release`.
    Lease(lease::LeaseArgs),
    /// Add, list, remove and import external networks (never allocated, checked for overlap).
    #[command(subcommand)]
    External(external::ExternalCmd),
    /// Every overlap among pools, leases and external networks, per scope (exit code 5
    /// when there is one); from kipamd, or offline from a file.
    Overlaps(overlaps::OverlapsArgs),
    /// Utilization per pool (with bars and at-risk markers) and per node.
    Usage(usage::UsageArgs),
    /// Who holds an address now, or held it at a time.
    Whois(whois::WhoisArgs),
    /// The allocate/release/reclaim history of an address.
    History(history::HistoryArgs),
    /// When pools run out: the growth trend over a window, the ETA and its confidence.
    Forecast(forecast::ForecastArgs),
    /// Report a node's live attachments so kipamd reclaims the rest; without --node or
    /// --network, list the reclaims pending.
    Gc(gc::GcArgs),
    /// Plan cluster, node, service and LoadBalancer ranges for growth (offline, from a
    /// YAML/JSON file or flags); --apply creates them as pools on kipamd.
    Plan(Box<plan::PlanArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Compare pools with this machine's routes and addresses and report collisions
    /// (exit code 5 when there is one).
    HostCheck(host_check::HostCheckArgs),
}

/// Runs one subcommand.
pub fn run(ctx: &Ctx, cmd: Command) -> Result<Outcome, CliError> {
    match cmd {
        Command::Pool(c) => pool::run(ctx, c),
        Command::Alloc(a) => alloc::run(ctx, a),
        Command::Release(a) => release::run(ctx, a),
        Command::Lease(a) => lease::run(ctx, a),
        Command::External(c) => external::run(ctx, c),
        Command::Overlaps(a) => overlaps::run(ctx, a),
        Command::Usage(a) => usage::run(ctx, a),
        Command::Whois(a) => whois::run(ctx, a),
        Command::History(a) => history::run(ctx, a),
        Command::Forecast(a) => forecast::run(ctx, a),
        Command::Gc(a) => gc::run(ctx, a),
        Command::Plan(a) => plan::run(ctx, *a),
        Command::Completions(a) => completions::run(ctx, a),
        Command::HostCheck(a) => host_check::run(ctx, a),
    }
}
