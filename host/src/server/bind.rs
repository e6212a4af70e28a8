//! Opening listening sockets with clear errors for the usual mistakes
//! (address in use, address not available on this machine).

use std::io;
use std::net::SocketAddr;

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

#[cfg(test)]
mod tests {
    use super::*;

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
