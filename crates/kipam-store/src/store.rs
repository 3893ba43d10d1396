//! The storage contract every backend implements: a sorted map from string keys to byte
//! values where every record carries the global revision of the commit that last wrote it.
//!
//! The trait is compare-and-swap shaped, not lock shaped: a write names what it expects to
//! find ([`Expect`]) and the whole batch fails with [`StoreError::Conflict`] when any guard
//! does not hold. That is the one primitive both the embedded SQLite file (a local write
//! lock) and etcd (a `Txn` with `Compare`s) offer natively, so the IPAM layer above is
//! written once against it and stays correct on either.
//!
//! Read-modify-write logic goes through [`Store::run_txn`] (or the typed [`transact`]).
//! A backend with a real write lock (SQLite) runs the body once under that lock; a backend
//! without one uses [`optimistic_run_txn`], which buffers writes, guards everything the body
//! read and retries on conflict. The body therefore must be a pure function of what it
//! reads through the [`Txn`].
//!
//! ## Revisions
//! One counter for the whole store, like etcd's `mod_revision`: a commit that changes at
//! least one key takes the next value and stamps it on every record it writes. A commit
//! that changes nothing (only checks, or deletes of absent keys) creates no revision.
//! 0 is never the revision of a committed record; inside a transaction body it marks a
//! record the body itself wrote and that is not committed yet.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::time::Duration;

/// A global commit counter: strictly increasing over the commits that change something.
pub type Revision = u64;

/// One key with its value and the revision of the commit that last wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The key: non-empty UTF-8 without NUL bytes.
    pub key: String,
    /// The value, opaque to the store.
    pub value: Vec<u8>,
    /// The revision of the commit that last wrote this key; 0 for a record written by the
    /// current transaction body and not yet committed (see [`Txn::get`]).
    pub revision: Revision,
}

/// What a guarded operation expects to find at its key before the commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// No condition.
    Any,
    /// The key must not exist (create-if-absent).
    Absent,
    /// The key must exist with exactly this revision (compare-and-swap).
    Revision(Revision),
}

impl Expect {
    /// Whether a key whose current revision is `found` (None: absent) satisfies this guard.
    pub fn holds(self, found: Option<Revision>) -> bool {
        match self {
            Expect::Any => true,
            Expect::Absent => found.is_none(),
            Expect::Revision(want) => found == Some(want),
        }
    }
}

/// One operation of a [`Store::commit`] batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Write `value` at `key` if the guard holds. Always changes the key (a new revision),
    /// even when the value is the same.
    Put {
        /// The key to write.
        key: String,
        /// The new value.
        value: Vec<u8>,
        /// The guard.
        expect: Expect,
    },
    /// Remove `key` if the guard holds. Deleting an absent key with [`Expect::Any`] (or
    /// [`Expect::Absent`]) is a no-op, not an error.
    Delete {
        /// The key to remove.
        key: String,
        /// The guard.
        expect: Expect,
    },
    /// A guard without a write.
    Check {
        /// The key to check.
        key: String,
        /// The guard.
        expect: Expect,
    },
    /// A guard over a key range without a write: holds when no key starting with `prefix`
    /// has a revision greater than `max_revision`. Combined with per-key checks of the
    /// keys a list returned, this detects keys created under the prefix since the list
    /// (phantoms); [`optimistic_run_txn`] uses it to guard [`Txn::list`].
    /// On failure the conflict names the first such key, with
    /// `expected: Expect::Revision(max_revision)` read as "at most".
    CheckPrefix {
        /// The key prefix (empty: every key).
        prefix: String,
        /// The highest revision allowed under the prefix.
        max_revision: Revision,
    },
}

impl Op {
    /// The key (or, for [`Op::CheckPrefix`], the prefix) this operation is about.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } | Op::Check { key, .. } => key,
            Op::CheckPrefix { prefix, .. } => prefix,
        }
    }
}

