//! The HTTP surface: one entry point that authenticates, routes by URL (upstream's
//! `RequestInfo` rules, see [`crate::request`]) and turns each verb into registry calls, with
//! upstream's body decoding, field validation, content negotiation and status codes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use pier_api::patch::{self, PatchType};
use pier_api::resources::{self, ResourceInfo};
use pier_api::selector::{self, FieldSelector, LabelSelector};
use pier_api::table::{self, IncludeObject};
use serde_json::{Value, json};

use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::registry::{Registry, WriteOptions, collection_prefix, decode, name_of, parse_rv};
use crate::request::{self, Output, Query, ResourceRequest, Route};
use pier_store::{KeyValue, Revision};

/// Upstream's request body limit (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What every request handler shares.
pub struct AppState {
    pub registry: Registry,
    /// Bearer token clients must present (`None`: no authentication, for tests on loopback).
    pub token: Option<String>,
    /// `host:port` clients reach the server at, for legacy discovery.
    pub server_address: String,
    pub ready: Arc<AtomicBool>,
    /// The node side of `pods/log` and `pods/exec`, once a node agent is connected.
    pub nodes: std::sync::RwLock<Option<Arc<dyn crate::streams::NodeStreams>>>,
}

impl AppState {
    pub fn node_streams(&self) -> Option<Arc<dyn crate::streams::NodeStreams>> {
        self.nodes.read().ok().and_then(|n| n.clone())
    }
}

/// A successful answer: status, body and any `Warning` headers.
struct Answer {
    code: StatusCode,
    body: Value,
    warnings: Vec<String>,
    content_type: &'static str,
}

impl Answer {
    fn ok(body: Value) -> Self {
        Answer { code: StatusCode::OK, body, warnings: Vec::new(), content_type: "application/json" }
    }

    fn created(body: Value) -> Self {
        Answer { code: StatusCode::CREATED, ..Answer::ok(body) }
    }

    fn warn(mut self, warnings: Vec<String>) -> Self {
        self.warnings.extend(warnings);
        self
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body).unwrap_or_default();
        let mut resp = (self.code, [(header::CONTENT_TYPE, self.content_type)], body).into_response();
        for w in self.warnings {
            let text = format!("299 - {}", serde_json::to_string(&w).unwrap_or_default());
            if let Ok(v) = HeaderValue::from_str(&text) {
                resp.headers_mut().append("warning", v);
            }
        }
        resp
    }
}

/// The single entry point for every request.
pub async fn handle(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let headers = req.headers().clone();
    let span = tracing::debug_span!("request", %method, %path);
    let _enter = span.enter();
    drop(_enter);
    match route(&st, method, &path, query, headers, req).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(code = e.code, reason = e.reason, message = %e.message, "request failed");
            e.into_response()
        }
    }
}

