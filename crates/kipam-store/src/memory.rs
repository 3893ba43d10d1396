//! `MemStore`: the [`Store`] contract over a `BTreeMap` behind a mutex, nothing on disk.
//!
//! It exists for tests of the layers above and as the reference the conformance suite
//! checks the durable backends against. Its [`Store::run_txn`] deliberately uses
//! [`optimistic_run_txn`] rather than holding the mutex across the body: that way the
//! optimistic path, which etcd will need, is exercised by every test that uses `MemStore`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::store::{
    Expect, Op, Record, Revision, Store, StoreError, TxnBody, optimistic_run_txn, validate_key,
    validate_prefix,
};

/// How many times `MemStore::run_txn` runs a body that keeps conflicting.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 100;

/// An in-memory store. Cloning it gives another handle on the same data, as opening a
/// durable store twice would.
#[derive(Clone, Debug)]
pub struct MemStore {
    inner: Arc<Mutex<State>>,
    max_attempts: u32,
}

#[derive(Debug, Default)]
struct State {
    records: BTreeMap<String, (Vec<u8>, Revision)>,
    revision: Revision,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::with_max_attempts(DEFAULT_MAX_ATTEMPTS)
    }

    /// An empty store whose transactions give up after `max_attempts` conflicting runs.
    pub fn with_max_attempts(max_attempts: u32) -> Self {
        MemStore {
            inner: Arc::new(Mutex::new(State::default())),
            max_attempts,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated: commit validates
        // everything before the first mutation. So a poisoned lock is safe to reuse.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn revision_of(&self, key: &str) -> Option<Revision> {
        self.records.get(key).map(|(_, revision)| *revision)
    }

    fn range<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Record> + 'a {
        let start = match after {
            Some(after) if after >= prefix => std::ops::Bound::Excluded(after.to_owned()),
            _ => std::ops::Bound::Included(prefix.to_owned()),
        };
        self.records
            .range((start, std::ops::Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(key, (value, revision))| Record {
                key: key.clone(),
                value: value.clone(),
                revision: *revision,
            })
    }

    /// The first failing guard of `ops`, evaluated against the current state.
    fn first_conflict(&self, ops: &[Op]) -> Option<StoreError> {
        ops.iter().find_map(|op| match op {
            Op::Put { key, expect, .. }
            | Op::Delete { key, expect }
            | Op::Check { key, expect } => {
                let found = self.revision_of(key);
                (!expect.holds(found)).then(|| StoreError::Conflict {
                    key: key.clone(),
                    expected: *expect,
                    found,
                })
            }
            Op::CheckPrefix {
                prefix,
                max_revision,
            } => self
                .range(prefix, None)
                .find(|record| record.revision > *max_revision)
                .map(|record| StoreError::Conflict {
                    key: record.key,
                    expected: Expect::Revision(*max_revision),
                    found: Some(record.revision),
                }),
        })
    }
}

impl Store for MemStore {
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        validate_key(key)?;
        Ok(self
            .state()
            .records
            .get(key)
            .map(|(value, revision)| Record {
                key: key.to_owned(),
                value: value.clone(),
                revision: *revision,
            }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<Record>, StoreError> {
        validate_prefix(prefix)?;
        Ok(self.state().range(prefix, None).collect())
    }

    fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        validate_prefix(prefix)?;
        Ok(self.state().range(prefix, after).take(limit).collect())
    }

    fn commit(&self, ops: &[Op]) -> Result<Revision, StoreError> {
        for op in ops {
            match op {
                Op::CheckPrefix { prefix, .. } => validate_prefix(prefix)?,
                other => validate_key(other.key())?,
            }
        }
        let mut state = self.state();
        if let Some(conflict) = state.first_conflict(ops) {
            return Err(conflict);
        }
        let changes = ops.iter().any(|op| match op {
            Op::Put { .. } => true,
            Op::Delete { key, .. } => state.records.contains_key(key),
            Op::Check { .. } | Op::CheckPrefix { .. } => false,
        });
        if !changes {
            return Ok(state.revision);
        }
        let revision = state.revision + 1;
        for op in ops {
            match op {
                Op::Put { key, value, .. } => {
                    state.records.insert(key.clone(), (value.clone(), revision));
                }
                Op::Delete { key, .. } => {
                    state.records.remove(key);
                }
                Op::Check { .. } | Op::CheckPrefix { .. } => {}
            }
        }
        state.revision = revision;
        Ok(revision)
    }

    fn run_txn(&self, body: &mut TxnBody<'_>) -> Result<Option<Revision>, StoreError> {
        optimistic_run_txn(self, body, self.max_attempts)
    }

    fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.state().revision)
    }
}
