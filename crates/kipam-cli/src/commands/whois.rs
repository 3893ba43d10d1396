//! `kipamctl whois IP [--at TIME]`: the pool an address belongs to, its state, and who
//! holds it now — or held it at a past time (RFC 3339, or a duration ago: `--at 2h`).

use std::net::IpAddr;

use clap::Args;
use kipam_api::addresses::AddressInfo;

use crate::output::{Table, or_dash, wire};
use crate::parse::{TimeArg, now_ms};
use crate::{CliError, Ctx, Outcome, parse};

/// Arguments of `whois`.
#[derive(Debug, Args)]
pub struct WhoisArgs {
    /// The address.
    #[arg(value_parser = parse::ip)]
    pub ip: IpAddr,
    /// Who held it then: RFC 3339 (2025-05-01T12:00:00Z) or a duration ago (90m, 2h, 3d).
    #[arg(long, value_parser = parse::time)]
    pub at: Option<TimeArg>,
}

/// Runs `whois`.
pub fn run(ctx: &Ctx, a: WhoisArgs) -> Result<Outcome, CliError> {
    let at = a.at.map(|t| t.resolve(now_ms()));
    let info = ctx.client()?.address(a.ip, at)?;
    ctx.out.either(&info, || render(&info))?;
    Ok(Outcome::Ok)
}

/// The holder of an address as key/value lines.
pub fn render(i: &AddressInfo) -> String {
    let mut t = Table::new(&["", ""]);
    let mut kv = |k: &str, v: String| t.row(vec![format!("{k}:"), v]);
    kv("address", i.address.clone());
    if let Some(at) = &i.at {
        kv("at", at.clone());
    }
    kv("pool", or_dash(i.pool.as_ref()));
    kv("state", wire(&i.state));
    match &i.holder {
        Some(h) => {
            kv("handle", h.handle.clone());
            kv("node", or_dash(h.node.as_ref()));
            kv("since", or_dash(h.since.as_ref()));
            for (k, v) in &h.attrs {
                kv(k, v.clone());
            }
        }
        None => kv(
            "holder",
            if i.at.is_some() {
                "nobody then".into()
            } else {
                "nobody".into()
            },
        ),
    }
    t.render().trim_start_matches('\n').to_string()
}
