//! The conformance suite: backend-agnostic checks of every invariant documented on [`Store`].
//!
//! A backend provides a [`StoreFactory`] (one fresh, empty storage location per value, which it
//! can open again to check durability) and expands [`conformance_tests!`](crate::conformance_tests)
//! in an integration test, which generates one named `#[tokio::test]` per case:
//!
//! ```ignore
//! struct MyFactory { /* a fresh location */ }
//! impl pier_store::conformance::StoreFactory for MyFactory { /* ... */ }
//! pier_store::conformance_tests!(my_backend, MyFactory::new());
//! ```
//!
//! The cases are also public functions, to run one on its own. They panic on the first
//! violation, like any test. Semantics pinned here beyond the trait's wording, following etcd:
//! - a watch from exactly the compacted revision works, one from below it fails;
//! - a watch from a revision above the current one is accepted and waits;
//! - compacting at or below the compacted revision fails with [`StoreError::Compacted`],
//!   beyond the current revision with [`StoreError::FutureRevision`];
//! - a slow watcher never blocks writers: it gets every change, or a gap-free prefix of them
//!   and then an error or the end of its stream.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::{EventKind, KeyValue, Revision, Store, StoreError, WatchEvent, WatchStream};

/// How the suite gets stores: each value of a factory is one storage location.
///
/// The location must be fresh, empty and private to the test: the suite checks exact revision
/// numbers starting from 0, so nothing else may write to it.
pub trait StoreFactory: Send + Sync {
    type Store: Store;

    /// Opens the store at this factory's location. The suite calls it again after dropping the
    /// previous store (and waiting for all its operations), and expects every acknowledged
    /// write back.
    fn open(&self) -> impl Future<Output = Result<Self::Store, StoreError>> + Send;
}

/// Expands to a module `$name` with one `#[tokio::test]` per conformance case, each on a store
/// from a fresh `$factory` (an expression evaluated once per test, inside the module, which
/// glob-imports its parent). The calling crate needs `tokio` with the `macros` and
/// `rt-multi-thread` features.
#[macro_export]
macro_rules! conformance_tests {
    ($name:ident, $factory:expr $(,)?) => {
        $crate::conformance_tests!(@cases $name, $factory;
            empty_store,
            revisions_increase_by_one,
            create_conflicts,
            update_compare_and_swap,
            delete_with_and_without_precondition,
            get_and_list_latest,
            list_at_older_revisions,
            list_revision_bounds,
            list_pages_cover_the_list_once,
            prefix_is_a_plain_string_prefix,
            values_are_opaque_bytes,
            concurrent_creates_get_distinct_revisions,
            concurrent_compare_and_swap_has_one_winner,
            watch_from_zero_sees_all_history,
            watch_from_middle_revision,
            watch_events_carry_prev,
            watch_prefix_filters,
            watch_from_future_revision_waits,
            watch_history_then_live_without_gap_under_concurrent_writers,
            watchers_are_independent,
            slow_watcher_does_not_block_writers,
            compaction,
            compaction_of_many_versions,
            compaction_at_current_revision,
            durable_across_reopen,
        );
    };
    (@cases $name:ident, $factory:expr; $($case:ident),* $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::conformance::$case(&$factory).await;
                }
            )*
        }
    };
}

/// How long the suite waits for something that should happen.
const WAIT: Duration = Duration::from_secs(30);

/// How long the suite waits to be confident something does not happen.
const QUIET: Duration = Duration::from_millis(200);

/// Asserts that `$res` is `Err` matching `$pat` (and the guard, if any).
macro_rules! assert_err {
    ($res:expr, $pat:pat $(if $guard:expr)?) => {
        match $res {
            Err($pat) $(if $guard)? => {}
            other => panic!("expected Err({}), got {:?}", stringify!($pat), other),
        }
    };
}

async fn open<F: StoreFactory>(f: &F) -> F::Store {
    f.open().await.expect("open the store")
}

fn kv(key: &str, value: &[u8], create_revision: Revision, mod_revision: Revision) -> KeyValue {
    KeyValue { key: key.to_owned(), value: bytes::Bytes::copy_from_slice(value), create_revision, mod_revision }
}

async fn current<S: Store>(s: &S) -> Revision {
    s.current_revision().await.expect("current_revision")
}

async fn watch<S: Store>(s: &S, prefix: &str, from: Revision) -> WatchStream {
    s.watch(prefix, from).await.expect("watch")
}

async fn next_event(w: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(WAIT, w.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {WAIT:?}"),
    }
}

async fn next_events(w: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(next_event(w).await);
    }
    events
}

async fn assert_quiet(w: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(QUIET, w.next()).await {
        panic!("expected no watch event, got {item:?}");
    }
}

fn revisions(events: &[WatchEvent]) -> Vec<Revision> {
    events.iter().map(|e| e.kv.mod_revision).collect()
}

