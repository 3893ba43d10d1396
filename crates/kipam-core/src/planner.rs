//! The subnet planner: sizes and places each cluster's pod (cluster) CIDR, node mask,
//! service CIDR and LoadBalancer range, per address family, out of the supernets an
//! operator owns, clear of every network to avoid.
//!
//! Today people plan cluster CIDRs in spreadsheets and find out years later that a /16
//! caps them at 256 nodes or that the pod range collides with an office VPN. The planner
//! does the arithmetic once, in one place, and explains it: every planned range carries a
//! `reason` that shows the numbers behind its size, the headroom it leaves and the limits
//! it implies (max nodes, max pods per node). `kipamctl plan` reads a [`PlanRequest`] from
//! YAML or JSON and kipamd takes the same JSON on `POST /v1/plan`, so the types here are
//! the wire format (camelCase, unknown fields refused so a typo is not silently ignored).
//!
//! # Placement: why the buddy allocator
//! Each supernet gets a [`PrefixAllocator`] with every avoided network that touches it
//! claimed up front; planned ranges are then claims on the same allocator. Two claims can
//! never overlap, so "nothing overlaps anything" holds by construction rather than by a
//! check after the fact, and the allocator's `largest_free` is exactly the number the
//! refusal message needs. Ranges are placed largest first across all clusters of a
//! family: with aligned power-of-two blocks (each size divides the larger ones) that
//! order finds a placement whenever one exists, and small ranges never split the free
//! block a large one needs. The layout is deterministic: the same request, the same plan.
//!
//! # Sizing rules (the choices, in one place)
//! - **Headroom**: [`DEFAULT_HEADROOM_PCT`] (50%) on top of the demand at the growth
//!   horizon, for every range, overridable per request and per cluster (0..=1000%). 50%
//!   sits in the middle of the usual 25–100%: pod and service ranges are painful to
//!   change once a cluster runs, and power-of-two rounding adds more on top.
//! - **Node mask (IPv4)**: the smallest block of at least twice `maxPodsPerNode`
//!   addresses, GKE's rule for its flexible pod CIDRs (110 pods → /24, 64 → /25,
//!   8 → /28) and the reason Kubernetes pairs /24 with its default of 110 pods: a deleted
//!   pod's address need not be handed out again at once. Usable addresses in an IPv4 node
//!   CIDR are 2^(32-mask) - 2 (network and broadcast excluded).
//! - **Node mask (IPv6)**: /64, kube-controller-manager's default
//!   `--node-cidr-mask-size-ipv6`. Usable addresses in an IPv6 block are 2^(128-mask) - 1
//!   (the subnet-router anycast address is excluded).
//! - **Cluster CIDR**: enough node CIDRs for the nodes at the horizon (or the pods at the
//!   horizon divided by pods per node, whichever is more) plus headroom. IPv6 cluster
//!   CIDRs hold at least 256 node CIDRs (a /56 of /64s): the space is plentiful.
//! - **Service CIDR**: services plus headroom plus the reserved addresses, at least a /24
//!   (IPv4) or /112 (IPv6), at most 20 host bits: kube-apiserver refuses a larger
//!   `--service-cluster-ip-range` ("for 32-bit addresses, the mask must be >= 12", "for
//!   128-bit addresses, the mask must be >= 108").
//! - **LoadBalancer range**: addresses plus headroom; every address of the range is usable
//!   (they are announced one by one, not used as a subnet). IPv6 ranges are at least /112.
//!   No range is planned when a cluster asks for no LoadBalancer addresses.
//! - When a floor (IPv6 /56 cluster, /24 or /112 service, /112 LoadBalancer) does not fit
//!   but the demand does, the smaller range is planned with a warning.
//!
//! # Warnings
//! Kubernetes' node-CIDR range allocator accepts at most 16 bits between the cluster mask
//! and the node mask ([`NODE_ALLOCATOR_MAX_BITS`]); a node mask whose usable addresses are
//! fewer than the pods per node caps pods per node (a /24 caps them at 254). Both are
//! reported as [`Warning`]s, not errors: kipam's own node-CIDR leases have neither limit.
//!
//! # Refusals
//! An impossible request is refused with the smallest change that would make it fit
//! ([`DoesNotFit`]): the prefix needed, the largest free block and where it is, the largest
//! demand that fits at the requested headroom and the largest headroom that fits the
//! demand.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::buddy::{Fit, PrefixAllocator};
use crate::prefix::{Family, Prefix};

/// Headroom on top of the horizon demand when the request names none, in percent.
pub const DEFAULT_HEADROOM_PCT: u32 = 50;
/// The largest headroom accepted, in percent (11× the demand).
pub const MAX_HEADROOM_PCT: u32 = 1000;
/// Pods per node when the request names none: the kubelet's default `maxPods`.
pub const DEFAULT_MAX_PODS_PER_NODE: u32 = 110;
/// Node mask for IPv6: kube-controller-manager's default `--node-cidr-mask-size-ipv6`.
pub const DEFAULT_NODE_MASK_V6: u8 = 64;
/// Bits between cluster mask and node mask that Kubernetes' node-CIDR range allocator
/// accepts (`clusterSubnetMaxDiff` in kube-controller-manager's cidrset).
pub const NODE_ALLOCATOR_MAX_BITS: u8 = 16;
/// Host bits of the largest service CIDR kube-apiserver accepts (/12 IPv4, /108 IPv6).
pub const SERVICE_MAX_HOST_BITS: u8 = 20;

/// Node CIDRs an IPv6 cluster CIDR holds at least, as bits (a /56 of /64s).
const V6_CLUSTER_MIN_NODE_BITS: u8 = 8;
/// Host bits of the smallest IPv4 service CIDR planned (/24).
const V4_SERVICE_MIN_HOST_BITS: u8 = 8;
/// Host bits of the smallest IPv6 service CIDR and LoadBalancer range planned (/112).
const V6_RANGE_MIN_HOST_BITS: u8 = 16;

