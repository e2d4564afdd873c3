//! Garbage collection: dependents go with their owners (`metadata.ownerReferences`), and a
//! deleted namespace takes its content with it before it disappears.
//!
//! Level-triggered like upstream's garbage collector: an index of live objects and of
//! owner → dependents is built from a list, kept current from a watch, and after every
//! (re)list every dependent whose owners are all gone is collected, so a change missed while
//! the server was down is still acted on.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use pier_api::resources::{self, RESOURCES};
use pier_store::EventKind;
use serde_json::Value;

use crate::registry::{FOREGROUND, ORPHAN, Registry, WriteOptions, decode, finalizers, name_of, object_key};

/// An object's identity in the index: the resource's index in `RESOURCES`, namespace, name.
type ObjRef = (usize, Option<String>, String);

#[derive(Default)]
struct Index {
    live: HashMap<String, ObjRef>,
    dependents: HashMap<String, BTreeSet<ObjRef>>,
    owners_of: HashMap<ObjRef, Vec<String>>,
}

fn resource_index(key: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| {
        let group = if r.group.is_empty() { "core" } else { r.group };
        key.starts_with(&format!("/registry/{group}/{}/", r.plural))
    })
}

fn objref(idx: usize, obj: &Value) -> ObjRef {
    (idx, obj["metadata"]["namespace"].as_str().map(str::to_string), name_of(obj).to_string())
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| a.iter().filter_map(|o| o["uid"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

impl Index {
    fn put(&mut self, idx: usize, obj: &Value) {
        let r = objref(idx, obj);
        self.forget(&r);
        if let Some(uid) = obj["metadata"]["uid"].as_str() {
            self.live.insert(uid.to_string(), r.clone());
        }
        let owners = owner_uids(obj);
        for o in &owners {
            self.dependents.entry(o.clone()).or_default().insert(r.clone());
        }
        self.owners_of.insert(r, owners);
    }

    fn forget(&mut self, r: &ObjRef) {
        if let Some(owners) = self.owners_of.remove(r) {
            for o in owners {
                if let Some(set) = self.dependents.get_mut(&o) {
                    set.remove(r);
                    if set.is_empty() {
                        self.dependents.remove(&o);
                    }
                }
            }
        }
    }

    fn remove(&mut self, idx: usize, obj: &Value) {
        let r = objref(idx, obj);
        self.forget(&r);
        if let Some(uid) = obj["metadata"]["uid"].as_str() {
            self.live.remove(uid);
        }
    }

    /// Dependents with at least one owner that is gone: collected when all are gone, else
    /// stripped of the dangling references.
    fn orphans(&self) -> Vec<ObjRef> {
        self.owners_of
            .iter()
            .filter(|(_, owners)| owners.iter().any(|o| !self.live.contains_key(o)))
            .map(|(r, _)| r.clone())
            .collect()
    }
}

fn system_options() -> WriteOptions {
    WriteOptions { manager: "garbage-collector".into(), dry_run: false, now: Timestamp::now() }
}

async fn collect(registry: &Registry, r: &ObjRef, index: &Index) {
    let Some(res) = RESOURCES.get(r.0) else { return };
    let Ok((obj, rev)) = registry.get_kv(res, r.1.as_deref(), &r.2).await else { return };
    let owners = owner_uids(&obj);
    let alive: Vec<&String> = owners.iter().filter(|o| index.live.contains_key(*o)).collect();
    if alive.is_empty() {
        tracing::debug!(kind = res.kind, name = %r.2, "collecting dependent of a deleted owner");
        let _ = registry.delete(res, r.1.as_deref(), &r.2, &Value::Null, &system_options()).await;
        return;
    }
    // Some owners remain: only drop the references to the gone ones.
    let mut new = obj.clone();
    if let Some(refs) = new["metadata"]["ownerReferences"].as_array_mut() {
        refs.retain(|o| o["uid"].as_str().is_some_and(|u| index.live.contains_key(u)));
    }
    let _ = registry.update(res, &obj, rev, new, None, &system_options()).await;
}

fn in_foreground_deletion(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null() && finalizers(obj).iter().any(|f| f == FOREGROUND)
}

fn in_orphan_deletion(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null() && finalizers(obj).iter().any(|f| f == ORPHAN)
}

/// Orphaning deletion of `owner`: its dependents lose their reference to it, then the
/// finalizer goes and with it the owner.
async fn orphan_step(registry: &Registry, owner: &ObjRef) {
    let Some(res) = RESOURCES.get(owner.0) else { return };
    let Ok(obj) = registry.get(res, owner.1.as_deref(), &owner.2).await else { return };
    if !in_orphan_deletion(&obj) {
        return;
    }
    orphan_dependents(registry, &obj).await;
    if let Ok((obj, rev)) = registry.get_kv(res, owner.1.as_deref(), &owner.2).await {
        let mut new = obj.clone();
        let rest: Vec<String> = finalizers(&obj).into_iter().filter(|f| f != ORPHAN).collect();
        new["metadata"]["finalizers"] = serde_json::json!(rest);
        let _ = registry.update(res, &obj, rev, new, None, &system_options()).await;
    }
}

/// One step of foreground deletion of `owner`: delete its dependents (in the foreground
/// too), or, once none is left, drop the finalizer so the owner goes.
async fn foreground_step(registry: &Registry, owner: &ObjRef, index: &Index) {
    let Some(res) = RESOURCES.get(owner.0) else { return };
    let Ok((obj, rev)) = registry.get_kv(res, owner.1.as_deref(), &owner.2).await else { return };
    if !in_foreground_deletion(&obj) {
        return;
    }
    let uid = obj["metadata"]["uid"].as_str().unwrap_or("");
    let deps: Vec<ObjRef> = index.dependents.get(uid).map(|s| s.iter().cloned().collect()).unwrap_or_default();
    if deps.is_empty() {
        let mut new = obj.clone();
        let rest: Vec<String> = finalizers(&obj).into_iter().filter(|f| f != FOREGROUND).collect();
        new["metadata"]["finalizers"] = serde_json::json!(rest);
        let _ = registry.update(res, &obj, rev, new, None, &system_options()).await;
        return;
    }
    let foreground = serde_json::json!({"propagationPolicy": "Foreground"});
    for d in deps {
        if let Some(dres) = RESOURCES.get(d.0) {
            let _ = registry.delete(dres, d.1.as_deref(), &d.2, &foreground, &system_options()).await;
        }
    }
}

/// Removes the namespace's content, then the namespace.
async fn finalize_namespace(registry: &Registry, ns: &str) {
    for r in RESOURCES.iter().filter(|r| r.namespaced) {
        let Ok((items, _)) = registry.list(r, Some(ns), None).await else { continue };
        for item in items {
            let _ = registry.delete(r, Some(ns), name_of(&item), &Value::Null, &system_options()).await;
        }
    }
    let Some(nsr) = resources::find("", "v1", "namespaces") else { return };
    // Anything still there (an object with finalizers of its own) keeps the namespace.
    for r in RESOURCES.iter().filter(|r| r.namespaced) {
        if registry.list(r, Some(ns), None).await.is_ok_and(|(items, _)| !items.is_empty()) {
            return;
        }
    }
    if let Ok((obj, rev)) = registry.get_kv(nsr, None, ns).await
        && !obj["metadata"]["deletionTimestamp"].is_null()
    {
        let _ = registry.store.delete(&object_key(nsr, None, ns), Some(rev)).await;
    }
}

/// Runs the collector until the process ends.
pub async fn run(registry: Registry) {
    loop {
        if let Err(e) = run_once(&registry).await {
            tracing::warn!(error = %e, "garbage collector restarting");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn run_once(registry: &Registry) -> Result<(), pier_store::StoreError> {
    let mut index = Index::default();
    let list = registry.store.list("/registry/", None).await?;
    let mut terminating = Vec::new();
    for kv in &list.items {
        let (Some(idx), Ok(obj)) = (resource_index(&kv.key), decode(kv)) else { continue };
        if RESOURCES[idx].kind == "Namespace" && !obj["metadata"]["deletionTimestamp"].is_null() {
            terminating.push(name_of(&obj).to_string());
        }
        index.put(idx, &obj);
    }
    let mut events = registry.store.watch("/registry/", list.revision).await?;
    for r in index.orphans() {
        collect(registry, &r, &index).await;
    }
    for ns in terminating {
        finalize_namespace(registry, &ns).await;
    }
    let foreground: Vec<ObjRef> = list
        .items
        .iter()
        .filter_map(|kv| Some((resource_index(&kv.key)?, decode(kv).ok()?)))
        .filter(|(_, obj)| in_foreground_deletion(obj))
        .map(|(idx, obj)| objref(idx, &obj))
        .collect();
    for owner in foreground {
        foreground_step(registry, &owner, &index).await;
    }
    let orphaning: Vec<ObjRef> = list
        .items
        .iter()
        .filter_map(|kv| Some((resource_index(&kv.key)?, decode(kv).ok()?)))
        .filter(|(_, obj)| in_orphan_deletion(obj))
        .map(|(idx, obj)| objref(idx, &obj))
        .collect();
    for owner in orphaning {
        orphan_step(registry, &owner).await;
    }
    while let Some(ev) = events.next().await {
        let ev = ev?;
        let Some(idx) = resource_index(&ev.kv.key) else { continue };
        let Ok(obj) = decode(&ev.kv) else { continue };
        match ev.kind {
            EventKind::Created | EventKind::Updated => {
                index.put(idx, &obj);
                // A dependent created after its owner was deleted is collected at once, as
                // upstream's collector does when it finds the owner gone.
                let r = objref(idx, &obj);
                if ev.kind == EventKind::Created && owner_uids(&obj).iter().any(|o| !index.live.contains_key(o)) {
                    collect(registry, &r, &index).await;
                }
                if in_foreground_deletion(&obj) {
                    foreground_step(registry, &objref(idx, &obj), &index).await;
                }
                if in_orphan_deletion(&obj) {
                    orphan_step(registry, &objref(idx, &obj)).await;
                }
                if RESOURCES[idx].kind == "Namespace" && !obj["metadata"]["deletionTimestamp"].is_null() {
                    let registry = registry.clone();
                    let ns = name_of(&obj).to_string();
                    tokio::spawn(async move { finalize_namespace(&registry, &ns).await });
                }
            }
            EventKind::Deleted => {
                index.remove(idx, &obj);
                let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
                let deps: Vec<ObjRef> =
                    index.dependents.get(&uid).map(|s| s.iter().cloned().collect()).unwrap_or_default();
                for d in deps {
                    collect(registry, &d, &index).await;
                }
                // A dependent gone may let an owner in foreground deletion go too.
                for owner_uid in owner_uids(&obj) {
                    if let Some(owner) = index.live.get(&owner_uid).cloned() {
                        foreground_step(registry, &owner, &index).await;
                    }
                }
                if let Some(ns) = obj["metadata"]["namespace"].as_str()
                    && let Some(nsr) = resources::find("", "v1", "namespaces")
                    && let Ok(nsobj) = registry.get(nsr, None, ns).await
                    && !nsobj["metadata"]["deletionTimestamp"].is_null()
                {
                    finalize_namespace(registry, ns).await;
                }
            }
        }
    }
    Ok(())
}

/// `propagationPolicy: Orphan`: the deleted object's dependents lose their reference to it.
pub async fn orphan_dependents(registry: &Registry, owner: &Value) {
    let Some(uid) = owner["metadata"]["uid"].as_str() else { return };
    let ns = owner["metadata"]["namespace"].as_str();
    for r in RESOURCES.iter() {
        let scope = if r.namespaced { ns } else { None };
        if r.namespaced && scope.is_none() {
            continue;
        }
        let Ok((items, _)) = registry.list(r, scope, None).await else { continue };
        for item in items.into_iter().filter(|i| owner_uids(i).iter().any(|o| o == uid)) {
            let Ok((cur, rev)) = registry.get_kv(r, scope, name_of(&item)).await else { continue };
            let mut new = cur.clone();
            if let Some(refs) = new["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|o| o["uid"].as_str() != Some(uid));
            }
            if new["metadata"]["ownerReferences"].as_array().is_some_and(Vec::is_empty)
                && let Some(m) = new["metadata"].as_object_mut()
            {
                m.remove("ownerReferences");
            }
            let _ = registry.update(r, &cur, rev, new, None, &system_options()).await;
        }
    }
}
