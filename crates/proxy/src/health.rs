//! kube-proxy's health and metrics endpoints for pier's data plane: `/healthz` (200 with
//! `lastUpdated` while the rules are current, 503 when a sync is overdue) and `/metrics`
//! (Prometheus text: the network programming latency histogram and sync counters).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::sync::Health;

/// A sync older than this while changes are pending makes `/healthz` fail, as kube-proxy's
/// `--healthz-bind-address` check does after twice its sync period.
const STALE: Duration = Duration::from_secs(60);

/// Upstream's buckets for `kubeproxy_network_programming_duration_seconds`, in seconds.
const BUCKETS: [f64; 20] =
    [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0];

/// `t` in RFC 3339 (UTC, whole seconds), as kube-proxy's `lastUpdated` and `currentTime`.
fn rfc3339(t: SystemTime) -> String {
    match jiff::Timestamp::try_from(t) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        // Outside jiff's range (years -9999..=9999): not a clock this process runs under.
        Err(_) => String::new(),
    }
}

/// The body and status of `/healthz`.
pub fn healthz(health: &Health) -> (u16, String) {
    let h = health.snapshot();
    let now = SystemTime::now();
    let last = h.last_updated;
    let healthy = last.is_some_and(|t| now.duration_since(t).unwrap_or_default() < STALE || !h.pending);
    let body = format!(
        "{{\"lastUpdated\": \"{}\",\"currentTime\": \"{}\", \"nodeEligible\": true}}",
        last.map(rfc3339).unwrap_or_default(),
        rfc3339(now)
    );
    (if healthy { 200 } else { 503 }, body)
}

/// The Prometheus text of `/metrics`.
pub fn metrics(health: &Health) -> String {
    let h = health.snapshot();
    let mut out = String::new();
    let name = "kubeproxy_network_programming_duration_seconds";
    let _ = writeln!(out, "# HELP {name} In Cluster Network Programming Latency in seconds");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for b in BUCKETS {
        let n = h.programming_latencies.iter().filter(|l| **l <= b).count();
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {n}");
    }
    let total = h.programming_latencies.len();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum {}", h.programming_latencies.iter().sum::<f64>());
    let _ = writeln!(out, "{name}_count {total}");
    let _ = writeln!(out, "# HELP kubeproxy_sync_full_proxy_rules_total Full syncs of the data plane");
    let _ = writeln!(out, "# TYPE kubeproxy_sync_full_proxy_rules_total counter");
    let _ = writeln!(out, "kubeproxy_sync_full_proxy_rules_total {}", h.full_syncs);
    let _ = writeln!(out, "# HELP kubeproxy_sync_partial_proxy_rules_total Partial syncs of the data plane");
    let _ = writeln!(out, "# TYPE kubeproxy_sync_partial_proxy_rules_total counter");
    let _ = writeln!(out, "kubeproxy_sync_partial_proxy_rules_total {}", h.partial_syncs);
    if let Some(t) = h.last_updated {
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let _ = writeln!(
            out,
            "# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds The last time proxy rules were successfully synced"
        );
        let _ = writeln!(out, "# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge");
        let _ = writeln!(out, "kubeproxy_sync_proxy_rules_last_timestamp_seconds {secs}");
    }
    let _ = writeln!(out, "# HELP pier_proxy_services Services the data plane serves");
    let _ = writeln!(out, "# TYPE pier_proxy_services gauge");
    let _ = writeln!(out, "pier_proxy_services {}", h.services);
    out
}

/// Serves `/healthz`, `/livez` and `/metrics` (and `/proxyMode`) on `listener` until the
/// process ends.
pub async fn serve(listener: tokio::net::TcpListener, health: Arc<Health>, mode: &'static str) -> std::io::Result<()> {
    let h1 = health.clone();
    let h2 = health.clone();
    let router = Router::new()
        .route(
            "/healthz",
            get(move || {
                let (code, body) = healthz(&h1);
                async move {
                    (
                        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
                        [(header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                        .into_response()
                }
            }),
        )
        .route("/livez", get(|| async { "ok" }))
        .route("/proxyMode", get(move || async move { mode }))
        .route(
            "/metrics",
            get(move || {
                let body = metrics(&h2);
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response() }
            }),
        );
    axum::serve(listener, router).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_in_whole_seconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
    }
}