fn authorized(st: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &st.token else { return true };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn route(
    st: &Arc<AppState>,
    method: Method,
    path: &str,
    query: Query,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    let (route, rr) = request::parse_path(path)?;
    if let Route::Health(which) = route {
        let ok = which == "livez" || st.ready.load(Ordering::SeqCst);
        let (code, text) = if ok {
            (StatusCode::OK, "ok")
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, "[-]poststarthook/pier-ready failed: not ready\nreadyz check failed")
        };
        return Ok((code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    if route == Route::Version {
        return Ok(Answer::ok(discovery::version()).into_response());
    }
    if !authorized(st, &headers) {
        return Err(ApiError::new(401, "Unauthorized", "Unauthorized"));
    }
    let get_only = |v: Option<Value>| -> ApiResult<Response> {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource".to_string(),
            ));
        }
        v.map(|b| Answer::ok(b).into_response()).ok_or_else(ApiError::no_route)
    };
    match route {
        Route::ApiVersions => {
            if request::wants_aggregated_discovery(&headers) {
                let mut a = Answer::ok(discovery::aggregated_core());
                a.content_type = discovery::AGGREGATED_CONTENT_TYPE;
                return get_only(Some(Value::Null)).map(|_| a.into_response());
            }
            get_only(Some(discovery::api_versions(&st.server_address)))
        }
        Route::ApiGroups => {
            if request::wants_aggregated_discovery(&headers) {
                let mut a = Answer::ok(discovery::aggregated_groups());
                a.content_type = discovery::AGGREGATED_CONTENT_TYPE;
                return get_only(Some(Value::Null)).map(|_| a.into_response());
            }
            get_only(Some(discovery::api_group_list()))
        }
        Route::ApiGroup(g) => get_only(discovery::api_group(&g)),
        Route::ResourceList { group, version } => get_only(discovery::api_resource_list(&group, &version)),
        Route::OpenApiV3Root => get_only(Some(discovery::openapi_v3_root())),
        Route::OpenApiV3 { group, version } => get_only(discovery::openapi_v3_doc(&group, &version)),
        Route::OpenApiV2 => {
            // An empty protobuf document: a valid OpenAPI v2 with no definitions. kubectl uses
            // v2 only for kinds the v3 documents do not list (it then reports "no matches for
            // kind" like against any cluster) and for patch metadata, which it then takes from
            // its compiled-in types.
            let mut resp = Response::new(Body::empty());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/com.github.proto-openapi.spec.v2.v1.0+protobuf"),
            );
            Ok(resp)
        }
        Route::SelfSubjectAccessReview => {
            if method != Method::POST {
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ));
            }
            // One admin identity: whoever holds the token may do everything.
            let body = read_body(req).await?;
            // kubectl's typed client sends protobuf here; the answer does not depend on the
            // request, so an undecodable body still gets one.
            let mut review: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "metadata": {}, "spec": {}})
            });
            review["status"] = json!({"allowed": true, "reason": "pier has a single admin identity"});
            Ok(Answer::created(review).into_response())
        }
        Route::Version | Route::Health(_) => Err(ApiError::no_route()),
        Route::Resource => {
            let rr = rr.ok_or_else(ApiError::no_route)?;
            resource(st, method, rr, query, headers, req).await
        }
    }
}

/// `fieldValidation`: what to do with unknown and duplicate fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

fn field_validation(q: &Query) -> ApiResult<FieldValidation> {
    match q.get("fieldValidation") {
        None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
        ))),
    }
}

fn write_options(q: &Query, headers: &HeaderMap) -> ApiResult<WriteOptions> {
    let dry_run = match q.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
            )));
        }
    };
    let manager = match q.get("fieldManager") {
        Some(m) if !m.is_empty() => {
            if m.len() > 128 {
                return Err(ApiError::bad_request("fieldManager: Too long: may not be more than 128 bytes"));
            }
            m.to_string()
        }
        // Upstream derives the manager from the user agent's product token.
        _ => headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string(),
    };
    Ok(WriteOptions { manager, dry_run, now: Timestamp::now() })
}

async fn read_body(req: Request) -> ApiResult<Bytes> {
    axum::body::to_bytes(req.into_body(), MAX_BODY).await.map_err(|_| {
        ApiError::new(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {MAX_BODY}"))
    })
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn protobuf_refused() -> ApiError {
    ApiError::unsupported_media_type(
        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (pier does not decode protobuf request bodies; use \"kubectl apply -f FILE\", or pipe a generator through \"--dry-run=client -o yaml | kubectl apply -f -\")",
    )
}

/// Parses a create/update body (JSON or YAML) into a JSON object.
fn parse_object_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let ct = content_type(headers);
    let value: Value = match ct.as_str() {
        "application/json" | "" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_norway::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; yaml parse error: {e}")))?,
        "application/vnd.kubernetes.protobuf" => return Err(protobuf_refused()),
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {other:?})"
            )));
        }
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "couldn't get version/kind; json parse error: the body is not a JSON object",
        ));
    }
    Ok(value)
}

/// Decodes a create/update body for `rr` exactly as the create and update handlers do:
/// media type, JSON/YAML parsing, apiVersion/kind checks, strict field validation and typed
/// decoding. Pure: the entry point of the request-decoding fuzz target.
pub fn decode_object_body(
    rr: &ResourceRequest,
    content_type: &str,
    body: &[u8],
    strict: bool,
) -> ApiResult<(Value, Vec<String>)> {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    let value = parse_object_body(&headers, body)?;
    let fv = if strict { FieldValidation::Strict } else { FieldValidation::Warn };
    admit_body(rr, value, Some(body), fv)
}

/// The kind the body must have at this URL (`Scale` for the scale subresource).
fn expected_gvk(rr: &ResourceRequest) -> (String, &'static str) {
    if let Some(sub) = rr.subresource.as_deref()
        && let Some((g, v, k)) = rr.resource.subresource(sub).and_then(|s| s.kind)
    {
        return (if g.is_empty() { v.to_string() } else { format!("{g}/{v}") }, k);
    }
    (rr.resource.api_version(), rr.resource.kind)
}

