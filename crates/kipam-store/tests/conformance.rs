//! The store conformance suite: one set of cases, run against every backend.
//!
//! Each case in [`cases`] takes a [`Fixture`] (a fresh, empty store plus a way to open a
//! second handle on the same data) and checks one part of the `Store` contract. The
//! `conformance!` macro turns the whole list into `#[test]`s for one backend, so adding a
//! backend (etcd) is one line at the bottom of this file plus its fixture constructor.
//! A proptest per backend checks random commit sequences against a plain `BTreeMap` model.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::TempDir;
use kipam_store::{
    Expect, MemStore, Op, Record, Revision, SqliteOptions, SqliteStore, Store, StoreError, Txn,
    transact,
};
use proptest::prelude::*;

/// A backend under test.
trait Fixture {
    /// The store the case works on: empty at the start of the case.
    fn store(&self) -> &dyn Store;
    /// Another handle on the same data (a new connection, client, ...).
    fn open_another(&self) -> Box<dyn Store>;
}

struct Memory(MemStore);

impl Fixture for Memory {
    fn store(&self) -> &dyn Store {
        &self.0
    }
    fn open_another(&self) -> Box<dyn Store> {
        Box::new(self.0.clone())
    }
}

fn memory() -> Box<dyn Fixture> {
    Box::new(Memory(MemStore::new()))
}

struct Sqlite {
    // Declared before `dir` so the connection closes before the directory is removed.
    store: SqliteStore,
    dir: TempDir,
}

impl Fixture for Sqlite {
    fn store(&self) -> &dyn Store {
        &self.store
    }
    fn open_another(&self) -> Box<dyn Store> {
        Box::new(SqliteStore::open(self.dir.path(), &SqliteOptions::default()).expect("reopen"))
    }
}

fn sqlite() -> Box<dyn Fixture> {
    let dir = TempDir::new("conformance");
    let store = SqliteStore::open(dir.path(), &SqliteOptions::default()).expect("open sqlite");
    Box::new(Sqlite { store, dir })
}

macro_rules! conformance {
    (@cases $fixture:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let fixture = $fixture();
                crate::cases::$case(&*fixture);
            }
        )*
    };
    ($backend:ident, $fixture:path) => {
        mod $backend {
            use super::*;

            conformance!(@cases $fixture;
                create_if_absent,
                update_if_revision_matches,
                stale_revision_conflicts,
                delete_guards,
                checks_write_nothing,
                multi_op_atomicity,
                guards_see_state_before_commit,
                revisions_strictly_increase,
                list_prefix_boundaries,
                list_page_ordering,
                invalid_keys_rejected,
                txn_read_your_writes,
                txn_list_page,
                txn_rollback_on_false,
                txn_rollback_on_error,
                txn_without_writes,
                transact_domain_errors,
                concurrent_counter_shared_handle,
                concurrent_counter_separate_handles,
            );

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(48))]
                #[test]
                fn agrees_with_model(batches in crate::model::batches()) {
                    let fixture = $fixture();
                    crate::model::check(fixture.store(), &batches)?;
                }
            }
        }
    };
}

conformance!(memory_store, memory);
conformance!(sqlite_store, sqlite);

fn put(key: &str, value: &[u8], expect: Expect) -> Op {
    Op::Put {
        key: key.to_owned(),
        value: value.to_vec(),
        expect,
    }
}

fn delete(key: &str, expect: Expect) -> Op {
    Op::Delete {
        key: key.to_owned(),
        expect,
    }
}

fn check(key: &str, expect: Expect) -> Op {
    Op::Check {
        key: key.to_owned(),
        expect,
    }
}

fn keys(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.key.as_str()).collect()
}

fn assert_conflict(
    result: Result<Revision, StoreError>,
    key: &str,
    expected: Expect,
    found: Option<Revision>,
) {
    match result {
        Err(StoreError::Conflict {
            key: k,
            expected: e,
            found: f,
        }) => {
            assert_eq!(
                (k.as_str(), e, f),
                (key, expected, found),
                "conflict fields"
            );
        }
        other => panic!("expected a conflict on {key:?}, got {other:?}"),
    }
}