// ---------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------

/// What the planner is asked for: clusters, where to carve them from, what to avoid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanRequest {
    /// The clusters to plan, in the order their plans are returned.
    pub clusters: Vec<ClusterSpec>,
    /// The address space to carve from, any number per family. Must not overlap.
    pub supernets: Vec<IpNet>,
    /// Networks nothing planned may touch: external networks, existing pools, routes.
    #[serde(default)]
    pub avoid: Vec<AvoidNet>,
    /// Headroom on top of the horizon demand, in percent (default 50).
    #[serde(default = "default_headroom")]
    pub headroom_pct: u32,
}

impl Default for PlanRequest {
    fn default() -> Self {
        PlanRequest {
            clusters: Vec::new(),
            supernets: Vec::new(),
            avoid: Vec::new(),
            headroom_pct: DEFAULT_HEADROOM_PCT,
        }
    }
}

fn default_headroom() -> u32 {
    DEFAULT_HEADROOM_PCT
}

/// One cluster's demand. Give nodes, pods or both; "now" values count as the horizon
/// when no horizon is given, and the larger of the two is planned for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// Cluster name (unique in the request).
    pub name: String,
    /// Nodes today.
    #[serde(default)]
    pub nodes: u64,
    /// Nodes at the growth horizon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_at_horizon: Option<u64>,
    /// Pods a node may run (kubelet `maxPods`; default 110).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods_per_node: Option<u32>,
    /// Pods today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<u64>,
    /// Pods at the growth horizon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_at_horizon: Option<u64>,
    /// Services (ClusterIPs) at the horizon.
    #[serde(default)]
    pub services: u64,
    /// LoadBalancer addresses at the horizon (0: no range is planned).
    #[serde(default)]
    pub load_balancers: u64,
    /// Address families (default `ipv4`).
    #[serde(default)]
    pub families: Families,
    /// Overrides the request's headroom for this cluster, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom_pct: Option<u32>,
    /// A fixed IPv4 node mask instead of the computed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mask_v4: Option<u8>,
    /// A fixed IPv6 node mask instead of /64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mask_v6: Option<u8>,
}

/// The address families a cluster runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Families {
    /// IPv4 only.
    #[default]
    Ipv4,
    /// IPv6 only.
    Ipv6,
    /// Both; IPv4 is listed first.
    DualStack,
}

impl Families {
    /// The families, IPv4 first.
    pub fn list(self) -> &'static [Family] {
        match self {
            Families::Ipv4 => &[Family::Ipv4],
            Families::Ipv6 => &[Family::Ipv6],
            Families::DualStack => &[Family::Ipv4, Family::Ipv6],
        }
    }
}

/// A network nothing planned may touch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AvoidNet {
    /// The network.
    pub cidr: IpNet,
    /// What it is ("on-prem", "vpc", "pool pods-a"), for the operator.
    #[serde(default)]
    pub label: String,
}

// ---------------------------------------------------------------------------------------
// Plan
// ---------------------------------------------------------------------------------------

/// The planned ranges, per cluster and family, in request order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// One entry per requested cluster.
    pub clusters: Vec<ClusterPlan>,
}

/// One cluster's plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPlan {
    /// Cluster name.
    pub name: String,
    /// The headroom policy applied, in percent.
    pub headroom_policy_pct: u32,
    /// One entry per family, IPv4 first.
    pub families: Vec<FamilyPlan>,
}

/// One cluster's ranges in one family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FamilyPlan {
    /// The family.
    pub family: Family,
    /// Cluster (pod) CIDR and node mask.
    pub pods: PodPlan,
    /// Service CIDR.
    pub services: RangePlan,
    /// LoadBalancer range; absent when none was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancers: Option<RangePlan>,
    /// Limits worth knowing before using the plan.
    #[serde(default)]
    pub warnings: Vec<PlanWarning>,
}

/// A planned cluster (pod) CIDR with its node mask and the limits they imply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodPlan {
    /// The cluster CIDR (`--cluster-cidr`).
    pub cidr: IpNet,
    /// Node CIDR prefix length (`--node-cidr-mask-size-ipv4/-ipv6`).
    pub node_mask: u8,
    /// Node CIDRs the cluster CIDR holds.
    pub max_nodes: u64,
    /// Pods per node: the requested `maxPodsPerNode`, capped by the node mask.
    pub max_pods_per_node: u64,
    /// `max_nodes × max_pods_per_node`.
    pub max_pods: u64,
    /// Nodes planned for before headroom.
    pub nodes_needed: u64,
    /// Pods planned for before headroom.
    pub pods_needed: u64,
    /// Room above `nodes_needed`, in percent (power-of-two rounding included).
    pub headroom_pct: u64,
    /// How the size was chosen.
    pub reason: String,
}

/// A planned service CIDR or LoadBalancer range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangePlan {
    /// The range.
    pub cidr: IpNet,
    /// Addresses planned for before headroom.
    pub needed: u64,
    /// Usable addresses in the range (saturating).
    pub capacity: u64,
    /// Room above `needed`, in percent (saturating; 0 when nothing was needed).
    pub headroom_pct: u64,
    /// How the size was chosen.
    pub reason: String,
}

/// Which range of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RangeKind {
    /// The cluster (pod) CIDR.
    Pods,
    /// The service CIDR.
    Services,
    /// The LoadBalancer range.
    LoadBalancers,
}

impl fmt::Display for RangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RangeKind::Pods => "pod CIDR",
            RangeKind::Services => "service CIDR",
            RangeKind::LoadBalancers => "LoadBalancer range",
        })
    }
}

