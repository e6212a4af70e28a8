//! The Redis backend (`--store redis://HOST:PORT`): every host process
//! pointed at one Redis shares its keys and topics.
//!
//! - Keys are `plughost:<namespace>:kv:<bucket length>:<bucket>:<key>`
//!   (the length keeps buckets containing `:` apart); counters are
//!   INCRBY's decimal text; compare-and-swap is one Lua script, so every
//!   process sees one order.
//! - Topics are Redis channels `plughost:<namespace>:topic:<topic>`: a
//!   publish is a PUBLISH, and one subscriber thread per process holds a
//!   SUBSCRIBE connection for every channel a local mailbox wants, and
//!   fans what arrives out through the [`Registry`].
//! - Calls run on the caller's thread over pooled connections, each bounded
//!   by [`IO_TIMEOUT`], so a call never holds an instance past its CPU
//!   deadline. When Redis cannot be reached, calls fail at once with
//!   `unavailable` until the next retry (100 ms, doubling to 5 s); the
//!   outage is logged once when it starts and once when it ends.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use redis::{Client, Connection, ConnectionLike, RedisError, RedisResult};

use super::topics::Registry;
use super::{Backend, KEYS_PER_PAGE, Key, KeyPage, StoreError, parse_counter, redacted};

/// Longest wait to connect, and for one reply.
pub const IO_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a `subscribe` waits for Redis to confirm.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the subscriber thread looks for new subscriptions while no
/// message arrives.
const SUBSCRIBER_POLL: Duration = Duration::from_millis(20);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// Idle connections kept for reuse.
const MAX_IDLE: usize = 64;

const COMPARE_AND_SWAP: &str = r"
local current = redis.call('GET', KEYS[1])
if (ARGV[1] == '1' and current == ARGV[2]) or (ARGV[1] == '0' and current == false) then
  redis.call('SET', KEYS[1], ARGV[3])
  return 1
end
return 0
";

/// The Redis backend of one URL.
pub struct RedisBackend {
    target: String,
    client: Result<Client, String>,
    idle: Mutex<Vec<Connection>>,
    health: Arc<Health>,
    registry: Arc<Registry>,
    subscriber: Mutex<Option<Sender<Command>>>,
    swap: redis::Script,
}

enum Command {
    Listen(String, Sender<Result<(), StoreError>>),
    Unlisten(String),
}

