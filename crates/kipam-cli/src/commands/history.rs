//! `kipamctl history IP`: every allocate, release and reclaim of an address, oldest
//! first, kept for kipamd's event retention (30 days by default).

use std::net::IpAddr;

use clap::Args;
use kipam_api::addresses::EventView;

use crate::output::{Table, or_dash};
use crate::{CliError, Ctx, Outcome, parse};

/// Arguments of `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The address.
    #[arg(value_parser = parse::ip)]
    pub ip: IpAddr,
}

/// Runs `history`.
pub fn run(ctx: &Ctx, a: HistoryArgs) -> Result<Outcome, CliError> {
    let info = ctx.client()?.address(a.ip, None)?;
    ctx.out.either(&info.history, || {
        if info.history.is_empty() {
            format!(
                "no history for {} (kept for kipamd's event retention)",
                info.address
            )
        } else {
            table(&info.history)
        }
    })?;
    Ok(Outcome::Ok)
}

/// Events as a table.
pub fn table(events: &[EventView]) -> String {
    let mut t = Table::new(&["TIME", "EVENT", "POOL", "HANDLE", "NODE", "POD"]);
    for e in events {
        let pod = match (
            e.attrs.get("k8s.pod.namespace"),
            e.attrs.get("k8s.pod.name"),
        ) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.clone(),
            _ => "-".into(),
        };
        t.row(vec![
            e.time.clone(),
            e.kind.clone(),
            e.pool.clone(),
            e.handle.clone(),
            or_dash(e.node.as_ref()),
            pod,
        ]);
    }
    t.render()
}
