//! Runs the conformance suite on [`SqliteStore`], plus what only this backend has: surviving
//! `kill -9` mid-stream, its lock file, watcher lag and clean-up, corrupt files, and a
//! throughput measurement.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use pier_store::conformance::StoreFactory;
use pier_store::sqlite::{SqliteOptions, SqliteStore};
use pier_store::{EventKind, Store, StoreError};

struct SqliteFactory {
    dir: tempfile::TempDir,
}

impl SqliteFactory {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }
}

impl StoreFactory for SqliteFactory {
    type Store = SqliteStore;

    async fn open(&self) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(&self.dir.path().join("store.db"))
    }
}

pier_store::conformance_tests!(sqlite, SqliteFactory::new());

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("store.db")
}

/// Set in the child process of [`acknowledged_writes_survive_kill_9`] to the database path.
const CHILD_DB_ENV: &str = "PIER_STORE_KILL_CHILD_DB";
/// Set in the child to tell its keys apart from earlier rounds'.
const CHILD_ROUND_ENV: &str = "PIER_STORE_KILL_CHILD_ROUND";

/// Not a test on its own: the child of [`acknowledged_writes_survive_kill_9`]. It writes keys
/// from several tasks forever and prints `ack <key> <revision>` once each write returned.
#[test]
fn kill_9_child_writer() {
    let Ok(path) = std::env::var(CHILD_DB_ENV) else {
        return;
    };
    let round = std::env::var(CHILD_ROUND_ENV).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let store = Arc::new(SqliteStore::open(Path::new(&path)).unwrap());
        let mut tasks = Vec::new();
        for t in 0..4 {
            let store = Arc::clone(&store);
            let round = round.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/kill/{round}/{t}/{i}");
                    let kv = store.create(&key, key.as_bytes().to_vec()).await.unwrap();
                    // Also rewrite an existing key, so updates are covered too.
                    let kv = store.update(&key, format!("{key}!").into_bytes(), kv.mod_revision).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {key} {}", kv.mod_revision).unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// Every write acknowledged before a `kill -9` is there after reopening, over several rounds of
/// writing and killing, and the history stays gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let exe = std::env::current_exe().unwrap();
    let mut acked = Vec::new();
    for (round, kill_after) in [300usize, 1_000, 2_000].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args(["kill_9_child_writer", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DB_ENV, &path)
            .env(CHILD_ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (acks, killed_at) = tokio::task::spawn_blocking(move || {
            let mut acks = Vec::new();
            let mut killed_at = None;
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                let Some(rest) = line.strip_prefix("ack ") else {
                    continue;
                };
                let (key, revision) = rest.split_once(' ').unwrap();
                acks.push((key.to_owned(), revision.parse::<i64>().unwrap()));
                if acks.len() == kill_after {
                    // SIGKILL: no destructors, no SQLite close, no checkpoint.
                    child.kill().unwrap();
                    killed_at = Some(acks.len());
                }
            }
            child.wait().unwrap();
            (acks, killed_at)
        })
        .await
        .unwrap();
        assert!(killed_at.is_some(), "round {round}: the child stopped before {kill_after} acks");
        println!("round {round}: killed after {kill_after} acks, {} acks read in total", acks.len());
        acked.extend(acks);

        let store = SqliteStore::open(&path).unwrap();
        for (key, revision) in &acked {
            let kv = store.get(key).await.unwrap().unwrap_or_else(|| panic!("acknowledged {key} is lost"));
            assert_eq!(kv.value, format!("{key}!").into_bytes());
            assert_eq!(kv.mod_revision, *revision);
        }
        let current = store.current_revision().await.unwrap();
        assert!(current >= acked.iter().map(|(_, r)| *r).max().unwrap());
        let mut history = store.watch("", 0).await.unwrap();
        for expected in 1..=current {
            let event = history.next().await.unwrap().unwrap();
            assert_eq!(event.kv.mod_revision, expected, "history has a gap after the kill");
        }
    }
}

#[tokio::test]
async fn a_second_open_of_the_same_file_fails_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteStore::open(&db_path(&dir)).unwrap();
    first.create("/a", b"1".to_vec()).await.unwrap();
    let err = SqliteStore::open(&db_path(&dir)).unwrap_err();
    assert!(matches!(err, StoreError::Backend(ref m) if m.contains("already open")), "{err}");
    drop(first);
    let second = SqliteStore::open(&db_path(&dir)).unwrap();
    assert_eq!(second.current_revision().await.unwrap(), 1);
}

#[tokio::test]
async fn a_watcher_that_falls_behind_is_dropped_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions { watch_channel_capacity: 8 };
    let store = SqliteStore::open_with_options(&db_path(&dir), options).unwrap();
    let mut slow = store.watch("/", 0).await.unwrap();
    let mut fast = store.watch("/", 0).await.unwrap();
    let mut revision = store.create("/k", b"0".to_vec()).await.unwrap().mod_revision;
    assert_eq!(fast.next().await.unwrap().unwrap().kv.mod_revision, revision);
    for i in 1..20u8 {
        revision = store.update("/k", vec![i], revision).await.unwrap().mod_revision;
        assert_eq!(fast.next().await.unwrap().unwrap().kv.mod_revision, revision, "a reader keeps up");
    }
    assert_eq!(store.watcher_count().unwrap(), 1, "the slow watcher was dropped");
    for expected in 1..=8 {
        assert_eq!(slow.next().await.unwrap().unwrap().kv.mod_revision, expected);
    }
    assert!(matches!(slow.next().await, Some(Err(StoreError::WatcherLagged))));
    assert!(slow.next().await.is_none());
}