fn created(kv: KeyValue) -> WatchEvent {
    WatchEvent { kind: EventKind::Created, kv, prev: None }
}

fn updated(kv: KeyValue, prev: KeyValue) -> WatchEvent {
    WatchEvent { kind: EventKind::Updated, kv, prev: Some(prev) }
}

fn deleted(kv: KeyValue, prev: KeyValue) -> WatchEvent {
    WatchEvent { kind: EventKind::Deleted, kv, prev: Some(prev) }
}

/// A reference model: the state after every revision, and the event of every revision.
#[derive(Default)]
struct Model {
    states: Vec<BTreeMap<String, KeyValue>>,
    events: Vec<WatchEvent>,
}

impl Model {
    fn new() -> Self {
        Self { states: vec![BTreeMap::new()], events: Vec::new() }
    }

    fn latest(&self) -> BTreeMap<String, KeyValue> {
        self.states.last().cloned().unwrap_or_default()
    }

    /// Records the result of a successful write, checking it took the next revision.
    fn record(&mut self, kind: EventKind, kv: &KeyValue) {
        let mut state = self.latest();
        let revision = self.states.len() as Revision;
        assert_eq!(kv.mod_revision, revision, "write of {:?} took the wrong revision", kv.key);
        let prev = match kind {
            EventKind::Created => {
                assert_eq!(kv.create_revision, revision, "create_revision of a created key");
                assert!(state.insert(kv.key.clone(), kv.clone()).is_none(), "created an existing key");
                None
            }
            EventKind::Updated => Some(state.insert(kv.key.clone(), kv.clone()).expect("updated a missing key")),
            EventKind::Deleted => Some(state.remove(&kv.key).expect("deleted a missing key")),
        };
        if let Some(prev) = &prev {
            assert_eq!(kv.create_revision, prev.create_revision, "create_revision changed");
            if kind == EventKind::Deleted {
                assert_eq!(kv.value, prev.value, "a delete returns the last value");
            }
        }
        self.states.push(state);
        self.events.push(WatchEvent { kind, kv: kv.clone(), prev });
    }

    async fn create<S: Store>(&mut self, s: &S, key: &str, value: &[u8]) -> KeyValue {
        let kv = s.create(key, value.to_vec()).await.expect("create");
        self.record(EventKind::Created, &kv);
        kv
    }

    async fn update<S: Store>(&mut self, s: &S, key: &str, value: &[u8]) -> KeyValue {
        let expected = self.latest().get(key).expect("model: update of a missing key").mod_revision;
        let kv = s.update(key, value.to_vec(), expected).await.expect("update");
        self.record(EventKind::Updated, &kv);
        kv
    }

    async fn delete<S: Store>(&mut self, s: &S, key: &str) -> KeyValue {
        let kv = s.delete(key, None).await.expect("delete");
        self.record(EventKind::Deleted, &kv);
        kv
    }

    fn list(&self, prefix: &str, revision: Revision) -> Vec<KeyValue> {
        let index = usize::try_from(revision).expect("revision fits usize");
        self.states[index].values().filter(|kv| kv.key.starts_with(prefix)).cloned().collect()
    }

    fn events_after(&self, prefix: &str, from: Revision) -> Vec<WatchEvent> {
        self.events.iter().filter(|e| e.kv.mod_revision > from && e.kv.key.starts_with(prefix)).cloned().collect()
    }

    fn current(&self) -> Revision {
        self.states.len() as Revision - 1
    }

    /// Checks `list(prefix, Some(r))` for every revision in `revisions` and the latest list.
    async fn check_lists<S: Store>(&self, s: &S, prefix: &str, revisions: impl Iterator<Item = Revision>) {
        for revision in revisions {
            let got = s.list(prefix, Some(revision)).await.expect("list at a revision");
            assert_eq!(got.revision, revision, "list revision");
            assert_eq!(got.items, self.list(prefix, revision), "list {prefix:?} at revision {revision}");
        }
        let got = s.list(prefix, None).await.expect("list");
        assert_eq!(got.revision, self.current(), "latest list revision");
        assert_eq!(got.items, self.list(prefix, self.current()), "latest list {prefix:?}");
        assert_eq!(s.count(prefix).await.expect("count"), got.items.len(), "count {prefix:?}");
    }
}

/// Writes a fixed mix of creates, updates, deletes and re-creates under `/m/`.
async fn write_mix<S: Store>(s: &S, m: &mut Model) {
    m.create(s, "/m/a", b"a1").await;
    m.create(s, "/m/b", b"b1").await;
    m.update(s, "/m/a", b"a2").await;
    m.create(s, "/m/c", b"c1").await;
    m.delete(s, "/m/b").await;
    m.update(s, "/m/c", b"c2").await;
    m.create(s, "/m/b", b"b2").await;
    m.delete(s, "/m/a").await;
    m.update(s, "/m/b", b"b3").await;
    m.create(s, "/m/d", b"d1").await;
}