mod cases {
    use super::*;

    pub fn create_if_absent(fx: &dyn Fixture) {
        let s = fx.store();
        let rev = s.commit(&[put("k", b"v1", Expect::Absent)]).unwrap();
        assert!(rev > 0);
        let record = s.get("k").unwrap().expect("created");
        assert_eq!(
            record,
            Record {
                key: "k".into(),
                value: b"v1".to_vec(),
                revision: rev
            }
        );
        assert_conflict(
            s.commit(&[put("k", b"v2", Expect::Absent)]),
            "k",
            Expect::Absent,
            Some(rev),
        );
        assert_eq!(s.get("k").unwrap().expect("still there").value, b"v1");
        assert_eq!(s.get("missing").unwrap(), None);
    }

    pub fn update_if_revision_matches(fx: &dyn Fixture) {
        let s = fx.store();
        let r1 = s.commit(&[put("k", b"v1", Expect::Absent)]).unwrap();
        let r2 = s.commit(&[put("k", b"v2", Expect::Revision(r1))]).unwrap();
        assert!(r2 > r1);
        let record = s.get("k").unwrap().expect("present");
        assert_eq!((record.value.as_slice(), record.revision), (&b"v2"[..], r2));
        let r3 = s.commit(&[put("k", b"v3", Expect::Any)]).unwrap();
        assert!(r3 > r2);
    }

    pub fn stale_revision_conflicts(fx: &dyn Fixture) {
        let s = fx.store();
        let r1 = s.commit(&[put("k", b"v1", Expect::Absent)]).unwrap();
        let r2 = s.commit(&[put("k", b"v2", Expect::Revision(r1))]).unwrap();
        assert_conflict(
            s.commit(&[put("k", b"stale", Expect::Revision(r1))]),
            "k",
            Expect::Revision(r1),
            Some(r2),
        );
        assert_eq!(s.get("k").unwrap().expect("present").value, b"v2");
        assert_conflict(
            s.commit(&[put("absent", b"x", Expect::Revision(r2))]),
            "absent",
            Expect::Revision(r2),
            None,
        );
        assert_eq!(s.current_revision().unwrap(), r2);
    }

    pub fn delete_guards(fx: &dyn Fixture) {
        let s = fx.store();
        let r1 = s.commit(&[put("k", b"v", Expect::Absent)]).unwrap();
        assert_conflict(
            s.commit(&[delete("k", Expect::Absent)]),
            "k",
            Expect::Absent,
            Some(r1),
        );
        assert_conflict(
            s.commit(&[delete("k", Expect::Revision(r1 + 7))]),
            "k",
            Expect::Revision(r1 + 7),
            Some(r1),
        );
        assert!(
            s.get("k").unwrap().is_some(),
            "failed deletes leave the key"
        );
        let r2 = s.commit(&[delete("k", Expect::Revision(r1))]).unwrap();
        assert!(r2 > r1);
        assert_eq!(s.get("k").unwrap(), None);
        // Deleting an absent key unguarded is a no-op: success, no new revision.
        assert_eq!(s.commit(&[delete("k", Expect::Any)]).unwrap(), r2);
        assert_eq!(s.commit(&[delete("never", Expect::Absent)]).unwrap(), r2);
        assert_conflict(
            s.commit(&[delete("k", Expect::Revision(r1))]),
            "k",
            Expect::Revision(r1),
            None,
        );
        assert_eq!(s.current_revision().unwrap(), r2);
    }

