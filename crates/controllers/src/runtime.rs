//! The driver machinery every controller shares, in the shape of client-go's shared informers
//! and work queues, built on `kube::runtime`:
//!
//! - [`Informer`]: a `watcher` feeding a reflector [`Store`], plus a broadcast of changes (with
//!   the previous object, so label moves can be mapped to both old and new owners), a `Resync`
//!   after every (re)list, and the highest resourceVersion seen — the read-your-writes barrier
//!   ([`Informer::wait_seen`]) that replaces upstream's expectations;
//! - [`Informers`]: lazily started informers shared by the controllers of one process;
//! - [`WorkQueue`]: de-duplicating, one-worker-per-key, delayed and backed-off adds;
//! - [`run_workers`]: N workers, each reconcile in its own task (a panic loses one reconcile, not
//!   the controller) inside one tracing span.
//!
//! It knows nothing about any particular controller.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, broadcast, watch};
use tracing::Instrument;

use crate::write::{self, Kind, Write, WriteError};

// ---------------------------------------------------------------------------------------------
// Shutdown

/// A cloneable shutdown signal.
#[derive(Clone)]
pub(crate) struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A signal that fires when `f` completes (or [`Shutdown::trigger`] is called).
    pub fn from_future(f: impl Future<Output = ()> + Send + 'static) -> Shutdown {
        let (tx, rx) = watch::channel(false);
        let tx = Arc::new(tx);
        let weak = Arc::downgrade(&tx);
        tokio::spawn(async move {
            f.await;
            if let Some(tx) = weak.upgrade() {
                let _ = tx.send(true);
            }
        });
        Shutdown { tx, rx }
    }

    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Informers

/// One observed change of a watched object.
#[derive(Debug)]
pub(crate) enum Change<K> {
    Applied {
        old: Option<Arc<K>>,
        new: Arc<K>,
    },
    Deleted(Arc<K>),
    /// The cache was (re)listed or a subscriber fell behind: reconsider everything.
    Resync,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied { old, new } => Change::Applied { old: old.clone(), new: new.clone() },
            Change::Deleted(o) => Change::Deleted(o.clone()),
            Change::Resync => Change::Resync,
        }
    }
}

/// Bounds of a type an [`Informer`] can watch.
pub(crate) trait Watched:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

impl<K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static> Watched for K {}

/// A watch cache of one resource type.
pub(crate) struct Informer<K: Watched> {
    store: Store<K>,
    seen: watch::Receiver<u64>,
    /// Set after the first complete list. (`Store::wait_until_ready` wakes only one of several
    /// concurrent waiters, so readiness is tracked here.)
    synced: watch::Receiver<bool>,
    changes: broadcast::Sender<Change<K>>,
}

impl<K: Watched> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            store: self.store.clone(),
            seen: self.seen.clone(),
            synced: self.synced.clone(),
            changes: self.changes.clone(),
        }
    }
}

fn resource_version<K: Resource>(obj: &K) -> u64 {
    obj.meta().resource_version.as_deref().and_then(|rv| rv.parse().ok()).unwrap_or(0)
}