/// A new store is at revision 0, with nothing compacted and no keys.
pub async fn empty_store<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    assert_eq!(current(&s).await, 0);
    assert_eq!(s.compacted_revision().await.expect("compacted_revision"), 0);
    assert_eq!(s.get("/a").await.expect("get"), None);
    let list = s.list("", None).await.expect("list");
    assert!(list.items.is_empty());
    assert_eq!(list.revision, 0);
    assert_eq!(s.count("").await.expect("count"), 0);
    assert_err!(s.update("/a", b"x".to_vec(), 1).await, StoreError::NotFound { key } if key == "/a");
    assert_err!(s.delete("/a", None).await, StoreError::NotFound { key } if key == "/a");
    assert_eq!(current(&s).await, 0, "failed writes take no revision");
}

/// Every successful write takes exactly the next revision; failed writes take none.
pub async fn revisions_increase_by_one<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    let a = s.create("/a", b"1".to_vec()).await.expect("create");
    assert_eq!(a, kv("/a", b"1", 1, 1));
    assert_eq!(current(&s).await, 1);
    let b = s.create("/b", b"1".to_vec()).await.expect("create");
    assert_eq!(b, kv("/b", b"1", 2, 2));
    let a = s.update("/a", b"2".to_vec(), 1).await.expect("update");
    assert_eq!(a, kv("/a", b"2", 1, 3));
    let b = s.delete("/b", None).await.expect("delete");
    assert_eq!(b, kv("/b", b"1", 2, 4));
    assert_eq!(current(&s).await, 4);

    assert!(s.create("/a", b"x".to_vec()).await.is_err());
    assert!(s.update("/a", b"x".to_vec(), 1).await.is_err());
    assert!(s.update("/b", b"x".to_vec(), 4).await.is_err());
    assert!(s.delete("/b", None).await.is_err());
    assert!(s.delete("/a", Some(1)).await.is_err());
    assert_eq!(current(&s).await, 4, "failed writes take no revision");

    let b = s.create("/b", b"2".to_vec()).await.expect("create");
    assert_eq!(b, kv("/b", b"2", 5, 5));
    assert_eq!(current(&s).await, 5);
    assert_eq!(s.list("", None).await.expect("list").revision, 5);

    // A delete moves the revision too, and the list revision follows it.
    s.delete("/a", None).await.expect("delete");
    assert_eq!(current(&s).await, 6);
    assert_eq!(s.list("/nothing/", None).await.expect("list").revision, 6);
}

/// Creating an existing key fails and changes nothing; a deleted key can be created again.
pub async fn create_conflicts<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    s.create("/k", b"v1".to_vec()).await.expect("create");
    assert_err!(s.create("/k", b"v2".to_vec()).await, StoreError::AlreadyExists { key } if key == "/k");
    assert_eq!(s.get("/k").await.expect("get"), Some(kv("/k", b"v1", 1, 1)));
    s.delete("/k", None).await.expect("delete");
    let again = s.create("/k", b"v3".to_vec()).await.expect("create after delete");
    assert_eq!(again, kv("/k", b"v3", 3, 3), "a re-created key starts a new incarnation");
    assert_eq!(s.get("/k").await.expect("get"), Some(again));
}

/// An update succeeds only at the expected `mod_revision`; otherwise it reports the actual one.
pub async fn update_compare_and_swap<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    s.create("/k", b"v1".to_vec()).await.expect("create");
    let u = s.update("/k", b"v2".to_vec(), 1).await.expect("update");
    assert_eq!(u, kv("/k", b"v2", 1, 2));
    assert_err!(
        s.update("/k", b"v3".to_vec(), 1).await,
        StoreError::Conflict { key, expected: 1, actual: 2 } if key == "/k"
    );
    assert_eq!(s.get("/k").await.expect("get"), Some(u.clone()), "a lost CAS changes nothing");
    let u = s.update("/k", b"v3".to_vec(), 2).await.expect("update");
    assert_eq!(u, kv("/k", b"v3", 1, 3));
    // Writing the same value again is still a write.
    let u = s.update("/k", b"v3".to_vec(), 3).await.expect("update");
    assert_eq!(u, kv("/k", b"v3", 1, 4));

    assert_err!(s.update("/missing", b"x".to_vec(), 4).await, StoreError::NotFound { key } if key == "/missing");
    s.delete("/k", None).await.expect("delete");
    assert_err!(s.update("/k", b"x".to_vec(), 4).await, StoreError::NotFound { .. });
    assert_eq!(current(&s).await, 5);
}

