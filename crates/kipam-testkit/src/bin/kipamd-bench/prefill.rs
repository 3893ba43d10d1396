//! Filling a store without kipamd (`--fill-mode offline`): the same engine
//! (`kipam_core::Ipam`) allocates in memory and its changes are written with the same keys
//! and encodings kipamd uses (`kipam_store::ipam::write_dirty`), 100,000 allocations per
//! transaction. What it leaves out is the history (`events/`, `history/`), which kipamd
//! does not read at start, so restart time and memory after a restart are measured on the
//! same state as after a fill through the API — in a fraction of the time.

use std::path::Path;

use kipam_api::allocations::AllocateRequest;
use kipam_core::{Ipam, PoolConfig};
use kipam_store::{IpamError, SqliteOptions, SqliteStore};

use crate::Result;
use crate::load::POOL;

/// Writes `n` allocations (handles `bench/fill/{client}/{k}` over 64 nodes, as the API
/// fill names them) into a fresh store in `dir`.
pub fn offline(dir: &Path, n: u64, now: u64) -> Result<()> {
    let store = SqliteStore::open(
        dir,
        &SqliteOptions {
            create_dir: true,
            ..SqliteOptions::default()
        },
    )?;
    let mut ipam = Ipam::new();
    let cidr = "10.0.0.0/8".parse().map_err(|e| format!("{e}"))?;
    ipam.create_pool(PoolConfig::new(POOL, cidr))?;
    let per_client = n.div_ceil(64);
    let mut done = 0u64;
    'fill: for k in 0..per_client {
        for client in 0..64u64 {
            if done == n {
                break 'fill;
            }
            let handle = format!("bench/fill/{client}/{k}");
            let node = format!("node-{client}");
            let req = AllocateRequest::from_pools(&handle, &node, &[POOL])
                .to_core()
                .map_err(|e| format!("{}: {}", e.field, e.reason))?;
            ipam.allocate(&req, now)?;
            done += 1;
            if done.is_multiple_of(100_000) {
                write(&store, &mut ipam)?;
            }
        }
    }
    write(&store, &mut ipam)
}

fn write(store: &SqliteStore, ipam: &mut Ipam) -> Result<()> {
    kipam_store::transact(store, |txn| -> Result<(), IpamError> {
        kipam_store::ipam::write_dirty(txn, ipam)
    })?;
    Ok(())
}
