//! OpenAPI schemas of the kipam-core types that travel on the wire unchanged.
//!
//! kipam-core is pure logic and knows nothing of OpenAPI, so it derives no `ToSchema`.
//! The structs here mirror its serde shapes field for field, exist only to be described
//! in the OpenAPI document, and are never constructed; the wire types point at them with
//! `#[schema(value_type = ...)]`. A unit test serializes the real types and checks that
//! every key they write is a property here, so a change in kipam-core that is not
//! mirrored fails the build's tests instead of silently drifting.

use std::collections::BTreeMap;

use utoipa::ToSchema;

/// An address family.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

/// What a pool's addresses are for.
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum Purpose {
    /// Pod addresses.
    Pod,
    /// Service cluster IPs.
    Service,
    /// LoadBalancer addresses.
    LoadBalancer,
    /// Node pod-CIDRs (prefix leases).
    NodeCidr,
    /// Anything else (the default).
    Generic,
}

/// An inclusive range of addresses of one family.
#[derive(ToSchema)]
pub struct AddrRange {
    /// First address.
    #[schema(example = "10.0.0.10")]
    pub first: String,
    /// Last address (inclusive).
    #[schema(example = "10.0.0.20")]
    pub last: String,
}

/// A pool's configuration: the body of `POST /v1/pools`. Unknown fields are refused.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct PoolConfig {
    /// Unique name: 1 to 253 printable ASCII characters without spaces.
    #[schema(example = "pods-v4")]
    pub name: String,
    /// The CIDR (host bits must be zero).
    #[schema(example = "10.244.0.0/16")]
    pub cidr: String,
    /// What the addresses are for (default `generic`).
    #[schema(nullable = false)]
    pub purpose: Option<Purpose>,
    /// Address space; overlaps are refused within a scope (default `default`).
    #[schema(nullable = false)]
    pub scope: Option<String>,
    /// Block size as a prefix length (default /26 for IPv4, /122 for IPv6).
    #[schema(nullable = false, minimum = 0, maximum = 128)]
    pub block_prefix_length: Option<u8>,
    /// Addresses never handed out.
    #[schema(nullable = false)]
    pub exclusions: Option<Vec<AddrRange>>,
    /// The gateway, never handed out.
    #[schema(nullable = false)]
    pub gateway: Option<String>,
    /// Seconds a released address waits before dynamic reuse (default 30; 0: none).
    #[schema(nullable = false, minimum = 0)]
    pub reuse_delay_seconds: Option<u64>,
    /// Most blocks one node may claim (then it borrows, unless strict).
    #[schema(nullable = false, minimum = 0)]
    pub max_blocks_per_node: Option<u32>,
    /// Never hand out addresses from another node's blocks (default false).
    #[schema(nullable = false)]
    pub strict_affinity: Option<bool>,
    /// Seconds an empty block stays with its node (default 300).
    #[schema(nullable = false, minimum = 0)]
    pub empty_block_grace_seconds: Option<u64>,
}

/// A JSON merge patch (RFC 7386) of a pool's configuration: `PATCH /v1/pools/{name}`.
/// Fields left out keep their value; `name` and `cidr`, if given, must not change.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct PoolPatch {
    /// Must equal the pool's name if given.
    pub name: Option<String>,
    /// Must equal the pool's CIDR if given.
    pub cidr: Option<String>,
    /// What the addresses are for.
    pub purpose: Option<Purpose>,
    /// Address space.
    pub scope: Option<String>,
    /// Block size as a prefix length.
    #[schema(minimum = 0, maximum = 128)]
    pub block_prefix_length: Option<u8>,
    /// Addresses never handed out.
    pub exclusions: Option<Vec<AddrRange>>,
    /// The gateway.
    pub gateway: Option<String>,
    /// Seconds a released address waits before dynamic reuse.
    #[schema(minimum = 0)]
    pub reuse_delay_seconds: Option<u64>,
    /// Most blocks one node may claim.
    #[schema(minimum = 0)]
    pub max_blocks_per_node: Option<u32>,
    /// Never hand out addresses from another node's blocks.
    pub strict_affinity: Option<bool>,
    /// Seconds an empty block stays with its node.
    #[schema(minimum = 0)]
    pub empty_block_grace_seconds: Option<u64>,
}

