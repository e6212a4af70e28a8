//! The admin listener (`--admin ADDR`, off by default): `GET /metrics` in
//! the Prometheus text format, `GET /status` as JSON, and the probes of
//! orchestrators: `GET /healthz` (the process is alive and answering) and
//! `GET /readyz` (every listener accepts connections with its plugin
//! loaded; 503 before that and while draining). Served by a small HTTP
//! server on its own thread, away from the accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use anyhow::{Context, Result, anyhow};
use serde_json::json;
use tiny_http::{Header, Response, Server};

use crate::metrics::{ListenerMetrics, Metrics};
use crate::plugin::CurrentPlugin;
use crate::plugin::wasm::CurrentDatagram;

/// What `/status` reports about one listener.
#[derive(Clone)]
pub struct ListenerStatus {
    /// Its counters.
    pub metrics: ListenerMetrics,
    /// The plugin serving it.
    pub plugin: ServingPlugin,
}

/// The plugin a listener serves with.
#[derive(Clone)]
pub enum ServingPlugin {
    /// A stream plugin that reloads can swap.
    Swappable(CurrentPlugin),
    /// A datagram plugin that reloads can swap.
    Datagram(CurrentDatagram),
}

impl ServingPlugin {
    /// The version serving now.
    pub fn version(&self) -> String {
        match self {
            ServingPlugin::Swappable(current) => current.get().version().to_string(),
            ServingPlugin::Datagram(current) => current.load().version().to_string(),
        }
    }
}

/// Binds the admin listener and serves it on a background thread; returns
/// the bound address.
pub fn spawn(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    listeners: Vec<ListenerStatus>,
    config: serde_json::Value,
) -> Result<SocketAddr> {
    let server =
        Server::http(addr).map_err(|err| anyhow!("cannot listen on {addr} (admin): {err}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .context("admin listener has no IP address")?;
    thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let (status, content_type, body) = match request.url() {
                    "/metrics" => (
                        200,
                        "text/plain; version=0.0.4; charset=utf-8",
                        metrics.encode(),
                    ),
                    "/status" => (
                        200,
                        "application/json",
                        status_json(&metrics, &listeners, &config).to_string(),
                    ),
                    "/healthz" => (200, "text/plain", "ok\n".into()),
                    "/readyz" => readiness(&listeners),
                    _ => (
                        404,
                        "text/plain",
                        "not found: try /metrics, /status, /healthz or /readyz\n".into(),
                    ),
                };
                let header = Header::from_bytes("Content-Type", content_type)
                    .expect("static header is valid");
                let response = Response::from_string(body)
                    .with_status_code(status)
                    .with_header(header);
                if let Err(err) = request.respond(response) {
                    tracing::debug!("admin response failed: {err}");
                }
            }
        })
        .context("cannot start the admin thread")?;
    tracing::info!("admin listening on http://{bound} (/metrics, /status, /healthz, /readyz)");
    Ok(bound)
}

/// `/readyz`: 200 when every listener is ready, else 503 naming those
/// that are not (starting, or draining).
fn readiness(listeners: &[ListenerStatus]) -> (u16, &'static str, String) {
    let waiting: Vec<&str> = listeners
        .iter()
        .filter(|l| !l.metrics.is_ready())
        .map(|l| l.metrics.name())
        .collect();
    if waiting.is_empty() {
        (200, "text/plain", "ready\n".into())
    } else {
        let body = format!("not ready: {}\n", waiting.join(", "));
        (503, "text/plain", body)
    }
}

fn status_json(
    metrics: &Metrics,
    listeners: &[ListenerStatus],
    config: &serde_json::Value,
) -> serde_json::Value {
    let listeners: Vec<_> = listeners
        .iter()
        .map(|l| {
            json!({
                "listener": l.metrics.name(),
                "plugin": l.plugin.version(),
                "connections": l.metrics.snapshot(),
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": metrics.uptime().as_secs_f64(),
        "listeners": listeners,
        "config": config,
    })
}