impl<K: Watched> Informer<K> {
    /// Starts watching everything `api` lists until `stop` fires.
    fn spawn(api: Api<K>, stop: Shutdown) -> Informer<K> {
        let (store, mut writer) = reflector::store::<K>();
        let (seen_tx, seen) = watch::channel(0u64);
        let (synced_tx, synced) = watch::channel(false);
        let (changes, _) = broadcast::channel(8192);
        let tx = changes.clone();
        let reader = store.clone();
        let kind = K::kind(&()).into_owned();
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            loop {
                let next = tokio::select! {
                    _ = stop.wait() => break,
                    next = stream.next() => next,
                };
                let mut event = match next {
                    None => break,
                    Some(Err(e)) => {
                        tracing::warn!(%kind, error = %e, "watch failed; retrying");
                        continue;
                    }
                    Some(Ok(event)) => event,
                };
                // No controller reads managedFields, and they are often the bulk of an
                // object: the cache drops them, as kube-controller-manager's informers do
                // (kubernetes/kubernetes#118455).
                if let watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) = &mut event
                {
                    o.meta_mut().managed_fields = None;
                    let rv = resource_version(o);
                    seen_tx.send_if_modified(|v| {
                        let newer = rv > *v;
                        if newer {
                            *v = rv;
                        }
                        newer
                    });
                }
                let old = match &event {
                    watcher::Event::Apply(o) => reader.get(&ObjectRef::from_obj(o)),
                    _ => None,
                };
                writer.apply_watcher_event(&event);
                if matches!(event, watcher::Event::InitDone) {
                    synced_tx.send_if_modified(|s| !std::mem::replace(s, true));
                }
                let change = match event {
                    watcher::Event::Apply(o) => {
                        reader.get(&ObjectRef::from_obj(&o)).map(|new| Change::Applied { old, new })
                    }
                    watcher::Event::Delete(o) => Some(Change::Deleted(Arc::new(o))),
                    watcher::Event::InitDone => Some(Change::Resync),
                    watcher::Event::Init | watcher::Event::InitApply(_) => None,
                };
                if let Some(change) = change {
                    let _ = tx.send(change);
                }
            }
        });
        Informer { store, seen, synced, changes }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change<K>> {
        self.changes.subscribe()
    }

    /// Waits until the first list is in the cache.
    pub async fn ready(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|s| *s).await;
    }

    pub fn state(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let key = if namespace.is_empty() { ObjectRef::new(name) } else { ObjectRef::new(name).within(namespace) };
        self.store.get(&key)
    }

    /// Objects of one namespace.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.store.state_filter(|o| o.meta().namespace.as_deref() == Some(namespace))
    }

    /// Waits (at most `timeout`) until the cache has seen resourceVersion `rv`: every write
    /// that returned `rv` or less is then reflected in it. Returns whether it got there.
    pub async fn wait_seen(&self, rv: u64, timeout: Duration) -> bool {
        let mut seen = self.seen.clone();
        matches!(tokio::time::timeout(timeout, seen.wait_for(|v| *v >= rv)).await, Ok(Ok(_)))
    }
}

/// The informers of one process, started on first use and shared by its controllers.
#[derive(Clone)]
pub(crate) struct Informers {
    client: kube::Client,
    stop: Shutdown,
    pods: Arc<Mutex<Option<Informer<Pod>>>>,
    services: Arc<Mutex<Option<Informer<Service>>>>,
    endpoints: Arc<Mutex<Option<Informer<Endpoints>>>>,
    slices: Arc<Mutex<Option<Informer<EndpointSlice>>>>,
    nodes: Arc<Mutex<Option<Informer<Node>>>>,
    replica_sets: Arc<Mutex<Option<Informer<ReplicaSet>>>>,
    deployments: Arc<Mutex<Option<Informer<Deployment>>>>,
}

fn shared<K: Watched>(slot: &Mutex<Option<Informer<K>>>, client: &kube::Client, stop: &Shutdown) -> Informer<K> {
    let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    slot.get_or_insert_with(|| Informer::spawn(Api::all(client.clone()), stop.clone())).clone()
}

impl Informers {
    pub fn new(client: kube::Client, stop: Shutdown) -> Informers {
        Informers {
            client,
            stop,
            pods: Arc::default(),
            services: Arc::default(),
            endpoints: Arc::default(),
            slices: Arc::default(),
            nodes: Arc::default(),
            replica_sets: Arc::default(),
            deployments: Arc::default(),
        }
    }

    pub fn pods(&self) -> Informer<Pod> {
        shared(&self.pods, &self.client, &self.stop)
    }

    pub fn services(&self) -> Informer<Service> {
        shared(&self.services, &self.client, &self.stop)
    }

    pub fn endpoints(&self) -> Informer<Endpoints> {
        shared(&self.endpoints, &self.client, &self.stop)
    }

    pub fn slices(&self) -> Informer<EndpointSlice> {
        shared(&self.slices, &self.client, &self.stop)
    }

    pub fn nodes(&self) -> Informer<Node> {
        shared(&self.nodes, &self.client, &self.stop)
    }

    pub fn replica_sets(&self) -> Informer<ReplicaSet> {
        shared(&self.replica_sets, &self.client, &self.stop)
    }

    pub fn deployments(&self) -> Informer<Deployment> {
        shared(&self.deployments, &self.client, &self.stop)
    }

