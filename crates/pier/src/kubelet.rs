//! Pod logs and exec across machines, as the real API server proxies them to a kubelet.
//!
//! The node side ([`serve`], run by `pier agent`) answers on the kubelet port:
//! `GET /containerLogs/{ns}/{pod}/{container}` (the log options as query parameters) and
//! `GET /exec/{ns}/{pod}/{container}?command=…` (a websocket speaking `v5.channel.k8s.io`).
//! Both run through the node's own [`LocalNode`].
//!
//! The API server's side is [`Nodes`]. It serves a pod of its own node in process, and any
//! other pod through that node's kubelet port. It finds the port at the Node's `InternalIP`
//! and `daemonEndpoints.kubeletEndpoint.Port`.
//!
//! Trust runs through the API both sides already trust:
//! - The agent makes a fresh self-signed certificate at every start and publishes its SHA-256 in
//!   its Node's annotation [`CERT_ANNOTATION`].
//! - The API server accepts only that certificate, pinned.
//! - The API server sends the cluster token, which the agent checks.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use pier_apiserver::error::{ApiError, ApiResult};
use pier_apiserver::request::Query;
use pier_apiserver::streams::{self, ExecOutput, ExecSession, LogOptions, NodeStreams};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::node_streams::{LocalNode, assigned_node};

/// The Node annotation carrying the hex SHA-256 of the agent's kubelet-port certificate.
pub const CERT_ANNOTATION: &str = "pier.dev/kubelet-serving-cert-sha256";
/// The kubelet's port, as the Node's `daemonEndpoints` advertise it.
pub const PORT: u16 = 10250;
/// Bound on reaching a node's kubelet port (TCP, TLS and the request's head).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The kubelet port's TLS identity.
pub struct Identity {
    pub tls: Arc<rustls::ServerConfig>,
    /// Hex SHA-256 of the certificate (DER), for [`CERT_ANNOTATION`].
    pub fingerprint: String,
}

fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh self-signed certificate for `node_name` and `node_ip`.
pub fn identity(node_name: &str, node_ip: IpAddr) -> Result<Identity> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![node_name.to_string()])?;
    params.subject_alt_names.push(rcgen::SanType::IpAddress(node_ip));
    let cert = params.self_signed(&key)?;
    let der = cert.der().clone();
    let fingerprint = sha256_hex(&der);
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| anyhow::anyhow!("the kubelet port's key: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)?;
    Ok(Identity { tls: Arc::new(config), fingerprint })
}

#[derive(Clone)]
struct Kubelet {
    node: Arc<LocalNode>,
    client: kube::Client,
    token: Arc<str>,
}

/// Serves the kubelet port on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    node: Arc<LocalNode>,
    client: kube::Client,
    token: String,
) {
    let router = axum::Router::new()
        .route("/containerLogs/{ns}/{pod}/{container}", axum::routing::get(container_logs))
        .route("/exec/{ns}/{pod}/{container}", axum::routing::get(exec).post(exec))
        .with_state(Kubelet { node, client, token: token.into() });
    if let Err(e) = pier_apiserver::serve_router(router, listener, Some(tls), std::future::pending()).await {
        tracing::error!(error = %e, "the kubelet port stopped");
    }
}

impl Kubelet {
    /// The request carries the cluster token (compared in constant time).
    fn authorize(&self, headers: &HeaderMap) -> ApiResult<()> {
        let sent = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let expected = format!("Bearer {}", self.token);
        let same = sent.len() == expected.len()
            && sent.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if same { Ok(()) } else { Err(ApiError::new(401, "Unauthorized", "Unauthorized")) }
    }

    async fn pod(&self, ns: &str, name: &str) -> ApiResult<Value> {
        let pods: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), ns);
        match pods.get(name).await {
            Ok(p) => serde_json::to_value(p).map_err(|e| ApiError::internal(e.to_string())),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                Err(ApiError::new(404, "NotFound", format!("pod \"{name}\" not found")))
            }
            Err(e) => Err(ApiError::internal(format!("reading pod {ns}/{name}: {e}"))),
        }
    }
}

