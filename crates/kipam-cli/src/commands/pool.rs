//! `kipamctl pool create|list|show|update|delete`.
//!
//! `list` draws a utilization bar per pool and marks pools at risk (kipamd's thresholds:
//! an exhaustion forecast sooner than 7 days or more than 80% used, by default) with `!`
//! and the reason. `update` sends a JSON merge patch built from the flags given, so
//! settings not named keep their value.

use std::net::IpAddr;

use clap::{Args, Subcommand, ValueEnum};
use ipnet::IpNet;
use kipam_api::pools::PoolView;
use kipam_core::{AddrRange, PoolConfig, Purpose};
use serde_json::{Map, Value, json};

use crate::output::{Table, bar, group, or_dash, pct};
use crate::{CliError, Ctx, Outcome, parse};

/// What a pool's addresses are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PurposeArg {
    /// Pod addresses.
    Pod,
    /// Service cluster IPs.
    Service,
    /// LoadBalancer addresses.
    LoadBalancer,
    /// Node pod-CIDRs (prefix leases).
    NodeCidr,
    /// Anything else.
    Generic,
}

impl From<PurposeArg> for Purpose {
    fn from(p: PurposeArg) -> Purpose {
        match p {
            PurposeArg::Pod => Purpose::Pod,
            PurposeArg::Service => Purpose::Service,
            PurposeArg::LoadBalancer => Purpose::LoadBalancer,
            PurposeArg::NodeCidr => Purpose::NodeCidr,
            PurposeArg::Generic => Purpose::Generic,
        }
    }
}

/// `kipamctl pool ...`.
#[derive(Debug, Subcommand)]
pub enum PoolCmd {
    /// Create a pool (refused when it overlaps a pool or external network of its scope).
    Create(CreateArgs),
    /// List pools with utilization bars; `!` marks pools at risk of running out.
    List,
    /// Show a pool's settings, usage and risk.
    Show {
        /// Pool name.
        name: String,
    },
    /// Change a pool's settings (its name and CIDR cannot change).
    Update(UpdateArgs),
    /// Delete a pool (refused while it holds addresses or leases, unless --force).
    Delete {
        /// Pool name.
        name: String,
        /// Release everything the pool holds, then delete it.
        #[arg(long)]
        force: bool,
    },
}

/// Arguments of `pool create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Pool name (1-253 printable ASCII characters without spaces).
    pub name: String,
    /// The CIDR, host bits zero (10.244.0.0/16, fd00:10::/64).
    #[arg(value_parser = parse::cidr)]
    pub cidr: IpNet,
    /// What the addresses are for.
    #[arg(long, value_enum, default_value_t = PurposeArg::Generic)]
    pub purpose: PurposeArg,
    /// Address space: overlaps are refused within a scope.
    #[arg(long, default_value = "default")]
    pub scope: String,
    /// Block size as a prefix length [default: 26 for IPv4, 122 for IPv6].
    #[arg(long, value_name = "LENGTH")]
    pub block_prefix_length: Option<u8>,
    /// Gateway address, never handed out.
    #[arg(long, value_parser = parse::ip)]
    pub gateway: Option<IpAddr>,
    /// Addresses never handed out: FIRST-LAST, a CIDR or one address (repeatable).
    #[arg(long = "exclude", value_name = "RANGE", value_parser = parse::range)]
    pub exclusions: Vec<AddrRange>,
    /// Seconds a released address waits before it is handed out again (0: none).
    #[arg(long, value_name = "SECONDS")]
    pub reuse_delay: Option<u64>,
    /// Most blocks one node may claim.
    #[arg(long, value_name = "N")]
    pub max_blocks_per_node: Option<u32>,
    /// Never hand out addresses from another node's blocks.
    #[arg(long)]
    pub strict_affinity: bool,
    /// Seconds an empty block stays with its node.
    #[arg(long, value_name = "SECONDS")]
    pub empty_block_grace: Option<u64>,
}

impl CreateArgs {
    /// The pool configuration these flags describe.
    pub fn config(&self) -> PoolConfig {
        let mut c = PoolConfig::new(&self.name, self.cidr);
        c.purpose = self.purpose.into();
        c.scope = self.scope.clone();
        c.block_prefix_length = self.block_prefix_length;
        c.gateway = self.gateway;
        c.exclusions = self.exclusions.clone();
        if let Some(d) = self.reuse_delay {
            c.reuse_delay_seconds = d;
        }
        c.max_blocks_per_node = self.max_blocks_per_node;
        c.strict_affinity = self.strict_affinity;
        if let Some(g) = self.empty_block_grace {
            c.empty_block_grace_seconds = g;
        }
        c
    }
}

