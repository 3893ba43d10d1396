//! `kipamctl alloc HANDLE`: one address per `--pool`, `--family` or `--ip`, all or
//! nothing (dual-stack is `--family ipv4 --family ipv6`). Asking again for a handle that
//! holds addresses returns them unchanged.

use std::collections::BTreeMap;
use std::net::IpAddr;

use clap::{Args, ValueEnum};
use kipam_api::allocations::{AddressRequest, AllocateRequest, AllocationView};
use kipam_core::Family;

use super::pool::PurposeArg;
use crate::output::Table;
use crate::{CliError, Ctx, Outcome, parse};

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FamilyArg {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl From<FamilyArg> for Family {
    fn from(f: FamilyArg) -> Family {
        match f {
            FamilyArg::Ipv4 => Family::Ipv4,
            FamilyArg::Ipv6 => Family::Ipv6,
        }
    }
}

/// Arguments of `alloc`.
#[derive(Debug, Args)]
pub struct AllocArgs {
    /// The owner key, e.g. `net1/<containerID>/eth0`.
    pub handle: String,
    /// One address from these pools, tried in order (comma-separated; repeatable: one
    /// address per --pool).
    #[arg(long, value_name = "POOL[,POOL...]")]
    pub pool: Vec<String>,
    /// One address from any pool of this family (repeatable).
    #[arg(long, value_enum)]
    pub family: Vec<FamilyArg>,
    /// With --family: only pools of this purpose.
    #[arg(long, value_enum, requires = "family")]
    pub purpose: Option<PurposeArg>,
    /// This exact address (repeatable).
    #[arg(long = "ip", value_parser = parse::ip)]
    pub ips: Vec<IpAddr>,
    /// The node the addresses are for.
    #[arg(long, default_value = "default")]
    pub node: String,
    /// An attribute recorded with the handle (repeatable).
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse::key_value)]
    pub attrs: Vec<(String, String)>,
}

impl AllocArgs {
    /// The request these flags describe.
    pub fn request(&self) -> Result<AllocateRequest, CliError> {
        let mut requests = Vec::new();
        for group in pool_groups(&self.pool) {
            requests.push(AddressRequest {
                pools: Some(group),
                ..AddressRequest::default()
            });
        }
        for f in &self.family {
            requests.push(AddressRequest {
                family: Some((*f).into()),
                purpose: self.purpose.map(Into::into),
                ..AddressRequest::default()
            });
        }
        for ip in &self.ips {
            requests.push(AddressRequest {
                address: Some(*ip),
                ..AddressRequest::default()
            });
        }
        if requests.is_empty() {
            return Err(CliError::usage(
                "say what to allocate: --pool POOL, --family ipv4|ipv6 or --ip ADDRESS",
            ));
        }
        Ok(AllocateRequest {
            handle: self.handle.clone(),
            node: self.node.clone(),
            attrs: self.attrs.iter().cloned().collect::<BTreeMap<_, _>>(),
            pod: None,
            requests,
        })
    }
}

/// One group of pools per `--pool` flag: `a,b` is one request tried in order.
fn pool_groups(values: &[String]) -> Vec<Vec<String>> {
    values
        .iter()
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// Runs `alloc`.
pub fn run(ctx: &Ctx, a: AllocArgs) -> Result<Outcome, CliError> {
    let req = a.request()?;
    let v = ctx.client()?.allocate(&req)?;
    ctx.out.either(&v, || table(&v))?;
    Ok(Outcome::Ok)
}

/// The addresses of an allocation, one per line.
pub fn table(v: &AllocationView) -> String {
    let mut t = Table::new(&["HANDLE", "NODE", "POOL", "ADDRESS"]);
    for a in &v.addresses {
        t.row(vec![
            v.handle.clone(),
            v.node.clone(),
            a.pool.clone(),
            a.address.to_string(),
        ]);
    }
    t.render()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: AllocArgs,
    }

    #[test]
    fn flags_make_requests() {
        let t = T::try_parse_from([
            "t",
            "net/c1/eth0",
            "--pool",
            "a,b",
            "--pool",
            "c",
            "--family",
            "ipv6",
            "--ip",
            "10.0.0.7",
            "--attr",
            "team=x",
        ])
        .unwrap();
        let r = t.a.request().unwrap();
        assert_eq!(r.requests.len(), 4);
        assert_eq!(
            r.requests[0].pools.as_deref(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        assert_eq!(r.requests[1].pools.as_deref(), Some(&["c".to_string()][..]));
        assert_eq!(r.requests[2].family, Some(Family::Ipv6));
        assert_eq!(r.attrs["team"], "x");
        let t = T::try_parse_from(["t", "h"]).unwrap();
        assert_eq!(t.a.request().unwrap_err().exit_code(), 2);
        assert!(T::try_parse_from(["t", "h", "--ip", "10.0.0.300"]).is_err());
    }
}
