//! The node's pod state: which sandbox holds which address of the pod CIDR (IPAM, in the style
//! of CNI's `host-local` plugin) and every sandbox's record, in one SQLite file, `state.db`.
//!
//! Why a database rather than a file per address and a directory per sandbox, as `host-local`
//! and earlier versions of pier keep them: each new file or directory is a new inode, and on ext4
//! without a journal a new inode means a search past every inode deleted in the last minute.
//! Pods come and go in bursts, and while 50 pods started that search was a third of the agent's
//! CPU. A row costs an append to the write-ahead log. The database also makes a reservation
//! atomic (the address is the primary key: it can never be handed out twice, even by two
//! processes) and a record whole or absent, never torn. `synchronous=NORMAL`: a commit survives
//! the process being killed; a power cut may lose the last ones, and takes every pod with them.
//!
//! The IPAM search is round-robin from the last address handed out, so a released address is
//! reused as late as possible, which keeps stale conntrack entries and ARP caches from pointing
//! a new pod's traffic at an old one. The network address, the gateway (the first host address,
//! on the bridge) and the broadcast address are never handed out.
//!
//! A state directory of the earlier layout (`ipam/<ip>` holding the owner, `ipam/last_reserved`,
//! `sandboxes/<uid>/sandbox.json`) is imported on open and then deleted, so an upgrade keeps the
//! pods running and their addresses held.

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use ipnet::Ipv4Net;
use rusqlite::types::FromSql;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::error::RuntimeError;
use crate::runtime::remove_dir_all;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS addresses (ip INTEGER PRIMARY KEY, owner TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS addresses_by_owner ON addresses (owner);
CREATE TABLE IF NOT EXISTS sandboxes (uid TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";
const LAST_RESERVED: &str = "last_reserved";
/// Sets a `meta` value: (key, value).
const SET_META: &str = "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2";
const RECORDS: &str = "SELECT uid, record FROM sandboxes ORDER BY uid";
const ALLOCATIONS: &str = "SELECT ip, owner FROM addresses ORDER BY ip";

#[derive(Debug)]
pub(crate) struct State {
    conn: Connection,
    cidr: Ipv4Net,
    first: u32,
    last: u32,
}

/// The bridge's address: the first host address of the pod CIDR.
pub(crate) fn gateway(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).wrapping_add(1))
}

fn db_err(context: &str) -> impl FnOnce(rusqlite::Error) -> RuntimeError + '_ {
    move |e| RuntimeError::State(format!("{context}: {e}"))
}