/// Checks `apiVersion`/`kind` against the URL (filling them in when absent, as upstream does
/// for clients that omit them), applies field validation, and decodes through the typed
/// schema, returning the normalised object and any warnings.
fn admit_body(
    rr: &ResourceRequest,
    mut value: Value,
    raw: Option<&[u8]>,
    fv: FieldValidation,
) -> ApiResult<(Value, Vec<String>)> {
    let (api_version, kind) = expected_gvk(rr);
    let version = api_version.rsplit('/').next().unwrap_or("v1").to_string();
    if !value.is_object() {
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: the document is not a JSON object"
        )));
    }
    match value.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => value["apiVersion"] = json!(api_version),
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match value.get("kind").and_then(Value::as_str) {
        None | Some("") => value["kind"] = json!(kind),
        Some(k) if k == kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({kind}) for this URL"
            )));
        }
    }
    let cannot = |detail: String| {
        ApiError::bad_request(format!("{kind} in version \"{version}\" cannot be handled as a {kind}: {detail}"))
    };
    let mut problems: Vec<String> = Vec::new();
    if fv != FieldValidation::Ignore {
        if let Some(raw) = raw {
            problems.extend(patch::duplicate_fields(raw).into_iter().map(|f| format!("duplicate field \"{f}\"")));
        }
        problems.extend(patch::unknown_fields(kind, &value).into_iter().map(|f| format!("unknown field \"{f}\"")));
    }
    let mut typed = resources::roundtrip(kind, &value).map_err(|e| cannot(e.0))?;
    retain_present(&mut typed, &value);
    let mut warnings = Vec::new();
    if !problems.is_empty() {
        match fv {
            FieldValidation::Strict => return Err(cannot(format!("strict decoding error: {}", problems.join(", ")))),
            FieldValidation::Warn => warnings = problems,
            FieldValidation::Ignore => {}
        }
    }
    Ok((typed, warnings))
}

/// Drops from `typed` every field the client did not send. The typed round trip fills in
/// required fields with empty values (`selector: {}`), which would turn upstream's
/// `Required value` errors into different ones and store fields nobody wrote.
fn retain_present(typed: &mut Value, original: &Value) {
    match (typed, original) {
        (Value::Object(t), Value::Object(o)) => {
            t.retain(|k, _| o.contains_key(k));
            for (k, v) in t.iter_mut() {
                if let Some(ov) = o.get(k) {
                    retain_present(v, ov);
                }
            }
        }
        (Value::Array(t), Value::Array(o)) => {
            for (tv, ov) in t.iter_mut().zip(o) {
                retain_present(tv, ov);
            }
        }
        _ => {}
    }
}

async fn resource(
    st: &Arc<AppState>,
    method: Method,
    rr: ResourceRequest,
    query: Query,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    let r = rr.resource;
    let output = request::negotiate(&headers);
    match (&method, rr.name.as_deref(), rr.subresource.as_deref()) {
        (&Method::GET, None, _) => {
            if query.flag("watch") {
                return crate::watch::serve(st, &rr, &query, output).await;
            }
            list(st, &rr, &query, output).await
        }
        (&Method::GET, Some(name), None | Some("status")) => {
            let obj = st.registry.get(r, rr.namespace.as_deref(), name).await?;
            if output == Output::Table {
                return Ok(table_answer(r, &[obj], "", &query, true)?.into_response());
            }
            Ok(Answer::ok(obj).into_response())
        }
        (&Method::GET, Some(name), Some("scale")) => {
            let obj = st.registry.get(r, rr.namespace.as_deref(), name).await?;
            Ok(Answer::ok(to_scale(&obj)).into_response())
        }
        (&Method::GET, Some(name), Some("log")) => {
            let pod = st.registry.get(r, rr.namespace.as_deref(), name).await?;
            crate::streams::logs(st.node_streams(), &pod, &query).await
        }
        (&Method::GET | &Method::POST, Some(name), Some("exec")) => {
            let pod = st.registry.get(r, rr.namespace.as_deref(), name).await?;
            let (mut parts, _body) = req.into_parts();
            crate::streams::exec(st.node_streams(), &pod, &query, &mut parts).await
        }
        (&Method::POST, None, None) => create(st, &rr, &query, &headers, req).await,
        (&Method::POST, Some(name), Some("binding")) => {
            let name = name.to_string();
            bind(st, &rr, &name, &query, &headers, req).await
        }
        (&Method::PUT, Some(name), sub) => {
            let name = name.to_string();
            update(st, &rr, &name, sub, &query, &headers, req).await
        }
        (&Method::PATCH, Some(name), sub) => {
            let name = name.to_string();
            patch_object(st, &rr, &name, sub, &query, &headers, req).await
        }
        (&Method::DELETE, Some(name), None) => {
            let name = name.to_string();
            delete(st, &rr, &name, &query, &headers, req).await
        }
        (&Method::DELETE, None, None) => delete_collection(st, &rr, &query, &headers, req).await,
        _ => Err(ApiError::method_not_allowed("the server does not allow this method on the requested resource")),
    }
}

