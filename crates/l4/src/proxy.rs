//! [`Proxy`]: reconciles the desired set of frontends against the running ones. A
//! frontend is bound while it has backends and not bound while it has none (the kernel
//! then refuses TCP with RST and UDP with port-unreachable, as upstream rejects Services
//! without endpoints); its backends, choice and affinity are changed in place. It owns
//! the per-frontend state shared with the serving tasks, and knows nothing of how bytes
//! are forwarded.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use socket2::Socket;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::balancer::{self, Balancer, Pins, SharedPins};
use crate::{Frontend, FrontendKey, L4Error, Protocol, ProxyConfig, socket, tcp, udp};

/// State of one frontend shared by `sync` (writer) and its serving tasks (readers).
pub(crate) struct Shared {
    pub(crate) key: FrontendKey,
    pub(crate) config: ProxyConfig,
    balancer: Mutex<Balancer>,
    /// Bumped whenever the backend set changes, so UDP sessions re-check their backend
    /// with one atomic load per datagram instead of a lock.
    generation: AtomicU64,
}

impl Shared {
    fn balancer(&self) -> MutexGuard<'_, Balancer> {
        // A panic while holding the lock cannot leave the balancer inconsistent in a way
        // that matters more than refusing every connection would.
        self.balancer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn pick(&self, client: IpAddr, exclude: &[SocketAddr]) -> Option<SocketAddr> {
        let now = Instant::now();
        self.balancer().pick(client, now, exclude, &mut rand::rng())
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn serves(&self, backend: SocketAddr) -> bool {
        self.balancer().contains(backend)
    }

    pub(crate) fn forget(&self, client: IpAddr, backend: SocketAddr) {
        self.balancer().unpin(client, backend);
    }

    fn update(&self, frontend: &Frontend, pins: Option<SharedPins>) -> bool {
        let mut balancer = self.balancer();
        let changed = balancer.set(&frontend.backends, frontend.choice, pins);
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        !balancer.backends().is_empty()
    }
}

/// The userspace L4 proxy: every frontend it was last told about, served.
///
/// Dropping it (or [`Proxy::shutdown`]) stops every frontend and closes every proxied
/// connection.
pub struct Proxy {
    config: ProxyConfig,
    runtime: Handle,
    frontends: HashMap<FrontendKey, Running>,
    /// ClientIP affinity pins per scope, shared by the scope's frontends.
    pins: HashMap<Scope, SharedPins>,
    closing: watch::Sender<bool>,
}

/// Whose pins a frontend uses: its [`Frontend::affinity_scope`], or its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    Named(String),
    Own(FrontendKey),
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("config", &self.config).field("frontends", &self.frontends.len()).finish()
    }
}

struct Running {
    shared: Arc<Shared>,
    /// Present exactly while the frontend has backends and its socket could be bound.
    serving: Option<Serving>,
}

struct Serving {
    task: JoinHandle<()>,
    /// TCP only: the listener's duplicate descriptor, to stop it synchronously.
    control: Option<Socket>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(control) = &self.control {
            socket::stop_listening(control);
        }
        // For UDP this drops the frontend socket and, through the session map, every
        // session's socket and reply task.
        self.task.abort();
    }
}

impl Proxy {
    /// A proxy with default tunables, serving on the current Tokio runtime.
    ///
    /// # Panics
    /// Outside a Tokio runtime, like `tokio::spawn`.
    pub fn new() -> Proxy {
        Proxy::with_config(ProxyConfig::default())
    }

    /// # Panics
    /// Outside a Tokio runtime, like `tokio::spawn`.
    pub fn with_config(config: ProxyConfig) -> Proxy {
        Proxy::on_runtime(config, Handle::current())
    }

    /// A proxy whose tasks run on `runtime`; `sync` may then be called from any thread.
    pub fn on_runtime(config: ProxyConfig, runtime: Handle) -> Proxy {
        let (closing, _) = watch::channel(false);
        Proxy { config, runtime, frontends: HashMap::new(), pins: HashMap::new(), closing }
    }

