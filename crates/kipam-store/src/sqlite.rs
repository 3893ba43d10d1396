//! `SqliteStore`: the embedded, default backend — one SQLite file, `<dir>/kipam.db`.
//!
//! Many processes open the file at once (every CNI exec, kipamd, kipamctl), so the shape
//! follows from SQLite's locking rather than from an in-process lock:
//!
//! - WAL journal: readers never block the writer and the writer never blocks readers.
//! - `synchronous=FULL`: every commit is fsynced before it returns (NORMAL in WAL mode can
//!   lose the last commits on power loss — an address handed out and then forgotten).
//!   A long-lived writer may move that fsync to a thread of its own
//!   ([`SqliteStore::with_deferred_sync`], [`WalSync`]) and answer only after it.
//! - Every write, including [`Store::run_txn`], starts with `BEGIN IMMEDIATE`, taking the
//!   single write lock up front. A read-modify-write therefore reads and writes under the
//!   lock: no conflicts, no retries, the body runs exactly once. Waiting for the lock is
//!   bounded by the busy timeout, after which the caller gets [`StoreError::Busy`].
//! - The schema is versioned with `PRAGMA user_version`. [`MIGRATIONS`] run inside one
//!   `BEGIN IMMEDIATE` transaction that re-reads the version first, so concurrent openers
//!   of a fresh file serialize and the second one finds nothing left to do.
//! - `open` must be cheap (it runs on every CNI exec): it reads the header and the
//!   version and, when the schema is current, writes nothing and scans nothing.
//!
//! SQLite result codes are mapped to the typed errors of [`StoreError`] in one place,
//! `Ctx::map`, so every error names the file it concerns.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::store::{
    Expect, Op, Record, Revision, Store, StoreError, Txn, TxnBody, validate_key, validate_prefix,
};

/// The database file's name inside the data directory.
pub const DB_FILE_NAME: &str = "kipam.db";

/// Schema migrations, in order: `MIGRATIONS[i]` takes the file from version `i` to `i + 1`.
/// Each is SQL run inside the migration transaction; released entries are never edited.
pub const MIGRATIONS: &[&str] = &[
    // v1: the key-value table and the global revision counter.
    "CREATE TABLE IF NOT EXISTS kv (
         key      TEXT    PRIMARY KEY,
         value    BLOB    NOT NULL,
         revision INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE IF NOT EXISTS meta (
         name  TEXT    PRIMARY KEY,
         value INTEGER NOT NULL
     ) WITHOUT ROWID;
     INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);",
];

/// The schema version this binary reads and writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How [`SqliteStore::open`] behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Create the data directory (and its parents) when it does not exist.
    pub create_dir: bool,
    /// How long to wait for another process's write lock before [`StoreError::Busy`].
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            create_dir: false,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// Syncs a database's WAL file: `fdatasync` on a descriptor of its own for the same
/// file, which makes every frame any connection wrote before the call durable (see
/// [`SqliteStore::with_deferred_sync`]).
#[derive(Debug)]
pub struct WalSync {
    wal: PathBuf,
    dir: PathBuf,
    /// The open WAL and its (device, inode), to notice a WAL that was replaced.
    file: Option<(std::fs::File, (u64, u64))>,
}

impl WalSync {
    /// The WAL file it syncs.
    pub fn path(&self) -> &Path {
        &self.wal
    }

    /// Makes every WAL frame written so far durable. Call it after the commits it must
    /// cover have returned. The first call (and a call that finds the WAL replaced, which
    /// only happens if every connection closed meanwhile) also syncs the directory, for
    /// the WAL's directory entry. Errors: [`StoreError::Io`] naming the WAL file; after
    /// an error, whether those frames reached the disk is unknown.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        use std::os::unix::fs::MetadataExt;
        let io = |path: &Path, source: std::io::Error| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let on_disk = std::fs::metadata(&self.wal).map_err(|e| io(&self.wal, e))?;
        let id = (on_disk.dev(), on_disk.ino());
        if self.file.as_ref().map(|(_, open)| *open) != Some(id) {
            let file = std::fs::File::open(&self.wal).map_err(|e| io(&self.wal, e))?;
            let meta = file.metadata().map_err(|e| io(&self.wal, e))?;
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(&self.dir, e))?;
            self.file = Some((file, (meta.dev(), meta.ino())));
        }
        match &self.file {
            Some((file, _)) => file.sync_data().map_err(|e| io(&self.wal, e)),
            None => Ok(()),
        }
    }
}