/// Parsed `labelSelector` and `fieldSelector`, checked against what the kind supports.
pub struct Selectors {
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
}

impl Selectors {
    pub fn parse(r: &ResourceInfo, q: &Query) -> ApiResult<Self> {
        let labels = match q.get("labelSelector").filter(|s| !s.is_empty()) {
            Some(s) => Some(
                selector::parse_label_selector(s)
                    .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
            ),
            None => None,
        };
        let fields = match q.get("fieldSelector").filter(|s| !s.is_empty()) {
            Some(s) => {
                let f = selector::parse_field_selector(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
                selector::check_supported(r.kind, &f).map_err(|e| ApiError::bad_request(e.to_string()))?;
                Some(f)
            }
            None => None,
        };
        Ok(Selectors { labels, fields })
    }

    /// True when nothing is filtered.
    pub fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    pub fn matches(&self, kind: &str, obj: &Value) -> bool {
        if let Some(l) = &self.labels
            && !l.matches_json(obj["metadata"]["labels"].as_object())
        {
            return false;
        }
        if let Some(f) = &self.fields
            && !f.matches(kind, obj)
        {
            return false;
        }
        true
    }
}

fn include_object(q: &Query) -> ApiResult<IncludeObject> {
    match q.get("includeObject") {
        None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
        Some("None") => Ok(IncludeObject::None),
        Some("Object") => Ok(IncludeObject::Object),
        Some(other) => Err(ApiError::bad_request(format!("includeObject: Unsupported value: \"{other}\""))),
    }
}

fn table_answer(r: &ResourceInfo, objs: &[Value], rv: &str, q: &Query, headers: bool) -> ApiResult<Answer> {
    let t = table::build_table(r.kind, objs, rv, include_object(q)?, Timestamp::now(), headers);
    let mut a = Answer::ok(serde_json::to_value(t).map_err(|e| ApiError::internal(e.to_string()))?);
    a.content_type = "application/json;as=Table;v=v1;g=meta.k8s.io";
    Ok(a)
}

/// A list's `limit` and `continue` (upstream's chunking): at most `limit` items, and a token
/// for the rest.
struct Paging {
    limit: usize,
    /// From the token: the first page's revision and the last key it (or a later page) read.
    resume: Option<(Revision, String)>,
}

/// What a `continue` token holds (base64 of this JSON, opaque to clients as upstream's is).
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: Revision,
    after: String,
}

const CONTINUE_VERSION: &str = "meta.k8s.io/v1";

fn paging(q: &Query) -> ApiResult<Option<Paging>> {
    use base64::Engine as _;
    let limit = match q.get("limit").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n > 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            // Upstream treats 0 and negative limits as "no limit".
            Ok(_) => None,
            Err(_) => return Err(ApiError::bad_request(format!("invalid limit: {s:?}"))),
        },
    };
    let resume = match q.get("continue").filter(|s| !s.is_empty()) {
        None => None,
        Some(token) => {
            if q.get("resourceVersion").is_some_and(|v| !v.is_empty()) {
                return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
            }
            let invalid = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
            let bytes = base64::engine::general_purpose::URL_SAFE
                .decode(token)
                .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
                .map_err(|_| invalid("not base64"))?;
            let t: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| invalid("not a continue token"))?;
            if t.v != CONTINUE_VERSION {
                return Err(invalid(&format!("unsupported version {:?}", t.v)));
            }
            Some((t.rv, t.after))
        }
    };
    Ok(match (limit, resume) {
        (None, None) => None,
        (limit, resume) => Some(Paging { limit: limit.unwrap_or(usize::MAX), resume }),
    })
}