impl RedisBackend {
    /// The backend of `url`; nothing is connected until the first call.
    pub fn new(url: &str) -> Self {
        Self {
            target: redacted(url),
            client: Client::open(url).map_err(|err| err.to_string()),
            idle: Mutex::new(Vec::new()),
            health: Arc::new(Health::new(redacted(url))),
            registry: Arc::new(Registry::default()),
            subscriber: Mutex::new(None),
            swap: redis::Script::new(COMPARE_AND_SWAP),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        let client = self
            .client
            .as_ref()
            .map_err(|err| StoreError::Unavailable(format!("{}: {err}", self.target)))?;
        connect(client).map_err(|err| self.health.failed(&err))
    }

    /// Runs `command` on a pooled connection (a fresh one if the pooled
    /// one turns out dead), classifying what fails.
    fn run<R>(&self, command: impl Fn(&mut Connection) -> RedisResult<R>) -> Result<R, StoreError> {
        self.health.check()?;
        let pooled = self.idle().pop();
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let mut result = command(&mut conn);
        if reused && matches!(&result, Err(err) if err.is_connection_dropped()) {
            conn = self.connect()?;
            result = command(&mut conn);
        }
        match result {
            Ok(value) => {
                self.health.ok();
                self.put_back(conn);
                Ok(value)
            }
            Err(err) if err.is_io_error() || err.is_timeout() || !conn.is_open() => {
                Err(self.health.failed(&err))
            }
            Err(err) => {
                self.put_back(conn);
                Err(StoreError::Invalid(format!("redis: {err}")))
            }
        }
    }

    fn put_back(&self, conn: Connection) {
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// The subscriber thread's command channel, starting it on first use.
    fn subscriber(&self) -> Result<Sender<Command>, StoreError> {
        let mut slot = self
            .subscriber
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = slot.as_ref() {
            return Ok(sender.clone());
        }
        let client = self
            .client
            .clone()
            .map_err(|err| StoreError::Unavailable(format!("{}: {err}", self.target)))?;
        let (sender, commands) = mpsc::channel();
        let subscriber = Subscriber {
            client,
            commands,
            health: Arc::clone(&self.health),
            registry: Arc::clone(&self.registry),
        };
        thread::Builder::new()
            .name("redis subscriber".into())
            .spawn(move || subscriber.run())
            .map_err(|err| StoreError::Unavailable(format!("cannot start a thread: {err}")))?;
        *slot = Some(sender.clone());
        Ok(sender)
    }
}

fn connect(client: &Client) -> RedisResult<Connection> {
    let conn = client.get_connection_with_timeout(IO_TIMEOUT)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(conn)
}

/// The Redis key of `key`.
fn redis_key(key: &Key<'_>) -> String {
    format!("{}{}", bucket_prefix(key.namespace, key.bucket), key.key)
}

fn bucket_prefix(namespace: &str, bucket: &str) -> String {
    format!("plughost:{namespace}:kv:{}:{bucket}:", bucket.len())
}

/// `text` with Redis glob characters escaped, for SCAN's MATCH.
fn glob_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl Backend for RedisBackend {
    fn get(&self, key: Key<'_>) -> Result<Option<Vec<u8>>, StoreError> {
        let key = redis_key(&key);
        self.run(|c| redis::cmd("GET").arg(&key).query(c))
    }

    fn set(&self, key: Key<'_>, value: &[u8]) -> Result<(), StoreError> {
        let key = redis_key(&key);
        self.run(|c| redis::cmd("SET").arg(&key).arg(value).query(c))
    }

    fn delete(&self, key: Key<'_>) -> Result<(), StoreError> {
        let key = redis_key(&key);
        self.run(|c| redis::cmd("DEL").arg(&key).query::<i64>(c))
            .map(drop)
    }

    fn exists(&self, key: Key<'_>) -> Result<bool, StoreError> {
        let key = redis_key(&key);
        self.run(|c| redis::cmd("EXISTS").arg(&key).query(c))
    }

    fn list_keys(&self, namespace: &str, bucket: &str, cursor: u64) -> Result<KeyPage, StoreError> {
        let prefix = bucket_prefix(namespace, bucket);
        let pattern = format!("{}*", glob_escaped(&prefix));
        let (next, keys): (u64, Vec<String>) = self.run(|c| {
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(KEYS_PER_PAGE)
                .query(c)
        })?;
        let keys = keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect();
        Ok(KeyPage {
            keys,
            cursor: (next != 0).then_some(next),
        })
    }

    fn increment(&self, key: Key<'_>, delta: u64) -> Result<u64, StoreError> {
        let key = redis_key(&key);
        let delta = i64::try_from(delta)
            .map_err(|_| StoreError::Invalid("the increment is too large for Redis".into()))?;
        let value: i64 = self.run(|c| redis::cmd("INCRBY").arg(&key).arg(delta).query(c))?;
        parse_counter(Some(value.to_string().as_bytes()))
    }

    fn compare_and_swap(
        &self,
        key: Key<'_>,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, StoreError> {
        let key = redis_key(&key);
        let (present, expected) = match expected {
            Some(bytes) => ("1", bytes),
            None => ("0", &[][..]),
        };
        let swapped: i64 = self.run(|c| {
            self.swap
                .key(&key)
                .arg(present)
                .arg(expected)
                .arg(value)
                .invoke(c)
        })?;
        Ok(swapped == 1)
    }

    fn publish(&self, channel: &str, message: &[u8]) -> Result<(), StoreError> {
        self.run(|c| {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .query::<i64>(c)
        })
        .map(drop)
    }

    fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    fn listen(&self, channel: &str) -> Result<(), StoreError> {
        self.health.check()?;
        let (ack, confirmed) = mpsc::channel();
        self.subscriber()?
            .send(Command::Listen(channel.to_string(), ack))
            .map_err(|_| StoreError::Unavailable("the Redis subscriber thread stopped".into()))?;
        confirmed.recv_timeout(LISTEN_TIMEOUT).unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "{}: no SUBSCRIBE confirmation within {LISTEN_TIMEOUT:?}",
                self.target
            )))
        })
    }

    fn unlisten(&self, channel: &str) {
        if let Ok(sender) = self.subscriber() {
            let _ = sender.send(Command::Unlisten(channel.to_string()));
        }
    }
}

/// The thread holding this process's SUBSCRIBE connection.
struct Subscriber {
    client: Client,
    commands: Receiver<Command>,
    health: Arc<Health>,
    registry: Arc<Registry>,
}

