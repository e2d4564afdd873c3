//! API errors and their wire form: every failure becomes a `meta/v1 Status` with upstream's
//! reason, code and message shape, so kubectl prints `Error from server (NotFound): ...`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pier_api::resources::ResourceInfo;
use pier_api::validation::FieldError;
use pier_store::StoreError;
use serde_json::{Value, json};

/// A failed API request. `reason` is a Kubernetes `StatusReason`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(r: &ResourceInfo, name: &str) -> Self {
        ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", r.qualified_plural()))
            .with_details(json!({"name": name, "group": r.group, "kind": r.plural}))
    }

    pub fn already_exists(r: &ResourceInfo, name: &str) -> Self {
        ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", r.qualified_plural()))
            .with_details(json!({"name": name, "group": r.group, "kind": r.plural}))
    }

    pub fn conflict(r: &ResourceInfo, name: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                r.qualified_plural()
            ),
        )
        .with_details(json!({"name": name, "group": r.group, "kind": r.plural}))
    }

    pub fn conflict_message(r: &ResourceInfo, name: &str, message: String) -> Self {
        ApiError::new(409, "Conflict", message).with_details(json!({"name": name, "group": r.group, "kind": r.plural}))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        ApiError::new(415, "UnsupportedMediaType", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(403, "Forbidden", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", format!("Internal error occurred: {}", message.into()))
    }

    pub fn expired(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    pub fn not_implemented(message: impl Into<String>) -> Self {
        ApiError::new(501, "NotImplemented", message)
    }

    /// `404` for a URL that names no resource (upstream's generic "not found" for unknown paths).
    pub fn no_route() -> Self {
        ApiError::new(404, "NotFound", "the server could not find the requested resource").with_details(json!({}))
    }

    /// `422 Invalid` with one cause per field error, shaped like upstream's `NewInvalid`.
    pub fn invalid(r: &ResourceInfo, name: &str, errs: &[FieldError]) -> Self {
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.cause_message(), "field": e.field}))
            .collect();
        ApiError::new(422, "Invalid", pier_api::validation::invalid_message(r.kind, name, errs))
            .with_details(json!({"name": name, "group": r.group, "kind": r.kind, "causes": causes}))
    }

    /// The `meta/v1 Status` body.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    /// Maps a store failure on the object `name` of resource `r`.
    pub fn from_store(r: &ResourceInfo, name: &str, e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists { .. } => ApiError::already_exists(r, name),
            StoreError::NotFound { .. } => ApiError::not_found(r, name),
            StoreError::Conflict { .. } => ApiError::conflict(r, name),
            other => ApiError::from(other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted { requested, compacted } => {
                ApiError::expired(format!("too old resource version: {requested} ({compacted})"))
            }
            StoreError::FutureRevision { requested, current } => {
                ApiError::new(504, "Timeout", format!("Too large resource version: {requested}, current: {current}"))
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.status()).unwrap_or_default();
        (code, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}
