//! Moves bytes between the two legs of one TCP connection until both directions end.
//!
//! Each direction splices socket → pipe → socket, so payload never enters userspace; the
//! pipe is made lazily (an idle connection holds no pipe) and reused for the connection's
//! life. If a pipe cannot be had (descriptor limit) or the kernel refuses to splice, that
//! direction falls back to a plain copy. End-of-stream is passed on as a half-close
//! (`shutdown(SHUT_WR)`), so protocols that close one side first keep working. This file
//! knows nothing about backends, balancing or frontends.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{OFlag, SpliceFFlags, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::socket::shutdown_write;

/// Bytes one splice call may move; the pipe's capacity (64 KiB by default) is the real
/// bound, this only has to be at least that.
const SPLICE_CHUNK: usize = 1 << 20;
/// Buffer of the copy fallback, allocated only when that path is taken.
const COPY_BUFFER: usize = 64 * 1024;

/// Bytes moved in each direction once both have ended cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transferred {
    pub(crate) client_to_backend: u64,
    pub(crate) backend_to_client: u64,
}

/// Which leg failed, so logs say which side broke the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error("reading from the {side}: {source}")]
    Read { side: Side, source: io::Error },
    #[error("writing to the {side}: {source}")]
    Write { side: Side, source: io::Error },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Backend,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Backend => "backend",
        })
    }
}

/// Forwards both directions concurrently inside the caller's task (no extra task hop).
/// Returns when both directions have seen end-of-stream and passed it on, or at the
/// first error; the caller then resets both legs.
pub(crate) async fn forward(client: &TcpStream, backend: &TcpStream) -> Result<Transferred, ForwardError> {
    let (client_to_backend, backend_to_client) = tokio::try_join!(
        pump(client, Side::Client, backend, Side::Backend),
        pump(backend, Side::Backend, client, Side::Client),
    )?;
    Ok(Transferred { client_to_backend, backend_to_client })
}

async fn pump(from: &TcpStream, from_side: Side, to: &TcpStream, to_side: Side) -> Result<u64, ForwardError> {
    let read_err = |source| ForwardError::Read { side: from_side, source };
    let write_err = |source| ForwardError::Write { side: to_side, source };

    // Wait for the first byte (or end-of-stream) before paying for a pipe.
    from.readable().await.map_err(read_err)?;
    let Some(pipe) = Pipe::take() else {
        return copy(from, from_side, to, to_side, 0).await;
    };

    let mut total: u64 = 0;
    loop {
        // try_io never yields, so a stream that always has data would otherwise keep its
        // worker thread forever; this yields only once the task's budget is spent.
        tokio::task::coop::consume_budget().await;
        // The pipe is empty here, so EAGAIN can only mean the socket has nothing to read.
        let filled = loop {
            match from.try_io(Interest::READABLE, || splice_io(from, &pipe.write, SPLICE_CHUNK)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => from.readable().await.map_err(read_err)?,
                // Nothing has been moved through the pipe yet: copying loses nothing.
                Err(e) if total == 0 && splice_unsupported(&e) => {
                    return copy(from, from_side, to, to_side, 0).await;
                }
                Err(e) => return Err(read_err(e)),
            }
        };
        if filled == 0 {
            // Drained (every filled byte was written out below), so the next connection
            // may reuse it. Pipes of failed directions may hold bytes and are closed.
            pipe.give_back();
            shutdown_write(to).map_err(write_err)?;
            return Ok(total);
        }
        let mut left = filled;
        while left > 0 {
            match to.try_io(Interest::WRITABLE, || splice_io(&pipe.read, to, left)) {
                Ok(n) => left -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await.map_err(write_err)?,
                Err(e) => return Err(write_err(e)),
            }
        }
        total += filled as u64;
    }
}

/// The fallback: a userspace copy with the same half-close semantics.
async fn copy(
    from: &TcpStream,
    from_side: Side,
    to: &TcpStream,
    to_side: Side,
    mut total: u64,
) -> Result<u64, ForwardError> {
    let mut buf = vec![0u8; COPY_BUFFER];
    // `&TcpStream` is not AsyncRead; readiness plus try_read/try_write is, and keeps both
    // directions on the shared stream without splitting it.
    loop {
        tokio::task::coop::consume_budget().await;
        let n = loop {
            from.readable().await.map_err(|source| ForwardError::Read { side: from_side, source })?;
            match from.try_read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(source) => return Err(ForwardError::Read { side: from_side, source }),
            }
        };
        if n == 0 {
            shutdown_write(to).map_err(|source| ForwardError::Write { side: to_side, source })?;
            return Ok(total);
        }
        let mut written = 0;
        while written < n {
            to.writable().await.map_err(|source| ForwardError::Write { side: to_side, source })?;
            match to.try_write(&buf[written..n]) {
                Ok(m) => written += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(source) => return Err(ForwardError::Write { side: to_side, source }),
            }
        }
        total += n as u64;
    }
}

