//! Shared harness for the black-box API server tests: an [`ApiServer`] over a SQLite store in a
//! temporary directory, driven in-process through `tower::ServiceExt::oneshot` on its router,
//! or over plain HTTP on a loopback listener (127.0.0.1 only) with a small hand-written
//! HTTP/1.1 client that reads chunked watch streams line by line. Every wait is bounded.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use http::{HeaderMap, Method, Request};
use http_body_util::BodyExt;
use pier_apiserver::{ApiServer, Config};
use pier_store::Store;
use pier_store::sqlite::SqliteStore;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tower::ServiceExt;

/// The longest any single step of a test may take.
pub const STEP: Duration = Duration::from_secs(10);

pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

pub fn config(token: Option<&str>) -> Config {
    Config {
        service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
        node_port_range: (30000, 32767),
        advertise: ("198.51.100.10".parse().unwrap(), 6443),
        token: token.map(str::to_string),
        compaction_interval: Duration::from_secs(3600),
    }
}

/// A started API server and the store under it.
pub struct TestServer {
    pub server: Arc<ApiServer>,
    pub router: Router,
    pub store: Arc<dyn Store>,
    pub db: PathBuf,
    /// Keeps the temporary directory alive (absent when the caller owns the directory).
    _dir: Option<tempfile::TempDir>,
}

/// What a request got back.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("response ({}) is not JSON: {e}: {}", self.status, String::from_utf8_lossy(&self.body))
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status code, printing the body when it differs; returns the JSON body.
    #[track_caller]
    pub fn expect(&self, code: u16) -> Value {
        assert_eq!(self.status, code, "unexpected status; body: {}", self.text());
        self.json()
    }

    /// Asserts a failure `Status` with this code and reason; returns it.
    #[track_caller]
    pub fn expect_status(&self, code: u16, reason: &str) -> Value {
        let s = self.expect(code);
        assert_status_shape(&s, code);
        assert_eq!(s["reason"], reason, "wrong reason in {s}");
        s
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect()
    }
}

/// Asserts `s` is a `meta/v1 Status` failure with `code`.
#[track_caller]
pub fn assert_status_shape(s: &Value, code: u16) {
    assert_eq!(s["kind"], "Status", "not a Status: {s}");
    assert_eq!(s["apiVersion"], "v1", "not a Status: {s}");
    assert_eq!(s["status"], "Failure", "not a failure Status: {s}");
    assert_eq!(s["code"], json!(code), "Status code differs from the HTTP code: {s}");
    assert!(s["reason"].as_str().is_some_and(|r| !r.is_empty()), "Status without reason: {s}");
    assert!(s["message"].is_string(), "Status without message: {s}");
}

impl TestServer {
    /// A server on a fresh store, without authentication.
    pub async fn start() -> TestServer {
        Self::start_with_token(None).await
    }

