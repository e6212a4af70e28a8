//! Host functions that take a guest's bytes where they lie. The generated
//! bindings lift a `list<u8>` argument into a fresh `Vec` (an allocation
//! and a copy per call); the worlds' `write`s are defined instead over a
//! [`WasmList`], read in place with [`data_and_guest_bytes`], and put in
//! the linker over the generated ones with [`replace_generated`].

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, LinkerInstance, WasmList};

/// Runs `define` on the linker instance named `instance` (already holding
/// the generated bindings) with shadowing allowed, so that what it defines
/// replaces the generated functions of the same names.
pub(super) fn replace_generated<T: 'static>(
    linker: &mut Linker<T>,
    instance: &str,
    define: impl FnOnce(&mut LinkerInstance<'_, T>) -> wasmtime::Result<()>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let replaced = linker
        .instance(instance)
        .and_then(|mut functions| define(&mut functions));
    linker.allow_shadowing(false);
    replaced
}

/// The store's data together with the bytes of `list` in the guest's
/// linear memory, which the store only lends one at a time.
pub(super) fn data_and_guest_bytes<'a, T: 'static>(
    store: &'a mut StoreContextMut<'_, T>,
    list: &WasmList<u8>,
) -> (&'a mut T, &'a [u8]) {
    let bytes = list.as_le_slice(&*store);
    let (start, len) = (bytes.as_ptr(), bytes.len());
    // SAFETY: lifting `list` checked that it lies within the memory. That
    // memory is a separate mapping, not part of the store's data `T`, so
    // the two borrows never overlap. It cannot change while they live:
    // both borrow `store` exclusively, so no guest code runs and nothing
    // can grow, shrink or recycle it (growing, and freeing the pooling
    // slot, need the store; nothing in `T` holds pointers into it), and a
    // component's memory is never shared with another thread. On an event
    // loop, a host future holding the bytes is dropped inside its fiber,
    // before the store can go away.
    let bytes = unsafe { std::slice::from_raw_parts(start, len) };
    (store.data_mut(), bytes)
}

/// Checks that `link` replaces the generated `functions` of `instance` in
/// `linker`, which holds the generated bindings: one test per linker.
#[cfg(test)]
pub(super) fn assert_replaces_generated<T: 'static>(
    mut linker: Linker<T>,
    instance: &str,
    functions: &[&str],
    link: fn(&mut Linker<T>) -> wasmtime::Result<()>,
) {
    // Without shadowing, a second definition is refused only if a
    // generated function sits under exactly this name.
    for function in functions {
        let again = linker
            .instance(instance)
            .unwrap()
            .func_wrap(function, |_: StoreContextMut<'_, T>, (): ()| Ok(()));
        assert!(again.is_err(), "nothing generated at {instance}/{function}");
    }
    link(&mut linker).unwrap();
}
