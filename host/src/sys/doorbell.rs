//! A [`Doorbell`]: an `eventfd` another thread rings to wake whoever waits
//! on it, together with a socket ([`wait_for_either`]) or on an event loop
//! (its descriptor is pollable). A handler-world connection waiting for
//! its client or a topic message waits on one.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A non-blocking `eventfd`: [`ring`](Doorbell::ring) makes it readable
/// until [`answer`](Doorbell::answer) empties it.
#[derive(Debug)]
pub struct Doorbell(OwnedFd);

impl Doorbell {
    /// A new, silent doorbell (one descriptor).
    pub fn new() -> io::Result<Self> {
        // SAFETY: no pointers; the flags are valid for eventfd(2).
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the doorbell readable. Never blocks: rung again before it is
    /// answered, it stays rung once (the counter only saturates after
    /// 2^64 - 2 rings, and a failed write leaves it rung anyway).
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`, as eventfd(2) expects.
        unsafe {
            libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8);
        }
    }

    /// Empties the doorbell: whether it had been rung since it was last
    /// answered.
    pub fn answer(&self) -> bool {
        let mut count: u64 = 0;
        // SAFETY: reads at most the 8 bytes of `count`.
        let n = unsafe { libc::read(self.0.as_raw_fd(), (&raw mut count).cast(), 8) };
        n == 8
    }
}

impl AsRawFd for Doorbell {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Waits until the socket `fd` is readable (or at its end, or failed) or
/// `bell` rings, for at most `timeout` (`None`: no limit); false when the
/// time ran out with neither.
pub fn wait_for_either(fd: RawFd, bell: &Doorbell, timeout: Option<Duration>) -> io::Result<bool> {
    super::socket::wait_readable(&[fd, bell.as_raw_fd()], timeout)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_rung_bell_is_answered_once() {
        let bell = Doorbell::new().unwrap();
        assert!(!bell.answer());
        bell.ring();
        bell.ring();
        assert!(bell.answer());
        assert!(!bell.answer());
    }

    #[test]
    fn the_wait_ends_for_the_bell_the_socket_or_the_timeout() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let bell = Doorbell::new().unwrap();
        let fd = server.as_raw_fd();
        assert!(!wait_for_either(fd, &bell, Some(Duration::from_millis(1))).unwrap());
        bell.ring();
        assert!(wait_for_either(fd, &bell, None).unwrap());
        assert!(bell.answer());
        client.write_all(b"x").unwrap();
        assert!(wait_for_either(fd, &bell, None).unwrap());
    }
}
