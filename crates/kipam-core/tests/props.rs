//! Property tests of the allocation engine's invariants, driven by random operation
//! sequences over a few nodes and an injected clock:
//! - an address is never held twice ([`Ipam::check`] after every step, and our own set);
//! - per block, free + held + quarantined + reserved == block size, and the summary agrees
//!   with the per-address states;
//! - the engine's bookkeeping agrees with a reference model (which addresses each handle
//!   holds), and a dynamic allocation never returns an address held or reserved;
//! - dual-stack requests are all-or-nothing under random exhaustion;
//! - an IPv6 /64 pool works at full size (statics anywhere plus dynamics).
//!
//! Case counts are modest so the suite runs in seconds in a debug build.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kipam_core::prefix::{addr_to_u128, u128_to_addr};
use kipam_core::{
    AddrRange, AddrState, AllocRequest, Error, Family, Ipam, Millis, PoolConfig, Source, Want,
};
use proptest::prelude::*;

const T0: Millis = 1_000_000;

#[derive(Clone, Debug)]
enum Op {
    /// A dynamic request from `pool` (index) for handle `h` on node `n`.
    Alloc { h: u8, n: u8 },
    /// A static request for the address at `offset` in the pool.
    Static { h: u8, n: u8, offset: u64 },
    /// Release a handle.
    Release { h: u8 },
    /// Release whichever address is at `offset`.
    ReleaseAddr { offset: u64 },
    /// Move the clock forward.
    Advance { ms: u32 },
    /// Give empty blocks back.
    Reclaim,
}

fn op(handles: u8, nodes: u8, offsets: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..handles, 0..nodes).prop_map(|(h, n)| Op::Alloc { h, n }),
        2 => (0..handles, 0..nodes, 0..offsets).prop_map(|(h, n, offset)| Op::Static { h, n, offset }),
        4 => (0..handles).prop_map(|h| Op::Release { h }),
        1 => (0..offsets).prop_map(|offset| Op::ReleaseAddr { offset }),
        2 => (0u32..20_000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Reclaim),
    ]
}

fn key(h: u8) -> String {
    format!("net/c{h}/eth0")
}

fn node(n: u8) -> String {
    format!("node-{n}")
}

fn request(h: u8, n: u8, pool: &str, addr: Option<IpAddr>) -> AllocRequest {
    AllocRequest {
        handle: key(h),
        node: node(n),
        attrs: BTreeMap::new(),
        wants: vec![Want {
            source: Source::Pools(vec![pool.into()]),
            addr,
        }],
    }
}

/// Every address held in the engine's blocks, with its holder's key.
fn engine_held(ipam: &Ipam) -> BTreeMap<IpAddr, String> {
    let mut out = BTreeMap::new();
    for p in ipam.pools() {
        for b in p.blocks() {
            for (off, id) in b.held() {
                let addr = u128_to_addr(p.prefix().family, b.prefix().base + u128::from(off));
                let prev = out.insert(addr, ipam.key_of(id).to_string());
                assert!(prev.is_none(), "{addr} held twice");
            }
        }
    }
    out
}

/// Checks every block's counts against its per-address states.
fn check_blocks(ipam: &Ipam) -> Result<(), TestCaseError> {
    for p in ipam.pools() {
        for b in p.blocks() {
            let s = b.summary();
            prop_assert_eq!(s.free + s.held + s.quarantined + s.reserved, b.size());
            let mut counts = [0u32; 4];
            for o in 0..b.size() {
                let i = match b.state(o) {
                    AddrState::Free => 0,
                    AddrState::Held(_) => 1,
                    AddrState::Quarantined(_) => 2,
                    AddrState::Reserved => 3,
                };
                counts[i] += 1;
            }
            prop_assert_eq!(counts, [s.free, s.held, s.quarantined, s.reserved]);
        }
    }
    Ok(())
}

/// The reference model: what each handle holds.
#[derive(Default)]
struct Model {
    held: BTreeMap<String, BTreeSet<IpAddr>>,
}

