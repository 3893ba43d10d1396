//! `SqliteStore` under bad conditions: every one must give a clear, typed error that names
//! the file, and none may lose data that was committed before.
//!
//! Conditions covered: missing or non-directory data dir, a garbage file, a database with
//! overwritten pages, another application's SQLite file, a schema newer than this binary, a read-only file system (fresh and
//! existing database), a full disk, a held write lock (busy), and many threads or
//! processes opening one fresh file at once.
//!
//! The read-only and disk-full tests need real mounts (root ignores permission bits): they
//! use tmpfs and read-only bind mounts, always unmounted by a drop guard. Without root they
//! print `SKIPPED: <test>: needs root for mount` and return; CI runs them as root.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Barrier;
use std::time::Duration;

use common::TempDir;
use kipam_store::sqlite::{DB_FILE_NAME, SCHEMA_VERSION};
use kipam_store::{Expect, Op, SqliteOptions, SqliteStore, Store, StoreError};

fn opts() -> SqliteOptions {
    SqliteOptions {
        create_dir: false,
        ..SqliteOptions::default()
    }
}

fn put(key: &str, value: &[u8]) -> Op {
    Op::Put {
        key: key.to_owned(),
        value: value.to_vec(),
        expect: Expect::Any,
    }
}

/// Opening must fail; returns the error after checking that its message names `path`.
fn open_err(dir: &Path, path: &Path) -> StoreError {
    let err = SqliteStore::open(dir, &opts()).expect_err("open must fail");
    let shown = err.to_string();
    assert!(
        shown.contains(&path.display().to_string()),
        "{shown:?} does not name {}",
        path.display()
    );
    err
}

fn is_root() -> bool {
    // /proc/self belongs to the effective uid; avoids an unsafe geteuid().
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn needs_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(test, "needs root for mount");
    false
}

/// Reports a test that cannot run here: fails under KIPAM_REQUIRE_REAL (CI), else prints
/// SKIPPED and records it in $KIPAM_SKIP_LOG for scripts/test to count.
fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("KIPAM_REQUIRE_REAL").is_none(),
        "{test} cannot run here ({why}) and KIPAM_REQUIRE_REAL forbids skipping"
    );
    eprintln!("SKIPPED: {test}: {why}");
    println!("SKIPPED: {test}: {why}");
    if let Some(log) = std::env::var_os("KIPAM_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)
        {
            let _ = writeln!(f, "{test}: {why}");
        }
    }
}

/// A mount that is undone on drop, even when the test fails.
struct Mount {
    target: PathBuf,
}

impl Mount {
    fn run(args: &[&str]) {
        let status = Command::new("mount")
            .args(args)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount {args:?} failed: {status}");
    }

    fn tmpfs(target: &Path, options: &str) -> Mount {
        let t = target.to_str().expect("utf-8 temp path");
        Self::run(&["-t", "tmpfs", "-o", options, "tmpfs", t]);
        Mount {
            target: target.to_owned(),
        }
    }

    fn read_only_bind(target: &Path) -> Mount {
        let t = target.to_str().expect("utf-8 temp path");
        Self::run(&["--bind", t, t]);
        let guard = Mount {
            target: target.to_owned(),
        };
        Self::run(&["-o", "remount,ro,bind", t, t]);
        guard
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.target)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            // Lazy unmount as the fallback so a leaked handle cannot wedge the temp dir.
            let _ = Command::new("umount").arg("-l").arg(&self.target).status();
        }
    }
}

#[test]
fn missing_directory() {
    let tmp = TempDir::new("missing");
    let dir = tmp.path().join("not-there");
    let err = open_err(&dir, &dir);
    assert!(
        matches!(&err, StoreError::MissingDirectory { path } if *path == dir),
        "{err:?}"
    );
    assert!(!dir.exists(), "create_dir=false must not create it");

    let store = SqliteStore::open(
        &dir,
        &SqliteOptions {
            create_dir: true,
            ..opts()
        },
    )
    .expect("create_dir=true");
    assert_eq!(store.path(), dir.join(DB_FILE_NAME));
    store.commit(&[put("k", b"v")]).unwrap();
}

#[test]
fn not_a_directory() {
    let tmp = TempDir::new("notdir");
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = open_err(&file, &file);
    assert!(matches!(err, StoreError::NotADirectory { .. }), "{err:?}");
}

