//! The store: a key-value map with etcd's semantics, which the API server keeps its objects in.
//!
//! Every write gets the next value of one global revision counter; that revision is the
//! `resourceVersion` Kubernetes clients see. Reads can be at the latest revision or at an older
//! one, watches start from any revision not yet compacted away, updates are compare-and-swap on
//! the key's `mod_revision`. Keys are opaque strings (the API server uses
//! `/registry/<group>/<resource>/<namespace>/<name>`); values are opaque bytes.
//!
//! This crate knows nothing about Kubernetes objects. Backends: [`sqlite::SqliteStore`].
//! Every backend must pass [`conformance`] unmodified.

pub mod conformance;
pub mod sqlite;

use std::pin::Pin;

use futures::Stream;

/// A store revision. Revisions start at 1 and only grow; 0 means "before everything".
pub type Revision = i64;

/// One key with its value and the revisions that created and last modified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    /// Shared: the store's copy, a list and a watch event hold one buffer between them.
    pub value: bytes::Bytes,
    /// The revision of the write that created this key (its latest incarnation).
    pub create_revision: Revision,
    /// The revision of the latest write to this key. For a deleted key in a [`WatchEvent`],
    /// the revision of the delete.
    pub mod_revision: Revision,
}

/// The result of a list: the matching keys in key order, and the revision the list was read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    pub revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key did not exist before this revision.
    Created,
    /// The key existed and got a new value.
    Updated,
    /// The key was deleted; `kv.value` is its last value and `kv.mod_revision` the delete's revision.
    Deleted,
}

/// One change, in revision order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The value before this change (`None` for [`EventKind::Created`]).
    pub prev: Option<KeyValue>,
}

/// A stream of changes. It ends (or yields an error) when the store drops a watcher that
/// cannot keep up; clients then list and watch again, as Kubernetes clients do.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key:?} already exists")]
    AlreadyExists { key: String },
    #[error("key {key:?} not found")]
    NotFound { key: String },
    /// A compare-and-swap lost: the key's `mod_revision` is no longer the expected one.
    #[error("key {key:?} was modified: expected revision {expected}, found {actual}")]
    Conflict { key: String, expected: Revision, actual: Revision },
    /// The requested revision is older than the oldest one kept.
    #[error("required revision {requested} has been compacted (compacted through {compacted})")]
    Compacted { requested: Revision, compacted: Revision },
    /// The requested revision is newer than the store's current revision.
    #[error("required revision {requested} is in the future (current {current})")]
    FutureRevision { requested: Revision, current: Revision },
    /// The watcher fell too far behind and was dropped.
    #[error("watcher fell behind and was dropped")]
    WatcherLagged,
    #[error("store backend: {0}")]
    Backend(String),
}

/// A key-value store with etcd semantics. Implementations are shared across tasks (`Arc<dyn Store>`).
///
/// Invariants every backend keeps (and [`conformance`] checks):
/// - every successful create, update or delete takes exactly the next revision;
/// - an acknowledged write is durable: it survives the process being killed;
/// - a watch from revision `r` yields every change with revision `> r` matching its prefix,
///   exactly once, in revision order, with no gap between history and live changes;
/// - reads and watches at a revision at or below the compacted revision fail with
///   [`StoreError::Compacted`] (except a list with `revision: None`).
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The revision of the latest write (0 for an empty, never-written store).
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// The latest value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every key that starts with `prefix`, in key order, at `revision` (`None`: the latest).
    async fn list(&self, prefix: &str, revision: Option<Revision>) -> Result<ListResult, StoreError>;

    /// One page of a list at the latest revision: up to `limit` keys that start with `prefix`
    /// and sort after `after` (from the first when `None`), in key order; and whether more
    /// keys follow.
    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(ListResult, bool), StoreError>;

    /// Count of the keys that start with `prefix` at the latest revision.
    async fn count(&self, prefix: &str) -> Result<usize, StoreError>;

    /// Creates `key`; fails with [`StoreError::AlreadyExists`] if it exists.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError>;

    /// Replaces the value of `key` if its `mod_revision` is `expected_mod_revision`.
    /// Fails with [`StoreError::NotFound`] or [`StoreError::Conflict`].
    async fn update(&self, key: &str, value: Vec<u8>, expected_mod_revision: Revision) -> Result<KeyValue, StoreError>;

    /// Deletes `key` (only if its `mod_revision` is `expected_mod_revision`, when given).
    /// Returns the last value with `mod_revision` set to the delete's revision.
    async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<KeyValue, StoreError>;

    /// Changes to keys starting with `prefix` with revision `> from_revision`.
    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream, StoreError>;

    /// Forgets history at and below `revision`: older versions of keys and deleted keys.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The highest compacted revision (0 if never compacted).
    async fn compacted_revision(&self) -> Result<Revision, StoreError>;
}
