//! Admission logic: upstream Kubernetes' API defaults, validation and the service REST
//! normalisation, re-expressed over `serde_json::Value` so that kubectl sees exactly the
//! messages a v1.32 API server produces.
//!
//! Objects reaching this module already decoded with [`crate::resources::roundtrip`], so every
//! field has the right JSON type; the validators still read them defensively (a wrong type reads
//! as "absent") and never panic. They work on the JSON rather than the `k8s-openapi` structs
//! because upstream's rules often depend on the difference between an absent field and an empty
//! one (`selector: Required value` versus `empty selector is invalid`), which the typed structs
//! erase for required fields.
//!
//! Messages follow `k8s.io/apimachinery/pkg/util/validation/field` as of v1.32: bad values are
//! rendered the way Go's `fmt` renders them (`%q` for strings, `%#v` for composite values such as
//! `[]string{"a"}` or `map[string]string{"app":"x"}`), and the aggregate message de-duplicates and
//! brackets the same way `NewInvalid` does.
//!
//! What needs cluster state (IP and port allocation, "already allocated", the service CIDR range
//! messages) is the server's job; the IP-family defaulting that depends on the cluster's families
//! is exposed as [`default_service_ip_families`] and applied for an IPv4 single-stack cluster by
//! [`default_object`].

mod apps;
mod defaults;
mod meta;
mod names;
mod net;
mod networking;
mod others;
mod pod;
mod render;
mod service;
mod value;

#[cfg(test)]
mod tests;

use serde_json::Value;

pub use defaults::default_object;
pub use names::{dns1035_label, dns1123_label, dns1123_subdomain, iana_svc_name, label_value, qualified_name};
pub use service::{CLUSTER_IP_FAMILIES, IpFamily, default_service_ip_families};

/// The kind of a field error; the same set as upstream's `field.ErrorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorType {
    NotFound,
    Required,
    Duplicate,
    Invalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    Internal,
    TypeInvalid,
}

impl ErrorType {
    /// The words upstream prints for the type (`ErrorType.String()`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::NotFound => "Not found",
            ErrorType::Required => "Required value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::Internal => "Internal error",
            ErrorType::TypeInvalid => "Invalid value",
        }
    }

    /// The machine-readable value, used as `details.causes[].reason`.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::NotFound => "FieldValueNotFound",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::Internal => "InternalError",
            ErrorType::TypeInvalid => "FieldValueTypeInvalid",
        }
    }
}

/// One field-level validation error, as upstream's `field.Error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub error_type: ErrorType,
    /// The field path, `spec.ports[0].port`; may be empty (a whole-object error).
    pub field: String,
    /// The offending value already rendered as upstream renders it (ints bare, strings quoted,
    /// composites in Go syntax); `None` when upstream prints no value.
    pub bad_value: Option<String>,
    pub detail: String,
}