    pub fn checks_write_nothing(fx: &dyn Fixture) {
        let s = fx.store();
        let r1 = s.commit(&[put("k", b"v", Expect::Absent)]).unwrap();
        assert_eq!(
            s.commit(&[check("k", Expect::Revision(r1)), check("x", Expect::Absent)])
                .unwrap(),
            r1
        );
        assert_eq!(s.commit(&[]).unwrap(), r1);
        assert_conflict(
            s.commit(&[check("k", Expect::Absent)]),
            "k",
            Expect::Absent,
            Some(r1),
        );
        assert_eq!(s.current_revision().unwrap(), r1);
    }

    pub fn multi_op_atomicity(fx: &dyn Fixture) {
        let s = fx.store();
        let r1 = s.commit(&[put("c", b"c1", Expect::Absent)]).unwrap();
        let batch = [
            put("a", b"a", Expect::Absent),
            put("b", b"b", Expect::Absent),
            delete("c", Expect::Revision(r1)),
            put("d", b"d", Expect::Revision(99)),
        ];
        assert_conflict(s.commit(&batch), "d", Expect::Revision(99), None);
        assert_eq!(s.get("a").unwrap(), None);
        assert_eq!(s.get("b").unwrap(), None);
        assert_eq!(s.get("c").unwrap().expect("not deleted").revision, r1);
        assert_eq!(s.current_revision().unwrap(), r1);
        // The first failing guard in op order is the one reported.
        assert_conflict(
            s.commit(&[
                check("x", Expect::Revision(5)),
                put("c", b"", Expect::Absent),
            ]),
            "x",
            Expect::Revision(5),
            None,
        );
        // When every guard holds, every op applies under one revision.
        let r2 = s
            .commit(&[
                put("a", b"a", Expect::Absent),
                delete("c", Expect::Revision(r1)),
                put("b", b"b", Expect::Any),
            ])
            .unwrap();
        assert_eq!(s.get("a").unwrap().expect("a").revision, r2);
        assert_eq!(s.get("b").unwrap().expect("b").revision, r2);
        assert_eq!(s.get("c").unwrap(), None);
    }

    pub fn guards_see_state_before_commit(fx: &dyn Fixture) {
        let s = fx.store();
        // Both guards are evaluated before either write; the later write wins.
        let rev = s
            .commit(&[
                put("k", b"first", Expect::Absent),
                put("k", b"second", Expect::Absent),
            ])
            .unwrap();
        assert_eq!(
            s.get("k").unwrap().expect("k"),
            Record {
                key: "k".into(),
                value: b"second".to_vec(),
                revision: rev
            }
        );
    }

    pub fn revisions_strictly_increase(fx: &dyn Fixture) {
        let s = fx.store();
        assert_eq!(s.current_revision().unwrap(), 0);
        let mut last = 0;
        for i in 0..20u8 {
            let key = format!("k{}", i % 3);
            let rev = s.commit(&[put(&key, &[i], Expect::Any)]).unwrap();
            assert!(rev > last, "revision {rev} after {last}");
            assert_eq!(s.current_revision().unwrap(), rev);
            assert_eq!(s.get(&key).unwrap().expect("written").revision, rev);
            last = rev;
        }
        let other = fx.open_another();
        assert_eq!(
            other.current_revision().unwrap(),
            last,
            "another handle sees the same revision"
        );
    }

    pub fn list_prefix_boundaries(fx: &dyn Fixture) {
        let s = fx.store();
        let all = [
            "a",
            "a/",
            "a/1",
            "a/2",
            "a/é",
            "a/\u{10FFFF}",
            "a0",
            "a/1/x",
            "b",
            "\u{7F}",
        ];
        let ops: Vec<Op> = all
            .iter()
            .map(|k| put(k, k.as_bytes(), Expect::Absent))
            .collect();
        s.commit(&ops).unwrap();
        assert_eq!(
            keys(&s.list("a/").unwrap()),
            ["a/", "a/1", "a/1/x", "a/2", "a/é", "a/\u{10FFFF}"],
            "prefix a/ must not include a or a0"
        );
        assert_eq!(keys(&s.list("a/1").unwrap()), ["a/1", "a/1/x"]);
        assert_eq!(
            keys(&s.list("a").unwrap()),
            [
                "a",
                "a/",
                "a/1",
                "a/1/x",
                "a/2",
                "a/é",
                "a/\u{10FFFF}",
                "a0"
            ]
        );
        let mut sorted = all.to_vec();
        sorted.sort_unstable();
        assert_eq!(
            keys(&s.list("").unwrap()),
            sorted,
            "the empty prefix lists everything in byte order"
        );
        assert!(s.list("c").unwrap().is_empty());
        assert!(s.list("a/3").unwrap().is_empty());
        for record in s.list("").unwrap() {
            assert_eq!(record.value, record.key.as_bytes());
        }
    }

