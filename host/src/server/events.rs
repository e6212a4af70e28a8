//! Event-loop threads: each runs a single-threaded tokio runtime on which
//! connections are tasks. A plugin that waits for its client suspends its
//! task, so one thread serves many connections without a context switch
//! per request. The accept loop hands each connection to the thread
//! serving the fewest.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::plugin::BoxFuture;

/// The event-loop threads of one listener.
pub struct EventLoops {
    loops: Vec<EventLoop>,
}

struct EventLoop {
    tasks: UnboundedSender<BoxFuture<'static, ()>>,
    /// Connections running on this loop.
    load: Arc<AtomicUsize>,
}

impl EventLoops {
    /// Starts `count` (at least one) event-loop threads named after
    /// `listener`.
    pub fn start(count: usize, listener: &str) -> io::Result<Self> {
        let mut loops = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            let (tasks, receiver) = unbounded_channel();
            thread::Builder::new()
                .name(format!("events {listener} #{index}"))
                .spawn(move || run(&runtime, receiver))?;
            loops.push(EventLoop {
                tasks,
                load: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Self { loops })
    }

    /// Runs `task` on the least busy loop.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let chosen = self
            .loops
            .iter()
            .min_by_key(|l| l.load.load(Ordering::Relaxed))
            .expect("there is at least one event loop");
        let running = Running::start(&chosen.load);
        let task = Box::pin(async move {
            task.await;
            drop(running);
        });
        if chosen.tasks.send(task).is_err() {
            // Only if the loop's thread died; the connection closes.
            tracing::error!("event loop stopped; connection dropped");
        }
    }
}

/// Counts a task in its loop's load until dropped (also if the task is
/// dropped unfinished).
struct Running(Arc<AtomicUsize>);

impl Running {
    fn start(load: &Arc<AtomicUsize>) -> Self {
        load.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(load))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A loop thread: spawns every task it is sent until the sender is gone.
fn run(runtime: &tokio::runtime::Runtime, mut tasks: UnboundedReceiver<BoxFuture<'static, ()>>) {
    runtime.block_on(async move {
        while let Some(task) = tasks.recv().await {
            tokio::spawn(task);
        }
    });
}