impl State {
    /// Opens (or creates) `dir/state.db`, importing a state directory of the earlier layout.
    pub(crate) fn open(dir: &Path, cidr: Ipv4Net) -> Result<Self, RuntimeError> {
        if cidr.prefix_len() > 30 {
            return Err(RuntimeError::InvalidConfig(format!(
                "pod CIDR {cidr} is too small: it needs room for a gateway and at least one pod (/30 or larger)"
            )));
        }
        let path = dir.join("state.db");
        let conn = Connection::open(&path).map_err(db_err("opening the node state database"))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db_err("configuring the node state database"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(db_err("configuring the node state database"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(RuntimeError::State(format!(
                "cannot enable WAL on {} (journal_mode is {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(db_err("configuring the node state database"))?;
        conn.execute_batch(SCHEMA).map_err(db_err("creating the node state tables"))?;
        let network = u32::from(cidr.network());
        let broadcast = u32::from(cidr.broadcast());
        let state = State { conn, cidr: cidr.trunc(), first: network + 2, last: broadcast - 1 };
        state.import_files(dir)?;
        Ok(state)
    }

    pub(crate) fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// Reserves the next free address for `owner`.
    pub(crate) fn allocate(&self, owner: &str) -> Result<Ipv4Addr, RuntimeError> {
        // Immediate: it reads then writes, and another writer must wait (busy_timeout) rather
        // than fail at the write.
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err("reserving an address"))?;
        let last: Option<u32> = tx
            .query_row("SELECT value FROM meta WHERE key = ?1", [LAST_RESERVED], |r| r.get(0))
            .optional()
            .map_err(db_err("reserving an address"))?;
        let size = self.last - self.first + 1;
        let start = match last {
            Some(last) if (self.first..=self.last).contains(&last) => last - self.first + 1,
            _ => 0,
        };
        let mut insert = tx
            .prepare_cached("INSERT OR IGNORE INTO addresses (ip, owner) VALUES (?1, ?2)")
            .map_err(db_err("reserving an address"))?;
        for i in 0..size {
            let ip = self.first + (start + i) % size;
            if insert.execute(params![ip, owner]).map_err(db_err("reserving an address"))? == 1 {
                drop(insert);
                tx.execute(SET_META, params![LAST_RESERVED, ip]).map_err(db_err("reserving an address"))?;
                tx.commit().map_err(db_err("reserving an address"))?;
                return Ok(Ipv4Addr::from(ip));
            }
        }
        Err(RuntimeError::PodCidrExhausted { cidr: self.cidr })
    }

    /// Reserves `ip` for `owner` if it is free; true when `owner` holds it afterwards.
    pub(crate) fn reserve(&self, ip: Ipv4Addr, owner: &str) -> Result<bool, RuntimeError> {
        if !self.cidr.contains(&ip) || u32::from(ip) < self.first || u32::from(ip) > self.last {
            return Ok(false);
        }
        let added = self
            .conn
            .execute("INSERT OR IGNORE INTO addresses (ip, owner) VALUES (?1, ?2)", params![u32::from(ip), owner])
            .map_err(db_err("reserving an address"))?;
        Ok(added == 1 || self.owner(ip)?.as_deref() == Some(owner))
    }

    /// Who holds `ip`, if anyone.
    pub(crate) fn owner(&self, ip: Ipv4Addr) -> Result<Option<String>, RuntimeError> {
        self.conn
            .query_row("SELECT owner FROM addresses WHERE ip = ?1", [u32::from(ip)], |r| r.get(0))
            .optional()
            .map_err(db_err("reading an address's owner"))
    }

    /// Releases `ip` if `owner` holds it; true when something was released.
    pub(crate) fn release(&self, ip: Ipv4Addr, owner: &str) -> Result<bool, RuntimeError> {
        let n = self
            .conn
            .execute("DELETE FROM addresses WHERE ip = ?1 AND owner = ?2", params![u32::from(ip), owner])
            .map_err(db_err("releasing an address"))?;
        Ok(n > 0)
    }

    /// Releases every address `owner` holds (normally one).
    pub(crate) fn release_owner(&self, owner: &str) -> Result<usize, RuntimeError> {
        self.conn.execute("DELETE FROM addresses WHERE owner = ?1", [owner]).map_err(db_err("releasing addresses"))
    }

    /// Every held address and its owner, in address order.
    pub(crate) fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, RuntimeError> {
        pairs(&self.conn, ALLOCATIONS).map(addresses).map_err(db_err("listing addresses"))
    }

    /// Stores (or replaces) a sandbox's record.
    pub(crate) fn put_record(&self, uid: &str, record: &str) -> Result<(), RuntimeError> {
        self.conn
            .execute("INSERT OR REPLACE INTO sandboxes (uid, record) VALUES (?1, ?2)", [uid, record])
            .map(drop)
            .map_err(db_err("writing a sandbox record"))
    }

    pub(crate) fn record(&self, uid: &str) -> Result<Option<String>, RuntimeError> {
        self.conn
            .query_row("SELECT record FROM sandboxes WHERE uid = ?1", [uid], |r| r.get(0))
            .optional()
            .map_err(db_err("reading a sandbox record"))
    }

    pub(crate) fn delete_record(&self, uid: &str) -> Result<(), RuntimeError> {
        self.conn
            .execute("DELETE FROM sandboxes WHERE uid = ?1", [uid])
            .map(drop)
            .map_err(db_err("deleting a sandbox record"))
    }

    /// Every sandbox record, by uid.
    pub(crate) fn records(&self) -> Result<Vec<(String, String)>, RuntimeError> {
        pairs(&self.conn, RECORDS).map_err(db_err("listing sandbox records"))
    }

    /// Imports the earlier layout's files (see the module docs), then deletes them.
    fn import_files(&self, dir: &Path) -> Result<(), RuntimeError> {
        let ipam = dir.join("ipam");
        if let Ok(entries) = fs::read_dir(&ipam) {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                let Ok(text) = fs::read_to_string(e.path()) else { continue };
                if name == LAST_RESERVED {
                    if let Ok(ip) = text.trim().parse::<Ipv4Addr>() {
                        self.conn
                            .execute(SET_META, params![LAST_RESERVED, u32::from(ip)])
                            .map_err(db_err("importing the earlier IPAM state"))?;
                    }
                } else if let Ok(ip) = name.parse::<Ipv4Addr>() {
                    // An empty owner was a reservation interrupted by a crash: nothing to keep.
                    if !text.is_empty() {
                        self.reserve(ip, &text)?;
                    }
                }
            }
            remove_dir_all(&ipam)?;
        }
        let sandboxes = dir.join("sandboxes");
        if let Ok(entries) = fs::read_dir(&sandboxes) {
            for e in entries.flatten() {
                let (Some(uid), Ok(record)) =
                    (e.file_name().to_str().map(str::to_string), fs::read_to_string(e.path().join("sandbox.json")))
                else {
                    continue;
                };
                self.put_record(&uid, &record)?;
            }
            remove_dir_all(&sandboxes)?;
        }
        Ok(())
    }
}

/// Every row of `sql`, a query of two columns.
fn pairs<A: FromSql, B: FromSql>(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<(A, B)>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

fn addresses(rows: Vec<(u32, String)>) -> Vec<(Ipv4Addr, String)> {
    rows.into_iter().map(|(ip, owner)| (Ipv4Addr::from(ip), owner)).collect()
}

/// Every row of `sql` in `dir/state.db`, from another process than the runtime's (SQLite's own
/// locking makes that safe while the runtime writes): none when there is no database, which is
/// not created. Opening recovers the write-ahead log like any connection.
fn read_pairs<A: FromSql, B: FromSql>(dir: &Path, sql: &str) -> Result<Vec<(A, B)>, RuntimeError> {
    let path = dir.join("state.db");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let err = |e: rusqlite::Error| RuntimeError::State(format!("reading {}: {e}", path.display()));
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&path, flags).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    pairs(&conn, sql).map_err(err)
}

/// Every sandbox record in `dir/state.db`, by uid.
pub(crate) fn read_records(dir: &Path) -> Result<Vec<(String, String)>, RuntimeError> {
    read_pairs(dir, RECORDS)
}

/// Every held address in `dir/state.db` and its owner.
pub(crate) fn read_allocations(dir: &Path) -> Result<Vec<(Ipv4Addr, String)>, RuntimeError> {
    read_pairs(dir, ALLOCATIONS).map(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn cidr(s: &str) -> Ipv4Net {
        s.parse().expect("test CIDR")
    }

    #[test]
    fn hands_out_every_host_address_once_then_reports_exhaustion() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(dir.path(), cidr("10.244.3.0/28")).expect("open");
        let mut seen = HashSet::new();
        for i in 0..13 {
            let ip = state.allocate(&format!("pod-{i}")).expect("allocate");
            assert!(seen.insert(ip), "{ip} handed out twice");
            assert_ne!(ip, Ipv4Addr::new(10, 244, 3, 0));
            assert_ne!(ip, Ipv4Addr::new(10, 244, 3, 1), "the gateway is the bridge's");
            assert_ne!(ip, Ipv4Addr::new(10, 244, 3, 15));
        }
        let err = state.allocate("one-too-many").expect_err("the /28 is full");
        assert!(matches!(err, RuntimeError::PodCidrExhausted { .. }), "{err}");
        assert_eq!(err.to_string(), "no free IP address left in pod CIDR 10.244.3.0/28");
    }

    #[test]
    fn survives_reopening_and_never_reuses_a_held_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = {
            let state = State::open(dir.path(), cidr("10.244.0.0/24")).expect("open");
            let a = state.allocate("a").expect("a");
            let b = state.allocate("b").expect("b");
            assert_ne!(a, b);
            state.put_record("a", "{\"a\":1}").expect("record");
            vec![(a, "a".to_string()), (b, "b".to_string())]
        };
        let state = State::open(dir.path(), cidr("10.244.0.0/24")).expect("reopen");
        assert_eq!(state.allocations().expect("list"), held);
        assert_eq!(state.records().expect("records"), vec![("a".to_string(), "{\"a\":1}".to_string())]);
        for i in 0..300 {
            let ip = state.allocate(&format!("c{i}")).expect("allocate");
            assert!(held.iter().all(|(h, _)| *h != ip), "{ip} is still held");
            assert!(state.release(ip, &format!("c{i}")).expect("release"));
        }
    }

    #[test]
    fn two_openers_never_hand_out_the_same_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (
            State::open(dir.path(), cidr("10.244.0.0/24")).expect("a"),
            State::open(dir.path(), cidr("10.244.0.0/24")).expect("b"),
        );
        let mut seen = HashSet::new();
        for i in 0..100 {
            assert!(seen.insert(a.allocate(&format!("a{i}")).expect("a")));
            assert!(seen.insert(b.allocate(&format!("b{i}")).expect("b")));
        }
    }

    #[test]
    fn release_checks_the_owner_and_round_robins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(dir.path(), cidr("10.244.0.0/24")).expect("open");
        let a = state.allocate("a").expect("a");
        assert!(!state.release(a, "b").expect("release by another owner"));
        assert_eq!(state.owner(a).expect("owner").as_deref(), Some("a"));
        assert!(state.release(a, "a").expect("release"));
        assert!(!state.release(a, "a").expect("second release is a no-op"));
        // The released address is not the next one handed out.
        let b = state.allocate("b").expect("b");
        assert_ne!(a, b);
        assert_eq!(state.release_owner("b").expect("release_owner"), 1);
        assert!(state.allocations().expect("list").is_empty());
    }

    #[test]
    fn reserve_adopts_or_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(dir.path(), cidr("10.244.0.0/24")).expect("open");
        let ip = Ipv4Addr::new(10, 244, 0, 9);
        assert!(state.reserve(ip, "a").expect("reserve"));
        assert!(state.reserve(ip, "a").expect("idempotent"));
        assert!(!state.reserve(ip, "b").expect("held by a"));
        assert!(!state.reserve(Ipv4Addr::new(10, 244, 0, 1), "a").expect("the gateway"));
        assert!(!state.reserve(Ipv4Addr::new(10, 9, 0, 1), "a").expect("outside"));
    }