/// Arguments of `pool update`: each flag given becomes one key of the merge patch.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Pool name.
    pub name: String,
    /// What the addresses are for.
    #[arg(long, value_enum)]
    pub purpose: Option<PurposeArg>,
    /// Block size as a prefix length (only while the pool holds no block).
    #[arg(long, value_name = "LENGTH")]
    pub block_prefix_length: Option<u8>,
    /// Gateway address.
    #[arg(long, value_parser = parse::ip, conflicts_with = "no_gateway")]
    pub gateway: Option<IpAddr>,
    /// Remove the gateway.
    #[arg(long)]
    pub no_gateway: bool,
    /// Replace the exclusions with these (repeatable; FIRST-LAST, CIDR or address).
    #[arg(long = "exclude", value_name = "RANGE", value_parser = parse::range, conflicts_with = "no_exclusions")]
    pub exclusions: Vec<AddrRange>,
    /// Remove every exclusion.
    #[arg(long)]
    pub no_exclusions: bool,
    /// Seconds a released address waits before reuse.
    #[arg(long, value_name = "SECONDS")]
    pub reuse_delay: Option<u64>,
    /// Most blocks one node may claim.
    #[arg(long, value_name = "N", conflicts_with = "no_max_blocks_per_node")]
    pub max_blocks_per_node: Option<u32>,
    /// Remove the per-node block limit.
    #[arg(long)]
    pub no_max_blocks_per_node: bool,
    /// Never hand out addresses from another node's blocks (true or false).
    #[arg(long, value_name = "BOOL")]
    pub strict_affinity: Option<bool>,
    /// Seconds an empty block stays with its node.
    #[arg(long, value_name = "SECONDS")]
    pub empty_block_grace: Option<u64>,
}

impl UpdateArgs {
    /// The JSON merge patch (RFC 7386) of the flags given.
    pub fn patch(&self) -> Value {
        let mut m = Map::new();
        let mut set = |k: &str, v: Value| {
            m.insert(k.into(), v);
        };
        if let Some(p) = self.purpose {
            set("purpose", json!(Purpose::from(p)));
        }
        if let Some(b) = self.block_prefix_length {
            set("blockPrefixLength", json!(b));
        }
        if let Some(g) = self.gateway {
            set("gateway", json!(g));
        }
        if self.no_gateway {
            set("gateway", Value::Null);
        }
        if !self.exclusions.is_empty() {
            set("exclusions", json!(self.exclusions));
        }
        if self.no_exclusions {
            set("exclusions", Value::Null);
        }
        if let Some(d) = self.reuse_delay {
            set("reuseDelaySeconds", json!(d));
        }
        if let Some(n) = self.max_blocks_per_node {
            set("maxBlocksPerNode", json!(n));
        }
        if self.no_max_blocks_per_node {
            set("maxBlocksPerNode", Value::Null);
        }
        if let Some(s) = self.strict_affinity {
            set("strictAffinity", json!(s));
        }
        if let Some(g) = self.empty_block_grace {
            set("emptyBlockGraceSeconds", json!(g));
        }
        Value::Object(m)
    }
}

/// Runs `pool ...`.
pub fn run(ctx: &Ctx, cmd: PoolCmd) -> Result<Outcome, CliError> {
    let c = ctx.client()?;
    match cmd {
        PoolCmd::Create(a) => {
            let v = c.create_pool(&a.config())?;
            ctx.out.either(&v, || show(&v))?;
        }
        PoolCmd::List => {
            let list = c.list_pools()?;
            ctx.out.either(&list, || list_table(&list.items))?;
        }
        PoolCmd::Show { name } => {
            let v = c.get_pool(&name)?;
            ctx.out.either(&v, || show(&v))?;
        }
        PoolCmd::Update(a) => {
            let patch = a.patch();
            if patch.as_object().is_some_and(Map::is_empty) {
                return Err(CliError::usage(
                    "nothing to change: give at least one setting (see `kipamctl pool update --help`)",
                ));
            }
            let v = c.update_pool(&a.name, &patch)?;
            ctx.out.either(&v, || show(&v))?;
        }
        PoolCmd::Delete { name, force } => {
            c.delete_pool(&name, force)?;
            ctx.out
                .either(&json!({"deleted": name}), || format!("deleted pool {name}"))?;
        }
    }
    Ok(Outcome::Ok)
}

/// The `pool list` table.
pub fn list_table(pools: &[PoolView]) -> String {
    if pools.is_empty() {
        return "no pools; create one with `kipamctl pool create NAME CIDR`".into();
    }
    let mut t = Table::new(&["NAME", "CIDR", "PURPOSE", "SCOPE", "USED", "", "", "RISK"]);
    for p in pools {
        let u = &p.usage;
        let used = u.held.saturating_add(u.quarantined);
        t.row(vec![
            p.config.name.clone(),
            p.config.cidr.to_string(),
            p.config.purpose.to_string(),
            p.config.scope.clone(),
            bar(u.percent_used, 20),
            pct(u.percent_used),
            format!("{} held", group(&used.to_string())),
            p.at_risk
                .as_ref()
                .map_or_else(String::new, |r| format!("! {}", r.message)),
        ]);
    }
    t.render()
}