async fn container_logs(
    State(k): State<Kubelet>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        k.authorize(&headers)?;
        let pod = k.pod(&ns, &pod).await?;
        let options = LogOptions::from_query(container, &Query::parse(raw.as_deref()))?;
        let stream = k.node.logs(&pod, options).await?;
        let mut resp = Response::new(Body::from_stream(stream.map(Ok::<Bytes, std::convert::Infallible>)));
        resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
        Ok::<_, ApiError>(resp)
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

async fn exec(
    State(k): State<Kubelet>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(e) = k.authorize(&headers) {
        return e.into_response();
    }
    let pod = match k.pod(&ns, &pod).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let q = Query::parse(raw.as_deref());
    let command: Vec<String> = q.all("command").into_iter().map(str::to_string).collect();
    let (stdin, tty) = (q.flag("stdin"), q.flag("tty"));
    let upgrade = upgrade.protocols([streams::V5, streams::V4]);
    let v5 = upgrade.selected_protocol().and_then(|p| p.to_str().ok()) == Some(streams::V5);
    upgrade
        .on_upgrade(move |socket| async move {
            match k.node.exec(&pod, &container, command, stdin, tty).await {
                Ok(session) => streams::bridge(socket, session, v5).await,
                Err(e) => streams::fail(socket, e).await,
            }
        })
        .into_response()
}

/// The API server's node streams: in process for its own node, over the kubelet port for the
/// others.
pub struct Nodes {
    pub local: LocalNode,
    /// The API, for the Node of a pod.
    pub client: kube::Client,
    /// The cluster token, sent to the kubelet port.
    pub token: String,
}

/// Where a node's kubelet port is and which certificate it must present.
struct Remote {
    addr: SocketAddr,
    fingerprint: String,
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(503, "ServiceUnavailable", message)
}

impl Nodes {
    async fn remote(&self, node_name: &str) -> ApiResult<Remote> {
        let nodes: kube::Api<Node> = kube::Api::all(self.client.clone());
        let node = nodes.get(node_name).await.map_err(|e| unavailable(format!("reading node {node_name}: {e}")))?;
        let status = node.status.unwrap_or_default();
        let ip = status
            .addresses
            .iter()
            .flatten()
            .find(|a| a.type_ == "InternalIP")
            .and_then(|a| a.address.parse::<IpAddr>().ok())
            .ok_or_else(|| unavailable(format!("node {node_name} has no InternalIP")))?;
        let port = status
            .daemon_endpoints
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .unwrap_or(PORT);
        let fingerprint = node.metadata.annotations.and_then(|a| a.get(CERT_ANNOTATION).cloned()).ok_or_else(|| {
            unavailable(format!("node {node_name} publishes no kubelet certificate ({CERT_ANNOTATION})"))
        })?;
        Ok(Remote { addr: SocketAddr::new(ip, port), fingerprint })
    }

    /// The pod's node when it is another one than this server's.
    fn node_of<'a>(&self, pod: &'a Value) -> ApiResult<Option<&'a str>> {
        let node = assigned_node(pod)?;
        Ok((node != self.local.node_name).then_some(node))
    }
}

fn pod_path(kind: &str, pod: &Value, container: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "/{kind}/{}/{}/{}",
        enc(pod["metadata"]["namespace"].as_str().unwrap_or("")),
        enc(pod["metadata"]["name"].as_str().unwrap_or("")),
        enc(container)
    )
}

/// Accepts exactly the certificate whose SHA-256 the node published; signatures are checked
/// as usual.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if sha256_hex(end_entity) == self.fingerprint {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("the node's kubelet certificate is not the one its Node publishes".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(remote: &Remote) -> ApiResult<Tls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { fingerprint: remote.fingerprint.clone(), provider }))
        .with_no_client_auth();
    let addr = remote.addr;
    let attempt = async move {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(unavailable(format!("reaching the kubelet port at {addr}: {e}"))),
        Err(_) => {
            Err(unavailable(format!("reaching the kubelet port at {addr}: no answer within {CONNECT_TIMEOUT:?}")))
        }
    }
}

/// An error the node answered with (its `Status` body), as the API server's own.
fn node_error(code: u16, body: &[u8]) -> ApiError {
    let status: Value = serde_json::from_slice(body).unwrap_or_default();
    let message = status["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let reason = match status["reason"].as_str() {
        Some("NotFound") => "NotFound",
        Some("BadRequest") => "BadRequest",
        Some("Unauthorized") => "Unauthorized",
        Some("Forbidden") => "Forbidden",
        Some("ServiceUnavailable") => "ServiceUnavailable",
        _ => "InternalError",
    };
    ApiError::new(code, reason, message)
}

