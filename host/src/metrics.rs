//! Counters, gauges and histograms about the server, per listener, kept as
//! lock-free handles on the hot path and exported in the Prometheus text
//! format (`/metrics`) and as JSON (`/status`) by the admin listener.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    listener: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    listener: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// A listener and a result (plugin reloads, TLS handshakes and reloads).
struct ReloadLabels {
    listener: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    listener: String,
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreOpLabels {
    namespace: String,
    op: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    namespace: String,
    event: String,
}

fn duration_histogram() -> Histogram {
    // 100 µs … ~30 min, ×4 per bucket.
    Histogram::new(exponential_buckets(0.0001, 4.0, 12))
}

/// Every metric family of the process.
pub struct Metrics {
    registry: Registry,
    started: Instant,
    accepted: Family<ListenerLabel, Counter>,
    refused: Family<ListenerLabel, Counter>,
    active: Family<ListenerLabel, Gauge>,
    closed: Family<ClosedLabels, Counter>,
    bytes_in: Family<ListenerLabel, Counter>,
    bytes_out: Family<ListenerLabel, Counter>,
    durations: Family<ListenerLabel, Histogram, fn() -> Histogram>,
    plugin: Family<PluginLabels, Gauge>,
    reloads: Family<ReloadLabels, Counter>,
    instances: Family<InstanceLabels, Counter>,
    tls_handshakes: Family<ReloadLabels, Counter>,
    tls_reloads: Family<ReloadLabels, Counter>,
    ready: Family<ListenerLabel, Gauge>,
    store_ops: Family<StoreOpLabels, Counter>,
    topic_messages: Family<TopicLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("plughost");
        let accepted = Family::default();
        let refused = Family::default();
        let active = Family::default();
        let closed = Family::default();
        let bytes_in = Family::default();
        let bytes_out = Family::default();
        let durations = Family::<ListenerLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        let plugin = Family::default();
        let reloads = Family::default();
        let instances = Family::default();
        let tls_handshakes = Family::default();
        let tls_reloads = Family::default();
        let ready = Family::default();
        let store_ops = Family::default();
        let topic_messages = Family::default();
        registry.register(
            "connections_accepted",
            "Connections accepted",
            accepted.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused by --allow/--deny rules",
            refused.clone(),
        );
        registry.register(
            "connections_active",
            "Connections being served",
            active.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed, by outcome (ok, error, setup-error, trap, host-error)",
            closed.clone(),
        );
        registry.register(
            "received_bytes",
            "Bytes received from clients",
            bytes_in.clone(),
        );
        registry.register("sent_bytes", "Bytes sent to clients", bytes_out.clone());
        registry.register(
            "connection_duration_seconds",
            "Time from accept to close (setup + handle + finish)",
            durations.clone(),
        );
        registry.register(
            "plugin_info",
            "The plugin version serving new connections (value 1)",
            plugin.clone(),
        );
        registry.register("reloads", "Plugin reloads, by result", reloads.clone());
        registry.register(
            "protocol_instances",
            "Shared (protocol-world) instances, by event: started, failed (could not start), trapped",
            instances.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes, by result: ok, failed (not TLS, no common protocol, a bad certificate request...), timeout",
            tls_handshakes.clone(),
        );
        registry.register(
            "tls_certificate_reloads",
            "Reloads of a TLS listener's certificates (SIGHUP, --watch), by result; a failed one keeps the certificates in force",
            tls_reloads.clone(),
        );
        registry.register(
            "listener_ready",
            "1 while the listener accepts connections with its plugin loaded; 0 before and while draining",
            ready.clone(),
        );
        registry.register(
            "store_operations",
            "Calls on the shared store (--store), per namespace, by operation and result (ok, error: out of bounds or backend unreachable)",
            store_ops.clone(),
        );
        registry.register(
            "topic_messages",
            "Topic messages, per namespace, by event: published, delivered (to a subscriber's queue), dropped (the oldest, from a subscriber 1,024 behind)",
            topic_messages.clone(),
        );
        Self {
            registry,
            started: Instant::now(),
            accepted,
            refused,
            active,
            closed,
            bytes_in,
            bytes_out,
            durations,
            plugin,
            reloads,
            instances,
            tls_handshakes,
            tls_reloads,
            ready,
            store_ops,
            topic_messages,
        }
    }

