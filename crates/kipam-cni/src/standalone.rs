//! The standalone backend: the embedded SQLite store under `dataDir` (a drop-in for
//! host-local's state directory).
//!
//! ## How a host-local config maps onto kipam pools
//! Each subnet of the network becomes one pool named `{network}:{subnet}` in the scope
//! `cni:{network}` (so CNI networks never see each other as overlaps; host-local keeps
//! networks apart the same way). The pool's CIDR is the subnet; everything of the subnet
//! outside the config's ranges is an exclusion, and the range's gateway is the pool's
//! gateway, so nothing outside `[rangeStart, rangeEnd]` and no gateway is ever handed out.
//! A range set becomes one "want" of the request, listing its ranges' pools in order:
//! one address per range set, all or nothing, exactly as host-local does. When the config
//! changes (a range grows or shrinks), the pool's exclusions follow on the next call;
//! addresses already held stay held.
//!
//! Every attachment is one handle, `{network}/{containerID}/{ifname}`, holding one address
//! per range set, with the pod's attributes from CNI_ARGS. All state for a node lives in
//! one file, so every block belongs to the node [`NODE`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use kipam_core::{
    AddrRange, AllocRequest, Error as EngineError, Family, Handle, PoolConfig, Source, Want,
};
use kipam_store::{IpamError, IpamStore, SqliteOptions, SqliteStore, StoreError};

use crate::backend::{AddRequest, Assigned, Attachment, Backend, Range, assign_static};
use crate::config::IpamConfig;
use crate::error::CniError;

/// The node every standalone block belongs to: one store file serves one node.
pub const NODE: &str = "local";

/// How long an exec waits for another exec's transaction before answering code 11.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The standalone backend for one invocation.
pub struct Standalone {
    ipam: IpamStore<SqliteStore>,
    network: String,
    reuse_delay_seconds: u64,
}