    /// Waits until the informers of `kinds` have seen the resourceVersions `written` holds for
    /// them (at most `timeout` each).
    pub async fn wait_seen(&self, written: &HashMap<Kind, u64>, timeout: Duration) {
        for (kind, rv) in written {
            let caught_up = match kind {
                Kind::Pod => self.pods().wait_seen(*rv, timeout).await,
                Kind::Service => self.services().wait_seen(*rv, timeout).await,
                Kind::Endpoints => self.endpoints().wait_seen(*rv, timeout).await,
                Kind::EndpointSlice => self.slices().wait_seen(*rv, timeout).await,
                Kind::Node => self.nodes().wait_seen(*rv, timeout).await,
                Kind::ReplicaSet => self.replica_sets().wait_seen(*rv, timeout).await,
                Kind::Deployment => self.deployments().wait_seen(*rv, timeout).await,
                Kind::Event => true,
            };
            if !caught_up {
                tracing::debug!(%kind, rv, "cache did not catch up with our write in time");
            }
        }
    }
}

/// Forwards changes of an informer's own objects to `queue` under their own keys; a resync
/// queues what `resync` returns (every cached object, and whatever else the controller must
/// reconsider). The first subscription of every controller.
pub(crate) fn forward_own<K, R>(
    informer: &Informer<K>,
    queue: Arc<WorkQueue<crate::objects::ObjectKey>>,
    stop: Shutdown,
    resync: R,
) where
    K: Watched,
    R: Fn() -> Vec<crate::objects::ObjectKey> + Send + 'static,
{
    use crate::objects::ObjectKey;
    forward(informer, queue, stop, move |c| match c {
        Change::Applied { new, .. } => vec![ObjectKey::of(new.meta())],
        Change::Deleted(obj) => vec![ObjectKey::of(obj.meta())],
        Change::Resync => resync(),
    });
}

