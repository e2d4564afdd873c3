//! The Kubernetes API server of pier: REST over HTTPS for the resources of
//! `pier_api::resources`, with discovery, OpenAPI, watch, patch and apply, admission and
//! Service IP / node port allocation, over any [`pier_store::Store`].
//!
//! Entry point: [`ApiServer::start`] prepares the store (allocations, system objects,
//! background collectors) and [`ApiServer::serve`] answers on a listener until shutdown.

pub mod alloc;
pub mod bootstrap;
pub mod discovery;
pub mod error;
pub mod events;
pub mod gc;
pub mod handlers;
pub mod registry;
pub mod request;
pub mod streams;
pub mod watch;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use pier_store::Store;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use crate::alloc::Allocators;
use crate::handlers::AppState;
use crate::registry::Registry;

/// What the API server needs to know about the cluster.
#[derive(Debug, Clone)]
pub struct Config {
    /// One CIDR, or an IPv4,IPv6 pair for dual-stack.
    pub service_cidrs: Vec<IpNet>,
    pub node_port_range: (u16, u16),
    /// Where pods reach this server: the `kubernetes` Service's endpoint.
    pub advertise: (IpAddr, u16),
    /// The bearer token clients must send; `None` disables authentication.
    pub token: Option<String>,
    /// How often history is compacted (upstream: 5 minutes).
    pub compaction_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("store: {0}")]
    Store(#[from] pier_store::StoreError),
    #[error("bootstrap: {0}")]
    Bootstrap(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// A started API server.
pub struct ApiServer {
    state: Arc<AppState>,
}

impl ApiServer {
    /// Rebuilds allocations from the store, creates the system objects and starts the
    /// garbage collector and compaction.
    pub async fn start(config: Config, store: Arc<dyn Store>, server_address: String) -> Result<ApiServer, ServeError> {
        let cidr =
            config.service_cidrs.first().copied().ok_or_else(|| ServeError::Bootstrap("no service CIDR".into()))?;
        let alloc = Allocators::new(&config.service_cidrs, config.node_port_range.0, config.node_port_range.1);
        let kubernetes_ip = alloc.ips[0].nth(1);
        let dns_ip = alloc.ips[0].nth(10);
        let registry = Registry { store: store.clone(), alloc: Arc::new(Mutex::new(alloc)) };
        let services = registry.rebuild_allocations().await?;
        tracing::info!(services, %cidr, "allocations rebuilt from stored Services");
        bootstrap::run(&registry, kubernetes_ip, dns_ip, config.advertise)
            .await
            .map_err(|e| ServeError::Bootstrap(e.message))?;
        tokio::spawn(gc::run(registry.clone()));
        tokio::spawn(compact_periodically(store, config.compaction_interval));
        let state = Arc::new(AppState {
            registry,
            token: config.token.clone(),
            server_address,
            ready: Arc::new(AtomicBool::new(true)),
            nodes: std::sync::RwLock::new(None),
        });
        Ok(ApiServer { state })
    }

    /// The `/readyz` flag: the binary lowers it until the node is ready too.
    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        self.state.ready.clone()
    }

    pub fn set_ready(&self, ready: bool) {
        self.state.ready.store(ready, Ordering::SeqCst);
    }

    /// Connects the node agent that serves `pods/log` and `pods/exec`.
    pub fn set_node_streams(&self, nodes: Arc<dyn streams::NodeStreams>) {
        if let Ok(mut n) = self.state.nodes.write() {
            *n = Some(nodes);
        }
    }

    pub fn router(&self) -> Router {
        Router::new().fallback(handlers::handle).with_state(self.state.clone())
    }

    /// Serves HTTPS (or plain HTTP when `tls` is `None`) on `listener` until `shutdown`
    /// completes. One task per connection.
    pub async fn serve(
        &self,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        serve_router(self.router(), listener, tls, shutdown).await
    }
}

/// Serves `router` on `listener` (HTTP/1.1 and HTTP/2, with upgrades; TLS when `tls` is given)
/// until `shutdown` completes. The node agent's kubelet port uses it too.
pub async fn serve_router(
    router: axum::Router,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let result = match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Like upstream, compacts every interval to the revision seen at the previous tick, so at
/// least one interval of history stays available to watchers.
async fn compact_periodically(store: Arc<dyn Store>, every: Duration) {
    let mut previous: Option<i64> = None;
    loop {
        tokio::time::sleep(every).await;
        if let Some(rev) = previous
            && rev > 0
            && let Err(e) = store.compact(rev).await
        {
            tracing::warn!(error = %e, "compaction failed");
        }
        previous = store.current_revision().await.ok();
    }
}
