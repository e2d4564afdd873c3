//! UDP frontends: per-client sessions. A session maps one client address (IP and port)
//! to a socket connected to the backend chosen for it; datagrams from the client go out
//! on that socket, replies come back from the frontend socket so the client sees the
//! address it sent to. A session ends after `udp_idle_timeout` without traffic either
//! way, when its backend reports it unreachable, or when its backend leaves the set (as
//! kube-proxy flushes UDP conntrack entries of removed endpoints, so a client that keeps
//! its source port reaches a live backend). This file does not choose backends.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::MsgFlags;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::proxy::Shared;
use crate::socket;

/// Largest UDP payload over IPv4; one buffer of this size per frontend and one per
/// runtime thread for replies, never one per session.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams handled per readiness wake-up before yielding to other tasks.
const BATCH: usize = 256;

thread_local! {
    // Reply path scratch space: sessions borrow it only between two non-blocking calls,
    // never across an await, so one per thread serves every session.
    static REPLY_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_DATAGRAM]);
}

/// What the frontend task and a session's reply task share.
struct Link {
    to_backend: UdpSocket,
    /// Nanoseconds after `epoch` of the last datagram from the client.
    client_seen: AtomicU64,
}

struct Session {
    backend: SocketAddr,
    /// The backend-set generation this session was last checked against.
    generation: u64,
    link: Arc<Link>,
    replies: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // The reply task holds the backend socket; it must not outlive the session entry.
        self.replies.abort();
    }
}

/// The receive side of one frontend; owned by its task alone, so the map needs no lock.
struct UdpFrontend {
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    sessions: HashMap<SocketAddr, Session>,
    epoch: Instant,
}

pub(crate) async fn serve(socket: UdpSocket, shared: Arc<Shared>) {
    let idle = shared.config.udp_idle_timeout;
    let mut frontend =
        UdpFrontend { socket: Arc::new(socket), shared, sessions: HashMap::new(), epoch: Instant::now() };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Ended sessions are removed here rather than by their own task, so the map needs no
    // lock; this bounds how long a finished session's entry lingers.
    let mut sweep = tokio::time::interval(idle.max(Duration::from_millis(100)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            ready = frontend.socket.readable() => {
                if let Err(error) = ready {
                    tracing::warn!(frontend = %frontend.shared.key, %error, "UDP frontend failed");
                    return;
                }
                for _ in 0..BATCH {
                    match frontend.socket.try_recv_from(&mut buf) {
                        Ok((len, client)) => frontend.on_client_datagram(&buf[..len], client),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(error) => tracing::debug!(frontend = %frontend.shared.key, %error, "UDP receive"),
                    }
                }
            }
            _ = sweep.tick() => frontend.sessions.retain(|_, session| !session.replies.is_finished()),
        }
    }
}

impl UdpFrontend {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn on_client_datagram(&mut self, datagram: &[u8], client: SocketAddr) {
        let generation = self.shared.generation();
        let now = self.now();
        if let Some(session) = self.sessions.get_mut(&client) {
            let usable = !session.replies.is_finished()
                && (session.generation == generation || self.shared.serves(session.backend));
            let mut refused = None;
            if usable {
                session.generation = generation;
                session.link.client_seen.store(now, Ordering::Relaxed);
                match send_to_backend(&session.link, datagram, client, session.backend) {
                    Delivery::Sent => return,
                    // The backend's port is closed (ICMP seen on this socket): retry this
                    // very datagram elsewhere instead of losing it.
                    Delivery::Refused => {
                        self.shared.forget(client.ip(), session.backend);
                        refused = Some(session.backend);
                    }
                }
            }
            self.sessions.remove(&client);
            if let Some(dead) = refused {
                self.open_session(datagram, client, generation, now, &[dead]);
                return;
            }
        }
        self.open_session(datagram, client, generation, now, &[]);
    }

