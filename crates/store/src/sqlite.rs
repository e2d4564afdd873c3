//! The SQLite backend: a kine-like append-only log of writes in one SQLite file, with the latest
//! state mirrored in memory.
//!
//! Layout: every write is one row of `log`, whose `revision` (the primary key) is the write's
//! revision; deletes are rows with `deleted = 1`. `meta` holds the compacted revision. The latest
//! state of every key lives in memory (loaded at open), so `get`, latest `list` and `count` never
//! touch SQLite; reads at older revisions and watch history read the log.
//!
//! Concurrency: one mutex serializes writers. Inside it a write checks its precondition against
//! the in-memory state, appends its row (an autocommit `INSERT`, durable once it returns: WAL with
//! `synchronous=NORMAL` survives the process being killed, not a power cut), updates the memory
//! and hands the event to the watchers, so revisions are gap-free and watchers see writes in
//! revision order. Reads of the latest state take only a read lock on the memory, which writers
//! hold just long enough to apply an already committed change. Reads of old revisions use a small
//! pool of separate connections, which WAL lets run alongside the writer.
//!
//! Only one `SqliteStore` may have a file open at a time (the in-memory state would silently go
//! stale otherwise); a `<file>.lock` next to the database enforces that across processes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{File, TryLockError};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use futures::StreamExt;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::mpsc;

use crate::{EventKind, KeyValue, ListResult, Revision, Store, StoreError, WatchEvent, WatchStream};

/// The `user_version` of the schema this code writes; a file with a newer one is refused.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    revision        INTEGER PRIMARY KEY,
    key             BLOB    NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision   INTEGER NOT NULL,
    deleted         INTEGER NOT NULL,
    value           BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_revision ON log (key, revision);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('compacted', 0);
";

/// The default capacity of a watcher's queue, in events.
pub const DEFAULT_WATCH_CHANNEL_CAPACITY: usize = 10_000;

/// Compaction deletes in transactions covering this many revisions each, so that writers wait
/// at most one chunk's work for the lock.
const COMPACT_CHUNK: Revision = 5_000;

/// Idle read connections kept for old-revision lists and watch history.
const MAX_IDLE_READERS: usize = 4;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Tunables of [`SqliteStore::open_with_options`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// How many events a watcher may have queued before it is dropped with
    /// [`StoreError::WatcherLagged`].
    pub watch_channel_capacity: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self { watch_channel_capacity: DEFAULT_WATCH_CHANNEL_CAPACITY }
    }
}

/// A [`Store`] in one SQLite file. Cheap to share behind an `Arc`.
///
/// Watch semantics worth knowing:
/// - a watch may start from a revision above the current one (as etcd allows): it yields
///   nothing until the store reaches that revision, then the changes after it;
/// - a watch from exactly the compacted revision works (every change after it is kept); only a
///   start below it fails with [`StoreError::Compacted`];
/// - the whole history of a watch is read when it starts, so a watch from far back costs memory
///   in proportion to the changes it replays;
/// - a watcher whose queue ([`SqliteOptions::watch_channel_capacity`]) fills up is dropped: its
///   stream yields what was queued, then `Err(WatcherLagged)`, then ends.
///
/// Writes run to completion on a blocking thread: a write whose future is dropped may still be
/// applied (as with a request already sent to etcd).
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

// Fields drop in declaration order: the connections close before the lock file is released.
struct Inner {
    writer: Mutex<Writer>,
    mem: RwLock<Memory>,
    readers: Mutex<Vec<Connection>>,
    /// Serializes compactions, which take the writer lock only chunk by chunk.
    compacting: Mutex<()>,
    path: PathBuf,
    watch_capacity: usize,
    _lock: File,
}

struct Writer {
    conn: Connection,
    watchers: Vec<Watcher>,
}

struct Memory {
    kvs: BTreeMap<String, KeyValue>,
    current: Revision,
    compacted: Revision,
}