#[test]
fn garbage_file_is_corrupt_and_untouched() {
    let tmp = TempDir::new("garbage");
    let db = tmp.path().join(DB_FILE_NAME);
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&db, &garbage).unwrap();
    let err = open_err(tmp.path(), &db);
    assert!(
        matches!(&err, StoreError::Corrupt { path, .. } if *path == db),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        garbage,
        "a corrupt file is never rewritten"
    );
}

#[test]
fn overwritten_pages_are_corrupt() {
    let tmp = TempDir::new("pages");
    let db = tmp.path().join(DB_FILE_NAME);
    {
        let store = SqliteStore::open(tmp.path(), &opts()).unwrap();
        let ops: Vec<Op> = (0..300)
            .map(|i| put(&format!("key/{i:04}"), &[7; 100]))
            .collect();
        store.commit(&ops).unwrap();
        store.check_integrity().expect("healthy before the damage");
    } // The last connection closing checkpoints the WAL into the main file.
    let root_page: i64 = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'kv'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let mut bytes = std::fs::read(&db).unwrap();
    let page_size = 4096;
    let start = (usize::try_from(root_page).unwrap() - 1) * page_size;
    bytes[start..start + page_size].fill(0xA5);
    std::fs::write(&db, &bytes).unwrap();

    let check = |err: StoreError| {
        assert!(
            err.to_string().contains(&db.display().to_string()),
            "{err} does not name the file"
        );
        assert!(
            matches!(&err, StoreError::Corrupt { path, .. } if *path == db),
            "{err:?}"
        );
    };
    match SqliteStore::open(tmp.path(), &opts()) {
        Err(err) => check(err),
        Ok(store) => {
            check(store.list("").expect_err("reading a damaged table"));
            check(store.check_integrity().expect_err("integrity check"));
        }
    }
}

#[test]
fn foreign_sqlite_database_is_refused() {
    let tmp = TempDir::new("foreign");
    let db = tmp.path().join(DB_FILE_NAME);
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE other (x); INSERT INTO other VALUES (1);")
            .unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let err = open_err(tmp.path(), &db);
    assert!(
        matches!(&err, StoreError::Corrupt { path, .. } if *path == db),
        "{err:?}"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let kv: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'kv'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kv, 0, "no kipam table added to a foreign database");
    drop(conn);
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "a foreign database is never written"
    );
}

#[test]
fn newer_schema_is_refused_and_untouched() {
    let tmp = TempDir::new("schema");
    let db = tmp.path().join(DB_FILE_NAME);
    {
        let store = SqliteStore::open(tmp.path(), &opts()).unwrap();
        store.commit(&[put("keep", b"me")]).unwrap();
    }
    let set_version = |v: u32| {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "user_version", v).unwrap();
    };
    set_version(99);
    let before = std::fs::read(&db).unwrap();
    let err = open_err(tmp.path(), &db);
    assert!(
        matches!(&err, StoreError::SchemaTooNew { path, found: 99, supported } if *path == db && *supported == SCHEMA_VERSION),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "a newer file is never written"
    );
    set_version(SCHEMA_VERSION);
    let store = SqliteStore::open(tmp.path(), &opts()).unwrap();
    assert_eq!(store.get("keep").unwrap().expect("kept").value, b"me");
}

#[test]
fn read_only_filesystem_fresh() {
    if !needs_root("read_only_filesystem_fresh") {
        return;
    }
    let tmp = TempDir::new("ro-fresh");
    let _mount = Mount::tmpfs(tmp.path(), "ro,size=64k");
    let db = tmp.path().join(DB_FILE_NAME);
    let err = open_err(tmp.path(), &db);
    assert!(
        matches!(&err, StoreError::ReadOnly { path } if *path == db),
        "{err:?}"
    );
}

#[test]
fn read_only_filesystem_existing() {
    if !needs_root("read_only_filesystem_existing") {
        return;
    }
    let tmp = TempDir::new("ro-existing");
    let db = tmp.path().join(DB_FILE_NAME);
    let rev = {
        let store = SqliteStore::open(tmp.path(), &opts()).unwrap();
        store.commit(&[put("keep", b"me")]).unwrap()
    };
    {
        let _mount = Mount::read_only_bind(tmp.path());
        let err = open_err(tmp.path(), &db);
        assert!(
            matches!(&err, StoreError::ReadOnly { path } if *path == db),
            "{err:?}"
        );
    }
    let store = SqliteStore::open(tmp.path(), &opts()).unwrap();
    let record = store.get("keep").unwrap().expect("kept");
    assert_eq!(
        (record.value.as_slice(), record.revision),
        (&b"me"[..], rev)
    );
}