/// One planned range, flattened (see [`Plan::ranges`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedCidr {
    /// Cluster name.
    pub cluster: String,
    /// Family.
    pub family: Family,
    /// Which range.
    pub what: RangeKind,
    /// The range.
    pub cidr: IpNet,
}

impl Plan {
    /// Every planned range, in plan order (what `--apply` creates, what tests check).
    pub fn ranges(&self) -> Vec<PlannedCidr> {
        let mut out = Vec::new();
        for c in &self.clusters {
            for f in &c.families {
                let mut push = |what, cidr| {
                    out.push(PlannedCidr {
                        cluster: c.name.clone(),
                        family: f.family,
                        what,
                        cidr,
                    })
                };
                push(RangeKind::Pods, f.pods.cidr);
                push(RangeKind::Services, f.services.cidr);
                if let Some(lb) = &f.load_balancers {
                    push(RangeKind::LoadBalancers, lb.cidr);
                }
            }
        }
        out
    }
}

/// A limit of a planned range worth knowing, with its message for humans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanWarning {
    /// What it is, with its numbers.
    #[serde(flatten)]
    pub warning: Warning,
    /// The same, as a sentence ([`Warning`]'s `Display`).
    pub message: String,
}

impl From<Warning> for PlanWarning {
    fn from(warning: Warning) -> Self {
        PlanWarning {
            message: warning.to_string(),
            warning,
        }
    }
}

/// The limits the planner warns about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Warning {
    /// The node mask holds fewer usable addresses than the pods a node may run.
    NodeMaskCapsPods {
        /// Node mask.
        node_mask: u8,
        /// Usable addresses per node CIDR.
        usable: u64,
        /// Requested `maxPodsPerNode`.
        requested: u32,
    },
    /// The node CIDR holds fewer than twice as many addresses as the pods a node may run:
    /// addresses of deleted pods come back into use quickly.
    NodeMaskTight {
        /// Node mask.
        node_mask: u8,
        /// Addresses per node CIDR.
        addresses: u64,
        /// Requested `maxPodsPerNode`.
        requested: u32,
    },
    /// More than [`NODE_ALLOCATOR_MAX_BITS`] bits between cluster and node mask:
    /// kube-controller-manager's node-CIDR allocator refuses this cluster CIDR.
    NodeAllocatorLimit {
        /// Cluster CIDR prefix length.
        cluster_mask: u8,
        /// Node mask.
        node_mask: u8,
    },
    /// The preferred minimum size did not fit; a smaller range that still meets the
    /// demand and headroom was planned.
    SmallerThanPreferred {
        /// Which range.
        what: RangeKind,
        /// Preferred prefix length.
        preferred: u8,
        /// Planned prefix length.
        planned: u8,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::NodeMaskCapsPods {
                node_mask,
                usable,
                requested,
            } => write!(
                f,
                "a /{node_mask} per node caps pods per node at {usable}, below the {requested} \
                 asked for; use a larger node CIDR (smaller mask) to run {requested}"
            ),
            Warning::NodeMaskTight {
                node_mask,
                addresses,
                requested,
            } => write!(
                f,
                "a /{node_mask} per node holds {addresses} addresses for {requested} pods, \
                 less than twice as many: addresses of deleted pods are reused quickly"
            ),
            Warning::NodeAllocatorLimit {
                cluster_mask,
                node_mask,
            } => write!(
                f,
                "{} bits between the cluster mask /{cluster_mask} and the node mask \
                 /{node_mask}: Kubernetes' node-CIDR allocator accepts at most \
                 {NODE_ALLOCATOR_MAX_BITS}; use kipam's node-CIDR leases, a larger node CIDR, \
                 or several cluster CIDRs",
                node_mask.saturating_sub(*cluster_mask)
            ),
            Warning::SmallerThanPreferred {
                what,
                preferred,
                planned,
            } => write!(
                f,
                "the {what} is a /{planned}, smaller than the preferred /{preferred}, \
                 because no free /{preferred} was left; it still meets demand and headroom"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why a request cannot be planned. Nothing is planned when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PlanError {
    /// The request lists no cluster.
    #[error("nothing to plan: the request lists no cluster")]
    NoClusters,
    /// A cluster has an empty name.
    #[error("cluster #{index} has an empty name")]
    EmptyName {
        /// Position in the request (0-based).
        index: usize,
    },
    /// Two clusters share a name.
    #[error("cluster {name:?} is listed twice")]
    DuplicateCluster {
        /// The name.
        name: String,
    },
    /// A cluster asks for neither nodes nor pods.
    #[error("cluster {cluster:?} has no demand: give nodes or pods (now or at the horizon)")]
    NoDemand {
        /// The cluster.
        cluster: String,
    },
    /// `maxPodsPerNode` is zero.
    #[error("cluster {cluster:?}: maxPodsPerNode must be at least 1")]
    ZeroPodsPerNode {
        /// The cluster.
        cluster: String,
    },
    /// Headroom outside `0..=MAX_HEADROOM_PCT`.
    #[error("cluster {cluster:?}: headroom {percent}% is out of range (0 to {max}%)")]
    InvalidHeadroom {
        /// The cluster.
        cluster: String,
        /// The headroom asked for.
        percent: u32,
        /// The largest accepted.
        max: u32,
    },
    /// A node mask override outside what the family allows.
    #[error("cluster {cluster:?}: a {family} node mask must be /{min} to /{max}, not /{mask}")]
    InvalidNodeMask {
        /// The cluster.
        cluster: String,
        /// The family.
        family: Family,
        /// The mask asked for.
        mask: u8,
        /// Smallest accepted.
        min: u8,
        /// Largest accepted (one usable address left).
        max: u8,
    },
    /// A cluster runs a family no supernet was given for.
    #[error("cluster {cluster:?} runs {family} but no {family} supernet was given")]
    NoSupernet {
        /// The cluster.
        cluster: String,
        /// The family.
        family: Family,
    },
    /// Two supernets share addresses.
    #[error("supernets {a} and {b} overlap; list each address space once")]
    OverlappingSupernets {
        /// One supernet.
        a: IpNet,
        /// The other.
        b: IpNet,
    },
    /// The demand needs a range no address family or Kubernetes can have.
    #[error(
        "cluster {cluster:?}: the {family} {what} would need {needed_bits} host bits; \
         {limit} allows at most {max_bits}"
    )]
    TooLarge {
        /// The cluster.
        cluster: String,
        /// The family.
        family: Family,
        /// Which range.
        what: RangeKind,
        /// Host bits the demand needs.
        needed_bits: u32,
        /// Host bits allowed.
        max_bits: u8,
        /// What sets the limit.
        limit: SizeLimit,
    },
    /// The range does not fit in the free space left; says what would.
    #[error("{0}")]
    DoesNotFit(Box<DoesNotFit>),
}

