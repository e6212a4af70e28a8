//! What `read` returns: either bytes the host already read (lowered as
//! usual: wasmtime copies them into memory the guest allocates), or the
//! promise of bytes queued in the socket, which the lowering receives
//! straight into the guest's allocation: one copy less per read, which
//! bulk transfers feel.
//!
//! The guest sees the same thing either way: one `cabi_realloc` for exactly
//! the bytes it gets. That is why only queued bytes, whose count the
//! kernel tells beforehand ([`Connection::queued_for_read`]), go straight
//! in: sizing the allocation for the largest read and shrinking it
//! afterwards would need a `realloc` of an existing allocation, which
//! not every guest language supports (Go's runtime panics on it).
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

use super::state::StoreState;
use crate::connection::{ConnError, Connection};

/// The result of `read` for a store holding `StoreState<C>`, with the
/// bindings' error type `E`.
pub(super) enum ReadOutcome<C, E> {
    /// What the host function read: data, end of stream or an error.
    Read(Result<Vec<u8>, E>),
    /// `len` bytes queued in the socket, received while lowering.
    Queued {
        len: usize,
        conn: PhantomData<fn() -> C>,
    },
}

/// A list of bytes that already lies in the guest's memory.
struct GuestBytes {
    ptr: usize,
    len: usize,
}

impl<C, E> ReadOutcome<C, E>
where
    C: BorrowMut<Connection> + 'static,
    E: From<ConnError>,
{
    /// The bytes queued for a read of up to `max` from `conn`, if it is
    /// streaming and has some (see [`Connection::queued_for_read`]);
    /// otherwise the caller reads as usual.
    pub(super) fn queued(conn: &Connection, max: usize) -> Option<Self> {
        conn.queued_for_read(max).map(|len| Self::Queued {
            len,
            conn: PhantomData,
        })
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
        // `realloc` checked that the allocation lies within the memory.
        let dst = cx.as_slice_mut()[ptr..][..len].as_mut_ptr();
        let conn: &mut Connection = (cx.store.data_mut() as &mut dyn Any)
            .downcast_mut::<StoreState<C>>()
            .ok_or_else(|| wasmtime::format_err!("`read` lowered into another kind of store"))?
            .io
            .borrow_mut();
        // SAFETY: `dst` points at `len` bytes of the guest's linear memory,
        // a mapping apart from the store's data, so this slice and `conn`
        // never overlap. Nothing can move or free the memory while the
        // slice lives: no guest code runs during the receive, and growing
        // the memory or recycling its slot needs the store, which `cx`
        // holds exclusively. A component's memory is never shared with
        // another thread.
        let buf = unsafe { std::slice::from_raw_parts_mut(dst, len) };
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
    E: Lower + From<ConnError>,
{
    fn linear_lower_to_flat<U>(
        &self,
        cx: &mut LowerContext<'_, U>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        match self {
            Self::Read(read) => read.linear_lower_to_flat(cx, ty, dst),
            Self::Queued { len, .. } => {
                Self::receive_queued(cx, *len)?.linear_lower_to_flat(cx, ty, dst)
            }
        }
    }

    fn linear_lower_to_memory<U>(
        &self,
        cx: &mut LowerContext<'_, U>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        match self {
            Self::Read(read) => read.linear_lower_to_memory(cx, ty, offset),
            Self::Queued { len, .. } => {
                Self::receive_queued(cx, *len)?.linear_lower_to_memory(cx, ty, offset)
            }
        }
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