    pub fn list_page_ordering(fx: &dyn Fixture) {
        let s = fx.store();
        let ops: Vec<Op> = (0..10)
            .map(|i| put(&format!("p/{i:02}"), &[i], Expect::Absent))
            .chain([
                put("p", b"", Expect::Absent),
                put("q/00", b"", Expect::Absent),
                put("o", b"", Expect::Absent),
            ])
            .collect();
        s.commit(&ops).unwrap();
        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = s.list_page("p/", after.as_deref(), 3).unwrap();
            assert!(page.len() <= 3);
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            paged.extend(page);
        }
        assert_eq!(
            paged,
            s.list("p/").unwrap(),
            "pages concatenate to the full listing"
        );
        assert_eq!(paged.len(), 10);
        assert!(s.list_page("p/", None, 0).unwrap().is_empty(), "limit 0");
        assert_eq!(
            keys(&s.list_page("p/", Some("p/035"), 2).unwrap()),
            ["p/04", "p/05"],
            "after need not exist"
        );
        assert_eq!(
            keys(&s.list_page("p/", Some("a"), 1).unwrap()),
            ["p/00"],
            "after before the prefix"
        );
        assert!(s.list_page("p/", Some("p/09"), 5).unwrap().is_empty());
        assert!(
            s.list_page("p/", Some("z"), 5).unwrap().is_empty(),
            "after beyond the prefix"
        );
    }

    pub fn invalid_keys_rejected(fx: &dyn Fixture) {
        let s = fx.store();
        assert!(matches!(s.get(""), Err(StoreError::InvalidKey { .. })));
        assert!(matches!(s.get("a\0b"), Err(StoreError::InvalidKey { .. })));
        assert!(matches!(s.list("a\0"), Err(StoreError::InvalidKey { .. })));
        let result = s.commit(&[put("ok", b"", Expect::Any), put("", b"", Expect::Any)]);
        assert!(
            matches!(result, Err(StoreError::InvalidKey { .. })),
            "{result:?}"
        );
        assert_eq!(s.get("ok").unwrap(), None, "nothing applied");
        let result = s.run_txn(&mut |txn: &mut dyn Txn| {
            txn.put("ok", vec![])?;
            txn.put("bad\0", vec![])?;
            Ok(true)
        });
        assert!(
            matches!(result, Err(StoreError::InvalidKey { .. })),
            "{result:?}"
        );
        assert_eq!(s.get("ok").unwrap(), None, "nothing applied");
        assert_eq!(s.current_revision().unwrap(), 0);
    }

    pub fn txn_read_your_writes(fx: &dyn Fixture) {
        let s = fx.store();
        let r1 = s
            .commit(&[
                put("t/old", b"old", Expect::Absent),
                put("t/gone", b"g", Expect::Absent),
            ])
            .unwrap();
        let rev = s
            .run_txn(&mut |txn: &mut dyn Txn| {
                assert_eq!(txn.get("t/old")?.expect("committed").revision, r1);
                txn.put("t/new", b"new".to_vec())?;
                let mine = txn.get("t/new")?.expect("own write visible");
                assert_eq!((mine.value.as_slice(), mine.revision), (&b"new"[..], 0));
                txn.delete("t/gone")?;
                assert_eq!(txn.get("t/gone")?, None, "own delete visible");
                txn.put("t/old", b"changed".to_vec())?;
                let listed = txn.list("t/")?;
                assert_eq!(keys(&listed), ["t/new", "t/old"]);
                assert_eq!(listed[1].value, b"changed");
                Ok(true)
            })
            .unwrap()
            .expect("committed");
        assert!(rev > r1);
        assert_eq!(keys(&s.list("t/").unwrap()), ["t/new", "t/old"]);
        for record in s.list("t/").unwrap() {
            assert_eq!(
                record.revision, rev,
                "every write of the txn carries its revision"
            );
        }
        assert_eq!(s.current_revision().unwrap(), rev);
    }

    /// `Txn::list_page` pages through committed records and the transaction's own
    /// writes alike, as `Txn::list` sees them.
    pub fn txn_list_page(fx: &dyn Fixture) {
        let s = fx.store();
        let ops: Vec<Op> = (0..7)
            .map(|i| put(&format!("h/{i:02}"), &[i], Expect::Absent))
            .chain([put("h0", b"", Expect::Absent)])
            .collect();
        s.commit(&ops).unwrap();
        s.run_txn(&mut |txn: &mut dyn Txn| {
            txn.put("h/035", b"mine".to_vec())?;
            txn.delete("h/05")?;
            let mut paged = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = txn.list_page("h/", after.as_deref(), 3)?;
                assert!(page.len() <= 3);
                let Some(last) = page.last() else { break };
                after = Some(last.key.clone());
                paged.extend(page);
            }
            assert_eq!(paged, txn.list("h/")?, "pages concatenate to the listing");
            assert_eq!(
                keys(&paged),
                ["h/00", "h/01", "h/02", "h/03", "h/035", "h/04", "h/06"]
            );
            assert!(txn.list_page("h/", None, 0)?.is_empty(), "limit 0");
            assert_eq!(
                keys(&txn.list_page("h/", Some("h/03"), 2)?),
                ["h/035", "h/04"]
            );
            Ok(false)
        })
        .unwrap();
    }

    pub fn txn_rollback_on_false(fx: &dyn Fixture) {
        let s = fx.store();
        let r1 = s.commit(&[put("k", b"v", Expect::Absent)]).unwrap();
        let result = s.run_txn(&mut |txn: &mut dyn Txn| {
            txn.put("k", b"changed".to_vec())?;
            txn.put("new", b"n".to_vec())?;
            Ok(false)
        });
        assert_eq!(result.unwrap(), None);
        assert_eq!(
            s.get("k").unwrap().expect("k"),
            Record {
                key: "k".into(),
                value: b"v".to_vec(),
                revision: r1
            }
        );
        assert_eq!(s.get("new").unwrap(), None);
        assert_eq!(s.current_revision().unwrap(), r1);
    }

    pub fn txn_rollback_on_error(fx: &dyn Fixture) {
        let s = fx.store();
        let r1 = s.commit(&[put("k", b"v", Expect::Absent)]).unwrap();
        let result = s.run_txn(&mut |txn: &mut dyn Txn| {
            txn.delete("k")?;
            txn.put("new", b"n".to_vec())?;
            Err(StoreError::Conflict {
                key: "body".into(),
                expected: Expect::Absent,
                found: Some(1),
            })
        });
        match result {
            Err(StoreError::Conflict { key, .. }) => {
                assert_eq!(key, "body", "the body's error comes back as-is")
            }
            other => panic!("expected the body's error, got {other:?}"),
        }
        assert_eq!(s.get("k").unwrap().expect("k").revision, r1);
        assert_eq!(s.get("new").unwrap(), None);
        assert_eq!(s.current_revision().unwrap(), r1);
    }

    pub fn txn_without_writes(fx: &dyn Fixture) {
        let s = fx.store();
        let r1 = s.commit(&[put("k", b"v", Expect::Absent)]).unwrap();
        let result = s.run_txn(&mut |txn: &mut dyn Txn| {
            txn.get("k")?;
            txn.list("")?;
            txn.delete("absent")?;
            Ok(true)
        });
        assert_eq!(
            result.unwrap(),
            Some(r1),
            "a commit without changes reports the current revision"
        );
        assert_eq!(s.current_revision().unwrap(), r1);
    }

    #[derive(Debug)]
    enum Domain {
        Exhausted { pool: String },
        Store(StoreError),
    }

    impl From<StoreError> for Domain {
        fn from(e: StoreError) -> Self {
            Domain::Store(e)
        }
    }

    pub fn transact_domain_errors(fx: &dyn Fixture) {
        let s = fx.store();
        let result: Result<u32, Domain> = transact(s, |txn| {
            txn.put("pool/a", b"full".to_vec())?;
            Err(Domain::Exhausted { pool: "a".into() })
        });
        assert!(
            matches!(result, Err(Domain::Exhausted { ref pool }) if pool == "a"),
            "{result:?}"
        );
        assert_eq!(s.get("pool/a").unwrap(), None, "rolled back");
        let value: Result<u32, Domain> = transact(s, |txn| {
            txn.put("pool/a", b"1".to_vec())?;
            Ok(7)
        });
        assert_eq!(value.unwrap(), 7);
        assert_eq!(s.get("pool/a").unwrap().expect("committed").value, b"1");
        let invalid: Result<(), Domain> = transact(s, |txn| Ok(txn.put("", vec![])?));
        assert!(
            matches!(invalid, Err(Domain::Store(StoreError::InvalidKey { .. }))),
            "{invalid:?}"
        );
    }

    const THREADS: u64 = 8;
    const INCREMENTS: u64 = 200;

    fn increment(store: &dyn Store) {
        let result: Result<(), StoreError> = transact(store, |txn| {
            let current = match txn.get("counter")? {
                Some(record) => {
                    let bytes: [u8; 8] =
                        record.value.as_slice().try_into().expect("8-byte counter");
                    u64::from_be_bytes(bytes)
                }
                None => 0,
            };
            txn.put("counter", (current + 1).to_be_bytes().to_vec())
        });
        result.expect("increment");
    }

    fn assert_counter(store: &dyn Store) {
        let record = store.get("counter").unwrap().expect("counter");
        let bytes: [u8; 8] = record.value.as_slice().try_into().expect("8 bytes");
        assert_eq!(
            u64::from_be_bytes(bytes),
            THREADS * INCREMENTS,
            "no lost update"
        );
        assert_eq!(
            store.current_revision().unwrap(),
            THREADS * INCREMENTS,
            "one revision per increment"
        );
    }

    pub fn concurrent_counter_shared_handle(fx: &dyn Fixture) {
        let s = fx.store();
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| (0..INCREMENTS).for_each(|_| increment(s)));
            }
        });
        assert_counter(s);
    }

    pub fn concurrent_counter_separate_handles(fx: &dyn Fixture) {
        let handles: Vec<Box<dyn Store>> = (0..THREADS).map(|_| fx.open_another()).collect();
        std::thread::scope(|scope| {
            for handle in &handles {
                scope.spawn(move || (0..INCREMENTS).for_each(|_| increment(&**handle)));
            }
        });
        assert_counter(fx.store());
    }
}