/// What caps the size of a range (see [`PlanError::TooLarge`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SizeLimit {
    /// The node mask: a cluster CIDR cannot be larger than the address space, and a node
    /// CIDR not larger than the whole space either.
    AddressWidth,
    /// kube-apiserver's largest `--service-cluster-ip-range` (20 host bits).
    KubeServiceRange,
}

impl fmt::Display for SizeLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SizeLimit::AddressWidth => "the address width with this node mask",
            SizeLimit::KubeServiceRange => "kube-apiserver's --service-cluster-ip-range",
        })
    }
}

/// A range that does not fit, and the smallest changes that would make it fit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoesNotFit {
    /// The cluster.
    pub cluster: String,
    /// The family.
    pub family: Family,
    /// Which range.
    pub what: RangeKind,
    /// The prefix length demand plus headroom needs (the smallest range that would do).
    pub needed: u8,
    /// The largest free block left in the family's supernets, after exclusions and the
    /// ranges placed before this one (larger ranges are placed first); `None` when no
    /// space is left at all.
    pub largest_free: Option<IpNet>,
    /// The supernet holding `largest_free`.
    pub supernet: Option<IpNet>,
    /// The family's supernets.
    pub supernets: Vec<IpNet>,
    /// Demand that was asked for: nodes for a pod CIDR, addresses otherwise.
    pub demand: u64,
    /// The largest demand that fits `largest_free` at the requested headroom (same unit).
    pub max_demand: u64,
    /// Pods per node, to turn node counts into pods (1 for service and LB ranges).
    pub pods_per_node: u64,
    /// The headroom asked for, in percent.
    pub headroom_pct: u32,
    /// The largest headroom at which the demand fits `largest_free`, if any does.
    pub max_headroom_pct: Option<u64>,
}

impl fmt::Display for DoesNotFit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.what == RangeKind::Pods {
            "nodes"
        } else {
            "addresses"
        };
        write!(
            f,
            "cluster {:?}: the {} {} needs a /{} ({} {unit} + {}% headroom); ",
            self.cluster,
            self.family,
            self.what,
            self.needed,
            group(self.demand.into()),
            self.headroom_pct
        )?;
        let spaces = join(&self.supernets);
        match (self.largest_free, self.supernet) {
            (Some(free), Some(sup)) => write!(
                f,
                "the largest free block in {sup} after exclusions and earlier ranges is a \
                 /{} ({free})",
                free.prefix_len()
            )?,
            _ => write!(f, "no free space is left in {spaces} after exclusions")?,
        }
        let mut fixes = Vec::new();
        if self.max_demand > 0 {
            let pods = if self.what == RangeKind::Pods {
                format!(
                    " ({} pods)",
                    group(u128::from(self.max_demand) * u128::from(self.pods_per_node))
                )
            } else {
                String::new()
            };
            fixes.push(format!(
                "plan for at most {} {unit}{pods} at {}% headroom",
                group(self.max_demand.into()),
                self.headroom_pct
            ));
        }
        if let Some(h) = self.max_headroom_pct {
            fixes.push(format!("lower the headroom to {h}%"));
        }
        fixes.push(format!(
            "free a /{} (add a supernet or drop an exclusion)",
            self.needed
        ));
        write!(f, ": {}", fixes.join(", or "))
    }
}

// ---------------------------------------------------------------------------------------
// Planning
// ---------------------------------------------------------------------------------------

