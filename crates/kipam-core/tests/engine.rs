//! Behavioural tests of the allocation engine through its public API: dual-stack
//! atomicity, idempotency, static requests, reserved addresses, node affinity, quarantine
//! and grace periods with an injected clock, prefix leases, overlap detection and IPv6
//! pools at full size. Each test asserts the outcome a user would see, then
//! [`Ipam::check`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use kipam_core::ipam::LeaseWant;
use kipam_core::{
    AddrState, AllocRequest, Error, Family, HeldAddr, Ipam, Millis, ObjectKind, ObjectRef,
    PoolConfig, Prefix, Purpose, ReservedReason, ScopeNetwork, Source, Want,
};

/// The injected clock's start (any instant works; the engine has no clock of its own).
const T: Millis = 1_000_000;
const SEC: Millis = 1000;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn prefix(s: &str) -> Prefix {
    Prefix::from_net(s.parse().expect("test CIDR"))
}

fn config(name: &str, cidr: &str) -> PoolConfig {
    PoolConfig::new(name, cidr.parse().expect("test CIDR"))
}

fn from(pool: &str) -> Want {
    Want {
        source: Source::Pools(vec![pool.into()]),
        addr: None,
    }
}

fn from_pools(pools: &[&str]) -> Want {
    Want {
        source: Source::Pools(pools.iter().map(|p| p.to_string()).collect()),
        addr: None,
    }
}

fn fixed(pool: &str, addr: &str) -> Want {
    Want {
        source: Source::Pools(vec![pool.into()]),
        addr: Some(ip(addr)),
    }
}

fn req(handle: &str, node: &str, wants: Vec<Want>) -> AllocRequest {
    AllocRequest {
        handle: handle.into(),
        node: node.into(),
        attrs: BTreeMap::new(),
        wants,
    }
}

fn engine(configs: Vec<PoolConfig>) -> Ipam {
    let mut ipam = Ipam::new();
    for c in configs {
        ipam.create_pool(c).expect("valid test pool");
    }
    ipam
}

/// Allocates one address from `pool` for `handle` on `node`.
fn one(ipam: &mut Ipam, handle: &str, node: &str, pool: &str, now: Millis) -> IpAddr {
    let got = ipam
        .allocate(&req(handle, node, vec![from(pool)]), now)
        .expect("room in the pool");
    assert_eq!(got.len(), 1);
    got[0].addr
}

/// The node whose block holds `addr`.
fn node_of(ipam: &Ipam, pool: &str, addr: IpAddr) -> String {
    let p = ipam.pool(pool).expect("pool");
    let base = p.block_of(addr).base;
    p.block(base).expect("block loaded").node().to_string()
}

fn held_set(ipam: &Ipam) -> BTreeSet<IpAddr> {
    ipam.handles()
        .flat_map(|h| h.addrs.iter().map(|a| a.addr))
        .collect()
}

#[test]
fn dual_stack_request_is_all_or_nothing() {
    let mut v6 = config("v6", "fd00:1::/124");
    v6.block_prefix_length = Some(124);
    let mut ipam = engine(vec![config("v4", "10.1.0.0/24"), v6]);

    // The /124 holds 16 addresses; its network address is never handed out.
    for i in 0..15 {
        one(&mut ipam, &format!("v6-only-{i}"), "node-a", "v6", T);
    }
    let v4_before = ipam.pool("v4").expect("pool").usage();
    let v6_before = ipam.pool("v6").expect("pool").usage();

    let dual = req("dual", "node-a", vec![from("v4"), from("v6")]);
    let err = ipam.allocate(&dual, T).expect_err("v6 is exhausted");
    assert_eq!(
        err,
        Error::PoolExhausted {
            pool: "v6".into(),
            family: Family::Ipv6
        }
    );
    // The IPv4 address taken first (and the block claimed for it) were rolled back.
    assert_eq!(ipam.pool("v4").expect("pool").usage(), v4_before);
    assert_eq!(ipam.pool("v4").expect("pool").block_claims().count(), 0);
    assert_eq!(ipam.pool("v6").expect("pool").usage(), v6_before);
    assert!(ipam.handle("dual").is_none());
    ipam.check().expect("consistent after rollback");

    // Once a v6 address is released, the same request gets one of each family. The freed
    // address is in quarantine, which is the last resort when nothing else is free.
    let released = ipam.release_handle("v6-only-3", T).expect("release");
    assert_eq!(released.len(), 1);
    let got = ipam.allocate(&dual, T + SEC).expect("room now");
    assert_eq!(got.len(), 2);
    assert_eq!(&*got[0].pool, "v4");
    assert_eq!(Family::of(got[0].addr), Family::Ipv4);
    assert_eq!(got[1], released[0]);
    assert_eq!(ipam.handle("dual").expect("handle").addrs, got);
    ipam.check().expect("consistent");
}

