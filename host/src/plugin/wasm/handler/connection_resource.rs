//! The host implementation of the WIT `connection` resource. A store serves
//! exactly one connection, so the resource table holds only a
//! [`ConnectionHandle`] marker (checked on every call) and the methods act on
//! the store's [`Connection`].
//!
//! The blocking bindings and the event-loop bindings
//! (`event::connection_resource`) each generate their own `HostConnection`
//! trait and `error-code` type; the macros here give both the same
//! conversion and the same methods that never wait, so only `read`,
//! `read-or-message` and `write` differ between them.

use std::borrow::BorrowMut;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, WasmList};

use super::bindings::plughost::handler::connections::{Arrival, Host, HostConnection, TlsSession};
use super::bindings::{ErrorCode, ShutdownHow, SocketAddress};
use super::guest_receive::ReadOutcome;
use crate::address::PeerAddr;
use crate::connection::Connection;
use crate::connection::inbox;
use crate::plugin::wasm::guest_memory::{data_and_guest_bytes, replace_generated};
use crate::plugin::wasm::state::{ConnState, ConnectionHandle, StoreState};

/// The `connection` methods that never wait (shutdown, addresses, TLS, the
/// read timeout, drop), for inside a bindings' `impl HostConnection`.
/// `ErrorCode`, `ShutdownHow`, `SocketAddress` and `TlsSession` are that
/// bindings' types, in scope where the macro is used.
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
            let (ip, port) = $crate::plugin::wasm::handler::connection_resource::ip_and_port(
                self.conn(&handle)?.peer_addr(),
            );
            Ok(SocketAddress { ip, port })
        }

        fn local_address(
            &mut self,
            handle: ::wasmtime::component::Resource<$crate::plugin::wasm::state::ConnectionHandle>,
        ) -> ::wasmtime::Result<SocketAddress> {
            let (ip, port) = $crate::plugin::wasm::handler::connection_resource::ip_and_port(
                self.conn(&handle)?.local_addr(),
            );
            Ok(SocketAddress { ip, port })
        }

        fn tls(
            &mut self,
            handle: ::wasmtime::component::Resource<$crate::plugin::wasm::state::ConnectionHandle>,
        ) -> ::wasmtime::Result<Option<TlsSession>> {
            Ok(self.conn(&handle)?.tls().map(|n| TlsSession {
                version: n.version,
                cipher_suite: n.cipher_suite,
                server_name: n.server_name,
                alpn: n.alpn,
            }))
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

crate::connection::error_code_from_conn_error!(ErrorCode);

/// The WIT `socket-address` fields for `addr`: Unix peers appear as
/// `{ ip: "unix:<path>", port: 0 }` (see the WIT).
pub(in crate::plugin::wasm) fn ip_and_port(addr: &PeerAddr) -> (String, u16) {
    match addr {
        PeerAddr::Ip(addr) => (addr.ip().to_string(), addr.port()),
        unix => (unix.to_string(), 0),
    }
}

/// The WIT `arrival` (of either bindings: `data` and `message` are its
/// variants' constructors) for what a `read-or-message` on `conn` got.
pub(super) fn wit_arrival<A>(
    conn: &Connection,
    arrival: inbox::Arrival,
    data: fn(Vec<u8>) -> A,
    message: fn((String, Vec<u8>)) -> A,
) -> A {
    match arrival {
        inbox::Arrival::Data(_) => data(conn.received().to_vec()),
        inbox::Arrival::Message(m) => message((m.topic.to_string(), m.body.to_vec())),
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

impl ConnState {
    fn read_outcome(
        &mut self,
        handle: &Resource<ConnectionHandle>,
        max: usize,
    ) -> wasmtime::Result<ReadOutcome<Connection, ErrorCode>> {
        let conn = self.conn(handle)?;
        let outcome = ReadOutcome::queued(conn, max)
            .unwrap_or_else(|| ReadOutcome::received(conn.read(max).map_err(ErrorCode::from)));
        self.guest_resumes();
        Ok(outcome)
    }

    fn write_bytes(
        &mut self,
        handle: &Resource<ConnectionHandle>,
        data: &[u8],
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let result = self.conn(handle)?.write_all(data);
        self.guest_resumes();
        Ok(result.map_err(ErrorCode::from))
    }
}

/// The linker instance that holds the `connection` resource.
pub(super) const CONNECTIONS_INSTANCE: &str = concat!(
    "plughost:handler/connections@",
    super::bindings::contract_version!()
);
/// The `read` method's name in that instance.
pub(super) const READ_METHOD: &str = "[method]connection.read";
/// The `write` method's name in that instance.
pub(super) const WRITE_METHOD: &str = "[method]connection.write";

/// Replaces the generated `read` and `write`, which copy the bytes through
/// a host vector, with ones that move them between the socket and the
/// guest's memory with no vector in between: `write` sends from the
/// guest's memory, `read` copies from the connection's receive buffer, or
/// receives straight into the guest's memory when the bytes are already
/// queued ([`ReadOutcome`]). An allocation less per call, and a copy less
/// for bulk transfers.
pub(in crate::plugin::wasm) fn link_guest_memory_io(
    linker: &mut Linker<ConnState>,
) -> wasmtime::Result<()> {
    replace_generated(linker, CONNECTIONS_INSTANCE, |connections| {
        connections.func_wrap(
            READ_METHOD,
            |mut store: StoreContextMut<'_, ConnState>,
             (handle, max_bytes): (Resource<ConnectionHandle>, u32)| {
                let state = store.data_mut();
                Ok((state.read_outcome(&handle, max_bytes as usize)?,))
            },
        )?;
        connections.func_wrap(
            WRITE_METHOD,
            |mut store: StoreContextMut<'_, ConnState>,
             (handle, data): (Resource<ConnectionHandle>, WasmList<u8>)| {
                let (state, data) = data_and_guest_bytes(&mut store, &data);
                Ok((state.write_bytes(&handle, data)?,))
            },
        )
    })
}

impl HostConnection for ConnState {
    /// Only reached if [`link_guest_memory_io`] was not applied; the same
    /// read, always through a copy.
    fn read(
        &mut self,
        handle: Resource<ConnectionHandle>,
        max_bytes: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        let conn = self.conn(&handle)?;
        let result = conn
            .read(max_bytes as usize)
            .map(|_| conn.received().to_vec());
        self.guest_resumes();
        Ok(result.map_err(ErrorCode::from))
    }

    fn read_or_message(
        &mut self,
        handle: Resource<ConnectionHandle>,
        max_bytes: u32,
    ) -> wasmtime::Result<Result<Arrival, ErrorCode>> {
        let conn = self.conn(&handle)?;
        let result = conn
            .read_or_message(max_bytes as usize)
            .map(|arrival| wit_arrival(conn, arrival, Arrival::Data, Arrival::Message));
        self.guest_resumes();
        Ok(result.map_err(ErrorCode::from))
    }

    /// Only reached if [`link_guest_memory_io`] was not applied; the same
    /// write, from the copy the bindings made.
    fn write(
        &mut self,
        handle: Resource<ConnectionHandle>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.write_bytes(&handle, &data)
    }

    non_waiting_connection_methods!();
}

/// Checks that `link` replaces the generated `read` and `write` in
/// `linker`, which holds the generated bindings: one test per linker
/// (blocking, event loop).
#[cfg(test)]
pub(super) fn assert_replaces_generated_io<T: 'static>(
    linker: Linker<T>,
    link: fn(&mut Linker<T>) -> wasmtime::Result<()>,
) {
    crate::plugin::wasm::guest_memory::assert_replaces_generated(
        linker,
        CONNECTIONS_INSTANCE,
        &[READ_METHOD, WRITE_METHOD],
        link,
    );
}

#[cfg(test)]
mod tests {
    use wasmtime::component::HasSelf;

    use super::super::bindings::Handler;
    use super::*;

    #[test]
    fn the_guest_memory_read_and_write_replace_the_generated_ones() {
        let mut linker = Linker::<ConnState>::new(&wasmtime::Engine::default());
        Handler::add_to_linker::<ConnState, HasSelf<ConnState>>(&mut linker, |state| state)
            .unwrap();
        assert_replaces_generated_io(linker, link_guest_memory_io);
    }
}