/// Forwards an informer's changes to `queue` as the keys `map` derives from them, until `stop`.
pub(crate) fn forward<K, T, F>(informer: &Informer<K>, queue: Arc<WorkQueue<T>>, stop: Shutdown, map: F)
where
    K: Watched,
    T: QueueKey,
    F: Fn(&Change<K>) -> Vec<T> + Send + 'static,
{
    let mut rx = informer.subscribe();
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                _ = stop.wait() => break,
                change = rx.recv() => change,
            };
            let change = match change {
                Ok(c) => c,
                Err(broadcast::error::RecvError::Lagged(_)) => Change::Resync,
                Err(broadcast::error::RecvError::Closed) => break,
            };
            for key in map(&change) {
                queue.add(key);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Work queue

pub(crate) trait QueueKey: Clone + Eq + Hash + Display + Send + Sync + 'static {}
impl<T: Clone + Eq + Hash + Display + Send + Sync + 'static> QueueKey for T {}

struct QueueState<T> {
    order: VecDeque<T>,
    queued: HashSet<T>,
    active: HashSet<T>,
    /// Added while being processed: processed again when the worker is done.
    redo: HashSet<T>,
    failures: HashMap<T, u32>,
    closed: bool,
}

/// client-go's rate-limited work queue: a key is queued at most once and processed by at most
/// one worker at a time; failures back off exponentially (5 ms doubling, capped at 60 s).
pub(crate) struct WorkQueue<T> {
    state: Mutex<QueueState<T>>,
    notify: Notify,
}

impl<T: QueueKey> WorkQueue<T> {
    pub fn new() -> Arc<WorkQueue<T>> {
        Arc::new(WorkQueue {
            state: Mutex::new(QueueState {
                order: VecDeque::new(),
                queued: HashSet::new(),
                active: HashSet::new(),
                redo: HashSet::new(),
                failures: HashMap::new(),
                closed: false,
            }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState<T>> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn add(&self, key: T) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        if st.active.contains(&key) {
            st.redo.insert(key);
            return;
        }
        if st.queued.insert(key.clone()) {
            st.order.push_back(key);
            drop(st);
            self.notify.notify_one();
        }
    }

    pub fn add_after(self: &Arc<Self>, key: T, delay: Duration) {
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(q) = queue.upgrade() {
                q.add(key);
            }
        });
    }

    /// Re-adds a failed key after its backoff.
    pub fn retry(self: &Arc<Self>, key: T) {
        let n = {
            let mut st = self.lock();
            let n = st.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let delay = Duration::from_millis(5u64.saturating_mul(1 << n.min(20))).min(Duration::from_secs(60));
        self.add_after(key, delay);
    }

    pub fn forget(&self, key: &T) {
        self.lock().failures.remove(key);
    }

    /// The next key to process; `None` once closed.
    pub async fn next(&self) -> Option<T> {
        loop {
            let notified = self.notify.notified();
            futures::pin_mut!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if st.closed {
                    return None;
                }
                if let Some(key) = st.order.pop_front() {
                    st.queued.remove(&key);
                    st.active.insert(key.clone());
                    if !st.order.is_empty() {
                        drop(st);
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    pub fn done(&self, key: &T) {
        let again = {
            let mut st = self.lock();
            st.active.remove(key);
            st.redo.remove(key)
        };
        if again {
            self.add(key.clone());
        }
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }
}

// ---------------------------------------------------------------------------------------------
// Workers

/// Why a reconcile failed; the key is retried with backoff.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ReconcileError(pub String);

impl From<WriteError> for ReconcileError {
    fn from(e: WriteError) -> Self {
        ReconcileError(e.to_string())
    }
}

/// What a successful reconcile asks for: optionally to look at the key again later.
pub(crate) type ReconcileResult = Result<Option<Duration>, ReconcileError>;

/// Runs `workers` workers over `queue` until `stop` fires. Each reconcile runs in its own task
/// inside a `reconcile` span carrying the controller name and the key.
pub(crate) async fn run_workers<T, F, Fut>(
    controller: &'static str,
    queue: Arc<WorkQueue<T>>,
    workers: usize,
    stop: Shutdown,
    reconcile: F,
) where
    T: QueueKey,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ReconcileResult> + Send + 'static,
{
    let reconcile = Arc::new(reconcile);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let reconcile = reconcile.clone();
        tasks.spawn(async move {
            while let Some(key) = queue.next().await {
                let span = tracing::info_span!("reconcile", controller, key = %key);
                let fut = reconcile(key.clone()).instrument(span.clone());
                match tokio::spawn(fut).await {
                    Ok(Ok(requeue)) => {
                        queue.forget(&key);
                        if let Some(after) = requeue {
                            queue.add_after(key.clone(), after);
                        }
                    }
                    Ok(Err(e)) => {
                        span.in_scope(|| tracing::warn!(error = %e, "reconcile failed; will retry"));
                        queue.retry(key.clone());
                    }
                    Err(e) => {
                        span.in_scope(|| tracing::error!(error = %e, "reconcile task died; will retry"));
                        queue.retry(key.clone());
                    }
                }
                queue.done(&key);
            }
        });
    }
    stop.wait().await;
    queue.close();
    while tasks.join_next().await.is_some() {}
}

/// How long a worker waits for the caches to reflect its own writes.
pub(crate) const CACHE_CATCH_UP: Duration = Duration::from_secs(5);

/// Applies `writes` in order, stopping at the first failure; returns the highest
/// resourceVersion written per kind.
pub(crate) async fn apply_all(client: &kube::Client, writes: &[Write]) -> Result<HashMap<Kind, u64>, WriteError> {
    let mut seen = HashMap::new();
    for w in writes {
        tracing::debug!(write = %w.summary(), "applying");
        let applied = write::apply(client, w).await?;
        if let Some(rv) = applied.resource_version {
            let e = seen.entry(w.kind()).or_insert(0);
            *e = (*e).max(rv);
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queue_deduplicates_and_serialises_a_key() {
        let q = WorkQueue::<String>::new();
        q.add("a".into());
        q.add("a".into());
        q.add("b".into());
        let first = q.next().await;
        assert_eq!(first.as_deref(), Some("a"));
        // Added while active: queued again only when done.
        q.add("a".into());
        assert_eq!(q.next().await.as_deref(), Some("b"));
        q.done(&"b".to_string());
        q.done(&"a".to_string());
        assert_eq!(q.next().await.as_deref(), Some("a"));
        q.close();
        assert_eq!(q.next().await, None);
    }
}
