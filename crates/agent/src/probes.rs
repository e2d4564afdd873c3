//! Probes as the kubelet runs them: the spec with upstream's defaults, the threshold state
//! machine, and the network checks (HTTP GET and TCP). Exec probes run through the runtime
//! (the caller passes the exit code in).
//!
//! The state machine is pure and is what decides readiness and restarts; the checks are thin.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    Exec { argv: Vec<String> },
    HttpGet { scheme: String, host: Option<String>, port: u16, path: String, headers: Vec<(String, String)> },
    TcpSocket { host: Option<String>, port: u16 },
    Grpc { port: u16, service: Option<String> },
}

/// A probe with every default applied (RDY-01).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub handler: Handler,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// Resolves a probe port: a number, or the name of one of the container's ports.
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok().filter(|p| *p > 0).ok_or_else(|| format!("invalid port {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port: {name} in {}", container.name))
        }
    }
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.and_then(|s| u64::try_from(s).ok()).filter(|s| *s > 0).unwrap_or(default))
}

impl ProbeSpec {
    pub fn from_k8s(probe: &Probe, container: &Container) -> Result<ProbeSpec, String> {
        let handler = if let Some(exec) = &probe.exec {
            Handler::Exec { argv: exec.command.clone().unwrap_or_default() }
        } else if let Some(h) = &probe.http_get {
            Handler::HttpGet {
                scheme: h.scheme.clone().unwrap_or_else(|| "HTTP".into()).to_uppercase(),
                host: h.host.clone().filter(|s| !s.is_empty()),
                port: resolve_port(&h.port, container)?,
                path: h.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into()),
                headers: h.http_headers.iter().flatten().map(|hh| (hh.name.clone(), hh.value.clone())).collect(),
            }
        } else if let Some(t) = &probe.tcp_socket {
            Handler::TcpSocket {
                host: t.host.clone().filter(|s| !s.is_empty()),
                port: resolve_port(&t.port, container)?,
            }
        } else if let Some(g) = &probe.grpc {
            Handler::Grpc {
                port: u16::try_from(g.port).map_err(|_| format!("invalid port {}", g.port))?,
                service: g.service.clone(),
            }
        } else {
            return Err("probe has no handler".into());
        };
        Ok(ProbeSpec {
            handler,
            initial_delay: Duration::from_secs(
                probe.initial_delay_seconds.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
            ),
            period: secs(probe.period_seconds, 10),
            timeout: secs(probe.timeout_seconds, 1),
            success_threshold: probe
                .success_threshold
                .and_then(|s| u32::try_from(s).ok())
                .filter(|s| *s > 0)
                .unwrap_or(1),
            failure_threshold: probe
                .failure_threshold
                .and_then(|s| u32::try_from(s).ok())
                .filter(|s| *s > 0)
                .unwrap_or(3),
        })
    }
}

/// Consecutive results and the current verdict of one probe of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeState {
    successes: u32,
    failures: u32,
    /// `None` until the thresholds first decide.
    pub result: Option<bool>,
}

impl ProbeState {
    /// A state that starts at `initial` (readiness starts failed, liveness succeeded).
    pub fn starting_at(initial: bool) -> Self {
        ProbeState { successes: 0, failures: 0, result: Some(initial) }
    }

    /// Records one probe outcome; returns the new verdict when it changed (RDY-04: only after
    /// `successThreshold` consecutive successes or `failureThreshold` consecutive failures).
    pub fn observe(&mut self, ok: bool, spec: &ProbeSpec) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= spec.success_threshold && self.result != Some(true) {
                self.result = Some(true);
                return Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= spec.failure_threshold && self.result != Some(false) {
                self.result = Some(false);
                return Some(false);
            }
        }
        None
    }
}