/// Deletes return the last value at the delete's revision and honour their precondition.
pub async fn delete_with_and_without_precondition<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    s.create("/a", b"a".to_vec()).await.expect("create");
    s.create("/b", b"b1".to_vec()).await.expect("create");
    s.update("/b", b"b2".to_vec(), 2).await.expect("update");

    let a = s.delete("/a", None).await.expect("delete");
    assert_eq!(a, kv("/a", b"a", 1, 4));
    assert_eq!(s.get("/a").await.expect("get"), None);

    assert_err!(s.delete("/b", Some(2)).await, StoreError::Conflict { key, expected: 2, actual: 3 } if key == "/b");
    assert_eq!(s.get("/b").await.expect("get"), Some(kv("/b", b"b2", 2, 3)));
    let b = s.delete("/b", Some(3)).await.expect("delete with precondition");
    assert_eq!(b, kv("/b", b"b2", 2, 5));

    assert_err!(s.delete("/b", None).await, StoreError::NotFound { key } if key == "/b");
    assert_err!(s.delete("/b", Some(5)).await, StoreError::NotFound { .. });
    assert_eq!(current(&s).await, 5);
    assert_eq!(s.count("").await.expect("count"), 0);
}

/// `get`, the latest `list` and `count` agree, lists are in key order at the current revision.
pub async fn get_and_list_latest<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    let mut m = Model::new();
    for key in ["/l/m", "/l/c", "/l/x", "/l/a", "/l/b", "/l/z"] {
        m.create(&s, key, key.as_bytes()).await;
    }
    m.update(&s, "/l/c", b"c2").await;
    m.delete(&s, "/l/x").await;
    let list = s.list("/l/", None).await.expect("list");
    let keys: Vec<&str> = list.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/l/a", "/l/b", "/l/c", "/l/m", "/l/z"]);
    assert_eq!(list.revision, 8);
    for item in &list.items {
        assert_eq!(s.get(&item.key).await.expect("get").as_ref(), Some(item));
    }
    assert_eq!(s.get("/l/x").await.expect("get"), None);
    m.check_lists(&s, "/l/", std::iter::empty()).await;
}

/// A list at an older revision shows the state then: old values, deleted keys, not later keys.
pub async fn list_at_older_revisions<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    let mut m = Model::new();
    write_mix(&s, &mut m).await;
    let now = m.current();
    m.check_lists(&s, "/m/", 1..=now).await;
    m.check_lists(&s, "", 1..=now).await;
    // The deleted /m/a is back at revision 7, with its value then.
    let at7 = s.list("/m/", Some(7)).await.expect("list");
    assert!(at7.items.contains(&kv("/m/a", b"a2", 1, 3)), "{at7:?}");
    // Later writes do not change what an old revision shows.
    m.create(&s, "/m/e", b"e1").await;
    m.delete(&s, "/m/d").await;
    m.check_lists(&s, "/m/", 1..=m.current()).await;
}

/// Reads above the current revision or at/below the compacted one fail.
pub async fn list_revision_bounds<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    let mut m = Model::new();
    write_mix(&s, &mut m).await;
    let now = m.current();
    assert_err!(
        s.list("/m/", Some(now + 1)).await,
        StoreError::FutureRevision { requested, current } if requested == now + 1 && current == now
    );
    // Nothing is compacted yet, but revision 0 counts as compacted ("at or below").
    assert_err!(s.list("/m/", Some(0)).await, StoreError::Compacted { requested: 0, compacted: 0 });
    let at_now = s.list("/m/", Some(now)).await.expect("list at the current revision");
    assert_eq!(at_now, s.list("/m/", None).await.expect("list"));
}

/// Pages of any size, each starting after the last key of the one before, give the latest
/// list exactly once, in order, and say when nothing follows; a start key outside the prefix
/// gives nothing it should not.
pub async fn list_pages_cover_the_list_once<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    let mut m = Model::new();
    write_mix(&s, &mut m).await;
    m.create(&s, "/n/outside", b"x").await;
    let all = s.list("/m/", None).await.expect("list");
    assert!(all.items.len() >= 3, "{all:?}");
    for limit in 1..=all.items.len() + 1 {
        let (mut seen, mut after) = (Vec::new(), None::<String>);
        loop {
            let (page, more) = s.list_page("/m/", after.as_deref(), limit).await.expect("list page");
            assert!(page.items.len() <= limit);
            assert_eq!(page.revision, all.revision);
            seen.extend(page.items.iter().cloned());
            after = page.items.last().map(|kv| kv.key.clone());
            if !more {
                break;
            }
            assert_eq!(page.items.len(), limit, "a page short of the limit says more follow");
        }
        assert_eq!(seen, all.items, "limit {limit}");
    }
    let (page, more) = s.list_page("/m/", Some("/a"), 100).await.expect("list page");
    assert_eq!((page.items, more), (all.items.clone(), false));
    let (page, more) = s.list_page("/m/", Some("/z"), 100).await.expect("list page");
    assert!(page.items.is_empty() && !more);
}

