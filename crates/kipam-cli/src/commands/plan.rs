//! `kipamctl plan`: sizes and places each cluster's pod CIDR, node mask, service CIDR and
//! LoadBalancer range for growth, clear of each other and of everything to avoid.
//!
//! The request comes from a YAML or JSON file (the `POST /v1/plan` body, see
//! docs/planning.md), from flags for one cluster, or both (flags add a cluster, supernets
//! and networks to avoid). Planning is offline by default: kipam-core's planner runs
//! here, so no daemon is needed; `--remote` asks kipamd instead (same answer).
//!
//! `--apply` creates the planned ranges as pools on kipamd, named
//! `<cluster>-<pods|services|lb>-<v4|v6>` with purposes `pod`, `service` and
//! `load-balancer`. Before planning it adds kipamd's pools and external networks (of the
//! target scope) to the networks to avoid, so the plan fits around what exists; before
//! creating, it checks that no name is taken; if a creation fails, the pools created by
//! this run are deleted again, so an apply creates all pools or none.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use ipnet::IpNet;
use kipam_api::client::Client;
use kipam_core::planner::{
    AvoidNet, ClusterSpec, Families, FamilyPlan, Plan, PlanRequest, PlannedCidr, RangeKind,
    RangePlan,
};
use kipam_core::{Family, PoolConfig, Purpose};
use serde::Serialize;

use crate::error::{EXIT_CONFLICT, chain, client_exit_code};
use crate::host::{ignorable, read_host};
use crate::output::{Table, group_u64};
use crate::{CliError, Ctx, Outcome, parse};

/// Address families of a planned cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FamiliesArg {
    /// IPv4 only.
    Ipv4,
    /// IPv6 only.
    Ipv6,
    /// IPv4 and IPv6.
    DualStack,
}

impl From<FamiliesArg> for Families {
    fn from(f: FamiliesArg) -> Families {
        match f {
            FamiliesArg::Ipv4 => Families::Ipv4,
            FamiliesArg::Ipv6 => Families::Ipv6,
            FamiliesArg::DualStack => Families::DualStack,
        }
    }
}

/// Arguments of `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The plan request as YAML or JSON (`-` for stdin): clusters, supernets, avoid,
    /// headroomPct. Flags below add to it.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Plan one more cluster of this name, described by the flags below.
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// Nodes today.
    #[arg(long, requires = "cluster")]
    pub nodes: Option<u64>,
    /// Nodes at the growth horizon.
    #[arg(long, requires = "cluster")]
    pub nodes_at_horizon: Option<u64>,
    /// Pods today.
    #[arg(long, requires = "cluster")]
    pub pods: Option<u64>,
    /// Pods at the growth horizon.
    #[arg(long, requires = "cluster")]
    pub pods_at_horizon: Option<u64>,
    /// Pods per node (kubelet maxPods) [default: 110].
    #[arg(long, requires = "cluster")]
    pub max_pods_per_node: Option<u32>,
    /// Services (ClusterIPs) at the horizon.
    #[arg(long, requires = "cluster")]
    pub services: Option<u64>,
    /// LoadBalancer addresses at the horizon (0: no range).
    #[arg(long, requires = "cluster")]
    pub load_balancers: Option<u64>,
    /// Address families of the cluster.
    #[arg(long, value_enum, requires = "cluster")]
    pub family: Option<FamiliesArg>,
    /// A fixed IPv4 node mask instead of the computed one.
    #[arg(long, requires = "cluster", value_name = "LENGTH")]
    pub node_mask_v4: Option<u8>,
    /// A fixed IPv6 node mask instead of /64.
    #[arg(long, requires = "cluster", value_name = "LENGTH")]
    pub node_mask_v6: Option<u8>,
    /// Address space to carve from (repeatable).
    #[arg(long, value_parser = parse::cidr)]
    pub supernet: Vec<IpNet>,
    /// A network nothing planned may touch, optionally labelled: CIDR[=LABEL] (repeatable).
    #[arg(long, value_name = "CIDR[=LABEL]", value_parser = avoid_arg)]
    pub avoid: Vec<AvoidNet>,
    /// Also avoid this machine's routes and addresses.
    #[arg(long)]
    pub avoid_host: bool,
    /// Headroom on top of the horizon demand, in percent [default: 50].
    #[arg(long, value_name = "PERCENT")]
    pub headroom: Option<u32>,
    /// Plan on kipamd (POST /v1/plan) instead of here.
    #[arg(long)]
    pub remote: bool,
    /// Create the planned ranges as pools on kipamd (avoiding its pools and external
    /// networks).
    #[arg(long)]
    pub apply: bool,
    /// The scope of the pools --apply creates.
    #[arg(long, default_value = "default", requires = "apply")]
    pub scope: String,
}