#[test]
fn disk_full_loses_nothing_and_recovers() {
    if !needs_root("disk_full_loses_nothing_and_recovers") {
        return;
    }
    let tmp = TempDir::new("full");
    let mount = Mount::tmpfs(tmp.path(), "size=256k");
    let db = tmp.path().join(DB_FILE_NAME);
    let filler = tmp.path().join("filler");
    std::fs::write(&filler, vec![0u8; 64 * 1024]).unwrap();

    let store = SqliteStore::open(tmp.path(), &opts()).unwrap();
    let mut committed = Vec::new();
    let mut full = None;
    for i in 0..200u32 {
        let key = format!("big/{i:03}");
        let value = vec![u8::try_from(i % 251).unwrap(); 8 * 1024];
        match store.commit(&[put(&key, &value)]) {
            Ok(rev) => committed.push((key, value, rev)),
            Err(err) => {
                full = Some(err);
                break;
            }
        }
    }
    let err = full.expect("a 256k file system fills up within 200 x 8k writes");
    assert!(
        matches!(&err, StoreError::DiskFull { path } if *path == db),
        "{err:?}"
    );
    assert!(err.to_string().contains(&db.display().to_string()), "{err}");
    assert!(
        !committed.is_empty(),
        "some writes fit before the disk filled"
    );

    let verify = |store: &SqliteStore| {
        for (key, value, rev) in &committed {
            let record = store.get(key).unwrap().expect("committed record survives");
            assert_eq!((&record.value, record.revision), (value, *rev), "{key}");
        }
        assert_eq!(
            store.list("big/").unwrap().len(),
            committed.len(),
            "the failed write is absent"
        );
    };
    verify(&store);
    drop(store);
    let store = SqliteStore::open(tmp.path(), &opts()).expect("reopen on a full disk");
    verify(&store);

    std::fs::remove_file(&filler).unwrap();
    store
        .commit(&[put("after", b"space freed")])
        .expect("writes work again once space is freed");
    assert_eq!(
        store.get("after").unwrap().expect("after").value,
        b"space freed"
    );
    store.check_integrity().unwrap();
    drop(store);
    drop(mount);
}

#[test]
fn busy_after_timeout_changes_nothing() {
    let tmp = TempDir::new("busy");
    let store = SqliteStore::open(tmp.path(), &opts()).unwrap();
    store.commit(&[put("k", b"v")]).unwrap();
    let waited = Duration::from_millis(200);
    let short = SqliteStore::open(
        tmp.path(),
        &SqliteOptions {
            busy_timeout: waited,
            ..opts()
        },
    )
    .unwrap();

    let holder = rusqlite::Connection::open(store.path()).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = short
        .commit(&[put("k", b"blocked")])
        .expect_err("the write lock is held");
    assert!(
        matches!(err, StoreError::Busy { waited: w } if w == waited),
        "{err:?}"
    );
    let err = short
        .run_txn(&mut |_| Ok(true))
        .expect_err("the write lock is held");
    assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
    // Reads do not wait for the writer (WAL).
    assert_eq!(short.get("k").unwrap().expect("k").value, b"v");
    holder.execute_batch("ROLLBACK").unwrap();

    short.commit(&[put("k", b"now")]).expect("lock released");
    assert_eq!(store.get("k").unwrap().expect("k").value, b"now");
}

#[test]
fn concurrent_openers_of_a_fresh_file() {
    const OPENERS: usize = 8;
    let tmp = TempDir::new("fresh");
    let dir = tmp.path().join("data");
    let barrier = Barrier::new(OPENERS);
    std::thread::scope(|scope| {
        for i in 0..OPENERS {
            let (dir, barrier) = (&dir, &barrier);
            scope.spawn(move || {
                barrier.wait();
                let store = SqliteStore::open(
                    dir,
                    &SqliteOptions {
                        create_dir: true,
                        ..opts()
                    },
                )
                .unwrap_or_else(|e| panic!("opener {i}: {e}"));
                store.commit(&[put(&format!("opener/{i}"), b"")]).unwrap();
            });
        }
    });
    let store = SqliteStore::open(&dir, &opts()).unwrap();
    assert_eq!(store.list("opener/").unwrap().len(), OPENERS);
    assert_eq!(store.current_revision().unwrap(), OPENERS as u64);
}
