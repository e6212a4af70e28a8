//! Opening listening sockets with clear errors for the usual mistakes
//! (address in use, address not available on this machine), and Unix
//! socket files: a stale one left by a crashed process is replaced, a live
//! one is an error, and the file is removed again on a clean exit.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{Result, anyhow};
use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel queues while all slots are busy.
const BACKLOG: i32 = 1024;

/// Binds a non-blocking TCP listener on `addr` (IPv6 addresses accept only
/// IPv6, so `::` and `0.0.0.0` can be bound side by side). `reuse_port`
/// sets SO_REUSEPORT so several processes can share the address.
pub fn tcp_listener(addr: SocketAddr, reuse_port: bool) -> Result<mio::net::TcpListener> {
    let bind = || -> io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        Ok(socket.into())
    };
    let listener = bind().map_err(|err| match err.kind() {
        io::ErrorKind::AddrInUse => anyhow!("cannot listen on {addr}: address already in use"),
        io::ErrorKind::AddrNotAvailable => {
            anyhow!("cannot listen on {addr}: address not available on this machine")
        }
        io::ErrorKind::PermissionDenied => {
            anyhow!("cannot listen on {addr}: permission denied (ports below 1024 need privileges)")
        }
        _ => anyhow!("cannot listen on {addr}: {err}"),
    })?;
    Ok(mio::net::TcpListener::from_std(listener))
}

/// Binds a non-blocking Unix stream listener at `path`.
pub fn unix_listener(path: &Path) -> Result<mio::net::UnixListener> {
    let shown = path.display();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(anyhow!(
                "cannot listen on unix:{shown}: a file that is not a socket is in the way"
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(anyhow!(
                "cannot listen on unix:{shown}: another process is serving it"
            ));
        }
        // Nobody answers: a stale socket left behind by a process that
        // did not exit cleanly.
        std::fs::remove_file(path)
            .map_err(|err| anyhow!("cannot remove stale socket unix:{shown}: {err}"))?;
        tracing::info!("removed stale socket unix:{shown}");
    }
    mio::net::UnixListener::bind(path).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => {
            anyhow!("cannot listen on unix:{shown}: its directory does not exist")
        }
        io::ErrorKind::PermissionDenied => {
            anyhow!("cannot listen on unix:{shown}: permission denied")
        }
        _ => anyhow!("cannot listen on unix:{shown}: {err}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_unix_sockets_are_replaced_and_live_ones_refused() {
        let dir = std::env::temp_dir().join(format!("plughost-bind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let live = unix_listener(&path).unwrap();
        let err = unix_listener(&path).unwrap_err().to_string();
        assert!(err.contains("another process is serving it"), "{err}");
        drop(live); // the file stays behind, like after a crash
        assert!(path.exists());
        assert!(unix_listener(&path).is_ok());
        std::fs::write(dir.join("plain"), b"x").unwrap();
        assert!(unix_listener(&dir.join("plain")).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn port_in_use_is_named() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = tcp_listener(addr, false).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("cannot listen on {addr}: address already in use")
        );
    }

    #[test]
    fn reuse_port_lets_two_listeners_share_an_address() {
        let first = tcp_listener("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = first.local_addr().unwrap();
        assert!(tcp_listener(addr, true).is_ok());
    }

    #[test]
    fn port_zero_picks_a_free_port() {
        let listener = tcp_listener("127.0.0.1:0".parse().unwrap(), false).unwrap();
        assert_ne!(listener.local_addr().unwrap().port(), 0);
    }
}
