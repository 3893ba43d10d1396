//! `kipamctl overlaps`: every pair of pools, prefix leases and external networks that
//! share addresses within a scope, with the shared range. From kipamd (`/v1/overlaps`),
//! or offline with `--file` from a JSON/YAML inventory, using the same sweep kipamd uses
//! (kipam-core's `find_overlaps`). Exit code 5 when any overlap is found, so a CI job can
//! gate on it.
//!
//! The file lists `pools`, `externalNetworks` and `leases`:
//!
//! ```yaml
//! pools:
//!   - {name: pods, cidr: 10.42.0.0/16}
//!   - {name: services, cidr: 10.43.0.0/16, scope: prod}
//! externalNetworks:
//!   - {name: office, cidr: 10.42.0.0/24, description: home LAN}
//! leases:
//!   - {pool: pods, prefix: 10.42.1.0/24}
//! ```

use std::path::{Path, PathBuf};

use clap::Args;
use ipnet::IpNet;
use kipam_api::networks::{OverlapList, OverlapView};
use kipam_core::overlap::{NetObject, find_overlaps};
use kipam_core::{AddrRange, ObjectKind, ObjectRef};
use serde::Deserialize;

use crate::output::Table;
use crate::{CliError, Ctx, Outcome, parse};

/// Arguments of `overlaps`.
#[derive(Debug, Args)]
pub struct OverlapsArgs {
    /// Check this JSON/YAML inventory (pools, externalNetworks, leases) offline instead
    /// of asking kipamd.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// An inventory of networks, for offline checks.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inventory {
    /// Pools.
    #[serde(default)]
    pub pools: Vec<NamedNet>,
    /// External networks.
    #[serde(default, alias = "externals")]
    pub external_networks: Vec<NamedNet>,
    /// Prefix leases (inside their pool by definition; overlaps with others count).
    #[serde(default)]
    pub leases: Vec<FileLease>,
}

/// A named network of an inventory.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedNet {
    /// Name.
    pub name: String,
    /// CIDR.
    pub cidr: IpNet,
    /// Scope (default `default`).
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Free text, ignored.
    #[serde(default)]
    pub description: String,
    /// A pool's purpose, ignored.
    #[serde(default)]
    pub purpose: Option<kipam_core::Purpose>,
}

/// A prefix lease of an inventory.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileLease {
    /// The pool it comes from.
    pub pool: String,
    /// The prefix.
    pub prefix: IpNet,
    /// Its owner, ignored.
    #[serde(default)]
    pub owner: String,
}

fn default_scope() -> String {
    "default".into()
}

impl Inventory {
    /// Reads an inventory file.
    pub fn read(path: &Path) -> Result<Inventory, CliError> {
        parse::read_file(path)
    }

    /// The inventory as the overlap sweep's objects; leases take their pool's scope.
    pub fn objects(&self) -> Vec<NetObject> {
        let obj = |kind, name: String, scope: &str, net: IpNet, parent: Option<String>| NetObject {
            id: ObjectRef { kind, name },
            scope: scope.to_string(),
            range: AddrRange::of_net(net),
            parent,
        };
        let mut out: Vec<NetObject> = self
            .pools
            .iter()
            .map(|p| obj(ObjectKind::Pool, p.name.clone(), &p.scope, p.cidr, None))
            .collect();
        out.extend(
            self.external_networks
                .iter()
                .map(|n| obj(ObjectKind::External, n.name.clone(), &n.scope, n.cidr, None)),
        );
        for l in &self.leases {
            let scope = self
                .pools
                .iter()
                .find(|p| p.name == l.pool)
                .map_or("default", |p| p.scope.as_str());
            out.push(obj(
                ObjectKind::Lease,
                format!("{}/{}", l.pool, l.prefix),
                scope,
                l.prefix,
                Some(l.pool.clone()),
            ));
        }
        out
    }
}

/// Overlaps of an inventory, as kipamd would list them.
pub fn offline(inv: &Inventory) -> OverlapList {
    OverlapList {
        items: find_overlaps(&inv.objects())
            .iter()
            .map(OverlapView::from)
            .collect(),
    }
}

/// Runs `overlaps`.
pub fn run(ctx: &Ctx, a: OverlapsArgs) -> Result<Outcome, CliError> {
    let list = match &a.file {
        Some(f) => offline(&Inventory::read(f)?),
        None => ctx.client()?.overlaps()?,
    };
    ctx.out.either(&list, || table(&list))?;
    Ok(if list.items.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Found
    })
}

/// Overlaps as a table.
pub fn table(list: &OverlapList) -> String {
    if list.items.is_empty() {
        return "no overlaps".into();
    }
    let side = |s: &kipam_api::networks::OverlapSide| {
        format!("{} {} ({}-{})", s.kind, s.name, s.range.first, s.range.last)
    };
    let mut t = Table::new(&["SCOPE", "A", "B", "SHARED"]);
    for o in &list.items {
        t.row(vec![
            o.scope.clone(),
            side(&o.a),
            side(&o.b),
            format!("{}-{}", o.shared.first, o.shared.last),
        ]);
    }
    t.render()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn offline_inventory_overlaps() {
        let inv: Inventory = parse::decode(
            Path::new("inv.yaml"),
            "pools:\n  - {name: pods, cidr: 10.42.0.0/16}\n  - {name: other, cidr: 10.42.0.0/16, scope: lab}\nexternalNetworks:\n  - {name: office, cidr: 10.42.3.0/24}\nleases:\n  - {pool: pods, prefix: 10.42.1.0/24}\n  - {pool: pods, prefix: 10.42.3.0/25}\n",
        )
        .unwrap();
        let l = offline(&inv);
        // pods×office and lease 10.42.3.0/25×office; the leases inside pods are expected,
        // and the pool of scope lab overlaps nothing of its scope.
        assert_eq!(l.items.len(), 2, "{l:?}");
        assert!(l.items.iter().all(|o| o.scope == "default"));
        assert!(table(&l).contains("external-network office"));
        let e = parse::decode::<Inventory>(Path::new("x.yaml"), "pool: []\n").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