struct Watcher {
    prefix: String,
    /// Events at or below this revision are not for this watcher (a watch from the future).
    from: Revision,
    tx: mpsc::Sender<WatchEvent>,
    /// Set before the sender is dropped for lagging, so the stream can tell lag from shutdown.
    lagged: Arc<AtomicBool>,
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("sqlite: {e}"))
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Backend("store lock poisoned by a panicked thread".to_owned())
}

/// Upper bound (exclusive) of the keys starting with `prefix`, for `key >= prefix AND key < end`.
/// Keys are stored as BLOBs of their UTF-8 bytes so SQLite compares them bytewise, like Rust
/// strings. `[0xFF]` is above every UTF-8 string, which never contains that byte, so it bounds
/// the empty prefix.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xFF]
}

fn key_string(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|e| StoreError::Backend(format!("sqlite: key is not UTF-8: {e}")))
}

/// Runs blocking SQLite work off the async worker threads. Without a tokio runtime (a caller
/// polling from another executor) it runs inline rather than panicking.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(f).await.map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
        }
        Err(_) => f(),
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!("sqlite: cannot enable WAL (journal_mode is {mode})")));
    }
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(db_err)?;
    Ok(())
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(db_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    conn.pragma_update(None, "query_only", true).map_err(db_err)?;
    Ok(conn)
}

fn read_compacted(conn: &Connection) -> Result<Revision, StoreError> {
    conn.query_row("SELECT value FROM meta WHERE name = 'compacted'", [], |row| row.get(0))
        .optional()
        .map_err(db_err)?
        .ok_or_else(|| StoreError::Backend("sqlite: meta has no compacted revision".to_owned()))
}

fn create_schema(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(db_err)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(db_err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "sqlite: schema version {version} is newer than this build understands ({SCHEMA_VERSION})"
        )));
    }
    tx.execute_batch(SCHEMA).map_err(db_err)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(db_err)?;
    tx.commit().map_err(db_err)
}

/// Loads the latest state: per key its newest row, unless that row is a delete.
fn load_memory(conn: &Connection) -> Result<Memory, StoreError> {
    let compacted = read_compacted(conn)?;
    let max_row: Option<Revision> =
        conn.query_row("SELECT MAX(revision) FROM log", [], |row| row.get(0)).map_err(db_err)?;
    // Compaction may delete the newest row (a delete at the compacted revision), but never
    // compacts beyond the current revision, so the larger of the two is the current revision.
    let current = max_row.unwrap_or(0).max(compacted);

    let mut stmt = conn
        .prepare(
            "SELECT l.key, l.value, l.create_revision, l.revision
             FROM (SELECT key, MAX(revision) AS rev FROM log GROUP BY key) m
             JOIN log l ON l.revision = m.rev
             WHERE l.deleted = 0",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?, row.get(2)?, row.get(3)?)))
        .map_err(db_err)?;
    let mut kvs = BTreeMap::new();
    for row in rows {
        let (key, value, create_revision, mod_revision) = row.map_err(db_err)?;
        let key = key_string(key)?;
        kvs.insert(key.clone(), KeyValue { key, value: value.into(), create_revision, mod_revision });
    }
    Ok(Memory { kvs, current, compacted })
}

/// The keys starting with `prefix` as of `revision`, read from the log.
fn list_from_log(conn: &Connection, prefix: &str, revision: Revision) -> Result<Vec<KeyValue>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT l.key, l.value, l.create_revision, l.revision
             FROM (SELECT key, MAX(revision) AS rev FROM log
                   WHERE key >= ?1 AND key < ?2 AND revision <= ?3 GROUP BY key) m
             JOIN log l ON l.revision = m.rev
             WHERE l.deleted = 0
             ORDER BY l.key",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map(params![prefix.as_bytes(), prefix_end(prefix), revision], |row| {
            Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?, row.get(2)?, row.get(3)?))
        })
        .map_err(db_err)?;
    let mut items = Vec::new();
    for row in rows {
        let (key, value, create_revision, mod_revision) = row.map_err(db_err)?;
        items.push(KeyValue { key: key_string(key)?, value: value.into(), create_revision, mod_revision });
    }
    Ok(items)
}