/// How [`SqliteStore::checkpoint`] treats the WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// Copy what can be copied without waiting; leave the WAL file as it is.
    Passive,
    /// Copy everything and truncate the WAL to zero bytes, or give up when busy.
    Truncate,
    /// Copy everything so the next commit starts the WAL over from its beginning, writing
    /// over the file instead of growing it (a sync of pages written in place is about half
    /// the cost of one that grows the file), or give up when busy. The file keeps its
    /// size up to `journal_size_limit`.
    Restart,
}

/// What a checkpoint did (SQLite's `wal_checkpoint` row).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// It could not finish because another connection was reading or writing.
    pub busy: bool,
    /// Frames in the WAL when it ran.
    pub wal_frames: u64,
    /// Of those, frames now copied into the main file.
    pub copied_frames: u64,
}

/// The SQLite-backed [`Store`]. Cheap to open; safe to open many times, from many threads
/// and processes, on one directory. Within one `SqliteStore`, calls are serialized by a
/// mutex around its connection.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    ctx: Ctx,
    /// WAL frames after which a commit trims the WAL ([`SqliteStore::with_wal_trim_frames`]).
    wal_trim_frames: u64,
}

/// What error mapping needs to know about the store.
#[derive(Clone, Debug)]
struct Ctx {
    path: PathBuf,
    busy_timeout: Duration,
}

const GET: &str = "SELECT value, revision FROM kv WHERE key = ?1";
const GET_REVISION: &str = "SELECT revision FROM kv WHERE key = ?1";
const SCAN_FROM: &str = "SELECT key, value, revision FROM kv WHERE key >= ?1 ORDER BY key";
const SCAN_AFTER: &str = "SELECT key, value, revision FROM kv WHERE key > ?1 ORDER BY key";
const UPSERT: &str = "INSERT OR REPLACE INTO kv (key, value, revision) VALUES (?1, ?2, ?3)";
const DELETE: &str = "DELETE FROM kv WHERE key = ?1";
const READ_REVISION: &str = "SELECT value FROM meta WHERE name = 'revision'";
const WRITE_REVISION: &str = "UPDATE meta SET value = ?1 WHERE name = 'revision'";