#[test]
fn repeated_request_for_a_handle_returns_what_it_holds() {
    let mut ipam = engine(vec![
        config("v4", "10.2.0.0/24"),
        config("v6", "fd00:2::/64"),
    ]);
    let dual = req("net/c1/eth0", "node-a", vec![from("v4"), from("v6")]);
    let first = ipam.allocate(&dual, T).expect("room");
    let again = ipam.allocate(&dual, T + SEC).expect("idempotent");
    assert_eq!(first, again);
    // Even a different request shape gets what the handle already holds.
    let other = req("net/c1/eth0", "node-b", vec![from("v4")]);
    assert_eq!(
        ipam.allocate(&other, T + 2 * SEC).expect("idempotent"),
        first
    );
    assert_eq!(ipam.pool("v4").expect("pool").usage().held, 1);
    assert_eq!(ipam.pool("v6").expect("pool").usage().held, 1);
    ipam.check().expect("consistent");

    // After a release the handle is new again and gets a fresh address (next-fit).
    assert_eq!(
        ipam.release_handle("net/c1/eth0", T).expect("release"),
        first
    );
    assert!(ipam.handle("net/c1/eth0").is_none());
    let third = ipam.allocate(&dual, T + 3 * SEC).expect("room");
    assert_ne!(third[0].addr, first[0].addr);
    // Releasing an unknown handle is not an error.
    assert!(
        ipam.release_handle("nobody", T)
            .expect("release")
            .is_empty()
    );
    ipam.check().expect("consistent");
}

#[test]
fn static_requests() {
    let mut c = config("v4", "10.3.0.0/24");
    c.gateway = Some(ip("10.3.0.1"));
    c.exclusions =
        vec![kipam_core::AddrRange::new(ip("10.3.0.100"), ip("10.3.0.109")).expect("range")];
    let mut ipam = engine(vec![c]);

    // Free: granted exactly.
    let got = ipam
        .allocate(&req("h1", "node-a", vec![fixed("v4", "10.3.0.50")]), T)
        .expect("free address");
    assert_eq!(
        got,
        vec![HeldAddr {
            pool: "v4".into(),
            addr: ip("10.3.0.50")
        }]
    );

    // Taken: the error names the holder.
    let err = ipam
        .allocate(&req("h2", "node-b", vec![fixed("v4", "10.3.0.50")]), T)
        .expect_err("taken");
    assert_eq!(
        err,
        Error::AddressInUse {
            addr: ip("10.3.0.50"),
            holder: "h1".into()
        }
    );
    assert!(
        ipam.handle("h2").is_none(),
        "a refused request leaves no handle"
    );

    // Reserved: the error says why.
    for (addr, reason) in [
        ("10.3.0.0", ReservedReason::Network),
        ("10.3.0.255", ReservedReason::Broadcast),
        ("10.3.0.1", ReservedReason::Gateway),
        ("10.3.0.105", ReservedReason::Excluded),
    ] {
        let err = ipam
            .allocate(&req("h2", "node-b", vec![fixed("v4", addr)]), T)
            .expect_err("reserved");
        assert_eq!(
            err,
            Error::AddressReserved {
                addr: ip(addr),
                pool: "v4".into(),
                reason
            },
            "{addr}"
        );
    }

    // Outside the pool (same family or not).
    for addr in ["10.4.0.1", "fd00::1"] {
        let err = ipam
            .allocate(&req("h2", "node-b", vec![fixed("v4", addr)]), T)
            .expect_err("outside");
        assert_eq!(
            err,
            Error::AddressOutsidePool {
                addr: ip(addr),
                pool: "v4".into()
            }
        );
    }

    // Quarantined: a dynamic request would not get it, a static one may.
    ipam.release_handle("h1", T).expect("release");
    let p = ipam.pool("v4").expect("pool");
    let block = p.block_of(ip("10.3.0.50"));
    assert_eq!(
        p.block(block.base).expect("block").state(50),
        AddrState::Quarantined(T + 30 * SEC)
    );
    let got = ipam
        .allocate(
            &req("h3", "node-b", vec![fixed("v4", "10.3.0.50")]),
            T + SEC,
        )
        .expect("quarantined address may be taken statically");
    assert_eq!(got[0].addr, ip("10.3.0.50"));
    assert_eq!(ipam.pool("v4").expect("pool").usage().quarantined, 0);
    ipam.check().expect("consistent");
}

