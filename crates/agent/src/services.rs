//! The node's Service cache, as the kubelet's Service lister: what a container start reads to
//! build the service environment variables, without a list of every Service in the cluster.
//! It keeps [`EnvService`]s by namespace, not the objects, so a node with 30,000 Services in
//! the cluster spends a few MB on it.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};

use k8s_openapi::api::core::v1::Service;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::envvars::{EnvPort, EnvService};

/// What the cache keeps of a Service: its namespace and name are the keys it is filed under.
#[derive(Debug)]
struct Stored {
    cluster_ip: Box<str>,
    ports: Box<[EnvPort]>,
}

type ByNamespace = BTreeMap<Box<str>, BTreeMap<Box<str>, Stored>>;

#[derive(Default)]
struct Inner {
    by_ns: ByNamespace,
    /// A relist in progress: filled from `InitApply`, swapped in at `InitDone`.
    relist: Option<ByNamespace>,
}

pub struct ServiceCache {
    inner: RwLock<Inner>,
    /// True once the first list is complete.
    ready: watch::Sender<bool>,
}

fn insert(map: &mut ByNamespace, s: EnvService) {
    let stored = Stored { cluster_ip: s.cluster_ip.into(), ports: s.ports.into() };
    map.entry(s.namespace.into()).or_default().insert(s.name.into(), stored);
}

fn env_service(ns: &str, name: &str, s: &Stored) -> EnvService {
    EnvService {
        namespace: ns.to_string(),
        name: name.to_string(),
        cluster_ip: s.cluster_ip.to_string(),
        ports: s.ports.to_vec(),
    }
}

impl ServiceCache {
    /// An empty cache, fed by [`ServiceCache::handle`].
    pub fn new() -> ServiceCache {
        ServiceCache { inner: RwLock::new(Inner::default()), ready: watch::Sender::new(false) }
    }

    /// Applies one event of a watch of every Service (the node's shared one: the pod manager
    /// need not run its own).
    pub fn handle(&self, ev: &watcher::Event<Service>) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        match ev {
            watcher::Event::Init => inner.relist = Some(ByNamespace::new()),
            watcher::Event::InitApply(s) => {
                if let Some(r) = inner.relist.as_mut() {
                    insert(r, EnvService::of(s));
                }
            }
            watcher::Event::InitDone => {
                if let Some(fresh) = inner.relist.take() {
                    inner.by_ns = fresh;
                }
                self.ready.send_replace(true);
            }
            watcher::Event::Apply(s) => insert(&mut inner.by_ns, EnvService::of(s)),
            watcher::Event::Delete(s) => {
                let (ns, name) = (s.metadata.namespace.as_deref(), s.metadata.name.as_deref());
                let (ns, name) = (ns.unwrap_or_default(), name.unwrap_or_default());
                if let Some(m) = inner.by_ns.get_mut(ns) {
                    m.remove(name);
                    if m.is_empty() {
                        inner.by_ns.remove(ns);
                    }
                }
            }
        }
    }

    /// Waits for the first complete list; `Err` if the cache's feed is gone.
    pub async fn wait_until_ready(&self) -> Result<(), watch::error::RecvError> {
        self.ready.subscribe().wait_for(|r| *r).await.map(|_| ())
    }

    /// The Services a pod of `namespace` can see in its variables: its namespace's, and the
    /// `kubernetes` Service of `default`.
    pub fn for_namespace(&self, namespace: &str) -> Vec<EnvService> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<EnvService> = inner
            .by_ns
            .get(namespace)
            .into_iter()
            .flat_map(|m| m.iter().map(|(name, s)| env_service(namespace, name, s)))
            .collect();
        if namespace != "default"
            && let Some(master) = inner.by_ns.get("default").and_then(|m| m.get("kubernetes"))
        {
            out.push(env_service("default", "kubernetes", master));
        }
        out
    }
}

impl Default for ServiceCache {
    fn default() -> Self {
        ServiceCache::new()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}
        }))
        .unwrap()
    }

    fn names(v: &[EnvService]) -> Vec<String> {
        v.iter().map(|s| format!("{}/{}", s.namespace, s.name)).collect()
    }

    #[test]
    fn a_namespace_sees_its_services_and_the_master_one_and_a_relist_drops_the_gone() {
        let c = ServiceCache::new();
        c.handle(&watcher::Event::Init);
        for (ns, name) in [("default", "kubernetes"), ("default", "kubia"), ("a", "x"), ("a", "y"), ("b", "z")] {
            c.handle(&watcher::Event::InitApply(svc(ns, name, "10.96.0.9")));
        }
        // Nothing is visible before the list is complete.
        assert!(c.for_namespace("a").is_empty());
        c.handle(&watcher::Event::InitDone);
        assert_eq!(names(&c.for_namespace("a")), ["a/x", "a/y", "default/kubernetes"]);
        assert_eq!(names(&c.for_namespace("default")), ["default/kubernetes", "default/kubia"]);
        assert_eq!(names(&c.for_namespace("none")), ["default/kubernetes"]);
        c.handle(&watcher::Event::Delete(svc("a", "x", "")));
        c.handle(&watcher::Event::Apply(svc("a", "w", "10.96.0.8")));
        assert_eq!(names(&c.for_namespace("a")), ["a/w", "a/y", "default/kubernetes"]);
        // A relist (after a lost watch) replaces everything: b/z is gone.
        c.handle(&watcher::Event::Init);
        c.handle(&watcher::Event::InitApply(svc("default", "kubernetes", "10.96.0.1")));
        c.handle(&watcher::Event::InitApply(svc("a", "y", "10.96.0.7")));
        c.handle(&watcher::Event::InitDone);
        assert_eq!(names(&c.for_namespace("b")), ["default/kubernetes"]);
        assert_eq!(c.for_namespace("a")[0].cluster_ip, "10.96.0.7");
    }
}