/// A prefix is a plain string prefix: `/a/b` matches `/a/bc`, `/a/b/` does not.
pub async fn prefix_is_a_plain_string_prefix<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    let mut m = Model::new();
    let keys = [
        "/a/b",
        "/a/b/c",
        "/a/b/d/e",
        "/a/ba",
        "/a/bc",
        "/a/b0",
        "/a/a",
        "/a/c",
        "/a/b\u{e9}",
        "/a/b\u{e9}t\u{e9}",
        "/a/b\u{10FFFF}",
        "/a/b\u{7f}",
        "/a",
        "/",
        "/b/b",
        "a/b",
        "/a/b-",
        "/a/b.",
    ];
    for key in keys {
        m.create(&s, key, key.as_bytes()).await;
    }
    let middle = m.current();
    m.delete(&s, "/a/b/c").await;
    m.update(&s, "/a/bc", b"bc2").await;
    m.create(&s, "/a/b/f", b"f").await;
    let prefixes = ["/a/b", "/a/b/", "/a/bc", "/a/b\u{e9}", "/a/", "/a", "/", "", "/z", "/a/b/d/e", "/a/b/d/e/"];
    for prefix in prefixes {
        m.check_lists(&s, prefix, [middle, middle + 1, m.current()].into_iter()).await;
    }
    let keys_of = |items: Vec<KeyValue>| items.into_iter().map(|kv| kv.key).collect::<Vec<_>>();
    assert_eq!(
        keys_of(s.list("/a/b/", None).await.expect("list").items),
        ["/a/b/d/e", "/a/b/f"],
        "a prefix ending in / does not match its parent or siblings"
    );

    // Watches use the same rule.
    let mut w = watch(&s, "/a/b", 0).await;
    let expected = m.events_after("/a/b", 0);
    assert_eq!(next_events(&mut w, expected.len()).await, expected);
    let mut w = watch(&s, "/a/b/", middle).await;
    let expected = m.events_after("/a/b/", middle);
    assert_eq!(next_events(&mut w, expected.len()).await, expected);
    assert_quiet(&mut w).await;
}

/// Values are opaque bytes: empty, binary and large values come back unchanged everywhere.
pub async fn values_are_opaque_bytes<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    let mut m = Model::new();
    let large: Vec<u8> = (0..1_048_576u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let values: [&[u8]; 4] = [b"", &[0, 255, 0, 1], "h\u{e9}llo \u{1F600}".as_bytes(), &large];
    for (i, value) in values.iter().enumerate() {
        m.create(&s, &format!("/v/{i}"), value).await;
    }
    m.update(&s, "/v/3", b"").await;
    m.update(&s, "/v/0", &large).await;
    m.delete(&s, "/v/2").await;
    for (key, expected) in m.latest() {
        assert_eq!(s.get(&key).await.expect("get"), Some(expected));
    }
    m.check_lists(&s, "/v/", 1..=m.current()).await;
    let mut w = watch(&s, "/v/", 0).await;
    let events = next_events(&mut w, m.events.len()).await;
    assert!(events == m.events, "watch events differ from the writes");
}

/// Concurrent creates get distinct, gap-free revisions.
pub async fn concurrent_creates_get_distinct_revisions<F: StoreFactory>(f: &F) {
    let s = Arc::new(open(f).await);
    let (tasks, per_task) = (8, 50);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let s = Arc::clone(&s);
        handles.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..per_task {
                let kv = s.create(&format!("/c/{t}/{i}"), vec![t as u8]).await.expect("create");
                assert_eq!(kv.create_revision, kv.mod_revision);
                revisions.push(kv.mod_revision);
            }
            revisions
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        let revisions = h.await.expect("writer task");
        assert!(revisions.windows(2).all(|w| w[0] < w[1]), "one caller's writes are ordered");
        all.extend(revisions);
    }
    all.sort_unstable();
    let n = (tasks * per_task) as Revision;
    assert_eq!(all, (1..=n).collect::<Vec<_>>());
    assert_eq!(current(&*s).await, n);
    assert_eq!(s.count("/c/").await.expect("count"), (tasks * per_task) as usize);
}

