//! The host implementation of the WIT `connection` resource. A store serves
//! exactly one connection, so the resource table holds only a
//! [`ConnectionHandle`] marker (checked on every call) and the methods act on
//! the store's [`Connection`].
//!
//! The blocking bindings and the event-loop bindings
//! (`event::connection_resource`) each generate their own `HostConnection`
//! trait and `error-code` type; the macros here give both the same
//! conversion and the same methods that never wait, so only `read` and
//! `write` differ between them.

use std::borrow::BorrowMut;

use wasmtime::component::Resource;

use super::bindings::plughost::handler::connections::{Host, HostConnection};
use super::bindings::{ErrorCode, ShutdownHow, SocketAddress};
use super::state::{ConnState, ConnectionHandle, StoreState};
use crate::address::PeerAddr;
use crate::connection::Connection;

/// `From<ConnError>` for a bindings' `error-code`.
macro_rules! error_code_from_conn_error {
    ($code:ty) => {
        impl From<$crate::connection::ConnError> for $code {
            fn from(err: $crate::connection::ConnError) -> Self {
                use $crate::connection::ConnError;
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

/// The `connection` methods that never wait (shutdown, addresses, the read
/// timeout, drop), for inside a bindings' `impl HostConnection`. `ErrorCode`,
/// `ShutdownHow` and `SocketAddress` are that bindings' types, in scope where
/// the macro is used.
macro_rules! non_waiting_connection_methods {
    () => {
        fn shutdown(
            &mut self,
            handle: ::wasmtime::component::Resource<$crate::plugin::wasm::state::ConnectionHandle>,
            how: ShutdownHow,
        ) -> ::wasmtime::Result<Result<(), ErrorCode>> {
            use $crate::connection::ShutdownDirection;
            let how = match how {
                ShutdownHow::Read => ShutdownDirection::Read,
                ShutdownHow::Write => ShutdownDirection::Write,
                ShutdownHow::Both => ShutdownDirection::Both,
            };
            Ok(self.conn(&handle)?.shutdown(how).map_err(ErrorCode::from))
        }

        fn peer_address(
            &mut self,
            handle: ::wasmtime::component::Resource<$crate::plugin::wasm::state::ConnectionHandle>,
        ) -> ::wasmtime::Result<SocketAddress> {
            let (ip, port) = $crate::plugin::wasm::connection_resource::ip_and_port(
                self.conn(&handle)?.peer_addr(),
            );
            Ok(SocketAddress { ip, port })
        }

        fn local_address(
            &mut self,
            handle: ::wasmtime::component::Resource<$crate::plugin::wasm::state::ConnectionHandle>,
        ) -> ::wasmtime::Result<SocketAddress> {
            let (ip, port) = $crate::plugin::wasm::connection_resource::ip_and_port(
                self.conn(&handle)?.local_addr(),
            );
            Ok(SocketAddress { ip, port })
        }

        fn set_timeout(
            &mut self,
            handle: ::wasmtime::component::Resource<$crate::plugin::wasm::state::ConnectionHandle>,
            timeout_ms: Option<u64>,
        ) -> ::wasmtime::Result<()> {
            // A failure leaves the previous timeout in force; the next read
            // reports any real socket problem.
            let _ = self
                .conn(&handle)?
                .set_read_timeout(timeout_ms.map(::std::time::Duration::from_millis));
            Ok(())
        }

        fn timeout(
            &mut self,
            handle: ::wasmtime::component::Resource<$crate::plugin::wasm::state::ConnectionHandle>,
        ) -> ::wasmtime::Result<Option<u64>> {
            Ok(self
                .conn(&handle)?
                .read_timeout()
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)))
        }

        fn drop(
            &mut self,
            _handle: ::wasmtime::component::Resource<$crate::plugin::wasm::state::ConnectionHandle>,
        ) -> ::wasmtime::Result<()> {
            // The host owns the connection; guests only ever hold borrows.
            Ok(())
        }
    };
}
pub(super) use non_waiting_connection_methods;

error_code_from_conn_error!(ErrorCode);

/// The WIT `socket-address` fields for `addr`: Unix peers appear as
/// `{ ip: "unix:<path>", port: 0 }` (see the WIT).
pub(super) fn ip_and_port(addr: &PeerAddr) -> (String, u16) {
    match addr {
        PeerAddr::Ip(addr) => (addr.ip().to_string(), addr.port()),
        unix => (unix.to_string(), 0),
    }
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

    non_waiting_connection_methods!();
}
