//! Writes as data: what a pure reconcile asks the API server to do ([`Write`]), a one-line
//! rendering for snapshot tests ([`Write::summary`]), and the one place that turns a write into
//! a request with a [`kube::Client`] ([`apply`]).
//!
//! Objects travel as JSON (`serde_json::Value`) built from `k8s-openapi` types, so a write can
//! be compared in a test without a server and sent without knowing its type.

use std::fmt;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};

/// The kinds the controllers write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    Service,
    Endpoints,
    EndpointSlice,
    ReplicaSet,
    Deployment,
    Node,
    Event,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Deployment => "Deployment",
            Kind::Node => "Node",
            Kind::Event => "Event",
        }
    }

    fn api_resource(self) -> ApiResource {
        match self {
            Kind::Pod => ApiResource::erase::<Pod>(&()),
            Kind::Service => ApiResource::erase::<Service>(&()),
            Kind::Endpoints => ApiResource::erase::<Endpoints>(&()),
            Kind::EndpointSlice => ApiResource::erase::<EndpointSlice>(&()),
            Kind::ReplicaSet => ApiResource::erase::<ReplicaSet>(&()),
            Kind::Deployment => ApiResource::erase::<Deployment>(&()),
            Kind::Node => ApiResource::erase::<Node>(&()),
            Kind::Event => ApiResource::erase::<Event>(&()),
        }
    }

    fn namespaced(self) -> bool {
        self != Kind::Node
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request a reconcile wants made. Objects are complete JSON objects with `apiVersion`,
/// `kind` and `metadata` (a `Replace*` carries the `resourceVersion` it was computed from, so a
/// concurrent change makes it fail with a conflict and the key is reconciled again).
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// POST. `metadata.generateName` may stand in for the name. When `created_event` is set,
    /// an Event is recorded after the create succeeds; `{name}` in its message is replaced by
    /// the name the server chose.
    Create { kind: Kind, namespace: String, object: Value, created_event: Option<Box<Value>> },
    /// PUT of the whole object.
    Replace { kind: Kind, namespace: String, name: String, object: Value },
    /// PUT of the `status` subresource.
    ReplaceStatus { kind: Kind, namespace: String, name: String, object: Value },
    /// JSON merge patch of the object.
    Patch { kind: Kind, namespace: String, name: String, patch: Value },
    /// DELETE, with a UID precondition when `uid` is set. A missing object is success.
    Delete { kind: Kind, namespace: String, name: String, uid: Option<String> },
    /// Assign a pod to a node: the `pods/binding` subresource when the server has it, else a
    /// merge patch of `spec.nodeName` (see [`crate::scheduler`]).
    Bind { namespace: String, name: String, uid: Option<String>, node: String },
}

impl Write {
    /// A one-line description for tests and logs: `create EndpointSlice default/kubia-`.
    pub fn summary(&self) -> String {
        match self {
            Write::Create { kind, namespace, object, .. } => {
                let name = object["metadata"]["name"]
                    .as_str()
                    .or_else(|| object["metadata"]["generateName"].as_str())
                    .unwrap_or_default();
                format!("create {kind} {}", qualified(namespace, name))
            }
            Write::Replace { kind, namespace, name, .. } => format!("update {kind} {}", qualified(namespace, name)),
            Write::ReplaceStatus { kind, namespace, name, .. } => {
                format!("update {kind} {}/status", qualified(namespace, name))
            }
            Write::Patch { kind, namespace, name, patch } => {
                format!("patch {kind} {} {patch}", qualified(namespace, name))
            }
            Write::Delete { kind, namespace, name, .. } => format!("delete {kind} {}", qualified(namespace, name)),
            Write::Bind { namespace, name, node, .. } => format!("bind Pod {namespace}/{name} to {node}"),
        }
    }

    /// The object a create, update or status update carries.
    pub fn object(&self) -> Option<&Value> {
        match self {
            Write::Create { object, .. } | Write::Replace { object, .. } | Write::ReplaceStatus { object, .. } => {
                Some(object)
            }
            _ => None,
        }
    }

    /// The kind of object written.
    pub fn kind(&self) -> Kind {
        match self {
            Write::Create { kind, .. }
            | Write::Replace { kind, .. }
            | Write::ReplaceStatus { kind, .. }
            | Write::Patch { kind, .. }
            | Write::Delete { kind, .. } => *kind,
            Write::Bind { .. } => Kind::Pod,
        }
    }
}

fn qualified(namespace: &str, name: &str) -> String {
    if namespace.is_empty() { name.to_string() } else { format!("{namespace}/{name}") }
}

/// What the server answered to a write.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// The resourceVersion of the object after the write (for deletes, of the deletion), when
    /// the server returned one. Watch caches that reached it reflect the write.
    pub resource_version: Option<u64>,
    /// The name of the object (the generated one for `generateName` creates).
    pub name: Option<String>,
}

/// Why a write failed, with the server's `Status` message when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{summary}: {message}")]
pub struct WriteError {
    pub summary: String,
    /// The API server's message (`pods "x" already exists`), or the client error.
    pub message: String,
    /// HTTP status code of an API error, 0 for client-side failures.
    pub code: u16,
    pub reason: String,
}

impl WriteError {
    fn new(w: &Write, e: kube::Error) -> WriteError {
        let (message, code, reason) = match &e {
            kube::Error::Api(s) => (s.message.clone(), s.code, s.reason.clone()),
            other => (other.to_string(), 0, String::new()),
        };
        WriteError { summary: w.summary(), message, code, reason }
    }