    /// Handles for the store namespace `name` (listeners sharing a
    /// namespace share its counters).
    pub fn store(&self, name: &str) -> StoreMetrics {
        let topic = |event: &str| {
            self.topic_messages
                .get_or_create(&TopicLabels {
                    namespace: name.to_string(),
                    event: event.to_string(),
                })
                .clone()
        };
        let op = |op: &str, result: &str| {
            self.store_ops
                .get_or_create(&StoreOpLabels {
                    namespace: name.to_string(),
                    op: op.to_string(),
                    result: result.to_string(),
                })
                .clone()
        };
        let ops = STORE_OPERATIONS
            .iter()
            .map(|&name| (name, op(name, "ok"), op(name, "error")))
            .collect();
        StoreMetrics {
            ops: Arc::new(ops),
            published: topic("published"),
            delivered: topic("delivered"),
            dropped: topic("dropped"),
        }
    }

    /// Handles for one listener, named `name` in labels.
    pub fn listener(&self, name: &str) -> ListenerMetrics {
        let label = ListenerLabel {
            listener: name.to_string(),
        };
        ListenerMetrics {
            name: name.to_string(),
            accepted: self.accepted.get_or_create(&label).clone(),
            refused: self.refused.get_or_create(&label).clone(),
            active: self.active.get_or_create(&label).clone(),
            bytes_in: self.bytes_in.get_or_create(&label).clone(),
            bytes_out: self.bytes_out.get_or_create(&label).clone(),
            duration: self.durations.get_or_create(&label).clone(),
            ready: self.ready.get_or_create(&label).clone(),
            closed: self.closed.clone(),
            plugin: self.plugin.clone(),
            reloads: self.reloads.clone(),
            instances: self.instances.clone(),
            tls_handshakes: self.tls_handshakes.clone(),
            tls_reloads: self.tls_reloads.clone(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Time since the metrics were created (process start).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// The metrics of one listener; cheap to clone and update.
#[derive(Clone)]
pub struct ListenerMetrics {
    name: String,
    accepted: Counter,
    refused: Counter,
    active: Gauge,
    bytes_in: Counter,
    bytes_out: Counter,
    duration: Histogram,
    ready: Gauge,
    closed: Family<ClosedLabels, Counter>,
    plugin: Family<PluginLabels, Gauge>,
    reloads: Family<ReloadLabels, Counter>,
    instances: Family<InstanceLabels, Counter>,
    tls_handshakes: Family<ReloadLabels, Counter>,
    tls_reloads: Family<ReloadLabels, Counter>,
}

/// A snapshot of one listener's counters, for `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListenerSnapshot {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused by access rules.
    pub refused: u64,
    /// Connections being served.
    pub active: i64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
}

impl ListenerMetrics {
    /// A connection was accepted and is being served.
    pub fn opened(&self) {
        self.accepted.inc();
        self.active.inc();
    }

    /// A connection was refused by access rules.
    pub fn refused(&self) {
        self.refused.inc();
    }

    fn instance_event(&self, event: &'static str) {
        let labels = InstanceLabels {
            listener: self.name.clone(),
            event: event.to_string(),
        };
        self.instances.get_or_create(&labels).inc();
    }

    /// A TLS handshake ended with `result` (`ok`, `failed`, `timeout`).
    pub fn tls_handshake(&self, result: &str) {
        let labels = ReloadLabels {
            listener: self.name.clone(),
            result: result.to_string(),
        };
        self.tls_handshakes.get_or_create(&labels).inc();
    }

    /// The listener's TLS certificates were reloaded (`ok`) or kept
    /// (`error`).
    pub fn tls_reloaded(&self, ok: bool) {
        let labels = ReloadLabels {
            listener: self.name.clone(),
            result: if ok { "ok" } else { "error" }.to_string(),
        };
        self.tls_reloads.get_or_create(&labels).inc();
    }

    /// A shared instance started (its `init` succeeded).
    pub fn instance_started(&self) {
        self.instance_event("started");
    }

    /// A shared instance could not start (`init` failed or trapped).
    pub fn instance_failed(&self) {
        self.instance_event("failed");
    }

    /// A shared instance trapped and was dropped with its connections.
    pub fn instance_trapped(&self) {
        self.instance_event("trapped");
    }

    /// A connection ended.
    pub fn closed(&self, outcome: &str, bytes_in: u64, bytes_out: u64, duration: Duration) {
        self.active.dec();
        self.bytes_in.inc_by(bytes_in);
        self.bytes_out.inc_by(bytes_out);
        self.duration.observe(duration.as_secs_f64());
        self.closed
            .get_or_create(&ClosedLabels {
                listener: self.name.clone(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// `version` now serves new connections (replacing `previous`).
    pub fn serving(&self, previous: Option<&str>, version: &str) {
        if let Some(previous) = previous {
            self.plugin.remove(&PluginLabels {
                listener: self.name.clone(),
                version: previous.to_string(),
            });
        }
        self.plugin
            .get_or_create(&PluginLabels {
                listener: self.name.clone(),
                version: version.to_string(),
            })
            .set(1);
    }

    /// A reload finished with `result` (`ok`, `failed`, `unchanged`).
    pub fn reloaded(&self, result: &str) {
        self.reloads
            .get_or_create(&ReloadLabels {
                listener: self.name.clone(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Whether the listener accepts connections now (for `/readyz`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Whether the listener accepts connections now.
    pub fn is_ready(&self) -> bool {
        self.ready.get() == 1
    }

    /// The current counters.
    pub fn snapshot(&self) -> ListenerSnapshot {
        ListenerSnapshot {
            accepted: self.accepted.get(),
            refused: self.refused.get(),
            active: self.active.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
        }
    }

    /// The listener's name in labels.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The operations [`StoreMetrics::operation`] counts.
pub const STORE_OPERATIONS: [&str; 9] = [
    "get",
    "set",
    "delete",
    "exists",
    "list-keys",
    "increment",
    "compare-and-swap",
    "publish",
    "subscribe",
];

/// The counters of one store namespace; cheap to clone and update.
#[derive(Clone)]
pub struct StoreMetrics {
    /// Per operation: its name, then the ok and the error counter.
    ops: Arc<Vec<(&'static str, Counter, Counter)>>,
    published: Counter,
    delivered: Counter,
    dropped: Counter,
}

impl StoreMetrics {
    /// Counters registered nowhere (for tests of the store alone).
    pub fn detached() -> Self {
        Metrics::new().store("detached")
    }

    /// One store operation `op` ended, `ok` or not.
    pub fn operation(&self, op: &'static str, ok: bool) {
        if let Some((_, oks, errors)) = self.ops.iter().find(|(name, ..)| *name == op) {
            if ok {
                oks.inc()
            } else {
                errors.inc()
            };
        }
    }

    /// A message was published.
    pub fn published(&self) {
        self.published.inc();
    }

    /// A message reached a subscriber's queue.
    pub fn delivered(&self) {
        self.delivered.inc();
    }

    /// A subscriber's oldest message was dropped.
    pub fn dropped(&self) {
        self.dropped.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_counts_appear_in_the_exposition() {
        let metrics = Metrics::new();
        let main = metrics.listener("127.0.0.1:8000");
        main.opened();
        main.closed("ok", 10, 12, Duration::from_millis(3));
        main.opened();
        main.serving(None, "echo@abc");
        main.serving(Some("echo@abc"), "echo@def");
        let text = metrics.encode();
        assert!(
            text.contains("plughost_connections_accepted_total{listener=\"127.0.0.1:8000\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("plughost_connections_active{listener=\"127.0.0.1:8000\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "plughost_connections_closed_total{listener=\"127.0.0.1:8000\",outcome=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("plughost_received_bytes_total{listener=\"127.0.0.1:8000\"} 10"),
            "{text}"
        );
        assert!(text.contains("version=\"echo@def\"} 1"), "{text}");
        assert!(!text.contains("echo@abc"), "{text}");
        assert_eq!(main.snapshot().bytes_out, 12);
    }
}