    pub async fn start_with_token(token: Option<&str>) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let mut s = Self::start_at(&db, token).await;
        s._dir = Some(dir);
        s
    }

    /// A server on the SQLite file at `db` (created if missing).
    pub async fn start_at(db: &Path, token: Option<&str>) -> TestServer {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db).unwrap());
        let server =
            tokio::time::timeout(STEP, ApiServer::start(config(token), store.clone(), "127.0.0.1:6443".into()))
                .await
                .expect("start timed out")
                .unwrap();
        let router = server.router();
        TestServer { server: Arc::new(server), router, store, db: db.to_path_buf(), _dir: None }
    }

    /// Sends one request through the router.
    pub async fn req(&self, method: Method, path: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Resp {
        send(&self.router, method, path, headers, body).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req(Method::GET, path, &[], Body::empty()).await
    }

    pub async fn post(&self, path: &str, v: &Value) -> Resp {
        self.req(Method::POST, path, &[("content-type", "application/json")], v.to_string()).await
    }

    pub async fn put(&self, path: &str, v: &Value) -> Resp {
        self.req(Method::PUT, path, &[("content-type", "application/json")], v.to_string()).await
    }

    pub async fn patch(&self, path: &str, content_type: &str, v: &Value) -> Resp {
        self.req(Method::PATCH, path, &[("content-type", content_type)], v.to_string()).await
    }

    pub async fn merge(&self, path: &str, v: &Value) -> Resp {
        self.patch(path, "application/merge-patch+json", v).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.req(Method::DELETE, path, &[], Body::empty()).await
    }

    /// Creates a namespace and returns once it exists.
    pub async fn namespace(&self, name: &str) {
        self.post("/api/v1/namespaces", &json!({"metadata": {"name": name}})).await.expect(201);
    }

    /// Serves plain HTTP on 127.0.0.1 (a free port) until the handle drops.
    pub async fn serve(&self) -> Served {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let server = self.server.clone();
        tokio::spawn(async move {
            let _ = server
                .serve(listener, None, async move {
                    let _ = rx.await;
                })
                .await;
        });
        Served { addr, _shutdown: tx }
    }

    /// Every stored key with its value and mod revision, for before/after comparisons.
    pub async fn snapshot(&self, prefix: &str) -> Vec<(String, Vec<u8>, i64)> {
        let list = self.store.list(prefix, None).await.unwrap();
        list.items.into_iter().map(|kv| (kv.key, kv.value.to_vec(), kv.mod_revision)).collect()
    }

    /// Polls `GET path` until `done(status, body)` holds, for up to `limit`.
    pub async fn wait_for(&self, path: &str, limit: Duration, done: impl Fn(u16, &Value) -> bool) -> Resp {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let r = self.get(path).await;
            let body = serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null);
            if done(r.status, &body) {
                return r;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting on {path}; last: {} {body}", r.status);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends one request through `router`, bounded by [`STEP`].
pub async fn send(
    router: &Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Resp {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(body.into()).unwrap();
    let fut = async {
        let resp = router.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Resp { status: parts.status.as_u16(), headers: parts.headers, body }
    };
    tokio::time::timeout(STEP, fut).await.unwrap_or_else(|_| panic!("request {path} timed out"))
}

/// A listener being served; serving stops when this drops.
pub struct Served {
    pub addr: SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

impl Served {
    pub async fn watch(&self, path: &str) -> Watch {
        Watch::open(self.addr, path, &[]).await
    }

    pub async fn watch_with(&self, path: &str, headers: &[(&str, &str)]) -> Watch {
        Watch::open(self.addr, path, headers).await
    }
}

/// One HTTP/1.1 GET on a fresh connection, read incrementally: a watch stream (chunked,
/// newline-delimited JSON) or any other response.
pub struct Watch {
    reader: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    chunked: bool,
    content_length: Option<usize>,
    buf: Vec<u8>,
    done: bool,
}

impl Watch {
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Watch {
        assert!(addr.ip().is_loopback());
        tokio::time::timeout(STEP, Self::open_inner(addr, path, headers))
            .await
            .unwrap_or_else(|_| panic!("opening {path} timed out"))
    }

    async fn open_inner(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Watch {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: pier-test/1\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            panic!("bad status line {line:?}");
        });
        let mut hdrs = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                hdrs.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let chunked = hdrs.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let content_length = hdrs.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok());
        Watch { reader, status, headers: hdrs, chunked, content_length, buf: Vec::new(), done: false }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Reads more of the body into the buffer; false once the body has ended.
    async fn fill(&mut self) -> bool {
        if self.done {
            return false;
        }
        if self.chunked {
            let mut size_line = String::new();
            if self.reader.read_line(&mut size_line).await.unwrap() == 0 {
                self.done = true;
                return false;
            }
            let hex = size_line.trim().split(';').next().unwrap_or("").to_string();
            let size = usize::from_str_radix(&hex, 16).unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
            if size == 0 {
                // Trailers, then the empty line that ends the message.
                loop {
                    let mut l = String::new();
                    if self.reader.read_line(&mut l).await.unwrap() == 0 || l.trim().is_empty() {
                        break;
                    }
                }
                self.done = true;
                return false;
            }
            let mut chunk = vec![0u8; size];
            self.reader.read_exact(&mut chunk).await.unwrap();
            let mut crlf = [0u8; 2];
            self.reader.read_exact(&mut crlf).await.unwrap();
            assert_eq!(&crlf, b"\r\n", "chunk not terminated by CRLF");
            self.buf.extend_from_slice(&chunk);
            true
        } else if let Some(n) = self.content_length {
            let mut rest = vec![0u8; n];
            self.reader.read_exact(&mut rest).await.unwrap();
            self.buf.extend_from_slice(&rest);
            self.done = true;
            true
        } else {
            let mut rest = Vec::new();
            self.reader.read_to_end(&mut rest).await.unwrap();
            self.buf.extend_from_slice(&rest);
            self.done = true;
            true
        }
    }

    /// The next line of the stream as JSON, `None` once the stream has ended. Panics after
    /// `limit` without one. Not cancellation safe: a timeout ends the test.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Value> {
        let fut = async {
            loop {
                if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.buf.drain(..=pos).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some(serde_json::from_slice::<Value>(&line).unwrap_or_else(|e| {
                        panic!("watch line is not JSON: {e}: {}", String::from_utf8_lossy(&line))
                    }));
                }
                if !self.fill().await {
                    if self.buf.iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    let rest = std::mem::take(&mut self.buf);
                    return Some(serde_json::from_slice::<Value>(&rest).unwrap());
                }
            }
        };
        match tokio::time::timeout(limit, fut).await {
            Ok(v) => v,
            Err(_) => panic!("no watch event within {limit:?}"),
        }
    }

    /// The next event; panics if the stream ends or nothing comes within [`STEP`].
    #[track_caller]
    pub fn next(&mut self) -> impl std::future::Future<Output = Value> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            match self.next_within(STEP).await {
                Some(v) => v,
                None => panic!("watch stream ended unexpectedly (expected an event at {caller})"),
            }
        }
    }

    /// The whole (remaining) body, for non-streaming answers.
    pub async fn body(&mut self) -> Vec<u8> {
        let fut = async {
            while self.fill().await {}
            std::mem::take(&mut self.buf)
        };
        tokio::time::timeout(STEP, fut).await.expect("body timed out")
    }
}

/// `(type, name)` of a watch event.
pub fn ev(e: &Value) -> (String, String) {
    (e["type"].as_str().unwrap_or("").to_string(), e["object"]["metadata"]["name"].as_str().unwrap_or("").to_string())
}

pub fn ev_pair(t: &str, name: &str) -> (String, String) {
    (t.to_string(), name.to_string())
}

pub fn rv(obj: &Value) -> i64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {obj}"))
}

// ---------------------------------------------------------------------------------------------
// Fixtures

pub fn svc(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    })
}

pub fn node_port_svc(name: &str, node_port: Option<u16>) -> Value {
    let mut port = json!({"port": 80, "targetPort": 8080});
    if let Some(p) = node_port {
        port["nodePort"] = json!(p);
    }
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [port]},
    })
}

pub fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

pub fn cm_labeled(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

pub fn deploy(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "registry.example/web:1"}]},
            },
        },
    })
}

pub fn svc_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/services")
}

pub fn cm_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/configmaps")
}

pub fn deploy_path(ns: &str) -> String {
    format!("/apis/apps/v1/namespaces/{ns}/deployments")
}