impl SqliteStore {
    /// Opens (creating if needed) `dir/kipam.db`, migrating an older schema.
    ///
    /// Errors, each naming the path: [`StoreError::MissingDirectory`] (dir absent and
    /// `create_dir` false), [`StoreError::NotADirectory`], [`StoreError::ReadOnly`],
    /// [`StoreError::Corrupt`] (not a database, damaged header or schema),
    /// [`StoreError::SchemaTooNew`], [`StoreError::DiskFull`], [`StoreError::Busy`] (a
    /// concurrent migration held the lock past the timeout), [`StoreError::Io`]. A file
    /// that fails to open is never modified, so nothing is lost by trying.
    pub fn open(dir: &Path, opts: &SqliteOptions) -> Result<Self, StoreError> {
        prepare_dir(dir, opts.create_dir)?;
        let ctx = Ctx {
            path: dir.join(DB_FILE_NAME),
            busy_timeout: opts.busy_timeout,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&ctx.path, flags).map_err(|e| ctx.map("open", e))?;
        conn.busy_timeout(opts.busy_timeout)
            .map_err(|e| ctx.map("open", e))?;
        // The first read of the header: a non-database fails here, before any write.
        let version = user_version(&conn).map_err(|e| ctx.map("open", e))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: ctx.path,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        // SQLite silently falls back to read-only when the file cannot be written.
        if conn
            .is_readonly(rusqlite::MAIN_DB)
            .map_err(|e| ctx.map("open", e))?
        {
            return Err(StoreError::ReadOnly { path: ctx.path });
        }
        if version == 0 {
            refuse_foreign(&conn, &ctx)?;
        }
        set_wal(&conn, &ctx)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| ctx.map("open", e))?;
        keep_wal(&conn, &ctx)?;
        if version < SCHEMA_VERSION {
            migrate(&conn, &ctx)?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            ctx,
            wal_trim_frames: WAL_TRIM_FRAMES,
        })
    }

    /// Trims the WAL only once it holds `frames` frames instead of [`WAL_TRIM_FRAMES`].
    /// For a long-lived writer such as kipamd, whose group commits write dozens of pages
    /// each: with the default, nearly every commit would pay a checkpoint (two more
    /// fsyncs). Its price is the replay by the next opener (about 5 µs a frame).
    pub fn with_wal_trim_frames(mut self, frames: u64) -> Self {
        self.wal_trim_frames = frames;
        self
    }

    /// Bounds the WAL file left behind when SQLite starts it over after a complete
    /// checkpoint (`PRAGMA journal_size_limit`): without a bound a WAL that a busy writer
    /// once grew stays that size on disk. Errors: as [`SqliteStore::open`].
    pub fn with_wal_size_limit(self, bytes: u64) -> Result<Self, StoreError> {
        let limit = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.conn()
            .query_row(&format!("PRAGMA journal_size_limit = {limit}"), [], |_| {
                Ok(())
            })
            .map_err(|e| self.ctx.map("open", e))?;
        Ok(self)
    }

    /// Stops this connection from fsyncing the WAL at each commit
    /// (`synchronous=NORMAL`), for a writer that syncs it itself, through
    /// [`SqliteStore::wal_sync`], before it treats any commit as durable — off its commit
    /// path, so the next transaction is written while the last one is synced (kipamd's
    /// group commit). Until that sync a commit survives a crash of the process but not a
    /// power loss. Checkpoints still sync the WAL before copying it and the main file
    /// after, exactly as with `FULL`; the one thing `FULL` adds is this per-commit sync.
    /// Errors: as [`SqliteStore::open`].
    pub fn with_deferred_sync(self) -> Result<Self, StoreError> {
        self.conn()
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| self.ctx.map("open", e))?;
        Ok(self)
    }

    /// A handle that makes this file's committed WAL frames durable (see
    /// [`SqliteStore::with_deferred_sync`]); usable from another thread than the one
    /// committing.
    pub fn wal_sync(&self) -> WalSync {
        let mut wal = self.ctx.path.clone().into_os_string();
        wal.push("-wal");
        WalSync {
            wal: PathBuf::from(wal),
            dir: self
                .ctx
                .path
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            file: None,
        }
    }

    /// Copies committed WAL frames into the main file now, on this connection.
    ///
    /// [`Checkpoint::Passive`] copies what it can without waiting for or blocking anyone:
    /// another connection may keep committing meanwhile, so a long-lived writer (kipamd)
    /// runs it on a thread of its own instead of pausing its commits for it. SQLite starts
    /// the WAL over at the next commit once a checkpoint has copied all of it.
    /// [`Checkpoint::Truncate`] also empties the WAL file, and gives up at once
    /// ([`CheckpointStats::busy`]) when another connection is reading or writing.
    /// Either way the main file is synced before the WAL is reused, so no commit's
    /// durability depends on when (or whether) this runs. Errors: [`StoreError::DiskFull`],
    /// [`StoreError::Io`], naming the file.
    pub fn checkpoint(&self, mode: Checkpoint) -> Result<CheckpointStats, StoreError> {
        let conn = self.conn();
        let sql = match mode {
            Checkpoint::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
            Checkpoint::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
            Checkpoint::Restart => "PRAGMA wal_checkpoint(RESTART)",
        };
        let waited = conn.busy_timeout(Duration::ZERO);
        let stats = conn.query_row(sql, [], |row| {
            Ok(CheckpointStats {
                busy: row.get::<_, i64>(0)? != 0,
                wal_frames: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                copied_frames: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
            })
        });
        // As in `trim_wal`: restoring the timeout only sets a field of the connection.
        if waited.is_ok() {
            let _ = conn.busy_timeout(self.ctx.busy_timeout);
        }
        stats.map_err(|e| self.ctx.map("checkpoint", e))
    }

    /// The database file (`dir/kipam.db`).
    pub fn path(&self) -> &Path {
        &self.ctx.path
    }

    /// Runs SQLite's full consistency check (reads the whole file: not for hot paths).
    /// Errors: [`StoreError::Corrupt`] with SQLite's findings when the file is damaged.
    pub fn check_integrity(&self) -> Result<(), StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("PRAGMA integrity_check")
            .map_err(|e| self.ctx.map("integrity check", e))?;
        let findings = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<String>, _>>())
            .map_err(|e| self.ctx.map("integrity check", e))?;
        if findings.len() == 1 && findings[0] == "ok" {
            return Ok(());
        }
        Err(StoreError::Corrupt {
            path: self.ctx.path.clone(),
            detail: findings.join("; "),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // Every use of the connection ends its SQL transaction before releasing the lock
        // (rusqlite's Transaction rolls back on drop, also when unwinding), so a poisoned
        // lock guards a usable connection.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// After a commit: when the WAL has grown past its trim size, copies it into the
    /// main file and truncates it to zero (`wal_checkpoint(TRUNCATE)`), without waiting for
    /// anyone. Best-effort by design: the commit before it is already durable in the WAL, a
    /// checkpoint that finds other processes reading or writing is simply left to the next
    /// commit, and a real I/O fault here shows up again, as an error, on the next commit.
    fn trim_wal(&self, conn: &Connection) {
        let mut wal = self.ctx.path.clone().into_os_string();
        wal.push("-wal");
        let frames = std::fs::metadata(&wal).map_or(0, |m| m.len() / WAL_FRAME_BYTES);
        if frames < self.wal_trim_frames {
            return;
        }
        if conn.busy_timeout(Duration::ZERO).is_ok() {
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
        // Restoring the timeout cannot fail (it only sets a field of the connection); if it
        // somehow did, later writes would report Busy at once rather than hang.
        let _ = conn.busy_timeout(self.ctx.busy_timeout);
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction, committing on Ok(Some(_)), rolling
    /// back on Ok(None) or Err.
    fn immediate<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Connection, &Ctx) -> Result<Option<T>, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.ctx.map(op, e))?;
        match f(&tx, &self.ctx)? {
            Some(value) => {
                tx.commit().map_err(|e| self.ctx.map(op, e))?;
                self.trim_wal(&conn);
                Ok(Some(value))
            }
            None => {
                tx.rollback().map_err(|e| self.ctx.map(op, e))?;
                Ok(None)
            }
        }
    }
}

