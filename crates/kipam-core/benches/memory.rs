//! Memory per held address: fills pools with 1,000,000 allocations and reports the growth
//! of the process's resident set (VmRSS in /proc/self/status) per held address.
//!
//! Run: `cargo bench -p kipam-core --bench memory`
//!
//! Everything the engine keeps for an allocation counts: the block's owner slot and
//! bitmaps, the handle record (key, node, attributes, addresses) and the interned key.
//! Handle keys look like CNI ones (`<network>/<64-hex container id>/eth0`). The dirty sets
//! are taken every 1,024 allocations during the fill, as the store layer takes them after
//! every operation, so they do not count. Under
//! `cargo test --all-targets` (no `--bench` argument) it runs a small fill as a smoke test.
//! Linux only (reads /proc); elsewhere it says so and reports nothing. The heap is
//! mimalloc's, as in kipamd (see `alloc.rs`); with transparent huge pages the resident set
//! grows in 2 MiB steps, which the per-address figure includes.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::hint::black_box;

use kipam_core::{AllocRequest, Ipam, Millis, PoolConfig, Source, Want};

const T0: Millis = 1_700_000_000_000;

/// Resident set size in bytes, if /proc/self/status says.
fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn fill(name: &str, cidr: &str, count: usize) -> Option<(Ipam, f64)> {
    let before = rss()?;
    let mut ipam = Ipam::new();
    ipam.create_pool(PoolConfig::new(name, cidr.parse().expect("bench CIDR")))
        .expect("bench pool");
    let mut req = AllocRequest {
        handle: String::new(),
        node: String::new(),
        attrs: BTreeMap::new(),
        wants: vec![Want {
            source: Source::Pools(vec![name.into()]),
            addr: None,
        }],
    };
    for i in 0..count {
        req.handle = format!("cni-net/{i:064x}/eth0");
        req.node = format!("node-{:02}", i % 64);
        ipam.allocate(&req, T0).expect("room while filling");
        if i % 1024 == 0 {
            drop(ipam.take_dirty());
        }
    }
    drop(ipam.take_dirty());
    let after = rss()?;
    Some((ipam, after.saturating_sub(before) as f64 / count as f64))
}

fn main() {
    let count = if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        10_000
    };
    if rss().is_none() {
        println!("memory: SKIPPED, /proc/self/status is not readable on this system");
        return;
    }
    // Each engine stays alive until the end, so the next one's growth is measured from a
    // resident set that does not hold freed (reusable) memory.
    let mut keep = Vec::new();
    for (name, cidr) in [("ipv4-/12", "10.0.0.0/12"), ("ipv6-/64", "fd00:10::/64")] {
        let Some((ipam, per_addr)) = fill(name, cidr, count) else {
            println!("memory: SKIPPED, /proc/self/status is not readable on this system");
            return;
        };
        let held = ipam.pool(name).expect("pool").usage().held;
        assert_eq!(held, count as u128, "every allocation is held");
        println!("memory/{name}: {held} held addresses, {per_addr:.0} bytes per held address");
        keep.push(ipam);
    }
    black_box(keep);
}
