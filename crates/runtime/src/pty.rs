//! Pseudo-terminals for `tty: true` containers and `exec -t`: allocation, and async halves of
//! the master side driven by tokio's reactor.
//!
//! The master is opened `O_CLOEXEC` (unlike `openpty(3)`), so a pty never leaks into another
//! child spawned at the same moment. Reading a master whose slave side is closed everywhere
//! fails with `EIO`: that is the terminal's end of file.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

use crate::sys;

/// A fresh pty: the master for the runtime, the slave for the child's stdio.
pub(crate) struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

pub(crate) fn open_pty(rows: u16, cols: u16) -> io::Result<Pty> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname_r(&master)?;
    let slave = open(name.as_str(), OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty())?;
    let master = OwnedFd::from(master);
    sys::set_winsize(master.as_fd(), rows, cols)?;
    Ok(Pty { master, slave })
}

/// Puts a descriptor into non-blocking mode for the reactor.
fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// The readable half of a pty master.
#[derive(Debug)]
pub(crate) struct PtyReader(AsyncFd<OwnedFd>);

/// The writable half of a pty master.
#[derive(Debug)]
pub(crate) struct PtyWriter(AsyncFd<OwnedFd>);

/// Splits a master into two independently registered halves (two descriptors of one open file).
pub(crate) fn split_master(master: OwnedFd) -> io::Result<(PtyReader, PtyWriter)> {
    set_nonblocking(master.as_fd())?;
    let dup = nix::unistd::dup(&master)?;
    Ok((PtyReader(sys::register(master, Interest::READABLE)?), PtyWriter(sys::register(dup, Interest::WRITABLE)?)))
}

/// Only the readable half (a container's terminal: its output goes to the log).
pub(crate) fn reader(master: OwnedFd) -> io::Result<PtyReader> {
    set_nonblocking(master.as_fd())?;
    Ok(PtyReader(sys::register(master, Interest::READABLE)?))
}

impl AsyncRead for PtyReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), unfilled).map_err(io::Error::from)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // The slave side is closed everywhere: end of file.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