impl Subscriber {
    fn run(self) {
        let mut retry = FIRST_RETRY;
        loop {
            match self.serve() {
                Ok(()) => return,
                Err(err) => {
                    self.health.failed(&err);
                }
            }
            // Until the next attempt, refuse new subscriptions at once.
            let until = Instant::now() + retry;
            loop {
                let left = until.saturating_duration_since(Instant::now());
                match self.commands.recv_timeout(left) {
                    Ok(Command::Listen(_, ack)) => {
                        let _ = ack.send(Err(StoreError::Unavailable(format!(
                            "{}: not connected (retrying)",
                            self.health.target
                        ))));
                    }
                    Ok(Command::Unlisten(_)) => {}
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    /// Subscribes to every channel wanted and delivers messages until the
    /// connection fails (`Err`) or the backend is gone (`Ok`).
    fn serve(&self) -> RedisResult<()> {
        let mut conn = connect(&self.client)?;
        let mut pubsub = conn.as_pubsub();
        pubsub.set_read_timeout(Some(SUBSCRIBER_POLL))?;
        for channel in self.registry.channels() {
            pubsub.subscribe(&channel)?;
        }
        self.health.ok();
        loop {
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Listen(channel, ack)) => {
                        let subscribed = pubsub.subscribe(&channel);
                        let reply = match &subscribed {
                            Ok(()) => Ok(()),
                            Err(err) => Err(StoreError::Unavailable(format!(
                                "{}: {err}",
                                self.health.target
                            ))),
                        };
                        let _ = ack.send(reply);
                        subscribed?;
                    }
                    Ok(Command::Unlisten(channel)) => pubsub.unsubscribe(&channel)?,
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
                }
            }
            match pubsub.get_message() {
                Ok(message) => {
                    self.registry
                        .deliver(message.get_channel_name(), message.get_payload_bytes());
                }
                Err(err) if err.is_timeout() => {}
                Err(err) => return Err(err),
            }
        }
    }
}

/// Whether Redis is reachable, shared by the calls and the subscriber
/// thread so that an outage is logged once.
struct Health {
    target: String,
    state: Mutex<HealthState>,
}

struct HealthState {
    down_since: Option<Instant>,
    reason: String,
    retry_at: Instant,
    delay: Duration,
}

impl Health {
    fn new(target: String) -> Self {
        Self {
            target,
            state: Mutex::new(HealthState {
                down_since: None,
                reason: String::new(),
                retry_at: Instant::now(),
                delay: FIRST_RETRY,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails at once while Redis is known down and not yet due a retry.
    fn check(&self) -> Result<(), StoreError> {
        let state = self.state();
        if state.down_since.is_some() && Instant::now() < state.retry_at {
            return Err(StoreError::Unavailable(format!(
                "{}: {} (retrying)",
                self.target, state.reason
            )));
        }
        Ok(())
    }

    /// Records a failure to reach Redis; returns the error for the caller.
    fn failed(&self, err: &RedisError) -> StoreError {
        let reason = err.to_string();
        let mut state = self.state();
        let now = Instant::now();
        if state.down_since.is_none() {
            state.down_since = Some(now);
            state.delay = FIRST_RETRY;
            tracing::warn!(
                store = %self.target,
                "store unreachable: {reason}; store calls fail until it is back"
            );
        } else {
            state.delay = (state.delay * 2).min(MAX_RETRY);
        }
        state.retry_at = now + state.delay;
        state.reason.clone_from(&reason);
        StoreError::Unavailable(format!("{}: {reason}", self.target))
    }

    /// Records a successful round trip.
    fn ok(&self) {
        let mut state = self.state();
        if let Some(since) = state.down_since.take() {
            tracing::info!(
                store = %self.target,
                outage = ?since.elapsed(),
                "store reachable again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_different_buckets_never_collide() {
        let a = Key {
            namespace: "n",
            bucket: "a",
            key: "b:c",
        };
        let b = Key {
            namespace: "n",
            bucket: "a:b",
            key: "c",
        };
        assert_ne!(redis_key(&a), redis_key(&b));
        assert_eq!(redis_key(&a), "plughost:n:kv:1:a:b:c");
    }

    #[test]
    fn scan_patterns_escape_globs() {
        assert_eq!(glob_escaped("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn an_unreachable_redis_fails_fast_and_says_so() {
        // A port nothing listens on: the first call is refused, and the
        // next one fails at once without trying again.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let backend = RedisBackend::new(&format!("redis://127.0.0.1:{port}"));
        let key = Key {
            namespace: "n",
            bucket: "b",
            key: "k",
        };
        let first = backend.get(key).unwrap_err();
        assert!(matches!(first, StoreError::Unavailable(_)), "{first:?}");
        let second = backend.get(key).unwrap_err().to_string();
        assert!(second.contains("retrying"), "{second}");
    }
}
