//! The seam between the CNI front end and whatever holds the addresses.
//!
//! Everything CNI-specific (environment, config, versions, result shapes, error JSON) is
//! done before a [`Backend`] is called, so a backend sees only validated, canonical
//! requests: the standalone backend (SQLite store under `dataDir`) and, later, the daemon
//! client implement the same trait. The dispatcher gets a backend from a factory given
//! the parsed config, so tests of the dispatcher drive a real parse and cannot bypass it.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::error::CniError;

/// The CNI state key: (network name, `CNI_CONTAINERID`, `CNI_IFNAME`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attachment {
    /// The network config's `name`.
    pub network: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

/// Who the attachment belongs to, from `CNI_ARGS`; recorded on the handle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAttrs {
    /// `K8S_POD_NAMESPACE`.
    pub namespace: Option<String>,
    /// `K8S_POD_NAME`.
    pub name: Option<String>,
    /// `K8S_POD_UID`.
    pub uid: Option<String>,
    /// `K8S_POD_INFRA_CONTAINER_ID`.
    pub infra_container_id: Option<String>,
}

/// One host-local style range after canonicalisation (defaults filled in exactly as
/// host-local does them).
///
/// Invariants (guaranteed by `config`): `range_start <= range_end`, both inside `subnet`
/// and of its family; neither is the subnet's network address nor, for IPv4, its
/// broadcast address; `gateway`, when set, is inside `subnet`. The gateway may lie
/// inside `[range_start, range_end]`: a backend must then skip it, as host-local does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet, network address form (no host bits).
    pub subnet: ipnet::IpNet,
    /// First allocatable address, inclusive.
    pub range_start: IpAddr,
    /// Last allocatable address, inclusive.
    pub range_end: IpAddr,
    /// The gateway reported in results; never handed out.
    pub gateway: Option<IpAddr>,
}

impl Range {
    /// Whether `ip` is in `[range_start, range_end]` (same family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        same_family(ip, self.range_start) && self.range_start <= ip && ip <= self.range_end
    }
}

/// Whether two addresses are of one family.
pub fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// An ADD, validated and canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddRequest {
    /// The state key.
    pub attachment: Attachment,
    /// One address is wanted from each range set, in order; all or nothing.
    pub range_sets: Vec<Vec<Range>>,
    /// Static requests (runtimeConfig `ips`, `args.cni.ips` or CNI_ARGS `IP=`),
    /// deduplicated. [`assign_static`] maps them onto range sets; the dispatcher has
    /// already checked that it succeeds.
    pub static_ips: Vec<IpAddr>,
    /// Pod attributes for the handle.
    pub attrs: PodAttrs,
    /// How long a released address waits before it is handed out again (unless a range
    /// has no other free address).
    pub reuse_delay: std::time::Duration,
    /// `ipam.dataDir`.
    pub data_dir: PathBuf,
}

/// One per range set, in range-set order: the address with its range's subnet prefix
/// length, and the range's gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// Address and the prefix length of the range's subnet.
    pub address: ipnet::IpNet,
    /// The range's gateway, reported in the result.
    pub gateway: Option<IpAddr>,
}

/// What holds the addresses. Every method is one atomic step as seen by other execs.
pub trait Backend {
    /// Allocates one address per range set for the attachment, atomically over all range
    /// sets: on error nothing stays allocated. A repeated ADD for an attachment that
    /// already holds addresses returns those (no second allocation, no error).
    /// Errors: 100 a range set is exhausted, 101 a static address is taken, 11 the store
    /// stayed busy, 5 I/O, 102 store corrupt.
    fn add(&self, req: &AddRequest) -> Result<Vec<Assigned>, CniError>;
    /// Releases everything the attachment holds. Idempotent: an unknown attachment is
    /// success.
    fn del(&self, attachment: &Attachment) -> Result<(), CniError>;
    /// Succeeds when the attachment holds exactly `expected` (in any order);
    /// code 104 otherwise.
    fn check(&self, attachment: &Attachment, expected: &[IpAddr]) -> Result<(), CniError>;
    /// Releases every attachment of `network` whose (containerID, ifname) is not in
    /// `valid`; keeps going on errors and reports them together (code 106).
    fn gc(&self, network: &str, valid: &[(String, String)]) -> Result<(), CniError>;
    /// Succeeds while an ADD could be served for `range_sets`; code 50 when a range set
    /// is exhausted or the store cannot be used.
    fn status(&self, network: &str, range_sets: &[Vec<Range>]) -> Result<(), CniError>;
}

/// Maps static requests onto range sets: entry `i` is the address requested from range
/// set `i`, if any. Fails (code 103) when an address lies in no range, is its range's
/// gateway, or when two addresses fall into one range set.
pub fn assign_static(
    range_sets: &[Vec<Range>],
    static_ips: &[IpAddr],
) -> Result<Vec<Option<IpAddr>>, CniError> {
    let mut out = vec![None; range_sets.len()];
    for &ip in static_ips {
        let hit = range_sets
            .iter()
            .enumerate()
            .find_map(|(i, set)| set.iter().find(|r| r.contains(ip)).map(|r| (i, r)));
        let Some((i, range)) = hit else {
            return Err(CniError::address_not_in_range(
                ip,
                "it lies in no range of the network config",
            ));
        };
        if range.gateway == Some(ip) {
            return Err(CniError::address_not_in_range(
                ip,
                "it is the range's gateway",
            ));
        }
        if let Some(prev) = out[i]
            && prev != ip
        {
            return Err(CniError::address_not_in_range(
                ip,
                format!("range set {i} already serves the requested address {prev}"),
            ));
        }
        out[i] = Some(ip);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(subnet: &str, start: &str, end: &str, gw: Option<&str>) -> Range {
        Range {
            subnet: subnet.parse().expect("subnet"),
            range_start: start.parse().expect("start"),
            range_end: end.parse().expect("end"),
            gateway: gw.map(|g| g.parse().expect("gw")),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn static_mapping() {
        let sets = vec![
            vec![range(
                "10.0.0.0/24",
                "10.0.0.1",
                "10.0.0.254",
                Some("10.0.0.1"),
            )],
            vec![range(
                "fd00:10:99::/64",
                "fd00:10:99::1",
                "fd00:10:99::ff",
                None,
            )],
        ];
        assert_eq!(assign_static(&sets, &[]), Ok(vec![None, None]));
        assert_eq!(
            assign_static(&sets, &[ip("fd00:10:99::5"), ip("10.0.0.9")]),
            Ok(vec![Some(ip("10.0.0.9")), Some(ip("fd00:10:99::5"))])
        );
        let e = assign_static(&sets, &[ip("10.0.1.9")]).expect_err("outside");
        assert_eq!(e.code, 103);
        let e = assign_static(&sets, &[ip("10.0.0.1")]).expect_err("gateway");
        assert!(e.details.contains("gateway"));
        let e = assign_static(&sets, &[ip("10.0.0.2"), ip("10.0.0.3")]).expect_err("two");
        assert!(e.details.contains("range set 0"));
        assert!(assign_static(&sets, &[ip("fd00:10:99::100")]).is_err());
    }
}
