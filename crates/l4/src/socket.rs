//! Socket set-up the rest of the crate must not repeat: frontend sockets that bind an
//! address before (or without) it existing locally, the listener "control" handle that
//! stops a TCP frontend synchronously, resets, and UDP sockets connected to a backend.
//! Only safe wrappers (socket2, std, tokio) are used; nothing here forwards bytes.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// A frontend socket bound with `SO_REUSEADDR` (a restarted or re-added frontend binds
/// past TIME_WAIT and past a listener that was stopped but not yet dropped) and
/// `IP_FREEBIND` (a Service IP such as 10.96.0.20 need not be assigned to an interface).
fn bind(addr: SocketAddr, ty: Type) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, None)?;
    socket.set_reuse_address(true)?;
    match addr {
        SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
        SocketAddr::V6(_) => {
            // Otherwise [::]:port would also claim 0.0.0.0:port and collide with the v4 twin.
            socket.set_only_v6(true)?;
            socket.set_freebind_v6(true)?;
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A listening TCP frontend plus a duplicate of its descriptor kept outside the accept
/// task, so [`stop_listening`] can take effect before `sync` returns instead of whenever
/// the aborted task is dropped.
pub(crate) fn tcp_listener(addr: SocketAddr, backlog: u32) -> io::Result<(TcpListener, Socket)> {
    let socket = bind(addr, Type::STREAM)?;
    // Accepted sockets inherit TCP_NODELAY from the listener: one syscall per frontend
    // instead of one per connection on the client leg.
    socket.set_tcp_nodelay(true)?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    let control = socket.try_clone()?;
    let listener = TcpListener::from_std(std::net::TcpListener::from(socket))?;
    Ok((listener, control))
}

/// Stops a listener in place. On Linux `shutdown(SHUT_RD)` of a listening socket
/// disconnects it: it leaves LISTEN (new SYNs are answered with RST, so clients see
/// "connection refused" at once), resets connections still in the accept queue, and
/// wakes the accept task. The port is free for a new listener from then on.
pub(crate) fn stop_listening(control: &Socket) {
    if let Err(error) = control.shutdown(Shutdown::Read) {
        tracing::debug!(%error, "stopping a listener");
    }
}

pub(crate) fn udp_frontend(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = bind(addr, Type::DGRAM)?;
    UdpSocket::from_std(std::net::UdpSocket::from(socket))
}

/// A UDP socket of the backend's family, on an ephemeral port, connected to `backend` so
/// the kernel filters replies to that backend and reports ICMP errors to us.
pub(crate) fn udp_to_backend(backend: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(backend), Type::DGRAM, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&backend.into())?;
    UdpSocket::from_std(std::net::UdpSocket::from(socket))
}

/// Closes with RST instead of FIN: what a client must see when it cannot be served, and
/// how an abort on one leg is passed on to the other.
pub(crate) fn reset(stream: TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Half-close toward `stream`'s peer: our sending side is done.
pub(crate) fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    match SockRef::from(stream).shutdown(Shutdown::Write) {
        // The peer already closed; there is nobody left to tell.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay() {
        let (listener, _control) = tcp_listener("127.0.0.1:0".parse().expect("addr"), 16).expect("listen");
        let addr = listener.local_addr().expect("local addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        assert!(accepted.nodelay().expect("nodelay"));
        drop(client);
    }

    #[tokio::test]
    async fn stopped_listener_refuses_and_frees_the_port() {
        let (listener, control) = tcp_listener("127.0.0.1:0".parse().expect("addr"), 16).expect("listen");
        let addr = listener.local_addr().expect("local addr");
        stop_listening(&control);
        let err = TcpStream::connect(addr).await.expect_err("must be refused");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        // The old socket is still open (both handles alive) and the port binds again.
        let (again, _control2) = tcp_listener(addr, 16).expect("rebind after stop");
        assert!(TcpStream::connect(addr).await.is_ok());
        drop((listener, control, again));
    }

    /// Binds a Service-like address that no interface has. Runs on a thread moved into a
    /// fresh, empty network namespace so the address is foreign and nothing can leave.
    #[test]
    fn binds_an_address_that_is_not_local() {
        let outcome = std::thread::spawn(|| -> Result<(), String> {
            if let Err(errno) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                return Err(format!("skipped: cannot unshare a network namespace ({errno})"));
            }
            // With lo down the kernel has no local table to say "not local" from and binds
            // anything; lo up makes the control assertion below meaningful. The child
            // inherits this thread's namespace.
            match std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status() {
                Ok(status) if status.success() => {}
                other => return Err(format!("skipped: cannot bring lo up in the namespace ({other:?})")),
            }
            let vip: SocketAddr = "10.96.0.20:80".parse().map_err(|e| format!("{e}"))?;
            let plain = std::net::TcpListener::bind(vip).map(|_| ()).map_err(|e| e.kind());
            assert_eq!(plain, Err(io::ErrorKind::AddrNotAvailable), "the address must really be foreign");
            let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(|e| format!("{e}"))?;
            let _guard = rt.enter();
            tcp_listener(vip, 16).map_err(|e| format!("tcp freebind: {e}"))?;
            udp_frontend(vip).map_err(|e| format!("udp freebind: {e}"))?;
            Ok(())
        })
        .join()
        .expect("namespace thread");
        match outcome {
            Ok(()) => {}
            Err(skip) if skip.starts_with("skipped") => eprintln!("{skip}"),
            Err(failure) => panic!("{failure}"),
        }
    }
}