#[test]
fn never_hands_out_network_broadcast_gateway_or_exclusions() {
    let mut c = config("small", "10.5.0.0/26");
    c.block_prefix_length = Some(28);
    c.gateway = Some(ip("10.5.0.1"));
    c.exclusions =
        vec![kipam_core::AddrRange::new(ip("10.5.0.20"), ip("10.5.0.23")).expect("range")];
    c.reuse_delay_seconds = 0;
    let mut ipam = engine(vec![c]);

    let mut got = BTreeSet::new();
    for i in 0.. {
        let node = ["node-a", "node-b", "node-c"][i % 3];
        match ipam.allocate(&req(&format!("h{i}"), node, vec![from("small")]), T) {
            Ok(a) => assert!(got.insert(a[0].addr), "{} handed out twice", a[0].addr),
            Err(e) => {
                assert_eq!(
                    e,
                    Error::PoolExhausted {
                        pool: "small".into(),
                        family: Family::Ipv4
                    }
                );
                break;
            }
        }
    }
    let reserved = [0u8, 1, 20, 21, 22, 23, 63];
    let expected: BTreeSet<IpAddr> = (0u8..64)
        .filter(|o| !reserved.contains(o))
        .map(|o| IpAddr::from([10, 5, 0, o]))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(got.len(), 57);
    let u = ipam.pool("small").expect("pool").usage();
    assert_eq!((u.held, u.free, u.reserved), (57, 0, 7));
    ipam.check().expect("consistent");
}

#[test]
fn ipv6_pool_reserves_only_the_network_address() {
    let mut c = config("v6", "fd00:5::/124");
    c.block_prefix_length = Some(124);
    let mut ipam = engine(vec![c]);
    let got: BTreeSet<IpAddr> = (0..15)
        .map(|i| one(&mut ipam, &format!("h{i}"), "node-a", "v6", T))
        .collect();
    assert!(!got.contains(&ip("fd00:5::")));
    assert!(got.contains(&ip("fd00:5::f")), "no broadcast in IPv6");
    assert!(
        ipam.allocate(&req("x", "node-a", vec![from("v6")]), T)
            .is_err()
    );
}

#[test]
fn nodes_get_their_own_blocks() {
    let mut c = config("pods", "10.6.0.0/24");
    c.block_prefix_length = Some(28);
    let mut ipam = engine(vec![c]);
    let a1 = one(&mut ipam, "a1", "node-a", "pods", T);
    let b1 = one(&mut ipam, "b1", "node-b", "pods", T);
    let a2 = one(&mut ipam, "a2", "node-a", "pods", T);
    let p = ipam.pool("pods").expect("pool");
    assert_ne!(p.block_of(a1), p.block_of(b1));
    assert_eq!(p.block_of(a1), p.block_of(a2), "affine block used first");
    assert_eq!(node_of(&ipam, "pods", a1), "node-a");
    assert_eq!(node_of(&ipam, "pods", b1), "node-b");
    assert_eq!(p.block_claims().count(), 2);
    ipam.check().expect("consistent");
}

/// A /26 in four /28 blocks, one block per node at most.
fn limited(strict: bool) -> Ipam {
    let mut c = config("pods", "10.7.0.0/26");
    c.block_prefix_length = Some(28);
    c.max_blocks_per_node = Some(1);
    c.strict_affinity = strict;
    engine(vec![c])
}

#[test]
fn node_at_its_block_limit_borrows_from_another_nodes_block() {
    let mut ipam = limited(false);
    // node-a's block is the first one, which holds the pool's network address: 15 usable.
    one(&mut ipam, "a0", "node-a", "pods", T);
    let b = one(&mut ipam, "b0", "node-b", "pods", T);
    for i in 1..15 {
        let a = one(&mut ipam, &format!("a{i}"), "node-a", "pods", T);
        assert_eq!(node_of(&ipam, "pods", a), "node-a");
    }
    let borrowed = one(&mut ipam, "a15", "node-a", "pods", T);
    assert_eq!(node_of(&ipam, "pods", borrowed), "node-b");
    let p = ipam.pool("pods").expect("pool");
    assert_eq!(p.block_of(borrowed), p.block_of(b));
    assert_eq!(p.block_claims().count(), 2, "no third block was claimed");
    ipam.check().expect("consistent");
}

