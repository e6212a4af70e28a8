//! The host implementation of the WIT `connection` resource. A store serves
//! exactly one connection, so the resource table holds only a
//! [`ConnectionHandle`] marker (checked on every call) and the methods act on
//! the store's [`Connection`]. The helpers here are shared with the
//! event-loop implementation in `event::connection_resource`.

use std::borrow::BorrowMut;
use std::time::Duration;

use wasmtime::component::Resource;

use super::bindings::plughost::handler::connections::{Host, HostConnection};
use super::bindings::{ErrorCode, ShutdownHow, SocketAddress};
use super::state::{ConnState, ConnectionHandle, StoreState};
use crate::address::PeerAddr;
use crate::connection::{ConnError, Connection, ShutdownDirection};

/// `From<ConnError>` for a bindings' `error-code` (the blocking and the
/// event-loop bindings each generate one).
macro_rules! error_code_from_conn_error {
    ($code:ty) => {
        impl From<ConnError> for $code {
            fn from(err: ConnError) -> Self {
                match err {
                    ConnError::Closed => Self::Closed,
                    ConnError::TimedOut => Self::TimedOut,
                    ConnError::Reset => Self::Reset,
                    ConnError::BrokenPipe => Self::BrokenPipe,
                    ConnError::InvalidArgument => Self::InvalidArgument,
                    ConnError::Other => Self::Other,
                }
            }
        }
    };
}
pub(super) use error_code_from_conn_error;

error_code_from_conn_error!(ErrorCode);

/// The WIT `socket-address` fields for `addr`: Unix peers appear as
/// `{ ip: "unix:<path>", port: 0 }` (see the WIT).
pub(super) fn ip_and_port(addr: &PeerAddr) -> (String, u16) {
    match addr {
        PeerAddr::Ip(addr) => (addr.ip().to_string(), addr.port()),
        unix => (unix.to_string(), 0),
    }
}

fn socket_address(addr: &PeerAddr) -> SocketAddress {
    let (ip, port) = ip_and_port(addr);
    SocketAddress { ip, port }
}

/// The plugin's read timeout in milliseconds.
pub(super) fn timeout_ms(conn: &Connection) -> Option<u64> {
    conn.read_timeout()
        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}

impl<C: BorrowMut<Connection>> StoreState<C> {
    /// The connection behind `handle` (checked against the table).
    pub(super) fn conn(
        &mut self,
        handle: &Resource<ConnectionHandle>,
    ) -> wasmtime::Result<&mut Connection> {
        self.table.get(handle)?;
        Ok(self.io.borrow_mut())
    }

    /// Sets the read timeout. A failure leaves the previous one in force;
    /// the next read reports any real socket problem.
    pub(super) fn set_conn_timeout(
        &mut self,
        handle: &Resource<ConnectionHandle>,
        timeout_ms: Option<u64>,
    ) -> wasmtime::Result<()> {
        let _ = self
            .conn(handle)?
            .set_read_timeout(timeout_ms.map(Duration::from_millis));
        Ok(())
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
        self.set_conn_timeout(&handle, timeout_ms)
    }

    fn timeout(&mut self, handle: Resource<ConnectionHandle>) -> wasmtime::Result<Option<u64>> {
        Ok(timeout_ms(self.conn(&handle)?))
    }

    fn drop(&mut self, _handle: Resource<ConnectionHandle>) -> wasmtime::Result<()> {
        // The host owns the connection; guests only ever hold borrows.
        Ok(())
    }
}