impl Store for SqliteStore {
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        validate_key(key)?;
        read_record(&self.conn(), &self.ctx, key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<Record>, StoreError> {
        validate_prefix(prefix)?;
        scan(&self.conn(), &self.ctx, prefix, None, usize::MAX)
    }

    fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        validate_prefix(prefix)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        scan(&self.conn(), &self.ctx, prefix, after, limit)
    }

    fn commit(&self, ops: &[Op]) -> Result<Revision, StoreError> {
        for op in ops {
            match op {
                Op::CheckPrefix { prefix, .. } => validate_prefix(prefix)?,
                other => validate_key(other.key())?,
            }
        }
        let outcome = self.immediate("commit", |tx, ctx| {
            let mut changes = false;
            for op in ops {
                match op {
                    Op::Put { key, expect, .. }
                    | Op::Delete { key, expect }
                    | Op::Check { key, expect } => {
                        let found = read_revision(tx, ctx, key)?;
                        if !expect.holds(found) {
                            return Err(StoreError::Conflict {
                                key: key.clone(),
                                expected: *expect,
                                found,
                            });
                        }
                        changes |= matches!(op, Op::Put { .. })
                            || (matches!(op, Op::Delete { .. }) && found.is_some());
                    }
                    Op::CheckPrefix {
                        prefix,
                        max_revision,
                    } => {
                        let newer = scan(tx, ctx, prefix, None, usize::MAX)?
                            .into_iter()
                            .find(|record| record.revision > *max_revision);
                        if let Some(record) = newer {
                            return Err(StoreError::Conflict {
                                key: record.key,
                                expected: Expect::Revision(*max_revision),
                                found: Some(record.revision),
                            });
                        }
                    }
                }
            }
            let current = read_current_revision(tx, ctx)?;
            if !changes {
                return Ok(Some(current));
            }
            let revision = current + 1;
            for op in ops {
                match op {
                    Op::Put { key, value, .. } => write_record(tx, ctx, key, value, revision)?,
                    Op::Delete { key, .. } => {
                        delete_record(tx, ctx, key)?;
                    }
                    Op::Check { .. } | Op::CheckPrefix { .. } => {}
                }
            }
            write_current_revision(tx, ctx, revision)?;
            Ok(Some(revision))
        })?;
        outcome.ok_or_else(|| unreachable_rollback(&self.ctx))
    }

