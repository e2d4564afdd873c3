//! `?watch=true`: a chunked stream of newline-delimited `WatchEvent`s with upstream's
//! resourceVersion semantics — unset or `0` starts with a synthetic `ADDED` per existing
//! object, `N` starts just after revision N (`410 Expired` when compacted away) — selector
//! transitions (an object leaving a label selector is `DELETED`), optional bookmarks and
//! `timeoutSeconds`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use futures::StreamExt;
use jiff::Timestamp;
use pier_api::resources::ResourceInfo;
use pier_api::table::{self, IncludeObject};
use pier_store::{EventKind, StoreError};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::handlers::{AppState, Selectors, stream_response};
use crate::registry::{collection_prefix, decode, parse_rv};
use crate::request::{Output, Query, ResourceRequest};

/// Upstream closes watches after a random time between `--min-request-timeout` (1800 s) and
/// twice that when the client gives no `timeoutSeconds`; pier uses the lower bound.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

struct Encoder {
    resource: &'static ResourceInfo,
    output: Output,
    include: IncludeObject,
    headers_sent: bool,
}

impl Encoder {
    fn line(&mut self, event_type: &str, object: &Value) -> Bytes {
        // Written straight into one buffer: no copies of the object per event.
        let mut bytes = Vec::with_capacity(512);
        bytes.extend_from_slice(b"{\"type\":\"");
        bytes.extend_from_slice(event_type.as_bytes());
        bytes.extend_from_slice(b"\",\"object\":");
        let written = match self.output {
            Output::Json => serde_json::to_writer(&mut bytes, object),
            Output::Table => {
                let rv = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
                let t = table::build_table(
                    self.resource.kind,
                    std::slice::from_ref(object),
                    rv,
                    self.include,
                    Timestamp::now(),
                    !self.headers_sent,
                );
                self.headers_sent = true;
                serde_json::to_writer(&mut bytes, &t)
            }
        };
        if written.is_err() {
            bytes.truncate(0);
            return Bytes::new();
        }
        bytes.extend_from_slice(b"}\n");
        Bytes::from(bytes)
    }

    fn bookmark(&self, rev: i64) -> Bytes {
        let object = json!({"kind": self.resource.kind, "apiVersion": self.resource.api_version(), "metadata": {"resourceVersion": rev.to_string()}});
        let mut bytes = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": object})).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    fn error(&self, e: ApiError) -> Bytes {
        let mut bytes = serde_json::to_vec(&json!({"type": "ERROR", "object": e.status()})).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }
}

pub async fn serve(st: &Arc<AppState>, rr: &ResourceRequest, q: &Query, output: Output) -> ApiResult<Response> {
    let r = rr.resource;
    let sel = Selectors::parse(r, q)?;
    let timeout = match q.get("timeoutSeconds").filter(|s| !s.is_empty()) {
        Some(t) => Duration::from_secs(
            t.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t:?}")))?,
        ),
        None => DEFAULT_TIMEOUT,
    };
    let include = match q.get("includeObject") {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    };
    let bookmarks = q.flag("allowWatchBookmarks") && output == Output::Json;
    let prefix = collection_prefix(r, rr.namespace.as_deref());
    let store = st.registry.store.clone();
    let (initial, from) = match q.get("resourceVersion").filter(|s| !s.is_empty() && *s != "0") {
        None => {
            let (items, rev) = st.registry.list(r, rr.namespace.as_deref(), None).await?;
            (items.into_iter().filter(|o| sel.matches(r.kind, o)).collect::<Vec<_>>(), rev)
        }
        Some(rv) => (Vec::new(), parse_rv(rv)?),
    };
    let mut events = match store.watch(&prefix, from).await {
        Ok(s) => s,
        Err(StoreError::Compacted { requested, compacted }) => {
            return Err(ApiError::expired(format!("too old resource version: {requested} ({compacted})")));
        }
        Err(e) => return Err(e.into()),
    };
    let mut enc = Encoder { resource: r, output, include, headers_sent: false };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        let mut last_rev = from;
        for obj in &initial {
            if tx.send(Ok(enc.line("ADDED", obj))).await.is_err() {
                return;
            }
        }
        loop {
            let line = tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => enc.bookmark(last_rev),
                ev = events.next() => match ev {
                    None => return,
                    Some(Err(e)) => {
                        // A dropped watcher ends the stream; clients list and watch again.
                        tracing::debug!(error = %e, "watch ended by the store");
                        let _ = tx.send(Ok(enc.error(ApiError::from(e)))).await;
                        return;
                    }
                    Some(Ok(ev)) => {
                        last_rev = ev.kv.mod_revision;
                        let Ok(obj) = decode(&ev.kv) else { continue };
                        // The previous state matters only to tell selector transitions apart.
                        let prev = if sel.is_empty() { None } else { ev.prev.as_ref().and_then(|p| decode(p).ok()) };
                        let now_matches = sel.matches(r.kind, &obj);
                        let was_matching = if sel.is_empty() {
                            ev.prev.is_some()
                        } else {
                            prev.as_ref().is_some_and(|p| sel.matches(r.kind, p))
                        };
                        let (ty, shown) = match (ev.kind, prev) {
                            (EventKind::Created, _) if now_matches => ("ADDED", obj),
                            (EventKind::Updated, _) if now_matches && was_matching => ("MODIFIED", obj),
                            (EventKind::Updated, _) if now_matches => ("ADDED", obj),
                            // Leaving the selector: upstream shows the last matching state,
                            // stamped with this event's revision.
                            (EventKind::Updated, Some(mut p)) if was_matching => {
                                p["metadata"]["resourceVersion"] = json!(ev.kv.mod_revision.to_string());
                                ("DELETED", p)
                            }
                            (EventKind::Deleted, _) if now_matches => ("DELETED", obj),
                            _ => continue,
                        };
                        enc.line(ty, &shown)
                    }
                },
            };
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    let content_type = match output {
        Output::Json => "application/json",
        Output::Table => "application/json;as=Table;v=v1;g=meta.k8s.io",
    };
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(stream_response(content_type, body))
}
