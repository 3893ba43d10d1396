//! `kipamctl host-check`: compares pools with the routes and addresses of the machine it
//! runs on and reports every collision (exit code 5 when there is one). Pools come from
//! kipamd, or from an inventory file (`--file`, as for `overlaps`) to check a plan
//! before it exists. See [`crate::host`] for what is read and what is skipped.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::host::{Collision, HostNet, PoolNet, collisions, read_host};
use crate::output::{Table, wire};
use crate::{CliError, Ctx, Outcome};

use super::overlaps::Inventory;

/// Arguments of `host-check`.
#[derive(Debug, Args)]
pub struct HostCheckArgs {
    /// Check the pools of this JSON/YAML inventory instead of kipamd's.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Leave out routes and addresses of these devices (repeatable; `cali*` matches a
    /// prefix): a cluster node's own pod routes (cni0, flannel.1) are expected.
    #[arg(long = "ignore-dev", value_name = "DEV")]
    pub ignore_dev: Vec<String>,
}

/// What `host-check -o json` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostReport {
    /// Pools checked.
    pub pools: usize,
    /// Host routes and addresses read.
    pub host_networks: Vec<HostNet>,
    /// Collisions found.
    pub collisions: Vec<Collision>,
}

/// Runs `host-check`.
pub fn run(ctx: &Ctx, a: HostCheckArgs) -> Result<Outcome, CliError> {
    let pools: Vec<PoolNet> = match &a.file {
        Some(f) => Inventory::read(f)?
            .pools
            .into_iter()
            .map(|p| PoolNet {
                name: p.name,
                cidr: p.cidr,
            })
            .collect(),
        None => ctx
            .client()?
            .list_pools()?
            .items
            .into_iter()
            .map(|p| PoolNet {
                name: p.config.name,
                cidr: p.config.cidr,
            })
            .collect(),
    };
    let host = read_host()?;
    let found = collisions(&pools, &host, &a.ignore_dev);
    let report = HostReport {
        pools: pools.len(),
        host_networks: host,
        collisions: found,
    };
    ctx.out.either(&report, || render(&report))?;
    Ok(if report.collisions.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Found
    })
}

/// The collisions as a table, or a line saying there are none.
pub fn render(r: &HostReport) -> String {
    if r.collisions.is_empty() {
        return format!(
            "no collisions: {} pools checked against {} host routes and addresses",
            r.pools,
            r.host_networks.len()
        );
    }
    let mut t = Table::new(&["POOL", "CIDR", "HOST", "NETWORK", "DEV", "DETAIL", "SHARED"]);
    for c in &r.collisions {
        t.row(vec![
            c.pool.clone(),
            c.pool_cidr.to_string(),
            wire(&c.host.kind),
            c.host.net.to_string(),
            c.host.dev.clone(),
            c.host.detail.clone(),
            format!("{}-{}", c.shared.first, c.shared.last),
        ]);
    }
    let mut s = t.render();
    s.push_str(&format!(
        "{} collisions: traffic from pods to these addresses would follow the host's route instead of reaching pods; move the pool (`kipamctl plan` finds free space) or the host network\n",
        r.collisions.len()
    ));
    s
}
