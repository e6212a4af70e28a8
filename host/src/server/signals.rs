//! The signals every server obeys, TCP and UDP alike: SIGHUP asks for a
//! reload, SIGINT and SIGTERM for a graceful stop (stop accepting, drain
//! for the grace period; a second one cuts the drain short). They arrive
//! as events on the server's `mio` poll.

use anyhow::{Context, Result};
use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use super::ServerHooks;

/// The server's signal handlers, registered with its poll.
pub struct ControlSignals(Signals);

/// A stop that a signal asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    /// The signal's name, for the log.
    pub name: &'static str,
}

impl ControlSignals {
    /// Installs the handlers and registers them with `registry` as `token`.
    pub fn register(registry: &Registry, token: Token) -> Result<Self> {
        let mut signals =
            Signals::new([SIGINT, SIGTERM, SIGHUP]).context("cannot install signal handlers")?;
        registry
            .register(&mut signals, token, Interest::READABLE)
            .context("cannot watch signals")?;
        Ok(Self(signals))
    }

    /// Handles the signals that arrived: a reload through `hooks` for each
    /// SIGHUP; the stop asked for, if any.
    pub fn handle(&mut self, hooks: &mut dyn ServerHooks) -> Option<Stop> {
        let mut stop = None;
        for signal in self.0.pending() {
            match signal {
                SIGHUP => hooks.reload(),
                SIGINT => stop = Some(Stop { name: "SIGINT" }),
                _ => stop = Some(Stop { name: "SIGTERM" }),
            }
        }
        stop
    }

    /// Whether a stop signal arrived (reloads asked for meanwhile are
    /// dropped: the server is stopping).
    pub fn stop_again(&mut self) -> bool {
        self.0.pending().any(|s| s == SIGINT || s == SIGTERM)
    }
}