    pub fn is_conflict(&self) -> bool {
        self.code == 409
    }
}

fn api(client: &kube::Client, kind: Kind, namespace: &str) -> Api<DynamicObject> {
    let ar = kind.api_resource();
    if kind.namespaced() {
        Api::namespaced_with(client.clone(), namespace, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    }
}

fn dynamic(v: &Value) -> Result<DynamicObject, kube::Error> {
    serde_json::from_value(v.clone()).map_err(kube::Error::SerdeError)
}

fn applied(obj: &DynamicObject) -> Applied {
    Applied {
        resource_version: obj.metadata.resource_version.as_deref().and_then(|rv| rv.parse().ok()),
        name: obj.metadata.name.clone(),
    }
}

/// Sends one write. Deleting an object that is already gone succeeds.
pub async fn apply(client: &kube::Client, w: &Write) -> Result<Applied, WriteError> {
    apply_inner(client, w).await.map_err(|e| WriteError::new(w, e))
}

async fn apply_inner(client: &kube::Client, w: &Write) -> Result<Applied, kube::Error> {
    let pp = PostParams::default();
    match w {
        Write::Create { kind: Kind::Event, namespace, object, .. } => {
            record_event(client, namespace, object).await;
            Ok(Applied::default())
        }
        Write::Create { kind, namespace, object, created_event } => {
            let created = api(client, *kind, namespace).create(&pp, &dynamic(object)?).await?;
            let out = applied(&created);
            if let Some(event) = created_event {
                let mut event = (**event).clone();
                let name = out.name.clone().unwrap_or_default();
                if let Some(m) = event["message"].as_str() {
                    event["message"] = json!(m.replace("{name}", &name));
                }
                record_event(client, namespace, &event).await;
            }
            Ok(out)
        }
        Write::Replace { kind, namespace, name, object } => {
            Ok(applied(&api(client, *kind, namespace).replace(name, &pp, &dynamic(object)?).await?))
        }
        Write::ReplaceStatus { kind, namespace, name, object } => {
            Ok(applied(&api(client, *kind, namespace).replace_status(name, &pp, &dynamic(object)?).await?))
        }
        Write::Patch { kind, namespace, name, patch } => Ok(applied(
            &api(client, *kind, namespace).patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?,
        )),
        Write::Delete { kind, namespace, name, uid } => {
            let dp = DeleteParams {
                preconditions: uid.as_ref().map(|u| Preconditions { uid: Some(u.clone()), resource_version: None }),
                ..DeleteParams::default()
            };
            match api(client, *kind, namespace).delete(name, &dp).await {
                Ok(either) => Ok(either.map_left(|o| applied(&o)).left_or_else(|_| Applied::default())),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(Applied::default()),
                Err(e) => Err(e),
            }
        }
        Write::Bind { namespace, name, uid, node } => bind(client, namespace, name, uid.as_deref(), node).await,
    }
}

/// Whether the object `kind namespace/name` with `uid` still exists on the server (a read that
/// bypasses the watch caches). Used before creating objects owned by it: a create for an owner
/// the cache still shows but the server has already deleted would leave an orphan behind.
pub async fn owner_exists(
    client: &kube::Client,
    kind: Kind,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<bool, WriteError> {
    match api(client, kind, namespace).get_opt(name).await {
        Ok(found) => Ok(found.is_some_and(|o| o.metadata.uid.as_deref() == Some(uid))),
        Err(e) => Err(WriteError {
            summary: format!("get {kind} {}", qualified(namespace, name)),
            message: e.to_string(),
            code: 0,
            reason: String::new(),
        }),
    }
}

/// `pods/binding`, falling back to a merge patch of `spec.nodeName` when the server has no
/// binding subresource (404 or 405 for the subresource route).
async fn bind(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
    node: &str,
) -> Result<Applied, kube::Error> {
    let pods = api(client, Kind::Pod, namespace);
    let mut meta = json!({"name": name, "namespace": namespace});
    if let Some(uid) = uid {
        meta["uid"] = json!(uid);
    }
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding", "metadata": meta,
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    match pods.create_subresource::<Value, Value>("binding", name, &PostParams::default(), &binding).await {
        Ok(_) => {
            // The binding's answer is a Status; read the pod back for its resourceVersion.
            let pod = pods.get(name).await?;
            Ok(applied(&pod))
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => {
            tracing::debug!(pod = %name, "no pods/binding subresource; patching spec.nodeName");
            let patch = json!({"spec": {"nodeName": node}});
            let pod = pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            Ok(applied(&pod))
        }
        Err(e) => Err(e),
    }
}

/// Best-effort Event recording: a failure to record never fails the reconcile. The name is
/// made unique here (`<object>.<hex nanoseconds>` of the moment it is sent, as upstream's
/// recorder does), so events computed at the same instant do not collide.
async fn record_event(client: &kube::Client, namespace: &str, event: &Value) {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut event = event.clone();
    let object = event["involvedObject"]["name"].as_str().unwrap_or("event").to_string();
    let nanos = jiff::Timestamp::now().as_nanosecond() as u128;
    let seq = u128::from(SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1000);
    event["metadata"]["name"] = json!(format!("{object}.{:x}", nanos + seq));
    let result = match dynamic(&event) {
        Ok(obj) => api(client, Kind::Event, namespace).create(&PostParams::default(), &obj).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "event not recorded");
    }
}