    fn run_txn(&self, body: &mut TxnBody<'_>) -> Result<Option<Revision>, StoreError> {
        self.immediate("transaction", |tx, ctx| {
            let current = read_current_revision(tx, ctx)?;
            let mut txn = SqliteTxn {
                tx,
                ctx,
                pending: current + 1,
                wrote: false,
            };
            if !body(&mut txn)? {
                return Ok(None);
            }
            if !txn.wrote {
                return Ok(Some(current));
            }
            write_current_revision(tx, ctx, txn.pending)?;
            Ok(Some(txn.pending))
        })
    }

    fn current_revision(&self) -> Result<Revision, StoreError> {
        read_current_revision(&self.conn(), &self.ctx)
    }
}

/// The [`Txn`] of [`SqliteStore::run_txn`]: reads and writes go straight to the live
/// `BEGIN IMMEDIATE` transaction, stamped with the revision the commit will get.
struct SqliteTxn<'a> {
    tx: &'a Connection,
    ctx: &'a Ctx,
    /// The revision this transaction commits under.
    pending: Revision,
    /// Whether any key changed.
    wrote: bool,
}

impl SqliteTxn<'_> {
    /// Records written by this transaction carry `pending`, which no committed record can
    /// have yet; the contract reports them with revision 0.
    fn present(&self, mut record: Record) -> Record {
        if record.revision == self.pending {
            record.revision = 0;
        }
        record
    }
}

impl Txn for SqliteTxn<'_> {
    fn get(&mut self, key: &str) -> Result<Option<Record>, StoreError> {
        validate_key(key)?;
        Ok(read_record(self.tx, self.ctx, key)?.map(|record| self.present(record)))
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<Record>, StoreError> {
        validate_prefix(prefix)?;
        let records = scan(self.tx, self.ctx, prefix, None, usize::MAX)?;
        Ok(records
            .into_iter()
            .map(|record| self.present(record))
            .collect())
    }

    fn list_page(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        validate_prefix(prefix)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let records = scan(self.tx, self.ctx, prefix, after, limit)?;
        Ok(records
            .into_iter()
            .map(|record| self.present(record))
            .collect())
    }

    fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        validate_key(key)?;
        write_record(self.tx, self.ctx, key, &value, self.pending)?;
        self.wrote = true;
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        self.wrote |= delete_record(self.tx, self.ctx, key)?;
        Ok(())
    }
}

fn prepare_dir(dir: &Path, create: bool) -> Result<(), StoreError> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(StoreError::NotADirectory {
            path: dir.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !create {
                return Err(StoreError::MissingDirectory {
                    path: dir.to_owned(),
                });
            }
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))
        }
        Err(e) => Err(io_error(dir, e)),
    }
}

/// Maps an OS error on `path` to the typed condition when there is one.
fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    use std::io::ErrorKind;
    let path = path.to_owned();
    match source.kind() {
        ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied => {
            StoreError::ReadOnly { path }
        }
        ErrorKind::StorageFull => StoreError::DiskFull { path },
        _ => StoreError::Io { path, source },
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    // user_version is a signed 32-bit header field; anything we did not write (negative)
    // reads as "newer than supported" rather than being misread as old.
    let raw: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    Ok(u32::try_from(raw).unwrap_or(u32::MAX))
}

/// Switches the file to WAL. Two openers of a fresh file can both attempt the switch; the
/// loser may see SQLITE_BUSY without the busy handler having run, so retry until the
/// busy timeout. Once a file is in WAL mode the pragma is a cheap no-op.
fn set_wal(conn: &Connection, ctx: &Ctx) -> Result<(), StoreError> {
    let started = Instant::now();
    loop {
        let result = conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
            row.get::<_, String>(0)
        });
        match result {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(StoreError::Corrupt {
                    path: ctx.path.clone(),
                    detail: format!("cannot switch to WAL journal mode (still {mode})"),
                });
            }
            Err(e) if is_busy(&e) && started.elapsed() < ctx.busy_timeout => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(ctx.map("open", e)),
        }
    }
}

/// Leaves the WAL in place when the connection closes and turns SQLite's own
/// checkpointing off: [`SqliteStore::trim_wal`] does it instead (see "Why the WAL outlives
/// the process" in docs/storage.md).
fn keep_wal(conn: &Connection, ctx: &Ctx) -> Result<(), StoreError> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(|e| ctx.map("open", e))?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(|e| ctx.map("open", e))?;
    Ok(())
}

