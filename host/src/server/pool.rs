//! A growable pool of connection threads.
//!
//! Every connection gets a thread of its own (plugins do blocking I/O), but
//! threads are reused: spawning one per connection costs more than serving a
//! short connection. A job goes to an idle thread when there is one, else a
//! new thread starts; threads idle for longer than the keep-alive exit.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle thread waits for work before exiting.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Runs jobs on reused threads; never queues a job behind a busy one.
pub struct ThreadPool {
    shared: Arc<Shared>,
    stack_size: usize,
}

/// What the pool and its threads share.
///
/// An idle thread sleeps on a condition variable, which goes straight to
/// the kernel: channels that spin and yield before they sleep cost a
/// server pinned to one CPU a few context switches per connection.
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a job is queued or the pool is dropped.
    changed: Condvar,
    /// Threads waiting for a job and not yet promised one.
    idle: AtomicUsize,
}

/// Jobs promised to idle threads and not yet taken.
struct Queue {
    jobs: VecDeque<Job>,
    /// Set when the pool is dropped: idle threads exit.
    closed: bool,
}

impl ThreadPool {
    /// A pool whose threads have `stack_size`-byte stacks.
    pub fn new(stack_size: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    closed: false,
                }),
                changed: Condvar::new(),
                idle: AtomicUsize::new(0),
            }),
            stack_size,
        }
    }

    /// Runs `job` on an idle thread, or on a new one if none is idle.
    pub fn execute(&self, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let job: Job = Box::new(job);
        // Claim an idle thread: it is then bound to take a job off the queue.
        if claim(&self.shared.idle) {
            self.shared.queue().jobs.push_back(job);
            self.shared.changed.notify_one();
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        thread::Builder::new()
            .name("conn".into())
            .stack_size(self.stack_size)
            .spawn(move || worker(job, &shared))?;
        Ok(())
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.queue().closed = true;
        self.shared.changed.notify_all();
    }
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Jobs run outside the lock, so a panic cannot leave the queue
        // half-changed.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next job for an idle thread; `None` when it is to exit: the
    /// pool is gone, or it waited [`KEEP_ALIVE`] and no job was promised
    /// to an idle thread (else one is on its way and it must take it).
    fn next_job(&self) -> Option<Job> {
        let mut queue = self.queue();
        loop {
            if let Some(job) = queue.jobs.pop_front() {
                return Some(job);
            }
            if queue.closed {
                return None;
            }
            let (guard, waited) = self
                .changed
                .wait_timeout(queue, KEEP_ALIVE)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            queue = guard;
            if waited.timed_out() && queue.jobs.is_empty() && claim(&self.idle) {
                return None;
            }
        }
    }
}

/// Takes one unit from `idle` if any is left.
fn claim(idle: &AtomicUsize) -> bool {
    idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

fn worker(first: Job, shared: &Shared) {
    // Started by the accept loop, the thread inherited its batch class.
    crate::sys::sched::serve_in_the_normal_class();
    first();
    loop {
        shared.idle.fetch_add(1, Ordering::AcqRel);
        match shared.next_job() {
            Some(job) => job(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn runs_every_job_and_reuses_threads() {
        let pool = ThreadPool::new(256 * 1024);
        let (tx, rx) = mpsc::channel();
        for i in 0..50 {
            let tx = tx.clone();
            pool.execute(move || tx.send((i, thread::current().id())).unwrap())
                .unwrap();
            // Let the thread go idle so the next job can reuse it.
            let _ = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            thread::sleep(Duration::from_millis(1));
        }
        assert!(pool.shared.idle.load(Ordering::Acquire) <= 2);
    }

    #[test]
    fn idle_threads_exit_when_the_pool_is_dropped() {
        let pool = ThreadPool::new(256 * 1024);
        let (tx, rx) = mpsc::channel();
        pool.execute(move || tx.send(()).unwrap()).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        // Each thread holds the shared state until it exits.
        let shared = Arc::downgrade(&pool.shared);
        drop(pool);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while shared.upgrade().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the idle thread is still there"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn busy_threads_never_delay_new_jobs() {
        let pool = ThreadPool::new(256 * 1024);
        let (block_tx, block_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        pool.execute(move || {
            let _ = block_rx.recv();
        })
        .unwrap();
        pool.execute(move || done_tx.send(()).unwrap()).unwrap();
        done_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("second job ran while the first was blocked");
        drop(block_tx);
    }
}
