//! Tests of the subnet planner through its public API, asserting the outcomes an operator
//! would act on: the CIDRs planned, the limits they imply, the warnings, and the refusal
//! that says what would fit. Every successful plan is also checked for overlaps (with
//! kipam-core's own overlap sweep), for ranges outside the supernets, and for ranges
//! touching an avoided network. A property test does the same over random requests.

use ipnet::IpNet;
use kipam_core::overlap::{NetObject, find_overlaps};
use kipam_core::planner::{
    AvoidNet, ClusterSpec, DoesNotFit, Families, Plan, PlanError, PlanRequest, RangeKind,
    SizeLimit, Warning, plan,
};
use kipam_core::{AddrRange, Family, ObjectKind, ObjectRef, Prefix};
use proptest::prelude::*;

fn net(s: &str) -> IpNet {
    s.parse().expect("test CIDR")
}

fn avoid(cidr: &str, label: &str) -> AvoidNet {
    AvoidNet {
        cidr: net(cidr),
        label: label.into(),
    }
}

fn cluster(name: &str) -> ClusterSpec {
    ClusterSpec {
        name: name.into(),
        ..ClusterSpec::default()
    }
}

/// The invariants every plan must hold: no two planned ranges share an address, none
/// touches an avoided network, each lies inside a supernet of its family.
fn check_plan(req: &PlanRequest, plan: &Plan) {
    let ranges = plan.ranges();
    let mut objects: Vec<NetObject> = ranges
        .iter()
        .map(|r| NetObject {
            id: ObjectRef {
                kind: ObjectKind::Pool,
                name: format!("{}/{:?}/{}", r.cluster, r.what, r.cidr),
            },
            scope: "plan".into(),
            range: AddrRange::of_net(r.cidr),
            parent: None,
        })
        .collect();
    for (i, a) in req.avoid.iter().enumerate() {
        let range = AddrRange::of_net(a.cidr);
        for r in &ranges {
            assert!(
                !range.intersects(&AddrRange::of_net(r.cidr)),
                "{} ({}) touches avoided {}",
                r.cidr,
                r.cluster,
                a.cidr
            );
        }
        objects.push(NetObject {
            id: ObjectRef {
                kind: ObjectKind::External,
                name: format!("avoid-{i}"),
            },
            scope: "plan".into(),
            range,
            parent: None,
        });
    }
    let overlaps: Vec<_> = find_overlaps(&objects)
        .into_iter()
        // Avoided networks may overlap each other; only planned ranges matter.
        .filter(|o| o.a.kind == ObjectKind::Pool || o.b.kind == ObjectKind::Pool)
        .collect();
    assert!(overlaps.is_empty(), "overlaps: {overlaps:?}");
    for r in &ranges {
        let p = Prefix::from_net(r.cidr);
        assert!(
            req.supernets
                .iter()
                .any(|s| Prefix::from_net(*s).covers(&p)),
            "{} of {} is outside every supernet",
            r.cidr,
            r.cluster
        );
        assert_eq!(Family::of(r.cidr.addr()), r.family);
    }
}