#[test]
fn strict_affinity_refuses_to_borrow() {
    let mut ipam = limited(true);
    one(&mut ipam, "a0", "node-a", "pods", T);
    one(&mut ipam, "b0", "node-b", "pods", T);
    for i in 1..15 {
        one(&mut ipam, &format!("a{i}"), "node-a", "pods", T);
    }
    let before = ipam.pool("pods").expect("pool").usage();
    let err = ipam
        .allocate(&req("a15", "node-a", vec![from("pods")]), T)
        .expect_err("strict");
    assert_eq!(
        err,
        Error::NodeBlockLimit {
            pool: "pods".into(),
            node: "node-a".into(),
            max: 1
        }
    );
    assert_eq!(ipam.pool("pods").expect("pool").usage(), before);

    // Without a block limit, strict affinity still refuses other nodes' blocks once the
    // pool has no unclaimed block left.
    let mut c = config("two", "10.8.0.0/27");
    c.block_prefix_length = Some(28);
    c.strict_affinity = true;
    let mut ipam = engine(vec![c]);
    one(&mut ipam, "a0", "node-a", "two", T);
    one(&mut ipam, "b0", "node-b", "two", T);
    for i in 1..15 {
        one(&mut ipam, &format!("a{i}"), "node-a", "two", T);
    }
    let err = ipam
        .allocate(&req("a15", "node-a", vec![from("two")]), T)
        .expect_err("strict, pool fully claimed");
    assert!(matches!(err, Error::PoolExhausted { .. }), "{err:?}");
    ipam.check().expect("consistent");
}

#[test]
fn quarantine_follows_the_injected_clock() {
    // "a" has two usable addresses (.1, .2); "b" is the fallback.
    let mut ipam = engine(vec![config("a", "10.9.0.0/30"), config("b", "10.9.1.0/24")]);
    let a1 = one(&mut ipam, "h1", "node-a", "a", T);
    let a2 = one(&mut ipam, "h2", "node-a", "a", T);
    assert_eq!((a1, a2), (ip("10.9.0.1"), ip("10.9.0.2")));
    ipam.release_handle("h1", T).expect("release");

    // Before the delay: a fresh address anywhere beats the quarantined one.
    let both = req("h3", "node-a", vec![from_pools(&["a", "b"])]);
    let got = ipam.allocate(&both, T + 29 * SEC).expect("room");
    assert_eq!(&*got[0].pool, "b");
    ipam.release_handle("h3", T + 29 * SEC).expect("release");

    // Nothing else free in the pools asked for: the quarantined address is the last resort.
    let only_a = req("h4", "node-a", vec![from("a")]);
    assert_eq!(
        ipam.allocate(&only_a, T + 29 * SEC).expect("last resort")[0].addr,
        a1
    );
    ipam.release_handle("h4", T + 29 * SEC).expect("release");

    // After the delay the address is free like any other: "a" is asked first and wins.
    let got = ipam.allocate(&both, T + 29 * SEC + 30 * SEC).expect("room");
    assert_eq!(
        got[0],
        HeldAddr {
            pool: "a".into(),
            addr: a1
        }
    );
    ipam.check().expect("consistent");
}

#[test]
fn dynamic_allocation_prefers_every_fresh_address_over_quarantine() {
    let mut c = config("p", "10.10.0.0/29");
    c.block_prefix_length = Some(29);
    let mut ipam = engine(vec![c]);
    let first = one(&mut ipam, "h0", "node-a", "p", T);
    ipam.release_handle("h0", T).expect("release");
    // .1 is quarantined; the five other usable addresses come first.
    let next: Vec<IpAddr> = (1..=5)
        .map(|i| one(&mut ipam, &format!("h{i}"), "node-a", "p", T + SEC))
        .collect();
    assert!(!next.contains(&first));
    assert_eq!(one(&mut ipam, "h6", "node-a", "p", T + 2 * SEC), first);
    assert!(
        ipam.allocate(&req("h7", "node-a", vec![from("p")]), T + 2 * SEC)
            .is_err()
    );
    ipam.check().expect("consistent");
}