/// What a new watch gets from under the writer lock.
struct WatchStart {
    history: Vec<WatchEvent>,
    rx: mpsc::Receiver<WatchEvent>,
    lagged: Arc<AtomicBool>,
}

struct HistoryRow {
    revision: Revision,
    key: Vec<u8>,
    create_revision: Revision,
    deleted: bool,
    value: Vec<u8>,
    prev: Option<(Revision, Revision, Vec<u8>)>,
}

impl HistoryRow {
    fn into_event(self) -> Result<WatchEvent, StoreError> {
        let key = key_string(self.key)?;
        let prev = self.prev.map(|(mod_revision, create_revision, value)| KeyValue {
            key: key.clone(),
            value: value.into(),
            create_revision,
            mod_revision,
        });
        if self.deleted {
            // Delete rows store no value: it is the previous row's, which compaction keeps as
            // long as the delete is after the compacted revision.
            let Some(prev) = prev else {
                return Err(StoreError::Backend(format!(
                    "sqlite: delete of {key:?} at revision {} has no previous value",
                    self.revision
                )));
            };
            let kv = KeyValue {
                key,
                value: prev.value.clone(),
                create_revision: self.create_revision,
                mod_revision: self.revision,
            };
            return Ok(WatchEvent { kind: EventKind::Deleted, kv, prev: Some(prev) });
        }
        let kind = if self.create_revision == self.revision { EventKind::Created } else { EventKind::Updated };
        let kv = KeyValue {
            key,
            value: self.value.into(),
            create_revision: self.create_revision,
            mod_revision: self.revision,
        };
        Ok(WatchEvent { kind, kv, prev })
    }
}

/// The changes to keys starting with `prefix` with `after < revision <= upto`, in order.
fn history_from_log(
    conn: &Connection,
    prefix: &str,
    after: Revision,
    upto: Revision,
) -> Result<Vec<WatchEvent>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT l.revision, l.key, l.create_revision, l.deleted, l.value,
                    p.revision, p.create_revision, p.value
             FROM log l LEFT JOIN log p ON p.revision = l.prev_revision
             WHERE l.revision > ?1 AND l.revision <= ?2 AND l.key >= ?3 AND l.key < ?4
             ORDER BY l.revision",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map(params![after, upto, prefix.as_bytes(), prefix_end(prefix)], |row| {
            let prev = match (row.get(5)?, row.get(6)?, row.get(7)?) {
                (Some(r), Some(c), Some(v)) => Some((r, c, v)),
                _ => None,
            };
            Ok(HistoryRow {
                revision: row.get(0)?,
                key: row.get(1)?,
                create_revision: row.get(2)?,
                deleted: row.get(3)?,
                value: row.get(4)?,
                prev,
            })
        })
        .map_err(db_err)?;
    let mut events = Vec::new();
    for row in rows {
        events.push(row.map_err(db_err)?.into_event()?);
    }
    Ok(events)
}

impl Memory {
    fn range<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KeyValue> + 'a {
        self.kvs
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv)
    }

    fn check_read(&self, revision: Revision) -> Result<(), StoreError> {
        if revision > self.current {
            return Err(StoreError::FutureRevision { requested: revision, current: self.current });
        }
        if revision <= self.compacted {
            return Err(StoreError::Compacted { requested: revision, compacted: self.compacted });
        }
        Ok(())
    }
}