    /// Makes the served set equal `desired`: binds new frontends, stops removed ones,
    /// updates the others in place (established connections are never touched; a backend
    /// that left only stops receiving new connections). Idempotent; a frontend that
    /// failed is retried by the next call. Returns the frontends that are not served and
    /// why; every other frontend is served when this returns. A stopped TCP frontend
    /// refuses before this returns; a stopped UDP socket closes as soon as the runtime
    /// drops its aborted task (microseconds later, not synchronously).
    pub fn sync(&mut self, desired: impl IntoIterator<Item = Frontend>) -> Vec<(FrontendKey, L4Error)> {
        let mut errors = Vec::new();
        let mut wanted: HashMap<FrontendKey, Frontend> = HashMap::new();
        for frontend in desired {
            let key = frontend.key();
            if wanted.insert(key, frontend).is_some() {
                errors.push((key, L4Error::Duplicate { key }));
            }
        }

        // Removals first, so a port they free is free for the additions below.
        self.frontends.retain(|key, _| {
            let keep = wanted.contains_key(key);
            if !keep {
                tracing::debug!(frontend = %key, "frontend removed");
            }
            keep
        });

        let _entered = self.runtime.enter();
        let now = Instant::now();
        // Per affinity scope in use: the union of its frontends' backends.
        let mut scopes: HashMap<Scope, HashSet<SocketAddr>> = HashMap::new();
        for (key, frontend) in wanted {
            let pins = frontend.affinity.map(|timeout| {
                let scope = frontend.affinity_scope.clone().map_or(Scope::Own(key), Scope::Named);
                let pins = self.pins.entry(scope.clone()).or_insert_with(|| Pins::shared(timeout, now)).clone();
                balancer::lock(&pins).set_timeout(timeout);
                scopes.entry(scope).or_default().extend(frontend.backends.iter().copied());
                pins
            });
            let running = self.frontends.entry(key).or_insert_with(|| Running {
                shared: Arc::new(Shared {
                    key,
                    config: self.config,
                    balancer: Mutex::new(Balancer::new()),
                    generation: AtomicU64::new(0),
                }),
                serving: None,
            });
            let has_backends = running.shared.update(&frontend, pins);
            if running.serving.as_ref().is_some_and(|s| s.task.is_finished()) {
                running.serving = None;
            }
            if !has_backends {
                if running.serving.take().is_some() {
                    tracing::debug!(frontend = %key, "no backends: refusing");
                }
                continue;
            }
            if running.serving.is_none() {
                match start(&self.runtime, &self.config, &self.closing, &running.shared) {
                    Ok(serving) => {
                        tracing::debug!(frontend = %key, "serving");
                        running.serving = Some(serving);
                    }
                    Err(source) => errors.push((key, L4Error::Bind { key, source })),
                }
            }
        }
        // A scope no frontend uses is dropped; a pin whose backend left every frontend of
        // its scope is forgotten.
        self.pins.retain(|scope, pins| match scopes.get(scope) {
            Some(live) => {
                balancer::lock(pins).retain_backends(live);
                true
            }
            None => false,
        });
        errors
    }

    /// Whether `key` is bound and forwarding right now.
    pub fn is_serving(&self, key: &FrontendKey) -> bool {
        self.frontends.get(key).and_then(|r| r.serving.as_ref()).is_some_and(|s| !s.task.is_finished())
    }

    /// Stops every frontend and closes every proxied connection and UDP session.
    pub fn shutdown(self) {
        drop(self);
    }
}

fn start(
    runtime: &Handle,
    config: &ProxyConfig,
    closing: &watch::Sender<bool>,
    shared: &Arc<Shared>,
) -> std::io::Result<Serving> {
    let key = shared.key;
    match key.protocol {
        Protocol::Tcp => {
            let (listener, control) = socket::tcp_listener(key.addr, config.backlog)?;
            let task = runtime.spawn(tcp::accept_loop(listener, Arc::clone(shared), closing.subscribe()));
            Ok(Serving { task, control: Some(control) })
        }
        Protocol::Udp => {
            let socket = socket::udp_frontend(key.addr)?;
            let task = runtime.spawn(udp::serve(socket, Arc::clone(shared)));
            Ok(Serving { task, control: None })
        }
    }
}

impl Default for Proxy {
    /// # Panics
    /// Outside a Tokio runtime, like [`Proxy::new`].
    fn default() -> Self {
        Proxy::new()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Wakes every connection task; they reset both legs and end.
        self.closing.send_replace(true);
        self.frontends.clear();
    }
}