/// A network used outside kipam (VPC, on-prem, VPN): never allocated, checked for overlap.
#[derive(ToSchema)]
pub struct ScopeNetwork {
    /// Unique name: 1 to 253 printable ASCII characters without spaces.
    #[schema(example = "office-vpn")]
    pub name: String,
    /// The network (host bits must be zero).
    #[schema(example = "192.168.0.0/16")]
    pub cidr: String,
    /// Scope (default `default`).
    #[schema(nullable = false)]
    pub scope: Option<String>,
    /// Free text (owner, site, provider).
    #[schema(nullable = false)]
    pub description: Option<String>,
}

/// What an exhaustion forecast concluded.
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum ForecastStatus {
    /// Usage grows beyond churn; `eta` says when the pool runs out.
    Growing,
    /// No trend beyond churn.
    NotGrowing,
    /// Usage falls beyond churn.
    Declining,
    /// The latest sample is at or over the size.
    Full,
    /// Too few samples, or too short a span, in the window.
    NotEnoughData,
}

/// How far to trust a forecast.
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum Confidence {
    /// Few samples or a poor fit.
    Low,
    /// A usable estimate.
    Medium,
    /// Many samples and a good fit.
    High,
}

/// The address families a planned cluster runs.
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum Families {
    /// IPv4 only (the default).
    Ipv4,
    /// IPv6 only.
    Ipv6,
    /// Both; IPv4 is listed first.
    DualStack,
}

/// A network nothing planned may touch.
#[derive(ToSchema)]
pub struct AvoidNet {
    /// The network.
    #[schema(example = "10.0.0.0/16")]
    pub cidr: String,
    /// What it is ("on-prem", "vpc"), for the operator.
    #[schema(nullable = false)]
    pub label: Option<String>,
}

/// One cluster's demand: nodes, pods or both, now and at the growth horizon.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Cluster name (unique in the request).
    #[schema(example = "prod")]
    pub name: String,
    /// Nodes today.
    #[schema(nullable = false, minimum = 0)]
    pub nodes: Option<u64>,
    /// Nodes at the growth horizon.
    #[schema(nullable = false, minimum = 0)]
    pub nodes_at_horizon: Option<u64>,
    /// Pods a node may run (kubelet `maxPods`; default 110).
    #[schema(nullable = false, minimum = 0)]
    pub max_pods_per_node: Option<u32>,
    /// Pods today.
    #[schema(nullable = false, minimum = 0)]
    pub pods: Option<u64>,
    /// Pods at the growth horizon.
    #[schema(nullable = false, minimum = 0)]
    pub pods_at_horizon: Option<u64>,
    /// Services (ClusterIPs) at the horizon.
    #[schema(nullable = false, minimum = 0)]
    pub services: Option<u64>,
    /// LoadBalancer addresses at the horizon (0: no range is planned).
    #[schema(nullable = false, minimum = 0)]
    pub load_balancers: Option<u64>,
    /// Address families (default `ipv4`).
    #[schema(nullable = false)]
    pub families: Option<Families>,
    /// Overrides the request's headroom for this cluster, in percent.
    #[schema(nullable = false, minimum = 0)]
    pub headroom_pct: Option<u32>,
    /// A fixed IPv4 node mask instead of the computed one.
    #[schema(nullable = false, minimum = 0, maximum = 32)]
    pub node_mask_v4: Option<u8>,
    /// A fixed IPv6 node mask instead of /64.
    #[schema(nullable = false, minimum = 0, maximum = 128)]
    pub node_mask_v6: Option<u8>,
}

