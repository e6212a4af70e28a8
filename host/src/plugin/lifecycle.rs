//! One connection's lifecycle, written once for every plugin kind and
//! serving mode: `setup` → `handle` → `finish` under a time bound →
//! [`Outcome`].
//!
//! A plugin kind supplies its three calls as a [`Steps`] implementation;
//! [`run`] orders them, skips what must be skipped (no `handle` after a
//! failed `setup`, no call at all after a trap), bounds the blocking I/O
//! `finish` may do, and names the outcome. The steps are futures: those of
//! a plugin on an event loop suspend while the guest waits for its client;
//! those of a blocking plugin (a WASM plugin on its own thread, a native
//! plugin) never suspend, and [`run_blocking`] drives them to the end on
//! the calling thread without a runtime.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::Outcome;

/// How long the reads and writes of `finish` may block in total, for
/// every plugin kind (WASM plugins take it from their engine's limits).
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// What one call into the plugin gave: `Ok(Ok(()))` when it returned
/// normally, `Ok(Err(message))` when it returned an error, and
/// `Err(outcome)` when it trapped or the host failed it: then the plugin
/// must not be called again, and `outcome` is how the connection ended.
pub type Step = Result<Result<(), String>, Outcome>;

/// The three calls of a plugin kind, for one connection.
pub trait Steps {
    /// Calls `setup`.
    fn setup(&mut self) -> impl Future<Output = Step>;
    /// Calls `handle`.
    fn handle(&mut self) -> impl Future<Output = Step>;
    /// Bounds every read and write from now on to `limit` in total (called
    /// before `finish`, so cleanup cannot hold a connection open however
    /// slowly the client trickles or however long it stays silent).
    fn limit_blocking(&mut self, limit: Duration);
    /// Calls `finish`; an error it returns is not an outcome (the
    /// connection's outcome is `handle`'s).
    fn finish(&mut self) -> impl Future<Output = Step>;
}

/// Runs `setup`, `handle` and `finish` (the last with its I/O bounded by
/// `finish_timeout`), skipping the rest after a failed `setup` or a trap.
pub async fn run(steps: &mut impl Steps, finish_timeout: Duration) -> Outcome {
    match steps.setup().await {
        Ok(Ok(())) => {}
        Ok(Err(message)) => return Outcome::SetupError(message),
        Err(stopped) => return stopped,
    }
    let handled = match steps.handle().await {
        Ok(handled) => handled,
        Err(stopped) => return stopped,
    };
    steps.limit_blocking(finish_timeout);
    if let Err(stopped) = steps.finish().await {
        return stopped;
    }
    match handled {
        Ok(()) => Outcome::Ok,
        Err(message) => Outcome::HandleError(message),
    }
}

/// [`run`] for steps that block instead of suspending, on the calling
/// thread.
pub fn run_blocking(steps: &mut impl Steps, finish_timeout: Duration) -> Outcome {
    let lifecycle = pin!(run(steps, finish_timeout));
    match lifecycle.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(outcome) => outcome,
        // Blocking steps finish within their single poll: a step that
        // suspended has no one to wake it.
        Poll::Pending => {
            debug_assert!(false, "a blocking plugin call suspended");
            Outcome::HostError("a blocking plugin call suspended".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps that answer from a script and record what was called.
    #[derive(Default)]
    struct Scripted {
        setup: Option<Step>,
        handle: Option<Step>,
        finish: Option<Step>,
        calls: Vec<&'static str>,
        limit: Option<Duration>,
    }

    impl Scripted {
        fn answering(setup: Step, handle: Step, finish: Step) -> Self {
            Self {
                setup: Some(setup),
                handle: Some(handle),
                finish: Some(finish),
                ..Self::default()
            }
        }

        fn call(&mut self, name: &'static str) -> Step {
            self.calls.push(name);
            let answer = match name {
                "setup" => &mut self.setup,
                "handle" => &mut self.handle,
                _ => &mut self.finish,
            };
            answer.take().expect("each step is called once")
        }
    }

    impl Steps for Scripted {
        async fn setup(&mut self) -> Step {
            self.call("setup")
        }
        async fn handle(&mut self) -> Step {
            self.call("handle")
        }
        fn limit_blocking(&mut self, limit: Duration) {
            self.calls.push("limit");
            self.limit = Some(limit);
        }
        async fn finish(&mut self) -> Step {
            self.call("finish")
        }
    }

    const FINISH: Duration = Duration::from_secs(5);

    #[test]
    fn every_step_runs_in_order_and_finish_is_bounded() {
        let mut steps = Scripted::answering(Ok(Ok(())), Ok(Ok(())), Ok(Ok(())));
        assert_eq!(run_blocking(&mut steps, FINISH), Outcome::Ok);
        assert_eq!(steps.calls, ["setup", "handle", "limit", "finish"]);
        assert_eq!(steps.limit, Some(FINISH));
    }

    #[test]
    fn a_failed_setup_skips_handle_and_finish() {
        let mut steps = Scripted::answering(Err(Outcome::Ok), Ok(Ok(())), Ok(Ok(())));
        steps.setup = Some(Ok(Err("no".into())));
        assert_eq!(
            run_blocking(&mut steps, FINISH),
            Outcome::SetupError("no".into())
        );
        assert_eq!(steps.calls, ["setup"]);
    }

    #[test]
    fn a_failed_handle_still_finishes_and_names_the_error() {
        let mut steps = Scripted::answering(Ok(Ok(())), Ok(Err("gave up".into())), Ok(Ok(())));
        assert_eq!(
            run_blocking(&mut steps, FINISH),
            Outcome::HandleError("gave up".into())
        );
        assert_eq!(steps.calls, ["setup", "handle", "limit", "finish"]);
    }

    #[test]
    fn a_trap_stops_every_later_call() {
        let trap = || Err(Outcome::Trap("trap: unreachable".into()));
        let mut in_handle = Scripted::answering(Ok(Ok(())), trap(), Ok(Ok(())));
        assert_eq!(run_blocking(&mut in_handle, FINISH), trap().unwrap_err());
        assert_eq!(in_handle.calls, ["setup", "handle"]);
        let mut in_finish = Scripted::answering(Ok(Ok(())), Ok(Err("x".into())), trap());
        assert_eq!(run_blocking(&mut in_finish, FINISH), trap().unwrap_err());
    }

    #[test]
    fn an_error_from_finish_is_not_the_outcome() {
        let mut steps = Scripted::answering(Ok(Ok(())), Ok(Ok(())), Ok(Err("late".into())));
        assert_eq!(run_blocking(&mut steps, FINISH), Outcome::Ok);
    }
}
