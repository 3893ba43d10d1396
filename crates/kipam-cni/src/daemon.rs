//! The daemon backend: `ipam.daemonSocket` sends every verb to kipamd over its unix
//! socket, so one kipamd is the authority for the pools many nodes share.
//!
//! - ADD: `POST /v1/allocations` for the handle `{network}/{containerID}/{ifname}`, one
//!   address from each pool of `ipam.pools` (in order: two pools = dual-stack, all or
//!   nothing). Without `pools`, one address per family that kipamd has a `pod` pool of
//!   (IPv4 first). The prefix length and gateway of each address come from its pool.
//! - DEL: `DELETE /v1/allocations/{handle}` (idempotent: an unknown handle is success).
//! - CHECK: the handle's addresses must equal prevResult's.
//! - GC: `POST /v1/gc` for the network with the valid attachments; kipamd reclaims the
//!   rest after its grace period (re-checked then), and records each reclaim.
//! - STATUS: kipamd answers ready and every pool has a free address.
//!
//! kipamd unreachable or not ready is code 11 (try again later): the runtime retries.
//! The client is blocking and std-only, so the plugin still starts in a millisecond.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use kipam_api::allocations::{AddressRequest, AllocateRequest, PodRef};
use kipam_api::client::{Client, ClientError, Endpoint};
use kipam_api::error::ErrorCode;
use kipam_api::gc::GcRequest;
use kipam_core::{Family, Purpose};

use crate::backend::{AddRequest, Assigned, Attachment, Backend, Range, assign_static};
use crate::error::CniError;
use crate::standalone::handle_key;

/// How long one request to kipamd may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon backend for one invocation.
pub struct Daemon {
    client: Client,
    pools: Vec<String>,
    node: String,
}

/// The node name sent to kipamd: the kernel's hostname (what kubelet uses by default).
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

/// A backend that talks to kipamd at `socket`.
pub fn open(socket: &Path, pools: &[String]) -> Result<Box<dyn Backend>, CniError> {
    Ok(Box::new(Daemon {
        client: Client::new(Endpoint::Unix(socket.to_path_buf())).with_timeout(TIMEOUT),
        pools: pools.to_vec(),
        node: node_name(),
    }))
}

fn client_error(e: &ClientError) -> CniError {
    match e {
        ClientError::Unreachable { .. } => CniError::try_again(format!("{e}: is kipamd running?")),
        ClientError::Status { code, message, .. } => match code {
            ErrorCode::Exhausted => CniError::new(
                crate::error::codes::RANGE_EXHAUSTED,
                "pool exhausted",
                message.clone(),
            ),
            ErrorCode::AddressInUse => CniError::new(
                crate::error::codes::ADDRESS_UNAVAILABLE,
                "address unavailable",
                message.clone(),
            ),
            ErrorCode::AddressUnavailable => CniError::new(
                crate::error::codes::ADDRESS_NOT_IN_RANGE,
                "address not in range",
                message.clone(),
            ),
            ErrorCode::NotFound | ErrorCode::InvalidArgument => {
                CniError::invalid_config("ipam.pools", message.clone())
            }
            ErrorCode::Unavailable => CniError::try_again(message.clone()),
            _ => CniError::daemon_unavailable(format!("kipamd refused: {message}")),
        },
        other => CniError::daemon_unavailable(other.to_string()),
    }
}

impl Daemon {
    /// The pools to ask: `ipam.pools`, or one `pod` pool family each.
    fn requests(&self, static_ips: &[IpAddr]) -> Result<Vec<AddressRequest>, CniError> {
        let mut reqs: Vec<AddressRequest> = if self.pools.is_empty() {
            let pools = self.client.list_pools().map_err(|e| client_error(&e))?;
            let mut families: Vec<Family> = pools
                .items
                .iter()
                .filter(|p| p.config.purpose == Purpose::Pod)
                .map(|p| p.config.family())
                .collect();
            families.sort();
            families.dedup();
            if families.is_empty() {
                return Err(CniError::invalid_config(
                    "ipam.pools",
                    "kipamd has no pod pool; create one or list pools in ipam.pools",
                ));
            }
            families
                .into_iter()
                .map(|f| AddressRequest {
                    family: Some(f),
                    purpose: Some(Purpose::Pod),
                    ..AddressRequest::default()
                })
                .collect()
        } else {
            self.pools
                .iter()
                .map(|p| AddressRequest {
                    pools: Some(vec![p.clone()]),
                    ..AddressRequest::default()
                })
                .collect()
        };
        for ip in static_ips {
            let family = Family::of(*ip);
            let slot = reqs
                .iter_mut()
                .find(|r| r.address.is_none() && self.family_of(r) == Some(family));
            match slot {
                Some(r) => r.address = Some(*ip),
                None => {
                    return Err(CniError::address_not_in_range(
                        *ip,
                        "no requested pool of its family is free for it",
                    ));
                }
            }
        }
        Ok(reqs)
    }

    fn family_of(&self, r: &AddressRequest) -> Option<Family> {
        if let Some(f) = r.family {
            return Some(f);
        }
        let pool = r.pools.as_ref()?.first()?;
        self.client.get_pool(pool).ok().map(|p| p.config.family())
    }

