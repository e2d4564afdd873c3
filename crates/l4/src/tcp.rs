//! TCP frontends: the accept loop and the life of one proxied connection (choose a
//! backend, connect with a bound and retries, forward, close). One task per connection,
//! spawned straight from the accept loop, so a bug or a stall kills one connection only.
//! Connection tasks are not tied to their frontend: removing a frontend or a backend stops
//! new connections only, and established ones drain on their own.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::proxy::Shared;
use crate::socket;
use crate::splice;

/// Back-off when accept fails for lack of resources (EMFILE and friends): spinning on
/// accept would only burn the CPU the existing connections need to finish and free fds.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, closing: watch::Receiver<bool>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(serve_connection(client, peer, Arc::clone(&shared), closing.clone()));
            }
            Err(error) => match error.kind() {
                // The client gave up between SYN and accept: nothing to do for it.
                io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset => {}
                // The listener was stopped (shutdown(SHUT_RD) disconnects it).
                io::ErrorKind::InvalidInput => {
                    tracing::debug!(frontend = %shared.key, "listener stopped");
                    return;
                }
                _ => {
                    tracing::warn!(frontend = %shared.key, %error, "accept failed; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
}

async fn serve_connection(
    client: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut closing: watch::Receiver<bool>,
) {
    let Some((backend_stream, backend)) = connect_backend(&shared, peer).await else {
        // No backend at all (the set emptied after accept) or every attempt failed: an
        // immediate reset, never a silent hang.
        socket::reset(client);
        return;
    };
    let frontend = shared.key;
    // The connection owes nothing to its frontend from here on (draining).
    drop(shared);

    let outcome = tokio::select! {
        biased;
        outcome = splice::forward(&client, &backend_stream) => Some(outcome),
        // A dropped Proxy counts as a shutdown too (`changed` fails once the sender is gone).
        _ = closing.wait_for(|closing| *closing) => None,
    };
    match outcome {
        Some(Ok(moved)) => {
            tracing::debug!(%frontend, client = %peer, %backend, sent = moved.client_to_backend,
                received = moved.backend_to_client, "connection closed");
        }
        Some(Err(error)) => {
            tracing::debug!(%frontend, client = %peer, %backend, %error, "connection aborted");
            socket::reset(client);
            socket::reset(backend_stream);
        }
        None => {
            tracing::debug!(%frontend, client = %peer, %backend, "connection closed by proxy shutdown");
            socket::reset(client);
            socket::reset(backend_stream);
        }
    }
}

/// Picks and connects, trying up to `connect_attempts` distinct backends. The exclusion
/// list allocates only once an attempt has failed.
async fn connect_backend(shared: &Shared, peer: SocketAddr) -> Option<(TcpStream, SocketAddr)> {
    let mut failed: Vec<SocketAddr> = Vec::new();
    for _ in 0..shared.config.connect_attempts.max(1) {
        let backend = shared.pick(peer.ip(), &failed)?;
        match tokio::time::timeout(shared.config.connect_timeout, TcpStream::connect(backend)).await {
            Ok(Ok(stream)) => {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%backend, %error, "TCP_NODELAY on the backend leg");
                }
                return Some((stream, backend));
            }
            Ok(Err(error)) => {
                tracing::debug!(frontend = %shared.key, client = %peer, %backend, %error, "backend connect failed");
            }
            Err(_) => {
                tracing::debug!(frontend = %shared.key, client = %peer, %backend, "backend connect timed out");
            }
        }
        failed.push(backend);
    }
    None
}
