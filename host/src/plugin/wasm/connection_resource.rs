//! The host implementation of the WIT `connection` resource. A store serves
//! exactly one connection, so the resource table holds only a
//! [`ConnectionHandle`] marker (checked on every call) and the methods act on
//! the store's [`Connection`].

use std::time::Duration;

use wasmtime::component::Resource;

use super::bindings::plughost::handler::connections::{Host, HostConnection};
use super::bindings::{ErrorCode, ShutdownHow, SocketAddress};
use super::state::ConnState;
use super::state::ConnectionHandle;
use crate::address::PeerAddr;
use crate::connection::{ConnError, Connection, ShutdownDirection};

impl From<ConnError> for ErrorCode {
    fn from(err: ConnError) -> Self {
        match err {
            ConnError::Closed => ErrorCode::Closed,
            ConnError::TimedOut => ErrorCode::TimedOut,
            ConnError::Reset => ErrorCode::Reset,
            ConnError::BrokenPipe => ErrorCode::BrokenPipe,
            ConnError::InvalidArgument => ErrorCode::InvalidArgument,
            ConnError::Other => ErrorCode::Other,
        }
    }
}

/// Unix peers appear as `{ ip: "unix:<path>", port: 0 }` (see the WIT).
fn socket_address(addr: &PeerAddr) -> SocketAddress {
    match addr {
        PeerAddr::Ip(addr) => SocketAddress {
            ip: addr.ip().to_string(),
            port: addr.port(),
        },
        unix => SocketAddress {
            ip: unix.to_string(),
            port: 0,
        },
    }
}

impl ConnState {
    fn conn(&mut self, handle: &Resource<ConnectionHandle>) -> wasmtime::Result<&mut Connection> {
        self.table.get(handle)?;
        Ok(&mut self.io)
    }
}

impl Host for ConnState {}

impl HostConnection for ConnState {
    fn read(
        &mut self,
        handle: Resource<ConnectionHandle>,
        max_bytes: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        let result = self.conn(&handle)?.read(max_bytes as usize);
        self.guest_resumes();
        Ok(result.map_err(ErrorCode::from))
    }

    fn write(
        &mut self,
        handle: Resource<ConnectionHandle>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let result = self.conn(&handle)?.write_all(&data);
        self.guest_resumes();
        Ok(result.map_err(ErrorCode::from))
    }

    fn shutdown(
        &mut self,
        handle: Resource<ConnectionHandle>,
        how: ShutdownHow,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let how = match how {
            ShutdownHow::Read => ShutdownDirection::Read,
            ShutdownHow::Write => ShutdownDirection::Write,
            ShutdownHow::Both => ShutdownDirection::Both,
        };
        Ok(self.conn(&handle)?.shutdown(how).map_err(ErrorCode::from))
    }

    fn peer_address(
        &mut self,
        handle: Resource<ConnectionHandle>,
    ) -> wasmtime::Result<SocketAddress> {
        Ok(socket_address(self.conn(&handle)?.peer_addr()))
    }

    fn local_address(
        &mut self,
        handle: Resource<ConnectionHandle>,
    ) -> wasmtime::Result<SocketAddress> {
        Ok(socket_address(self.conn(&handle)?.local_addr()))
    }

    fn set_timeout(
        &mut self,
        handle: Resource<ConnectionHandle>,
        timeout_ms: Option<u64>,
    ) -> wasmtime::Result<()> {
        // A failure to apply the timeout leaves the previous one in force;
        // the next read reports any real socket problem.
        let _ = self
            .conn(&handle)?
            .set_read_timeout(timeout_ms.map(Duration::from_millis));
        Ok(())
    }

    fn timeout(&mut self, handle: Resource<ConnectionHandle>) -> wasmtime::Result<Option<u64>> {
        Ok(self
            .conn(&handle)?
            .read_timeout()
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)))
    }

    fn drop(&mut self, _handle: Resource<ConnectionHandle>) -> wasmtime::Result<()> {
        // The host owns the connection; guests only ever hold borrows.
        Ok(())
    }
}
