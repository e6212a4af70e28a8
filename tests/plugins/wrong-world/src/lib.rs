//! Test plugin: a valid component of another world (`other:thing`, which
//! exports only `run`). The host must refuse it and name the missing
//! exports.

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ world: "thing", path: "wit" });
}

struct Thing;

impl bindings::Guest for Thing {
    fn run() {}
}

bindings::export!(Thing with_types_in bindings);
