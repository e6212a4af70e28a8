//! The native backend: the same [`Handler`] exported through the host's C
//! ABI (`plughost-native-abi`), so one plugin source builds both a
//! `wasm32-wasip2` component and a native shared library.
//!
//! Panics never cross the boundary: each call runs under `catch_unwind` and
//! a panic is reported to the host as `PANICKED` with its message, which
//! closes only that connection.
//!
//! Only compiled for non-`wasm32` targets. Plugin crates never name
//! anything here; the [`export!`](crate::export) macro does.

use std::cell::RefCell;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};

use plughost_native_abi::{self as abi, ErrorCode, HostApi, Message, SocketAddress, Status};

use crate::conn::Transport;
use crate::{Conn, Error, Handler};

fn error_from_code(code: i64) -> Error {
    match code {
        c if c == ErrorCode::Closed as i64 => Error::Closed,
        c if c == ErrorCode::TimedOut as i64 => Error::TimedOut,
        c if c == ErrorCode::Reset as i64 => Error::Reset,
        c if c == ErrorCode::BrokenPipe as i64 => Error::BrokenPipe,
        c if c == ErrorCode::InvalidArgument as i64 => Error::InvalidArgument,
        _ => Error::Other,
    }
}

/// From this many bytes on, a read returns its receive buffer rather than
/// a copy of it.
const HAND_OVER_READ: usize = 16 * 1024;

/// [`Transport`] over the host's callbacks.
struct Native {
    api: &'static HostApi,
    conn: *mut c_void,
    /// Receive buffer of one call, reused by its reads until a large read
    /// hands it over.
    scratch: Vec<u8>,
}

impl Native {
    fn address(
        &self,
        get: unsafe extern "C" fn(*mut c_void, *mut SocketAddress) -> i32,
    ) -> SocketAddr {
        let mut out = SocketAddress::default();
        // SAFETY: `conn` is the host's pointer for this call; `out` is writable.
        let status = unsafe { get(self.conn, &mut out) };
        if status != 0 {
            return SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        }
        let ip = if out.family == 6 {
            IpAddr::V6(Ipv6Addr::from(out.ip))
        } else {
            IpAddr::V4(Ipv4Addr::new(out.ip[0], out.ip[1], out.ip[2], out.ip[3]))
        };
        SocketAddr::new(ip, out.port)
    }
}

impl Transport for Native {
    fn read(&mut self, max: u32) -> Result<Vec<u8>, Error> {
        // The host reads straight into the spare capacity of this call's
        // reusable buffer (never zeroed, so an idle connection's buffer
        // costs no resident memory); only what arrived is copied out, or,
        // for a large read, the buffer itself is handed over (allocating
        // the next one costs less than the copy).
        let max = max as usize;
        self.scratch.clear();
        self.scratch.reserve(max);
        // SAFETY: the spare capacity is writable for `max` bytes (reserved
        // above); `conn` is the host's.
        let n = unsafe { (self.api.read)(self.conn, self.scratch.as_mut_ptr(), max) };
        if n < 0 {
            return Err(error_from_code(-n));
        }
        let n = (n as usize).min(max);
        // SAFETY: the host initialised the first `n` (at most `max`) bytes.
        unsafe { self.scratch.set_len(n) };
        // Only when it is at least half full: a plugin may keep what it
        // reads, and should not keep much more memory than bytes.
        if n >= HAND_OVER_READ && n >= self.scratch.capacity() / 2 {
            return Ok(std::mem::take(&mut self.scratch));
        }
        Ok(self.scratch.clone())
    }

    fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        // SAFETY: `data` is readable for its length; `conn` is the host's.
        match unsafe { (self.api.write)(self.conn, data.as_ptr(), data.len()) } {
            0 => Ok(()),
            code => Err(error_from_code(i64::from(code))),
        }
    }

    fn shutdown(&mut self, how: Shutdown) -> Result<(), Error> {
        let how = match how {
            Shutdown::Read => 0,
            Shutdown::Write => 1,
            Shutdown::Both => 2,
        };
        // SAFETY: `conn` is the host's pointer for this call.
        match unsafe { (self.api.shutdown)(self.conn, how) } {
            0 => Ok(()),
            code => Err(error_from_code(i64::from(code))),
        }
    }

    fn peer_addr(&self) -> SocketAddr {
        self.address(self.api.peer_address)
    }

    fn local_addr(&self) -> SocketAddr {
        self.address(self.api.local_address)
    }

    fn set_timeout_ms(&mut self, ms: Option<u64>) {
        let ms = ms.map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX));
        // SAFETY: `conn` is the host's pointer for this call.
        unsafe { (self.api.set_timeout)(self.conn, ms) }
    }

    fn timeout_ms(&self) -> Option<u64> {
        // SAFETY: `conn` is the host's pointer for this call.
        let ms = unsafe { (self.api.timeout)(self.conn) };
        u64::try_from(ms).ok()
    }
}

thread_local! {
    /// Read-ahead bytes carried from `setup` to `handle` to `finish`. The
    /// host makes the three calls of one connection on one thread, one
    /// connection at a time; `setup` starts afresh and `finish` clears it.
    static READ_AHEAD: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn write_message(err: *mut Message, text: &str) {
    if err.is_null() {
        return;
    }
    // SAFETY: the host passes a valid, writable message buffer.
    let message = unsafe { &mut *err };
    let bytes = text.as_bytes();
    let mut len = bytes.len().min(abi::MESSAGE_CAPACITY);
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    message.bytes[..len].copy_from_slice(&bytes[..len]);
    message.len = len;
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into())
}

/// Runs one lifecycle call with panics caught and the result encoded.
fn call(
    api: *const HostApi,
    conn: *mut c_void,
    err: *mut Message,
    fresh: bool,
    f: impl FnOnce(&mut Conn<'_>) -> Result<(), String>,
) -> i32 {
    if api.is_null() {
        write_message(err, "the host passed no API table");
        return Status::ERROR;
    }
    // SAFETY: the host's API table is static.
    let api: &'static HostApi = unsafe { &*api };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut transport = Native {
            api,
            conn,
            scratch: Vec::new(),
        };
        let buffered = if fresh { Vec::new() } else { READ_AHEAD.take() };
        let mut conn = Conn::with_buffer(&mut transport, buffered);
        let result = f(&mut conn);
        READ_AHEAD.set(conn.into_buffer());
        result
    }));
    match result {
        Ok(Ok(())) => Status::OK,
        Ok(Err(message)) => {
            write_message(err, &message);
            Status::ERROR
        }
        Err(payload) => {
            READ_AHEAD.take();
            write_message(err, &panic_text(payload.as_ref()));
            Status::PANICKED
        }
    }
}

/// The C entry points for a [`Handler`].
#[doc(hidden)]
pub struct Adapter<H>(PhantomData<H>);

impl<H: Handler> Adapter<H> {
    /// `setup` through the C ABI.
    ///
    /// # Safety
    /// Called by the host with its API table, connection and message buffer.
    pub unsafe extern "C" fn setup(
        api: *const HostApi,
        conn: *mut c_void,
        err: *mut Message,
    ) -> i32 {
        call(api, conn, err, true, H::setup)
    }

    /// `handle` through the C ABI.
    ///
    /// # Safety
    /// As for [`Adapter::setup`].
    pub unsafe extern "C" fn handle(
        api: *const HostApi,
        conn: *mut c_void,
        err: *mut Message,
    ) -> i32 {
        call(api, conn, err, false, H::handle)
    }

    /// `finish` through the C ABI.
    ///
    /// # Safety
    /// As for [`Adapter::setup`].
    pub unsafe extern "C" fn finish(
        api: *const HostApi,
        conn: *mut c_void,
        err: *mut Message,
    ) -> i32 {
        let status = call(api, conn, err, false, |c| {
            H::finish(c);
            Ok(())
        });
        READ_AHEAD.take();
        status
    }
}