/// Of concurrent updates with the same expected revision, exactly one wins.
pub async fn concurrent_compare_and_swap_has_one_winner<F: StoreFactory>(f: &F) {
    let s = Arc::new(open(f).await);
    let mut expected = s.create("/cas", b"0".to_vec()).await.expect("create").mod_revision;
    for round in 0..10 {
        let mut handles = Vec::new();
        for t in 0..8u8 {
            let s = Arc::clone(&s);
            handles.push(tokio::spawn(async move { s.update("/cas", vec![t], expected).await }));
        }
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for h in handles {
            match h.await.expect("task") {
                Ok(kv) => winners.push(kv),
                Err(e) => losers.push(e),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let winner = &winners[0];
        assert_eq!(winner.mod_revision, expected + 1);
        for e in losers {
            assert!(
                matches!(e, StoreError::Conflict { expected: ex, actual, .. } if ex == expected && actual == winner.mod_revision),
                "round {round}: {e:?}"
            );
        }
        assert_eq!(s.get("/cas").await.expect("get").as_ref(), Some(winner));
        expected = winner.mod_revision;
    }
}

/// A watch from 0 replays every change, then continues live.
pub async fn watch_from_zero_sees_all_history<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    let mut m = Model::new();
    write_mix(&s, &mut m).await;
    let mut w = watch(&s, "", 0).await;
    assert_eq!(next_events(&mut w, m.events.len()).await, m.events);
    assert_quiet(&mut w).await;
    m.update(&s, "/m/c", b"c3").await;
    m.delete(&s, "/m/d").await;
    assert_eq!(next_events(&mut w, 2).await, m.events_after("", 10));
    assert_quiet(&mut w).await;
}

/// A watch from revision r yields exactly the changes after r.
pub async fn watch_from_middle_revision<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    let mut m = Model::new();
    write_mix(&s, &mut m).await;
    for from in 0..=m.current() {
        let mut w = watch(&s, "/m/", from).await;
        let expected = m.events_after("/m/", from);
        assert_eq!(next_events(&mut w, expected.len()).await, expected, "watch from {from}");
        assert_quiet(&mut w).await;
    }
    let from = m.current();
    let mut w = watch(&s, "/m/", from).await;
    m.create(&s, "/m/z", b"z").await;
    assert_eq!(next_event(&mut w).await, m.events_after("/m/", from)[0]);
}

/// Events carry the previous value for updates and deletes; deletes carry the last value at
/// the delete's revision. History and live events are identical.
pub async fn watch_events_carry_prev<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    let mut live = watch(&s, "/p/", 0).await;
    let c = s.create("/p/k", b"v1".to_vec()).await.expect("create");
    let u = s.update("/p/k", b"v2".to_vec(), c.mod_revision).await.expect("update");
    let d = s.delete("/p/k", Some(u.mod_revision)).await.expect("delete");
    let c2 = s.create("/p/k", b"v3".to_vec()).await.expect("create");
    let expected = vec![
        created(kv("/p/k", b"v1", 1, 1)),
        updated(kv("/p/k", b"v2", 1, 2), kv("/p/k", b"v1", 1, 1)),
        deleted(kv("/p/k", b"v2", 1, 3), kv("/p/k", b"v2", 1, 2)),
        created(kv("/p/k", b"v3", 4, 4)),
    ];
    assert_eq!([c, u, d, c2].to_vec(), expected.iter().map(|e| e.kv.clone()).collect::<Vec<_>>());
    assert_eq!(next_events(&mut live, 4).await, expected, "live events");
    let mut replay = watch(&s, "/p/", 0).await;
    assert_eq!(next_events(&mut replay, 4).await, expected, "history events");
}

/// A watch only sees keys under its prefix, in history and live.
pub async fn watch_prefix_filters<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    let mut m = Model::new();
    m.create(&s, "/x/1", b"1").await;
    m.create(&s, "/y/1", b"1").await;
    m.create(&s, "/x1", b"1").await;
    m.update(&s, "/x/1", b"2").await;
    let mut w = watch(&s, "/x/", 0).await;
    let expected = m.events_after("/x/", 0);
    assert_eq!(expected.len(), 2);
    assert_eq!(next_events(&mut w, 2).await, expected);
    m.create(&s, "/y/2", b"1").await;
    m.create(&s, "/x2", b"1").await;
    m.delete(&s, "/y/1").await;
    assert_quiet(&mut w).await;
    let from = m.current();
    m.create(&s, "/x/2", b"1").await;
    m.delete(&s, "/x/1").await;
    assert_eq!(next_events(&mut w, 2).await, m.events_after("/x/", from));
    assert_quiet(&mut w).await;
}

/// A watch from a revision not reached yet waits, then yields only the changes after it.
pub async fn watch_from_future_revision_waits<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    let mut m = Model::new();
    m.create(&s, "/f/a", b"1").await;
    let mut w = watch(&s, "/f/", 3).await;
    assert_quiet(&mut w).await;
    m.create(&s, "/f/b", b"1").await;
    m.update(&s, "/f/a", b"2").await;
    assert_quiet(&mut w).await;
    m.delete(&s, "/f/b").await;
    m.create(&s, "/f/c", b"1").await;
    assert_eq!(next_events(&mut w, 2).await, m.events_after("/f/", 3));
    assert_quiet(&mut w).await;
}

