//! What `read` returns: either bytes the host already received into the
//! connection's receive buffer, which the lowering copies into memory the
//! guest allocates, or the promise of bytes queued in the socket, which the
//! lowering receives straight into the guest's allocation. Either way no
//! host vector is allocated per read, and queued bytes are copied once
//! less, which bulk transfers feel.
//!
//! The guest sees the same thing either way: one `cabi_realloc` for exactly
//! the bytes it gets, as wasmtime's own lowering of a list does. That is
//! why only queued bytes, whose count the kernel tells beforehand
//! ([`Connection::queued_for_read`]), go straight in: sizing the
//! allocation for the largest read and shrinking it afterwards would need
//! a `realloc` of an existing allocation, which not every guest language
//! supports (Go's runtime panics on it).
//!
//! Lowering is done by hand here, so this uses wasmtime's hidden
//! `ComponentType` items (the ones its derive macros fill in): the value
//! stands for, and type-checks as, the WIT result
//! `result<list<u8>, error-code>`. Those items may change between wasmtime
//! releases (the workspace pins one); a change shows up as a compile error
//! here.

use std::any::Any;
use std::borrow::BorrowMut;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

use wasmtime::ValRaw;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{ComponentType, Lower};

use crate::connection::{ConnError, Connection};
use crate::plugin::wasm::state::StoreState;

/// The result of `read` for a store holding `StoreState<C>`, with the
/// bindings' error type `E`.
pub(super) struct ReadOutcome<C, E> {
    read: Read<E>,
    conn: PhantomData<fn() -> C>,
}

/// Where a read's bytes are until they are lowered.
enum Read<E> {
    /// What the host function read: the number of bytes in the
    /// connection's receive buffer (0 at end of stream), or an error.
    Received(Result<usize, E>),
    /// This many bytes queued in the socket, received while lowering.
    Queued(usize),
}

/// A list of bytes that already lies in the guest's memory.
struct GuestBytes {
    ptr: usize,
    len: usize,
}

impl<C, E> ReadOutcome<C, E>
where
    C: BorrowMut<Connection> + 'static,
    E: Copy + From<ConnError>,
{
    /// The outcome of a read into the connection's receive buffer
    /// ([`Connection::read`]).
    pub(super) fn received(read: Result<usize, E>) -> Self {
        Self {
            read: Read::Received(read),
            conn: PhantomData,
        }
    }

    /// The bytes queued for a read of up to `max` from `conn`, if it is
    /// streaming and has some (see [`Connection::queued_for_read`]);
    /// otherwise the caller reads as usual.
    pub(super) fn queued(conn: &Connection, max: usize) -> Option<Self> {
        conn.queued_for_read(max).map(|len| Self {
            read: Read::Queued(len),
            conn: PhantomData,
        })
    }

    /// Puts the bytes into a fresh guest allocation (or passes the error on).
    fn place_in_guest<U: 'static>(
        &self,
        cx: &mut LowerContext<'_, U>,
    ) -> wasmtime::Result<Result<GuestBytes, E>> {
        match self.read {
            Read::Received(Ok(len)) => Self::copy_received(cx, len).map(Ok),
            Read::Received(Err(err)) => Ok(Err(err)),
            Read::Queued(len) => Self::receive_queued(cx, len),
        }
    }

    /// Copies the `len` bytes of the connection's receive buffer into a
    /// fresh guest allocation.
    fn copy_received<U: 'static>(
        cx: &mut LowerContext<'_, U>,
        len: usize,
    ) -> wasmtime::Result<GuestBytes> {
        let ptr = cx.realloc(0, 0, 1, len)?;
        let (dst, conn) = guest_bytes_and_connection::<C, U>(cx, ptr, len)?;
        let received = conn
            .received()
            .get(..len)
            .ok_or_else(|| wasmtime::format_err!("`read` lost its bytes before lowering"))?;
        dst.copy_from_slice(received);
        Ok(GuestBytes { ptr, len })
    }

    /// Receives `len` queued bytes into a fresh guest allocation. If the
    /// connection fails part-way, the bytes that arrived move to an
    /// allocation of their size (the guest frees a list by its length);
    /// the first one stays allocated, unseen by the guest, until the
    /// instance ends. If it fails before the first byte, the guest gets
    /// the error and the allocation stays the same way.
    fn receive_queued<U: 'static>(
        cx: &mut LowerContext<'_, U>,
        len: usize,
    ) -> wasmtime::Result<Result<GuestBytes, E>> {
        let ptr = cx.realloc(0, 0, 1, len)?;
        let (buf, conn) = guest_bytes_and_connection::<C, U>(cx, ptr, len)?;
        let received = match conn.receive_queued(buf) {
            Ok(received) => received,
            Err(err) => return Ok(Err(E::from(err))),
        };
        if received == len {
            return Ok(Ok(GuestBytes { ptr, len }));
        }
        let exact = cx.realloc(0, 0, 1, received)?;
        cx.as_slice_mut().copy_within(ptr..ptr + received, exact);
        Ok(Ok(GuestBytes {
            ptr: exact,
            len: received,
        }))
    }
}