/// WAL frames (pages) after which a commit copies the WAL into the main file and
/// truncates it. Every opener of the file replays the WAL into a fresh index (the last
/// process to close leaves no index behind), about 5 µs a frame; a trim costs an extra
/// fsync of the main file. A CNI ADD writes about 6 frames, so 32 trims every ~5th ADD
/// and keeps replay under ~0.15 ms (measured: 16, 32, 64, 128 and 1,000 frames; see
/// docs/BENCHMARKS.md).
pub const WAL_TRIM_FRAMES: u64 = 32;

/// Bytes of one WAL frame: a 24-byte frame header and one page (kipam files keep
/// SQLite's default 4 KiB pages).
const WAL_FRAME_BYTES: u64 = 24 + 4096;

fn migrate(conn: &Connection, ctx: &Ctx) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| ctx.map("migration", e))?;
    let result = (|| {
        // Re-read under the write lock: a concurrent opener may have migrated already.
        let version = user_version(conn).map_err(|e| ctx.map("migration", e))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: ctx.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        refuse_foreign(conn, ctx)?;
        for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(sql)
                .map_err(|e| ctx.map("migration", e))?;
            let to = i64::try_from(from + 1).unwrap_or(i64::MAX);
            conn.pragma_update(None, "user_version", to)
                .map_err(|e| ctx.map("migration", e))?;
        }
        conn.execute_batch("COMMIT")
            .map_err(|e| ctx.map("migration", e))
    })();
    if result.is_err() && !conn.is_autocommit() {
        // The original error is what the caller needs; a failed rollback leaves nothing
        // committed either, and closing the connection ends the transaction.
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

/// Version 0 with tables in it is somebody else's database: adding ours would mix two
/// applications' data in one file (and switching it to WAL would already modify it).
/// Version and table count come from one statement, so one snapshot: a concurrent opener
/// finishing the migration cannot make a fresh kipam file look foreign.
fn refuse_foreign(conn: &Connection, ctx: &Ctx) -> Result<(), StoreError> {
    let (version, objects): (i64, i64) = conn
        .query_row(
            "SELECT user_version, (SELECT count(*) FROM sqlite_schema) FROM pragma_user_version",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(|e| ctx.map("open", e))?;
    if version == 0 && objects > 0 {
        return Err(StoreError::Corrupt {
            path: ctx.path.clone(),
            detail: format!(
                "a SQLite database with {objects} schema objects but no kipam schema version"
            ),
        });
    }
    Ok(())
}

fn read_record(conn: &Connection, ctx: &Ctx, key: &str) -> Result<Option<Record>, StoreError> {
    let mut stmt = conn.prepare_cached(GET).map_err(|e| ctx.map("get", e))?;
    let row = stmt
        .query_row(params![key], |row| {
            Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, i64>(1)?))
        })
        .optional()
        .map_err(|e| ctx.map("get", e))?;
    row.map(|(value, revision)| {
        Ok(Record {
            key: key.to_owned(),
            value,
            revision: ctx.revision(revision)?,
        })
    })
    .transpose()
}

fn read_revision(conn: &Connection, ctx: &Ctx, key: &str) -> Result<Option<Revision>, StoreError> {
    let mut stmt = conn
        .prepare_cached(GET_REVISION)
        .map_err(|e| ctx.map("get", e))?;
    let revision = stmt
        .query_row(params![key], |row| row.get::<_, i64>(0))
        .optional()
        .map_err(|e| ctx.map("get", e))?;
    revision.map(|revision| ctx.revision(revision)).transpose()
}