fn avoid_arg(s: &str) -> Result<AvoidNet, String> {
    let (net, label) = match s.split_once('=') {
        Some((n, l)) => (n, l.to_string()),
        None => (s, String::new()),
    };
    Ok(AvoidNet {
        cidr: parse::cidr(net)?,
        label,
    })
}

impl PlanArgs {
    /// The request: the file's, plus what the flags add.
    pub fn request(&self) -> Result<PlanRequest, CliError> {
        let mut req = match &self.file {
            Some(f) => parse::read_file::<PlanRequest>(f)?,
            None => PlanRequest::default(),
        };
        if let Some(name) = &self.cluster {
            req.clusters.push(ClusterSpec {
                name: name.clone(),
                nodes: self.nodes.unwrap_or(0),
                nodes_at_horizon: self.nodes_at_horizon,
                max_pods_per_node: self.max_pods_per_node,
                pods: self.pods,
                pods_at_horizon: self.pods_at_horizon,
                services: self.services.unwrap_or(0),
                load_balancers: self.load_balancers.unwrap_or(0),
                families: self.family.map(Into::into).unwrap_or_default(),
                headroom_pct: None,
                node_mask_v4: self.node_mask_v4,
                node_mask_v6: self.node_mask_v6,
            });
        }
        if self.file.is_none() && self.cluster.is_none() {
            return Err(CliError::usage(
                "nothing to plan: give --file FILE (YAML or JSON) or --cluster NAME with --nodes/--pods and --supernet",
            ));
        }
        req.supernets.extend(self.supernet.iter().copied());
        req.avoid.extend(self.avoid.iter().cloned());
        if let Some(h) = self.headroom {
            req.headroom_pct = h;
        }
        if self.avoid_host {
            for h in read_host()?.iter().filter(|h| !ignorable(h)) {
                req.avoid.push(AvoidNet {
                    cidr: h.net,
                    label: format!(
                        "host {} {} {}",
                        crate::output::wire(&h.kind),
                        h.dev,
                        h.detail
                    )
                    .trim_end()
                    .to_string(),
                });
            }
        }
        Ok(req)
    }
}

/// What `plan --apply -o json` prints.
#[derive(Debug, Serialize)]
pub struct Applied {
    /// The plan.
    pub plan: Plan,
    /// The pools created, in order.
    pub created: Vec<PoolConfig>,
}

/// Runs `plan`.
pub fn run(ctx: &Ctx, a: PlanArgs) -> Result<Outcome, CliError> {
    let mut req = a.request()?;
    let client = if a.apply || a.remote {
        Some(ctx.client()?)
    } else {
        None
    };
    if let (true, Some(c)) = (a.apply, &client) {
        req.avoid.extend(existing(c, &a.scope)?);
    }
    let plan = match (&client, a.remote) {
        (Some(c), true) => c.plan(&req)?,
        _ => kipam_core::planner::plan(&req)?,
    };
    match (&client, a.apply) {
        (Some(c), true) => {
            let pools = pools_of(&plan, &a.scope);
            create_all(c, &pools)?;
            let out = Applied {
                plan,
                created: pools,
            };
            ctx.out.either(&out, || {
                let mut s = render(&out.plan);
                for p in &out.created {
                    s.push_str(&format!(
                        "created pool {} {} ({})\n",
                        p.name, p.cidr, p.purpose
                    ));
                }
                s
            })?;
        }
        _ => ctx.out.either(&plan, || render(&plan))?,
    }
    Ok(Outcome::Ok)
}