/// Plans every cluster of `req`: sizes each range, then places them largest first in the
/// family's supernets, clear of every avoided network and of each other.
///
/// All or nothing: either every range is placed or an error says which one does not fit
/// and what would. Pure and deterministic: the same request gives the same plan.
pub fn plan(req: &PlanRequest) -> Result<Plan, PlanError> {
    validate(req)?;
    let mut sized: Vec<Vec<FamilySizing>> = Vec::with_capacity(req.clusters.len());
    for c in &req.clusters {
        let headroom = c.headroom_pct.unwrap_or(req.headroom_pct);
        let mut per_family = Vec::new();
        for &family in c.families.list() {
            per_family.push(size_family(c, family, headroom)?);
        }
        sized.push(per_family);
    }

    // Place per family, largest first; ties keep request order.
    let mut bases: Vec<Vec<[Option<Prefix>; 3]>> =
        sized.iter().map(|fs| vec![[None; 3]; fs.len()]).collect();
    for family in [Family::Ipv4, Family::Ipv6] {
        let mut spaces = Spaces::new(req, family);
        let mut items: Vec<(u8, usize, usize, usize)> = Vec::new();
        for (ci, fs) in sized.iter().enumerate() {
            for (fi, s) in fs.iter().enumerate() {
                if s.family != family {
                    continue;
                }
                for (ki, r) in s.ranges.iter().enumerate() {
                    if let Some(r) = r {
                        items.push((r.preferred, ci, fi, ki));
                    }
                }
            }
        }
        items.sort();
        for (_, ci, fi, ki) in items {
            let s = &sized[ci][fi];
            let Some(r) = &s.ranges[ki] else { continue };
            match spaces.place(r.preferred, r.needed) {
                Some(p) => bases[ci][fi][ki] = Some(p),
                None => {
                    return Err(PlanError::DoesNotFit(Box::new(spaces.refusal(
                        &req.clusters[ci].name,
                        s,
                        r,
                    ))));
                }
            }
        }
    }

    let mut clusters = Vec::with_capacity(req.clusters.len());
    for (ci, c) in req.clusters.iter().enumerate() {
        let mut families = Vec::new();
        for (fi, s) in sized[ci].iter().enumerate() {
            // Every range was placed above, or `plan` has returned its refusal.
            let [Some(pods), Some(services), lb] = bases[ci][fi] else {
                continue;
            };
            families.push(describe(s, pods, services, lb));
        }
        clusters.push(ClusterPlan {
            name: c.name.clone(),
            headroom_policy_pct: c.headroom_pct.unwrap_or(req.headroom_pct),
            families,
        });
    }
    Ok(Plan { clusters })
}

fn validate(req: &PlanRequest) -> Result<(), PlanError> {
    if req.clusters.is_empty() {
        return Err(PlanError::NoClusters);
    }
    for (i, c) in req.clusters.iter().enumerate() {
        if c.name.trim().is_empty() {
            return Err(PlanError::EmptyName { index: i });
        }
        if req.clusters[..i].iter().any(|o| o.name == c.name) {
            return Err(PlanError::DuplicateCluster {
                name: c.name.clone(),
            });
        }
        let headroom = c.headroom_pct.unwrap_or(req.headroom_pct);
        if headroom > MAX_HEADROOM_PCT {
            return Err(PlanError::InvalidHeadroom {
                cluster: c.name.clone(),
                percent: headroom,
                max: MAX_HEADROOM_PCT,
            });
        }
        if c.max_pods_per_node == Some(0) {
            return Err(PlanError::ZeroPodsPerNode {
                cluster: c.name.clone(),
            });
        }
        let nodes = c.nodes.max(c.nodes_at_horizon.unwrap_or(0));
        let pods = c.pods.unwrap_or(0).max(c.pods_at_horizon.unwrap_or(0));
        if nodes == 0 && pods == 0 {
            return Err(PlanError::NoDemand {
                cluster: c.name.clone(),
            });
        }
        for &family in c.families.list() {
            let mask = match family {
                Family::Ipv4 => c.node_mask_v4,
                Family::Ipv6 => c.node_mask_v6,
            };
            // One usable address at least: /30 for IPv4, /127 for IPv6.
            let max = family.bits() - reserved_bits(family);
            if let Some(mask) = mask
                && !(1..=max).contains(&mask)
            {
                return Err(PlanError::InvalidNodeMask {
                    cluster: c.name.clone(),
                    family,
                    mask,
                    min: 1,
                    max,
                });
            }
            if !req.supernets.iter().any(|n| Family::of(n.addr()) == family) {
                return Err(PlanError::NoSupernet {
                    cluster: c.name.clone(),
                    family,
                });
            }
        }
    }
    for (i, a) in req.supernets.iter().enumerate() {
        let pa = Prefix::from_net(*a);
        for b in &req.supernets[..i] {
            let pb = Prefix::from_net(*b);
            if intersects(pa, pb) {
                return Err(PlanError::OverlappingSupernets { a: *b, b: *a });
            }
        }
    }
    Ok(())
}

/// Addresses of a subnet never handed to a pod or service: network and broadcast for
/// IPv4, the subnet-router anycast address for IPv6.
fn reserved(family: Family) -> u128 {
    match family {
        Family::Ipv4 => 2,
        Family::Ipv6 => 1,
    }
}

/// Host bits a subnet needs for one usable address (2 for IPv4, 1 for IPv6).
fn reserved_bits(family: Family) -> u8 {
    match family {
        Family::Ipv4 => 2,
        Family::Ipv6 => 1,
    }
}

/// 2^bits, saturating at `u128::MAX`.
fn pow2(bits: u32) -> u128 {
    1u128.checked_shl(bits).unwrap_or(u128::MAX)
}

/// The fewest bits `b` with 2^b ≥ `count`.
fn bits_for(count: u128) -> u32 {
    if count <= 1 {
        0
    } else {
        128 - (count - 1).leading_zeros()
    }
}

/// `count` plus `pct` percent, rounded up.
fn with_headroom(count: u64, pct: u32) -> u128 {
    (u128::from(count) * (100 + u128::from(pct))).div_ceil(100)
}

/// Room of `capacity` above `needed`, in percent, saturating; 0 when nothing is needed.
fn headroom_of(capacity: u128, needed: u64) -> u64 {
    if needed == 0 {
        return 0;
    }
    let pct = capacity.saturating_mul(100) / u128::from(needed);
    sat64(pct.saturating_sub(100))
}

/// The largest demand whose value plus `pct` percent is at most `capacity`.
fn max_demand_for(capacity: u128, pct: u32) -> u64 {
    sat64(capacity.saturating_mul(100) / (100 + u128::from(pct)))
}