fn continue_token(rv: Revision, after: String) -> String {
    use base64::Engine as _;
    let t = ContinueToken { v: CONTINUE_VERSION.into(), rv, after };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&t).unwrap_or_default())
}

/// One page of a list: the matching objects' stored values, the list's revision, and the
/// token for the rest. Later pages read the latest state after the last key seen and report
/// the first page's revision, so a client that watches from that revision sees every change
/// made while it paged (at worst twice).
async fn list_page(
    st: &Arc<AppState>,
    r: &ResourceInfo,
    prefix: &str,
    sel: &Selectors,
    p: Paging,
) -> ApiResult<(Vec<KeyValue>, Revision, Option<String>)> {
    let (mut rv, mut after) = match p.resume {
        Some((rv, after)) => (Some(rv), Some(after)),
        None => (None, None),
    };
    let mut out = Vec::new();
    loop {
        let want = p.limit - out.len();
        let (page, more) = st.registry.store.list_page(prefix, after.as_deref(), want).await?;
        let rev = *rv.get_or_insert(page.revision);
        let last = page.items.last().map(|kv| kv.key.clone());
        if sel.is_empty() {
            out.extend(page.items);
        } else {
            for kv in page.items {
                if sel.matches(r.kind, &decode(&kv)?) {
                    out.push(kv);
                }
            }
        }
        if !more {
            return Ok((out, rev, None));
        }
        after = last;
        if out.len() >= p.limit {
            return Ok((out, rev, after.map(|a| continue_token(rev, a))));
        }
    }
}

async fn list(st: &Arc<AppState>, rr: &ResourceRequest, q: &Query, output: Output) -> ApiResult<Response> {
    let r = rr.resource;
    let sel = Selectors::parse(r, q)?;
    let paging = paging(q)?;
    // `resourceVersion` on a list means "at least this fresh": the latest state satisfies
    // it. `resourceVersionMatch=Exact` asks for that precise revision.
    let at = match (q.get("resourceVersion").filter(|s| !s.is_empty() && *s != "0"), q.get("resourceVersionMatch")) {
        (Some(rv), Some("Exact")) => Some(parse_rv(rv)?),
        (Some(rv), _) => {
            parse_rv(rv)?;
            None
        }
        _ => None,
    };
    let prefix = collection_prefix(r, rr.namespace.as_deref());
    // Pages are served from the latest state; a list at an exact older revision is served
    // whole (a server may ignore `limit`, and clients handle that).
    let (items, rev, cont) = match paging {
        Some(p) if at.is_none() => list_page(st, r, &prefix, &sel, p).await?,
        _ => {
            let listed = st.registry.store.list(&prefix, at).await?;
            (listed.items, listed.revision, None)
        }
    };
    let rev = rev.to_string();
    // One object at a time: decode, filter, render, drop. Holding every decoded object of a
    // large list at once costs hundreds of megabytes and most of the list's time.
    if output == Output::Table {
        let include = include_object(q)?;
        let now = Timestamp::now();
        let mut t = table::build_table(r.kind, &[], &rev, include, now, true);
        t.metadata.continue_ = cont.unwrap_or_default();
        for kv in &items {
            let obj = decode(kv)?;
            if sel.matches(r.kind, &obj) {
                t.rows.push(table::build_row(r.kind, &obj, include, now));
            }
        }
        let mut a = Answer::ok(serde_json::to_value(t).map_err(|e| ApiError::internal(e.to_string()))?);
        a.content_type = "application/json;as=Table;v=v1;g=meta.k8s.io";
        return Ok(a.into_response());
    }
    let mut buf: Vec<u8> = Vec::with_capacity(items.iter().map(|kv| kv.value.len() + 40).sum::<usize>() + 128);
    let mut meta = json!({"resourceVersion": rev});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    let head = json!({"kind": r.list_kind, "apiVersion": r.api_version(), "metadata": meta});
    let head = serde_json::to_string(&head).map_err(|e| ApiError::internal(e.to_string()))?;
    // `{...head...,"items":[` — the head object without its closing brace.
    buf.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    buf.extend_from_slice(b",\"items\":[");
    let mut first = true;
    for kv in &items {
        let obj = decode(kv)?;
        if !sel.matches(r.kind, &obj) {
            continue;
        }
        if !first {
            buf.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut buf, &obj).map_err(|e| ApiError::internal(e.to_string()))?;
    }
    buf.extend_from_slice(b"]}");
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], buf).into_response())
}

