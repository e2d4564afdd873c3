//! Recording core/v1 Events, so `kubectl describe` and `kubectl get events` show why the
//! server refused or repaired something. Recording is best effort: a failure to record never
//! fails the request that caused it.

use jiff::Timestamp;
use pier_api::resources;
use serde_json::{Value, json};

use crate::registry::{Registry, WriteOptions, format_time};

/// The object an event is about.
#[derive(Debug, Clone)]
pub struct Involved<'a> {
    pub kind: &'a str,
    pub api_version: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: Option<&'a str>,
}

impl<'a> Involved<'a> {
    /// The involved object for a stored or attempted object.
    pub fn of(obj: &'a Value, kind: &'a str, api_version: &'a str) -> Involved<'a> {
        Involved {
            kind,
            api_version,
            namespace: obj["metadata"]["namespace"].as_str().unwrap_or("default"),
            name: obj["metadata"]["name"].as_str().unwrap_or(""),
            uid: obj["metadata"]["uid"].as_str(),
        }
    }
}

/// Records an event of `type_` (`Normal` or `Warning`).
pub async fn record(
    registry: &Registry,
    involved: &Involved<'_>,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let Some(r) = resources::find("", "v1", "events") else { return };
    let now = Timestamp::now();
    let suffix = format!("{:x}", now.as_nanosecond());
    let mut involved_object = json!({
        "kind": involved.kind,
        "namespace": involved.namespace,
        "name": involved.name,
        "apiVersion": involved.api_version,
    });
    if let Some(uid) = involved.uid {
        involved_object["uid"] = json!(uid);
    }
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{}.{suffix}", involved.name), "namespace": involved.namespace},
        "involvedObject": involved_object,
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "firstTimestamp": format_time(now),
        "lastTimestamp": format_time(now),
        "count": 1,
        "type": type_,
        "reportingComponent": component,
        "reportingInstance": "",
    });
    let opts = WriteOptions { manager: component.to_string(), dry_run: false, now };
    if let Err(e) = registry.create(r, event, &opts).await {
        tracing::debug!(reason, error = %e.message, "could not record an event");
    }
}