impl FieldError {
    fn new(
        error_type: ErrorType,
        field: impl Into<String>,
        bad_value: Option<String>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError { error_type, field: field.into(), bad_value, detail: detail.into() }
    }

    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Required, field, None, detail)
    }

    /// `value` must already be rendered ([`go_quote`] for strings, `to_string()` for numbers).
    pub fn invalid(field: impl Into<String>, value: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Invalid, field, Some(value.into()), detail)
    }

    pub fn duplicate(field: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(ErrorType::Duplicate, field, Some(value.into()), "")
    }

    pub fn not_found(field: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(ErrorType::NotFound, field, Some(value.into()), "")
    }

    /// `supported` are listed quoted, in the order given (upstream sorts most sets; callers pass
    /// them in upstream's order).
    pub fn not_supported(field: impl Into<String>, value: impl Into<String>, supported: &[&str]) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(ErrorType::NotSupported, field, Some(value.into()), detail)
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Forbidden, field, None, detail)
    }

    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> Self {
        Self::new(ErrorType::TooLong, field, None, format!("must have at most {max_bytes} bytes"))
    }

    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        Self::new(ErrorType::TooMany, field, Some(actual.to_string()), format!("must have at most {max} items"))
    }

    pub fn internal(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Internal, field, None, detail)
    }

    pub fn type_invalid(field: impl Into<String>, value: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::TypeInvalid, field, Some(value.into()), detail)
    }

    /// `<field>: <body>`, exactly `field.Error.Error()`.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.cause_message())
    }

    /// The StatusCause reason (`FieldValueInvalid`, ...).
    pub fn reason(&self) -> &'static str {
        self.error_type.reason()
    }

    /// The message without the field prefix (`field.Error.ErrorBody()`), which upstream puts in
    /// `details.causes[].message`.
    pub fn cause_message(&self) -> String {
        // Required, Forbidden, TooLong and Internal never print the value upstream.
        let mut s = match (self.error_type, &self.bad_value) {
            (ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong | ErrorType::Internal, _) | (_, None) => {
                self.error_type.as_str().to_string()
            }
            (t, Some(v)) => format!("{}: {}", t.as_str(), v),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

/// Go's `strconv.Quote`, the rendering of string values in messages.
pub fn go_quote(s: &str) -> String {
    render::quote(s)
}

/// `Service "x" is invalid: <one>` or `... is invalid: [<a>, <b>]`, upstream's `NewInvalid`
/// message: identical messages are reported once, brackets only when more than one remains.
/// `kind` is the bare kind (`Deployment`); the group is appended as upstream's
/// `GroupKind.String()` does (`Deployment.apps`) unless `kind` already contains a dot.
pub fn invalid_message(kind: &str, name: &str, errs: &[FieldError]) -> String {
    let qualified = qualified_kind(kind);
    let mut seen: Vec<String> = Vec::new();
    for e in errs {
        let m = e.message();
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    let quoted_name = go_quote(name);
    match seen.len() {
        0 => format!("{qualified} {quoted_name} is invalid"),
        1 => format!("{qualified} {quoted_name} is invalid: {}", seen[0]),
        _ => format!("{qualified} {quoted_name} is invalid: [{}]", seen.join(", ")),
    }
}

fn qualified_kind(kind: &str) -> String {
    if kind.contains('.') {
        return kind.to_string();
    }
    match crate::resources::RESOURCES.iter().find(|r| r.kind == kind) {
        Some(r) if !r.group.is_empty() => format!("{kind}.{}", r.group),
        _ => kind.to_string(),
    }
}

/// Validation of a new object (metadata and spec). Cluster-state checks (IP and port allocation)
/// are left to the server. Expects [`default_object`] to have run.
pub fn validate_create(kind: &str, obj: &Value) -> Vec<FieldError> {
    match kind {
        "Pod" => pod::validate_pod_create(obj),
        "Service" => service::validate_create(obj),
        "Endpoints" => others::validate_endpoints(obj),
        "Namespace" => others::validate_namespace(obj),
        "Node" => others::validate_node(obj),
        "Event" => others::validate_event(obj),
        "ConfigMap" => others::validate_config_map(obj),
        "Secret" => others::validate_secret(obj),
        "ServiceAccount" => others::validate_service_account(obj),
        "Deployment" => apps::validate_deployment(obj),
        "ReplicaSet" => apps::validate_replica_set(obj),
        "EndpointSlice" => others::validate_endpoint_slice(obj),
        "Ingress" => networking::validate_ingress_create(obj),
        "IngressClass" => networking::validate_ingress_class(obj),
        _ => meta::validate_object_meta(obj.get("metadata"), true, names::NameKind::Subdomain, "metadata"),
    }
}

/// Validation of an update, including the immutability rules. Expects [`default_object`] and
/// [`prepare_update`] to have run on `new`.
pub fn validate_update(kind: &str, new: &Value, old: &Value) -> Vec<FieldError> {
    match kind {
        "Pod" => pod::validate_pod_update(new, old),
        "Service" => service::validate_update(new, old),
        "Endpoints" => others::validate_endpoints_update(new, old),
        "Namespace" => others::validate_namespace_update(new, old),
        "Node" => others::validate_node_update(new, old),
        "Event" => others::validate_event_update(new, old),
        "ConfigMap" => others::validate_config_map_update(new, old),
        "Secret" => others::validate_secret_update(new, old),
        "ServiceAccount" => others::validate_service_account_update(new, old),
        "Deployment" => apps::validate_deployment_update(new, old),
        "ReplicaSet" => apps::validate_replica_set_update(new, old),
        "EndpointSlice" => others::validate_endpoint_slice_update(new, old),
        "Ingress" => networking::validate_ingress_update(new, old),
        "IngressClass" => networking::validate_ingress_class_update(new, old),
        _ => meta::validate_object_meta_update(new.get("metadata"), old.get("metadata"), "metadata"),
    }
}

/// Validation of a `/status` write.
pub fn validate_status(kind: &str, new: &Value, old: &Value) -> Vec<FieldError> {
    match kind {
        "Service" => service::validate_status(new, old),
        "Ingress" => networking::validate_ingress_status(new, old),
        "Pod" => pod::validate_pod_status(new, old),
        "Deployment" => apps::validate_deployment_status(new, old),
        "ReplicaSet" => apps::validate_replica_set_status(new, old),
        "Namespace" => others::validate_namespace_status(new, old),
        _ => meta::validate_object_meta_update(new.get("metadata"), old.get("metadata"), "metadata"),
    }
}

/// Server-side normalisation of an update before validation: for Services what upstream's
/// service REST and strategy do (carry allocated clusterIP(s), nodePorts and
/// healthCheckNodePort over from `old` when `new` omits them, keep `clusterIP`/`clusterIPs` in
/// sync, inherit the IP-family fields, and clear fields the new type no longer uses); for
/// Namespaces the strategy's "finalizers and status are not changed by a spec update".
pub fn prepare_update(kind: &str, new: &mut Value, old: &Value) {
    match kind {
        "Service" => service::prepare_update(new, old),
        "Namespace" => others::prepare_namespace_update(new, old),
        _ => {}
    }
}

/// Joins a field path and a child name the way `field.Path.Child` renders.
fn pc(path: &str, child: &str) -> String {
    if path.is_empty() { child.to_string() } else { format!("{path}.{child}") }
}

/// `field.Path.Index`.
fn pi(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// `field.Path.Key` (the key is not quoted upstream).
fn pk(path: &str, key: &str) -> String {
    format!("{path}[{key}]")
}
