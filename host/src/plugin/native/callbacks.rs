//! The host side of the native ABI: the callbacks a plugin calls to use its
//! connection. Each forwards to the [`Connection`] behind the opaque
//! pointer and never unwinds into plugin code.

use std::ffi::c_void;
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use plughost_native_abi::{ABI_VERSION, ErrorCode, HostApi, SocketAddress};

use crate::address::PeerAddr;
use crate::connection::{ConnError, Connection, ShutdownDirection};

/// The table handed to every plugin call.
pub static HOST_API: HostApi = HostApi {
    abi_version: ABI_VERSION,
    read,
    write,
    shutdown,
    peer_address,
    local_address,
    set_timeout,
    timeout,
};

crate::connection::error_code_from_conn_error!(ErrorCode);

/// Runs `f` on the connection behind `conn`, turning a (host bug) panic
/// into `fallback` instead of unwinding across the C boundary.
///
/// # Safety
/// `conn` must be the pointer the host passed to the current plugin call.
unsafe fn with_conn<R>(conn: *mut c_void, fallback: R, f: impl FnOnce(&mut Connection) -> R) -> R {
    // SAFETY: guaranteed by the caller: the host passes `&mut Connection`
    // and it stays valid and unaliased for the duration of the call.
    let conn = unsafe { &mut *conn.cast::<Connection>() };
    catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or(fallback)
}

fn status(result: Result<(), ConnError>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(err) => ErrorCode::from(err) as i32,
    }
}

unsafe extern "C" fn read(conn: *mut c_void, buf: *mut u8, len: usize) -> i64 {
    if buf.is_null() || len == 0 {
        return -(ErrorCode::InvalidArgument as i64);
    }
    // SAFETY: the plugin passes a writable buffer of `len` bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(buf, len) };
    // SAFETY: `conn` comes from the host's call.
    unsafe {
        with_conn(conn, -(ErrorCode::Other as i64), |c| {
            match c.read_into(buf) {
                Ok(n) => n as i64,
                Err(err) => -(ErrorCode::from(err) as i64),
            }
        })
    }
}

unsafe extern "C" fn write(conn: *mut c_void, buf: *const u8, len: usize) -> i32 {
    if len == 0 {
        return 0;
    }
    if buf.is_null() {
        return ErrorCode::InvalidArgument as i32;
    }
    // SAFETY: the plugin passes a readable buffer of `len` bytes.
    let data = unsafe { std::slice::from_raw_parts(buf, len) };
    // SAFETY: `conn` comes from the host's call.
    unsafe { with_conn(conn, ErrorCode::Other as i32, |c| status(c.write_all(data))) }
}

unsafe extern "C" fn shutdown(conn: *mut c_void, how: u32) -> i32 {
    let how = match how {
        0 => ShutdownDirection::Read,
        1 => ShutdownDirection::Write,
        2 => ShutdownDirection::Both,
        _ => return ErrorCode::InvalidArgument as i32,
    };
    // SAFETY: `conn` comes from the host's call.
    unsafe { with_conn(conn, ErrorCode::Other as i32, |c| status(c.shutdown(how))) }
}

/// Unix peers have family 0 and no address.
fn encode(addr: &PeerAddr) -> SocketAddress {
    let Some(addr) = addr.ip() else {
        return SocketAddress::default();
    };
    let mut out = SocketAddress {
        port: addr.port(),
        ..SocketAddress::default()
    };
    match addr.ip() {
        IpAddr::V4(v4) => {
            out.family = 4;
            out.ip[..4].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.family = 6;
            out.ip = v6.octets();
        }
    }
    out
}

unsafe fn put_address(out: *mut SocketAddress, addr: &PeerAddr) -> i32 {
    if out.is_null() {
        return ErrorCode::InvalidArgument as i32;
    }
    // SAFETY: the plugin passes a writable address struct.
    unsafe { out.write(encode(addr)) };
    0
}

unsafe extern "C" fn peer_address(conn: *mut c_void, out: *mut SocketAddress) -> i32 {
    // SAFETY: `conn` comes from the host's call; `out` is checked above.
    unsafe {
        let addr = with_conn(conn, None, |c| Some(c.peer_addr().clone()));
        addr.map_or(ErrorCode::Other as i32, |a| put_address(out, &a))
    }
}

unsafe extern "C" fn local_address(conn: *mut c_void, out: *mut SocketAddress) -> i32 {
    // SAFETY: as for `peer_address`.
    unsafe {
        let addr = with_conn(conn, None, |c| Some(c.local_addr().clone()));
        addr.map_or(ErrorCode::Other as i32, |a| put_address(out, &a))
    }
}

unsafe extern "C" fn set_timeout(conn: *mut c_void, timeout_ms: i64) {
    let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
    // SAFETY: `conn` comes from the host's call.
    unsafe {
        with_conn(conn, (), |c| {
            // Failing to apply leaves the previous timeout in force.
            let _ = c.set_read_timeout(timeout);
        })
    }
}

unsafe extern "C" fn timeout(conn: *mut c_void) -> i64 {
    // SAFETY: `conn` comes from the host's call.
    unsafe {
        with_conn(conn, -1, |c| {
            c.read_timeout()
                .map_or(-1, |t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_encode_both_families() {
        let v4 = encode(&PeerAddr::Ip("127.0.0.1:8000".parse().unwrap()));
        assert_eq!(
            (v4.family, &v4.ip[..4], v4.port),
            (4, &[127, 0, 0, 1][..], 8000)
        );
        let v6 = encode(&PeerAddr::Ip("[::1]:9".parse().unwrap()));
        assert_eq!(encode(&PeerAddr::Unix(None)).family, 0);
        assert_eq!((v6.family, v6.ip[15], v6.port), (6, 1, 9));
    }
}
