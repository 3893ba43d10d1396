//! `kipamctl usage`: utilization of every pool (bars, counts, at-risk markers) and the
//! addresses each node holds across pools.

use clap::Args;
use kipam_api::usage::UsageReport;

use crate::output::{Table, bar, group, group_u64, pct};
use crate::{CliError, Ctx, Outcome};

/// Arguments of `usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Also show each pool's share per node.
    #[arg(long)]
    pub nodes: bool,
}

/// Runs `usage`.
pub fn run(ctx: &Ctx, a: UsageArgs) -> Result<Outcome, CliError> {
    let r = ctx.client()?.usage()?;
    ctx.out.either(&r, || render(&r, a.nodes))?;
    Ok(Outcome::Ok)
}

/// The usage report as tables.
pub fn render(r: &UsageReport, per_node: bool) -> String {
    if r.pools.is_empty() {
        return "no pools".into();
    }
    let mut t = Table::new(&["POOL", "CIDR", "USED", "", "HELD", "FREE", "RISK"]);
    for p in &r.pools {
        t.row(vec![
            p.pool.clone(),
            p.cidr.clone(),
            bar(p.counts.percent_used, 20),
            pct(p.counts.percent_used),
            group_u64(p.counts.held),
            group(&p.counts.free),
            p.at_risk
                .as_ref()
                .map_or_else(String::new, |r| format!("! {}", r.message)),
        ]);
    }
    let mut out = t.render();
    if per_node {
        let mut n = Table::new(&["POOL", "NODE", "BLOCKS", "HELD", "FREE"]);
        for p in &r.pools {
            for u in &p.nodes {
                n.row(vec![
                    p.pool.clone(),
                    u.node.clone(),
                    u.blocks.to_string(),
                    group_u64(u.held),
                    group_u64(u.free),
                ]);
            }
        }
        if !n.is_empty() {
            out.push('\n');
            out.push_str(&n.render());
        }
    }
    if !r.nodes.is_empty() {
        let mut n = Table::new(&["NODE", "BLOCKS", "HELD"]);
        for u in &r.nodes {
            n.row(vec![
                u.node.clone(),
                u.blocks.to_string(),
                group_u64(u.held),
            ]);
        }
        out.push('\n');
        out.push_str(&n.render());
    }
    out
}
