//! Unit-testing a [`Protocol`] natively: [`Harness`] plays the host —
//! connects clients, delivers their bytes, collects what the plugin writes
//! to each, reports the ends the plugin asks for, and fires timers on a
//! clock of its own. Outside a component, every [`Transport`] call lands
//! in this module's recorder.

use std::time::Duration;

use crate::{LostReason, Protocol, Timer, Transport};

/// How a connection ended, as the harness saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The plugin closed it (after its output).
    Closed,
    /// The plugin aborted it, with this reason.
    Aborted(String),
}

/// Drives one protocol instance the way the host does.
pub struct Harness<P: Protocol> {
    state: P,
}

impl<P: Protocol> Harness<P> {
    /// Calls `init` with no configuration and a write limit of 1 MiB.
    pub fn start() -> Result<Self, String> {
        Self::start_with(&[], 1 << 20)
    }

    /// Calls `init` with `config` (as `[listener.config]`) and at most
    /// `write_limit` unread bytes per connection.
    pub fn start_with(config: &[(&str, &str)], write_limit: u64) -> Result<Self, String> {
        recorder::reset(config, write_limit);
        Ok(Self { state: P::init()? })
    }

    /// The instance's state.
    pub fn state(&self) -> &P {
        &self.state
    }

    /// A client connects (from 127.0.0.1, a port of its own).
    pub fn connect(&mut self) -> Transport {
        let t = recorder::connect();
        self.state.connection_made(t);
        self.settle();
        t
    }

    /// `t`'s client sends `data`.
    pub fn receive(&mut self, t: Transport, data: &[u8]) {
        if recorder::is_open(t.0) && !recorder::is_paused(t.0) {
            self.state.data_received(t, data);
            self.settle();
        }
    }

    /// `t`'s client closes its side.
    pub fn disconnect(&mut self, t: Transport) {
        if recorder::is_open(t.0) {
            recorder::end(t.0, None);
            self.state.connection_lost(t, LostReason::PeerClosed);
            self.settle();
        }
    }

    /// What the plugin wrote to `t` since the last call (the client reads
    /// it, which frees room under the write limit).
    pub fn take_output(&mut self, t: Transport) -> Vec<u8> {
        recorder::take_output(t.0)
    }

    /// How `t` ended, if the plugin ended it.
    pub fn ended(&self, t: Transport) -> Option<Ended> {
        recorder::ended(t.0)
    }

    /// Whether reading from `t` is paused.
    pub fn is_paused(&self, t: Transport) -> bool {
        recorder::is_paused(t.0)
    }

    /// Moves the harness's clock on by `by`, firing every timer due.
    pub fn advance(&mut self, by: Duration) {
        for timer in recorder::advance(by) {
            self.state.timer_fired(Timer(timer));
            self.settle();
        }
    }

    /// A message published elsewhere (another instance, another host)
    /// arrives on `topic`, if the instance subscribed to it.
    pub fn message(&mut self, topic: &str, message: &[u8]) {
        if plughost_store::testing::is_subscribed(topic) {
            self.state.message_received(topic, message);
            self.settle();
        }
    }

    /// Reports the ends the plugin asked for, and delivers what it
    /// published to topics it subscribed to, as the host does after each
    /// callback (with the store on: see
    /// [`plughost_store::testing::set_available`]).
    fn settle(&mut self) {
        loop {
            while let Some((t, reason)) = recorder::next_unreported() {
                self.state.connection_lost(Transport(t), reason);
            }
            let published = plughost_store::testing::take_published(true);
            if published.is_empty() {
                return;
            }
            for (topic, message) in published {
                self.state.message_received(&topic, &message);
            }
        }
    }
}

/// The backend of [`Transport`] calls outside a component.
pub(crate) mod recorder {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use super::Ended;
    use crate::{LostReason, Transport, WriteError};

    #[derive(Default)]
    struct Conn {
        output: Vec<u8>,
        ended: Option<Option<Ended>>,
        reported: bool,
        paused: bool,
    }

    #[derive(Default)]
    struct Recorder {
        conns: BTreeMap<u64, Conn>,
        next_id: u64,
        write_limit: u64,
        now: Duration,
        timers: BTreeMap<u64, Duration>,
        next_timer: u64,
        config: BTreeMap<String, String>,
    }

    thread_local! {
        static RECORDER: RefCell<Recorder> = RefCell::new(Recorder::default());
    }

