//! The error type of every [`Conn`](crate::Conn) operation.

use std::fmt;
use std::io;

/// Why an operation on a connection failed.
///
/// The first six variants mirror the WIT `error-code` enum one to one;
/// [`Error::LineTooLong`] is added by the SDK's line reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The connection is closed: by the peer, by an earlier
    /// [`shutdown`](crate::Conn::shutdown), or by the host while it drains on
    /// exit. [`Conn::read_exact`](crate::Conn::read_exact) also reports an
    /// end of stream before `n` bytes as `Closed`.
    Closed,
    /// The read timeout set with [`set_timeout`](crate::Conn::set_timeout)
    /// expired before any byte arrived. The connection is still usable.
    TimedOut,
    /// The peer reset the connection (TCP RST).
    Reset,
    /// The peer stopped reading for longer than the host allows, or a write
    /// was refused for another transport reason.
    BrokenPipe,
    /// An argument was out of range (e.g. a zero-length read).
    InvalidArgument,
    /// Any other I/O failure; the host log has the details.
    Other,
    /// [`read_line`](crate::Conn::read_line) found no newline within its
    /// `max_len` bytes. The bytes stay buffered in the `Conn`.
    LineTooLong,
}

impl Error {
    /// The matching [`std::io::ErrorKind`].
    pub fn kind(self) -> io::ErrorKind {
        match self {
            Error::Closed => io::ErrorKind::NotConnected,
            Error::TimedOut => io::ErrorKind::TimedOut,
            Error::Reset => io::ErrorKind::ConnectionReset,
            Error::BrokenPipe => io::ErrorKind::BrokenPipe,
            Error::InvalidArgument => io::ErrorKind::InvalidInput,
            Error::Other => io::ErrorKind::Other,
            Error::LineTooLong => io::ErrorKind::InvalidData,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Closed => "connection closed",
            Error::TimedOut => "read timed out",
            Error::Reset => "connection reset by peer",
            Error::BrokenPipe => "broken pipe",
            Error::InvalidArgument => "invalid argument",
            Error::Other => "I/O error (see the host log)",
            Error::LineTooLong => "line too long",
        })
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        io::Error::new(e.kind(), e)
    }
}

/// Lets handlers use `?` on `Conn` operations inside
/// `fn handle(..) -> Result<(), String>`.
impl From<Error> for String {
    fn from(e: Error) -> Self {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_io_error_with_matching_kind() {
        let e: io::Error = Error::Reset.into();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(e.to_string(), "connection reset by peer");
        let s: String = Error::LineTooLong.into();
        assert_eq!(s, "line too long");
    }
}