    #[test]
    fn records_are_replaced_and_deleted_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(dir.path(), cidr("10.244.0.0/24")).expect("open");
        state.put_record("u1", "one").expect("put");
        state.put_record("u1", "two").expect("replace");
        assert_eq!(state.record("u1").expect("get").as_deref(), Some("two"));
        state.delete_record("u1").expect("delete");
        state.delete_record("u1").expect("deleting twice is fine");
        assert_eq!(state.record("u1").expect("get"), None);
    }

    #[test]
    fn other_processes_read_the_records_and_addresses() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read_records(dir.path()).expect("read").is_empty(), "no database yet");
        assert!(!dir.path().join("state.db").exists(), "reading creates nothing");
        let state = State::open(dir.path(), cidr("10.244.0.0/24")).expect("open");
        let ip = state.allocate("u1").expect("allocate");
        state.put_record("u1", "{}").expect("put");
        assert_eq!(read_records(dir.path()).expect("read"), vec![("u1".to_string(), "{}".to_string())]);
        assert_eq!(read_allocations(dir.path()).expect("read"), vec![(ip, "u1".to_string())]);
        let broken = tempfile::tempdir().expect("tempdir");
        fs::write(broken.path().join("state.db"), "not a database, but long enough to have a header").expect("write");
        assert!(read_records(broken.path()).is_err(), "a broken database is an error, not an empty node");
    }

    #[test]
    fn imports_the_earlier_file_layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = dir.path().join("ipam");
        fs::create_dir_all(&ipam).expect("ipam dir");
        fs::write(ipam.join("10.244.0.5"), "pod-a").expect("held");
        fs::write(ipam.join("10.244.0.6"), "").expect("interrupted");
        fs::write(ipam.join(LAST_RESERVED), "10.244.0.6").expect("last");
        let rec = dir.path().join("sandboxes/pod-a");
        fs::create_dir_all(&rec).expect("sandbox dir");
        fs::write(rec.join("sandbox.json"), "{\"uid\":\"pod-a\"}").expect("record");

        let state = State::open(dir.path(), cidr("10.244.0.0/24")).expect("open");
        assert_eq!(state.allocations().expect("list"), vec![(Ipv4Addr::new(10, 244, 0, 5), "pod-a".to_string())]);
        assert_eq!(state.record("pod-a").expect("record").as_deref(), Some("{\"uid\":\"pod-a\"}"));
        assert!(!ipam.exists() && !dir.path().join("sandboxes").exists(), "the old files are gone");
        assert_eq!(state.allocate("next").expect("allocate"), Ipv4Addr::new(10, 244, 0, 7), "round robin resumes");
    }

    #[test]
    fn refuses_a_cidr_without_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(State::open(dir.path(), cidr("10.244.0.0/31")), Err(RuntimeError::InvalidConfig(_))));
    }
}