impl Model {
    fn all(&self) -> BTreeMap<IpAddr, String> {
        let mut out = BTreeMap::new();
        for (k, addrs) in &self.held {
            for a in addrs {
                assert!(out.insert(*a, k.clone()).is_none(), "model holds {a} twice");
            }
        }
        out
    }

    fn count(&self) -> usize {
        self.held.values().map(BTreeSet::len).sum()
    }
}

/// The model and the engine agree: the same addresses held, by the same handles.
fn agree(ipam: &Ipam, model: &Model) -> Result<(), TestCaseError> {
    if let Err(e) = ipam.check() {
        return Err(TestCaseError::fail(e));
    }
    check_blocks(ipam)?;
    prop_assert_eq!(engine_held(ipam), model.all());
    let handles: BTreeMap<String, BTreeSet<IpAddr>> = ipam
        .handles()
        .map(|h| (h.key.to_string(), h.addrs.iter().map(|a| a.addr).collect()))
        .collect();
    prop_assert_eq!(&handles, &model.held);
    Ok(())
}

/// A small IPv4 pool with a gateway, an exclusion, /28 blocks and a 5 s reuse delay.
fn small_v4() -> (Ipam, PoolConfig) {
    let mut c = PoolConfig::new("p", "10.0.0.0/25".parse().expect("cidr"));
    c.block_prefix_length = Some(28);
    c.gateway = Some("10.0.0.1".parse().expect("ip"));
    c.exclusions = vec![
        AddrRange::new(
            "10.0.0.64".parse().expect("ip"),
            "10.0.0.67".parse().expect("ip"),
        )
        .expect("range"),
    ];
    c.reuse_delay_seconds = 5;
    c.empty_block_grace_seconds = 10;
    let mut ipam = Ipam::new();
    ipam.create_pool(c.clone()).expect("pool");
    (ipam, c)
}