/// kipamd's pools and external networks of `scope`, as networks to avoid.
fn existing(c: &Client, scope: &str) -> Result<Vec<AvoidNet>, CliError> {
    let mut out = Vec::new();
    for p in c.list_pools()?.items {
        if p.config.scope == scope {
            out.push(AvoidNet {
                cidr: p.config.cidr,
                label: format!("pool {}", p.config.name),
            });
        }
    }
    for n in c.list_external_networks()?.items {
        if n.scope == scope {
            out.push(AvoidNet {
                cidr: n.cidr,
                label: format!("external network {}", n.name),
            });
        }
    }
    Ok(out)
}

/// The pool name of a planned range: `<cluster>-<pods|services|lb>-<v4|v6>`.
pub fn pool_name(r: &PlannedCidr) -> String {
    let kind = match r.what {
        RangeKind::Pods => "pods",
        RangeKind::Services => "services",
        RangeKind::LoadBalancers => "lb",
    };
    let fam = match r.family {
        Family::Ipv4 => "v4",
        Family::Ipv6 => "v6",
    };
    format!("{}-{kind}-{fam}", r.cluster)
}

/// The pools `--apply` creates for a plan.
pub fn pools_of(plan: &Plan, scope: &str) -> Vec<PoolConfig> {
    plan.ranges()
        .iter()
        .map(|r| {
            let mut c = PoolConfig::new(&pool_name(r), r.cidr);
            c.purpose = match r.what {
                RangeKind::Pods => Purpose::Pod,
                RangeKind::Services => Purpose::Service,
                RangeKind::LoadBalancers => Purpose::LoadBalancer,
            };
            c.scope = scope.to_string();
            c
        })
        .collect()
}

/// Creates every pool, or none: names are checked first, and a failure part-way deletes
/// the pools created so far.
fn create_all(c: &Client, pools: &[PoolConfig]) -> Result<(), CliError> {
    let taken: Vec<String> = c
        .list_pools()?
        .items
        .into_iter()
        .map(|p| p.config.name)
        .filter(|n| pools.iter().any(|p| &p.name == n))
        .collect();
    if !taken.is_empty() {
        for n in &taken {
            eprintln!("kipamctl: pool {n} exists already");
        }
        return Err(CliError::Batch {
            failed: taken.len(),
            total: pools.len(),
            what: "pools (names taken; nothing was created)",
            code: EXIT_CONFLICT,
        });
    }
    let mut created: Vec<String> = Vec::new();
    for p in pools {
        if let Err(e) = c.create_pool(p) {
            eprintln!(
                "kipamctl: creating pool {} {}: {}",
                p.name,
                p.cidr,
                chain(&e)
            );
            for name in created.iter().rev() {
                if let Err(d) = c.delete_pool(name, false) {
                    eprintln!("kipamctl: rolling back pool {name}: {}", chain(&d));
                }
            }
            return Err(CliError::Batch {
                failed: 1,
                total: pools.len(),
                what: "pools (the ones created were deleted again)",
                code: client_exit_code(&e),
            });
        }
        created.push(p.name.clone());
    }
    Ok(())
}

fn range_line(t: &mut Table, label: &str, r: &RangePlan) {
    t.row(vec![
        format!("  {label}"),
        r.cidr.to_string(),
        format!(
            "{} addresses for {} (+{}%)",
            group_u64(r.capacity),
            group_u64(r.needed),
            r.headroom_pct
        ),
    ]);
    t.row(vec![
        String::new(),
        String::new(),
        format!("why: {}", r.reason),
    ]);
}

