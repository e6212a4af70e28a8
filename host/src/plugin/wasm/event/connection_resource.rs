//! The `connection` resource for instances on an event-loop thread: `read`
//! and `write` wait on the loop (`write` from the guest's memory, without a
//! copy); the other methods are the blocking implementation's
//! (`non_waiting_connection_methods`).

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, WasmList};

use super::super::connection_resource::{
    WRITE_METHOD, data_and_guest_bytes, error_code_from_conn_error, non_waiting_connection_methods,
    replace_generated_write,
};
use super::super::state::ConnectionHandle;
use super::EventState;
use super::bindings::plughost::handler::connections::{
    ErrorCode, Host, HostConnection, ShutdownHow, SocketAddress,
};

error_code_from_conn_error!(ErrorCode);

impl Host for EventState {}

impl EventState {
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
/// [`link_write_from_guest_memory`](super::super::connection_resource::link_write_from_guest_memory):
/// `write` sends straight from the guest's linear memory, waiting on the
/// loop while the peer's window is full.
pub(super) fn link_write_from_guest_memory(
    linker: &mut Linker<EventState>,
) -> wasmtime::Result<()> {
    replace_generated_write(linker, |connections| {
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
    async fn read(
        &mut self,
        handle: Resource<ConnectionHandle>,
        max_bytes: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        self.table.get(&handle)?;
        let result = self.io.read(max_bytes as usize).await;
        self.guest_resumes();
        Ok(result.map_err(ErrorCode::from))
    }

    /// Only reached if [`link_write_from_guest_memory`] was not applied;
    /// the same write, from the copy the bindings made.
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

    use super::super::super::connection_resource::assert_replaces_generated_write;
    use super::super::bindings::Handler;
    use super::*;

    #[test]
    fn the_zero_copy_write_replaces_the_generated_one() {
        let mut linker = Linker::<EventState>::new(&wasmtime::Engine::default());
        Handler::add_to_linker::<EventState, HasSelf<EventState>>(&mut linker, |state| state)
            .unwrap();
        assert_replaces_generated_write(linker, link_write_from_guest_memory);
    }
}