/// The body of `POST /v1/plan`: clusters, where to carve them from, what to avoid.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct PlanRequest {
    /// The clusters to plan, in the order their plans are returned.
    pub clusters: Vec<ClusterSpec>,
    /// The address space to carve from, any number per family. Must not overlap.
    #[schema(example = json!(["10.0.0.0/8", "fd00::/48"]))]
    pub supernets: Vec<String>,
    /// Networks nothing planned may touch: external networks, existing pools, routes.
    #[schema(nullable = false)]
    pub avoid: Option<Vec<AvoidNet>>,
    /// Headroom on top of the horizon demand, in percent (default 50).
    #[schema(nullable = false, minimum = 0)]
    pub headroom_pct: Option<u32>,
}

/// Which range of a planned cluster.
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum RangeKind {
    /// The cluster (pod) CIDR.
    Pods,
    /// The service CIDR.
    Services,
    /// The LoadBalancer range.
    LoadBalancers,
}

/// Which limit a plan warning is about.
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum WarningKind {
    /// The node mask holds fewer usable addresses than the pods a node may run.
    NodeMaskCapsPods,
    /// The node CIDR holds fewer than twice as many addresses as pods per node.
    NodeMaskTight,
    /// More than 16 bits between cluster and node mask (kube-controller-manager refuses).
    NodeAllocatorLimit,
    /// A smaller range than preferred was planned (it still meets demand and headroom).
    SmallerThanPreferred,
}

/// A limit of a planned range worth knowing: `kind`, its numbers, and a sentence.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct PlanWarning {
    /// What it is about.
    pub kind: WarningKind,
    /// The same, as a sentence.
    pub message: String,
    /// Node mask (all kinds but `smaller-than-preferred`).
    #[schema(nullable = false)]
    pub node_mask: Option<u8>,
    /// Usable addresses per node CIDR (`node-mask-caps-pods`).
    #[schema(nullable = false)]
    pub usable: Option<u64>,
    /// Requested `maxPodsPerNode` (`node-mask-caps-pods`, `node-mask-tight`).
    #[schema(nullable = false)]
    pub requested: Option<u32>,
    /// Addresses per node CIDR (`node-mask-tight`).
    #[schema(nullable = false)]
    pub addresses: Option<u64>,
    /// Cluster CIDR prefix length (`node-allocator-limit`).
    #[schema(nullable = false)]
    pub cluster_mask: Option<u8>,
    /// Which range (`smaller-than-preferred`).
    #[schema(nullable = false)]
    pub what: Option<RangeKind>,
    /// Preferred prefix length (`smaller-than-preferred`).
    #[schema(nullable = false)]
    pub preferred: Option<u8>,
    /// Planned prefix length (`smaller-than-preferred`).
    #[schema(nullable = false)]
    pub planned: Option<u8>,
}

/// A planned cluster (pod) CIDR with its node mask and the limits they imply.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct PodPlan {
    /// The cluster CIDR (`--cluster-cidr`).
    #[schema(example = "10.1.0.0/16")]
    pub cidr: String,
    /// Node CIDR prefix length (`--node-cidr-mask-size-ipv4/-ipv6`).
    pub node_mask: u8,
    /// Node CIDRs the cluster CIDR holds.
    pub max_nodes: u64,
    /// Pods per node: the requested `maxPodsPerNode`, capped by the node mask.
    pub max_pods_per_node: u64,
    /// `maxNodes × maxPodsPerNode`.
    pub max_pods: u64,
    /// Nodes planned for before headroom.
    pub nodes_needed: u64,
    /// Pods planned for before headroom.
    pub pods_needed: u64,
    /// Room above `nodesNeeded`, in percent.
    pub headroom_pct: u64,
    /// How the size was chosen.
    pub reason: String,
}

/// A planned service CIDR or LoadBalancer range.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct RangePlan {
    /// The range.
    #[schema(example = "10.2.0.0/20")]
    pub cidr: String,
    /// Addresses planned for before headroom.
    pub needed: u64,
    /// Usable addresses in the range.
    pub capacity: u64,
    /// Room above `needed`, in percent.
    pub headroom_pct: u64,
    /// How the size was chosen.
    pub reason: String,
}