/// Up to `limit` records under `prefix` with keys greater than `after`, in key order.
/// Walks the primary-key index from the lower bound and stops at the first key outside
/// the prefix, so the cost is the size of the result, not of the table.
fn scan(
    conn: &Connection,
    ctx: &Ctx,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Record>, StoreError> {
    let (sql, bound) = match after {
        Some(after) if after >= prefix => (SCAN_AFTER, after),
        _ => (SCAN_FROM, prefix),
    };
    let mut stmt = conn.prepare_cached(sql).map_err(|e| ctx.map("list", e))?;
    let mut rows = stmt.query(params![bound]).map_err(|e| ctx.map("list", e))?;
    let mut records = Vec::new();
    while records.len() < limit {
        let Some(row) = rows.next().map_err(|e| ctx.map("list", e))? else {
            break;
        };
        let key: String = row.get(0).map_err(|e| ctx.map("list", e))?;
        if !key.starts_with(prefix) {
            break;
        }
        let value: Vec<u8> = row.get(1).map_err(|e| ctx.map("list", e))?;
        let revision = ctx.revision(row.get(2).map_err(|e| ctx.map("list", e))?)?;
        records.push(Record {
            key,
            value,
            revision,
        });
    }
    Ok(records)
}

fn write_record(
    conn: &Connection,
    ctx: &Ctx,
    key: &str,
    value: &[u8],
    revision: Revision,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(UPSERT).map_err(|e| ctx.map("put", e))?;
    stmt.execute(params![key, value, ctx.to_sql(revision)?])
        .map_err(|e| ctx.map("put", e))?;
    Ok(())
}

/// Deletes `key`; whether it existed.
fn delete_record(conn: &Connection, ctx: &Ctx, key: &str) -> Result<bool, StoreError> {
    let mut stmt = conn
        .prepare_cached(DELETE)
        .map_err(|e| ctx.map("delete", e))?;
    Ok(stmt
        .execute(params![key])
        .map_err(|e| ctx.map("delete", e))?
        > 0)
}

fn read_current_revision(conn: &Connection, ctx: &Ctx) -> Result<Revision, StoreError> {
    let mut stmt = conn
        .prepare_cached(READ_REVISION)
        .map_err(|e| ctx.map("read revision", e))?;
    let raw = stmt
        .query_row([], |row| row.get::<_, i64>(0))
        .optional()
        .map_err(|e| ctx.map("read revision", e))?;
    match raw {
        Some(raw) => ctx.revision(raw),
        None => Err(StoreError::Inconsistent {
            path: ctx.path.clone(),
            detail: "meta table has no revision row".to_owned(),
        }),
    }
}

fn write_current_revision(
    conn: &Connection,
    ctx: &Ctx,
    revision: Revision,
) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(WRITE_REVISION)
        .map_err(|e| ctx.map("write revision", e))?;
    stmt.execute(params![ctx.to_sql(revision)?])
        .map_err(|e| ctx.map("write revision", e))?;
    Ok(())
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// `commit`'s closure never asks for a rollback; if it somehow did, nothing was applied.
fn unreachable_rollback(ctx: &Ctx) -> StoreError {
    StoreError::Inconsistent {
        path: ctx.path.clone(),
        detail: "commit rolled back".to_owned(),
    }
}

impl Ctx {
    /// The typed error for a SQLite failure during `op`.
    fn map(&self, op: &'static str, source: rusqlite::Error) -> StoreError {
        let path = self.path.clone();
        let detail = |source: &rusqlite::Error| match source {
            rusqlite::Error::SqliteFailure(code, Some(message)) => format!("{message} ({code})"),
            other => other.to_string(),
        };
        match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy {
                waited: self.busy_timeout,
            },
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
                path,
                detail: detail(&source),
            },
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly { path },
            Some(ErrorCode::DiskFull) => StoreError::DiskFull { path },
            Some(ErrorCode::CannotOpen) => self.diagnose_cannot_open(op, source),
            _ => StoreError::Sqlite { op, source },
        }
    }

    /// SQLITE_CANTOPEN says nothing about why; ask the OS by opening the file ourselves
    /// (without truncating: an existing file is left as it is).
    fn diagnose_cannot_open(&self, op: &'static str, source: rusqlite::Error) -> StoreError {
        let probe = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path);
        match probe {
            Err(e) => io_error(&self.path, e),
            Ok(_) => StoreError::Sqlite { op, source },
        }
    }

    /// A revision read from the file; negative values mean the file was not written by us.
    fn revision(&self, raw: i64) -> Result<Revision, StoreError> {
        Revision::try_from(raw).map_err(|_| StoreError::Inconsistent {
            path: self.path.clone(),
            detail: format!("negative revision {raw}"),
        })
    }

    fn to_sql(&self, revision: Revision) -> Result<i64, StoreError> {
        i64::try_from(revision).map_err(|_| StoreError::Inconsistent {
            path: self.path.clone(),
            detail: format!("revision {revision} exceeds SQLite's integer range"),
        })
    }
}