#[tokio::test]
async fn dropped_watchers_are_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&db_path(&dir)).unwrap();
    let watches: Vec<_> =
        futures::future::join_all((0..10).map(|i| store.watch(if i % 2 == 0 { "/a/" } else { "/b/" }, 0)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert_eq!(store.watcher_count().unwrap(), 10);
    drop(watches);
    // A write to a prefix none of them watched still sweeps them all.
    store.create("/c", b"1".to_vec()).await.unwrap();
    assert_eq!(store.watcher_count().unwrap(), 0);
    let _w = store.watch("/", 0).await.unwrap();
    assert_eq!(store.watcher_count().unwrap(), 1);
}

#[tokio::test]
async fn a_corrupt_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    std::fs::write(&path, vec![0x42; 64 * 1024]).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");

    // A well-formed database holding rows this code never writes.
    for (name, row) in [
        ("bad key", "INSERT INTO log VALUES (1, x'fffe', 1, 0, 0, x'00')"),
        ("text value", "INSERT INTO log VALUES (1, x'2f61', 1, 0, 0, 'text')"),
        ("null-ish revision", "INSERT INTO log VALUES (1, x'2f61', 'one', 0, 0, x'00')"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        drop(SqliteStore::open(&path).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(row, []).unwrap();
        drop(conn);
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{name}: {err}");
    }

    // A file from a newer schema is refused rather than misread.
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(SqliteStore::open(&path).unwrap());
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
    assert!(matches!(SqliteStore::open(&path), Err(StoreError::Backend(_))));
}

/// Compaction works in chunks; this spans several and checks nothing older resurfaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_across_many_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&db_path(&dir)).unwrap());
    let keys = 50;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for i in 0..3_000 {
                let key = format!("/many/{}", (i * 4 + t) % keys);
                match store.get(&key).await.unwrap() {
                    None => drop(store.create(&key, vec![1]).await),
                    Some(kv) if i % 5 == 0 => drop(store.delete(&key, Some(kv.mod_revision)).await),
                    Some(kv) => drop(store.update(&key, i.to_string().into_bytes(), kv.mod_revision).await),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let current = store.current_revision().await.unwrap();
    let checkpoints: Vec<i64> = [current - 2_000, current - 500, current - 1].to_vec();
    let before: Vec<_> = futures::future::join_all(checkpoints.iter().map(|r| store.list("/many/", Some(*r))))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let compact_to = current - 2_001;
    let started = Instant::now();
    store.compact(compact_to).await.unwrap();
    println!("compacted {compact_to} revisions of {keys} keys in {:?}", started.elapsed());
    for (r, expected) in checkpoints.iter().zip(before) {
        assert_eq!(store.list("/many/", Some(*r)).await.unwrap(), expected, "list at {r}");
    }
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let old_rows: i64 =
        conn.query_row("SELECT COUNT(*) FROM log WHERE revision <= ?1", [compact_to], |r| r.get(0)).unwrap();
    assert!(old_rows <= keys as i64, "at most one row per key is left at or below the compacted revision");
}

/// Half the keys under `/bench/a/`, half under `/bench/b/`.
fn bench_key(task: usize, i: usize) -> String {
    format!("/bench/{}/{task:03}-{i:04}", if task < 25 { 'a' } else { 'b' })
}

/// Prints write and list throughput; asserts correctness only, not timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&db_path(&dir)).unwrap());
    let (tasks, per_task) = (50, 400);
    let value = vec![b'x'; 512];

    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = Arc::clone(&store);
        let value = value.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                store.create(&bench_key(t, i), value.clone()).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let n = tasks * per_task;
    let elapsed = started.elapsed();
    println!("creates: {n} from {tasks} tasks in {elapsed:?} = {:.0}/s", n as f64 / elapsed.as_secs_f64());

    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = Arc::clone(&store);
        let value = value.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let key = bench_key(t, i);
                let kv = store.get(&key).await.unwrap().unwrap();
                store.update(&key, value.clone(), kv.mod_revision).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = started.elapsed();
    println!("updates: {n} from {tasks} tasks in {elapsed:?} = {:.0}/s", n as f64 / elapsed.as_secs_f64());

    for (prefix, expected) in [("/bench/a/", 10_000), ("/bench/", 20_000)] {
        let started = Instant::now();
        let list = store.list(prefix, None).await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(list.items.len(), expected);
        println!("latest list of {expected} keys of 512 bytes: {elapsed:?}");
    }
    let started = Instant::now();
    let count = store.count("/bench/").await.unwrap();
    println!("count of {count} keys: {:?}", started.elapsed());

    let old = store.current_revision().await.unwrap() - n as i64;
    let started = Instant::now();
    let list = store.list("/bench/a/", Some(old)).await.unwrap();
    println!("list of {} keys at an old revision (from SQLite): {:?}", list.items.len(), started.elapsed());
    assert!(list.items.iter().all(|kv| kv.mod_revision <= old));

    let mut w = store.watch("/bench/", 0).await.unwrap();
    let started = Instant::now();
    let mut seen = 0;
    while seen < 2 * n {
        let event = w.next().await.unwrap().unwrap();
        assert_eq!(event.kind, if seen < n { EventKind::Created } else { EventKind::Updated });
        seen += 1;
    }
    println!("watch replay of {seen} events: {:?}", started.elapsed());
}
