//! The `connection` resource for instances on an event-loop thread: `read`
//! and `write` wait on the loop; the other methods are the blocking
//! implementation's (nothing in them waits).

use wasmtime::component::Resource;

use super::super::connection_resource::{error_code_from_conn_error, ip_and_port, timeout_ms};
use super::super::state::ConnectionHandle;
use super::EventState;
use super::bindings::plughost::handler::connections::{
    ErrorCode, Host, HostConnection, ShutdownHow, SocketAddress,
};
use crate::connection::{ConnError, ShutdownDirection};

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
        let (ip, port) = ip_and_port(self.conn(&handle)?.peer_addr());
        Ok(SocketAddress { ip, port })
    }

    fn local_address(
        &mut self,
        handle: Resource<ConnectionHandle>,
    ) -> wasmtime::Result<SocketAddress> {
        let (ip, port) = ip_and_port(self.conn(&handle)?.local_addr());
        Ok(SocketAddress { ip, port })
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