/// Everything that can go wrong in a store. Variants carry what a caller needs to decide:
/// retry ([`StoreError::Conflict`], [`StoreError::Busy`]), tell an operator which file is
/// at fault (the path-carrying variants), or give up.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A guard did not hold; nothing of the commit was applied.
    #[error("conflict on key {key:?}: expected {expected:?}, found {found:?}")]
    Conflict {
        /// The key whose guard failed (the first failing one, in op order).
        key: String,
        /// What the guard expected.
        expected: Expect,
        /// The key's revision at commit time (None: absent).
        found: Option<Revision>,
    },
    /// Another writer held the lock longer than the busy timeout; nothing was applied.
    /// Worth retrying later (CNI error code 11).
    #[error("store busy: write lock not obtained within {waited:?}")]
    Busy {
        /// How long the store waited for the lock.
        waited: Duration,
    },
    /// The file is not a database or is damaged. The file is left untouched.
    #[error("{}: database file is corrupt or not a kipam database: {detail}", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What SQLite reported.
        detail: String,
    },
    /// The file was written by a newer kipam; this binary does not touch it.
    #[error(
        "{}: schema version {found} is newer than this kipam supports ({supported}); upgrade kipam",
        path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The file's schema version.
        found: u32,
        /// The newest schema version this binary knows.
        supported: u32,
    },
    /// The file or its directory cannot be written (read-only mount or permissions).
    #[error("{}: read-only (file system or permissions); kipam needs to write here", path.display())]
    ReadOnly {
        /// The file or directory that cannot be written.
        path: PathBuf,
    },
    /// The file system holding the store is full; the failed commit was not applied.
    #[error("{}: no space left on device; the last commit was not applied", path.display())]
    DiskFull {
        /// The database file.
        path: PathBuf,
    },
    /// The data directory does not exist and the store was told not to create it.
    #[error("{}: data directory does not exist", path.display())]
    MissingDirectory {
        /// The missing directory.
        path: PathBuf,
    },
    /// The data directory path exists but is not a directory.
    #[error("{}: not a directory", path.display())]
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },
    /// An operating-system error on a file the store manages.
    #[error("{}: I/O error", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Any other SQLite failure.
    #[error("sqlite error during {op}")]
    Sqlite {
        /// What the store was doing.
        op: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A key (or prefix) the store cannot hold: empty, or containing a NUL byte.
    #[error("invalid key {key:?}: keys must be non-empty and must not contain NUL")]
    InvalidKey {
        /// The rejected key.
        key: String,
    },
    /// Stored bytes that violate the store's own invariants (e.g. a negative revision).
    #[error("{}: inconsistent store contents: {detail}", path.display())]
    Inconsistent {
        /// The database file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
}

/// Rejects keys a backend cannot store faithfully: empty ones and ones with NUL.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.contains('\0') {
        return Err(StoreError::InvalidKey {
            key: key.to_owned(),
        });
    }
    Ok(())
}

/// Rejects prefixes containing NUL (no key can start with one). The empty prefix is valid.
pub fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.contains('\0') {
        return Err(StoreError::InvalidKey {
            key: prefix.to_owned(),
        });
    }
    Ok(())
}

/// A read-modify-write transaction body's view of the store.
///
/// Reads see the transaction's own earlier writes. A record the body wrote itself is
/// returned with `revision == 0`: its real revision is only known at commit. Records not
/// written by the body carry their committed revision. Errors from these methods should be
/// returned from the body (with `?`); the transaction is then rolled back. A body that
/// swallows an error and returns Ok(true) commits the writes that did succeed (or, when
/// the backend already aborted the transaction, gets the commit's error).
pub trait Txn {
    /// The record at `key`, or None. Errors: [`StoreError::InvalidKey`], backend failures.
    fn get(&mut self, key: &str) -> Result<Option<Record>, StoreError>;
    /// Every record whose key starts with `prefix`, sorted by key.
    fn list(&mut self, prefix: &str) -> Result<Vec<Record>, StoreError>;
    /// [`Txn::list`] a page at a time, as [`Store::list_page`]: up to `limit` records
    /// after `after`. For reading very large prefixes (every handle at kipamd's start)
    /// without holding them all in memory at once. The default lists everything and cuts
    /// the page out; backends that can seek override it.
    fn list_page(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        Ok(self
            .list(prefix)?
            .into_iter()
            .filter(|r| after.is_none_or(|a| r.key.as_str() > a))
            .take(limit)
            .collect())
    }
    /// Writes `value` at `key` (created or replaced) when the transaction commits.
    fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), StoreError>;
    /// Removes `key` when the transaction commits; a no-op if it is absent.
    fn delete(&mut self, key: &str) -> Result<(), StoreError>;
}

/// A transaction body as [`Store::run_txn`] takes it.
pub type TxnBody<'a> = dyn FnMut(&mut dyn Txn) -> Result<bool, StoreError> + 'a;