/// HTTP GET against `host:port` (RDY-08): success iff the status is 200–399 within `timeout`.
/// HTTPS is probed without verifying certificates, as the kubelet does; pier speaks plain
/// HTTP here and counts an HTTPS endpoint as reachable when the TCP connection opens.
pub async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    scheme: &str,
    timeout: Duration,
) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        if scheme == "HTTPS" {
            return Some(true);
        }
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n");
        let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        if !has("user-agent") {
            req.push_str("User-Agent: kube-probe/1.32\r\n");
        }
        if !has("accept") {
            req.push_str("Accept: */*\r\n");
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.ok()?;
        // The status line is all that matters; the kubelet caps the body it reads at 10 KiB.
        let mut buf = vec![0u8; 10 * 1024];
        let mut len = 0;
        while len < 12 {
            let n = stream.read(&mut buf[len..]).await.ok()?;
            if n == 0 {
                break;
            }
            len += n;
        }
        let line = String::from_utf8_lossy(&buf[..len]);
        let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// TCP check (RDY-09): success iff a connection opens within `timeout`.
pub async fn tcp(host: &str, port: u16, timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await, Ok(Ok(_)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn container() -> Container {
        serde_json::from_value(serde_json::json!({"name": "kubia", "ports": [{"name": "http", "containerPort": 8080}]}))
            .unwrap()
    }

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_and_named_ports() {
        let spec = ProbeSpec::from_k8s(&probe(serde_json::json!({"httpGet": {"port": "http"}})), &container()).unwrap();
        assert_eq!(
            spec,
            ProbeSpec {
                handler: Handler::HttpGet {
                    scheme: "HTTP".into(),
                    host: None,
                    port: 8080,
                    path: "/".into(),
                    headers: vec![]
                },
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        let err =
            ProbeSpec::from_k8s(&probe(serde_json::json!({"tcpSocket": {"port": "nope"}})), &container()).unwrap_err();
        assert_eq!(err, "couldn't find port: nope in kubia");
        let exec = ProbeSpec::from_k8s(
            &probe(serde_json::json!({"exec": {"command": ["ls", "/var/ready"]}, "periodSeconds": 1})),
            &container(),
        )
        .unwrap();
        assert_eq!(exec.handler, Handler::Exec { argv: vec!["ls".into(), "/var/ready".into()] });
        assert_eq!(exec.period, Duration::from_secs(1));
    }

    #[test]
    fn thresholds_decide() {
        let mut spec =
            ProbeSpec::from_k8s(&probe(serde_json::json!({"tcpSocket": {"port": 80}})), &container()).unwrap();
        spec.success_threshold = 2;
        let mut st = ProbeState::starting_at(false);
        assert_eq!(st.observe(true, &spec), None);
        assert_eq!(st.observe(true, &spec), Some(true));
        assert_eq!(st.observe(false, &spec), None);
        assert_eq!(st.observe(false, &spec), None);
        assert_eq!(st.observe(true, &spec), None, "a success resets the failure count");
        assert_eq!(st.observe(false, &spec), None);
        assert_eq!(st.observe(false, &spec), None);
        assert_eq!(st.observe(false, &spec), Some(false));
        assert_eq!(st.observe(false, &spec), None, "no repeated transitions");
    }

    #[tokio::test]
    async fn http_and_tcp_checks_on_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let status = if req.starts_with("GET /ok ") {
                        "200 OK"
                    } else if req.starts_with("GET /redirect ") {
                        "302 Found"
                    } else {
                        "500 Internal Server Error"
                    };
                    let _ = s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
                });
            }
        });
        let t = Duration::from_secs(1);
        assert!(http_get("127.0.0.1", port, "/ok", &[], "HTTP", t).await);
        assert!(http_get("127.0.0.1", port, "/redirect", &[], "HTTP", t).await);
        assert!(!http_get("127.0.0.1", port, "/fail", &[], "HTTP", t).await);
        assert!(tcp("127.0.0.1", port, t).await);
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        assert!(!tcp("127.0.0.1", closed, t).await);
        assert!(!http_get("127.0.0.1", closed, "/", &[], "HTTP", t).await);
    }
}
