//! `kipamctl gc`: with `--node` and/or `--network`, report the handles still alive there
//! (`--valid`, repeatable); kipamd reclaims the node's/network's other handles after the
//! grace period. Without either, list the reclaims pending.

use clap::Args;
use kipam_api::gc::{GcRequest, GcResponse};

use crate::output::Table;
use crate::{CliError, Ctx, Outcome};

/// Arguments of `gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// The node whose handles the report covers.
    #[arg(long)]
    pub node: Option<String>,
    /// The network (handle prefix `NETWORK/`) whose handles the report covers.
    #[arg(long)]
    pub network: Option<String>,
    /// A handle that is still alive (repeatable); the others covered are stale.
    #[arg(long = "valid", value_name = "HANDLE")]
    pub valid: Vec<String>,
    /// Seconds before stale handles are reclaimed [default: kipamd's --gc-grace].
    #[arg(long, value_name = "SECONDS")]
    pub grace: Option<u64>,
}

/// Runs `gc`.
pub fn run(ctx: &Ctx, a: GcArgs) -> Result<Outcome, CliError> {
    let c = ctx.client()?;
    let r = if a.node.is_none() && a.network.is_none() {
        if !a.valid.is_empty() || a.grace.is_some() {
            return Err(CliError::usage(
                "--valid and --grace need --node or --network: they say which handles the report covers",
            ));
        }
        c.pending_reclaims()?
    } else {
        c.gc(&GcRequest {
            node: a.node,
            network: a.network,
            valid: a.valid,
            grace_seconds: a.grace,
        })?
    };
    ctx.out.either(&r, || table(&r))?;
    Ok(Outcome::Ok)
}

/// Pending reclaims as a table.
pub fn table(r: &GcResponse) -> String {
    if r.pending.is_empty() {
        return "no reclaims pending".into();
    }
    let mut t = Table::new(&["HANDLE", "DUE", "REPORTED BY"]);
    for p in &r.pending {
        t.row(vec![p.handle.clone(), p.due.clone(), p.reporter.clone()]);
    }
    t.render()
}
