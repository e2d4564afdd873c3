//! Patch and apply: the four PATCH content types kubectl sends, applied to a live object as
//! pure functions over `serde_json::Value`, plus the field-ownership bookkeeping of
//! `metadata.managedFields` and the `fieldValidation=Strict` checks.
//!
//! - [`json_patch()`] (RFC 6902) and [`merge_patch`] (RFC 7386) wrap the `json-patch` crate and
//!   give its failures upstream's wording.
//! - [`strategic_merge_patch`] is Kubernetes' strategic merge patch with the merge keys and
//!   strategies of each kind (the `schema` module, from the Go struct tags).
//! - [`server_side_apply`] merges an apply configuration with structured-merge-diff's rules and
//!   keeps `managedFields`; [`record_update`] records the owner of a non-apply write.
//! - [`unknown_fields`] and [`duplicate_fields`] find what strict field validation rejects.
//!
//! Nothing here does IO or reads the clock: the caller passes `now`.

mod apply;
mod fieldpath;
mod schema;
mod strategic;
mod strict;

use serde::Deserialize;
use serde_json::Value;

pub use apply::{ApplyError, Conflict, record_update, server_side_apply};
pub use strict::{duplicate_fields, strict_decoding_message, unknown_fields};

/// The annotation client-side `kubectl apply` keeps its last applied manifest in.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The PATCH body formats, by `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// The patch type of a `Content-Type` header value; parameters such as `; charset=utf-8`
    /// are ignored.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" => Some(Self::Apply),
            _ => None,
        }
    }

    /// The content type, as the server lists it in `Accept-Patch` and discovery.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json-patch+json",
            Self::Merge => "application/merge-patch+json",
            Self::Strategic => "application/strategic-merge-patch+json",
            Self::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Why a patch was not applied. The message is upstream's; the variant picks the status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The body is not a valid patch of its type: `400 BadRequest`.
    #[error("{0}")]
    BadRequest(String),
    /// The patch is well formed but does not apply to this object (a failed `test`, a missing
    /// path, a list item without its merge key): `422`.
    #[error("{0}")]
    Unprocessable(String),
}

impl PatchError {
    /// The HTTP status upstream answers with.
    pub fn code(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unprocessable(_) => 422,
        }
    }
}

/// Applies an RFC 6902 JSON patch to `original`.
pub fn json_patch(original: &Value, patch_body: &[u8]) -> Result<Value, PatchError> {
    let patch: json_patch::Patch =
        serde_json::from_slice(patch_body).map_err(|e| PatchError::BadRequest(e.to_string()))?;
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &patch).map_err(|e| {
        let op = patch.0.get(e.operation);
        PatchError::Unprocessable(json_patch_message(op, &e))
    })?;
    Ok(doc)
}

/// Words a failed operation the way evanphx/json-patch (used by the apiserver) does.
fn json_patch_message(op: Option<&json_patch::PatchOperation>, e: &json_patch::PatchError) -> String {
    use json_patch::{PatchErrorKind, PatchOperation};
    let path = e.path.to_string();
    match (op, &e.kind) {
        (Some(PatchOperation::Test(_)), PatchErrorKind::TestFailed | PatchErrorKind::InvalidPointer) => {
            format!("testing value {path} failed: test failed")
        }
        (Some(PatchOperation::Add(_)), _) => {
            format!("add operation does not apply: doc is missing path: {path:?}: missing value")
        }
        (Some(PatchOperation::Remove(_)), _) => {
            format!("remove operation does not apply: doc is missing path: {path:?}: missing value")
        }
        (Some(PatchOperation::Replace(_)), _) => {
            format!("replace operation does not apply: doc is missing key: {path}: missing value")
        }
        (Some(PatchOperation::Move(m)), PatchErrorKind::InvalidFromPointer) => {
            format!("move operation does not apply: doc is missing from path: {}: missing value", m.from)
        }
        (Some(PatchOperation::Copy(c)), PatchErrorKind::InvalidFromPointer) => {
            format!("copy operation does not apply: doc is missing from path: {}: missing value", c.from)
        }
        (Some(PatchOperation::Move(_)), PatchErrorKind::CannotMoveInsideItself) => {
            format!("move operation does not apply: cannot move {path} into itself")
        }
        (Some(PatchOperation::Move(_) | PatchOperation::Copy(_)), _) => {
            format!("doc is missing path: {path:?}: missing value")
        }
        _ => e.to_string(),
    }
}

/// Applies an RFC 7386 JSON merge patch to `original`.
pub fn merge_patch(original: &Value, patch_body: &[u8]) -> Result<Value, PatchError> {
    // evanphx/json-patch's ErrBadJSONPatch, which the apiserver returns as a 400.
    let patch: Value =
        serde_json::from_slice(patch_body).map_err(|_| PatchError::BadRequest("Invalid JSON Patch".to_string()))?;
    let mut doc = original.clone();
    json_patch::merge(&mut doc, &patch);
    Ok(doc)
}

/// Applies a strategic merge patch to `original` (the live object) with the list merge keys
/// and strategies of `kind`.
pub fn strategic_merge_patch(kind: &str, original: &Value, patch_body: &[u8]) -> Result<Value, PatchError> {
    strategic::apply(schema::root(kind), original, patch_body)
}

/// Parses an `application/apply-patch+yaml` body: one YAML (or JSON) document holding an
/// object.
pub fn parse_apply_body(body: &[u8]) -> Result<Value, PatchError> {
    let bad = |detail: String| PatchError::BadRequest(format!("error decoding YAML: {detail}"));
    let mut documents = serde_norway::Deserializer::from_slice(body);
    let Some(first) = documents.next() else {
        return Err(bad("the body is empty".to_string()));
    };
    let value = Value::deserialize(first).map_err(|e| bad(e.to_string()))?;
    if documents.next().is_some() {
        return Err(bad("a server-side apply body holds exactly one YAML document".to_string()));
    }
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Err(bad("the body is empty".to_string())),
        other => Err(bad(format!(
            "error unmarshaling JSON: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_kind(&other)
        ))),
    }
}

/// The JSON type name Go's decoder uses in its messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests;
