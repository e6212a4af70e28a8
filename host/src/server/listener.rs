//! A listening socket of either kind (TCP or Unix stream), accepting
//! connections as non-blocking [`Stream`]s; the session then wraps each
//! for its serving mode (blocking on a thread, or registered with an event
//! loop).

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::Result;
use mio::{Interest, Registry, Token};

use super::bind;
use crate::address::{ListenAddr, PeerAddr};
use crate::connection::Stream;

/// A bound listener, registered with the event loop.
pub enum Listener {
    /// TCP.
    Tcp(mio::net::TcpListener),
    /// A Unix socket; its file is removed when the listener is dropped.
    Unix(mio::net::UnixListener, PathBuf),
}

impl Listener {
    /// Binds `addr`.
    pub fn bind(addr: &ListenAddr, reuse_port: bool) -> Result<Self> {
        Ok(match addr {
            ListenAddr::Tcp(addr) => Listener::Tcp(bind::tcp_listener(*addr, reuse_port)?),
            ListenAddr::Unix(path) => Listener::Unix(bind::unix_listener(path)?, path.clone()),
            ListenAddr::Udp(addr) => {
                anyhow::bail!("udp:{addr} needs a datagram listener, not a stream listener")
            }
        })
    }

    /// Watches the listener for incoming connections.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => registry.register(l, token, Interest::READABLE),
            Listener::Unix(l, _) => registry.register(l, token, Interest::READABLE),
        }
    }

    /// Stops watching it.
    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => registry.deregister(l),
            Listener::Unix(l, _) => registry.deregister(l),
        }
    }

    /// Accepts one pending connection.
    pub fn accept(&self) -> io::Result<(Stream, PeerAddr)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept()?;
                Ok((Stream::Tcp(stream.into()), PeerAddr::Ip(peer)))
            }
            Listener::Unix(l, _) => {
                let (stream, peer) = l.accept()?;
                let peer = PeerAddr::Unix(peer.as_pathname().map(Into::into));
                Ok((Stream::Unix(stream.into()), peer))
            }
        }
    }

    /// Whether a connection is waiting in the backlog (checked without
    /// accepting it).
    pub fn has_pending(&self) -> bool {
        let fd = match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        };
        crate::sys::socket::is_readable(fd)
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            Listener::Unix(_, path) => Ok(ListenAddr::Unix(path.clone())),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self
            && let Err(err) = std::fs::remove_file(&*path)
        {
            tracing::warn!("cannot remove socket unix:{}: {err}", path.display());
        }
    }
}
