//! The `connection` resource for instances on an event-loop thread: `read`
//! and `write` wait on the loop; the other methods are the blocking
//! implementation's (`non_waiting_connection_methods`).

use wasmtime::component::Resource;

use super::super::connection_resource::{
    error_code_from_conn_error, non_waiting_connection_methods,
};
use super::super::state::ConnectionHandle;
use super::EventState;
use super::bindings::plughost::handler::connections::{
    ErrorCode, Host, HostConnection, ShutdownHow, SocketAddress,
};

error_code_from_conn_error!(ErrorCode);

impl Host for EventState {}

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

    async fn write(
        &mut self,
        handle: Resource<ConnectionHandle>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.table.get(&handle)?;
        let result = self.io.write_all(&data).await;
        self.guest_resumes();
        Ok(result.map_err(ErrorCode::from))
    }

    non_waiting_connection_methods!();
}
