//! The dispatcher's unit tests run against the real standalone backend (compiled only for
//! tests): a fresh SQLite store in a temp directory per fixture, whatever `dataDir` the
//! config names, so the tests exercise the same code a runtime does without touching
//! the machine's `/var/lib/kipam`.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use kipam_store::{IpamStore, SqliteOptions, SqliteStore};

use crate::backend::{Backend, PodAttrs};
use crate::config::IpamConfig;
use crate::error::CniError;
use crate::standalone;

/// A real store in a temp directory; removed on drop.
pub struct TestBackend {
    dir: PathBuf,
    seen_data_dir: RefCell<Option<PathBuf>>,
}

impl Default for TestBackend {
    fn default() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kipam-cni-unit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        TestBackend {
            dir,
            seen_data_dir: RefCell::new(None),
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestBackend {
    /// The factory used by the tests: the standalone backend over this fixture's store.
    pub fn for_config(&self, cfg: &IpamConfig) -> Result<Box<dyn Backend>, CniError> {
        *self.seen_data_dir.borrow_mut() = Some(cfg.data_dir.clone());
        let mut cfg = cfg.clone();
        cfg.data_dir = self.dir.clone();
        standalone::open(&cfg)
    }

    fn store(&self) -> IpamStore<SqliteStore> {
        let store = SqliteStore::open(
            &self.dir,
            &SqliteOptions {
                create_dir: true,
                ..SqliteOptions::default()
            },
        )
        .expect("open the fixture's store");
        IpamStore::new(store)
    }

    /// Number of addresses held, over all attachments.
    pub fn held(&self) -> usize {
        self.store()
            .handles_with_prefix("")
            .expect("list handles")
            .iter()
            .map(|h| h.addrs.len())
            .sum()
    }

    /// Whether container `id` holds anything.
    pub fn holds(&self, id: &str) -> bool {
        self.store()
            .handles_with_prefix("")
            .expect("list handles")
            .iter()
            .any(|h| {
                h.attrs.get("cni.containerId").map(String::as_str) == Some(id)
                    && !h.addrs.is_empty()
            })
    }

    /// The pod attributes recorded for container `id`.
    pub fn attrs(&self, id: &str) -> Option<PodAttrs> {
        let handles = self.store().handles_with_prefix("").expect("list handles");
        let h = handles
            .iter()
            .find(|h| h.attrs.get("cni.containerId").map(String::as_str) == Some(id))?;
        let get = |k: &str| h.attrs.get(k).cloned();
        Some(PodAttrs {
            namespace: get("k8s.pod.namespace"),
            name: get("k8s.pod.name"),
            uid: get("k8s.pod.uid"),
            infra_container_id: get("k8s.pod.infraContainerId"),
        })
    }

    /// The `dataDir` the last factory call saw.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.seen_data_dir.borrow().clone()
    }
}
