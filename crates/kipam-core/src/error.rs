//! The engine's errors: one enum, structured fields a caller can match on.
//!
//! Callers map these to their own surfaces (CNI error codes, HTTP statuses); the message
//! of each variant is written for the operator who reads it in a log or a terminal.

use std::net::IpAddr;

use thiserror::Error;

use crate::prefix::{Family, Prefix};

/// Why an address is not handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservedReason {
    /// The pool's network address.
    Network,
    /// The IPv4 broadcast address.
    Broadcast,
    /// The pool's gateway.
    Gateway,
    /// An exclusion of the pool, or an external network or reservation in its scope.
    Excluded,
}

impl std::fmt::Display for ReservedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReservedReason::Network => "the network address",
            ReservedReason::Broadcast => "the broadcast address",
            ReservedReason::Gateway => "the gateway",
            ReservedReason::Excluded => "excluded",
        })
    }
}

/// Something the engine needs loaded before it can finish an operation. Only a caller
/// that loads state lazily (the store layer) sees these; it loads what is named and
/// runs the operation again. Nothing was changed when one is returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// The body of a block.
    Block {
        /// Pool name.
        pool: String,
        /// The block.
        block: Prefix,
    },
    /// The block summaries of every node of a pool (to borrow from another node's block).
    AllNodes {
        /// Pool name.
        pool: String,
    },
    /// A handle record.
    Handle {
        /// The handle key.
        key: String,
    },
    /// The block summaries of one node.
    Node {
        /// Pool name.
        pool: String,
        /// Node name.
        node: String,
    },
}

/// Errors of the allocation engine.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Error {
    /// No pool of that name.
    #[error("pool {pool:?} does not exist")]
    PoolNotFound {
        /// Pool name.
        pool: String,
    },
    /// A pool, or every pool of a request, has no address left.
    #[error("no {family} address left in pool {pool}")]
    PoolExhausted {
        /// The pool (or the pools tried, comma-separated).
        pool: String,
        /// Family asked for.
        family: Family,
    },
    /// A family/purpose request matched no pool.
    #[error("no {family} pool{} exists", purpose.map(|p| format!(" for purpose {p}")).unwrap_or_default())]
    NoPoolForFamily {
        /// Family asked for.
        family: Family,
        /// Purpose asked for.
        purpose: Option<crate::pool::Purpose>,
    },
    /// A static request named an address somebody holds.
    #[error("{addr} is already held by {holder}")]
    AddressInUse {
        /// The address.
        addr: IpAddr,
        /// The handle holding it.
        holder: String,
    },
    /// A static request named an address that is never handed out.
    #[error("{addr} in pool {pool} is {reason} and is never handed out")]
    AddressReserved {
        /// The address.
        addr: IpAddr,
        /// Pool name.
        pool: String,
        /// Why.
        reason: ReservedReason,
    },
    /// A static request named an address outside every pool asked for.
    #[error("{addr} is not inside pool {pool}")]
    AddressOutsidePool {
        /// The address.
        addr: IpAddr,
        /// The pool(s) tried.
        pool: String,
    },
    /// A static request named an address inside a prefix lease.
    #[error("{addr} lies in prefix lease {lease} of pool {pool}")]
    AddressInLease {
        /// The address.
        addr: IpAddr,
        /// Pool name.
        pool: String,
        /// The lease.
        lease: Prefix,
    },
    /// A new object would overlap an existing one in the same scope (`a` is the new
    /// object, `b` the one already there).
    #[error("{} ({}) overlaps {} ({}) in scope {:?}", .0.a, .0.a_range, .0.b, .0.b_range, .0.scope)]
    Overlap(Box<crate::overlap::Overlap>),
    /// A configuration value is invalid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, as the user wrote it (e.g. `blockPrefixLength`).
        field: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// An object of that name exists already.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// Kind of object.
        kind: &'static str,
        /// Name.
        name: String,
    },
    /// A pool still holds allocations or leases.
    #[error("pool {pool} still holds {allocations} allocations and {leases} prefix leases")]
    PoolInUse {
        /// Pool name.
        pool: String,
        /// Addresses held.
        allocations: u64,
        /// Prefix leases.
        leases: u64,
    },
    /// No free sub-prefix of the asked length.
    #[error("no free /{len} left in pool {pool}{}", largest.map(|p| format!("; the largest free prefix is {p}")).unwrap_or_else(|| "; the pool is full".into()))]
    NoRoomForPrefix {
        /// Pool name.
        pool: String,
        /// Prefix length asked for.
        len: u8,
        /// The largest free prefix there is, if any.
        largest: Option<Prefix>,
    },
    /// An exact prefix lease asked for space that a block or lease already holds.
    #[error("{prefix} in pool {pool} overlaps {taken_by}, which is already claimed")]
    PrefixTaken {
        /// Pool name.
        pool: String,
        /// The prefix asked for.
        prefix: ipnet::IpNet,
        /// The claims in the way (blocks or leases), comma-separated.
        taken_by: String,
    },
    /// A handle holds nothing (release of an unknown handle is not an error; this is for
    /// lookups that need one).
    #[error("handle {handle:?} holds nothing")]
    HandleNotFound {
        /// The handle.
        handle: String,
    },
    /// The node has as many blocks as the pool allows and strict affinity forbids borrowing.
    #[error("node {node} has its {max} blocks of pool {pool} full and the pool forbids borrowing")]
    NodeBlockLimit {
        /// Pool name.
        pool: String,
        /// Node name.
        node: String,
        /// The limit.
        max: u32,
    },
    /// The operation needs more state loaded (see [`Need`]); nothing was changed.
    #[error("state not loaded: {0:?}")]
    NeedLoad(Need),
}

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