fn family_rows(t: &mut Table, f: &FamilyPlan) {
    let p = &f.pods;
    t.row(vec![
        format!("  pods ({})", f.family),
        p.cidr.to_string(),
        format!(
            "node mask /{}: {} nodes × {} pods = {} pods, for {} nodes / {} pods (+{}%)",
            p.node_mask,
            group_u64(p.max_nodes),
            group_u64(p.max_pods_per_node),
            group_u64(p.max_pods),
            group_u64(p.nodes_needed),
            group_u64(p.pods_needed),
            p.headroom_pct
        ),
    ]);
    t.row(vec![
        String::new(),
        String::new(),
        format!("why: {}", p.reason),
    ]);
    range_line(t, &format!("services ({})", f.family), &f.services);
    if let Some(lb) = &f.load_balancers {
        range_line(t, &format!("lb ({})", f.family), lb);
    }
    for w in &f.warnings {
        t.row(vec![
            String::new(),
            String::new(),
            format!("warning: {}", w.message),
        ]);
    }
}

/// A plan for people: per cluster and family, each range with its limits and reasons.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    for c in &plan.clusters {
        out.push_str(&format!(
            "cluster {} (headroom policy {}%)\n",
            c.name, c.headroom_policy_pct
        ));
        let mut t = Table::new(&["", "", ""]);
        for f in &c.families {
            family_rows(&mut t, f);
        }
        out.push_str(t.render().trim_start_matches('\n'));
        out.push('\n');
    }
    out.trim_end().to_string() + "\n"
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: PlanArgs,
    }

    fn args(a: &[&str]) -> PlanArgs {
        T::try_parse_from(std::iter::once("t").chain(a.iter().copied()))
            .unwrap()
            .a
    }

    #[test]
    fn flags_make_a_request_and_names_follow_the_plan() {
        let a = args(&[
            "--cluster",
            "prod",
            "--pods",
            "5000",
            "--pods-at-horizon",
            "10000",
            "--services",
            "2000",
            "--load-balancers",
            "50",
            "--family",
            "dual-stack",
            "--supernet",
            "10.0.0.0/8",
            "--supernet",
            "fd00::/48",
            "--avoid",
            "10.0.0.0/16=on-prem",
        ]);
        let req = a.request().unwrap();
        assert_eq!(req.clusters[0].families, Families::DualStack);
        assert_eq!(req.avoid[0].label, "on-prem");
        let plan = kipam_core::planner::plan(&req).unwrap();
        let pools = pools_of(&plan, "default");
        let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "prod-pods-v4",
                "prod-services-v4",
                "prod-lb-v4",
                "prod-pods-v6",
                "prod-services-v6",
                "prod-lb-v6"
            ]
        );
        assert_eq!(pools[0].purpose, Purpose::Pod);
        assert_eq!(pools[2].purpose, Purpose::LoadBalancer);
        let text = render(&plan);
        assert!(
            text.starts_with("cluster prod (headroom policy 50%)\n"),
            "{text}"
        );
        assert!(
            text.contains("pods (ipv4)") && text.contains("10.1.0.0/16"),
            "{text}"
        );
        assert!(
            text.contains("node mask /24: 256 nodes × 110 pods = 28,160 pods"),
            "{text}"
        );
        assert!(text.contains("why: "), "{text}");
    }

    #[test]
    fn usage_errors() {
        assert_eq!(args(&[]).request().unwrap_err().exit_code(), 2);
        assert!(
            T::try_parse_from(["t", "--nodes", "3"]).is_err(),
            "--nodes needs --cluster"
        );
        assert!(T::try_parse_from(["t", "--cluster", "c", "--avoid", "10.0.0.1/8"]).is_err());
        let e = kipam_core::planner::plan(
            &args(&[
                "--cluster",
                "c",
                "--nodes",
                "5000",
                "--supernet",
                "10.0.0.0/16",
            ])
            .request()
            .unwrap(),
        )
        .unwrap_err();
        assert_eq!(CliError::from(e).exit_code(), 7);
    }
}
