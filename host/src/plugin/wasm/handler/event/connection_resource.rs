//! The `connection` resource for instances on an event-loop thread: `read`,
//! `read-or-message` and `write` wait on the loop, moving bytes between the socket and the
//! guest's memory as the blocking path does (`link_guest_memory_io`); the
//! other methods are the blocking implementation's
//! (`non_waiting_connection_methods`).

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, WasmList};

use super::super::connection_resource::{
    CONNECTIONS_INSTANCE, READ_METHOD, WRITE_METHOD, non_waiting_connection_methods, wit_arrival,
};
use super::super::guest_receive::ReadOutcome;
use super::EventState;
use super::bindings::plughost::handler::connections::{
    Arrival, ErrorCode, Host, HostConnection, ShutdownHow, SocketAddress, TlsSession,
};
use crate::connection::event::EventConnection;
use crate::plugin::wasm::guest_memory::{data_and_guest_bytes, replace_generated};
use crate::plugin::wasm::state::ConnectionHandle;

crate::connection::error_code_from_conn_error!(ErrorCode);

impl Host for EventState {}

impl EventState {
    async fn read_outcome(
        &mut self,
        handle: &Resource<ConnectionHandle>,
        max: usize,
    ) -> wasmtime::Result<ReadOutcome<EventConnection, ErrorCode>> {
        self.table.get(handle)?;
        let outcome = match ReadOutcome::queued(self.io.connection_mut(), max) {
            Some(queued) => queued,
            None => ReadOutcome::received(self.io.read(max).await.map_err(ErrorCode::from)),
        };
        self.guest_resumes();
        Ok(outcome)
    }

    async fn write_bytes(
        &mut self,
        handle: &Resource<ConnectionHandle>,
        data: &[u8],
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.table.get(handle)?;
        let result = self.io.write_all(data).await;
        self.guest_resumes();
        Ok(result.map_err(ErrorCode::from))
    }
}

/// The event-loop twin of the blocking path's
/// [`link_guest_memory_io`](super::super::connection_resource::link_guest_memory_io):
/// `read` receives queued bytes into the guest's memory, `write` sends from
/// it, both waiting on the loop when the socket is not ready.
pub(in crate::plugin::wasm) fn link_guest_memory_io(
    linker: &mut Linker<EventState>,
) -> wasmtime::Result<()> {
    replace_generated(linker, CONNECTIONS_INSTANCE, |connections| {
        connections.func_wrap_async(
            READ_METHOD,
            |mut store: StoreContextMut<'_, EventState>,
             (handle, max_bytes): (Resource<ConnectionHandle>, u32)| {
                Box::new(async move {
                    let state = store.data_mut();
                    Ok((state.read_outcome(&handle, max_bytes as usize).await?,))
                })
            },
        )?;
        connections.func_wrap_async(
            WRITE_METHOD,
            |mut store: StoreContextMut<'_, EventState>,
             (handle, data): (Resource<ConnectionHandle>, WasmList<u8>)| {
                Box::new(async move {
                    let (state, data) = data_and_guest_bytes(&mut store, &data);
                    Ok((state.write_bytes(&handle, data).await?,))
                })
            },
        )
    })
}

impl HostConnection for EventState {
    /// Only reached if [`link_guest_memory_io`] was not applied; the same
    /// read, always through a copy.
    async fn read(
        &mut self,
        handle: Resource<ConnectionHandle>,
        max_bytes: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        self.table.get(&handle)?;
        let result = self.io.read(max_bytes as usize).await;
        let result = result.map(|_| self.io.connection_mut().received().to_vec());
        self.guest_resumes();
        Ok(result.map_err(ErrorCode::from))
    }

    async fn read_or_message(
        &mut self,
        handle: Resource<ConnectionHandle>,
        max_bytes: u32,
    ) -> wasmtime::Result<Result<Arrival, ErrorCode>> {
        self.table.get(&handle)?;
        let result = self.io.read_or_message(max_bytes as usize).await;
        let conn = self.io.connection_mut();
        let result =
            result.map(|arrival| wit_arrival(conn, arrival, Arrival::Data, Arrival::Message));
        self.guest_resumes();
        Ok(result.map_err(ErrorCode::from))
    }

    /// Only reached if [`link_guest_memory_io`] was not applied; the same
    /// write, from the copy the bindings made.
    async fn write(
        &mut self,
        handle: Resource<ConnectionHandle>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.write_bytes(&handle, &data).await
    }

    non_waiting_connection_methods!();
}

#[cfg(test)]
mod tests {
    use wasmtime::component::HasSelf;

    use super::super::super::connection_resource::assert_replaces_generated_io;
    use super::super::bindings::Handler;
    use super::*;

    #[test]
    fn the_guest_memory_read_and_write_replace_the_generated_ones() {
        let mut linker = Linker::<EventState>::new(&wasmtime::Engine::default());
        Handler::add_to_linker::<EventState, HasSelf<EventState>>(&mut linker, |state| state)
            .unwrap();
        assert_replaces_generated_io(linker, link_guest_memory_io);
    }
}