    fn assigned(&self, addrs: &[(String, IpAddr)]) -> Result<Vec<Assigned>, CniError> {
        let mut cache: BTreeMap<String, (u8, Option<IpAddr>)> = BTreeMap::new();
        let mut out = Vec::with_capacity(addrs.len());
        for (pool, addr) in addrs {
            if !cache.contains_key(pool) {
                let p = self.client.get_pool(pool).map_err(|e| client_error(&e))?;
                cache.insert(pool.clone(), (p.config.cidr.prefix_len(), p.config.gateway));
            }
            let (len, gateway) = cache
                .get(pool)
                .copied()
                .unwrap_or((if addr.is_ipv4() { 32 } else { 128 }, None));
            out.push(Assigned {
                address: IpNet::new(*addr, len).unwrap_or_else(|_| IpNet::from(*addr)),
                gateway,
            });
        }
        Ok(out)
    }
}

impl Backend for Daemon {
    fn add(&self, req: &AddRequest) -> Result<Vec<Assigned>, CniError> {
        // Static requests in daemon mode: the config's ranges, if any, say which set an
        // address belongs to; kipamd checks it against the pool.
        if !req.range_sets.is_empty() {
            assign_static(&req.range_sets, &req.static_ips)?;
        }
        let a = &req.attrs;
        let mut attrs = BTreeMap::new();
        attrs.insert(
            "cni.containerId".to_string(),
            req.attachment.container_id.clone(),
        );
        attrs.insert("cni.ifname".to_string(), req.attachment.ifname.clone());
        attrs.insert("cni.network".to_string(), req.attachment.network.clone());
        if let Some(id) = &a.infra_container_id {
            attrs.insert("k8s.pod.infraContainerId".to_string(), id.clone());
        }
        let pod = (a.namespace.is_some() || a.name.is_some() || a.uid.is_some()).then(|| PodRef {
            namespace: a.namespace.clone(),
            name: a.name.clone(),
            uid: a.uid.clone(),
        });
        let body = AllocateRequest {
            handle: handle_key(&req.attachment),
            node: self.node.clone(),
            attrs,
            pod,
            requests: self.requests(&req.static_ips)?,
        };
        let view = self.client.allocate(&body).map_err(|e| client_error(&e))?;
        let addrs: Vec<(String, IpAddr)> = view
            .addresses
            .iter()
            .map(|a| (a.pool.clone(), a.address))
            .collect();
        self.assigned(&addrs)
    }

    fn del(&self, attachment: &Attachment) -> Result<(), CniError> {
        match self.client.release(&handle_key(attachment)) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(()),
            Err(e) => Err(client_error(&e)),
        }
    }

    fn check(&self, attachment: &Attachment, expected: &[IpAddr]) -> Result<(), CniError> {
        let key = handle_key(attachment);
        let view = match self.client.get_allocation(&key) {
            Ok(v) => v,
            Err(e) if e.code() == Some(ErrorCode::NotFound) => {
                return Err(CniError::reservation_mismatch(format!(
                    "{key} holds no address"
                )));
            }
            Err(e) => return Err(client_error(&e)),
        };
        let mut have: Vec<IpAddr> = view.addresses.iter().map(|a| a.address).collect();
        let mut want = expected.to_vec();
        have.sort();
        want.sort();
        want.dedup();
        if have.is_empty() || have != want {
            return Err(CniError::reservation_mismatch(format!(
                "{key} holds {have:?} but prevResult lists {want:?}"
            )));
        }
        Ok(())
    }

    fn gc(&self, network: &str, valid: &[(String, String)]) -> Result<(), CniError> {
        let report = GcRequest {
            node: None,
            network: Some(network.to_string()),
            valid: valid
                .iter()
                .map(|(c, i)| format!("{network}/{c}/{i}"))
                .collect(),
            grace_seconds: None,
        };
        self.client
            .gc(&report)
            .map(|_| ())
            .map_err(|e| client_error(&e))
    }

    fn status(&self, _network: &str, _range_sets: &[Vec<Range>]) -> Result<(), CniError> {
        self.client
            .ready()
            .map_err(|e| CniError::status_unavailable(e.to_string()))?;
        let usage = self
            .client
            .usage()
            .map_err(|e| CniError::status_unavailable(e.to_string()))?;
        let wanted: Vec<&str> = if self.pools.is_empty() {
            usage
                .pools
                .iter()
                .filter(|p| p.purpose == Purpose::Pod)
                .map(|p| p.pool.as_str())
                .collect()
        } else {
            self.pools.iter().map(String::as_str).collect()
        };
        for name in wanted {
            let Some(p) = usage.pools.iter().find(|p| p.pool == name) else {
                return Err(CniError::status_unavailable(format!(
                    "kipamd has no pool {name}"
                )));
            };
            let free: u128 = p.counts.free.parse().unwrap_or(0);
            if free == 0 && p.counts.quarantined == 0 {
                return Err(CniError::status_unavailable(format!(
                    "pool {name} has no free address"
                )));
            }
        }
        Ok(())
    }
}
