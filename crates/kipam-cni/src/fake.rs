//! An in-memory [`Backend`] for the dispatcher's unit tests (compiled only for tests).
//!
//! It keeps the trait's contracts (all-or-nothing ADD, repeated ADD returns the
//! holding, idempotent DEL, GC keep-list, STATUS exhaustion) in the simplest way, so the
//! dispatcher's tests exercise the CNI side, not a store.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::rc::Rc;

use crate::backend::{AddRequest, Assigned, Attachment, Backend, PodAttrs, Range, assign_static};
use crate::config::IpamConfig;
use crate::error::CniError;

#[derive(Default)]
struct State {
    held: BTreeMap<Attachment, (Vec<Assigned>, PodAttrs)>,
    data_dir: Option<PathBuf>,
    opened: usize,
}

/// The shared state; each factory call hands out a handle onto it.
#[derive(Default, Clone)]
pub struct FakeBackend(Rc<RefCell<State>>);

impl FakeBackend {
    /// The factory used by the tests.
    pub fn for_config(&self, cfg: &IpamConfig) -> Result<Box<dyn Backend>, CniError> {
        let mut s = self.0.borrow_mut();
        s.opened += 1;
        s.data_dir = Some(cfg.data_dir.clone());
        Ok(Box::new(self.clone()))
    }

    /// Number of addresses held, over all attachments.
    pub fn held(&self) -> usize {
        self.0.borrow().held.values().map(|(a, _)| a.len()).sum()
    }

    /// Whether container `id` holds anything.
    pub fn holds(&self, id: &str) -> bool {
        self.0.borrow().held.keys().any(|a| a.container_id == id)
    }

    /// The pod attributes recorded for container `id`.
    pub fn attrs(&self, id: &str) -> Option<PodAttrs> {
        let s = self.0.borrow();
        s.held
            .iter()
            .find(|(a, _)| a.container_id == id)
            .map(|(_, (_, p))| p.clone())
    }

    /// The `dataDir` the last factory call saw.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.0.borrow().data_dir.clone()
    }

    /// How many backends the factory built.
    pub fn opened(&self) -> usize {
        self.0.borrow().opened
    }

    fn taken(&self, ip: IpAddr) -> bool {
        self.0
            .borrow()
            .held
            .values()
            .any(|(a, _)| a.iter().any(|x| x.address.addr() == ip))
    }

    fn first_free<'s>(&self, set: &'s [Range]) -> Option<(IpAddr, &'s Range)> {
        for r in set {
            let mut ip = r.range_start;
            for _ in 0..4096 {
                if ip > r.range_end {
                    break;
                }
                if Some(ip) != r.gateway && !self.taken(ip) {
                    return Some((ip, r));
                }
                ip = next(ip);
            }
        }
        None
    }
}

fn next(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(1))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(1))),
    }
}

fn assigned(ip: IpAddr, r: &Range) -> Result<Assigned, CniError> {
    let address = ipnet::IpNet::new(ip, r.subnet.prefix_len())
        .map_err(|e| CniError::store_corrupt(e.to_string()))?;
    Ok(Assigned {
        address,
        gateway: r.gateway,
    })
}

impl Backend for FakeBackend {
    fn add(&self, req: &AddRequest) -> Result<Vec<Assigned>, CniError> {
        if let Some((a, _)) = self.0.borrow().held.get(&req.attachment) {
            return Ok(a.clone());
        }
        let statics = assign_static(&req.range_sets, &req.static_ips)?;
        let mut out = Vec::new();
        for (i, set) in req.range_sets.iter().enumerate() {
            let a = match statics[i] {
                Some(ip) => {
                    if self.taken(ip) {
                        return Err(CniError::address_unavailable(
                            ip,
                            "held by another attachment",
                        ));
                    }
                    let r = set.iter().find(|r| r.contains(ip)).ok_or_else(|| {
                        CniError::address_not_in_range(ip, "not in this range set")
                    })?;
                    assigned(ip, r)?
                }
                None => {
                    let (ip, r) = self
                        .first_free(set)
                        .ok_or_else(|| CniError::range_exhausted(i, "fake"))?;
                    assigned(ip, r)?
                }
            };
            out.push(a);
        }
        self.0
            .borrow_mut()
            .held
            .insert(req.attachment.clone(), (out.clone(), req.attrs.clone()));
        Ok(out)
    }

    fn del(&self, attachment: &Attachment) -> Result<(), CniError> {
        self.0.borrow_mut().held.remove(attachment);
        Ok(())
    }

    fn check(&self, attachment: &Attachment, expected: &[IpAddr]) -> Result<(), CniError> {
        let s = self.0.borrow();
        let Some((held, _)) = s.held.get(attachment) else {
            return Err(CniError::reservation_mismatch("attachment holds nothing"));
        };
        let mut have: Vec<IpAddr> = held.iter().map(|a| a.address.addr()).collect();
        let mut want = expected.to_vec();
        have.sort();
        want.sort();
        if have == want {
            Ok(())
        } else {
            Err(CniError::reservation_mismatch(format!(
                "holds {have:?}, expected {want:?}"
            )))
        }
    }

    fn gc(&self, network: &str, valid: &[(String, String)]) -> Result<(), CniError> {
        self.0.borrow_mut().held.retain(|a, _| {
            a.network != network
                || valid
                    .iter()
                    .any(|(c, i)| *c == a.container_id && *i == a.ifname)
        });
        Ok(())
    }

    fn status(&self, _network: &str, range_sets: &[Vec<Range>]) -> Result<(), CniError> {
        for (i, set) in range_sets.iter().enumerate() {
            if self.first_free(set).is_none() {
                return Err(CniError::status_unavailable(format!(
                    "range set {i} is exhausted"
                )));
            }
        }
        Ok(())
    }
}