impl Writer {
    fn notify(&mut self, event: &WatchEvent) {
        let revision = event.kv.mod_revision;
        self.watchers.retain(|w| {
            if revision <= w.from || !event.kv.key.starts_with(&w.prefix) {
                return !w.tx.is_closed();
            }
            match w.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(prefix = %w.prefix, revision, "dropping a watcher that fell behind");
                    w.lagged.store(true, Ordering::SeqCst);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

impl Inner {
    fn writer(&self) -> Result<MutexGuard<'_, Writer>, StoreError> {
        self.writer.lock().map_err(poisoned)
    }

    fn mem(&self) -> Result<RwLockReadGuard<'_, Memory>, StoreError> {
        self.mem.read().map_err(poisoned)
    }

    fn mem_mut(&self) -> Result<RwLockWriteGuard<'_, Memory>, StoreError> {
        self.mem.write().map_err(poisoned)
    }

    /// Persists `event` as the next revision, applies it to memory and fans it out. The caller
    /// holds the writer lock and built `event` from memory under it.
    fn commit(&self, w: &mut Writer, event: WatchEvent) -> Result<KeyValue, StoreError> {
        let deleted = event.kind == EventKind::Deleted;
        let value: &[u8] = if deleted { &[] } else { &event.kv.value };
        let prev_revision = event.prev.as_ref().map_or(0, |p| p.mod_revision);
        w.conn
            .prepare_cached(
                "INSERT INTO log (revision, key, create_revision, prev_revision, deleted, value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    event.kv.mod_revision,
                    event.kv.key.as_bytes(),
                    event.kv.create_revision,
                    prev_revision,
                    deleted,
                    value,
                ])
            })
            .map_err(db_err)?;
        {
            let mut mem = self.mem_mut()?;
            if deleted {
                mem.kvs.remove(&event.kv.key);
            } else {
                mem.kvs.insert(event.kv.key.clone(), event.kv.clone());
            }
            mem.current = event.kv.mod_revision;
        }
        w.notify(&event);
        Ok(event.kv)
    }

    fn create(&self, key: String, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let mut w = self.writer()?;
        let revision = {
            let mem = self.mem()?;
            if mem.kvs.contains_key(&key) {
                return Err(StoreError::AlreadyExists { key });
            }
            mem.current + 1
        };
        let kv = KeyValue { key, value: value.into(), create_revision: revision, mod_revision: revision };
        self.commit(&mut w, WatchEvent { kind: EventKind::Created, kv, prev: None })
    }

    fn update(&self, key: String, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StoreError> {
        let mut w = self.writer()?;
        let event = {
            let mem = self.mem()?;
            let Some(prev) = mem.kvs.get(&key) else {
                return Err(StoreError::NotFound { key });
            };
            if prev.mod_revision != expected {
                return Err(StoreError::Conflict { key, expected, actual: prev.mod_revision });
            }
            let kv = KeyValue {
                key,
                value: value.into(),
                create_revision: prev.create_revision,
                mod_revision: mem.current + 1,
            };
            WatchEvent { kind: EventKind::Updated, kv, prev: Some(prev.clone()) }
        };
        self.commit(&mut w, event)
    }

    fn delete(&self, key: String, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        let mut w = self.writer()?;
        let event = {
            let mem = self.mem()?;
            let Some(prev) = mem.kvs.get(&key) else {
                return Err(StoreError::NotFound { key });
            };
            if let Some(expected) = expected
                && prev.mod_revision != expected
            {
                return Err(StoreError::Conflict { key, expected, actual: prev.mod_revision });
            }
            let kv = KeyValue {
                key,
                value: prev.value.clone(),
                create_revision: prev.create_revision,
                mod_revision: mem.current + 1,
            };
            WatchEvent { kind: EventKind::Deleted, kv, prev: Some(prev.clone()) }
        };
        self.commit(&mut w, event)
    }

    /// Runs `f` on a pooled read connection.
    fn with_reader<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = self.readers.lock().map_err(poisoned)?.pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let result = f(&mut conn);
        let mut pool = self.readers.lock().map_err(poisoned)?;
        if pool.len() < MAX_IDLE_READERS {
            pool.push(conn);
        }
        result
    }

    fn list_at(&self, prefix: &str, revision: Revision) -> Result<Vec<KeyValue>, StoreError> {
        self.with_reader(|conn| {
            // The compacted revision is re-read inside the read transaction: a compaction that
            // committed after the in-memory check must fail this read, not return a partial one.
            let tx = conn.transaction().map_err(db_err)?;
            let compacted = read_compacted(&tx)?;
            if revision <= compacted {
                return Err(StoreError::Compacted { requested: revision, compacted });
            }
            list_from_log(&tx, prefix, revision)
        })
    }

    fn start_watch(&self, prefix: String, from: Revision) -> Result<WatchStart, StoreError> {
        // The bulk of the history is read without the writer lock, up to the revision current
        // now; only what was written meanwhile is read under the lock, right before the watcher
        // is registered, so writers are not stalled by a long replay.
        let snapshot = self.mem()?.current;
        let mut history = Vec::new();
        if from < snapshot {
            history = self.with_reader(|conn| {
                let tx = conn.transaction().map_err(db_err)?;
                let compacted = read_compacted(&tx)?;
                if from < compacted {
                    return Err(StoreError::Compacted { requested: from, compacted });
                }
                history_from_log(&tx, &prefix, from, snapshot)
            })?;
        }

        let mut w = self.writer()?;
        let (compacted, current) = {
            let mem = self.mem()?;
            (mem.compacted, mem.current)
        };
        // Rows after `from` survive any compaction at or below `from`; a later one may have
        // removed rows this watch still needs.
        if from < compacted {
            return Err(StoreError::Compacted { requested: from, compacted });
        }
        let after = from.max(snapshot);
        if after < current {
            history.extend(history_from_log(&w.conn, &prefix, after, current)?);
        }
        let (tx, rx) = mpsc::channel(self.watch_capacity);
        let lagged = Arc::new(AtomicBool::new(false));
        w.watchers.retain(|w| !w.tx.is_closed());
        w.watchers.push(Watcher { prefix, from, tx, lagged: Arc::clone(&lagged) });
        Ok(WatchStart { history, rx, lagged })
    }

    fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let _serial = self.compacting.lock().map_err(poisoned)?;
        let previous = {
            let w = self.writer()?;
            let mut mem = self.mem_mut()?;
            if revision > mem.current {
                return Err(StoreError::FutureRevision { requested: revision, current: mem.current });
            }
            if revision <= mem.compacted {
                return Err(StoreError::Compacted { requested: revision, compacted: mem.compacted });
            }
            // Recorded before any row goes, so a reader either sees the old bound and all rows
            // (its snapshot predates this) or the new bound and refuses the revision.
            w.conn.execute("UPDATE meta SET value = ?1 WHERE name = 'compacted'", [revision]).map_err(db_err)?;
            std::mem::replace(&mut mem.compacted, revision)
        };

        // Rows up to `previous` were already reduced to the newest live row per key, so only
        // rows in (previous, revision] can supersede anything. Per chunk, in one transaction:
        // each key's newest row in the chunk supersedes all its older rows, then every delete
        // row in the chunk goes (it is either superseded or the key's last word). Removing a
        // row together with all older rows of its key keeps readers of revisions above the
        // compacted one from ever seeing an older value resurface.
        let mut low = previous;
        while low < revision {
            let high = revision.min(low.saturating_add(COMPACT_CHUNK));
            let mut w = self.writer()?;
            let tx = w.conn.transaction().map_err(db_err)?;
            tx.execute(
                "DELETE FROM log WHERE revision IN (
                     SELECT old.revision
                     FROM (SELECT key, MAX(revision) AS rev FROM log
                           WHERE revision > ?1 AND revision <= ?2 GROUP BY key) m
                     JOIN log old ON old.key = m.key AND old.revision < m.rev)",
                [low, high],
            )
            .map_err(db_err)?;
            tx.execute("DELETE FROM log WHERE deleted = 1 AND revision > ?1 AND revision <= ?2", [low, high])
                .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            low = high;
        }
        Ok(())
    }
}