    fn open_session(&mut self, datagram: &[u8], client: SocketAddr, generation: u64, now: u64, exclude: &[SocketAddr]) {
        // No backends: the datagram is dropped (the frontend socket is closed altogether
        // while the set stays empty, so only a race with a sync lands here).
        let Some(backend) = self.shared.pick(client.ip(), exclude) else { return };
        let to_backend = match socket::udp_to_backend(backend) {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(frontend = %self.shared.key, %client, %backend, %error, "UDP session socket");
                return;
            }
        };
        let link = Arc::new(Link { to_backend, client_seen: AtomicU64::new(now) });
        // A fresh socket has no pending error, so this cannot be refused yet.
        let _ = send_to_backend(&link, datagram, client, backend);
        let replies = tokio::spawn(relay_replies(
            Arc::clone(&link),
            Arc::clone(&self.socket),
            client,
            backend,
            Arc::clone(&self.shared),
            self.epoch,
        ));
        tracing::debug!(frontend = %self.shared.key, %client, %backend, "UDP session opened");
        self.sessions.insert(client, Session { backend, generation, link, replies });
    }
}

enum Delivery {
    Sent,
    Refused,
}

fn send_to_backend(link: &Link, datagram: &[u8], client: SocketAddr, backend: SocketAddr) -> Delivery {
    // Sends go straight to the kernel rather than through tokio's readiness cache: a new
    // socket has no cached write readiness until the reactor's next turn, and a UDP send
    // practically never blocks. UDP semantics: a full socket buffer drops the datagram rather than queueing it.
    // A refusal (ICMP from a dead backend) also ends the reply task, which ends the session.
    match socket2::SockRef::from(&link.to_backend).send(datagram) {
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => Delivery::Refused,
        Err(error) => {
            tracing::debug!(%client, %backend, %error, "UDP datagram to backend dropped");
            Delivery::Sent
        }
        Ok(_) => Delivery::Sent,
    }
}

/// Sends the backend's datagrams back to the client from the frontend socket, and ends the
/// session once it has been idle both ways for the idle timeout.
async fn relay_replies(
    link: Arc<Link>,
    frontend: Arc<UdpSocket>,
    client: SocketAddr,
    backend: SocketAddr,
    shared: Arc<Shared>,
    epoch: Instant,
) {
    let idle = shared.config.udp_idle_timeout;
    let idle_nanos = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
    let now = || u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let client_addr = socket2::SockAddr::from(client);
    let mut replied = now();
    // The deadline moves lazily: it is re-armed only when it fires, not per datagram.
    let expiry = tokio::time::sleep(idle);
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            biased;
            // ERROR too: an ICMP port-unreachable raises only EPOLLERR, not EPOLLIN.
            ready = link.to_backend.ready(Interest::READABLE | Interest::ERROR) => {
                let ready = match ready {
                    Ok(ready) => ready,
                    Err(error) => {
                        tracing::debug!(%client, %backend, %error, "UDP session failed");
                        return;
                    }
                };
                // `try_io` takes one interest at a time (a combined one reads as never
                // ready). An error-only wake-up is consumed through ERROR, so the recv
                // below reports it instead of the task spinning on an uncleared bit.
                let interest = if ready.is_readable() { Interest::READABLE } else { Interest::ERROR };
                for _ in 0..BATCH {
                    // The reply is sent with a direct syscall, as in `send_to_backend`.
                    let received = REPLY_BUFFER.with_borrow_mut(|buf| {
                        let len = link.to_backend.try_io(interest, || {
                            nix::sys::socket::recv(link.to_backend.as_raw_fd(), buf, MsgFlags::empty())
                                .map_err(io::Error::from)
                        })?;
                        if let Err(error) = socket2::SockRef::from(&*frontend).send_to(&buf[..len], &client_addr) {
                            tracing::debug!(%client, %backend, %error, "UDP reply to client dropped");
                        }
                        Ok::<_, io::Error>(len)
                    });
                    match received {
                        Ok(_) => replied = now(),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(error) => {
                            // ECONNREFUSED: the backend's port is closed. Forget the pin so
                            // the client's next datagram can go elsewhere.
                            tracing::debug!(%client, %backend, %error, "UDP session ended by backend");
                            shared.forget(client.ip(), backend);
                            return;
                        }
                    }
                }
            }
            () = &mut expiry => {
                let last = replied.max(link.client_seen.load(Ordering::Relaxed));
                let current = now();
                if current.saturating_sub(last) >= idle_nanos {
                    tracing::debug!(%client, %backend, "UDP session expired");
                    return;
                }
                let deadline = epoch + Duration::from_nanos(last.saturating_add(idle_nanos));
                expiry.as_mut().reset(tokio::time::Instant::from_std(deadline));
            }
        }
    }
}