/// The seed scenario of issue 5: 5,000 pods growing to 10,000, dual-stack, clear of an
/// on-prem 10.0.0.0/16 and a VPC 172.16.0.0/12 (which is also listed as a supernet, and
/// so must be skipped entirely).
#[test]
fn seed_scenario_dual_stack_avoids_on_prem_and_vpc() {
    let req = PlanRequest {
        clusters: vec![ClusterSpec {
            pods: Some(5_000),
            pods_at_horizon: Some(10_000),
            services: 2_000,
            load_balancers: 50,
            families: Families::DualStack,
            ..cluster("prod")
        }],
        supernets: vec![net("172.16.0.0/12"), net("10.0.0.0/8"), net("fd00::/48")],
        avoid: vec![
            avoid("10.0.0.0/16", "on-prem"),
            avoid("172.16.0.0/12", "vpc"),
        ],
        ..PlanRequest::default()
    };
    let plan = plan(&req).expect("the seed scenario fits");
    check_plan(&req, &plan);

    let c = &plan.clusters[0];
    assert_eq!(c.headroom_policy_pct, 50);
    assert_eq!(c.families.len(), 2);
    let v4 = &c.families[0];
    assert_eq!(v4.family, Family::Ipv4);
    // 10,000 pods / 110 per node → 91 nodes; +50% → 137 → 256 node CIDRs of /24 → /16.
    assert_eq!(v4.pods.cidr, net("10.1.0.0/16"));
    assert_eq!(v4.pods.node_mask, 24);
    assert_eq!(v4.pods.max_nodes, 256);
    assert_eq!(v4.pods.max_pods_per_node, 110);
    assert_eq!(v4.pods.nodes_needed, 91);
    assert_eq!(v4.pods.pods_needed, 10_000);
    assert!(v4.pods.max_pods >= 15_000, "holds 10,000 pods + 50%");
    assert_eq!(v4.pods.max_pods, 28_160);
    assert!(v4.pods.headroom_pct >= 50);
    assert!(
        v4.pods.reason.contains("10,000 pods") && v4.pods.reason.contains("/16"),
        "{}",
        v4.pods.reason
    );
    // 2,000 services + 50% → 3,000 + 2 reserved → /20 (4,094 usable).
    assert_eq!(v4.services.cidr.prefix_len(), 20);
    assert_eq!(v4.services.capacity, 4_094);
    assert!(
        v4.services.reason.contains("3,000"),
        "{}",
        v4.services.reason
    );
    // 50 LoadBalancer addresses + 50% → 75 → /25.
    let lb = v4.load_balancers.as_ref().expect("LB range asked for");
    assert_eq!(lb.cidr.prefix_len(), 25);
    assert_eq!(lb.capacity, 128);
    assert!(v4.warnings.is_empty(), "{:?}", v4.warnings);

    let v6 = &c.families[1];
    assert_eq!(v6.family, Family::Ipv6);
    assert_eq!(v6.pods.node_mask, 64);
    assert_eq!(
        v6.pods.cidr.prefix_len(),
        56,
        "IPv6 cluster CIDR holds 256 /64s"
    );
    assert_eq!(v6.pods.max_nodes, 256);
    assert_eq!(v6.pods.max_pods_per_node, 110);
    assert!(
        v6.services.cidr.prefix_len() >= 108,
        "kube-apiserver's limit"
    );
    assert_eq!(v6.services.cidr.prefix_len(), 112);
    assert!(v6.warnings.is_empty(), "{:?}", v6.warnings);
}

#[test]
fn three_clusters_from_one_supernet() {
    let req = PlanRequest {
        clusters: vec![
            ClusterSpec {
                nodes: 40,
                nodes_at_horizon: Some(120),
                services: 500,
                ..cluster("small")
            },
            ClusterSpec {
                nodes: 300,
                nodes_at_horizon: Some(900),
                services: 5_000,
                load_balancers: 200,
                ..cluster("large")
            },
            ClusterSpec {
                nodes: 10,
                max_pods_per_node: Some(30),
                services: 50,
                load_balancers: 10,
                ..cluster("edge")
            },
        ],
        supernets: vec![net("10.64.0.0/12")],
        avoid: vec![avoid("10.64.0.0/14", "office")],
        ..PlanRequest::default()
    };
    let plan = plan(&req).expect("fits");
    check_plan(&req, &plan);
    let names: Vec<&str> = plan.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["small", "large", "edge"], "request order is kept");

    let small = &plan.clusters[0].families[0];
    // 120 nodes + 50% → 180 → 256 /24s → /16.
    assert_eq!(small.pods.cidr.prefix_len(), 16);
    let large = &plan.clusters[1].families[0];
    // 900 nodes + 50% → 1,350 → 2,048 /24s → /13: larger than the space left after the
    // office /14 except for one /13 — placed first since it is the largest.
    assert_eq!(large.pods.cidr, net("10.72.0.0/13"));
    assert_eq!(large.pods.max_nodes, 2_048);
    let edge = &plan.clusters[2].families[0];
    // 30 pods per node → twice is 60 → /26 per node; 10 nodes + 50% → 15 → 16 → /22.
    assert_eq!(edge.pods.node_mask, 26);
    assert_eq!(edge.pods.cidr.prefix_len(), 22);
    assert_eq!(edge.pods.max_pods_per_node, 30);
    // The service floor: 50 + 50% = 75 would fit a /25; /24 is the smallest planned.
    assert_eq!(edge.services.cidr.prefix_len(), 24);
    assert!(
        edge.services.reason.contains("raised"),
        "{}",
        edge.services.reason
    );
}

