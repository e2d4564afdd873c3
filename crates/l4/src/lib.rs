//! The userspace L4 proxy behind `--proxy-mode userspace`: one listener per frontend
//! (address, protocol, port), forwarding TCP and UDP to the frontend's backends.
//!
//! The integrator hands [`Proxy::sync`] the whole desired set of [`Frontend`]s each time
//! (level-triggered, idempotent). This file owns the vocabulary only: the frontend
//! description, the tunables and the error type. It does not know where frontends come
//! from (the desired-state compiler of `crates/proxy`) and holds no sockets.
//!
//! ```no_run
//! # async fn example() -> Result<(), std::net::AddrParseError> {
//! use std::time::Duration;
//! use pier_l4::{Choice, Frontend, Protocol, Proxy};
//!
//! let mut proxy = Proxy::new();
//! let web = Frontend {
//!     addr: "10.96.0.20:80".parse()?,
//!     protocol: Protocol::Tcp,
//!     backends: vec!["10.244.1.5:8080".parse()?, "10.244.2.7:8080".parse()?],
//!     choice: Choice::Random,
//!     affinity: Some(Duration::from_secs(10_800)),
//!     affinity_scope: Some("default/web:http".into()),
//! };
//! for (frontend, error) in proxy.sync(vec![web]) {
//!     tracing::warn!(%frontend, %error, "not served; retried on the next sync");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Code map, in data-flow order:
//! - `proxy.rs` — [`Proxy`]: reconciles the desired set against the running frontends.
//! - `socket.rs` — socket set-up: free-bind listeners, resets, backend connects.
//! - `balancer.rs` — pure backend choice, ClientIP affinity, retry exclusion.
//! - `tcp.rs` — accept loop and one task per connection.
//! - `splice.rs` — byte forwarding: zero-copy `splice` through a pipe, copy fallback.
//! - `udp.rs` — per-client UDP sessions with idle expiry.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

mod balancer;
mod proxy;
mod socket;
mod splice;
mod tcp;
mod udp;

pub use proxy::Proxy;

/// Transport protocol of a frontend. SCTP is not proxied in userspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// How a backend is chosen for a new connection (TCP) or session (UDP) when affinity
/// does not already decide it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Choice {
    /// Uniform random per new connection, as kube-proxy's iptables and nftables modes.
    #[default]
    Random,
    /// Strict rotation over the backend list, as kube-proxy's userspace mode.
    RoundRobin,
}

/// One address the proxy serves and where it forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    /// Address to listen on; need not exist locally (bound with `IP_FREEBIND`).
    pub addr: SocketAddr,
    pub protocol: Protocol,
    /// Usable endpoints. Empty means the frontend refuses (TCP) or rejects (UDP) at once.
    /// Duplicates are ignored; order matters only for [`Choice::RoundRobin`].
    pub backends: Vec<SocketAddr>,
    pub choice: Choice,
    /// `ClientIP` session affinity: the idle timeout after which a client's pin lapses.
    pub affinity: Option<Duration>,
    /// Frontends with the same scope share their affinity pins, so that a client reaches
    /// the same backend through any of them (a Service port's cluster IP, node port,
    /// external and LoadBalancer IPs). `None`: the frontend's pins are its own.
    pub affinity_scope: Option<String>,
}

impl Frontend {
    pub fn key(&self) -> FrontendKey {
        FrontendKey { addr: self.addr, protocol: self.protocol }
    }
}

/// Identity of a frontend across syncs: the same key is updated in place, never rebound
/// while it has backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey {
    pub addr: SocketAddr,
    pub protocol: Protocol,
}

impl fmt::Display for FrontendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol, self.addr)
    }
}

/// Tunables shared by every frontend of one [`Proxy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Bound on one TCP connect to a backend before the next backend is tried. Loopback
    /// and same-node backends refuse in microseconds; this only bites on black holes.
    pub connect_timeout: Duration,
    /// How many distinct backends one TCP connection tries before it is reset.
    pub connect_attempts: usize,
    /// A UDP session with no datagram either way for this long is closed; the client's
    /// next datagram opens a new one (and may pick another backend).
    pub udp_idle_timeout: Duration,
    /// Listen backlog for TCP frontends (the kernel clamps it to `net.core.somaxconn`).
    pub backlog: u32,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(1),
            connect_attempts: 3,
            udp_idle_timeout: Duration::from_secs(30),
            backlog: 4096,
        }
    }
}

/// Why one frontend of a [`Proxy::sync`] is not being served. The others are unaffected,
/// and the next sync retries it.
#[derive(Debug, thiserror::Error)]
pub enum L4Error {
    #[error("cannot listen on {key}: {source}")]
    Bind {
        key: FrontendKey,
        #[source]
        source: io::Error,
    },
    #[error("{key} is listed more than once; the last entry wins")]
    Duplicate { key: FrontendKey },
}