#[test]
fn empty_blocks_return_to_the_pool_after_the_grace_period() {
    let mut c = config("pods", "10.11.0.0/24");
    c.block_prefix_length = Some(28);
    c.reuse_delay_seconds = 30;
    c.empty_block_grace_seconds = 10;
    let mut ipam = engine(vec![c]);
    one(&mut ipam, "a", "node-a", "pods", T);
    one(&mut ipam, "b", "node-b", "pods", T);
    ipam.release_handle("a", T).expect("release");

    // Grace over but the quarantine is not: the block stays.
    assert!(ipam.reclaim_empty_blocks(T + 15 * SEC).is_empty());
    assert!(ipam.reclaim_empty_blocks(T + 30 * SEC - 1).is_empty());
    let gone = ipam.reclaim_empty_blocks(T + 30 * SEC);
    assert_eq!(gone, vec![("pods".to_string(), prefix("10.11.0.0/28"))]);
    let p = ipam.pool("pods").expect("pool");
    assert_eq!(
        p.block_claims().count(),
        1,
        "node-b's block holds an address"
    );
    assert!(p.block(prefix("10.11.0.0/28").base).is_none());
    ipam.check().expect("consistent");

    // Without quarantine, only the grace period counts.
    let mut c = config("now", "10.12.0.0/24");
    c.block_prefix_length = Some(28);
    c.reuse_delay_seconds = 0;
    let mut ipam = engine(vec![c]);
    one(&mut ipam, "a", "node-a", "now", T);
    ipam.release_handle("a", T + SEC).expect("release");
    assert!(
        ipam.reclaim_empty_blocks(T + SEC + 300 * SEC - 1)
            .is_empty()
    );
    assert_eq!(ipam.reclaim_empty_blocks(T + SEC + 300 * SEC).len(), 1);
    let p = ipam.pool("now").expect("pool");
    assert_eq!(p.largest_free(), Some(prefix("10.12.0.0/24")));
    ipam.check().expect("consistent");
}

#[test]
fn prefix_leases() {
    let mut ipam = engine(vec![config("nodes", "10.20.0.0/16")]);
    let lease = |ipam: &mut Ipam, want: LeaseWant, owner: &str| {
        ipam.lease_prefix("nodes", want, owner, BTreeMap::new(), T)
    };
    for i in 0..3 {
        let l = lease(&mut ipam, LeaseWant::Length(24), &format!("node/w{i}")).expect("room");
        assert_eq!(l.prefix, format!("10.20.{i}.0/24").parse().expect("cidr"));
        assert_eq!(l.owner, format!("node/w{i}"));
    }
    let exact = "10.20.200.0/24".parse().expect("cidr");
    assert_eq!(
        lease(&mut ipam, LeaseWant::Exact(exact), "cluster/x")
            .expect("free")
            .prefix,
        exact
    );
    let err = lease(
        &mut ipam,
        LeaseWant::Exact("10.20.200.0/23".parse().expect("cidr")),
        "cluster/y",
    )
    .expect_err("overlaps the exact lease");
    assert!(
        matches!(&err, Error::PrefixTaken { taken_by, .. } if taken_by == "10.20.200.0/24"),
        "{err:?}"
    );

    // A /17 no longer fits; the error names the largest free prefix.
    let err = lease(&mut ipam, LeaseWant::Length(17), "cluster/z").expect_err("no room");
    assert_eq!(
        err,
        Error::NoRoomForPrefix {
            pool: "nodes".into(),
            len: 17,
            largest: Some(prefix("10.20.64.0/18"))
        }
    );
    assert_eq!(ipam.pool("nodes").expect("pool").usage().leases, 4);

    // Releasing gives the space back; the next lease reuses the lowest hole.
    assert!(
        ipam.release_lease("nodes", "10.20.1.0/24".parse().expect("cidr"))
            .expect("pool")
            .is_some()
    );
    let l = lease(&mut ipam, LeaseWant::Length(24), "node/w9").expect("room");
    assert_eq!(l.prefix, "10.20.1.0/24".parse().expect("cidr"));
    ipam.check().expect("consistent");
}

#[test]
fn blocks_and_leases_never_overlap() {
    let mut c = config("mixed", "10.21.0.0/22");
    c.block_prefix_length = Some(26);
    c.reuse_delay_seconds = 0;
    let mut ipam = engine(vec![c]);
    let mut leases = Vec::new();
    for i in 0..40 {
        one(
            &mut ipam,
            &format!("h{i}"),
            ["a", "b", "c"][i % 3],
            "mixed",
            T,
        );
        if i % 10 == 0 {
            let l = ipam
                .lease_prefix("mixed", LeaseWant::Length(25), "x", BTreeMap::new(), T)
                .expect("room");
            leases.push(Prefix::from_net(l.prefix));
        }
    }
    let p = ipam.pool("mixed").expect("pool");
    for (block, _) in p.block_claims() {
        for l in &leases {
            assert!(
                !block.range().intersects(&l.range()),
                "{block} overlaps {l}"
            );
        }
    }
    // A static request inside a lease is refused and names it.
    let inside = kipam_core::prefix::u128_to_addr(Family::Ipv4, leases[0].base + 5);
    let err = ipam
        .allocate(&req("s", "a", vec![fixed("mixed", &inside.to_string())]), T)
        .expect_err("inside a lease");
    assert_eq!(
        err,
        Error::AddressInLease {
            addr: inside,
            pool: "mixed".into(),
            lease: leases[0]
        }
    );
    ipam.check().expect("consistent");
}