#[test]
fn impossible_request_names_the_smallest_change() {
    // 10.0.0.0/14 minus 10.0.0.0/15 and 10.2.0.0/17 leaves 10.2.128.0/17 and 10.3.0.0/16.
    let base = PlanRequest {
        clusters: vec![ClusterSpec {
            nodes_at_horizon: Some(300),
            ..cluster("big")
        }],
        supernets: vec![net("10.0.0.0/14")],
        avoid: vec![avoid("10.0.0.0/15", "dc1"), avoid("10.2.0.0/17", "dc2")],
        ..PlanRequest::default()
    };
    let err = plan(&base).expect_err("a /15 cannot fit in a /16");
    let PlanError::DoesNotFit(d) = &err else {
        panic!("wrong error: {err}");
    };
    assert_eq!(
        **d,
        DoesNotFit {
            cluster: "big".into(),
            family: Family::Ipv4,
            what: RangeKind::Pods,
            needed: 15,
            largest_free: Some(net("10.3.0.0/16")),
            supernet: Some(net("10.0.0.0/14")),
            supernets: vec![net("10.0.0.0/14")],
            demand: 300,
            // A /16 holds 256 /24s; 170 nodes + 50% = 255 fit.
            max_demand: 170,
            pods_per_node: 110,
            headroom_pct: 50,
            // 300 nodes do not fit 256 even without headroom.
            max_headroom_pct: None,
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("needs a /15"), "{msg}");
    assert!(
        msg.contains("the largest free block in 10.0.0.0/14 after exclusions"),
        "{msg}"
    );
    assert!(msg.contains("is a /16"), "{msg}");
    assert!(msg.contains("at most 170 nodes (18,700 pods)"), "{msg}");

    // 200 nodes + 50% needs a /15 too, but 200 nodes fit a /16 at up to 28% headroom.
    let mut req = base.clone();
    req.clusters[0].nodes_at_horizon = Some(200);
    let Err(PlanError::DoesNotFit(d)) = plan(&req) else {
        panic!("200 nodes + 50% does not fit a /16");
    };
    assert_eq!(d.max_headroom_pct, Some(28));
    assert!(d.to_string().contains("lower the headroom to 28%"), "{d}");
    // ... and taking that advice works.
    req.clusters[0].headroom_pct = Some(28);
    let ok = plan(&req).expect("fits at 28%");
    assert_eq!(ok.clusters[0].families[0].pods.cidr, net("10.3.0.0/16"));

    // No free space at all: the supernet is entirely avoided.
    let mut req = base.clone();
    req.avoid.push(avoid("10.0.0.0/8", "everything"));
    let Err(PlanError::DoesNotFit(d)) = plan(&req) else {
        panic!("nothing is free");
    };
    assert_eq!(d.largest_free, None);
    assert_eq!(d.max_demand, 0);
    assert!(
        d.to_string()
            .contains("no free space is left in 10.0.0.0/14"),
        "{d}"
    );
}

#[test]
fn warns_when_node_mask_caps_pods() {
    let req = PlanRequest {
        clusters: vec![
            ClusterSpec {
                nodes: 20,
                max_pods_per_node: Some(300),
                node_mask_v4: Some(24),
                ..cluster("dense")
            },
            ClusterSpec {
                nodes: 20,
                node_mask_v4: Some(25),
                ..cluster("tight")
            },
        ],
        supernets: vec![net("10.0.0.0/8")],
        ..PlanRequest::default()
    };
    let plan = plan(&req).expect("fits");
    check_plan(&req, &plan);
    let dense = &plan.clusters[0].families[0];
    assert_eq!(dense.pods.max_pods_per_node, 254, "a /24 caps pods at 254");
    assert_eq!(dense.warnings.len(), 1, "{:?}", dense.warnings);
    assert_eq!(
        dense.warnings[0].warning,
        Warning::NodeMaskCapsPods {
            node_mask: 24,
            usable: 254,
            requested: 300
        }
    );
    assert!(
        dense.warnings[0]
            .message
            .contains("caps pods per node at 254"),
        "{}",
        dense.warnings[0].message
    );
    let tight = &plan.clusters[1].families[0];
    assert_eq!(tight.pods.max_pods_per_node, 110);
    assert_eq!(
        tight.warnings[0].warning,
        Warning::NodeMaskTight {
            node_mask: 25,
            addresses: 128,
            requested: 110
        }
    );
}

/// The IPv4 node mask is the smallest block of twice the pods per node (GKE's table),
/// never one without room for the pods themselves.
#[test]
fn default_node_masks_follow_twice_max_pods() {
    for (pods, mask) in [(1, 30), (8, 28), (9, 27), (64, 25), (110, 24), (250, 23)] {
        let req = PlanRequest {
            clusters: vec![ClusterSpec {
                nodes: 4,
                max_pods_per_node: Some(pods),
                ..cluster("c")
            }],
            supernets: vec![net("10.0.0.0/8")],
            ..PlanRequest::default()
        };
        let p = plan(&req).expect("fits");
        let f = &p.clusters[0].families[0];
        assert_eq!(f.pods.node_mask, mask, "{pods} pods per node");
        assert_eq!(f.pods.max_pods_per_node, u64::from(pods));
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
    }
}

#[test]
fn warns_past_the_node_cidr_allocator_limit() {
    // 8 pods per node → /28 per node; 50,000 nodes + 50% → 75,000 → 2^17 → /11.
    let req = PlanRequest {
        clusters: vec![ClusterSpec {
            nodes: 50_000,
            max_pods_per_node: Some(8),
            families: Families::DualStack,
            ..cluster("huge")
        }],
        supernets: vec![net("10.0.0.0/8"), net("fd00::/40")],
        ..PlanRequest::default()
    };
    let plan = plan(&req).expect("fits");
    check_plan(&req, &plan);
    for f in &plan.clusters[0].families {
        let mask = f.pods.node_mask;
        assert_eq!(mask - f.pods.cidr.prefix_len(), 17);
        assert!(
            f.warnings.iter().any(|w| w.warning
                == Warning::NodeAllocatorLimit {
                    cluster_mask: mask - 17,
                    node_mask: mask,
                }),
            "{:?}",
            f.warnings
        );
    }
    assert_eq!(plan.clusters[0].families[0].pods.node_mask, 28);
    assert_eq!(plan.clusters[0].families[1].pods.node_mask, 64);
}

#[test]
fn ipv6_floor_gives_way_to_demand_with_a_warning() {
    // A /60 cannot hold the preferred /56 cluster CIDR; 10 nodes + 50% fit a /60.
    let req = PlanRequest {
        clusters: vec![ClusterSpec {
            nodes: 10,
            families: Families::Ipv6,
            ..cluster("lab")
        }],
        supernets: vec![net("fd00::/60"), net("fd01::/64")],
        ..PlanRequest::default()
    };
    let plan = plan(&req).expect("fits");
    check_plan(&req, &plan);
    let f = &plan.clusters[0].families[0];
    assert_eq!(f.pods.cidr, net("fd00::/60"));
    assert_eq!(f.pods.max_nodes, 16);
    assert!(f.services.cidr.prefix_len() == 112);
    assert_eq!(
        f.warnings[0].warning,
        Warning::SmallerThanPreferred {
            what: RangeKind::Pods,
            preferred: 56,
            planned: 60
        }
    );
}

#[test]
fn refuses_bad_input_without_panicking() {
    let ok = PlanRequest {
        clusters: vec![ClusterSpec {
            nodes: 10,
            ..cluster("a")
        }],
        supernets: vec![net("10.0.0.0/8")],
        ..PlanRequest::default()
    };
    plan(&ok).expect("the base request is fine");
    let with = |f: &dyn Fn(&mut PlanRequest)| {
        let mut r = ok.clone();
        f(&mut r);
        plan(&r).expect_err("refused")
    };

    assert_eq!(with(&|r| r.clusters.clear()), PlanError::NoClusters);
    assert_eq!(
        with(&|r| r.clusters[0].name = " ".into()),
        PlanError::EmptyName { index: 0 }
    );
    assert_eq!(
        with(&|r| r.clusters.push(r.clusters[0].clone())),
        PlanError::DuplicateCluster { name: "a".into() }
    );
    assert_eq!(
        with(&|r| r.clusters[0].nodes = 0),
        PlanError::NoDemand {
            cluster: "a".into()
        }
    );
    assert_eq!(
        with(&|r| r.clusters[0].max_pods_per_node = Some(0)),
        PlanError::ZeroPodsPerNode {
            cluster: "a".into()
        }
    );
    assert_eq!(
        with(&|r| r.headroom_pct = 5_000),
        PlanError::InvalidHeadroom {
            cluster: "a".into(),
            percent: 5_000,
            max: 1_000
        }
    );
    assert_eq!(
        with(&|r| r.clusters[0].node_mask_v4 = Some(31)),
        PlanError::InvalidNodeMask {
            cluster: "a".into(),
            family: Family::Ipv4,
            mask: 31,
            min: 1,
            max: 30
        }
    );
    assert_eq!(
        with(&|r| r.clusters[0].families = Families::DualStack),
        PlanError::NoSupernet {
            cluster: "a".into(),
            family: Family::Ipv6
        }
    );
    assert_eq!(
        with(&|r| r.supernets.clear()),
        PlanError::NoSupernet {
            cluster: "a".into(),
            family: Family::Ipv4
        }
    );
    assert_eq!(
        with(&|r| r.supernets.push(net("10.1.0.0/16"))),
        PlanError::OverlappingSupernets {
            a: net("10.0.0.0/8"),
            b: net("10.1.0.0/16")
        }
    );
    // Absurd sizes are refused with the limit that applies.
    let e = with(&|r| r.clusters[0].nodes = u64::MAX);
    assert!(
        matches!(
            e,
            PlanError::TooLarge {
                what: RangeKind::Pods,
                limit: SizeLimit::AddressWidth,
                ..
            }
        ),
        "{e}"
    );
    let e = with(&|r| r.clusters[0].max_pods_per_node = Some(u32::MAX));
    assert!(
        matches!(
            e,
            PlanError::TooLarge {
                what: RangeKind::Pods,
                ..
            }
        ),
        "{e}"
    );
    let e = with(&|r| r.clusters[0].services = 1_000_000);
    assert_eq!(
        e,
        PlanError::TooLarge {
            cluster: "a".into(),
            family: Family::Ipv4,
            what: RangeKind::Services,
            needed_bits: 21,
            max_bits: 20,
            limit: SizeLimit::KubeServiceRange
        }
    );
    assert!(e.to_string().contains("--service-cluster-ip-range"), "{e}");
    let e = with(&|r| r.clusters[0].load_balancers = u64::MAX);
    assert!(
        matches!(
            e,
            PlanError::TooLarge {
                what: RangeKind::LoadBalancers,
                ..
            }
        ),
        "{e}"
    );
    // IPv6 at absurd sizes: more than 2^64 node CIDRs is too large; 2^62 nodes + 50%
    // needs a /1, which fits ::/0 but not fd00::/8.
    let mut r = ok.clone();
    r.clusters[0].families = Families::Ipv6;
    r.clusters[0].nodes = u64::MAX;
    r.supernets = vec![net("fd00::/8")];
    assert!(matches!(plan(&r), Err(PlanError::TooLarge { .. })));
    r.clusters[0].nodes = 1 << 62;
    let Err(PlanError::DoesNotFit(d)) = plan(&r) else {
        panic!("a /1 does not fit a /8");
    };
    assert_eq!((d.needed, d.largest_free), (1, Some(net("fd00::/8"))));
    r.supernets = vec![net("::/0")];
    let whole = plan(&r).expect("a /1 fits ::/0");
    let pods = &whole.clusters[0].families[0].pods;
    assert_eq!(pods.cidr, net("::/1"));
    assert_eq!(pods.max_nodes, 1 << 63);
    assert_eq!(pods.max_pods, u64::MAX, "saturates");
}

fn arb_cluster(i: usize) -> impl Strategy<Value = ClusterSpec> {
    (
        1u64..3_000,
        prop::option::of(1u64..60_000),
        prop::option::of(4u32..300),
        0u64..6_000,
        0u64..400,
        prop_oneof![
            Just(Families::Ipv4),
            Just(Families::Ipv6),
            Just(Families::DualStack)
        ],
        prop::option::of(0u32..200),
    )
        .prop_map(
            move |(nodes, pods, ppn, services, lbs, families, headroom)| ClusterSpec {
                name: format!("c{i}"),
                nodes,
                pods_at_horizon: pods,
                max_pods_per_node: ppn,
                services,
                load_balancers: lbs,
                families,
                headroom_pct: headroom,
                ..ClusterSpec::default()
            },
        )
}

/// A random prefix of length `9..=24` inside 10.0.0.0/8, or `41..=64` inside fd00::/40.
fn arb_avoid() -> impl Strategy<Value = AvoidNet> {
    prop_oneof![
        (9u8..=24, any::<u32>()).prop_map(|(len, bits)| {
            let p = Prefix::containing(Family::Ipv4, u128::from(0x0a00_0000 | (bits >> 8)), len);
            AvoidNet {
                cidr: p.to_net(),
                label: "random".into(),
            }
        }),
        (41u8..=64, any::<u32>()).prop_map(|(len, bits)| {
            let base = (0xfd00_u128 << 112) | (u128::from(bits) << 56);
            let p = Prefix::containing(Family::Ipv6, base, len);
            AvoidNet {
                cidr: p.to_net(),
                label: "random".into(),
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random cluster sizes and avoid lists never give overlapping ranges, ranges outside
    /// the supernets, or ranges touching what is avoided; a refusal is always a
    /// `DoesNotFit` whose largest free block is indeed smaller than what was needed.
    #[test]
    fn plans_never_overlap(
        clusters in (1usize..5).prop_flat_map(|n| {
            (0..n).map(arb_cluster).collect::<Vec<_>>()
        }),
        avoid in prop::collection::vec(arb_avoid(), 0..8),
    ) {
        let req = PlanRequest {
            clusters,
            supernets: vec![net("10.0.0.0/8"), net("192.168.0.0/16"), net("fd00::/40")],
            avoid,
            ..PlanRequest::default()
        };
        match plan(&req) {
            Ok(p) => {
                check_plan(&req, &p);
                for (c, spec) in p.clusters.iter().zip(&req.clusters) {
                    for f in &c.families {
                        prop_assert!(f.pods.max_nodes >= f.pods.nodes_needed);
                        prop_assert!(f.pods.max_pods >= spec.pods_at_horizon.unwrap_or(0));
                        prop_assert!(f.services.capacity >= f.services.needed);
                        if f.family == Family::Ipv6 {
                            prop_assert!(f.services.cidr.prefix_len() >= 108);
                        } else {
                            prop_assert!(f.services.cidr.prefix_len() >= 12);
                        }
                    }
                }
            }
            Err(PlanError::DoesNotFit(d)) => {
                if let Some(free) = d.largest_free {
                    prop_assert!(free.prefix_len() > d.needed, "{d}");
                }
            }
            Err(e) => prop_assert!(false, "unexpected refusal: {e}"),
        }
    }
}
