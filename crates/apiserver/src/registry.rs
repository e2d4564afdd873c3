//! Generic object storage over the [`Store`]: storage keys, stamping `resourceVersion`, `uid`,
//! `creationTimestamp` and `generation`, and the create / update / delete paths every resource
//! shares, with the per-kind admission hooks (defaulting, validation, Service allocation).
//!
//! This module knows the shape of Kubernetes object metadata, not HTTP.

use std::sync::Arc;

use jiff::Timestamp;
use pier_api::resources::ResourceInfo;
use pier_api::validation::{self, FieldError};
use pier_store::{KeyValue, Revision, Store, StoreError};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::alloc::{Allocators, Holdings};
use crate::error::{ApiError, ApiResult};

/// Where an object of `r` named `name` in `namespace` is stored.
pub fn object_key(r: &ResourceInfo, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if r.namespaced => format!("{}{ns}/{name}", collection_prefix(r, None)),
        _ => format!("{}{name}", collection_prefix(r, None)),
    }
}

/// The prefix under which every object of `r` (in `namespace`, if given) is stored.
pub fn collection_prefix(r: &ResourceInfo, namespace: Option<&str>) -> String {
    let group = if r.group.is_empty() { "core" } else { r.group };
    match namespace {
        Some(ns) if r.namespaced => format!("/registry/{group}/{}/{ns}/", r.plural),
        _ => format!("/registry/{group}/{}/", r.plural),
    }
}

/// Seconds-precision RFC 3339, as Kubernetes writes `metav1.Time`.
pub fn format_time(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second()).unwrap_or(t).to_string()
}

/// Decodes a stored value and stamps its `resourceVersion` (never stored inside the value,
/// as with etcd: the store's revision is the truth).
pub fn decode(kv: &KeyValue) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
    v["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(v)
}

fn encode(v: &Value) -> ApiResult<Vec<u8>> {
    let mut v = v.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&v).map_err(|e| ApiError::internal(e.to_string()))
}

pub fn name_of(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

/// Parses a client-supplied `resourceVersion`.
pub fn parse_rv(s: &str) -> ApiResult<Revision> {
    s.parse::<Revision>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

/// Options shared by the write paths.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub manager: String,
    pub dry_run: bool,
    pub now: Timestamp,
}

/// The generic registry. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    pub store: Arc<dyn Store>,
    pub alloc: Arc<Mutex<Allocators>>,
}

impl Registry {
    pub async fn get(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        match self.store.get(&object_key(r, ns, name)).await? {
            Some(kv) => decode(&kv),
            None => Err(ApiError::not_found(r, name)),
        }
    }