impl SqliteStore {
    /// Opens the store in the SQLite file at `path`, creating the file and its schema if
    /// missing. Fails if another `SqliteStore` (in any process) has the file open.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_options(path, SqliteOptions::default())
    }

    /// [`SqliteStore::open`] with non-default tunables.
    pub fn open_with_options(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let mut lock_path = OsString::from(path.as_os_str());
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Backend(format!(
                    "store {} is already open ({} is locked)",
                    path.display(),
                    lock_path.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::Backend(format!("cannot lock {}: {e}", lock_path.display())));
            }
        }

        let mut conn = Connection::open(path).map_err(db_err)?;
        configure(&conn)?;
        create_schema(&mut conn)?;
        let mem = load_memory(&conn)?;
        tracing::debug!(
            path = %path.display(),
            keys = mem.kvs.len(),
            current = mem.current,
            compacted = mem.compacted,
            "opened sqlite store"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(Writer { conn, watchers: Vec::new() }),
                mem: RwLock::new(mem),
                readers: Mutex::new(Vec::new()),
                compacting: Mutex::new(()),
                path: path.to_owned(),
                watch_capacity: options.watch_channel_capacity.max(1),
                _lock: lock,
            }),
        })
    }

    /// The path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How many watchers are registered (for metrics). Watchers whose stream was dropped are
    /// removed at the next write or watch.
    pub fn watcher_count(&self) -> Result<usize, StoreError> {
        Ok(self.inner.writer()?.watchers.len())
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.mem()?.current)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.inner.mem()?.kvs.get(key).cloned())
    }

    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(ListResult, bool), StoreError> {
        let mem = self.inner.mem()?;
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let mut keys = mem
            .kvs
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv);
        let items: Vec<KeyValue> = keys.by_ref().take(limit).cloned().collect();
        let more = keys.next().is_some();
        Ok((ListResult { items, revision: mem.current }, more))
    }

    async fn list(&self, prefix: &str, revision: Option<Revision>) -> Result<ListResult, StoreError> {
        {
            let mem = self.inner.mem()?;
            if let Some(revision) = revision {
                mem.check_read(revision)?;
            }
            if revision.is_none_or(|r| r == mem.current) {
                return Ok(ListResult { items: mem.range(prefix).cloned().collect(), revision: mem.current });
            }
        }
        let inner = Arc::clone(&self.inner);
        let prefix = prefix.to_owned();
        let revision = revision.unwrap_or_default();
        let items = blocking(move || inner.list_at(&prefix, revision)).await?;
        Ok(ListResult { items, revision })
    }

    async fn count(&self, prefix: &str) -> Result<usize, StoreError> {
        Ok(self.inner.mem()?.range(prefix).count())
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let inner = Arc::clone(&self.inner);
        let key = key.to_owned();
        blocking(move || inner.create(key, value)).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected_mod_revision: Revision) -> Result<KeyValue, StoreError> {
        let inner = Arc::clone(&self.inner);
        let key = key.to_owned();
        blocking(move || inner.update(key, value, expected_mod_revision)).await
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<KeyValue, StoreError> {
        let inner = Arc::clone(&self.inner);
        let key = key.to_owned();
        blocking(move || inner.delete(key, expected_mod_revision)).await
    }

    /// See [`SqliteStore`] for the start-revision rules: a start above the current revision
    /// waits; a start below the compacted revision fails.
    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream, StoreError> {
        {
            let mem = self.inner.mem()?;
            if from_revision < mem.compacted {
                return Err(StoreError::Compacted { requested: from_revision, compacted: mem.compacted });
            }
        }
        let inner = Arc::clone(&self.inner);
        let prefix = prefix.to_owned();
        let WatchStart { history, rx, lagged } = blocking(move || inner.start_watch(prefix, from_revision)).await?;
        let live = futures::stream::unfold(Some((rx, lagged)), |state| async move {
            let (mut rx, lagged) = state?;
            match rx.recv().await {
                Some(event) => Some((Ok(event), Some((rx, lagged)))),
                None if lagged.load(Ordering::SeqCst) => Some((Err(StoreError::WatcherLagged), None)),
                None => None,
            }
        });
        Ok(Box::pin(futures::stream::iter(history.into_iter().map(Ok)).chain(live)))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.compact(revision)).await
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.mem()?.compacted)
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_bounds_exactly_the_prefixed_keys() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(""), vec![0xFF]);
        // 'é' is C3 A9: the bound bumps the last byte even inside a multi-byte character.
        assert_eq!(prefix_end("é"), vec![0xC3, 0xAA]);
    }
}