/// The `len` bytes of guest memory at `ptr` (an allocation `realloc` just
/// returned, so within the memory), and the store's connection.
fn guest_bytes_and_connection<'a, C, U>(
    cx: &'a mut LowerContext<'_, U>,
    ptr: usize,
    len: usize,
) -> wasmtime::Result<(&'a mut [u8], &'a mut Connection)>
where
    C: BorrowMut<Connection> + 'static,
    U: 'static,
{
    let dst = cx
        .as_slice_mut()
        .get_mut(ptr..)
        .and_then(|rest| rest.get_mut(..len))
        .ok_or_else(|| wasmtime::format_err!("guest allocation outside its memory"))?
        .as_mut_ptr();
    let conn: &mut Connection = (cx.store.data_mut() as &mut dyn Any)
        .downcast_mut::<StoreState<C>>()
        .ok_or_else(|| wasmtime::format_err!("`read` lowered into another kind of store"))?
        .io
        .borrow_mut();
    // SAFETY: `dst` points at `len` bytes of the guest's linear memory, a
    // mapping apart from the store's data, so this slice and `conn` never
    // overlap. Nothing can move or free the memory while the slice lives:
    // no guest code runs while it is filled, and growing the memory or
    // recycling its slot needs the store, which `cx` holds exclusively
    // (both borrows are tied to it). A component's memory is never shared
    // with another thread.
    let bytes = unsafe { std::slice::from_raw_parts_mut(dst, len) };
    Ok((bytes, conn))
}

/// What a `ReadOutcome` stands for, as the generated bindings spell it.
type ReadResult<E> = Result<Vec<u8>, E>;

// SAFETY: the lowered form, ABI and type check are those of the WIT result
// this value stands for.
unsafe impl<C, E: ComponentType> ComponentType for ReadOutcome<C, E> {
    type Lower = <ReadResult<E> as ComponentType>::Lower;

    const ABI: CanonicalAbiInfo = <ReadResult<E> as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <ReadResult<E> as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: lowers exactly what a `ReadResult` lowers to, through the same
// `Result` implementation.
unsafe impl<C, E> Lower for ReadOutcome<C, E>
where
    C: BorrowMut<Connection> + 'static,
    E: Lower + Copy + From<ConnError>,
{
    fn linear_lower_to_flat<U>(
        &self,
        cx: &mut LowerContext<'_, U>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        self.place_in_guest(cx)?.linear_lower_to_flat(cx, ty, dst)
    }

    fn linear_lower_to_memory<U>(
        &self,
        cx: &mut LowerContext<'_, U>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        self.place_in_guest(cx)?
            .linear_lower_to_memory(cx, ty, offset)
    }
}

// SAFETY: a `list<u8>`'s pointer pair, as `Vec<u8>` lowers it.
unsafe impl ComponentType for GuestBytes {
    type Lower = <Vec<u8> as ComponentType>::Lower;

    const ABI: CanonicalAbiInfo = <Vec<u8> as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <Vec<u8> as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: writes the pointer pair the way wasmtime lowers a list.
unsafe impl Lower for GuestBytes {
    fn linear_lower_to_flat<U>(
        &self,
        _cx: &mut LowerContext<'_, U>,
        _ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        dst.write([
            ValRaw::i64(i64::try_from(self.ptr)?),
            ValRaw::i64(i64::try_from(self.len)?),
        ]);
        Ok(())
    }

    fn linear_lower_to_memory<U>(
        &self,
        cx: &mut LowerContext<'_, U>,
        _ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        debug_assert!(offset.is_multiple_of(Self::ALIGN32 as usize));
        *cx.get::<4>(offset) = u32::try_from(self.ptr)?.to_le_bytes();
        *cx.get::<4>(offset + 4) = u32::try_from(self.len)?.to_le_bytes();
        Ok(())
    }
}