/// Durable, compare-and-swap storage of [`Record`]s. Implementations: `MemStore` (tests),
/// `SqliteStore` (the embedded default), later `EtcdStore`.
///
/// Every method is atomic: it either takes full effect or none. Reads outside a
/// transaction each see one committed state (a list is not torn by a concurrent commit).
pub trait Store: Send + Sync {
    /// The record at `key`, or None if absent.
    /// Errors: [`StoreError::InvalidKey`], backend failures (corrupt file, I/O).
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError>;

    /// All records whose key starts with `prefix`, sorted by key (bytewise). `"a/"` does
    /// not match `"a0"`. The empty prefix lists everything.
    fn list(&self, prefix: &str) -> Result<Vec<Record>, StoreError>;

    /// Up to `limit` records whose key starts with `prefix` and is greater than `after`
    /// (when given), sorted by key. To page, pass the last key of the previous page as
    /// `after`; an empty or short page means the end. `limit == 0` returns nothing.
    fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;

    /// Applies `ops` all-or-nothing. Every guard is evaluated against the state before the
    /// commit (as etcd does); if all hold, the writes apply in order (a later op on the
    /// same key wins) and every changed record gets one new revision, which is returned.
    /// If nothing changes (only checks, deletes of absent keys, or no ops), no revision is
    /// created and the current revision is returned.
    ///
    /// Errors: the first failing guard in op order as [`StoreError::Conflict`]; an invalid
    /// key as [`StoreError::InvalidKey`] (checked before anything else); [`StoreError::Busy`],
    /// [`StoreError::DiskFull`] and other backend failures. On any error nothing changed.
    fn commit(&self, ops: &[Op]) -> Result<Revision, StoreError>;

    /// Runs `body` as an atomic read-modify-write, serializable with every other commit.
    ///
    /// `body` returns Ok(true) to commit, Ok(false) to roll back. A backend may run `body`
    /// more than once (optimistic retry on conflict), so it must be a pure function of
    /// what it reads and must not have side effects outside the [`Txn`]. It must reach
    /// the store only through that `Txn`: calling the same store handle from inside the
    /// body may deadlock (`SqliteStore` holds its connection for the body's duration).
    ///
    /// Returns `Some(revision)` of the commit when the body wrote something, `Some(current
    /// revision)` when it committed without changing anything (no new revision is
    /// created), and None when it rolled back. When `body` returns an error, the
    /// transaction is rolled back and that error is returned unchanged. Backend failures
    /// ([`StoreError::Busy`], [`StoreError::DiskFull`], exhausted optimistic retries as
    /// [`StoreError::Conflict`]) also leave the store unchanged.
    fn run_txn(&self, body: &mut TxnBody<'_>) -> Result<Option<Revision>, StoreError>;

    /// The revision of the latest commit that changed something (0 for an empty store).
    fn current_revision(&self) -> Result<Revision, StoreError>;
}

/// Runs `f` as an atomic transaction on `store` and returns its value.
///
/// `f` returning Ok commits its writes; returning Err rolls them back and the error is
/// returned as-is, so domain errors (pool exhausted, ...) pass through untouched. Store
/// failures, including a failed commit, come back as `E::from(StoreError)`. Like
/// [`Store::run_txn`], `f` may run more than once.
pub fn transact<S: Store + ?Sized, T, E: From<StoreError>>(
    store: &S,
    mut f: impl FnMut(&mut dyn Txn) -> Result<T, E>,
) -> Result<T, E> {
    // The body reports through these slots: its own error type cannot cross run_txn, so a
    // domain error becomes a rollback (Ok(false)) and is handed back from the slot.
    let mut outcome: Option<Result<T, E>> = None;
    let committed = store.run_txn(&mut |txn: &mut dyn Txn| {
        let result = f(txn);
        let commit = result.is_ok();
        outcome = Some(result);
        Ok(commit)
    })?;
    match (committed, outcome) {
        (Some(_), Some(Ok(value))) => Ok(value),
        (None, Some(Err(err))) => Err(err),
        // run_txn returned without a consistent last run of the body: only a broken
        // backend gets here. Report it as a conflict so callers retry instead of panicking.
        _ => Err(E::from(StoreError::Conflict {
            key: String::new(),
            expected: Expect::Any,
            found: None,
        })),
    }
}

/// The optimistic implementation of [`Store::run_txn`] for backends without a write lock
/// (`MemStore`, later etcd).
///
/// Each attempt runs `body` against a [`Txn`] that reads through to `store`, remembering
/// every record's revision (or absence) and every listed prefix, and buffers writes. On
/// Ok(true) it commits one batch: the buffered writes, each guarded by the revision the
/// body saw for that key (`Any` for keys written without being read), a `Check` for every
/// key only read, and an `Op::CheckPrefix` for every listed prefix. A
/// [`StoreError::Conflict`] from that commit means a concurrent writer got in between: the
/// attempt is discarded and `body` runs again after a short randomized backoff, up to
/// `max_attempts` times in all (at least once); the last conflict is then returned.
/// Any other error ends the transaction at once.
pub fn optimistic_run_txn<S: Store + ?Sized>(
    store: &S,
    body: &mut TxnBody<'_>,
    max_attempts: u32,
) -> Result<Option<Revision>, StoreError> {
    let attempts = max_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut txn = OptimisticTxn::new(store);
        if !body(&mut txn)? {
            return Ok(None);
        }
        match store.commit(&txn.into_ops()) {
            Ok(revision) => return Ok(Some(revision)),
            Err(conflict @ StoreError::Conflict { .. }) if attempt >= attempts => {
                return Err(conflict);
            }
            Err(StoreError::Conflict { .. }) => backoff(attempt),
            Err(other) => return Err(other),
        }
    }
}