/// The `pool show` text.
pub fn show(p: &PoolView) -> String {
    let c = &p.config;
    let u = &p.usage;
    let mut t = Table::new(&["", ""]);
    let mut kv = |k: &str, v: String| t.row(vec![format!("{k}:"), v]);
    kv("name", c.name.clone());
    kv("cidr", c.cidr.to_string());
    kv("family", u.family.to_string());
    kv("purpose", c.purpose.to_string());
    kv("scope", c.scope.clone());
    kv(
        "block size",
        or_dash(c.block_prefix_length.map(|b| format!("/{b}"))),
    );
    kv("gateway", or_dash(c.gateway));
    kv(
        "exclusions",
        if c.exclusions.is_empty() {
            "-".into()
        } else {
            c.exclusions
                .iter()
                .map(|r| format!("{}-{}", r.first, r.last))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    kv("reuse delay", format!("{}s", c.reuse_delay_seconds));
    kv("max blocks/node", or_dash(c.max_blocks_per_node));
    kv("strict affinity", c.strict_affinity.to_string());
    kv(
        "used",
        format!("{} {}", bar(u.percent_used, 30), pct(u.percent_used)),
    );
    kv(
        "addresses",
        format!(
            "{} size, {} held, {} quarantined, {} free, {} reserved, {} leased",
            group(&u.size),
            group(&u.held.to_string()),
            group(&u.quarantined.to_string()),
            group(&u.free),
            group(&u.reserved),
            group(&u.leased)
        ),
    );
    kv("blocks, leases", format!("{}, {}", u.blocks, u.leases));
    kv(
        "at risk",
        p.at_risk
            .as_ref()
            .map_or_else(|| "no".into(), |r| format!("yes: {}", r.message)),
    );
    let s = t.render();
    // The header row of an unnamed two-column table is empty.
    s.trim_start_matches('\n').to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        cmd: PoolCmd,
    }

    fn parse(args: &[&str]) -> Result<PoolCmd, clap::Error> {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map(|t| t.cmd)
    }

    #[test]
    fn create_flags_make_the_config() {
        let PoolCmd::Create(a) = parse(&[
            "create",
            "pods",
            "10.244.0.0/16",
            "--purpose",
            "pod",
            "--exclude",
            "10.244.0.0-10.244.0.9",
            "--gateway",
            "10.244.0.1",
            "--reuse-delay",
            "0",
        ])
        .unwrap() else {
            panic!("not create");
        };
        let c = a.config();
        assert_eq!(c.purpose, Purpose::Pod);
        assert_eq!(c.exclusions.len(), 1);
        assert_eq!(c.reuse_delay_seconds, 0);
        assert_eq!(c.gateway, Some("10.244.0.1".parse().unwrap()));
        let e = parse(&["create", "p", "10.244.1.0/16"]).err().unwrap();
        assert!(e.to_string().contains("did you mean 10.244.0.0/16"), "{e}");
    }

    #[test]
    fn update_flags_make_a_merge_patch() {
        let PoolCmd::Update(a) = parse(&[
            "update",
            "p",
            "--no-gateway",
            "--reuse-delay",
            "5",
            "--strict-affinity",
            "true",
        ])
        .unwrap() else {
            panic!("not update");
        };
        assert_eq!(
            a.patch(),
            json!({"gateway": null, "reuseDelaySeconds": 5, "strictAffinity": true})
        );
        assert!(parse(&["update", "p", "--gateway", "10.0.0.1", "--no-gateway"]).is_err());
    }

    fn view(name: &str, pct: f64, risk: Option<&str>) -> PoolView {
        let mut c = PoolConfig::new(name, "10.0.0.0/24".parse().unwrap());
        c.purpose = Purpose::Pod;
        PoolView {
            config: c,
            usage: kipam_api::pools::UsageCounts {
                family: kipam_core::Family::Ipv4,
                size: "256".into(),
                held: 200,
                free: "54".into(),
                quarantined: 0,
                reserved: "2".into(),
                leased: "0".into(),
                blocks: 4,
                leases: 0,
                percent_used: pct,
            },
            at_risk: risk.map(|m| kipam_api::planning::AtRisk {
                reason: kipam_api::planning::RiskReason::HighUsage,
                message: m.into(),
                eta: None,
                eta_seconds: None,
            }),
        }
    }

    #[test]
    fn list_shows_bars_and_risk() {
        let s = list_table(&[
            view("a", 78.7, None),
            view("b", 90.0, Some("90.0% used, above the 80% threshold")),
        ]);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].contains("[################....]  78.7%  200 held"),
            "{s}"
        );
        assert!(
            lines[2].ends_with("! 90.0% used, above the 80% threshold"),
            "{s}"
        );
        assert!(list_table(&[]).contains("kipamctl pool create"));
        let shown = show(&view("b", 90.0, Some("x")));
        assert!(
            shown.contains("at risk:") && shown.contains("yes: x"),
            "{shown}"
        );
    }
}