#[test]
fn overlapping_pools_are_refused_within_a_scope_only() {
    let mut ipam = engine(vec![config("prod", "10.30.0.0/16")]);
    let err = ipam
        .create_pool(config("dup", "10.30.128.0/24"))
        .expect_err("overlap");
    let Error::Overlap(o) = err else {
        panic!("expected an overlap, got {err:?}");
    };
    assert_eq!(
        o.a,
        ObjectRef {
            kind: ObjectKind::Pool,
            name: "dup".into()
        }
    );
    assert_eq!(
        o.b,
        ObjectRef {
            kind: ObjectKind::Pool,
            name: "prod".into()
        }
    );
    assert_eq!(o.shared, prefix("10.30.128.0/24").range());
    assert!(ipam.pool("dup").is_none());

    let mut lab = config("dup", "10.30.128.0/24");
    lab.scope = "lab".into();
    ipam.create_pool(lab)
        .expect("another scope may reuse the space");

    let net = |name: &str, cidr: &str, scope: &str| ScopeNetwork {
        name: name.into(),
        cidr: cidr.parse().expect("cidr"),
        scope: scope.into(),
        description: String::new(),
    };
    ipam.add_scope_network(
        ObjectKind::External,
        net("office", "10.30.200.0/24", "default"),
    )
    .expect("externals may overlap pools: that is what overlaps() reports");
    ipam.add_scope_network(
        ObjectKind::External,
        net("vpn", "192.168.0.0/16", "default"),
    )
    .expect("external");
    let err = ipam
        .create_pool(config("home", "192.168.1.0/24"))
        .expect_err("overlaps the VPN");
    let Error::Overlap(o) = err else {
        panic!("expected an overlap, got {err:?}");
    };
    assert_eq!(
        o.b,
        ObjectRef {
            kind: ObjectKind::External,
            name: "vpn".into()
        }
    );

    let pairs: Vec<(ObjectRef, ObjectRef)> =
        ipam.overlaps().into_iter().map(|o| (o.a, o.b)).collect();
    assert_eq!(
        pairs,
        vec![(
            ObjectRef {
                kind: ObjectKind::Pool,
                name: "prod".into()
            },
            ObjectRef {
                kind: ObjectKind::External,
                name: "office".into()
            }
        )]
    );

    // The external network's addresses are never handed out from the pool.
    let err = ipam
        .allocate(&req("s", "a", vec![fixed("prod", "10.30.200.7")]), T)
        .expect_err("external");
    assert!(
        matches!(
            err,
            Error::AddressReserved {
                reason: ReservedReason::Excluded,
                ..
            }
        ),
        "{err:?}"
    );
    ipam.check().expect("consistent");
}