/// Runs `ops` against the engine and the model, checking after every step.
fn run(ipam: &mut Ipam, pool: &str, ops: &[Op]) -> Result<(), TestCaseError> {
    let p = ipam.pool(pool).expect("pool");
    let (family, base) = (p.prefix().family, p.prefix().base);
    let size = p.prefix().size();
    let usable = size - p.usage().reserved;
    let at = |offset: u64| u128_to_addr(family, base + u128::from(offset) % size);
    let mut model = Model::default();
    let mut now = T0;
    for op in ops {
        match *op {
            Op::Alloc { h, n } => {
                let before = model.all();
                let result = ipam.allocate(&request(h, n, pool, None), now);
                match model.held.get(&key(h)) {
                    Some(mine) => {
                        let got: BTreeSet<IpAddr> = result
                            .expect("a repeat gets what it holds")
                            .iter()
                            .map(|a| a.addr)
                            .collect();
                        prop_assert_eq!(&got, mine);
                    }
                    None if (model.count() as u128) < usable => {
                        let got = result
                            .map_err(|e| TestCaseError::fail(format!("room left but {e}")))?;
                        let a = got[0].addr;
                        prop_assert!(!before.contains_key(&a), "{} handed out while held", a);
                        let reason = ipam.pool(pool).expect("pool").reserved_reason(a);
                        prop_assert!(reason.is_none(), "{} is reserved", a);
                        model.held.insert(key(h), BTreeSet::from([a]));
                    }
                    None => {
                        prop_assert!(
                            matches!(result, Err(Error::PoolExhausted { .. })),
                            "full pool: {:?}",
                            result
                        );
                    }
                }
            }
            Op::Static { h, n, offset } => {
                let a = at(offset);
                let result = ipam.allocate(&request(h, n, pool, Some(a)), now);
                let holders = model.all();
                let reserved = ipam.pool(pool).expect("pool").reserved_reason(a);
                match (model.held.get(&key(h)), holders.get(&a), reserved) {
                    (Some(mine), _, _) => {
                        let got: BTreeSet<IpAddr> = result
                            .expect("a repeat gets what it holds")
                            .iter()
                            .map(|x| x.addr)
                            .collect();
                        prop_assert_eq!(&got, mine);
                    }
                    (None, Some(holder), _) => {
                        prop_assert_eq!(
                            result,
                            Err(Error::AddressInUse {
                                addr: a,
                                holder: holder.clone()
                            })
                        );
                    }
                    (None, None, Some(reason)) => {
                        prop_assert_eq!(
                            result,
                            Err(Error::AddressReserved {
                                addr: a,
                                pool: pool.into(),
                                reason
                            })
                        );
                    }
                    (None, None, None) => {
                        let got = result
                            .map_err(|e| TestCaseError::fail(format!("static {a} refused: {e}")))?;
                        prop_assert_eq!(got[0].addr, a);
                        model.held.insert(key(h), BTreeSet::from([a]));
                    }
                }
            }
            Op::Release { h } => {
                let got: BTreeSet<IpAddr> = ipam
                    .release_handle(&key(h), now)
                    .expect("release")
                    .iter()
                    .map(|a| a.addr)
                    .collect();
                prop_assert_eq!(got, model.held.remove(&key(h)).unwrap_or_default());
            }
            Op::ReleaseAddr { offset } => {
                let a = at(offset);
                let holder = model.all().get(&a).cloned();
                prop_assert_eq!(
                    ipam.release_address(pool, a, now).expect("release"),
                    holder.clone()
                );
                if let Some(k) = holder {
                    let mine = model.held.get_mut(&k).expect("model handle");
                    mine.remove(&a);
                    if mine.is_empty() {
                        model.held.remove(&k);
                    }
                }
            }
            Op::Advance { ms } => now += Millis::from(ms),
            Op::Reclaim => {
                for (_, block) in ipam.reclaim_empty_blocks(now) {
                    let range = block.range();
                    prop_assert!(
                        !model.all().keys().any(|a| range.contains(*a)),
                        "reclaimed {} while it holds an address",
                        block
                    );
                }
            }
        }
        agree(ipam, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// (a), (b), (c): never held twice, counts add up, the model agrees.
    #[test]
    fn random_sequences_agree_with_the_model(ops in prop::collection::vec(op(40, 4, 128), 1..200)) {
        let (mut ipam, _) = small_v4();
        run(&mut ipam, "p", &ops)?;
    }

    /// The same with a pool small enough to be exhausted often (quarantine as last resort,
    /// borrowing between nodes, block limits).
    #[test]
    fn tight_pool_with_block_limit(ops in prop::collection::vec(op(24, 3, 32), 1..200)) {
        let mut c = PoolConfig::new("p", "10.1.0.0/27".parse().expect("cidr"));
        c.block_prefix_length = Some(29);
        c.max_blocks_per_node = Some(2);
        c.reuse_delay_seconds = 3;
        c.empty_block_grace_seconds = 2;
        let mut ipam = Ipam::new();
        ipam.create_pool(c).expect("pool");
        run(&mut ipam, "p", &ops)?;
    }

    /// (e): an IPv6 /64 at full size: statics anywhere in the 2^64 addresses plus dynamics.
    #[test]
    fn ipv6_slash64_at_full_size(ops in prop::collection::vec(op(40, 4, u64::MAX), 1..120)) {
        let mut c = PoolConfig::new("v6", "fd00:64::/64".parse().expect("cidr"));
        c.reuse_delay_seconds = 2;
        let mut ipam = Ipam::new();
        ipam.create_pool(c).expect("pool");
        run(&mut ipam, "v6", &ops)?;
        let blocks = ipam.pool("v6").expect("pool").block_claims().count();
        prop_assert!(blocks <= ops.len(), "{} blocks for {} operations", blocks, ops.len());
    }
}

#[derive(Clone, Debug)]
enum DualOp {
    Dual { h: u8 },
    Single { h: u8, v6: bool },
    Release { h: u8 },
}

fn dual_op() -> impl Strategy<Value = DualOp> {
    prop_oneof![
        3 => (0u8..48).prop_map(|h| DualOp::Dual { h }),
        3 => (0u8..48, any::<bool>()).prop_map(|(h, v6)| DualOp::Single { h, v6 }),
        2 => (0u8..48).prop_map(|h| DualOp::Release { h }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// (d): a dual-stack request either gets one address of each family or changes
    /// nothing at all, however the two pools fill up.
    #[test]
    fn dual_stack_is_all_or_nothing(ops in prop::collection::vec(dual_op(), 1..150)) {
        let mut v4 = PoolConfig::new("v4", "10.2.0.0/28".parse().expect("cidr"));
        v4.block_prefix_length = Some(29);
        let mut v6 = PoolConfig::new("v6", "fd00:2::/124".parse().expect("cidr"));
        v6.block_prefix_length = Some(125);
        v6.reuse_delay_seconds = 0;
        let mut ipam = Ipam::new();
        ipam.create_pool(v4).expect("pool");
        ipam.create_pool(v6).expect("pool");
        let from = |pool: &str| Want { source: Source::Pools(vec![pool.into()]), addr: None };
        let mut now = T0;
        for op in ops {
            now += 100;
            let usage = |ipam: &Ipam| (ipam.pool("v4").expect("pool").usage(), ipam.pool("v6").expect("pool").usage());
            let before = (usage(&ipam), engine_held(&ipam));
            let (full4, full6) = (before.0.0.free + before.0.0.quarantined == 0, before.0.1.free + before.0.1.quarantined == 0);
            match op {
                DualOp::Dual { h } | DualOp::Single { h, .. } if ipam.handle(&key(h)).is_some() => {
                    let held = ipam.handle(&key(h)).expect("handle").addrs.clone();
                    let wants = vec![from("v4"), from("v6")];
                    let req = AllocRequest { handle: key(h), node: node(h % 3), attrs: BTreeMap::new(), wants };
                    prop_assert_eq!(ipam.allocate(&req, now).expect("repeat"), held);
                    prop_assert_eq!(&before, &(usage(&ipam), engine_held(&ipam)));
                }
                DualOp::Dual { h } => {
                    let wants = vec![from("v4"), from("v6")];
                    let req = AllocRequest { handle: key(h), node: node(h % 3), attrs: BTreeMap::new(), wants };
                    match ipam.allocate(&req, now) {
                        Ok(got) => {
                            prop_assert!(!full4 && !full6, "allocated from a full pool");
                            prop_assert_eq!(got.len(), 2);
                            prop_assert_eq!(Family::of(got[0].addr), Family::Ipv4);
                            prop_assert_eq!(Family::of(got[1].addr), Family::Ipv6);
                        }
                        Err(e) => {
                            prop_assert!(full4 || full6, "refused with room: {}", e);
                            let family = if full4 { Family::Ipv4 } else { Family::Ipv6 };
                            let exhausted = matches!(e, Error::PoolExhausted { family: f, .. } if f == family);
                            prop_assert!(exhausted, "wrong error {:?}", e);
                            prop_assert_eq!(&before, &(usage(&ipam), engine_held(&ipam)));
                            prop_assert!(ipam.handle(&key(h)).is_none());
                        }
                    }
                }
                DualOp::Single { h, v6 } => {
                    let req = AllocRequest {
                        handle: key(h),
                        node: node(h % 3),
                        attrs: BTreeMap::new(),
                        wants: vec![from(if v6 { "v6" } else { "v4" })],
                    };
                    let full = if v6 { full6 } else { full4 };
                    prop_assert_eq!(ipam.allocate(&req, now).is_ok(), !full);
                }
                DualOp::Release { h } => {
                    ipam.release_handle(&key(h), now).expect("release");
                }
            }
            if let Err(e) = ipam.check() {
                return Err(TestCaseError::fail(e));
            }
            check_blocks(&ipam)?;
        }
    }
}

#[test]
fn model_helpers_see_reserved_addresses() {
    // Guards the model's own assumptions: the pool's reserved addresses are what the
    // property tests treat as never handed out.
    let (ipam, c) = small_v4();
    let p = ipam.pool(&c.name).expect("pool");
    let reserved: Vec<u128> = (0..128u128)
        .filter(|o| {
            p.reserved_reason(u128_to_addr(Family::Ipv4, addr_to_u128(c.cidr.addr()) + o))
                .is_some()
        })
        .collect();
    assert_eq!(reserved, vec![0, 1, 64, 65, 66, 67, 127]);
    assert_eq!(p.usage().reserved, 7);
}