/// Reads websocket frames from the node into an exec session's output.
async fn pump_output<S>(mut rx: S, out: mpsc::Sender<ExecOutput>)
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(Ok(msg)) = rx.next().await {
        let data = match msg {
            Message::Binary(b) => b,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&channel, payload)) = data.split_first() else { continue };
        let item = match channel {
            1 => ExecOutput::Stdout(Bytes::copy_from_slice(payload)),
            2 => ExecOutput::Stderr(Bytes::copy_from_slice(payload)),
            3 => {
                let _ = out.send(ExecOutput::Status(serde_json::from_slice(payload).unwrap_or_default())).await;
                return;
            }
            _ => continue,
        };
        if out.send(item).await.is_err() {
            return;
        }
    }
}

#[async_trait::async_trait]
impl NodeStreams for Nodes {
    async fn logs(&self, pod: &Value, options: LogOptions) -> ApiResult<BoxStream<'static, Bytes>> {
        let Some(node) = self.node_of(pod)? else { return self.local.logs(pod, options).await };
        let remote = self.remote(node).await?;
        let tls = connect(&remote).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| unavailable(format!("the kubelet port of {node}: {e}")))?;
        tokio::spawn(conn);
        let query = options.to_query();
        let uri = format!("{}?{query}", pod_path("containerLogs", pod, &options.container));
        let req = http::Request::get(uri)
            .header(header::HOST, remote.addr.to_string())
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let resp = tokio::time::timeout(CONNECT_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| unavailable(format!("the kubelet port of {node} did not answer")))?
            .map_err(|e| unavailable(format!("the kubelet port of {node}: {e}")))?;
        let status = resp.status();
        let body = resp.into_body();
        if status != StatusCode::OK {
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err(node_error(status.as_u16(), &bytes));
        }
        Ok(Box::pin(
            body.into_data_stream().take_while(|r| std::future::ready(r.is_ok())).filter_map(|r| async { r.ok() }),
        ))
    }

    async fn exec(
        &self,
        pod: &Value,
        container: &str,
        command: Vec<String>,
        stdin: bool,
        tty: bool,
    ) -> ApiResult<ExecSession> {
        let Some(node) = self.node_of(pod)? else {
            return self.local.exec(pod, container, command, stdin, tty).await;
        };
        let remote = self.remote(node).await?;
        let tls = connect(&remote).await?;
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for c in &command {
                q.append_pair("command", c);
            }
            for (key, on) in [("stdin", stdin), ("stdout", true), ("stderr", !tty), ("tty", tty)] {
                if on {
                    q.append_pair(key, "true");
                }
            }
            q.finish()
        };
        let url = format!("wss://{}{}?{query}", remote.addr, pod_path("exec", pod, container));
        let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let h = req.headers_mut();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {}", self.token).parse().map_err(|_| ApiError::internal("token"))?,
        );
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, header::HeaderValue::from_static(streams::V5));
        let (ws, resp) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::client_async(req, tls))
            .await
            .map_err(|_| unavailable(format!("the kubelet port of {node} did not answer")))?
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(r) => {
                    node_error(r.status().as_u16(), r.body().as_deref().unwrap_or_default())
                }
                e => unavailable(format!("exec on node {node}: {e}")),
            })?;
        drop(resp);
        let (mut tx, rx) = ws.split();
        let (out_tx, out_rx) = mpsc::channel::<ExecOutput>(64);
        let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(64);
        let (resize_tx, mut resize_rx) = mpsc::channel::<(u16, u16)>(8);
        let frame = |channel: u8, data: &[u8]| {
            let mut v = Vec::with_capacity(data.len() + 1);
            v.push(channel);
            v.extend_from_slice(data);
            Message::Binary(v.into())
        };
        // Client → node: stdin, its close (v5 channel 255), terminal sizes.
        tokio::spawn(async move {
            let mut stdin_open = stdin;
            loop {
                let msg = tokio::select! {
                    b = in_rx.recv(), if stdin_open => match b {
                        Some(b) => frame(0, &b),
                        None => {
                            stdin_open = false;
                            frame(255, &[0])
                        }
                    },
                    Some((w, h)) = resize_rx.recv() => frame(4, format!("{{\"Width\":{w},\"Height\":{h}}}").as_bytes()),
                    else => break,
                };
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(pump_output(rx, out_tx));
        Ok(ExecSession { stdin: stdin.then_some(in_tx), output: out_rx, resize: tty.then_some(resize_tx) })
    }
}