fn sat64(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

fn intersects(a: Prefix, b: Prefix) -> bool {
    a.covers(&b) || b.covers(&a)
}

/// One family of one cluster, sized but not placed.
struct FamilySizing {
    family: Family,
    headroom: u32,
    pods: PodSizing,
    services: RangeSizing,
    load_balancers: Option<RangeSizing>,
    /// Pods, services, LoadBalancers as placement requests.
    ranges: [Option<Want>; 3],
}

/// A range to place: the preferred length and the longest that still meets demand.
#[derive(Clone, Copy)]
struct Want {
    what: RangeKind,
    preferred: u8,
    needed: u8,
    /// Demand in the unit of `what` (nodes for pods).
    demand: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeMaskWhy {
    Requested,
    TwicePods,
    KubeDefaultV6,
}

struct PodSizing {
    node_mask: u8,
    why: NodeMaskWhy,
    requested_ppn: u32,
    usable_per_node: u128,
    per_node: u64,
    nodes_h: u64,
    pods_h: Option<u64>,
    nodes_for_pods: u64,
    demand_nodes: u64,
    target_nodes: u128,
}

struct RangeSizing {
    demand: u64,
    target: u128,
    /// Host bits demand plus headroom plus reserved addresses need.
    bits: u32,
    /// Host bits after the floor.
    preferred_bits: u32,
    floor_bits: u8,
    reserved: u128,
}

fn size_family(c: &ClusterSpec, family: Family, headroom: u32) -> Result<FamilySizing, PlanError> {
    let too_large = |what, needed_bits, max_bits, limit| PlanError::TooLarge {
        cluster: c.name.clone(),
        family,
        what,
        needed_bits,
        max_bits,
        limit,
    };
    let width = family.bits();
    let res = reserved(family);

    // Node mask and pods per node.
    let requested_ppn = c.max_pods_per_node.unwrap_or(DEFAULT_MAX_PODS_PER_NODE);
    let override_mask = match family {
        Family::Ipv4 => c.node_mask_v4,
        Family::Ipv6 => c.node_mask_v6,
    };
    let (node_mask, why) = match (override_mask, family) {
        (Some(m), _) => (m, NodeMaskWhy::Requested),
        (None, Family::Ipv6) => (DEFAULT_NODE_MASK_V6, NodeMaskWhy::KubeDefaultV6),
        (None, Family::Ipv4) => {
            let ppn = u128::from(requested_ppn);
            let host = bits_for(2 * ppn).max(bits_for(ppn + res));
            let host_u8 = u8::try_from(host).unwrap_or(u8::MAX);
            if host_u8 >= width {
                return Err(too_large(
                    RangeKind::Pods,
                    host,
                    width - 1,
                    SizeLimit::AddressWidth,
                ));
            }
            (width - host_u8, NodeMaskWhy::TwicePods)
        }
    };
    let usable_per_node = pow2(u32::from(width - node_mask)).saturating_sub(res);
    let per_node = sat64(usable_per_node.min(u128::from(requested_ppn))).max(1);

    // Nodes to plan for.
    let nodes_h = c.nodes.max(c.nodes_at_horizon.unwrap_or(0));
    let pods_h = match (c.pods, c.pods_at_horizon) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0))),
    };
    let nodes_for_pods = pods_h.map_or(0, |p| p.div_ceil(per_node));
    let demand_nodes = nodes_h.max(nodes_for_pods).max(1);
    let target_nodes = with_headroom(demand_nodes, headroom);
    let node_bits = bits_for(target_nodes);
    if node_bits > u32::from(node_mask) {
        return Err(too_large(
            RangeKind::Pods,
            node_bits + u32::from(width - node_mask),
            width,
            SizeLimit::AddressWidth,
        ));
    }
    let floor = match family {
        Family::Ipv4 => 0,
        Family::Ipv6 => u32::from(V6_CLUSTER_MIN_NODE_BITS),
    };
    let preferred_bits = node_bits.max(floor).min(u32::from(node_mask));
    let pods = PodSizing {
        node_mask,
        why,
        requested_ppn,
        usable_per_node,
        per_node,
        nodes_h,
        pods_h,
        nodes_for_pods,
        demand_nodes,
        target_nodes,
    };
    let pods_want = Want {
        what: RangeKind::Pods,
        preferred: node_mask - bits_u8(preferred_bits),
        needed: node_mask - bits_u8(node_bits),
        demand: demand_nodes,
    };

    // Services.
    let svc_floor = match family {
        Family::Ipv4 => V4_SERVICE_MIN_HOST_BITS,
        Family::Ipv6 => V6_RANGE_MIN_HOST_BITS,
    };
    let services = size_range(c.services, headroom, res, svc_floor);
    if services.bits > u32::from(SERVICE_MAX_HOST_BITS) {
        return Err(too_large(
            RangeKind::Services,
            services.bits,
            SERVICE_MAX_HOST_BITS,
            SizeLimit::KubeServiceRange,
        ));
    }
    let svc_want = services.want(RangeKind::Services, width, SERVICE_MAX_HOST_BITS);

    // LoadBalancer addresses.
    let lb_floor = match family {
        Family::Ipv4 => 0,
        Family::Ipv6 => V6_RANGE_MIN_HOST_BITS,
    };
    let load_balancers =
        (c.load_balancers > 0).then(|| size_range(c.load_balancers, headroom, 0, lb_floor));
    let lb_want = match &load_balancers {
        Some(lb) if lb.bits > u32::from(width) => {
            return Err(too_large(
                RangeKind::LoadBalancers,
                lb.bits,
                width,
                SizeLimit::AddressWidth,
            ));
        }
        Some(lb) => Some(lb.want(RangeKind::LoadBalancers, width, width)),
        None => None,
    };

    Ok(FamilySizing {
        family,
        headroom,
        pods,
        services,
        load_balancers,
        ranges: [Some(pods_want), Some(svc_want), lb_want],
    })
}

