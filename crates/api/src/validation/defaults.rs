//! [`default_object`]: upstream's API defaulting (`SetDefaults_*` of core/v1, apps/v1,
//! networking/v1 and discovery/v1, applied when a request body is decoded) plus the few
//! strategy steps that fill fields before validation on create (namespace phase and finalizer,
//! service clusterIPs and IP families).

use serde_json::{Value, json};

use super::value;
use super::{apps, networking, others, pod, service};

/// Applies upstream's defaults for `kind` in place. Unknown kinds and non-object values are left
/// alone. Idempotent.
pub fn default_object(kind: &str, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match kind {
        "Pod" => pod::apply_pod_defaults(obj),
        "Service" => service::apply_defaults(obj),
        "Endpoints" => endpoints(obj),
        "Namespace" => others::apply_namespace_defaults(obj),
        "Node" => others::apply_node_defaults(obj),
        "Secret" => others::apply_secret_defaults(obj),
        "Deployment" => apps::apply_deployment_defaults(obj),
        "ReplicaSet" => apps::apply_replica_set_defaults(obj),
        "EndpointSlice" => endpoint_slice(obj),
        "IngressClass" => networking::apply_ingress_class_defaults(obj),
        _ => {}
    }
}

/// SetDefaults_Endpoints: ports are TCP unless stated.
fn endpoints(obj: &mut Value) {
    let Some(subsets) = obj.get_mut("subsets").and_then(Value::as_array_mut) else { return };
    for ss in subsets.iter_mut() {
        let Some(ports) = ss.get_mut("ports").and_then(Value::as_array_mut) else { continue };
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            if value::empty_str(p, "protocol") {
                p.insert("protocol".into(), json!("TCP"));
            }
        }
    }
}

/// SetDefaults_EndpointPort (discovery/v1): an unnamed TCP port unless stated.
fn endpoint_slice(obj: &mut Value) {
    let Some(ports) = obj.get_mut("ports").and_then(Value::as_array_mut) else { return };
    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
        if value::missing(p, "name") {
            p.insert("name".into(), json!(""));
        }
        if value::missing(p, "protocol") {
            p.insert("protocol".into(), json!("TCP"));
        }
    }
}
