//! The accept loop's scheduling class. A new connection wakes the accept
//! loop; as an ordinary thread it then preempts whatever runs on its CPU —
//! on a busy server, the thread serving the connection before it, which is
//! switched out and back in again for every connection accepted.
//! `SCHED_BATCH` keeps the thread's share of the CPU and its priority but
//! lets its wake-ups wait until the running thread blocks or its time slice
//! ends; the accept loop then takes every connection queued by that time in
//! one turn.

/// Puts the calling thread in the `SCHED_BATCH` class (Linux; elsewhere
/// nothing happens). Failing to is harmless and only logged.
pub fn accept_in_batches() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` outlives the call.
        let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if result != 0 {
            let err = std::io::Error::last_os_error();
            tracing::debug!("accept loop stays in the normal scheduling class: {err}");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_calling_thread_becomes_a_batch_thread() {
        std::thread::spawn(|| {
            accept_in_batches();
            // SAFETY: querying the calling thread's policy.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_BATCH);
        })
        .join()
        .unwrap();
    }
}