/// Opens the store under the config's `dataDir` (created if missing).
pub fn open(cfg: &IpamConfig) -> Result<Box<dyn Backend>, CniError> {
    let opts = SqliteOptions {
        create_dir: true,
        busy_timeout: BUSY_TIMEOUT,
    };
    let store = SqliteStore::open(&cfg.data_dir, &opts).map_err(|e| store_error(&e))?;
    crate::trace::mark("store opened");
    Ok(Box::new(Standalone {
        ipam: IpamStore::new(store),
        network: cfg.network.clone(),
        reuse_delay_seconds: cfg.reuse_delay.as_secs()
            + u64::from(cfg.reuse_delay.subsec_nanos() > 0),
    }))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The handle key of an attachment.
pub fn handle_key(a: &Attachment) -> String {
    format!("{}/{}/{}", a.network, a.container_id, a.ifname)
}

/// The pool name of a subnet of a network.
pub fn pool_name(network: &str, subnet: IpNet) -> String {
    format!("{network}:{subnet}")
}

fn store_error(e: &StoreError) -> CniError {
    match e {
        StoreError::Busy { .. } | StoreError::Conflict { .. } => CniError::try_again(e.to_string()),
        StoreError::Corrupt { .. } | StoreError::Inconsistent { .. } => {
            CniError::store_corrupt(e.to_string())
        }
        StoreError::SchemaTooNew { .. } => CniError::store_too_new(e.to_string()),
        _ => CniError::new(
            crate::error::codes::IO_FAILURE,
            "store I/O failure",
            e.to_string(),
        ),
    }
}

fn ipam_error(e: &IpamError, req: Option<&AddRequest>) -> CniError {
    match e {
        IpamError::Store(s) => store_error(s),
        IpamError::Corrupt { .. } => CniError::store_corrupt(e.to_string()),
        // `dataDir` points at a kipamd store that kipamd has not folded.
        IpamError::Unfolded { .. } => CniError::new(
            crate::error::codes::IO_FAILURE,
            "store written by kipamd",
            e.to_string(),
        ),
        IpamError::Engine(EngineError::PoolExhausted { pool, .. }) => {
            let index = req
                .and_then(|r| {
                    r.range_sets.iter().position(|set| {
                        set.iter().any(|range| {
                            pool.split(',')
                                .any(|p| p == pool_name(&r.attachment.network, range.subnet))
                        })
                    })
                })
                .unwrap_or(0);
            CniError::range_exhausted(index, pool.clone())
        }
        IpamError::Engine(EngineError::AddressInUse { addr, holder }) => {
            CniError::address_unavailable(*addr, format!("held by {holder}"))
        }
        IpamError::Engine(
            EngineError::AddressReserved { addr, .. }
            | EngineError::AddressOutsidePool { addr, .. }
            | EngineError::AddressInLease { addr, .. },
        ) => CniError::address_not_in_range(*addr, e.to_string()),
        IpamError::Engine(EngineError::Invalid { field, reason }) => {
            CniError::invalid_config(field, reason.clone())
        }
        IpamError::Engine(other) => CniError::new(
            crate::error::codes::IO_FAILURE,
            "allocation failed",
            other.to_string(),
        ),
    }
}

/// The pools a config's range sets need: one per subnet, excluding what no range covers.
pub fn pools_for(
    network: &str,
    range_sets: &[Vec<Range>],
    reuse_delay_seconds: u64,
) -> Vec<PoolConfig> {
    let mut by_subnet: BTreeMap<IpNet, Vec<&Range>> = BTreeMap::new();
    for r in range_sets.iter().flatten() {
        by_subnet.entry(r.subnet).or_default().push(r);
    }
    by_subnet
        .into_iter()
        .map(|(subnet, ranges)| {
            let mut c = PoolConfig::new(&pool_name(network, subnet), subnet);
            c.scope = format!("cni:{network}");
            c.reuse_delay_seconds = reuse_delay_seconds;
            // Nothing to give back: the pool lives as long as the network's file.
            c.empty_block_grace_seconds = 0;
            c.gateway = ranges.iter().find_map(|r| r.gateway);
            c.exclusions = uncovered(subnet, &ranges);
            for r in &ranges {
                if let Some(gw) = r.gateway.filter(|g| Some(*g) != c.gateway) {
                    c.exclusions.push(AddrRange {
                        first: gw,
                        last: gw,
                    });
                }
            }
            c
        })
        .collect()
}

/// The parts of `subnet` that no range covers.
fn uncovered(subnet: IpNet, ranges: &[&Range]) -> Vec<AddrRange> {
    use kipam_core::prefix::{addr_to_u128, u128_to_addr};
    let family = Family::of(subnet.addr());
    let all = AddrRange::of_net(subnet);
    let (first, last) = all.bounds();
    let mut covered: Vec<(u128, u128)> = ranges
        .iter()
        .map(|r| (addr_to_u128(r.range_start), addr_to_u128(r.range_end)))
        .collect();
    covered.sort_unstable();
    let mut out = Vec::new();
    let mut next = first;
    let mut done = false;
    for (a, b) in covered {
        if a > next {
            out.push(AddrRange {
                first: u128_to_addr(family, next),
                last: u128_to_addr(family, a - 1),
            });
        }
        if b >= last {
            done = true;
            break;
        }
        next = next.max(b + 1);
    }
    if !done && next <= last {
        out.push(AddrRange {
            first: u128_to_addr(family, next),
            last: u128_to_addr(family, last),
        });
    }
    out
}

impl Standalone {
    fn assigned(req: &AddRequest, handle: &Handle) -> Vec<Assigned> {
        handle
            .addrs
            .iter()
            .map(|a| {
                let range = req
                    .range_sets
                    .iter()
                    .flatten()
                    .find(|r| r.subnet.contains(&a.addr));
                let prefix_len = range.map_or(if a.addr.is_ipv4() { 32 } else { 128 }, |r| {
                    r.subnet.prefix_len()
                });
                Assigned {
                    address: IpNet::new(a.addr, prefix_len).unwrap_or_else(|_| IpNet::from(a.addr)),
                    gateway: range.and_then(|r| r.gateway),
                }
            })
            .collect()
    }
}

impl Backend for Standalone {
    fn add(&self, req: &AddRequest) -> Result<Vec<Assigned>, CniError> {
        let key = handle_key(&req.attachment);
        let statics = assign_static(&req.range_sets, &req.static_ips)?;
        let wants = req
            .range_sets
            .iter()
            .zip(statics)
            .map(|(set, addr)| {
                let mut pools: Vec<String> = set
                    .iter()
                    .map(|r| pool_name(&self.network, r.subnet))
                    .collect();
                pools.dedup();
                Want {
                    source: Source::Pools(pools),
                    addr,
                }
            })
            .collect();
        let mut attrs = BTreeMap::new();
        let a = &req.attrs;
        for (k, v) in [
            ("k8s.pod.namespace", &a.namespace),
            ("k8s.pod.name", &a.name),
            ("k8s.pod.uid", &a.uid),
            ("k8s.pod.infraContainerId", &a.infra_container_id),
        ] {
            if let Some(v) = v {
                attrs.insert(k.to_string(), v.clone());
            }
        }
        attrs.insert(
            "cni.containerId".into(),
            req.attachment.container_id.clone(),
        );
        attrs.insert("cni.ifname".into(), req.attachment.ifname.clone());
        attrs.insert("cni.network".into(), req.attachment.network.clone());
        let alloc = AllocRequest {
            handle: key,
            node: NODE.to_string(),
            attrs,
            wants,
        };
        // One transaction: the pools are checked (created or updated only when the config
        // changed) and the handle is allocated, or handed back what it already holds (a
        // repeated ADD).
        let pools = pools_for(&self.network, &req.range_sets, self.reuse_delay_seconds);
        let got = self
            .ipam
            .ensure_pools_and_allocate(&pools, &alloc, now())
            .map_err(|e| ipam_error(&e, Some(req)))?;
        crate::trace::mark("allocated (one transaction, committed)");
        let handle = Handle {
            key: alloc.handle.into(),
            node: alloc.node.into(),
            attrs: BTreeMap::new(),
            addrs: got.into(),
            created: 0,
        };
        Ok(Self::assigned(req, &handle))
    }

    fn del(&self, attachment: &Attachment) -> Result<(), CniError> {
        let released = self
            .ipam
            .release(&handle_key(attachment), now())
            .map(|_| ())
            .map_err(|e| ipam_error(&e, None));
        crate::trace::mark("released");
        released
    }

    fn check(&self, attachment: &Attachment, expected: &[IpAddr]) -> Result<(), CniError> {
        let key = handle_key(attachment);
        let held: Vec<IpAddr> = self
            .ipam
            .handle(&key)
            .map_err(|e| ipam_error(&e, None))?
            .map(|h| h.addrs.iter().map(|a| a.addr).collect())
            .unwrap_or_default();
        if held.is_empty() {
            return Err(CniError::reservation_mismatch(format!(
                "{key} holds no address"
            )));
        }
        let mut want = expected.to_vec();
        let mut have = held.clone();
        want.sort();
        want.dedup();
        have.sort();
        if want != have {
            let show = |v: &[IpAddr]| {
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(CniError::reservation_mismatch(format!(
                "{key} holds [{}] but prevResult lists [{}]",
                show(&have),
                show(&want)
            )));
        }
        Ok(())
    }

    fn gc(&self, network: &str, valid: &[(String, String)]) -> Result<(), CniError> {
        let handles = self
            .ipam
            .handles_with_prefix(&format!("{network}/"))
            .map_err(|e| ipam_error(&e, None))?;
        let mut failures = Vec::new();
        for h in handles {
            let Some(rest) = h.key.strip_prefix(&format!("{network}/")) else {
                continue;
            };
            let Some((container, ifname)) = rest.split_once('/') else {
                continue;
            };
            if valid.iter().any(|(c, i)| c == container && i == ifname) {
                continue;
            }
            if let Err(e) = self.ipam.release(&h.key, now()) {
                failures.push(format!("{}: {e}", h.key));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(CniError::gc_incomplete(&failures))
        }
    }

    fn status(&self, _network: &str, range_sets: &[Vec<Range>]) -> Result<(), CniError> {
        let usage: BTreeMap<String, kipam_core::PoolUsage> = self
            .ipam
            .usage(now())
            .map_err(|e| CniError::status_unavailable(e.to_string()))?
            .into_iter()
            .collect();
        for (i, set) in range_sets.iter().enumerate() {
            let room = set.iter().any(|r| {
                let name = pool_name(&self.network, r.subnet);
                match usage.get(&name) {
                    // A pool not created yet has every range address free.
                    None => true,
                    Some(u) => u.free + u.quarantined > 0,
                }
            });
            if !room {
                return Err(CniError::status_unavailable(format!(
                    "range set {i} has no free address"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(subnet: &str, start: &str, end: &str, gw: Option<&str>) -> Range {
        Range {
            subnet: subnet.parse().expect("subnet"),
            range_start: start.parse().expect("start"),
            range_end: end.parse().expect("end"),
            gateway: gw.map(|g| g.parse().expect("gateway")),
        }
    }

    #[test]
    fn ranges_become_pools_with_exclusions() {
        let sets = vec![
            vec![range(
                "10.1.0.0/24",
                "10.1.0.10",
                "10.1.0.20",
                Some("10.1.0.1"),
            )],
            vec![range(
                "fd00:1::/64",
                "fd00:1::2",
                "fd00:1::ffff:ffff:ffff:fffe",
                None,
            )],
        ];
        let pools = pools_for("net", &sets, 5);
        assert_eq!(pools.len(), 2);
        let v4 = &pools[0];
        assert_eq!(v4.name, "net:10.1.0.0/24");
        assert_eq!(v4.scope, "cni:net");
        let ex: Vec<String> = v4.exclusions.iter().map(ToString::to_string).collect();
        assert_eq!(ex, vec!["10.1.0.0-10.1.0.9", "10.1.0.21-10.1.0.255"]);
        let ex6: Vec<String> = pools[1]
            .exclusions
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            ex6,
            vec!["fd00:1::-fd00:1::1", "fd00:1::ffff:ffff:ffff:ffff"]
        );
        for p in &pools {
            p.validate().expect("valid pool");
        }
    }
}
