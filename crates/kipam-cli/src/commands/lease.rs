//! `kipamctl lease POOL --length N|--prefix CIDR --owner OWNER`: a whole sub-prefix of a
//! pool (a node's pod CIDR, a cluster's subnet); `lease list` and `lease release`.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use ipnet::IpNet;
use kipam_api::prefixes::{LeaseQuery, LeaseRequest, LeaseView};
use serde_json::json;

use crate::output::Table;
use crate::{CliError, Ctx, Outcome, parse};

/// Arguments of `lease`: a new lease, or a `list`/`release` subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LeaseArgs {
    /// List or release leases instead of taking one.
    #[command(subcommand)]
    pub cmd: Option<LeaseCmd>,
    /// The pool to lease from.
    pub pool: Option<String>,
    /// Any free prefix of this length (e.g. 24 for a node's /24).
    #[arg(long, value_name = "LENGTH", conflicts_with = "prefix")]
    pub length: Option<u8>,
    /// This exact prefix.
    #[arg(long, value_parser = parse::cidr)]
    pub prefix: Option<IpNet>,
    /// Who holds it: `node/worker-1`, `cluster/prod`.
    #[arg(long)]
    pub owner: Option<String>,
    /// An attribute recorded with the lease (repeatable).
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse::key_value)]
    pub attrs: Vec<(String, String)>,
}

/// `lease list|release`.
#[derive(Debug, Subcommand)]
pub enum LeaseCmd {
    /// List leases, optionally of one pool or owner.
    List {
        /// Only leases of this pool.
        #[arg(long)]
        pool: Option<String>,
        /// Only leases of this owner.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Give a leased prefix back to its pool.
    Release {
        /// The pool.
        pool: String,
        /// The leased prefix.
        #[arg(value_parser = parse::cidr)]
        prefix: IpNet,
    },
}

impl LeaseArgs {
    /// The request for a new lease.
    pub fn request(&self) -> Result<LeaseRequest, CliError> {
        let pool = self.pool.clone().ok_or_else(|| {
            CliError::usage(
                "give the pool to lease from: kipamctl lease POOL --length N --owner OWNER",
            )
        })?;
        let owner = self
            .owner
            .clone()
            .ok_or_else(|| CliError::usage("give the lease's --owner (e.g. node/worker-1)"))?;
        if self.length.is_none() && self.prefix.is_none() {
            return Err(CliError::usage("give --length N or --prefix CIDR"));
        }
        Ok(LeaseRequest {
            pool,
            prefix_length: self.length,
            prefix: self.prefix,
            owner,
            attrs: self.attrs.iter().cloned().collect::<BTreeMap<_, _>>(),
        })
    }
}

/// Runs `lease ...`.
pub fn run(ctx: &Ctx, a: LeaseArgs) -> Result<Outcome, CliError> {
    match &a.cmd {
        None => {
            let req = a.request()?;
            let v = ctx.client()?.lease_prefix(&req)?;
            ctx.out.either(&v, || table(std::slice::from_ref(&v)))?;
        }
        Some(LeaseCmd::List { pool, owner }) => {
            let l = ctx.client()?.list_prefixes(&LeaseQuery {
                pool: pool.clone(),
                owner: owner.clone(),
            })?;
            ctx.out.either(&l, || {
                if l.items.is_empty() {
                    "no leases".into()
                } else {
                    table(&l.items)
                }
            })?;
        }
        Some(LeaseCmd::Release { pool, prefix }) => {
            ctx.client()?.release_prefix(pool, *prefix)?;
            ctx.out
                .either(&json!({"released": prefix, "pool": pool}), || {
                    format!("released {prefix} to pool {pool}")
                })?;
        }
    }
    Ok(Outcome::Ok)
}

/// Leases as a table.
pub fn table(leases: &[LeaseView]) -> String {
    let mut t = Table::new(&["POOL", "PREFIX", "OWNER", "CREATED"]);
    for l in leases {
        t.row(vec![
            l.pool.clone(),
            l.prefix.to_string(),
            l.owner.clone(),
            l.created.clone(),
        ]);
    }
    t.render()
}
