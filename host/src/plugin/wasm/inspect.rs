//! Recognising what a file is before compiling it (a component or a core
//! module; of which stream world), and checking that a compiled component
//! implements its world, with messages that say exactly what is wrong.

use anyhow::{Result, bail};
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::handler::bindings::{REQUIRED_EXPORTS, WORLD_NAME};

/// The WebAssembly binary magic number.
const WASM_MAGIC: &[u8; 4] = b"\0asm";
/// The `layer` field of a component's preamble (bytes 6..8).
const COMPONENT_LAYER: [u8; 2] = [1, 0];

/// What kind of binary a plugin file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryKind {
    /// A WebAssembly component (what the host runs).
    Component,
    /// A core WebAssembly module (must be wrapped into a component first).
    CoreModule,
}

/// Classifies `bytes`, failing with a message naming `what` if they are not
/// a WebAssembly binary at all.
pub fn classify(bytes: &[u8], what: &str) -> Result<BinaryKind> {
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        bail!("{what} is not a WebAssembly file (no `\\0asm` header)");
    }
    if bytes[6..8] == COMPONENT_LAYER {
        Ok(BinaryKind::Component)
    } else {
        Ok(BinaryKind::CoreModule)
    }
}

/// Fails unless `bytes` are a component, explaining what to do with a core
/// module.
pub fn require_component(bytes: &[u8], what: &str) -> Result<()> {
    match classify(bytes, what)? {
        BinaryKind::Component => Ok(()),
        BinaryKind::CoreModule => bail!(
            "{what} is a core WebAssembly module, not a component: build it for \
             wasm32-wasip2, or wrap it with `wasm-tools component new`"
        ),
    }
}

/// The export that tells a `protocol` component from a `handler` one.
const PROTOCOL_MARK: &str = "data-received";

/// Whether `bytes` hold a component that exports the `protocol` world's
/// `data-received` at its top level: it is meant to serve many
/// connections from one instance. Read from the binary without compiling
/// it, so a listener can size its runtime before loading; anything that
/// does not parse is not (loading then says what is wrong).
pub fn exports_protocol(bytes: &[u8]) -> bool {
    use wasmparser::{Parser, Payload};
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(Payload::Version { .. }) => depth += 1,
            Ok(Payload::End(_)) => depth = depth.saturating_sub(1),
            Ok(Payload::ComponentExportSection(exports)) if depth == 1 => {
                let mut names = exports.into_iter().filter_map(|e| e.ok());
                if names.any(|export| export.name.name == PROTOCOL_MARK) {
                    return true;
                }
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Checks that `component` exports `setup`, `handle` and `finish` as
/// functions, naming every one that is missing.
pub fn check_exports(engine: &Engine, component: &Component, what: &str) -> Result<()> {
    check_named_exports(engine, component, what, WORLD_NAME, &REQUIRED_EXPORTS)
}

/// Checks that `component` exports every function in `required` (the
/// exports of `world`), naming every one that is missing.
pub fn check_named_exports(
    engine: &Engine,
    component: &Component,
    what: &str,
    world: &str,
    required: &[&str],
) -> Result<()> {
    let ty = component.component_type();
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|name| {
            !matches!(
                ty.get_export(engine, name).map(|e| e.ty),
                Some(ComponentItem::ComponentFunc(_))
            )
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let plural = if missing.len() == 1 { "" } else { "s" };
    let names = missing
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let found = exports(engine, component);
    let found = if found.is_empty() {
        "none".to_string()
    } else {
        found.join(", ")
    };
    bail!(
        "{what} does not implement world {world}: missing export{plural} {names} \
         (it exports: {found})"
    )
}

/// The names of a component's exports.
pub fn exports(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// The names of a component's imports.
pub fn imports(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_not_wasm() {
        let err = classify(b"hello world\n", "x.wasm").unwrap_err();
        assert!(err.to_string().contains("x.wasm is not a WebAssembly file"));
    }

    #[test]
    fn short_files_are_not_wasm() {
        assert!(classify(b"\0asm", "f").is_err());
    }

    #[test]
    fn core_modules_and_components_are_told_apart() {
        assert_eq!(
            classify(b"\0asm\x01\0\0\0", "f").unwrap(),
            BinaryKind::CoreModule
        );
        assert_eq!(
            classify(b"\0asm\x0d\0\x01\0", "f").unwrap(),
            BinaryKind::Component
        );
    }
}
