//! The registry of open connections: how many there are (for the
//! connection cap and the drain on shutdown) and their sockets, so the host
//! can close the stragglers when the grace period ends.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Called when a connection ends while the accept loop waits for that
/// (see [`LiveConnections::wake_on_close`]), to wake it.
pub type OnClose = Box<dyn Fn() + Send + Sync>;

/// Open connections, shared by the accept loop and connection threads.
#[derive(Clone)]
pub struct LiveConnections {
    inner: Arc<Inner>,
}

struct Inner {
    sockets: Mutex<HashMap<u64, RawFd>>,
    next_id: AtomicU64,
    on_close: OnClose,
    /// Whether a connection's end calls `on_close`.
    wake_on_close: AtomicBool,
}

impl LiveConnections {
    /// An empty registry that calls `on_close` when a connection ends
    /// while [`LiveConnections::wake_on_close`] is on.
    pub fn new(on_close: OnClose) -> Self {
        Self {
            inner: Arc::new(Inner {
                sockets: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                on_close,
                wake_on_close: AtomicBool::new(false),
            }),
        }
    }

    /// Whether connections that end from now on call `on_close`: on while
    /// the accept loop waits for a free slot or for the drain, off while it
    /// only waits for new connections (a wake-up per closed connection
    /// would cost it a context switch each). A caller turning it on and
    /// then reading [`LiveConnections::count`] misses no close: a
    /// connection that ends after that reading sees it on (the registry's
    /// lock orders the two).
    pub fn wake_on_close(&self, wanted: bool) {
        self.inner.wake_on_close.store(wanted, Ordering::SeqCst);
    }

    fn sockets(&self) -> MutexGuard<'_, HashMap<u64, RawFd>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.inner
            .sockets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `stream` as open until the returned guard is dropped. Drop
    /// the guard *before* the stream, so the fd is never shut down after it
    /// was closed and reused.
    pub fn register(&self, stream: &impl AsRawFd) -> LiveGuard {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.sockets().insert(id, stream.as_raw_fd());
        LiveGuard {
            live: self.clone(),
            id,
        }
    }

    /// How many connections are open.
    pub fn count(&self) -> usize {
        self.sockets().len()
    }

    /// Shuts down both directions of every open connection: plugins blocked
    /// in `read` see end of stream and their `write`s fail, so they finish.
    pub fn shutdown_all(&self) -> usize {
        let sockets = self.sockets();
        for fd in sockets.values() {
            // SAFETY: the fd is open: guards remove it (under this lock)
            // before their stream is dropped.
            unsafe { crate::sys::socket::shutdown_both(*fd) };
        }
        sockets.len()
    }
}

/// Keeps a connection registered while it lives.
pub struct LiveGuard {
    live: LiveConnections,
    id: u64,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.live.sockets().remove(&self.id);
        if self.live.inner.wake_on_close.load(Ordering::SeqCst) {
            (self.live.inner.on_close)();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn counts_shuts_down_and_wakes_only_when_asked() {
        let closed = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&closed);
        let live = LiveConnections::new(Box::new(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        }));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let guard = live.register(&server);
        assert_eq!(live.count(), 1);
        assert_eq!(live.shutdown_all(), 1);
        let mut buf = [0u8; 1];
        assert_eq!((&client).read(&mut buf).unwrap(), 0, "client sees EOF");
        drop(guard);
        assert_eq!(live.count(), 0);
        assert_eq!(
            closed.load(Ordering::SeqCst),
            0,
            "nobody asked for a wake-up"
        );
        live.wake_on_close(true);
        drop(live.register(&server));
        assert_eq!(closed.load(Ordering::SeqCst), 1, "woken once asked");
    }
}