    fn with<R>(f: impl FnOnce(&mut Recorder) -> R) -> R {
        RECORDER.with(|r| f(&mut r.borrow_mut()))
    }

    pub fn reset(config: &[(&str, &str)], write_limit: u64) {
        with(|r| {
            *r = Recorder {
                write_limit,
                config: config
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Recorder::default()
            }
        })
    }

    pub fn connect() -> Transport {
        with(|r| {
            r.next_id += 1;
            r.conns.insert(r.next_id, Conn::default());
            Transport(r.next_id)
        })
    }

    pub fn is_open(t: u64) -> bool {
        with(|r| r.conns.get(&t).is_some_and(|c| c.ended.is_none()))
    }

    pub fn is_paused(t: u64) -> bool {
        with(|r| r.conns.get(&t).is_some_and(|c| c.paused))
    }

    /// Ends `t` (`by`: the plugin's way, or `None` for the peer's).
    pub fn end(t: u64, by: Option<Ended>) {
        with(|r| {
            if let Some(conn) = r.conns.get_mut(&t)
                && conn.ended.is_none()
            {
                conn.reported = by.is_none();
                conn.ended = Some(by);
            }
        })
    }

    pub fn ended(t: u64) -> Option<Ended> {
        with(|r| r.conns.get(&t).and_then(|c| c.ended.clone().flatten()))
    }

    pub fn next_unreported() -> Option<(u64, LostReason)> {
        with(|r| {
            let (t, conn) = r
                .conns
                .iter_mut()
                .find(|(_, c)| c.ended.is_some() && !c.reported)?;
            conn.reported = true;
            let reason = match conn.ended {
                Some(Some(Ended::Aborted(_))) => LostReason::Aborted,
                _ => LostReason::Closed,
            };
            Some((*t, reason))
        })
    }

    pub fn take_output(t: u64) -> Vec<u8> {
        with(|r| {
            r.conns
                .get_mut(&t)
                .map(|c| std::mem::take(&mut c.output))
                .unwrap_or_default()
        })
    }

    pub fn advance(by: Duration) -> Vec<u64> {
        with(|r| {
            r.now += by;
            let now = r.now;
            let due: Vec<u64> = r
                .timers
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(t, _)| *t)
                .collect();
            for t in &due {
                r.timers.remove(t);
            }
            due
        })
    }

    pub fn write(t: u64, data: &[u8]) -> Result<(), WriteError> {
        with(|r| {
            let limit = r.write_limit;
            let conn = r
                .conns
                .get_mut(&t)
                .filter(|c| c.ended.is_none())
                .ok_or(WriteError::Closed)?;
            if conn.output.len() as u64 + data.len() as u64 > limit {
                return Err(WriteError::BufferFull);
            }
            conn.output.extend_from_slice(data);
            Ok(())
        })
    }

    pub fn buffered(t: u64) -> u64 {
        with(|r| r.conns.get(&t).map_or(0, |c| c.output.len() as u64))
    }

    pub fn write_limit() -> u64 {
        with(|r| r.write_limit)
    }

    pub fn close(t: u64) {
        end(t, Some(Ended::Closed))
    }

    pub fn abort(t: u64, reason: &str) {
        end(t, Some(Ended::Aborted(reason.to_string())))
    }

    pub fn pause_reading(t: u64) {
        with(|r| r.conns.get_mut(&t).map(|c| c.paused = true));
    }

    pub fn resume_reading(t: u64) {
        with(|r| r.conns.get_mut(&t).map(|c| c.paused = false));
    }

    pub fn peer_addr(t: u64) -> Option<SocketAddr> {
        let port = 40_000 + u16::try_from(t % 20_000).unwrap_or(0);
        is_open(t).then_some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
    }

    /// The recorder's connections are plaintext.
    pub fn tls(_t: u64) -> Option<crate::TlsSession> {
        None
    }

    pub fn local_addr(t: u64) -> Option<SocketAddr> {
        is_open(t).then_some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8000))
    }

    pub fn call_later(ms: u64) -> Result<u64, String> {
        with(|r| {
            r.next_timer += 1;
            let at = r.now + Duration::from_millis(ms);
            r.timers.insert(r.next_timer, at);
            Ok(r.next_timer)
        })
    }

    pub fn cancel(timer: u64) -> bool {
        with(|r| r.timers.remove(&timer).is_some())
    }

    pub fn config(key: &str) -> Option<String> {
        with(|r| r.config.get(key).cloned())
    }
}
