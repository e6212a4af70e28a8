//! The accept loop's scheduling class. A new connection wakes the accept
//! loop; as an ordinary thread it then preempts whatever runs on its CPU —
//! on a busy server, the thread serving the connection before it, which is
//! switched out and back in again for every connection accepted.
//! `SCHED_BATCH` keeps the thread's share of the CPU and its priority but
//! lets its wake-ups wait until the running thread blocks or its time slice
//! ends; the accept loop then takes every connection queued by that time in
//! one turn. Threads inherit the class of the thread that starts them, so
//! the connection threads the accept loop starts return to the normal one.

/// Puts the calling thread (the accept loop) in the `SCHED_BATCH` class.
pub fn accept_in_batches() {
    #[cfg(target_os = "linux")]
    set_policy(
        libc::SCHED_BATCH,
        "accept loop stays in the normal scheduling class",
    );
}

/// Puts the calling thread (one that serves connections) back in the
/// normal class, whose wake-ups preempt as usual.
pub fn serve_in_the_normal_class() {
    #[cfg(target_os = "linux")]
    set_policy(
        libc::SCHED_OTHER,
        "connection thread stays in the batch scheduling class",
    );
}

/// Sets the calling thread's scheduling policy (only Linux has
/// `SCHED_BATCH`; elsewhere nothing happens). Failing to is harmless and
/// only logged, with `failure`.
#[cfg(target_os = "linux")]
fn set_policy(policy: libc::c_int, failure: &str) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        let err = std::io::Error::last_os_error();
        tracing::debug!("{failure}: {err}");
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn policy() -> libc::c_int {
        // SAFETY: querying the calling thread's policy.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn the_accept_loop_batches_and_the_threads_it_starts_do_not() {
        std::thread::spawn(|| {
            accept_in_batches();
            assert_eq!(policy(), libc::SCHED_BATCH);
            std::thread::spawn(|| {
                assert_eq!(policy(), libc::SCHED_BATCH, "inherited");
                serve_in_the_normal_class();
                assert_eq!(policy(), libc::SCHED_OTHER);
            })
            .join()
            .unwrap();
        })
        .join()
        .unwrap();
    }
}