fn splice_io(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    // SPLICE_F_NONBLOCK covers the pipe end; the socket end is non-blocking already.
    // SIGPIPE from splice into a closed socket is ignored by Rust's runtime, so a dead peer
    // surfaces as EPIPE here.
    splice(from, None, to, None, len, SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK)
        .map_err(io::Error::from)
}

fn splice_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == Errno::EINVAL as i32 || code == Errno::ENOSYS as i32)
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

/// Empty pipes kept per runtime thread: a short connection then costs no pipe2() and no
/// close() of pipe ends. Sized for a few hundred concurrent connections (two pipes each): at
/// 32, a benchmark with 50 connections still made a pipe for a third of them. Capped so an idle
/// proxy holds a bounded number of descriptors (two per pooled pipe).
const POOLED_PIPES_PER_THREAD: usize = 256;

thread_local! {
    static PIPE_POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    fn take() -> Option<Pipe> {
        let pooled = PIPE_POOL.try_with(|pool| pool.borrow_mut().pop()).ok().flatten();
        pooled.or_else(Pipe::new)
    }

    fn give_back(self) {
        // During thread teardown the pool is gone; the pipe is then simply closed.
        let _ = PIPE_POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOLED_PIPES_PER_THREAD {
                pool.push(self);
            }
        });
    }

    fn new() -> Option<Pipe> {
        match nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC) {
            Ok((read, write)) => Some(Pipe { read, write }),
            Err(errno) => {
                tracing::debug!(%errno, "no pipe for splice, copying instead");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Two connected loopback pairs: (outer client, proxy's client leg, proxy's backend
    /// leg, outer backend).
    async fn legs() -> (TcpStream, TcpStream, TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let outer_client = TcpStream::connect(addr).await.expect("connect");
        let (client_leg, _) = listener.accept().await.expect("accept");
        let backend_leg = TcpStream::connect(addr).await.expect("connect");
        let (outer_backend, _) = listener.accept().await.expect("accept");
        (outer_client, client_leg, backend_leg, outer_backend)
    }

    async fn exchange_with_half_close(use_copy: bool) {
        let (mut outer_client, client_leg, backend_leg, mut outer_backend) = legs().await;
        let forwarder = tokio::spawn(async move {
            if use_copy {
                let (a, b) = tokio::join!(
                    copy(&client_leg, Side::Client, &backend_leg, Side::Backend, 0),
                    copy(&backend_leg, Side::Backend, &client_leg, Side::Client, 0),
                );
                (a.expect("c->b"), b.expect("b->c"))
            } else {
                let t = forward(&client_leg, &backend_leg).await.expect("forward");
                (t.client_to_backend, t.backend_to_client)
            }
        });
        let request: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        outer_client.write_all(&request).await.expect("send");
        outer_client.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        outer_backend.read_to_end(&mut got).await.expect("backend reads to EOF");
        assert_eq!(got, request);
        // The backend answers after the client's half-close: the reverse path is still open.
        outer_backend.write_all(b"done").await.expect("reply");
        drop(outer_backend);
        let mut reply = Vec::new();
        outer_client.read_to_end(&mut reply).await.expect("client reads to EOF");
        assert_eq!(reply, b"done");
        let counts = tokio::time::timeout(std::time::Duration::from_secs(5), forwarder)
            .await
            .expect("forwarder ends")
            .expect("join");
        assert_eq!(counts, (request.len() as u64, 4));
    }

    #[tokio::test]
    async fn splice_passes_bytes_and_half_close() {
        exchange_with_half_close(false).await;
    }

    #[tokio::test]
    async fn copy_fallback_passes_bytes_and_half_close() {
        exchange_with_half_close(true).await;
    }

    #[tokio::test]
    async fn a_reset_backend_ends_forwarding_with_a_backend_error() {
        let (_outer_client, client_leg, backend_leg, outer_backend) = legs().await;
        crate::socket::reset(outer_backend);
        let err = tokio::time::timeout(std::time::Duration::from_secs(5), forward(&client_leg, &backend_leg))
            .await
            .expect("ends")
            .expect_err("reset is an error");
        assert!(matches!(err, ForwardError::Read { side: Side::Backend, .. }), "{err}");
    }
}