/// Bits known to be ≤ 128 as a `u8`.
fn bits_u8(bits: u32) -> u8 {
    u8::try_from(bits).unwrap_or(u8::MAX)
}

fn size_range(demand: u64, headroom: u32, reserved: u128, floor_bits: u8) -> RangeSizing {
    let target = with_headroom(demand, headroom);
    let bits = bits_for(target.saturating_add(reserved));
    RangeSizing {
        demand,
        target,
        bits,
        preferred_bits: bits.max(u32::from(floor_bits)),
        floor_bits,
        reserved,
    }
}

impl RangeSizing {
    /// As a placement request; callers have checked `bits ≤ max_bits ≤ width`.
    fn want(&self, what: RangeKind, width: u8, max_bits: u8) -> Want {
        let preferred = self.preferred_bits.min(u32::from(max_bits));
        Want {
            what,
            preferred: width - bits_u8(preferred),
            needed: width - bits_u8(self.bits),
            demand: self.demand,
        }
    }
}

/// The supernets of one family, each an allocator with the avoided networks claimed.
struct Spaces {
    family: Family,
    roots: Vec<IpNet>,
    spaces: Vec<(PrefixAllocator, Vec<Prefix>)>,
}

impl Spaces {
    fn new(req: &PlanRequest, family: Family) -> Spaces {
        let roots: Vec<IpNet> = req
            .supernets
            .iter()
            .filter(|n| Family::of(n.addr()) == family)
            .map(|n| n.trunc())
            .collect();
        let mut avoid: Vec<Prefix> = req
            .avoid
            .iter()
            .filter(|a| Family::of(a.cidr.addr()) == family)
            .map(|a| Prefix::from_net(a.cidr))
            .collect();
        // Largest first: a network inside one already claimed needs no claim of its own.
        avoid.sort_by_key(|p| (p.len, p.base));
        let spaces = roots
            .iter()
            .map(|&net| {
                let root = Prefix::from_net(net);
                let mut alloc = PrefixAllocator::new(root);
                let mut mine = Vec::new();
                for &a in avoid.iter().filter(|&&a| intersects(a, root)) {
                    let claim = if a.covers(&root) { root } else { a };
                    // Err only when `claim` lies inside an earlier claim: nothing to do.
                    let _ = alloc.claim(claim);
                    mine.push(claim);
                }
                (alloc, mine)
            })
            .collect();
        Spaces {
            family,
            roots,
            spaces,
        }
    }

    /// Places a range of length `preferred`, or failing that any length up to `needed`,
    /// in the first supernet with room.
    fn place(&mut self, preferred: u8, needed: u8) -> Option<Prefix> {
        for len in preferred..=needed {
            for (alloc, avoid) in &mut self.spaces {
                // The avoided networks are claimed, so free space never touches them;
                // the fit check keeps that true even if a claim was refused.
                let fit = |c: Prefix| {
                    if avoid.iter().any(|a| a.covers(&c)) {
                        Fit::Nothing
                    } else if avoid.iter().any(|a| c.covers(a)) {
                        Fit::Partly
                    } else {
                        Fit::Whole
                    }
                };
                if let Some(p) = alloc.allocate(len, &fit) {
                    return Some(p);
                }
            }
        }
        None
    }

    /// The refusal for `want` of `s`, with the largest free block as it stands now.
    fn refusal(&self, cluster: &str, s: &FamilySizing, want: &Want) -> DoesNotFit {
        let largest = self
            .spaces
            .iter()
            .zip(&self.roots)
            .filter_map(|((alloc, _), root)| alloc.largest_free().map(|p| (p, *root)))
            .min_by_key(|(p, _)| p.len);
        let width = u32::from(self.family.bits());
        let capacity = |len: u8| -> u128 {
            let host = width - u32::from(len);
            match want.what {
                RangeKind::Pods => {
                    let node_mask = s.pods.node_mask;
                    if len > node_mask {
                        0
                    } else {
                        pow2(u32::from(node_mask - len))
                    }
                }
                RangeKind::Services => pow2(host.min(u32::from(SERVICE_MAX_HOST_BITS)))
                    .saturating_sub(s.services.reserved),
                RangeKind::LoadBalancers => pow2(host),
            }
        };
        let cap = largest.map_or(0, |(p, _)| capacity(p.len));
        let max_headroom_pct = (want.demand > 0 && cap >= u128::from(want.demand))
            .then(|| headroom_of(cap, want.demand));
        DoesNotFit {
            cluster: cluster.to_string(),
            family: self.family,
            what: want.what,
            needed: want.needed,
            largest_free: largest.map(|(p, _)| p.to_net()),
            supernet: largest.map(|(_, root)| root),
            supernets: self.roots.clone(),
            demand: want.demand,
            max_demand: max_demand_for(cap, s.headroom),
            pods_per_node: if want.what == RangeKind::Pods {
                s.pods.per_node
            } else {
                1
            },
            headroom_pct: s.headroom,
            max_headroom_pct,
        }
    }
}