#[test]
fn ipv6_slash64_pool_at_full_size() {
    let started = Instant::now();
    let mut ipam = engine(vec![config("v6", "fd00:64::/64")]);
    assert_eq!(ipam.pool("v6").expect("pool").block_len(), 122);
    let mut got = BTreeSet::new();
    for i in 0..5_000 {
        let a = one(
            &mut ipam,
            &format!("h{i}"),
            &format!("node-{}", i % 8),
            "v6",
            T,
        );
        assert!(got.insert(a));
    }
    // Statics at both ends and in the middle of the /64.
    for (i, addr) in [
        "fd00:64::ffff:ffff:ffff:fffe",
        "fd00:64::ffff:ffff:ffff:ffff",
        "fd00:64::8000:0:0:1",
        "fd00:64::1234:5678:9abc:def0",
    ]
    .into_iter()
    .enumerate()
    {
        let a = ipam
            .allocate(&req(&format!("s{i}"), "node-x", vec![fixed("v6", addr)]), T)
            .expect("static anywhere in the /64");
        assert!(got.insert(a[0].addr));
    }
    let p = ipam.pool("v6").expect("pool");
    let u = p.usage();
    assert_eq!(u.size, 1u128 << 64);
    assert_eq!(u.held, 5_004);
    // Memory follows the claims: one /122 (64 addresses) per 64 dynamic allocations per
    // node, plus one block per static (two statics share the last block).
    let blocks = p.block_claims().count();
    assert!(blocks <= 5_000 / 63 + 8 + 4, "{blocks} blocks");
    assert_eq!(got, held_set(&ipam));
    ipam.check().expect("consistent");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn ipv6_slash48_pool_with_slash64_leases() {
    let mut ipam = engine(vec![config("sites", "fd00:48::/48")]);
    for i in 0u32..1000 {
        let l = ipam
            .lease_prefix("sites", LeaseWant::Length(64), "site", BTreeMap::new(), T)
            .expect("room");
        assert_eq!(
            l.prefix,
            format!("fd00:48:0:{i:x}::/64").parse().expect("cidr")
        );
    }
    ipam.lease_prefix(
        "sites",
        LeaseWant::Exact("fd00:48:0:ffff::/64".parse().expect("cidr")),
        "last",
        BTreeMap::new(),
        T,
    )
    .expect("exact /64 at the top");
    let p = ipam.pool("sites").expect("pool");
    let u = p.usage();
    assert_eq!(u.leases, 1001);
    assert_eq!(u.leased, 1001u128 << 64);
    assert_eq!(u.size, 1u128 << 80);
    let err = ipam
        .lease_prefix("sites", LeaseWant::Length(48), "all", BTreeMap::new(), T)
        .expect_err("full /48 is not free");
    assert_eq!(
        err,
        Error::NoRoomForPrefix {
            pool: "sites".into(),
            len: 48,
            largest: Some(prefix("fd00:48:0:4000::/50"))
        }
    );
    ipam.check().expect("consistent");
}

#[test]
fn release_address_releases_one_address_of_a_handle() {
    let mut ipam = engine(vec![
        config("v4", "10.40.0.0/24"),
        config("v6", "fd00:40::/64"),
    ]);
    let got = ipam
        .allocate(&req("h", "node-a", vec![from("v4"), from("v6")]), T)
        .expect("room");
    let (v4, v6) = (got[0].addr, got[1].addr);
    assert_eq!(
        ipam.release_address("v4", v4, T).expect("release"),
        Some("h".to_string())
    );
    assert_eq!(
        ipam.handle("h").expect("still holds v6").addrs,
        vec![got[1].clone()]
    );
    assert_eq!(ipam.release_address("v4", v4, T).expect("release"), None);
    assert_eq!(ipam.pool("v4").expect("pool").usage().held, 0);
    assert_eq!(ipam.pool("v4").expect("pool").usage().quarantined, 1);
    ipam.check().expect("consistent");
    assert_eq!(
        ipam.release_address("v6", v6, T).expect("release"),
        Some("h".to_string())
    );
    assert!(
        ipam.handle("h").is_none(),
        "a handle holding nothing is gone"
    );
    assert_eq!(
        ipam.release_address("nope", v4, T),
        Err(Error::PoolNotFound {
            pool: "nope".into()
        })
    );
    ipam.check().expect("consistent");
}

#[test]
fn family_and_purpose_sources() {
    let with = |name: &str, cidr: &str, purpose: Purpose| {
        let mut c = config(name, cidr);
        c.purpose = purpose;
        c
    };
    let mut ipam = engine(vec![
        with("pods4", "10.50.0.0/30", Purpose::Pod),
        with("svc4", "10.51.0.0/24", Purpose::Service),
        with("pods6", "fd00:50::/64", Purpose::Pod),
    ]);
    let fam = |family: Family, purpose: Option<Purpose>| Want {
        source: Source::Family { family, purpose },
        addr: None,
    };
    let got = ipam
        .allocate(
            &req("s", "n", vec![fam(Family::Ipv4, Some(Purpose::Service))]),
            T,
        )
        .expect("service pool");
    assert_eq!(&*got[0].pool, "svc4");
    let got = ipam
        .allocate(
            &req(
                "d",
                "n",
                vec![fam(Family::Ipv4, None), fam(Family::Ipv6, None)],
            ),
            T,
        )
        .expect("dual by family");
    assert_eq!((&*got[0].pool, &*got[1].pool), ("pods4", "pods6"));
    // pods4 has two usable addresses; by-family requests then move on in name order.
    one(&mut ipam, "p2", "n", "pods4", T);
    let got = ipam
        .allocate(&req("x", "n", vec![fam(Family::Ipv4, None)]), T)
        .expect("next pool of the family");
    assert_eq!(&*got[0].pool, "svc4");
    let err = ipam
        .allocate(
            &req(
                "y",
                "n",
                vec![fam(Family::Ipv6, Some(Purpose::LoadBalancer))],
            ),
            T,
        )
        .expect_err("no such pool");
    assert_eq!(
        err,
        Error::NoPoolForFamily {
            family: Family::Ipv6,
            purpose: Some(Purpose::LoadBalancer)
        }
    );
    let err = ipam
        .allocate(&req("y", "n", vec![from("missing")]), T)
        .expect_err("unknown pool");
    assert_eq!(
        err,
        Error::PoolNotFound {
            pool: "missing".into()
        }
    );
    ipam.check().expect("consistent");
}

#[test]
fn refused_static_request_after_quarantine_expiry_keeps_counts_consistent() {
    // Regression: a static request used to expire the block's quarantine and then fail
    // (address taken) without updating the block's summary, so usage and check() disagreed.
    let mut c = config("p", "10.60.0.0/29");
    c.block_prefix_length = Some(29);
    c.reuse_delay_seconds = 5;
    let mut ipam = engine(vec![c]);
    let first = one(&mut ipam, "h1", "node-a", "p", T);
    let second = one(&mut ipam, "h2", "node-a", "p", T);
    ipam.release_handle("h1", T).expect("release");
    assert_eq!(ipam.pool("p").expect("pool").usage().quarantined, 1);
    let err = ipam
        .allocate(
            &req("h3", "node-a", vec![fixed("p", &second.to_string())]),
            T + 5 * SEC,
        )
        .expect_err("taken");
    assert!(matches!(err, Error::AddressInUse { .. }), "{err:?}");
    ipam.check().expect("summary matches the body");
    let u = ipam.pool("p").expect("pool").usage();
    assert_eq!((u.held, u.quarantined), (1, 0), "the quarantine is over");
    // The expired address is an ordinary free one again.
    let got = ipam
        .allocate(
            &req("h4", "node-a", vec![fixed("p", &first.to_string())]),
            T + 5 * SEC,
        )
        .expect("free");
    assert_eq!(got[0].addr, first);
    ipam.check().expect("consistent");
}

#[test]
fn rollback_puts_a_quarantined_address_back_in_expiry_order() {
    // Two v4 addresses in quarantine; a dual request takes the younger one statically, then
    // fails on the full v6 pool and must put it back behind the older one (the block's
    // quarantine queue is kept in expiry order).
    let mut v4 = config("v4", "10.61.0.0/30");
    v4.reuse_delay_seconds = 30;
    let mut v6 = config("v6", "fd00:61::/127");
    v6.block_prefix_length = Some(127);
    let mut ipam = engine(vec![v4, v6]);
    let a = one(&mut ipam, "a", "n", "v4", T);
    let b = one(&mut ipam, "b", "n", "v4", T);
    ipam.release_handle("a", T).expect("release");
    ipam.release_handle("b", T + SEC).expect("release");
    one(&mut ipam, "x", "n", "v6", T);
    one(&mut ipam, "y", "n", "v6", T);
    let before = ipam.pool("v4").expect("pool").usage();
    let dual = req("d", "n", vec![fixed("v4", &b.to_string()), from("v6")]);
    let err = ipam.allocate(&dual, T + 2 * SEC).expect_err("v6 is full");
    assert!(
        matches!(
            err,
            Error::PoolExhausted {
                family: Family::Ipv6,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(ipam.pool("v4").expect("pool").usage(), before);
    ipam.check().expect("consistent");
    let p = ipam.pool("v4").expect("pool");
    let block = p.block(p.block_of(a).base).expect("block");
    let queue: Vec<Millis> = block.quarantined().map(|(_, t)| t).collect();
    assert_eq!(queue, vec![T + 30 * SEC, T + 31 * SEC]);
    // The older one is the next to be handed out.
    let got = ipam
        .allocate(&req("e", "n", vec![from("v4")]), T + 30 * SEC)
        .expect("room");
    assert_eq!(got[0].addr, a);
}

/// Handle records share the engine's names: one allocation per node name and per pool
/// name, whatever the number of handles; loaded records are re-pointed at them too.
#[test]
fn handle_records_share_interned_names() {
    use std::sync::Arc;
    let mut ipam = Ipam::new();
    ipam.create_pool(config("v4", "10.0.0.0/24")).expect("pool");
    let a = ipam
        .allocate(&req("a", "n1", vec![from("v4")]), T)
        .expect("room");
    let b = ipam
        .allocate(&req("b", "n1", vec![from("v4")]), T)
        .expect("room");
    assert!(Arc::ptr_eq(&a[0].pool, &b[0].pool));
    let (ha, hb) = (ipam.handle("a").expect("a"), ipam.handle("b").expect("b"));
    assert!(Arc::ptr_eq(&ha.node, &hb.node));
    assert!(Arc::ptr_eq(&ha.addrs[0].pool, &a[0].pool));
    // A record read from the store (its own strings) shares them once loaded.
    let mut copy = ipam.clone();
    let mut record = hb.clone();
    record.node = Arc::from("n1");
    record.addrs[0].pool = Arc::from("v4");
    copy.load_handle(record);
    let hb = copy.handle("b").expect("b");
    assert!(Arc::ptr_eq(&copy.handle("a").expect("a").node, &hb.node));
    assert!(Arc::ptr_eq(&hb.addrs[0].pool, &a[0].pool));
    assert_eq!(copy.handle("b"), ipam.handle("b"));
    copy.check().expect("consistent");
}