async fn create(
    st: &Arc<AppState>,
    rr: &ResourceRequest,
    q: &Query,
    headers: &HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    let r = rr.resource;
    let fv = field_validation(q)?;
    let opts = write_options(q, headers)?;
    let body = read_body(req).await?;
    let value = parse_object_body(headers, &body)?;
    let (mut obj, warnings) = admit_body(rr, value, Some(&body), fv)?;
    if r.namespaced {
        let ns = rr
            .namespace
            .clone()
            .ok_or_else(|| ApiError::bad_request("the namespace of the object must be set on the request"))?;
        match obj["metadata"]["namespace"].as_str() {
            None | Some("") => obj["metadata"]["namespace"] = json!(ns),
            Some(n) if n == ns => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    if name_of(&obj).is_empty()
        && let Some(prefix) = obj["metadata"]["generateName"].as_str().filter(|s| !s.is_empty())
    {
        obj["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
    }
    let created = st.registry.create(r, obj, &opts).await?;
    Ok(Answer::created(created).warn(warnings).into_response())
}

/// Five characters from upstream's alphabet for generated names (no vowels, no look-alikes).
pub fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

fn check_name(name_in_body: &str, name_in_url: &str) -> ApiResult<()> {
    if !name_in_body.is_empty() && name_in_body != name_in_url {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name_in_body}) does not match the name on the request ({name_in_url})"
        )));
    }
    Ok(())
}

async fn update(
    st: &Arc<AppState>,
    rr: &ResourceRequest,
    name: &str,
    sub: Option<&str>,
    q: &Query,
    headers: &HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    let r = rr.resource;
    let fv = field_validation(q)?;
    let opts = write_options(q, headers)?;
    let body = read_body(req).await?;
    let value = parse_object_body(headers, &body)?;
    let (obj, warnings) = admit_body(rr, value, Some(&body), fv)?;
    check_name(name_of(&obj), name)?;
    let ns = rr.namespace.as_deref();
    let (old, rev) = st.registry.get_kv(r, ns, name).await?;
    let precondition =
        obj["metadata"]["resourceVersion"].as_str().filter(|s| !s.is_empty()).map(parse_rv).transpose()?;
    if precondition.is_some_and(|p| p != rev) {
        return Err(ApiError::conflict(r, name));
    }
    let out = if sub == Some("scale") {
        apply_scale(st, r, &old, rev, &obj, &opts).await?
    } else {
        st.registry.update(r, &old, rev, obj, sub, &opts).await?
    };
    Ok(Answer::ok(out).warn(warnings).into_response())
}

