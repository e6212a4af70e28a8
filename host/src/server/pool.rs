//! A growable pool of connection threads.
//!
//! Every connection gets a thread of its own (plugins do blocking I/O), but
//! threads are reused: spawning one per connection costs more than serving a
//! short connection. A job goes to an idle thread when there is one, else a
//! new thread starts; threads idle for longer than the keep-alive exit.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle thread waits for work before exiting.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Runs jobs on reused threads; never queues a job behind a busy one.
pub struct ThreadPool {
    sender: Sender<Job>,
    receiver: Receiver<Job>,
    /// Threads waiting for a job and not yet promised one.
    idle: Arc<AtomicUsize>,
    stack_size: usize,
}

impl ThreadPool {
    /// A pool whose threads have `stack_size`-byte stacks.
    pub fn new(stack_size: usize) -> Self {
        let (sender, receiver) = crossbeam_channel::unbounded();
        Self {
            sender,
            receiver,
            idle: Arc::new(AtomicUsize::new(0)),
            stack_size,
        }
    }

    /// Runs `job` on an idle thread, or on a new one if none is idle.
    pub fn execute(&self, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let job: Job = Box::new(job);
        // Claim an idle thread: it is then bound to take a job off the channel.
        if claim(&self.idle) {
            // The channel lives as long as `self`, so sending cannot fail.
            let _ = self.sender.send(job);
            return Ok(());
        }
        let receiver = self.receiver.clone();
        let idle = Arc::clone(&self.idle);
        thread::Builder::new()
            .name("conn".into())
            .stack_size(self.stack_size)
            .spawn(move || worker(job, receiver, idle))?;
        Ok(())
    }
}

/// Takes one unit from `idle` if any is left.
fn claim(idle: &AtomicUsize) -> bool {
    idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

fn worker(first: Job, receiver: Receiver<Job>, idle: Arc<AtomicUsize>) {
    first();
    loop {
        idle.fetch_add(1, Ordering::AcqRel);
        loop {
            match receiver.recv_timeout(KEEP_ALIVE) {
                Ok(job) => {
                    job();
                    break;
                }
                // Leave only if no job has been promised to an idle thread;
                // otherwise one is on its way and this thread must take it.
                Err(RecvTimeoutError::Timeout) if claim(&idle) => return,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
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
        assert!(pool.idle.load(Ordering::Acquire) <= 2);
    }

    #[test]
    fn busy_threads_never_delay_new_jobs() {
        let pool = ThreadPool::new(256 * 1024);
        let (block_tx, block_rx) = crossbeam_channel::bounded::<()>(0);
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
