//! Puts N addresses in each plugin's state before the timed calls, without execs.
//!
//! - host-local (containernetworking/plugins v1.1.1, `backend/disk`): one file per
//!   address in `dataDir/<network>/`, named by the address, holding
//!   `<containerID>\r\n<ifname>`, plus `last_reserved_ip.0` with the last address handed
//!   out. (Checked against Debian's binary: one ADD writes exactly these.) Addresses are
//!   written from network+2 upward, as host-local hands them out (network+1 is the
//!   gateway).
//! - kipam: the plugin's own pools ([`kipam_cni::standalone::pools_for`] of the parsed
//!   config) and one handle per attachment (`handle_key`, node `NODE`, the plugin's
//!   attributes), allocated through [`IpamStore`], i.e. the same records the plugin
//!   writes. 60,000 durable commits would take minutes, so the store is built once per
//!   size on a tmpfs (fsync is free there, the file is the same) and the closed file is
//!   copied into each scenario's data directory on the real disk.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ipnet::Ipv4Net;
use kipam_cni::Attachment;
use kipam_cni::standalone::{NODE, handle_key, pool_name, pools_for};
use kipam_core::{AllocRequest, Source, Want};
use kipam_store::{IpamStore, SqliteOptions, SqliteStore};
use kipam_testkit::now_millis;

use crate::{NETWORK, Plugin, Result};

/// Writes host-local's state for `count` addresses of `subnet` under `data_dir`.
pub fn host_local(data_dir: &Path, network: &str, subnet: Ipv4Net, count: u32) -> Result<()> {
    let dir = data_dir.join(network);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let first = u32::from(subnet.network()) + 2;
    let mut last = None;
    for i in 0..count {
        let addr = Ipv4Addr::from(first + i);
        let path = dir.join(addr.to_string());
        let mut f = std::fs::File::create(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        f.write_all(format!("prefill-{i}\r\neth0").as_bytes())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        last = Some(addr);
    }
    if let Some(last) = last {
        let path = dir.join("last_reserved_ip.0");
        std::fs::write(&path, last.to_string())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Flushes every dirty page to disk (`sync(1)`).
pub fn sync() -> Result<()> {
    let status = std::process::Command::new("sync")
        .status()
        .map_err(|e| format!("running sync: {e}"))?;
    if !status.success() {
        return Err(format!("sync failed: {status}").into());
    }
    Ok(())
}

/// A kipam data directory with addresses already allocated, to copy from.
#[derive(Debug)]
pub struct Template {
    dir: PathBuf,
}

/// Builds kipam's store with `count` attachments holding an address of `subnet`, under
/// `base` (a tmpfs).
pub fn kipam_template(base: &Path, subnet: Ipv4Net, count: u32) -> Result<Template> {
    let dir = base.join(format!("kipam-cni-bench-{}-{count}", std::process::id()));
    crate::remove_dir(&dir)?;
    let started = Instant::now();
    let conf = kipam_cni::config::parse(&crate::config(Plugin::Kipam, &dir, subnet), &[])
        .map_err(|e| format!("the bench's own kipam config is refused: {e}"))?;
    let ipam = &conf.ipam;
    let opts = SqliteOptions {
        create_dir: true,
        ..SqliteOptions::default()
    };
    let store = IpamStore::new(
        SqliteStore::open(&dir, &opts).map_err(|e| format!("opening {}: {e}", dir.display()))?,
    );
    // As the plugin computes it (whole seconds, rounded up).
    let reuse = ipam.reuse_delay.as_secs() + u64::from(ipam.reuse_delay.subsec_nanos() > 0);
    let now = now_millis();
    for pool in pools_for(&ipam.network, &ipam.range_sets, reuse) {
        store
            .ensure_pool(&pool, now)
            .map_err(|e| format!("creating pool {}: {e}", pool.name))?;
    }
    let wants: Vec<Want> = ipam
        .range_sets
        .iter()
        .map(|set| {
            let mut pools: Vec<String> = set
                .iter()
                .map(|r| pool_name(&ipam.network, r.subnet))
                .collect();
            pools.dedup();
            Want {
                source: Source::Pools(pools),
                addr: None,
            }
        })
        .collect();
    for i in 0..count {
        let attachment = Attachment {
            network: NETWORK.to_string(),
            container_id: format!("prefill-{i}"),
            ifname: "eth0".to_string(),
        };
        let attrs = BTreeMap::from([
            (
                "cni.containerId".to_string(),
                attachment.container_id.clone(),
            ),
            ("cni.ifname".to_string(), attachment.ifname.clone()),
            ("cni.network".to_string(), attachment.network.clone()),
        ]);
        let req = AllocRequest {
            handle: handle_key(&attachment),
            node: NODE.to_string(),
            attrs,
            wants: wants.clone(),
        };
        store
            .allocate(&req, now_millis())
            .map_err(|e| format!("pre-filling allocation {i}: {e}"))?;
    }
    // Closing the last connection checkpoints the WAL into the main file.
    drop(store);
    eprintln!(
        "kipam store with {count} allocated built in {:.1?}",
        started.elapsed()
    );
    Ok(Template { dir })
}

impl Template {
    /// Copies the store's files into `data_dir`.
    pub fn copy_to(&self, data_dir: &Path) -> Result<()> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| format!("reading {}: {e}", self.dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("reading {}: {e}", self.dir.display()))?;
            let to = data_dir.join(entry.file_name());
            std::fs::copy(entry.path(), &to)
                .map_err(|e| format!("copying to {}: {e}", to.display()))?;
        }
        Ok(())
    }

    /// Deletes the template.
    pub fn remove(self) -> Result<()> {
        crate::remove_dir(&self.dir)
    }
}
