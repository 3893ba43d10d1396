//! The HTTP API end to end: the real kipamd binary on 127.0.0.1 with a throwaway store,
//! driven by the blocking client, route by route, refusals included.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{Daemon, pool};
use kipam_api::ErrorCode;
use kipam_api::allocations::{AddressRequest, AllocateRequest, AllocationQuery, PodRef};
use kipam_api::client::ClientError;
use kipam_api::gc::GcRequest;
use kipam_api::prefixes::{LeaseQuery, LeaseRequest};
use kipam_core::{Family, ScopeNetwork};
use serde_json::json;

fn refusal(
    r: Result<impl std::fmt::Debug, ClientError>,
) -> (u16, ErrorCode, String, Option<Box<kipam_api::ErrorBody>>) {
    match r {
        Err(ClientError::Status {
            status,
            code,
            message,
            body,
        }) => (status, code, message, body),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn pools_crud_validation_and_overlap() {
    let d = Daemon::start(&[]);
    let c = d.client();
    assert!(c.list_pools().unwrap().items.is_empty());
    let v = c.create_pool(&pool("pods-a", "10.1.0.0/24")).unwrap();
    assert_eq!(v.config.name, "pods-a");
    assert_eq!(v.usage.size, "256");
    assert_eq!(v.usage.reserved, "2");
    assert_eq!(v.usage.family, Family::Ipv4);

    // Same name: 409 naming it.
    let (s, code, _, body) = refusal(c.create_pool(&pool("pods-a", "10.9.0.0/24")));
    assert_eq!((s, code), (409, ErrorCode::AlreadyExists));
    assert_eq!(body.unwrap().error.conflict.unwrap().name, "pods-a");
    // Overlap: 409 naming the other pool.
    let (s, code, msg, body) = refusal(c.create_pool(&pool("pods-b", "10.1.0.0/16")));
    assert_eq!((s, code), (409, ErrorCode::Overlap));
    assert!(msg.contains("pods-a"), "{msg}");
    let conflict = body.unwrap().error.conflict.unwrap();
    assert_eq!(
        (conflict.kind.as_str(), conflict.name.as_str()),
        ("pool", "pods-a")
    );
    // Another scope may overlap.
    let mut other = pool("pods-b", "10.1.0.0/16");
    other.scope = "vrf-2".into();
    c.create_pool(&other).unwrap();

    // Validation names the field: host bits, block length.
    let (s, code, _, body) = refusal(c.create_pool(&pool("bad", "10.2.0.1/24")));
    assert_eq!((s, code), (400, ErrorCode::InvalidArgument));
    assert_eq!(body.unwrap().error.field.as_deref(), Some("cidr"));
    let mut bad = pool("bad", "10.3.0.0/24");
    bad.block_prefix_length = Some(20);
    let (s, _, _, body) = refusal(c.create_pool(&bad));
    assert_eq!(s, 400);
    assert_eq!(
        body.unwrap().error.field.as_deref(),
        Some("blockPrefixLength")
    );
    // Unknown field in the body: refused, naming it.
    let r = c
        .raw(
            "POST",
            "/v1/pools",
            &[("Content-Type", "application/json")],
            Some(br#"{"name":"x","cidr":"10.4.0.0/24","colour":"red"}"#),
        )
        .unwrap();
    assert_eq!(r.status, 422);
    assert!(String::from_utf8_lossy(&r.body).contains("colour"));

    // Show, patch, list.
    assert_eq!(c.get_pool("pods-a").unwrap().config.reuse_delay_seconds, 30);
    let v = c
        .update_pool(
            "pods-a",
            &json!({"reuseDelaySeconds": 0, "gateway": "10.1.0.1"}),
        )
        .unwrap();
    assert_eq!(v.config.reuse_delay_seconds, 0);
    assert_eq!(v.config.gateway, Some(ip("10.1.0.1")));
    assert_eq!(v.usage.reserved, "3");
    let (s, _, _, body) = refusal(c.update_pool("pods-a", &json!({"cidr": "10.1.0.0/23"})));
    assert_eq!(s, 400);
    assert_eq!(body.unwrap().error.field.as_deref(), Some("cidr"));
    let (s, _, _, _) = refusal(c.update_pool("nope", &json!({})));
    assert_eq!(s, 404);
    let names: Vec<String> = c
        .list_pools()
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.config.name)
        .collect();
    assert_eq!(names, ["pods-a", "pods-b"]);

    // Delete refused while in use, then forced.
    c.allocate(&AllocateRequest::from_pools("h1", "n1", &["pods-a"]))
        .unwrap();
    let (s, code, _, _) = refusal(c.delete_pool("pods-a", false));
    assert_eq!((s, code), (409, ErrorCode::PoolInUse));
    c.delete_pool("pods-a", true).unwrap();
    assert_eq!(refusal(c.get_pool("pods-a")).0, 404);
    assert_eq!(refusal(c.delete_pool("pods-a", false)).0, 404);
    assert_eq!(refusal(c.get_allocation("h1")).0, 404);
}

#[test]
fn allocate_dual_stack_all_or_nothing_idempotent_and_static() {
    let d = Daemon::start(&[]);
    let c = d.client();
    c.create_pool(&pool("v4", "10.10.0.0/30")).unwrap(); // two usable addresses
    c.create_pool(&pool("v6", "fd00:10::/64")).unwrap();

    let mut req = AllocateRequest::from_pools("net/c1/eth0", "node-1", &["v4", "v6"]);
    req.pod = Some(PodRef {
        namespace: Some("ns".into()),
        name: Some("web-0".into()),
        uid: Some("u-1".into()),
    });
    let a = c.allocate(&req).unwrap();
    assert_eq!(a.addresses.len(), 2);
    assert_eq!(a.addresses[0].pool, "v4");
    assert_eq!(a.addresses[1].pool, "v6");
    assert_eq!(a.node, "node-1");
    assert_eq!(a.attrs["k8s.pod.name"], "web-0");
    // Idempotent: same handle, same answer.
    assert_eq!(c.allocate(&req).unwrap().addresses, a.addresses);

    // By family.
    let fam = AllocateRequest {
        handle: "svc/a".into(),
        node: "default".into(),
        attrs: Default::default(),
        pod: None,
        requests: vec![AddressRequest {
            family: Some(Family::Ipv6),
            ..Default::default()
        }],
    };
    assert_eq!(c.allocate(&fam).unwrap().addresses[0].pool, "v6");

    // Second v4 address is the last one; then a dual-stack request must fail whole.
    c.allocate(&AllocateRequest::from_pools(
        "net/c2/eth0",
        "node-1",
        &["v4"],
    ))
    .unwrap();
    let (s, code, _, _) = refusal(c.allocate(&AllocateRequest::from_pools(
        "net/c3/eth0",
        "node-1",
        &["v6", "v4"],
    )));
    assert_eq!((s, code), (422, ErrorCode::Exhausted));
    assert_eq!(
        refusal(c.get_allocation("net/c3/eth0")).0,
        404,
        "nothing half-allocated"
    );
    let v6_held = c.get_pool("v6").unwrap().usage.held;
    assert_eq!(
        v6_held, 2,
        "the v6 address of the failed request was rolled back"
    );

    // Static: a held address is 409 naming its holder; a free one is granted.
    let held = a.addresses[1].address;
    let stat = |h: &str, addr: &str| AllocateRequest {
        handle: h.into(),
        node: "default".into(),
        attrs: Default::default(),
        pod: None,
        requests: vec![AddressRequest {
            pools: Some(vec!["v6".into()]),
            address: Some(ip(addr)),
            ..Default::default()
        }],
    };
    let (s, code, _, body) = refusal(c.allocate(&stat("static/1", &held.to_string())));
    assert_eq!((s, code), (409, ErrorCode::AddressInUse));
    assert_eq!(body.unwrap().error.conflict.unwrap().name, "net/c1/eth0");
    let got = c.allocate(&stat("static/1", "fd00:10::99")).unwrap();
    assert_eq!(got.addresses[0].address, ip("fd00:10::99"));
    let (s, _, _, body) = refusal(c.allocate(&stat("static/2", "fd00:11::1")));
    assert_eq!(s, 400);
    assert_eq!(body.unwrap().error.field.as_deref(), Some("address"));

    // Unknown pool 404; bad request shapes 400 naming the field.
    let (s, code, _, _) = refusal(c.allocate(&AllocateRequest::from_pools("x", "n", &["nope"])));
    assert_eq!((s, code), (404, ErrorCode::NotFound));
    let (s, _, _, body) = refusal(c.allocate(&AllocateRequest::from_pools("x", "n", &[])));
    assert_eq!(s, 400);
    assert_eq!(body.unwrap().error.field.as_deref(), Some("requests"));
    let (s, _, _, body) =
        refusal(c.allocate(&AllocateRequest::from_pools("bad handle", "n", &["v6"])));
    assert_eq!(s, 400);
    assert_eq!(body.unwrap().error.field.as_deref(), Some("handle"));
}

#[test]
fn release_by_handle_with_slashes() {
    let d = Daemon::start(&[]);
    let c = d.client();
    c.create_pool(&pool("p", "10.20.0.0/24")).unwrap();
    let a = c
        .allocate(&AllocateRequest::from_pools(
            "cni0/0123abcd/eth0",
            "n1",
            &["p"],
        ))
        .unwrap();
    // Percent-encoded (what the client sends).
    let got = c.get_allocation("cni0/0123abcd/eth0").unwrap();
    assert_eq!(got.addresses, a.addresses);
    let r = c
        .raw(
            "DELETE",
            "/v1/allocations/cni0%2F0123abcd%2Feth0",
            &[],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body: kipam_api::allocations::ReleaseResponse = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body.handle, "cni0/0123abcd/eth0");
    assert_eq!(body.released, a.addresses);
    // Idempotent.
    assert!(c.release("cni0/0123abcd/eth0").unwrap().released.is_empty());
    // Unencoded slashes work too.
    c.allocate(&AllocateRequest::from_pools("cni0/ff/eth1", "n1", &["p"]))
        .unwrap();
    let r = c
        .raw("DELETE", "/v1/allocations/cni0/ff/eth1", &[], None)
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(c.get_pool("p").unwrap().usage.held, 0);
}

#[test]
fn list_filters_and_pagination() {
    let d = Daemon::start(&[]);
    let c = d.client();
    c.create_pool(&pool("a", "10.30.0.0/24")).unwrap();
    c.create_pool(&pool("b", "10.31.0.0/24")).unwrap();
    for i in 0..25 {
        let node = if i % 2 == 0 { "even" } else { "odd" };
        let p = if i < 20 { "a" } else { "b" };
        c.allocate(&AllocateRequest::from_pools(
            &format!("net/c{i:02}/eth0"),
            node,
            &[p],
        ))
        .unwrap();
    }
    c.allocate(&AllocateRequest::from_pools("other/x/eth0", "even", &["a"]))
        .unwrap();

    let all = c.list_allocations(&AllocationQuery::default()).unwrap();
    assert_eq!(all.items.len(), 26);
    assert!(all.continue_token.is_none());
    let keys: Vec<&str> = all.items.iter().map(|h| h.handle.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);

    let q = |pool: Option<&str>, node: Option<&str>, handle: Option<&str>| AllocationQuery {
        pool: pool.map(Into::into),
        node: node.map(Into::into),
        handle: handle.map(Into::into),
        ..Default::default()
    };
    assert_eq!(
        c.list_allocations(&q(Some("b"), None, None))
            .unwrap()
            .items
            .len(),
        5
    );
    assert_eq!(
        c.list_allocations(&q(None, Some("odd"), None))
            .unwrap()
            .items
            .len(),
        12
    );
    assert_eq!(
        c.list_allocations(&q(None, None, Some("other/")))
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        c.list_allocations(&q(Some("a"), Some("even"), Some("net/")))
            .unwrap()
            .items
            .len(),
        10
    );

    // Pages of 7 cover everything once, in order.
    let mut seen = Vec::new();
    let mut query = AllocationQuery {
        limit: Some(7),
        ..Default::default()
    };
    let mut pages = 0;
    loop {
        let page = c.list_allocations(&query).unwrap();
        pages += 1;
        assert!(page.items.len() <= 7);
        seen.extend(page.items.into_iter().map(|h| h.handle));
        match page.continue_token {
            Some(t) => query.continue_token = Some(t),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(seen, sorted);

    // Bad paging: 400 naming the field.
    let (s, _, _, body) = refusal(c.list_allocations(&AllocationQuery {
        limit: Some(0),
        ..Default::default()
    }));
    assert_eq!(s, 400);
    assert_eq!(body.unwrap().error.field.as_deref(), Some("limit"));
    let (s, _, _, body) = refusal(c.list_allocations(&AllocationQuery {
        continue_token: Some("zz".into()),
        ..Default::default()
    }));
    assert_eq!(s, 400);
    assert_eq!(body.unwrap().error.field.as_deref(), Some("continue"));
    let r = c
        .raw("GET", "/v1/allocations?limit=abc", &[], None)
        .unwrap();
    assert_eq!(r.status, 400);
}

#[test]
fn prefix_leases() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let mut p = pool("nodes", "10.240.0.0/16");
    p.purpose = kipam_core::Purpose::NodeCidr;
    c.create_pool(&p).unwrap();
    let lease = |len: Option<u8>, prefix: Option<&str>, owner: &str| LeaseRequest {
        pool: "nodes".into(),
        prefix_length: len,
        prefix: prefix.map(|p| p.parse().unwrap()),
        owner: owner.into(),
        attrs: Default::default(),
    };
    let l1 = c.lease_prefix(&lease(Some(24), None, "node/w1")).unwrap();
    assert_eq!(l1.prefix.to_string(), "10.240.0.0/24");
    let l2 = c
        .lease_prefix(&lease(None, Some("10.240.7.0/24"), "node/w2"))
        .unwrap();
    assert_eq!(l2.prefix.to_string(), "10.240.7.0/24");
    // A taken exact prefix is a conflict naming what is in the way.
    let (s, code, msg, _) = refusal(c.lease_prefix(&lease(None, Some("10.240.7.0/25"), "node/w3")));
    assert_eq!((s, code), (409, ErrorCode::Overlap));
    assert!(msg.contains("10.240.7.0/24"), "{msg}");
    let (s, _, _, body) = refusal(c.lease_prefix(&lease(None, None, "node/w3")));
    assert_eq!(s, 400);
    assert_eq!(body.unwrap().error.field.as_deref(), Some("prefixLength"));
    let (s, code, _, _) = refusal(c.lease_prefix(&lease(Some(15), None, "node/w3")));
    assert!(s == 400 || s == 422, "{s} {code}");
    assert_eq!(
        c.list_prefixes(&LeaseQuery::default()).unwrap().items.len(),
        2
    );
    let mine = c
        .list_prefixes(&LeaseQuery {
            owner: Some("node/w2".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(mine.items.len(), 1);
    assert_eq!(c.get_pool("nodes").unwrap().usage.leased, "512");
    c.release_prefix("nodes", l1.prefix).unwrap();
    let (s, _, _, _) = refusal(c.release_prefix("nodes", l1.prefix));
    assert_eq!(s, 404);
    assert_eq!(
        c.list_prefixes(&LeaseQuery {
            pool: Some("nodes".into()),
            ..Default::default()
        })
        .unwrap()
        .items
        .len(),
        1
    );
    // Exhaustion of prefixes is 422.
    let mut small = pool("tiny", "10.250.0.0/24");
    small.purpose = kipam_core::Purpose::NodeCidr;
    c.create_pool(&small).unwrap();
    c.lease_prefix(&LeaseRequest {
        pool: "tiny".into(),
        ..lease(Some(24), None, "x")
    })
    .unwrap();
    let (s, code, _, _) = refusal(c.lease_prefix(&LeaseRequest {
        pool: "tiny".into(),
        ..lease(Some(25), None, "y")
    }));
    assert_eq!((s, code), (422, ErrorCode::Exhausted));
}

#[test]
fn external_networks_and_overlaps() {
    let d = Daemon::start(&[]);
    let c = d.client();
    c.create_pool(&pool("pods", "10.50.0.0/16")).unwrap();
    let vpn = ScopeNetwork {
        name: "office-vpn".into(),
        cidr: "10.50.128.0/24".parse().unwrap(),
        scope: "default".into(),
        description: "site A".into(),
    };
    assert_eq!(c.add_external_network(&vpn).unwrap(), vpn);
    let (s, code, _, _) = refusal(c.add_external_network(&vpn));
    assert_eq!((s, code), (409, ErrorCode::AlreadyExists));
    assert_eq!(c.list_external_networks().unwrap().items, vec![vpn.clone()]);
    let o = c.overlaps().unwrap().items;
    assert_eq!(o.len(), 1);
    let names: BTreeSet<&str> = [o[0].a.name.as_str(), o[0].b.name.as_str()].into();
    assert_eq!(names, BTreeSet::from(["pods", "office-vpn"]));
    assert_eq!(o[0].shared.first, "10.50.128.0");
    // A new pool over the external network is refused naming it.
    let (s, code, _, body) = refusal(c.create_pool(&pool("more", "10.50.128.0/25")));
    assert_eq!((s, code), (409, ErrorCode::Overlap));
    let conflict = body.unwrap().error.conflict.unwrap();
    assert_eq!(conflict.name, "pods");
    let (s, _, _, body) = refusal(c.create_pool(
        &pool("more", "10.51.0.0/16").tap(|p| p.cidr = "10.50.128.0/24".parse().unwrap()),
    ));
    assert_eq!(s, 409);
    assert!(body.unwrap().error.conflict.is_some());
    let mut iso = pool("iso", "192.168.0.0/16");
    iso.scope = "lab".into();
    c.create_pool(&iso).unwrap();
    let lab_vpn = ScopeNetwork {
        name: "lab-vpn".into(),
        cidr: "192.168.5.0/24".parse().unwrap(),
        scope: "lab".into(),
        description: String::new(),
    };
    c.add_external_network(&lab_vpn).unwrap();
    let (s, _, _, body) = refusal(c.create_pool(&{
        let mut p = pool("iso2", "192.168.5.0/24");
        p.scope = "lab".into();
        p
    }));
    assert_eq!(s, 409);
    assert!(body.unwrap().error.conflict.is_some());
    c.delete_external_network("office-vpn").unwrap();
    assert_eq!(refusal(c.delete_external_network("office-vpn")).0, 404);
    assert_eq!(
        c.overlaps().unwrap().items.len(),
        1,
        "lab pool vs lab-vpn remains"
    );
    // Host bits in an external network: 400 naming cidr.
    let bad = ScopeNetwork {
        name: "b".into(),
        cidr: "10.0.0.1/8".parse().unwrap(),
        scope: "default".into(),
        description: String::new(),
    };
    let (s, _, _, body) = refusal(c.add_external_network(&bad));
    assert_eq!(s, 400);
    assert_eq!(body.unwrap().error.field.as_deref(), Some("cidr"));
}

trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl<T> Tap for T {}

#[test]
fn usage_per_pool_and_node() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let mut p = pool("u", "10.60.0.0/24");
    p.block_prefix_length = Some(28);
    c.create_pool(&p).unwrap();
    c.create_pool(&pool("big6", "fd00:60::/48")).unwrap();
    for i in 0..5 {
        c.allocate(&AllocateRequest::from_pools(&format!("h{i}"), "n1", &["u"]))
            .unwrap();
    }
    c.allocate(&AllocateRequest::from_pools("h9", "n2", &["u", "big6"]))
        .unwrap();
    let u = c.usage().unwrap();
    assert_eq!(u.pools.len(), 2);
    let up = u.pools.iter().find(|p| p.pool == "u").unwrap();
    assert_eq!(up.counts.size, "256");
    assert_eq!(up.counts.held, 6);
    let n1 = up.nodes.iter().find(|n| n.node == "n1").unwrap();
    assert_eq!((n1.blocks, n1.held), (1, 5));
    let n2 = up.nodes.iter().find(|n| n.node == "n2").unwrap();
    assert_eq!((n2.blocks, n2.held), (1, 1));
    assert!(up.counts.percent_used > 2.0 && up.counts.percent_used < 3.0);
    let big = u.pools.iter().find(|p| p.pool == "big6").unwrap();
    assert_eq!(
        big.counts.size,
        (1u128 << 80).to_string(),
        "IPv6 sizes as exact decimal strings"
    );
    let total_n2 = u.nodes.iter().find(|n| n.node == "n2").unwrap();
    assert_eq!((total_n2.blocks, total_n2.held), (2, 2));
    kipam_api::time::parse(&u.time).unwrap();
    // Raw JSON: size is a string.
    let r = c.raw("GET", "/v1/usage", &[], None).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(v["pools"][0]["size"].is_string());
}

#[test]
fn address_history_and_holder_at() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let mut p = pool("h", "10.70.0.0/28");
    p.reuse_delay_seconds = 0;
    c.create_pool(&p).unwrap();
    let mut req = AllocateRequest::from_pools("net/first/eth0", "n1", &["h"]);
    req.pod = Some(PodRef {
        namespace: Some("ns".into()),
        name: Some("a".into()),
        uid: None,
    });
    let addr = c.allocate(&req).unwrap().addresses[0].address;
    let info = c.address(addr, None).unwrap();
    assert_eq!(info.pool.as_deref(), Some("h"));
    assert_eq!(info.state, kipam_api::addresses::AddressState::Held);
    assert_eq!(info.holder.as_ref().unwrap().handle, "net/first/eth0");
    assert_eq!(info.holder.as_ref().unwrap().attrs["k8s.pod.name"], "a");
    let t_first = kipam_api::time::parse(&info.history[0].time).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    c.release("net/first/eth0").unwrap();
    std::thread::sleep(Duration::from_millis(30));
    // A pool of 13 usable addresses with no quarantine: ask statically for the same one.
    let again = AllocateRequest {
        handle: "net/second/eth0".into(),
        node: "n2".into(),
        attrs: Default::default(),
        pod: None,
        requests: vec![AddressRequest {
            pools: Some(vec!["h".into()]),
            address: Some(addr),
            ..Default::default()
        }],
    };
    c.allocate(&again).unwrap();
    let info = c.address(addr, None).unwrap();
    let kinds: Vec<&str> = info.history.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["allocate", "release", "allocate"]);
    assert_eq!(info.holder.unwrap().handle, "net/second/eth0");
    let t_release = kipam_api::time::parse(&info.history[1].time).unwrap();
    let t_second = kipam_api::time::parse(&info.history[2].time).unwrap();

    let at = |t| c.address(addr, Some(t)).unwrap().holder.map(|h| h.handle);
    assert_eq!(at(t_first.saturating_sub(1000)), None);
    assert_eq!(at(t_first).as_deref(), Some("net/first/eth0"));
    assert_eq!(at(t_release - 1).as_deref(), Some("net/first/eth0"));
    assert_eq!(at(t_release), None);
    assert_eq!(at(t_second).as_deref(), Some("net/second/eth0"));
    // With an offset, and malformed.
    let r = c
        .raw(
            "GET",
            &format!("/v1/addresses/{addr}?at=2000-01-01T01:00:00%2B01:00"),
            &[],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let r = c
        .raw(
            "GET",
            &format!("/v1/addresses/{addr}?at=yesterday"),
            &[],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 400);
    let body: kipam_api::ErrorBody = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body.error.field.as_deref(), Some("at"));
    let r = c.raw("GET", "/v1/addresses/not-an-ip", &[], None).unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        c.address(ip("8.8.8.8"), None).unwrap().state,
        kipam_api::addresses::AddressState::Unmanaged
    );
    assert_eq!(
        c.address(ip("10.70.0.0"), None).unwrap().state,
        kipam_api::addresses::AddressState::Reserved
    );
}

#[test]
fn gc_report_pending_then_reclaimed_after_grace() {
    let d = Daemon::start(&["--sample-interval", "1", "--gc-grace", "1"]);
    let c = d.client();
    c.create_pool(&pool("g", "10.80.0.0/24")).unwrap();
    for h in ["net/a/eth0", "net/b/eth0", "net/c/eth0"] {
        c.allocate(&AllocateRequest::from_pools(h, "n1", &["g"]))
            .unwrap();
    }
    c.allocate(&AllocateRequest::from_pools("net/z/eth0", "n2", &["g"]))
        .unwrap();
    let (s, _, _, body) = refusal(c.gc(&GcRequest::default()));
    assert_eq!(s, 400);
    assert_eq!(body.unwrap().error.field.as_deref(), Some("node"));
    let r = c
        .gc(&GcRequest {
            node: Some("n1".into()),
            network: Some("net".into()),
            valid: vec!["net/a/eth0".into()],
            grace_seconds: None,
        })
        .unwrap();
    let pending: BTreeSet<String> = r.pending.iter().map(|p| p.handle.clone()).collect();
    assert_eq!(
        pending,
        BTreeSet::from(["net/b/eth0".to_string(), "net/c/eth0".to_string()])
    );
    assert_eq!(c.pending_reclaims().unwrap().pending.len(), 2);
    // c comes back as valid before the grace runs out: no longer pending.
    c.gc(&GcRequest {
        node: Some("n1".into()),
        network: None,
        valid: vec!["net/a/eth0".into(), "net/c/eth0".into()],
        grace_seconds: None,
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if c.get_allocation("net/b/eth0").is_err()
            && c.pending_reclaims().unwrap().pending.is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not reclaimed: {:?}",
            c.pending_reclaims()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(refusal(c.get_allocation("net/b/eth0")).0, 404);
    c.get_allocation("net/a/eth0").unwrap();
    c.get_allocation("net/c/eth0").unwrap();
    c.get_allocation("net/z/eth0").unwrap();
    // The reclaim is in the address's history and in the metrics.
    let b_addr = c
        .list_allocations(&AllocationQuery::default())
        .unwrap()
        .items
        .iter()
        .flat_map(|h| h.addresses.iter().map(|a| a.address))
        .collect::<BTreeSet<_>>();
    let all: Vec<IpAddr> = (1..=4).map(|i| ip(&format!("10.80.0.{i}"))).collect();
    let reclaimed = all.iter().find(|a| !b_addr.contains(a)).unwrap();
    let kinds: Vec<String> = c
        .address(*reclaimed, None)
        .unwrap()
        .history
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["allocate", "reclaim"]);
    let m = String::from_utf8(c.raw("GET", "/metrics", &[], None).unwrap().body).unwrap();
    assert!(m.lines().any(|l| l == "kipam_reclaimed_total 1"), "{m}");
}

#[test]
fn refusals_have_the_error_shape() {
    let d = Daemon::start(&[]);
    let c = d.client();
    c.create_pool(&pool("r", "10.90.0.0/30")).unwrap();
    let json = [("Content-Type", "application/json")];
    let check = |r: kipam_api::client::Response, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        let b: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(b["error"]["code"], code, "{b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    };
    check(
        c.raw("POST", "/v1/allocations", &json, Some(b"{not json"))
            .unwrap(),
        400,
        "invalid_argument",
    );
    check(
        c.raw("POST", "/v1/allocations", &[], Some(b"{}")).unwrap(),
        415,
        "unsupported_media_type",
    );
    check(
        c.raw("POST", "/v1/allocations", &json, Some(br#"{"handle": 5}"#))
            .unwrap(),
        422,
        "invalid_argument",
    );
    let big = vec![b'x'; 2 * 1024 * 1024];
    check(
        c.raw("POST", "/v1/pools", &json, Some(&big)).unwrap(),
        413,
        "payload_too_large",
    );
    check(
        c.raw("GET", "/v1/nothing", &[], None).unwrap(),
        404,
        "not_found",
    );
    check(
        c.raw("PUT", "/v1/usage", &[], None).unwrap(),
        405,
        "method_not_allowed",
    );
    check(
        c.raw("GET", "/v1/pools/nope", &[], None).unwrap(),
        404,
        "not_found",
    );
    check(
        c.raw("POST", "/v1/plan", &json, Some(b"{}")).unwrap(),
        422,
        "invalid_argument",
    );
    check(
        c.raw(
            "POST",
            "/v1/plan",
            &json,
            Some(br#"{"clusters": [], "supernets": []}"#),
        )
        .unwrap(),
        400,
        "invalid_argument",
    );
    check(
        c.raw("DELETE", "/v1/pools/r?force=maybe", &[], None)
            .unwrap(),
        400,
        "invalid_argument",
    );
    c.allocate(&AllocateRequest::from_pools("x1", "n", &["r"]))
        .unwrap();
    c.allocate(&AllocateRequest::from_pools("x2", "n", &["r"]))
        .unwrap();
    let r = c
        .raw(
            "POST",
            "/v1/allocations",
            &json,
            Some(&serde_json::to_vec(&AllocateRequest::from_pools("x3", "n", &["r"])).unwrap()),
        )
        .unwrap();
    check(r, 422, "exhausted");
}

#[test]
fn metrics_parse_and_have_the_names() {
    let d = Daemon::start(&[]);
    let c = d.client();
    c.create_pool(&pool("m", "10.100.0.0/24")).unwrap();
    c.allocate(&AllocateRequest::from_pools("m1", "node-a", &["m"]))
        .unwrap();
    let _ = c.allocate(&AllocateRequest::from_pools("m2", "node-a", &["nope"]));
    let r = c.raw("GET", "/metrics", &[], None).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = String::from_utf8(r.body).unwrap();
    // Every line is a comment, empty, or `name{labels} value` with a float value.
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        names.insert(name.to_string());
    }
    for want in [
        "kipam_pool_addresses",
        "kipam_pool_utilization_ratio",
        "kipam_allocations_total",
        "kipam_allocation_duration_seconds_bucket",
        "kipam_blocks",
        "kipam_store_commit_duration_seconds_bucket",
        "kipam_store_sync_duration_seconds_bucket",
        "kipam_store_wal_bytes",
        "kipam_store_unfolded_events",
        "kipam_commit_batch_size_bucket",
        "kipam_reclaimed_total",
    ] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    assert!(
        text.contains(r#"kipam_pool_addresses{pool="m",family="ipv4",state="held"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"kipam_blocks{pool="m",node="node-a"} 1"#),
        "{text}"
    );
    // The allocation was synced, and the WAL holds its frames.
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing: {text}"))
    };
    assert!(value("kipam_store_sync_duration_seconds_count") >= 1.0);
    assert!(value("kipam_store_wal_bytes") > 0.0);
    assert!(
        text.contains(r#"kipam_allocations_total{pool="m",result="ok"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"kipam_allocations_total{pool="nope",result="not_found"} 1"#),
        "{text}"
    );
    assert!(text.contains("# EOF"));
}

#[test]
fn dashboard_is_self_contained() {
    let d = Daemon::start(&[]);
    let r = d.client().raw("GET", "/", &[], None).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let html = String::from_utf8(r.body).unwrap();
    assert!(html.contains("kipam dashboard"));
    assert!(html.contains("/v1/usage"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );
}

#[test]
fn forecast_of_one_nodes_blocks() {
    let d = Daemon::start(&["--sample-interval", "1"]);
    let c = d.client();
    // /26 blocks, at most 2 per node: a node's blocks can hold 128 addresses, less the
    // pool's network address for n2, whose block is the first.
    let mut p = pool("nf", "10.88.0.0/24");
    p.max_blocks_per_node = Some(2);
    c.create_pool(&p).unwrap();
    c.allocate(&AllocateRequest::from_pools("flat", "n2", &["nf"]))
        .unwrap();
    let get = |q: &str| {
        let r = c
            .raw("GET", &format!("/v1/pools/nf/forecast?{q}"), &[], None)
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        (r.status, body)
    };
    let q = "window=1m&minSpan=4s&node=n1";
    // n1 has neither blocks nor samples yet.
    let (s, b) = get(q);
    assert_eq!(s, 404, "{b:#}");
    assert_eq!(b["error"]["code"], "not_found", "{b:#}");
    assert_eq!(b["error"]["field"], "node", "{b:#}");
    // Grow n1 by 4 addresses a second for 8 s while kipamd samples every second.
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(8) {
        for _ in 0..2 {
            c.allocate(&AllocateRequest::from_pools(
                &format!("h{n}"),
                "n1",
                &["nf"],
            ))
            .unwrap();
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (s, f) = get(q);
    assert_eq!(s, 200, "{f:#}");
    assert_eq!(f["pool"], "nf");
    assert_eq!(f["node"], "n1");
    assert_eq!(f["status"], "growing", "{f:#}");
    assert_eq!(f["used"], n.to_string(), "{f:#}");
    assert_eq!(f["size"], "128", "{f:#}");
    let per_day = f["growthPerDay"].as_f64().unwrap();
    // 4 addresses/s is 345,600 a day; allow for timing slack.
    assert!((200_000.0..500_000.0).contains(&per_day), "{f:#}");
    assert!(f["etaSeconds"].as_u64().unwrap() < 120, "{f:#}");
    // The node that did not grow; the pool as a whole has no `node`.
    let (s, flat) = get("window=1m&minSpan=4s&node=n2");
    assert_eq!(s, 200, "{flat:#}");
    assert_eq!(flat["status"], "not-growing", "{flat:#}");
    assert_eq!(flat["size"], "127", "{flat:#}");
    let (s, whole) = get("window=1m&minSpan=4s");
    assert_eq!(s, 200, "{whole:#}");
    assert!(whole.get("node").is_none(), "{whole:#}");
    assert_eq!(whole["status"], "growing", "{whole:#}");
    // Refusals: an empty node, a pool that does not exist.
    let (s, b) = get("node=");
    assert_eq!(s, 400, "{b:#}");
    assert_eq!(b["error"]["field"], "node", "{b:#}");
    let r = c
        .raw("GET", "/v1/pools/nope/forecast?node=n1", &[], None)
        .unwrap();
    assert_eq!(r.status, 404);
}