/// Sleeps a random time that grows with the attempt number, so that writers contending
/// for one key spread out instead of colliding in lockstep.
fn backoff(attempt: u32) {
    if attempt <= 2 {
        std::thread::yield_now();
        return;
    }
    let ceiling_micros: u64 = 1 << attempt.min(14); // at most ~16 ms
    // RandomState is seeded per instance: a dependency-free source of jitter.
    let jitter = RandomState::new().hash_one(attempt) % ceiling_micros;
    std::thread::sleep(Duration::from_micros(jitter + 1));
}

/// The [`Txn`] of [`optimistic_run_txn`]: reads through, writes buffered.
struct OptimisticTxn<'s, S: Store + ?Sized> {
    store: &'s S,
    /// Committed state as first seen by the body, per key.
    read: BTreeMap<String, Option<Record>>,
    /// Buffered writes: Some(value) to put, None to delete.
    written: BTreeMap<String, Option<Vec<u8>>>,
    /// Listed prefixes with the store revision seen just before listing.
    listed: BTreeMap<String, Revision>,
}

impl<'s, S: Store + ?Sized> OptimisticTxn<'s, S> {
    fn new(store: &'s S) -> Self {
        OptimisticTxn {
            store,
            read: BTreeMap::new(),
            written: BTreeMap::new(),
            listed: BTreeMap::new(),
        }
    }

    /// The committed record at `key` as this transaction first saw it (repeatable read).
    fn committed(&mut self, key: &str) -> Result<Option<Record>, StoreError> {
        if let Some(seen) = self.read.get(key) {
            return Ok(seen.clone());
        }
        let record = self.store.get(key)?;
        self.read.insert(key.to_owned(), record.clone());
        Ok(record)
    }

    fn into_ops(self) -> Vec<Op> {
        let seen = |key: &str| match self.read.get(key) {
            None => Expect::Any,
            Some(None) => Expect::Absent,
            Some(Some(record)) => Expect::Revision(record.revision),
        };
        let mut ops = Vec::with_capacity(self.read.len() + self.written.len() + self.listed.len());
        for (prefix, revision) in &self.listed {
            ops.push(Op::CheckPrefix {
                prefix: prefix.clone(),
                max_revision: *revision,
            });
        }
        for key in self
            .read
            .keys()
            .filter(|key| !self.written.contains_key(*key))
        {
            ops.push(Op::Check {
                key: key.clone(),
                expect: seen(key),
            });
        }
        for (key, write) in &self.written {
            let expect = seen(key);
            ops.push(match write {
                Some(value) => Op::Put {
                    key: key.clone(),
                    value: value.clone(),
                    expect,
                },
                None => Op::Delete {
                    key: key.clone(),
                    expect,
                },
            });
        }
        ops
    }
}

