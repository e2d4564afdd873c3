//! The few system calls that have no safe wrapper: taking a terminal between `fork` and `exec`,
//! pidfds, and terminal ioctls.
//!
//! Why `unsafe` is allowed here and only here: `pre_exec` is unsafe because its closure runs in
//! the forked child of a multi-threaded process, where only async-signal-safe operations are
//! allowed; `pidfd_open`, `pidfd_send_signal` and the TTY ioctls are raw syscalls that nix does
//! not wrap; registering a descriptor with tokio's reactor is unsafe because the reactor must
//! not outlive the descriptor. Each block says what makes it sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::signal::Signal;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Makes `cmd`'s child, when it has a terminal, the leader of a new session whose controlling
/// terminal is its stdin (what a shell on a TTY expects). The child is forked for this (a
/// `pre_exec` step rules out `posix_spawn`); processes without a terminal are spawned without
/// copying the agent's page tables.
pub(crate) fn take_terminal_before_exec(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure only makes two system calls (setsid, ioctl) on no data of the parent;
    // it allocates nothing and takes no locks, so it is async-signal-safe. Errors become
    // io::Error from a raw errno (no allocation) and fail the spawn.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A pidfd for `pid`. Taken right after spawning a child, before anything can reap it, the
/// pidfd names that very process forever: signals through it can never hit a recycled pid.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes two integers and returns a new file descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor (O_CLOEXEC by design); nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// Sends `sig` through a pidfd; `ESRCH` once the process has exited.
pub(crate) fn pidfd_send_signal(fd: BorrowedFd<'_>, sig: Signal) -> io::Result<()> {
    // SAFETY: pidfd_send_signal(2) with a valid fd, a signal number, a null siginfo and no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Sets a terminal's window size (what `kubectl exec -t` sends on resize).
pub(crate) fn set_winsize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one struct winsize from the pointer, which outlives the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws as *const libc::winsize) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Registers a descriptor with tokio's reactor (for a pty master).
pub(crate) fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd takes ownership of the OwnedFd, so the descriptor stays open (and is
    // not replaced) for exactly as long as it is registered, and is closed only when dropped.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(io::Error::from)
}
