//! `kipamctl forecast [POOL]`: when pools run out, from kipamd's usage samples — the
//! status (growing, not growing, declining, full, not enough data), the growth per day
//! over the window, R², the confidence, the ETA and the at-risk marker. Without a pool,
//! every pool, soonest ETA first. With `--node`, the forecast of one node's blocks in the
//! pool: when they are full (with `maxBlocksPerNode`, when the node can take no more
//! addresses without borrowing from other nodes' blocks).

use clap::Args;
use kipam_api::planning::{ForecastQuery, ForecastView, format_duration};

use crate::output::{Table, group, wire};
use crate::{CliError, Ctx, Outcome, parse};

/// Arguments of `forecast`.
#[derive(Debug, Args)]
pub struct ForecastArgs {
    /// The pool [default: every pool].
    pub pool: Option<String>,
    /// Forecast this node's blocks in the pool instead of the whole pool.
    #[arg(long, requires = "pool")]
    pub node: Option<String>,
    /// Trailing window of samples to fit: 30s, 90m, 12h, 7d.
    #[arg(long, default_value = "7d", value_parser = parse::duration)]
    pub window: String,
    /// Shortest span the samples must cover [default: the smaller of 1h and window/4].
    #[arg(long, value_parser = parse::duration)]
    pub min_span: Option<String>,
    /// Fewest samples to fit a trend (at least 3).
    #[arg(long)]
    pub min_samples: Option<u32>,
}

/// Runs `forecast`.
pub fn run(ctx: &Ctx, a: ForecastArgs) -> Result<Outcome, CliError> {
    let c = ctx.client()?;
    let q = ForecastQuery {
        window: Some(a.window.clone()),
        min_samples: a.min_samples,
        min_span: a.min_span.clone(),
    };
    if let (Some(pool), Some(node)) = (&a.pool, &a.node) {
        let f = c.node_forecast(pool, node, &q)?;
        if ctx.out.json() {
            ctx.out.value(&f)?;
        } else {
            ctx.out.text(&detail(&f))?;
        }
        return Ok(Outcome::Ok);
    }
    let names = match &a.pool {
        Some(p) => vec![p.clone()],
        None => c
            .list_pools()?
            .items
            .into_iter()
            .map(|p| p.config.name)
            .collect(),
    };
    let mut all = Vec::with_capacity(names.len());
    for n in &names {
        all.push(c.forecast(n, &q)?);
    }
    all.sort_by_key(|f| (f.eta_seconds.is_none(), f.eta_seconds, f.pool.clone()));
    if a.pool.is_some() && !ctx.out.json() {
        if let Some(f) = all.first() {
            ctx.out.text(&detail(f))?;
        }
    } else if a.pool.is_some() {
        if let Some(f) = all.first() {
            ctx.out.value(f)?;
        }
    } else {
        ctx.out.either(&all, || table(&all))?;
    }
    Ok(Outcome::Ok)
}

fn eta(f: &ForecastView) -> String {
    match (f.eta_seconds, &f.eta) {
        (Some(0), Some(_)) => "now".into(),
        (Some(s), Some(_)) => format!("in {}", format_duration(s.saturating_mul(1000))),
        _ => "-".into(),
    }
}

/// Forecasts as a table.
pub fn table(all: &[ForecastView]) -> String {
    if all.is_empty() {
        return "no pools".into();
    }
    let mut t = Table::new(&[
        "POOL",
        "STATUS",
        "USED",
        "GROWTH/DAY",
        "ETA",
        "CONFIDENCE",
        "SAMPLES",
        "RISK",
    ]);
    for f in all {
        t.row(vec![
            f.pool.clone(),
            wire(&f.status),
            format!("{:.1}%", f.usage_pct),
            format!("{:+.1}", f.growth_per_day),
            eta(f),
            wire(&f.confidence),
            f.samples.to_string(),
            f.at_risk
                .as_ref()
                .map_or_else(String::new, |r| format!("! {}", r.message)),
        ]);
    }
    t.render()
}

/// One forecast, with its evidence.
pub fn detail(f: &ForecastView) -> String {
    let mut t = Table::new(&["", ""]);
    let mut kv = |k: &str, v: String| t.row(vec![format!("{k}:"), v]);
    kv("pool", f.pool.clone());
    if let Some(n) = &f.node {
        kv("node", n.clone());
    }
    kv("status", wire(&f.status));
    kv(
        "used",
        format!(
            "{} of {} ({:.1}%)",
            group(&f.used),
            group(&f.size),
            f.usage_pct
        ),
    );
    kv("growth", format!("{:+.1} addresses/day", f.growth_per_day));
    kv(
        "eta",
        match &f.eta {
            Some(at) => format!("{} ({at})", eta(f)),
            None => "-".into(),
        },
    );
    kv(
        "confidence",
        format!("{} (R² {:.2})", wire(&f.confidence), f.r_squared),
    );
    kv(
        "window",
        format!(
            "{} ({} samples, {} to {})",
            f.window, f.samples, f.from, f.to
        ),
    );
    kv(
        "at risk",
        f.at_risk
            .as_ref()
            .map_or_else(|| "no".into(), |r| format!("yes: {}", r.message)),
    );
    t.render().trim_start_matches('\n').to_string()
}