/// `POST pods/{name}/binding`: the scheduler's assignment of a pod to a node. Only an
/// unassigned pod can be bound; the binding sets `spec.nodeName` and PodScheduled.
async fn bind(
    st: &Arc<AppState>,
    rr: &ResourceRequest,
    name: &str,
    q: &Query,
    headers: &HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    let r = rr.resource;
    let opts = write_options(q, headers)?;
    let body = read_body(req).await?;
    let value = parse_object_body(headers, &body)?;
    let (binding, _) = admit_body(rr, value, Some(&body), FieldValidation::Ignore)?;
    let node = binding["target"]["name"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| {
        ApiError::new(422, "Invalid", format!("Binding.core \"{name}\" is invalid: target.name: Required value"))
    })?;
    let ns = rr.namespace.as_deref();
    for _ in 0..8 {
        let (old, rev) = st.registry.get_kv(r, ns, name).await?;
        if !old["metadata"]["deletionTimestamp"].is_null() {
            return Err(ApiError::conflict_message(
                r,
                name,
                format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(current) = old["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict_message(
                r,
                name,
                format!(
                    "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{current}\""
                ),
            ));
        }
        let mut new = old.clone();
        new["spec"]["nodeName"] = json!(node);
        let t = crate::registry::format_time(opts.now);
        let mut conditions: Vec<Value> = old["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conditions
            .push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": t}));
        new["status"]["conditions"] = json!(conditions);
        match st.registry.write_unchecked(r, &old, rev, new).await {
            Ok(_) => {
                let status =
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
                return Ok(Answer::created(status).into_response());
            }
            Err(e) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(r, name))
}

/// `autoscaling/v1 Scale` of a Deployment or ReplicaSet.
fn to_scale(obj: &Value) -> Value {
    let selector = obj["spec"]["selector"].clone();
    let selector_text = serde_json::from_value(selector)
        .ok()
        .and_then(|s| LabelSelector::from_k8s(&s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector_text},
    })
}

async fn apply_scale(
    st: &Arc<AppState>,
    r: &ResourceInfo,
    old: &Value,
    rev: i64,
    scale: &Value,
    opts: &WriteOptions,
) -> ApiResult<Value> {
    let replicas = scale["spec"]["replicas"].as_i64().unwrap_or(0);
    if replicas < 0 {
        let err = pier_api::validation::FieldError::invalid(
            "spec.replicas",
            replicas.to_string(),
            "must be greater than or equal to 0",
        );
        let scale_info = ResourceInfo { kind: "Scale", group: "autoscaling", ..*r };
        return Err(ApiError::invalid(&scale_info, name_of(old), &[err]));
    }
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(replicas);
    let out = st.registry.update(r, old, rev, new, None, opts).await?;
    Ok(to_scale(&out))
}

async fn patch_object(
    st: &Arc<AppState>,
    rr: &ResourceRequest,
    name: &str,
    sub: Option<&str>,
    q: &Query,
    headers: &HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    let r = rr.resource;
    let ct = content_type(headers);
    let Some(pt) = PatchType::from_content_type(&ct) else {
        if ct == "application/vnd.kubernetes.protobuf" {
            return Err(protobuf_refused());
        }
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
        )));
    };
    let fv = field_validation(q)?;
    let opts = write_options(q, headers)?;
    if pt == PatchType::Apply && q.get("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    let body = read_body(req).await?;
    let ns = rr.namespace.as_deref();
    // Upstream retries a patch on a write conflict: the patch is re-applied to the new state.
    for _attempt in 0..8 {
        let current = match st.registry.get_kv(r, ns, name).await {
            Ok(c) => Some(c),
            Err(e) if e.code == 404 && pt == PatchType::Apply && sub.is_none() => None,
            Err(e) => return Err(e),
        };
        let result = match (pt, current) {
            (PatchType::Apply, None) => {
                let applied = patch::parse_apply_body(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
                let (applied, warnings) = admit_body(rr, applied, None, fv)?;
                check_name(name_of(&applied), name)?;
                let merged = patch::server_side_apply(r.kind, None, &applied, &opts.manager, q.flag("force"), opts.now)
                    .map_err(|e| apply_error(r, name, e))?;
                let mut obj = merged;
                obj["metadata"]["name"] = json!(name);
                if r.namespaced {
                    obj["metadata"]["namespace"] = json!(ns.unwrap_or("default"));
                }
                // server_side_apply recorded the manager; an empty manager records nothing more.
                let opts = WriteOptions { manager: String::new(), ..opts.clone() };
                let created = st.registry.create(r, obj, &opts).await?;
                return Ok(Answer::created(created).warn(warnings).into_response());
            }
            (_, None) => return Err(ApiError::not_found(r, name)),
            (pt, Some((old, rev))) => {
                let base = if sub == Some("scale") { to_scale(&old) } else { old.clone() };
                let base_kind = if sub == Some("scale") { "Scale" } else { r.kind };
                let patched = match pt {
                    PatchType::Json => {
                        check_json_patch_size(&body)?;
                        patch::json_patch(&base, &body).map_err(patch_error)?
                    }
                    PatchType::Merge => patch::merge_patch(&base, &body).map_err(patch_error)?,
                    PatchType::Strategic => {
                        patch::strategic_merge_patch(base_kind, &base, &body).map_err(patch_error)?
                    }
                    PatchType::Apply => {
                        let applied =
                            patch::parse_apply_body(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
                        let (applied, _) = admit_body(rr, applied, None, fv)?;
                        check_name(name_of(&applied), name)?;
                        patch::server_side_apply(
                            base_kind,
                            Some(&base),
                            &applied,
                            &opts.manager,
                            q.flag("force"),
                            opts.now,
                        )
                        .map_err(|e| apply_error(r, name, e))?
                    }
                };
                let (patched, warnings) = admit_body(rr, patched, None, fv)?;
                // Unlike a PUT, a patch result must still carry the name: a patch that empties
                // or replaces the whole document is refused rather than wiping the object.
                if name_of(&patched) != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the request ({name})",
                        name_of(&patched)
                    )));
                }
                let precondition = patched["metadata"]["resourceVersion"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(parse_rv)
                    .transpose()?;
                if precondition.is_some_and(|p| p != rev) {
                    return Err(ApiError::conflict(r, name));
                }
                let res = if sub == Some("scale") {
                    apply_scale(st, r, &old, rev, &patched, &opts).await
                } else if pt == PatchType::Apply {
                    let opts = WriteOptions { manager: String::new(), ..opts.clone() };
                    st.registry.update(r, &old, rev, patched, sub, &opts).await
                } else {
                    st.registry.update(r, &old, rev, patched, sub, &opts).await
                };
                res.map(|o| Answer::ok(o).warn(warnings))
            }
        };
        match result {
            Err(e) if e.reason == "Conflict" && e.code == 409 && !e.message.contains("Apply failed") => continue,
            other => return other.map(IntoResponse::into_response),
        }
    }
    Err(ApiError::conflict(r, name))
}