    pub async fn get_kv(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> ApiResult<(Value, Revision)> {
        match self.store.get(&object_key(r, ns, name)).await? {
            Some(kv) => Ok((decode(&kv)?, kv.mod_revision)),
            None => Err(ApiError::not_found(r, name)),
        }
    }

    /// Every object of `r` (in `ns`), at `revision` or the latest, and the revision read at.
    pub async fn list(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        revision: Option<Revision>,
    ) -> ApiResult<(Vec<Value>, Revision)> {
        let res = self.store.list(&collection_prefix(r, ns), revision).await?;
        let items = res.items.iter().map(decode).collect::<ApiResult<Vec<_>>>()?;
        Ok((items, res.revision))
    }

    /// Creates `obj` (already decoded and carrying `apiVersion`, `kind`, name and namespace).
    pub async fn create(&self, r: &ResourceInfo, mut obj: Value, opts: &WriteOptions) -> ApiResult<Value> {
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
        self.check_namespace_open(r, ns.as_deref(), name_of(&obj)).await?;
        prepare_create(r, &mut obj, opts.now);
        validation::default_object(r.kind, &mut obj);
        let name = name_of(&obj).to_string();
        let errs = validation::validate_create(r.kind, &obj);
        if !errs.is_empty() {
            return Err(ApiError::invalid(r, &name, &errs));
        }
        if !opts.manager.is_empty() {
            pier_api::patch::record_update(r.kind, None, &mut obj, &opts.manager, opts.now);
        }
        let key = object_key(r, ns.as_deref(), &name);
        if r.kind == "Service" {
            let mut alloc = self.alloc.lock().await;
            // Check existence first so a duplicate create reports AlreadyExists, not an
            // allocation conflict with itself.
            if self.store.get(&key).await?.is_some() {
                return Err(ApiError::already_exists(r, &name));
            }
            let taken = match alloc.admit_service(&mut obj, None) {
                Ok(t) => t,
                Err(errs) => {
                    drop(alloc);
                    self.record_allocation_failure(&obj, &errs).await;
                    return Err(ApiError::invalid(r, &name, &errs));
                }
            };
            if opts.dry_run {
                alloc.release(&taken);
                return Ok(obj);
            }
            let res = self.store.create(&key, encode(&obj)?).await;
            if res.is_err() {
                alloc.release(&taken);
            }
            return decode(&res.map_err(|e| ApiError::from_store(r, &name, e))?);
        }
        if opts.dry_run {
            if self.store.get(&key).await?.is_some() {
                return Err(ApiError::already_exists(r, &name));
            }
            return Ok(obj);
        }
        let kv = self.store.create(&key, encode(&obj)?).await.map_err(|e| ApiError::from_store(r, &name, e))?;
        decode(&kv)
    }

    async fn check_namespace_open(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> ApiResult<()> {
        let Some(ns) = ns.filter(|_| r.namespaced) else { return Ok(()) };
        let nsr = pier_api::resources::find("", "v1", "namespaces")
            .ok_or_else(|| ApiError::internal("no namespaces resource"))?;
        let nsobj = self.get(nsr, None, ns).await?;
        if !nsobj["metadata"]["deletionTimestamp"].is_null() {
            return Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                r.qualified_plural(),
                name
            )));
        }
        Ok(())
    }

    /// Writes `new` over the stored object whose `mod_revision` is `expected`, running the
    /// update admission of `r` (or of its status subresource). `new` must carry the name.
    pub async fn update(
        &self,
        r: &ResourceInfo,
        old: &Value,
        expected: Revision,
        mut new: Value,
        subresource: Option<&str>,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let name = name_of(old).to_string();
        let ns = old["metadata"]["namespace"].as_str().map(str::to_string);
        carry_over_metadata(&mut new, old);
        let has_status = r.subresource("status").is_some();
        match subresource {
            Some("status") => {
                // A status write changes the status (and, as upstream's status strategies
                // allow, annotations) but never the spec or the labels.
                let mut merged = new.clone();
                match old.get("spec") {
                    Some(spec) => merged["spec"] = spec.clone(),
                    None => {
                        if let Some(m) = merged.as_object_mut() {
                            m.remove("spec");
                        }
                    }
                }
                merged["metadata"]["labels"] = old["metadata"]["labels"].clone();
                if merged["metadata"]["labels"].is_null()
                    && let Some(m) = merged["metadata"].as_object_mut()
                {
                    m.remove("labels");
                }
                for (k, v) in old.as_object().into_iter().flatten() {
                    if !matches!(k.as_str(), "status" | "metadata" | "spec") {
                        merged[k.as_str()] = v.clone();
                    }
                }
                new = merged;
                validation::default_object(r.kind, &mut new);
                let errs = validation::validate_status(r.kind, &new, old);
                if !errs.is_empty() {
                    return Err(ApiError::invalid(r, &name, &errs));
                }
            }
            _ => {
                if has_status {
                    match old.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            if let Some(m) = new.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                validation::prepare_update(r.kind, &mut new, old);
                validation::default_object(r.kind, &mut new);
                let errs = validation::validate_update(r.kind, &new, old);
                if !errs.is_empty() {
                    return Err(ApiError::invalid(r, &name, &errs));
                }
                if new.get("spec") != old.get("spec")
                    || (r.kind == "EndpointSlice"
                        && (new.get("endpoints") != old.get("endpoints") || new.get("ports") != old.get("ports")))
                {
                    let g = old["metadata"]["generation"].as_i64().unwrap_or(0);
                    new["metadata"]["generation"] = json!(g + 1);
                }
            }
        }
        if !opts.manager.is_empty() {
            pier_api::patch::record_update(r.kind, Some(old), &mut new, &opts.manager, opts.now);
        }
        let key = object_key(r, ns.as_deref(), &name);
        if same_content(old, &new) {
            // A no-op write keeps the resourceVersion, as upstream does.
            return Ok(old.clone());
        }
        if r.kind == "Service" && subresource.is_none() {
            let mut alloc = self.alloc.lock().await;
            let taken = match alloc.admit_service(&mut new, Some(old)) {
                Ok(t) => t,
                Err(errs) => {
                    drop(alloc);
                    self.record_allocation_failure(old, &errs).await;
                    return Err(ApiError::invalid(r, &name, &errs));
                }
            };
            if opts.dry_run {
                alloc.release(&taken);
                return Ok(new);
            }
            match self.store.update(&key, encode(&new)?, expected).await {
                Ok(kv) => {
                    let old_h = Holdings::of(old);
                    let new_h = Holdings::of(&new);
                    let freed = Holdings {
                        ips: old_h.ips.difference(&new_h.ips).copied().collect(),
                        ports: old_h.ports.difference(&new_h.ports).copied().collect(),
                    };
                    alloc.release(&freed);
                    return decode(&kv);
                }
                Err(e) => {
                    alloc.release(&taken);
                    return Err(ApiError::from_store(r, &name, e));
                }
            }
        }
        if opts.dry_run {
            return Ok(new);
        }
        let kv =
            self.store.update(&key, encode(&new)?, expected).await.map_err(|e| ApiError::from_store(r, &name, e))?;
        let out = decode(&kv)?;
        // The last finalizer removed from an object being deleted completes the delete.
        if !out["metadata"]["deletionTimestamp"].is_null() && finalizers(&out).is_empty() {
            return self.remove(r, &out, kv.mod_revision).await;
        }
        Ok(out)
    }

    /// Writes `new` over the stored object whose `mod_revision` is `expected`, with no
    /// admission: for server-internal transitions that user validation forbids (a binding
    /// setting `spec.nodeName`).
    pub async fn write_unchecked(
        &self,
        r: &ResourceInfo,
        old: &Value,
        expected: Revision,
        new: Value,
    ) -> ApiResult<Value> {
        let name = name_of(old).to_string();
        let ns = old["metadata"]["namespace"].as_str().map(str::to_string);
        let key = object_key(r, ns.as_deref(), &name);
        let kv =
            self.store.update(&key, encode(&new)?, expected).await.map_err(|e| ApiError::from_store(r, &name, e))?;
        decode(&kv)
    }

    /// Deletes an object: marks it for deletion while finalizers remain, otherwise removes it
    /// and frees what it held. `options` is a DeleteOptions (`preconditions`,
    /// `propagationPolicy`); `Null` means background propagation without preconditions.
    /// Foreground propagation keeps the object, with the `foregroundDeletion` finalizer, until
    /// the garbage collector has removed its dependents.
    pub async fn delete(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        options: &Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        // A write that lands between the read and the delete is not the client's conflict
        // unless it asked for a resourceVersion: retry, as upstream's store does.
        let mut attempt = 0;
        loop {
            match self.delete_once(r, ns, name, options, opts).await {
                Err(e)
                    if e.code == 409
                        && e.message.contains("the object has been modified")
                        && options["preconditions"]["resourceVersion"].is_null()
                        && attempt < 8 =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn delete_once(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        options: &Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let preconditions = &options["preconditions"];
        if r.kind == "Namespace" && crate::bootstrap::PROTECTED_NAMESPACES.contains(&name) {
            return Err(ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
        let (obj, rev) = self.get_kv(r, ns, name).await?;
        if let Some(uid) = preconditions["uid"].as_str()
            && obj["metadata"]["uid"].as_str() != Some(uid)
        {
            return Err(ApiError::conflict_message(
                r,
                name,
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    r.qualified_plural(),
                    obj["metadata"]["uid"].as_str().unwrap_or("")
                ),
            ));
        }
        if let Some(want) = preconditions["resourceVersion"].as_str()
            && want != rev.to_string()
        {
            return Err(ApiError::conflict_message(
                r,
                name,
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the ResourceVersion in the precondition ({want}) does not match the ResourceVersion in record ({rev}). The object might have been modified",
                    r.qualified_plural()
                ),
            ));
        }
        if opts.dry_run {
            return Ok(obj);
        }
        if r.kind == "Pod"
            && let Some(grace) = pod_grace_period(&obj, options)
        {
            // Graceful pod deletion: the node agent stops the containers within the grace
            // period, then deletes the pod for good with a grace period of 0.
            let current = obj["metadata"]["deletionGracePeriodSeconds"].as_i64();
            if current.is_none_or(|c| grace < c) {
                let mut marked = obj.clone();
                if marked["metadata"]["deletionTimestamp"].is_null() {
                    marked["metadata"]["deletionTimestamp"] = json!(format_time(
                        opts.now.checked_add(jiff::SignedDuration::from_secs(grace)).unwrap_or(opts.now)
                    ));
                }
                marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                let kv = self
                    .store
                    .update(&object_key(r, ns, name), encode(&marked)?, rev)
                    .await
                    .map_err(|e| ApiError::from_store(r, name, e))?;
                return decode(&kv);
            }
            return Ok(obj);
        }
        let mut fins = finalizers(&obj);
        let mut marked = obj.clone();
        // Cascading policies become finalizers the garbage collector acts on, as upstream:
        // the owner stays (marked for deletion, so controllers stop adopting) until its
        // dependents are gone (Foreground) or released (Orphan).
        let policy_finalizer = match options["propagationPolicy"].as_str() {
            Some("Foreground") => Some(FOREGROUND),
            Some("Orphan") => Some(ORPHAN),
            _ => None,
        };
        if let Some(f) = policy_finalizer
            && !fins.iter().any(|x| x == f)
        {
            fins.push(f.into());
            marked["metadata"]["finalizers"] = json!(fins);
        }
        if r.kind == "Namespace" && !fins.iter().any(|f| f == "kubernetes") {
            // The namespace's own finalizer (spec.finalizers) keeps it until its content is gone.
            if obj["spec"]["finalizers"].as_array().is_some_and(|a| !a.is_empty()) {
                fins.push("kubernetes".into());
            }
        }
        if !fins.is_empty() {
            if !obj["metadata"]["deletionTimestamp"].is_null() && marked == obj {
                return Ok(obj);
            }
            if marked["metadata"]["deletionTimestamp"].is_null() {
                marked["metadata"]["deletionTimestamp"] = json!(format_time(opts.now));
                marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            }
            if r.kind == "Namespace" {
                marked["status"]["phase"] = json!("Terminating");
            }
            let kv = self
                .store
                .update(&object_key(r, ns, name), encode(&marked)?, rev)
                .await
                .map_err(|e| ApiError::from_store(r, name, e))?;
            return decode(&kv);
        }
        self.remove(r, &obj, rev).await
    }

    async fn remove(&self, r: &ResourceInfo, obj: &Value, rev: Revision) -> ApiResult<Value> {
        let name = name_of(obj).to_string();
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
        let key = object_key(r, ns.as_deref(), &name);
        if r.kind == "Service" {
            let mut alloc = self.alloc.lock().await;
            let kv = self.store.delete(&key, Some(rev)).await.map_err(|e| ApiError::from_store(r, &name, e))?;
            alloc.release(&Holdings::of(obj));
            return decode(&kv);
        }
        let kv = self.store.delete(&key, Some(rev)).await.map_err(|e| ApiError::from_store(r, &name, e))?;
        decode(&kv)
    }

    /// A Warning event on the Service, with the reasons upstream's allocator repair
    /// controllers use, so `kubectl get events` explains a refused IP or port.
    async fn record_allocation_failure(&self, svc: &Value, errs: &[FieldError]) {
        for e in errs {
            let detail = e.message();
            let (reason, component) = match (e.field.contains("clusterIP"), detail.contains("already allocated")) {
                (true, true) => ("ClusterIPAlreadyAllocated", "ipallocator-repair-controller"),
                (true, false) => ("ClusterIPOutOfRange", "ipallocator-repair-controller"),
                (false, true) => ("PortAlreadyAllocated", "portallocator-repair-controller"),
                (false, false) => ("PortOutOfRange", "portallocator-repair-controller"),
            };
            let involved = crate::events::Involved::of(svc, "Service", "v1");
            // Boxed: recording creates an Event through `create`, which can land here again.
            Box::pin(crate::events::record(self, &involved, "Warning", reason, &detail, component)).await;
        }
    }

    /// Rebuilds the allocators from the stored Services.
    pub async fn rebuild_allocations(&self) -> Result<usize, StoreError> {
        let Some(svc) = pier_api::resources::find("", "v1", "services") else { return Ok(0) };
        let list = self.store.list(&collection_prefix(svc, None), None).await?;
        let mut alloc = self.alloc.lock().await;
        for kv in &list.items {
            if let Ok(v) = serde_json::from_slice::<Value>(&kv.value) {
                alloc.mark(&Holdings::of(&v));
            }
        }
        Ok(list.items.len())
    }
}

/// The grace period a pod deletion gets, or `None` when the pod goes at once: pods that no
/// node runs (unscheduled, or finished) and deletes with `gracePeriodSeconds: 0`.
fn pod_grace_period(pod: &Value, options: &Value) -> Option<i64> {
    let on_node = pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
    let finished = matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    if !on_node || finished {
        return None;
    }
    let grace = options["gracePeriodSeconds"]
        .as_i64()
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    (grace > 0).then_some(grace)
}

/// The finalizer of foreground cascading deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of orphaning deletion.
pub const ORPHAN: &str = "orphan";

pub fn finalizers(v: &Value) -> Vec<String> {
    v["metadata"]["finalizers"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// True when two versions differ only in bookkeeping (resourceVersion, managedFields times).
fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        v
    };
    strip(a) == strip(b)
}

/// Server-owned metadata on create: uid, creationTimestamp, generation; status cleared for
/// kinds whose status is written through `/status`.
fn prepare_create(r: &ResourceInfo, obj: &mut Value, now: Timestamp) {
    let meta = &mut obj["metadata"];
    meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
    meta["creationTimestamp"] = json!(format_time(now));
    if let Some(m) = meta.as_object_mut() {
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        m.remove("selfLink");
    }
    if obj.get("spec").is_some()
        || matches!(r.kind, "Deployment" | "ReplicaSet" | "Service" | "Pod" | "Ingress" | "EndpointSlice")
    {
        obj["metadata"]["generation"] = json!(1);
    }
    if r.subresource("status").is_some()
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    if r.kind == "Pod" {
        obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
    }
}

/// Metadata the client cannot change on update.
fn carry_over_metadata(new: &mut Value, old: &Value) {
    for field in ["uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"] {
        match old["metadata"].get(field) {
            Some(v) => new["metadata"][field] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
    if new["metadata"]["managedFields"].is_null() {
        new["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
        if new["metadata"]["managedFields"].is_null()
            && let Some(m) = new["metadata"].as_object_mut()
        {
            m.remove("managedFields");
        }
    }
    for field in ["namespace", "name"] {
        if let Some(v) = old["metadata"].get(field) {
            new["metadata"][field] = v.clone();
        }
    }
}

/// An error for a field, for the messages built here rather than in the validation module.
pub fn field_invalid(field: &str, value: &str, detail: &str) -> FieldError {
    FieldError::invalid(field, value, detail)
}
