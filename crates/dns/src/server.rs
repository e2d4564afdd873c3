//! The DNS server: UDP and TCP on one address, answering the cluster zone with [`answer_into`]
//! and sending everything else to the upstream resolvers through the forwarding cache.
//!
//! Sockets are bound with `IP_FREEBIND` so the node agent can bind the kube-dns cluster IP
//! before (or while) that address is on `lo`. UDP runs a few receive loops on one socket; each
//! query that needs upstream work gets its own task, bounded by a semaphore, so a slow upstream
//! never stalls cluster answers. TCP gets one task per connection, queries answered in order.
//! `recvmmsg` batching was left out: tokio does not expose it and the per-packet path is already
//! two syscalls around a lookup; it is the next step if the benchmark asks for it.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::answer::{DEFAULT_MAX_UDP_PAYLOAD, Disposition, Resolve, Transport, answer_into};
use crate::chase;
use crate::forward::{ForwardConfig, Forwarder};
use crate::wire::{self, flag};
use crate::zone::Zone;

/// How the server listens and forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// UDP and TCP address; port 0 picks one free port for both (tests).
    pub listen: SocketAddr,
    /// Resolvers for names outside the cluster domain, tried in turn.
    pub upstreams: Vec<SocketAddr>,
    /// How long one upstream gets to answer one try.
    pub upstream_attempt_timeout: Duration,
    /// How long a forwarded query may take in all before the client gets SERVFAIL.
    pub upstream_deadline: Duration,
    /// The largest UDP response sent, and the size advertised in OPT.
    pub max_udp_payload: u16,
    pub cache_capacity: usize,
    /// Upper bound on how long a forwarded answer is cached, in seconds.
    pub max_cache_ttl: u32,
    pub tcp_idle_timeout: Duration,
    pub max_tcp_connections: usize,
    /// Queries waiting on upstreams at once; beyond this, SERVFAIL at once.
    pub max_inflight_forwards: usize,
    pub udp_workers: usize,
    /// How long shutdown waits for in-flight queries and connections.
    pub drain_timeout: Duration,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, upstreams: Vec<SocketAddr>) -> ServerConfig {
        ServerConfig {
            listen,
            upstreams,
            upstream_attempt_timeout: Duration::from_millis(1000),
            upstream_deadline: Duration::from_millis(2000),
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
            cache_capacity: 10_000,
            max_cache_ttl: 3600,
            tcp_idle_timeout: Duration::from_secs(10),
            max_tcp_connections: 1024,
            max_inflight_forwards: 4096,
            udp_workers: std::thread::available_parallelism().map_or(2, |n| n.get().min(8)),
            drain_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind DNS {proto} on {addr}: {source}")]
    Bind { proto: &'static str, addr: SocketAddr, source: io::Error },
}

/// Nameservers of a resolv.conf (the host's, for the agent), on port 53.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

struct Ctx {
    zone: Zone,
    forwarder: Forwarder,
    config: ServerConfig,
    forwards: Arc<Semaphore>,
    connections: Arc<Semaphore>,
}

/// A bound DNS server; [`Server::run`] serves until shutdown.
pub struct Server {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    local: SocketAddr,
    ctx: Arc<Ctx>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("local", &self.local).finish_non_exhaustive()
    }
}

fn socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv4() {
        s.set_freebind_v4(true)?;
    } else {
        s.set_only_v6(true)?;
        s.set_freebind_v6(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

fn bind_udp(addr: SocketAddr) -> Result<std::net::UdpSocket, ServerError> {
    let err = |source| ServerError::Bind { proto: "udp", addr, source };
    let s = socket(addr, Type::DGRAM, Protocol::UDP).map_err(err)?;
    // Best effort: bursts of queries should queue in the kernel, not be dropped.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into()).map_err(err)?;
    Ok(s.into())
}

fn bind_tcp(addr: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    let err = |source| ServerError::Bind { proto: "tcp", addr, source };
    let s = socket(addr, Type::STREAM, Protocol::TCP).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    s.listen(1024).map_err(err)?;
    Ok(s.into())
}

impl Server {
    /// Binds UDP and TCP on `config.listen`. Must be called inside a tokio runtime.
    pub fn bind(mut config: ServerConfig, zone: Zone) -> Result<Server, ServerError> {
        let (udp, tcp) = {
            let mut tries = 0;
            loop {
                let udp = bind_udp(config.listen)?;
                let port = udp
                    .local_addr()
                    .map_err(|source| ServerError::Bind { proto: "udp", addr: config.listen, source })?
                    .port();
                match bind_tcp(SocketAddr::new(config.listen.ip(), port)) {
                    Ok(tcp) => break (udp, tcp),
                    // Port 0: the UDP port may be taken for TCP; pick another.
                    Err(ServerError::Bind { source, .. })
                        if config.listen.port() == 0 && source.kind() == io::ErrorKind::AddrInUse && tries < 16 =>
                    {
                        tries += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let local =
            udp.local_addr().map_err(|source| ServerError::Bind { proto: "udp", addr: config.listen, source })?;
        let wrap = |source| ServerError::Bind { proto: "udp", addr: local, source };
        let udp = UdpSocket::from_std(udp).map_err(wrap)?;
        let tcp =
            TcpListener::from_std(tcp).map_err(|source| ServerError::Bind { proto: "tcp", addr: local, source })?;
        // Forwarding to ourselves would loop until the deadline.
        config.upstreams.retain(|u| *u != local);
        let forwarder = Forwarder::new(ForwardConfig {
            upstreams: config.upstreams.clone(),
            attempt_timeout: config.upstream_attempt_timeout,
            deadline: config.upstream_deadline,
            cache_capacity: config.cache_capacity,
            max_cache_ttl: config.max_cache_ttl,
        });
        let ctx = Arc::new(Ctx {
            zone,
            forwarder,
            forwards: Arc::new(Semaphore::new(config.max_inflight_forwards.max(1))),
            connections: Arc::new(Semaphore::new(config.max_tcp_connections.max(1))),
            config,
        });
        Ok(Server { udp: Arc::new(udp), tcp, local, ctx })
    }

    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `shutdown` completes, then stops accepting and waits up to
    /// `drain_timeout` for queries in flight.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { udp, tcp, local, ctx } = self;
        tracing::info!(%local, upstreams = ?ctx.config.upstreams, "DNS server serving");
        let (stop, stopped) = watch::channel(false);
        let mut loops = JoinSet::new();
        for _ in 0..ctx.config.udp_workers.max(1) {
            loops.spawn(udp_loop(ctx.clone(), udp.clone(), stopped.clone()));
        }
        loops.spawn(tcp_loop(ctx.clone(), tcp, stopped.clone()));
        shutdown.await;
        let _ = stop.send(true);
        while loops.join_next().await.is_some() {}
        let drain = async {
            let forwards = ctx.config.max_inflight_forwards.max(1) as u32;
            let connections = ctx.config.max_tcp_connections.max(1) as u32;
            let _a = ctx.forwards.acquire_many(forwards).await;
            let _b = ctx.connections.acquire_many(connections).await;
        };
        if tokio::time::timeout(ctx.config.drain_timeout, drain).await.is_err() {
            tracing::info!(%local, "DNS server stopped with queries still in flight");
        }
        tracing::info!(%local, "DNS server stopped");
    }
}

/// The answer to a query that needs upstream work (forwarding or an ExternalName target).
async fn upstream_work(
    ctx: &Ctx,
    query: &[u8],
    work: Disposition,
    partial: Vec<u8>,
    transport: Transport,
) -> Option<Vec<u8>> {
    let limit = crate::answer::response_limit(query, transport);
    match work {
        Disposition::Forward => ctx.forwarder.forward(query, limit, transport == Transport::Tcp).await,
        Disposition::Resolve(Resolve { name, qtype }) => {
            let upstream = match chase::upstream_query(&name, qtype, rand::random()) {
                Some(q) => ctx.forwarder.forward(&q, usize::from(u16::MAX), false).await,
                None => None,
            };
            let usable = upstream.filter(|r| wire::get_u16(r, 2).is_some_and(|f| f & 0xF == 0 && f & flag::QR != 0));
            Some(chase::merge_chased(&partial, usable.as_deref(), limit))
        }
        Disposition::Reply => Some(partial),
        Disposition::Drop => None,
    }
}

async fn udp_loop(ctx: Arc<Ctx>, sock: Arc<UdpSocket>, mut stopped: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(usize::from(ctx.config.max_udp_payload));
    let transport = Transport::Udp { max_payload: ctx.config.max_udp_payload };
    loop {
        let (n, peer) = tokio::select! {
            _ = stopped.changed() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS UDP receive failed");
                    continue;
                }
            },
        };
        let query = &buf[..n];
        match answer_into(&ctx.zone, query, transport, &mut out) {
            Disposition::Reply => {
                if let Err(e) = sock.send_to(&out, peer).await {
                    tracing::debug!(%peer, error = %e, "DNS UDP send failed");
                }
            }
            Disposition::Drop => {}
            work => {
                let Ok(permit) = ctx.forwards.clone().try_acquire_owned() else {
                    if let Some(resp) = crate::answer::error_response(query, wire::rcode::SERVFAIL) {
                        let _ = sock.send_to(&resp, peer).await;
                    }
                    continue;
                };
                let (ctx, sock, query, partial) = (ctx.clone(), sock.clone(), query.to_vec(), out.clone());
                // A span per query that leaves the process; cluster answers get none, at
                // hundreds of thousands a second a span each would cost more than the answer.
                let span = tracing::debug_span!("dns_upstream", %peer);
                tokio::spawn(
                    async move {
                        let _permit = permit;
                        if let Some(resp) = upstream_work(&ctx, &query, work, partial, transport).await
                            && let Err(e) = sock.send_to(&resp, peer).await
                        {
                            tracing::debug!(error = %e, "DNS UDP send failed");
                        }
                    }
                    .instrument(span),
                );
            }
        }
    }
}

async fn tcp_loop(ctx: Arc<Ctx>, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stopped.changed() => return,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::debug!(error = %e, "DNS TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = ctx.connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many DNS TCP connections; closing");
            continue;
        };
        let (ctx, stopped) = (ctx.clone(), stopped.clone());
        tokio::spawn(
            async move {
                let _permit = permit;
                if let Err(e) = tcp_connection(&ctx, stream, stopped).await {
                    tracing::debug!(error = %e, "DNS TCP connection ended");
                }
            }
            .instrument(tracing::debug_span!("dns_tcp", %peer)),
        );
    }
}

/// RFC 7766: 2-byte length framing, several queries per connection, closed when idle.
async fn tcp_connection(ctx: &Ctx, mut stream: TcpStream, mut stopped: watch::Receiver<bool>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let idle = ctx.config.tcp_idle_timeout;
    let mut out = Vec::new();
    loop {
        let len = tokio::select! {
            _ = stopped.changed() => return Ok(()),
            r = tokio::time::timeout(idle, stream.read_u16()) => match r {
                Ok(Ok(len)) => len,
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()),
            },
        };
        let mut query = vec![0u8; usize::from(len)];
        tokio::time::timeout(idle, stream.read_exact(&mut query))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "query body not received"))??;
        let upstream;
        let resp = match answer_into(&ctx.zone, &query, Transport::Tcp, &mut out) {
            Disposition::Drop => return Ok(()),
            Disposition::Reply => &out,
            work => {
                upstream = upstream_work(ctx, &query, work, std::mem::take(&mut out), Transport::Tcp).await;
                match &upstream {
                    Some(r) => r,
                    None => return Ok(()),
                }
            }
        };
        let Ok(len) = u16::try_from(resp.len()) else { return Ok(()) };
        let mut framed = Vec::with_capacity(resp.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(resp);
        tokio::time::timeout(idle, stream.write_all(&framed))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "response not sent"))??;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The agent binds the kube-dns cluster IP before it is on `lo`; only loopback is used
    /// here, so the option itself is checked.
    #[test]
    fn sockets_are_freebind() {
        for (addr, v4) in [("127.0.0.1:0", true), ("[::1]:0", false)] {
            let s = socket(addr.parse().unwrap(), Type::DGRAM, Protocol::UDP).unwrap();
            let on = if v4 { s.freebind_v4().unwrap() } else { s.freebind_v6().unwrap() };
            assert!(on, "{addr}");
        }
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver ::1\nnameserver fe80::1%eth0\noptions ndots:1\n";
        let got: Vec<String> = upstreams_from_resolv_conf(text).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["127.0.0.53:53", "[::1]:53"]);
    }
}
