//! kipam-core: the allocation engine, pure logic.
//!
//! No IO, no clock, no async, no randomness: time comes in as an argument
//! ([`Millis`]), so quarantine, grace periods and history are testable with an injected
//! clock, and the same engine runs inside a short-lived CNI exec, the kipamd daemon and
//! benchmarks alike. Persistence lives in `kipam-store`, which reads records into an
//! [`Ipam`], runs an operation and writes back what changed.
//!
//! # Layout
//! - [`prefix`]: 128-bit prefix math shared by IPv4 and IPv6.
//! - [`buddy`]: the one prefix allocator; blocks and prefix leases are both claims on it,
//!   so they never overlap, and its cost follows the claims, not the pool size.
//! - [`block`]: one block's addresses: bitmap, owners, next-fit cursor, quarantine.
//! - [`pool`]: pool configuration and the allocation order (affine blocks, new block,
//!   borrowing, quarantine as a last resort).
//! - [`ipam`]: the engine: handles, all-or-nothing requests, leases, scope networks.
//! - [`handles`]: handle records and the key index (one key copy, addresses inline).
//! - [`overlap`]: overlap detection per scope.
//! - [`planner`]: sizes and places cluster, node, service and LoadBalancer ranges for
//!   growth, clear of everything to avoid (carved with the buddy allocator).
//! - [`forecast`]: time to exhaustion from usage samples, and the at-risk threshold.
//! - [`error`]: the typed errors.

pub mod block;
pub mod buddy;
pub mod error;
pub mod forecast;
pub mod handles;
pub mod ipam;
mod keyindex;
pub mod overlap;
pub mod planner;
pub mod pool;
pub mod prefix;

pub use block::{AddrState, Block, BlockSummary, HandleId, Millis};
pub use error::{Error, Need, ReservedReason, Result};
pub use handles::{Handle, HeldAddr, HeldAddrs};
pub use ipam::{AllocRequest, Dirty, Ipam, LeaseWant, ScopeNetwork, Source, Want};
pub use overlap::{ObjectKind, ObjectRef, Overlap};
pub use pool::{Lease, Pool, PoolConfig, PoolDirty, PoolUsage, Purpose};
pub use prefix::{AddrRange, Family, Prefix};