/// Upstream's limit on JSON patch operations.
const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

fn check_json_patch_size(body: &[u8]) -> ApiResult<()> {
    if let Ok(Value::Array(ops)) = serde_json::from_slice::<Value>(body)
        && ops.len() > MAX_JSON_PATCH_OPERATIONS
    {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}", ops.len()),
        ));
    }
    Ok(())
}

/// A patch that cannot be parsed is a bad request; one that parses but does not apply to the
/// object (a failed `test`, a missing path) is unprocessable, as upstream answers.
fn patch_error(e: patch::PatchError) -> ApiError {
    if e.code() == 422 { ApiError::new(422, "Invalid", e.to_string()) } else { ApiError::bad_request(e.to_string()) }
}

fn apply_error(r: &ResourceInfo, name: &str, e: patch::ApplyError) -> ApiError {
    let mut err = ApiError::conflict_message(r, name, e.message());
    let causes: Vec<Value> = e
        .conflicts()
        .iter()
        .map(|c| json!({"reason": "FieldManagerConflict", "message": c.message(), "field": c.field}))
        .collect();
    if let Some(d) = err.details.as_mut() {
        d["causes"] = json!(causes);
    }
    err
}

async fn delete_options(headers: &HeaderMap, req: Request, q: &Query) -> ApiResult<Value> {
    let body = read_body(req).await?;
    let mut opts = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        if content_type(headers) == "application/vnd.kubernetes.protobuf" {
            return Err(protobuf_refused());
        }
        serde_json::from_slice::<Value>(&body)
            .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))?
    };
    if let Some(p) = q.get("propagationPolicy") {
        opts["propagationPolicy"] = json!(p);
    }
    if let Some(g) = q.get("gracePeriodSeconds") {
        let g: i64 = g.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g:?}")))?;
        opts["gracePeriodSeconds"] = json!(g);
    }
    match opts["propagationPolicy"].as_str() {
        None | Some("Orphan" | "Background" | "Foreground") => Ok(opts),
        Some(other) => Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
        ))),
    }
}

async fn delete(
    st: &Arc<AppState>,
    rr: &ResourceRequest,
    name: &str,
    q: &Query,
    headers: &HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    let opts = write_options(q, headers)?;
    let del = delete_options(headers, req, q).await?;
    let out = st.registry.delete(rr.resource, rr.namespace.as_deref(), name, &del, &opts).await?;
    Ok(Answer::ok(out).into_response())
}

async fn delete_collection(
    st: &Arc<AppState>,
    rr: &ResourceRequest,
    q: &Query,
    headers: &HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    let r = rr.resource;
    let opts = write_options(q, headers)?;
    let del = delete_options(headers, req, q).await?;
    let sel = Selectors::parse(r, q)?;
    let (items, rev) = st.registry.list(r, rr.namespace.as_deref(), None).await?;
    let mut deleted = Vec::new();
    for item in items.into_iter().filter(|o| sel.matches(r.kind, o)) {
        let ns = item["metadata"]["namespace"].as_str().map(str::to_string);
        match st.registry.delete(r, ns.as_deref(), name_of(&item), &del, &opts).await {
            Ok(o) => deleted.push(o),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let body = json!({"kind": r.list_kind, "apiVersion": r.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": deleted});
    Ok(Answer::ok(body).into_response())
}

/// A streaming body helper for the watch module.
pub fn stream_response(content_type: &'static str, body: Body) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    resp
}