/// Watches started while writers run see history then live changes with no gap and no
/// duplicate: exactly the sequence a later replay shows.
pub async fn watch_history_then_live_without_gap_under_concurrent_writers<F: StoreFactory>(f: &F) {
    let s = Arc::new(open(f).await);
    for i in 0..20 {
        s.create(&format!("/w/pre/{i}"), b"pre".to_vec()).await.expect("create");
    }
    let (writers, per_writer) = (4, 150);
    let mut handles = Vec::new();
    for t in 0..writers {
        let s = Arc::clone(&s);
        handles.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let key = format!("/w/{t}/{}", i % 10);
                match s.get(&key).await.expect("get") {
                    None => drop(s.create(&key, vec![i as u8]).await.expect("create")),
                    Some(kv) if i % 3 == 0 => drop(s.delete(&key, Some(kv.mod_revision)).await.expect("delete")),
                    Some(kv) => drop(s.update(&key, vec![i as u8], kv.mod_revision).await.expect("update")),
                }
                if i % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }

    // Start watches at staggered moments, from a little before the then-current revision.
    let mut watches = Vec::new();
    for n in 0..8 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = current(&*s).await;
        let from = (now - (n * 7) as Revision).max(0);
        let prefix = if n % 2 == 0 { "/w/".to_owned() } else { format!("/w/{}/", n % writers) };
        watches.push((prefix.clone(), from, watch(&*s, &prefix, from).await));
    }
    for h in handles {
        h.await.expect("writer task");
    }
    let end = current(&*s).await;
    assert_eq!(end, 20 + (writers * per_writer) as Revision);

    let mut replay = watch(&*s, "", 0).await;
    let all = next_events(&mut replay, usize::try_from(end).expect("fits")).await;
    assert_eq!(revisions(&all), (1..=end).collect::<Vec<_>>(), "the replay is gap-free");
    for (prefix, from, mut w) in watches {
        let expected: Vec<WatchEvent> =
            all.iter().filter(|e| e.kv.mod_revision > from && e.kv.key.starts_with(&prefix)).cloned().collect();
        let got = next_events(&mut w, expected.len()).await;
        assert_eq!(revisions(&got), revisions(&expected), "watch {prefix:?} from {from}");
        assert!(got == expected, "watch {prefix:?} from {from}: events differ from the replay");
        assert_quiet(&mut w).await;
    }
}

/// Dropping one watch does not disturb others or the writers.
pub async fn watchers_are_independent<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    let mut m = Model::new();
    let mut kept = watch(&s, "/i/", 0).await;
    let dropped: Vec<WatchStream> = futures::future::join_all((0..10).map(|_| s.watch("/i/", 0)))
        .await
        .into_iter()
        .map(|w| w.expect("watch"))
        .collect();
    m.create(&s, "/i/a", b"1").await;
    drop(dropped);
    for i in 0..20u8 {
        m.update(&s, "/i/a", &[i]).await;
    }
    assert_eq!(next_events(&mut kept, m.events.len()).await, m.events);
    drop(kept);
    m.delete(&s, "/i/a").await;
    assert_eq!(s.get("/i/a").await.expect("get"), None);
}

/// A watcher that is not read never blocks writers; it then yields every change, or a gap-free
/// prefix of them followed by an error or the end of the stream.
pub async fn slow_watcher_does_not_block_writers<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    let mut w = watch(&s, "/s/", 0).await;
    let writes = 2_000;
    let kv = s.create("/s/k", b"0".to_vec()).await.expect("create");
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut revision = kv.mod_revision;
        for i in 1..writes {
            revision = s.update("/s/k", i.to_string().into_bytes(), revision).await.expect("update").mod_revision;
        }
    })
    .await
    .expect("writes with an unread watcher finish");
    // An `Err` or the end of the stream is a legitimate way for a slow watcher to stop.
    let mut expected = 1;
    while let Some(Ok(event)) = tokio::time::timeout(WAIT, w.next()).await.expect("the watch yields or ends") {
        assert_eq!(event.kv.mod_revision, expected, "no gap");
        if expected == writes {
            break;
        }
        expected += 1;
    }
}

/// Compaction forgets old revisions but keeps the latest state and everything after it.
pub async fn compaction<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    let mut m = Model::new();
    m.create(&s, "/c/a", b"a1").await; // 1
    m.create(&s, "/c/b", b"b1").await; // 2
    m.update(&s, "/c/a", b"a2").await; // 3
    m.delete(&s, "/c/b").await; // 4
    m.create(&s, "/c/d", b"d1").await; // 5
    m.update(&s, "/c/a", b"a3").await; // 6
    m.delete(&s, "/c/d").await; // 7: /c/d was last written before the compacted revision
    m.create(&s, "/c/e", b"e1").await; // 8
    s.compact(5).await.expect("compact");
    assert_eq!(s.compacted_revision().await.expect("compacted_revision"), 5);
    assert_eq!(current(&s).await, 8, "compaction writes no revision");

    for r in 0..=5 {
        assert_err!(s.list("", Some(r)).await, StoreError::Compacted { requested, compacted: 5 } if requested == r);
    }
    // Revisions after the compacted one still show keys last written before it.
    m.check_lists(&s, "", 6..=8).await;
    m.check_lists(&s, "/c/", 6..=8).await;
    for (key, expected) in m.latest() {
        assert_eq!(s.get(&key).await.expect("get"), Some(expected));
    }

    assert_err!(s.watch("", 4).await.map(|_| ()), StoreError::Compacted { requested: 4, compacted: 5 });
    assert_err!(s.watch("/c/", 0).await.map(|_| ()), StoreError::Compacted { requested: 0, compacted: 5 });
    let mut w = watch(&s, "", 5).await;
    assert_eq!(next_events(&mut w, 3).await, m.events_after("", 5), "watch from the compacted revision");
    assert_quiet(&mut w).await;

    assert_err!(s.compact(5).await, StoreError::Compacted { requested: 5, compacted: 5 });
    assert_err!(s.compact(3).await, StoreError::Compacted { requested: 3, compacted: 5 });
    assert_err!(s.compact(9).await, StoreError::FutureRevision { requested: 9, current: 8 });

    m.update(&s, "/c/e", b"e2").await; // 9
    assert_eq!(next_event(&mut w).await, m.events_after("", 8)[0], "watches continue after compaction");
    s.compact(7).await.expect("compact again");
    m.check_lists(&s, "", 8..=9).await;
    let mut w = watch(&s, "/c/", 7).await;
    assert_eq!(next_events(&mut w, 2).await, m.events_after("/c/", 7));
}