/// The plan of one family, with reasons and warnings, from its sizing and placement.
fn describe(s: &FamilySizing, pod_prefix: Prefix, svc: Prefix, lb: Option<Prefix>) -> FamilyPlan {
    let mut warnings: Vec<PlanWarning> = Vec::new();
    let placed = [Some(pod_prefix), Some(svc), lb];
    for (want, planned) in s.ranges.iter().zip(placed) {
        if let (Some(w), Some(p)) = (want, planned)
            && p.len != w.preferred
        {
            warnings.push(
                Warning::SmallerThanPreferred {
                    what: w.what,
                    preferred: w.preferred,
                    planned: p.len,
                }
                .into(),
            );
        }
    }

    // Pods.
    let p = &s.pods;
    let node_bits = u32::from(p.node_mask.saturating_sub(pod_prefix.len));
    let max_nodes = pow2(node_bits);
    let usable = sat64(p.usable_per_node);
    if p.usable_per_node < u128::from(p.requested_ppn) {
        warnings.push(
            Warning::NodeMaskCapsPods {
                node_mask: p.node_mask,
                usable,
                requested: p.requested_ppn,
            }
            .into(),
        );
    } else if p.usable_per_node + reserved(s.family) < 2 * u128::from(p.requested_ppn) {
        warnings.push(
            Warning::NodeMaskTight {
                node_mask: p.node_mask,
                addresses: sat64(p.usable_per_node + reserved(s.family)),
                requested: p.requested_ppn,
            }
            .into(),
        );
    }
    if node_bits > u32::from(NODE_ALLOCATOR_MAX_BITS) {
        warnings.push(
            Warning::NodeAllocatorLimit {
                cluster_mask: pod_prefix.len,
                node_mask: p.node_mask,
            }
            .into(),
        );
    }
    let max_pods = max_nodes.saturating_mul(u128::from(p.per_node));
    let pods = PodPlan {
        cidr: pod_prefix.to_net(),
        node_mask: p.node_mask,
        max_nodes: sat64(max_nodes),
        max_pods_per_node: p.per_node,
        max_pods: sat64(max_pods),
        nodes_needed: p.demand_nodes,
        pods_needed: p
            .pods_h
            .unwrap_or_else(|| p.demand_nodes.saturating_mul(p.per_node)),
        headroom_pct: headroom_of(max_nodes, p.demand_nodes),
        reason: pod_reason(s, pod_prefix.len, max_nodes, max_pods),
    };

    let services = range_plan(s, &s.services, svc, RangeKind::Services);
    let load_balancers = s
        .load_balancers
        .as_ref()
        .zip(lb)
        .map(|(r, p)| range_plan(s, r, p, RangeKind::LoadBalancers));
    FamilyPlan {
        family: s.family,
        pods,
        services,
        load_balancers,
        warnings,
    }
}

fn pod_reason(s: &FamilySizing, len: u8, max_nodes: u128, max_pods: u128) -> String {
    let p = &s.pods;
    let ppn = group(p.per_node.into());
    let demand = match p.pods_h {
        Some(pods) if p.nodes_for_pods >= p.nodes_h => {
            let more = if p.nodes_h > 0 {
                format!(", more than the {} nodes given", group(p.nodes_h.into()))
            } else {
                String::new()
            };
            format!(
                "{} pods at {ppn} per node need {} nodes{more}",
                group(pods.into()),
                group(p.nodes_for_pods.into())
            )
        }
        Some(pods) => format!(
            "{} nodes ({} pods at {ppn} per node need only {})",
            group(p.nodes_h.into()),
            group(pods.into()),
            group(p.nodes_for_pods.into())
        ),
        None => format!("{} nodes", group(p.demand_nodes.into())),
    };
    let mask_why = match p.why {
        NodeMaskWhy::Requested => format!("/{} per node as requested", p.node_mask),
        NodeMaskWhy::TwicePods => format!(
            "/{} per node: the smallest block of twice the {} pods per node",
            p.node_mask, p.requested_ppn
        ),
        NodeMaskWhy::KubeDefaultV6 => {
            format!("/{} per node: Kubernetes' IPv6 default", p.node_mask)
        }
    };
    let floor = if max_nodes > pow2(bits_for(p.target_nodes)) {
        " (IPv6 cluster CIDRs hold at least 256 node CIDRs)"
    } else {
        ""
    };
    format!(
        "{demand}; + {}% headroom → {} nodes; {mask_why} → /{len}{floor}: {} node CIDRs, \
         {} pods at {ppn} per node",
        s.headroom,
        group(p.target_nodes),
        group(max_nodes),
        group(max_pods)
    )
}

fn range_plan(s: &FamilySizing, r: &RangeSizing, p: Prefix, what: RangeKind) -> RangePlan {
    let host = u32::from(s.family.bits() - p.len);
    let capacity = pow2(host).saturating_sub(r.reserved);
    let noun = match what {
        RangeKind::Services => "services",
        _ => "LoadBalancer addresses",
    };
    let reserved = if r.reserved > 0 {
        format!(" + {} reserved", r.reserved)
    } else {
        String::new()
    };
    let floor = if r.preferred_bits > r.bits && host > r.bits {
        format!(
            ", raised to the smallest planned {} (/{})",
            what,
            s.family.bits() - r.floor_bits
        )
    } else {
        String::new()
    };
    RangePlan {
        cidr: p.to_net(),
        needed: r.demand,
        capacity: sat64(capacity),
        headroom_pct: headroom_of(capacity, r.demand),
        reason: format!(
            "{} {noun} + {}% headroom → {}{reserved} addresses → /{}{floor}: {} usable",
            group(r.demand.into()),
            s.headroom,
            group(r.target),
            s.family.bits() - bits_u8(r.bits),
            group(capacity)
        ),
    }
}

/// A number with thousands separators: 28160 → "28,160".
fn group(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn join(nets: &[IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_helpers() {
        assert_eq!(bits_for(0), 0);
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(222), 8);
        assert_eq!(bits_for(256), 8);
        assert_eq!(bits_for(257), 9);
        assert_eq!(bits_for(u128::MAX), 128);
        assert_eq!(pow2(128), u128::MAX);
        assert_eq!(with_headroom(10_000, 30), 13_000);
        assert_eq!(with_headroom(91, 50), 137);
        assert_eq!(headroom_of(256, 100), 156);
        assert_eq!(max_demand_for(256, 50), 170);
        assert_eq!(group(28_160), "28,160");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000_000), "1,000,000");
    }
}