impl<S: Store + ?Sized> Txn for OptimisticTxn<'_, S> {
    fn get(&mut self, key: &str) -> Result<Option<Record>, StoreError> {
        validate_key(key)?;
        if let Some(write) = self.written.get(key) {
            return Ok(write.as_ref().map(|value| Record {
                key: key.to_owned(),
                value: value.clone(),
                revision: 0,
            }));
        }
        self.committed(key)
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<Record>, StoreError> {
        validate_prefix(prefix)?;
        let before = self.store.current_revision()?;
        self.listed.entry(prefix.to_owned()).or_insert(before);
        let mut merged: BTreeMap<String, Record> = BTreeMap::new();
        for record in self.store.list(prefix)? {
            // A key this transaction already read keeps the version it saw first.
            let record = match self.read.get(&record.key) {
                Some(seen) => match seen {
                    Some(seen) => seen.clone(),
                    None => continue,
                },
                None => {
                    self.read.insert(record.key.clone(), Some(record.clone()));
                    record
                }
            };
            merged.insert(record.key.clone(), record);
        }
        // Keys read earlier as present but gone from this listing stay visible too.
        let seen_under: BTreeSet<&String> = self
            .read
            .keys()
            .filter(|key| key.starts_with(prefix))
            .collect();
        for key in seen_under {
            if let Some(Some(record)) = self.read.get(key) {
                merged.entry(key.clone()).or_insert_with(|| record.clone());
            }
        }
        for (key, write) in self.written.range(prefix.to_owned()..) {
            if !key.starts_with(prefix) {
                break;
            }
            match write {
                Some(value) => {
                    merged.insert(
                        key.clone(),
                        Record {
                            key: key.clone(),
                            value: value.clone(),
                            revision: 0,
                        },
                    );
                }
                None => {
                    merged.remove(key);
                }
            }
        }
        Ok(merged.into_values().collect())
    }

    fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        validate_key(key)?;
        self.written.insert(key.to_owned(), Some(value));
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        self.written.insert(key.to_owned(), None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemStore;
    use std::cell::Cell;

    fn put(key: &str) -> Op {
        Op::Put {
            key: key.to_owned(),
            value: Vec::new(),
            expect: Expect::Any,
        }
    }

    #[test]
    fn expect_holds() {
        assert!(Expect::Any.holds(None) && Expect::Any.holds(Some(3)));
        assert!(Expect::Absent.holds(None) && !Expect::Absent.holds(Some(3)));
        assert!(Expect::Revision(3).holds(Some(3)));
        assert!(!Expect::Revision(3).holds(Some(4)) && !Expect::Revision(3).holds(None));
    }

    #[test]
    fn keys_are_validated() {
        assert!(validate_key("a/b").is_ok());
        assert!(matches!(
            validate_key(""),
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(matches!(
            validate_key("a\0"),
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(validate_prefix("").is_ok());
        assert!(matches!(
            validate_prefix("\0"),
            Err(StoreError::InvalidKey { .. })
        ));
    }

    /// A key created under a listed prefix between the list and the commit must force a
    /// rerun, or a body deciding from the listing ("is anything under p/?") would commit
    /// on a stale view.
    #[test]
    fn optimistic_list_detects_phantoms() -> Result<(), StoreError> {
        let store = MemStore::new();
        let other = store.clone();
        let runs = Cell::new(0);
        let revision = store.run_txn(&mut |txn: &mut dyn Txn| {
            runs.set(runs.get() + 1);
            let listed = txn.list("p/")?;
            if runs.get() == 1 {
                other.commit(&[put("p/phantom")])?;
            }
            txn.put("count", listed.len().to_string().into_bytes())?;
            Ok(true)
        })?;
        assert_eq!(runs.get(), 2, "the first run saw a stale listing");
        assert_eq!(revision, Some(2));
        let count = store.get("count")?.map(|r| r.value);
        assert_eq!(count, Some(b"1".to_vec()));
        Ok(())
    }

    #[test]
    fn optimistic_gives_up_after_max_attempts() -> Result<(), StoreError> {
        let store = MemStore::with_max_attempts(3);
        let other = store.clone();
        let runs = Cell::new(0);
        let result = store.run_txn(&mut |txn: &mut dyn Txn| {
            runs.set(runs.get() + 1);
            txn.get("hot")?;
            other.commit(&[put("hot")])?;
            txn.put("hot", Vec::new())?;
            Ok(true)
        });
        assert_eq!(runs.get(), 3);
        match result {
            Err(StoreError::Conflict { key, .. }) => assert_eq!(key, "hot"),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(
            store.current_revision()?,
            3,
            "only the interfering commits applied"
        );
        Ok(())
    }
}