/// Compaction of keys with many versions keeps, per key, the version current at each later
/// revision.
pub async fn compaction_of_many_versions<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    let mut m = Model::new();
    for round in 0..30u8 {
        for k in 0..5u8 {
            let key = format!("/h/{k}");
            let exists = m.latest().contains_key(&key);
            match (exists, (round + k) % 7) {
                (false, _) => drop(m.create(&s, &key, &[round]).await),
                (true, 0) => drop(m.delete(&s, &key).await),
                (true, _) => drop(m.update(&s, &key, &[round, k]).await),
            }
        }
    }
    let end = m.current();
    let mut compacted = 0;
    for target in [end / 4, end / 2, end - 3] {
        s.compact(target).await.expect("compact");
        compacted = target;
        m.check_lists(&s, "/h/", compacted + 1..=end).await;
        let mut w = watch(&s, "/h/", compacted).await;
        let expected = m.events_after("/h/", compacted);
        assert_eq!(next_events(&mut w, expected.len()).await, expected, "watch from {compacted}");
    }
    assert_eq!(s.compacted_revision().await.expect("compacted_revision"), compacted);
}

/// Compacting at the current revision, right after a delete, keeps the revision counter.
pub async fn compaction_at_current_revision<F: StoreFactory>(f: &F) {
    let s = open(f).await;
    s.create("/z/a", b"1".to_vec()).await.expect("create");
    s.create("/z/b", b"1".to_vec()).await.expect("create");
    s.delete("/z/b", None).await.expect("delete");
    s.compact(3).await.expect("compact");
    assert_eq!(current(&s).await, 3);
    assert_err!(s.list("", Some(3)).await, StoreError::Compacted { requested: 3, compacted: 3 });
    assert_eq!(s.list("", None).await.expect("list").items, vec![kv("/z/a", b"1", 1, 1)]);
    let mut w = watch(&s, "", 3).await;
    let next = s.create("/z/b", b"2".to_vec()).await.expect("create");
    assert_eq!(next, kv("/z/b", b"2", 4, 4));
    assert_eq!(next_event(&mut w).await, created(next));
}

/// Everything acknowledged survives closing and reopening the store: state, history,
/// revisions and the compacted revision, including a compaction that removed the newest row.
pub async fn durable_across_reopen<F: StoreFactory>(f: &F) {
    let mut m = Model::new();
    {
        let s = open(f).await;
        write_mix(&s, &mut m).await;
        s.compact(2).await.expect("compact");
        m.update(&s, "/m/d", b"d2").await;
    }
    let s = open(f).await;
    assert_eq!(current(&s).await, m.current());
    assert_eq!(s.compacted_revision().await.expect("compacted_revision"), 2);
    m.check_lists(&s, "", 3..=m.current()).await;
    m.check_lists(&s, "/m/", 3..=m.current()).await;
    let mut w = watch(&s, "", 2).await;
    let expected = m.events_after("", 2);
    assert_eq!(next_events(&mut w, expected.len()).await, expected, "history after reopen");
    assert_err!(s.list("", Some(2)).await, StoreError::Compacted { requested: 2, compacted: 2 });
    drop(w);

    // The last write is a delete and the compaction covers it.
    m.delete(&s, "/m/d").await;
    let end = m.current();
    s.compact(end).await.expect("compact");
    drop(s);
    let s = open(f).await;
    assert_eq!(current(&s).await, end, "the revision counter survives a full compaction");
    assert_eq!(s.compacted_revision().await.expect("compacted_revision"), end);
    m.check_lists(&s, "", std::iter::empty()).await;
    assert_eq!(s.get("/m/d").await.expect("get"), None);
    let mut w = watch(&s, "/m/", end).await;
    let kv = m.create(&s, "/m/d", b"d3").await;
    assert_eq!(kv.mod_revision, end + 1);
    assert_eq!(next_event(&mut w).await, created(kv));
}
