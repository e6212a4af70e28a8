//! The host implementation of the WIT `config` interface: read-only values
//! the operator set for the plugin.

use super::handler::bindings::plughost::handler::config::Host;
use super::state::StoreState;

impl<C: Send> Host for StoreState<C> {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.sandbox.config.get(&key).cloned())
    }

    fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .sandbox
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