/// One cluster's ranges in one family.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct FamilyPlan {
    /// The family.
    pub family: Family,
    /// Cluster (pod) CIDR and node mask.
    pub pods: PodPlan,
    /// Service CIDR.
    pub services: RangePlan,
    /// LoadBalancer range; absent when none was asked for.
    #[schema(nullable = false)]
    pub load_balancers: Option<RangePlan>,
    /// Limits worth knowing before using the plan.
    pub warnings: Vec<PlanWarning>,
}

/// One cluster's plan.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ClusterPlan {
    /// Cluster name.
    pub name: String,
    /// The headroom policy applied, in percent.
    pub headroom_policy_pct: u32,
    /// One entry per family, IPv4 first.
    pub families: Vec<FamilyPlan>,
}

/// The answer of `POST /v1/plan`: per cluster and family, overlap-free ranges.
#[derive(ToSchema)]
pub struct Plan {
    /// One entry per requested cluster, in request order.
    pub clusters: Vec<ClusterPlan>,
}

/// Free-form string attributes.
#[derive(ToSchema)]
pub struct Attrs(pub BTreeMap<String, String>);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;

    use utoipa::PartialSchema;
    use utoipa::openapi::{RefOr, Schema};

    fn props<T: PartialSchema>() -> BTreeSet<String> {
        match T::schema() {
            RefOr::T(Schema::Object(o)) => o.properties.keys().cloned().collect(),
            other => panic!(
                "not an object schema: {}",
                serde_json::to_string(&other).unwrap()
            ),
        }
    }

    fn keys(v: &serde_json::Value) -> BTreeSet<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn pool_config_mirror_matches_kipam_core() {
        let mut c = kipam_core::PoolConfig::new("p", "10.0.0.0/24".parse().unwrap());
        c.block_prefix_length = Some(28);
        c.gateway = Some("10.0.0.1".parse().unwrap());
        c.max_blocks_per_node = Some(2);
        c.exclusions = vec![
            kipam_core::AddrRange::new("10.0.0.5".parse().unwrap(), "10.0.0.6".parse().unwrap())
                .unwrap(),
        ];
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(keys(&json), props::<super::PoolConfig>());
        assert_eq!(keys(&json), props::<super::PoolPatch>());
        assert_eq!(keys(&json["exclusions"][0]), props::<super::AddrRange>());
    }

    #[test]
    fn scope_network_mirror_matches_kipam_core() {
        let n = kipam_core::ScopeNetwork {
            name: "n".into(),
            cidr: "10.0.0.0/8".parse().unwrap(),
            scope: "s".into(),
            description: "d".into(),
        };
        let json = serde_json::to_value(&n).unwrap();
        assert_eq!(keys(&json), props::<super::ScopeNetwork>());
    }

    #[test]
    fn enum_mirrors_match_kipam_core() {
        use kipam_core::{Family, Purpose};
        let names = |s: RefOr<Schema>| serde_json::to_value(s).unwrap()["enum"].clone();
        let fam = serde_json::json!([Family::Ipv4, Family::Ipv6]);
        assert_eq!(names(<super::Family as PartialSchema>::schema()), fam);
        let purposes = serde_json::json!([
            Purpose::Pod,
            Purpose::Service,
            Purpose::LoadBalancer,
            Purpose::NodeCidr,
            Purpose::Generic
        ]);
        assert_eq!(names(<super::Purpose as PartialSchema>::schema()), purposes);
    }

    fn all_keys(v: &serde_json::Value, out: &mut BTreeSet<String>) {
        if let Some(o) = v.as_object() {
            out.extend(o.keys().cloned());
        }
    }

    #[test]
    fn plan_request_mirror_matches_kipam_core() {
        use kipam_core::planner::{AvoidNet, ClusterSpec, Families, PlanRequest};
        let req = PlanRequest {
            clusters: vec![ClusterSpec {
                name: "c".into(),
                nodes: 1,
                nodes_at_horizon: Some(2),
                max_pods_per_node: Some(3),
                pods: Some(4),
                pods_at_horizon: Some(5),
                services: 6,
                load_balancers: 7,
                families: Families::DualStack,
                headroom_pct: Some(8),
                node_mask_v4: Some(24),
                node_mask_v6: Some(64),
            }],
            supernets: vec!["10.0.0.0/8".parse().unwrap()],
            avoid: vec![AvoidNet {
                cidr: "10.0.0.0/16".parse().unwrap(),
                label: "x".into(),
            }],
            headroom_pct: 50,
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(keys(&json), props::<super::PlanRequest>());
        assert_eq!(keys(&json["clusters"][0]), props::<super::ClusterSpec>());
        assert_eq!(keys(&json["avoid"][0]), props::<super::AvoidNet>());
        let names = |s: RefOr<Schema>| serde_json::to_value(s).unwrap()["enum"].clone();
        assert_eq!(
            names(<super::Families as PartialSchema>::schema()),
            serde_json::json!([Families::Ipv4, Families::Ipv6, Families::DualStack])
        );
    }

    #[test]
    fn plan_mirror_matches_kipam_core() {
        use kipam_core::planner::{
            ClusterSpec, Families, PlanRequest, PlanWarning, RangeKind, Warning, plan,
        };
        let req = PlanRequest {
            clusters: vec![ClusterSpec {
                name: "c".into(),
                nodes: 10,
                services: 10,
                load_balancers: 10,
                families: Families::DualStack,
                ..ClusterSpec::default()
            }],
            supernets: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/48".parse().unwrap()],
            ..PlanRequest::default()
        };
        let p = plan(&req).unwrap();
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(keys(&json), props::<super::Plan>());
        let c = &json["clusters"][0];
        assert_eq!(keys(c), props::<super::ClusterPlan>());
        let f = &c["families"][0];
        assert_eq!(keys(f), props::<super::FamilyPlan>());
        assert_eq!(keys(&f["pods"]), props::<super::PodPlan>());
        assert_eq!(keys(&f["services"]), props::<super::RangePlan>());
        assert_eq!(keys(&f["loadBalancers"]), props::<super::RangePlan>());

        // Every warning kind writes only keys the mirror knows, and its kind is listed.
        let warnings = [
            Warning::NodeMaskCapsPods {
                node_mask: 24,
                usable: 254,
                requested: 300,
            },
            Warning::NodeMaskTight {
                node_mask: 24,
                addresses: 256,
                requested: 200,
            },
            Warning::NodeAllocatorLimit {
                cluster_mask: 8,
                node_mask: 28,
            },
            Warning::SmallerThanPreferred {
                what: RangeKind::Services,
                preferred: 24,
                planned: 26,
            },
        ];
        let mut written = BTreeSet::new();
        let mut kinds = Vec::new();
        for w in warnings {
            let v = serde_json::to_value(PlanWarning::from(w)).unwrap();
            all_keys(&v, &mut written);
            kinds.push(v["kind"].clone());
        }
        assert_eq!(written, props::<super::PlanWarning>());
        let names = |s: RefOr<Schema>| serde_json::to_value(s).unwrap()["enum"].clone();
        assert_eq!(
            names(<super::WarningKind as PartialSchema>::schema()),
            serde_json::Value::Array(kinds)
        );
        assert_eq!(
            names(<super::RangeKind as PartialSchema>::schema()),
            serde_json::json!([
                RangeKind::Pods,
                RangeKind::Services,
                RangeKind::LoadBalancers
            ])
        );
    }

    #[test]
    fn forecast_enum_mirrors_match_kipam_core() {
        use kipam_core::forecast::{Confidence, ForecastStatus};
        let names = |s: RefOr<Schema>| serde_json::to_value(s).unwrap()["enum"].clone();
        assert_eq!(
            names(<super::ForecastStatus as PartialSchema>::schema()),
            serde_json::json!([
                ForecastStatus::Growing,
                ForecastStatus::NotGrowing,
                ForecastStatus::Declining,
                ForecastStatus::Full,
                ForecastStatus::NotEnoughData
            ])
        );
        assert_eq!(
            names(<super::Confidence as PartialSchema>::schema()),
            serde_json::json!([Confidence::Low, Confidence::Medium, Confidence::High])
        );
    }
}