/// A plain model of the store contract and random commit batches to compare against.
mod model {
    use super::*;
    use proptest::test_runner::TestCaseError;

    const KEYS: &[&str] = &["a", "a/1", "a/2", "a0", "b", "b/x"];
    const PREFIXES: &[&str] = &["", "a", "a/", "b/", "c"];

    fn expect() -> impl Strategy<Value = Expect> {
        prop_oneof![
            Just(Expect::Any),
            Just(Expect::Absent),
            (0..12u64).prop_map(Expect::Revision)
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = proptest::sample::select(KEYS).prop_map(str::to_owned);
        let prefix = proptest::sample::select(PREFIXES).prop_map(str::to_owned);
        prop_oneof![
            4 => (key.clone(), proptest::collection::vec(any::<u8>(), 0..4), expect())
                .prop_map(|(key, value, expect)| Op::Put { key, value, expect }),
            2 => (key.clone(), expect()).prop_map(|(key, expect)| Op::Delete { key, expect }),
            1 => (key, expect()).prop_map(|(key, expect)| Op::Check { key, expect }),
            1 => (prefix, 0..12u64).prop_map(|(prefix, max_revision)| Op::CheckPrefix { prefix, max_revision }),
        ]
    }

    pub fn batches() -> impl Strategy<Value = Vec<Vec<Op>>> {
        proptest::collection::vec(proptest::collection::vec(op(), 0..4), 1..24)
    }

    #[derive(Default)]
    struct Model {
        records: BTreeMap<String, (Vec<u8>, Revision)>,
        revision: Revision,
    }

    impl Model {
        /// The contract, spelled out as directly as possible.
        fn commit(&mut self, ops: &[Op]) -> Result<Revision, (String, Expect, Option<Revision>)> {
            for op in ops {
                match op {
                    Op::Put { key, expect, .. }
                    | Op::Delete { key, expect }
                    | Op::Check { key, expect } => {
                        let found = self.records.get(key).map(|(_, r)| *r);
                        if !expect.holds(found) {
                            return Err((key.clone(), *expect, found));
                        }
                    }
                    Op::CheckPrefix {
                        prefix,
                        max_revision,
                    } => {
                        let newer = self
                            .records
                            .iter()
                            .find(|(k, (_, r))| k.starts_with(prefix.as_str()) && r > max_revision);
                        if let Some((key, (_, r))) = newer {
                            return Err((key.clone(), Expect::Revision(*max_revision), Some(*r)));
                        }
                    }
                }
            }
            let changes = ops.iter().any(|op| match op {
                Op::Put { .. } => true,
                Op::Delete { key, .. } => self.records.contains_key(key),
                _ => false,
            });
            if !changes {
                return Ok(self.revision);
            }
            self.revision += 1;
            for op in ops {
                match op {
                    Op::Put { key, value, .. } => {
                        self.records
                            .insert(key.clone(), (value.clone(), self.revision));
                    }
                    Op::Delete { key, .. } => {
                        self.records.remove(key);
                    }
                    _ => {}
                }
            }
            Ok(self.revision)
        }

        fn list(&self, prefix: &str) -> Vec<Record> {
            self.records
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, (v, r))| Record {
                    key: k.clone(),
                    value: v.clone(),
                    revision: *r,
                })
                .collect()
        }
    }

    pub fn check(store: &dyn Store, batches: &[Vec<Op>]) -> Result<(), TestCaseError> {
        let mut model = Model::default();
        for ops in batches {
            let want = model.commit(ops);
            let got = store.commit(ops);
            match (&want, got) {
                (Ok(w), Ok(g)) => prop_assert_eq!(*w, g, "revision of {:?}", ops),
                (
                    Err((key, expected, found)),
                    Err(StoreError::Conflict {
                        key: k,
                        expected: e,
                        found: f,
                    }),
                ) => {
                    prop_assert_eq!(
                        (key, expected, found),
                        (&k, &e, &f),
                        "conflict of {:?}",
                        ops
                    );
                }
                (want, got) => prop_assert!(false, "{:?}: model {:?}, store {:?}", ops, want, got),
            }
            prop_assert_eq!(
                store
                    .current_revision()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?,
                model.revision
            );
            for prefix in PREFIXES {
                let listed = store
                    .list(prefix)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(listed, model.list(prefix), "list({:?})", prefix);
            }
            let page = store
                .list_page("a", Some("a/1"), 2)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let want_page: Vec<Record> = model
                .list("a")
                .into_iter()
                .filter(|r| r.key.as_str() > "a/1")
                .take(2)
                .collect();
            prop_assert_eq!(page, want_page);
        }
        Ok(())
    }
}
