//! kipam's durable state: the [`Store`] trait and its backends.
//!
//! Everything kipam persists — pools, blocks, handles, leases, events — lives in one
//! sorted key space of byte values. This crate owns that key space's storage; the IPAM
//! layer decides what the keys and values mean.
//!
//! ## Layout
//! - [`store`]: the contract. [`Store`] is compare-and-swap storage: every record carries
//!   the global [`Revision`] of its last write, batches of guarded [`Op`]s commit
//!   all-or-nothing, and read-modify-write logic runs through [`Store::run_txn`] /
//!   [`transact`]. Also [`optimistic_run_txn`], the retry loop for backends without a
//!   write lock.
//! - [`sqlite`]: [`SqliteStore`], the embedded default — one SQLite file in WAL mode,
//!   fsynced per commit, safe for many processes at once. File format: `docs/storage.md`.
//! - [`memory`]: [`MemStore`], a `BTreeMap` for tests and as the reference model.
//! - [`ipam`]: [`IpamStore`], the IPAM key space: runs kipam-core operations as store
//!   transactions, loading only what each operation touches. [`codec`]: its record formats.
//!
//! ## Why this shape
//! The trait holds no locks and no sessions, only guarded writes, because that is what
//! both a local SQLite file and a shared etcd cluster can offer with the same meaning.
//! Logic above it is written once and is tested against every backend by one conformance
//! suite (`tests/conformance.rs`). Backend failures are typed ([`StoreError`]) so callers
//! can tell "retry" (conflict, busy) from "tell the operator" (corrupt, full, read-only).

pub mod codec;
pub mod ipam;
pub mod log;
pub mod memory;
pub mod sqlite;
pub mod store;

pub use ipam::{IntegrityReport, IpamError, IpamStore};
pub use memory::MemStore;
pub use sqlite::{Checkpoint, CheckpointStats, SqliteOptions, SqliteStore, WalSync};
pub use store::{
    Expect, Op, Record, Revision, Store, StoreError, Txn, TxnBody, optimistic_run_txn, transact,
};
