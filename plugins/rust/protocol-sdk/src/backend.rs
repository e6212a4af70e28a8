//! Where transport and timer calls go: the host's imports inside a
//! component, the [`testing`](crate::testing) recorder natively.

use std::net::SocketAddr;

use crate::WriteError;

#[cfg(target_arch = "wasm32")]
mod imp {
    use std::net::SocketAddr;

    use crate::WriteError;
    use crate::wasm::bindings::plughost::handler::{config, timers, transports};

    fn addr(a: Option<transports::SocketAddress>) -> Option<SocketAddr> {
        let a = a?;
        Some(SocketAddr::new(a.ip.parse().ok()?, a.port))
    }

    pub fn write(t: u64, data: &[u8]) -> Result<(), WriteError> {
        transports::write(t, data).map_err(|e| match e {
            transports::WriteError::Closed => WriteError::Closed,
            transports::WriteError::BufferFull => WriteError::BufferFull,
        })
    }
    pub fn buffered(t: u64) -> u64 {
        transports::buffered(t)
    }
    pub fn write_limit() -> u64 {
        transports::write_limit()
    }
    pub fn close(t: u64) {
        transports::close(t)
    }
    pub fn abort(t: u64, reason: &str) {
        transports::abort(t, reason)
    }
    pub fn pause_reading(t: u64) {
        transports::pause_reading(t)
    }
    pub fn resume_reading(t: u64) {
        transports::resume_reading(t)
    }
    pub fn peer_addr(t: u64) -> Option<SocketAddr> {
        addr(transports::peer_address(t))
    }
    pub fn local_addr(t: u64) -> Option<SocketAddr> {
        addr(transports::local_address(t))
    }
    pub fn tls(t: u64) -> Option<crate::TlsSession> {
        transports::tls(t).map(|s| crate::TlsSession {
            version: s.version,
            cipher_suite: s.cipher_suite,
            server_name: s.server_name,
            alpn: s.alpn,
        })
    }
    pub fn call_later(ms: u64) -> Result<u64, String> {
        timers::call_later(ms)
    }
    pub fn cancel(timer: u64) -> bool {
        timers::cancel(timer)
    }
    pub fn config(key: &str) -> Option<String> {
        config::get(key)
    }
}

#[cfg(not(target_arch = "wasm32"))]
use crate::testing::recorder as imp;

pub fn write(t: u64, data: &[u8]) -> Result<(), WriteError> {
    imp::write(t, data)
}
pub fn buffered(t: u64) -> u64 {
    imp::buffered(t)
}
pub fn write_limit() -> u64 {
    imp::write_limit()
}
pub fn close(t: u64) {
    imp::close(t)
}
pub fn abort(t: u64, reason: &str) {
    imp::abort(t, reason)
}
pub fn pause_reading(t: u64) {
    imp::pause_reading(t)
}
pub fn resume_reading(t: u64) {
    imp::resume_reading(t)
}
pub fn peer_addr(t: u64) -> Option<SocketAddr> {
    imp::peer_addr(t)
}
pub fn local_addr(t: u64) -> Option<SocketAddr> {
    imp::local_addr(t)
}
pub fn tls(t: u64) -> Option<crate::TlsSession> {
    imp::tls(t)
}
pub fn call_later(ms: u64) -> Result<u64, String> {
    imp::call_later(ms)
}
pub fn cancel(timer: u64) -> bool {
    imp::cancel(timer)
}
pub fn config(key: &str) -> Option<String> {
    imp::config(key)
}
