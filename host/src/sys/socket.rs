//! Socket calls the standard library does not offer: `recv` with flags
//! into a caller's buffer, `send` with flags, a wait for readability with a
//! timeout, the count of bytes queued for reading, a readiness check
//! without accepting, and a shutdown by descriptor.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// `MSG_DONTWAIT`: one `recv` that does not wait, even on a blocking
/// socket.
pub const DONT_WAIT: libc::c_int = libc::MSG_DONTWAIT;

/// One `recv` of up to `len` bytes from `fd` into `buf` with `flags`,
/// repeated when a signal interrupts it: how many bytes arrived (0 at end
/// of stream).
///
/// # Safety
///
/// `buf` must be valid for writes of `len` bytes.
pub unsafe fn recv(fd: RawFd, buf: *mut u8, len: usize, flags: libc::c_int) -> io::Result<usize> {
    loop {
        // SAFETY: the caller vouches for `buf` and `len`; a bad `fd` is an
        // error, not undefined behaviour.
        let n = unsafe { libc::recv(fd, buf.cast(), len, flags) };
        if let Ok(n) = usize::try_from(n) {
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// One `send` of `data` on `fd` with `flags` (never raising `SIGPIPE`),
/// repeated when a signal interrupts it: how many bytes went out.
pub fn send(fd: RawFd, data: &[u8], flags: libc::c_int) -> io::Result<usize> {
    loop {
        // SAFETY: `data` is valid for reads of `data.len()` bytes; a bad
        // `fd` is an error, not undefined behaviour.
        let n = unsafe {
            libc::send(
                fd,
                data.as_ptr().cast(),
                data.len(),
                flags | libc::MSG_NOSIGNAL,
            )
        };
        if let Ok(n) = usize::try_from(n) {
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Waits until one of `fds` is readable (or closed): `true`, or `false`
/// once `timeout` passed (`None`: no limit). A signal does not end the
/// wait early.
pub fn wait_readable(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<bool> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let wait_ms = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Rounded up, so a wait never ends before its deadline.
                let ms = left.as_micros().div_ceil(1000);
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
        };
        let count = libc::nfds_t::try_from(polled.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: `count` valid pollfds.
        let ready = unsafe { libc::poll(polled.as_mut_ptr(), count, wait_ms) };
        match ready {
            n if n > 0 => return Ok(true),
            0 if deadline.is_some_and(|d| Instant::now() >= d) => return Ok(false),
            0 => {}
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

/// How many bytes are queued for reading on `fd` (`FIONREAD`); `None`
/// when the call fails.
pub fn bytes_queued(fd: RawFd) -> Option<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD stores one `c_int` through the pointer.
    let status = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued) };
    if status != 0 {
        return None;
    }
    usize::try_from(queued).ok()
}

/// Whether `fd` is readable right now (for a listening socket: a
/// connection waits in its backlog), without waiting.
pub fn is_readable(fd: RawFd) -> bool {
    let mut poll_fd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let ready = unsafe { libc::poll(&mut poll_fd, 1, 0) };
    ready > 0 && poll_fd.revents & libc::POLLIN != 0
}

/// Shuts both directions of the socket `fd` down, waking whoever waits on
/// it; failures (a peer already gone) are ignored.
///
/// # Safety
///
/// `fd` must be an open socket: a closed descriptor number may have been
/// reused by another file.
pub unsafe fn shutdown_both(fd: RawFd) {
    // SAFETY: the caller vouches that `fd` is an open socket.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}
