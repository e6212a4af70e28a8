//! Running what `host run` was asked to serve: one server per listener, each
//! with its own plugin, limits and grants, sharing the metrics and the admin
//! listener. Start-up is all or nothing: if any listener's plugin fails to
//! load or its address can't be bound, nothing is served.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use arc_swap::ArcSwap;
use ipnet::IpNet;

use crate::address::ListenAddr;
use crate::admin::{self, ListenerStatus, ServingPlugin};
use crate::capacity;
use crate::metrics::{ListenerMetrics, Metrics};
use crate::plugin::CurrentPlugin;
use crate::plugin::loader::{self, LoadDetails, Loader, PluginKind};
use crate::plugin::source::PluginSource;
use crate::plugin::wasm::{
    CacheSettings, CurrentDatagram, Grants, InstanceLimits, Sandbox, WasmRuntime,
};
use crate::reload::{DatagramSlot, PluginSlot, Reloader, StreamSlot};
use crate::server::{AccessRules, Server, ServerConfig, ServerHooks, UdpConfig, UdpServer};
use crate::store::{Backends, ListenerStore, StoreSpec};
use crate::tls::{Terminator, TlsSpec};
use crate::watch;

/// Stack of connection threads: room for the guest's 512 KiB wasm stack
/// plus host frames.
const CONNECTION_THREAD_STACK: usize = 1024 * 1024;

/// Most event-loop threads one listener may have (and most shared
/// instances).
pub const MAX_EVENT_LOOPS: usize = 256;

/// Unsent bytes a shared instance buffers per connection by default.
pub const DEFAULT_WRITE_BUFFER: usize = 1024 * 1024;

/// Instance slots a protocol listener reserves per shared instance: the
/// one serving, one of a replaced version still draining, one starting
/// after a trap, and one to spare.
const SLOTS_PER_SHARED_INSTANCE: usize = 4;

/// Everything one listener needs.
#[derive(Debug, Clone)]
pub struct ListenerPlan {
    /// Name in logs and metrics (default: the bound address).
    pub name: Option<String>,
    /// Where to listen.
    pub address: ListenAddr,
    /// `--plugin`: built-in name, file or plugin directory.
    pub plugin: String,
    /// Forced plugin kind.
    pub kind: Option<PluginKind>,
    /// Reload on file changes.
    pub watch: bool,
    /// Connection cap (`None`: what `vm.max_map_count` allows).
    pub max_connections: Option<usize>,
    /// Event-loop threads for WASM plugins (0: a thread per connection;
    /// `None`: [`default_event_loops`]).
    pub event_loops: Option<usize>,
    /// Shared instances of a `protocol` plugin (`None`: 1).
    pub instances: Option<usize>,
    /// Unsent bytes a shared instance buffers per connection (`None`:
    /// [`DEFAULT_WRITE_BUFFER`]).
    pub write_buffer: Option<usize>,
    /// Idle client bound.
    pub idle_timeout: Option<Duration>,
    /// Memory cap per instance (`None`: the world's default, see
    /// [`InstanceLimits::default_max_memory`]).
    pub max_memory: Option<usize>,
    /// CPU budget per call.
    pub call_timeout: Duration,
    /// The compile cache (`None`: compile every time).
    pub cache: Option<CacheSettings>,
    /// Allowed networks.
    pub allow: Vec<IpNet>,
    /// Denied networks.
    pub deny: Vec<IpNet>,
    /// SO_REUSEPORT.
    pub reuse_port: bool,
    /// Networks trusted to send a PROXY protocol header (none: headers are
    /// not read).
    pub proxy_protocol: Vec<IpNet>,
    /// TLS termination (`None`: plaintext).
    pub tls: Option<TlsSpec>,
    /// What the plugin may reach.
    pub grants: Grants,
    /// The shared store granted to the plugin (`None`: none).
    pub store: Option<StoreSpec>,
    /// The store namespace (`None`: [`ListenerPlan::namespace`]'s default).
    pub store_namespace: Option<String>,
    /// Values for the plugin's `config` interface.
    pub config: BTreeMap<String, String>,
}

impl ListenerPlan {
    /// The store namespace: the one configured, else the listener's name,
    /// else the plugin's (a built-in's name, a file's or directory's stem),
    /// so that hosts serving one plugin on one Redis share it by default.
    pub fn namespace(&self) -> String {
        if let Some(namespace) = &self.store_namespace {
            return namespace.clone();
        }
        let base = self.name.clone().unwrap_or_else(|| {
            std::path::Path::new(&self.plugin)
                .file_stem()
                .map_or_else(|| self.plugin.clone(), |s| s.to_string_lossy().into_owned())
        });
        base.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    }
}

/// Two listeners of one process that would share a store namespace
/// without either naming it: refused, since a listener's keys and topics
/// are its own unless the configuration shares them.
fn check_namespaces(listeners: &[ListenerPlan]) -> Result<()> {
    let mut seen: Vec<(&StoreSpec, String, &ListenerPlan)> = Vec::new();
    for listener in listeners {
        let Some(spec) = &listener.store else {
            continue;
        };
        let namespace = listener.namespace();
        if let Some((_, _, other)) = seen.iter().find(|(s, n, _)| *s == spec && *n == namespace)
            && (other.store_namespace.is_none() || listener.store_namespace.is_none())
        {
            bail!(
                "listeners {} and {} would share store namespace {namespace:?}: give them \
                 different `name`s, or set the same `store_namespace` on both to share on purpose",
                other.address,
                listener.address
            );
        }
        seen.push((spec, namespace, listener));
    }
    Ok(())
}

/// The store `plan` grants its plugin, if any.
fn listener_store(
    plan: &ListenerPlan,
    metrics: &Metrics,
    backends: &Backends,
) -> Result<Option<Arc<ListenerStore>>> {
    let Some(spec) = &plan.store else {
        return Ok(None);
    };
    let namespace = plan.namespace();
    let store = ListenerStore::new(
        spec.clone(),
        namespace.clone(),
        backends.open(spec),
        metrics.store(&namespace),
    )
    .with_context(|| format!("listener {}", plan.address))?;
    Ok(Some(Arc::new(store)))
}

/// The whole service.
#[derive(Debug, Clone)]
pub struct ServicePlan {
    /// The listeners.
    pub listeners: Vec<ListenerPlan>,
    /// Drain period on SIGINT/SIGTERM.
    pub grace: Duration,
    /// How long stream listeners go on accepting, not ready, after
    /// SIGINT/SIGTERM before they drain.
    pub drain_delay: Duration,
    /// Admin listener address.
    pub admin: Option<SocketAddr>,
}

/// The serving mode of a stream listener that does not choose one: WASM
/// plugins on event loops, one per CPU the process may use (its affinity
/// and CPU quota), at most [`MAX_EVENT_LOOPS`]. Measured on 2 cores, that
/// beats a thread per connection on HTTP keep-alive and holds 10,000
/// connections within the Linux default `vm.max_map_count`, where threads
/// stop near 6,100 (see the README's "Serving modes").
pub fn default_event_loops() -> usize {
    thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_EVENT_LOOPS)
}

/// Serves `plan` until SIGINT/SIGTERM, then drains every listener.
pub fn run(plan: ServicePlan) -> Result<()> {
    capacity::raise_open_files();
    let metrics = Arc::new(Metrics::new());
    check_namespaces(&plan.listeners)?;
    let backends = Backends::default();
    let mut started = Vec::new();
    for listener in &plan.listeners {
        started.push(start(listener, &plan, &metrics, &backends)?);
    }
    if let Some(addr) = plan.admin {
        let statuses = started.iter().map(|s| s.status.clone()).collect();
        let in_force: Vec<InForce> = started
            .iter()
            .map(|s| InForce {
                max_connections: s.max_connections,
                event_loops: s.event_loops,
                instances: s.instances,
                max_memory: s.max_memory,
            })
            .collect();
        admin::spawn(
            addr,
            Arc::clone(&metrics),
            statuses,
            summary(&plan, &in_force),
        )?;
    }
    let mut threads = Vec::new();
    for Started { runner, status, .. } in started {
        let name = status.metrics.name().to_string();
        let thread = thread::Builder::new()
            .name(format!("listener {name}"))
            .spawn(move || match runner {
                Runner::Stream(stream) => {
                    let (server, mut hooks) = *stream;
                    server.run(&mut hooks)
                }
                Runner::Datagram(datagram) => {
                    let (server, mut hooks) = *datagram;
                    server.run(&mut hooks)
                }
            })
            .with_context(|| format!("cannot start the thread of listener {name}"))?;
        threads.push((name, thread));
    }
    let mut failure = None;
    for (name, thread) in threads {
        let result = thread
            .join()
            .map_err(|_| anyhow!("listener {name} stopped unexpectedly"))
            .and_then(|r| r.with_context(|| format!("listener {name}")));
        if let Err(err) = result {
            tracing::error!("{}", crate::one_line(&err));
            failure.get_or_insert(err);
        }
    }
    failure.map_or(Ok(()), Err)
}

struct Started {
    runner: Runner,
    status: ListenerStatus,
    /// The connection cap in force (asked, or derived).
    max_connections: usize,
    /// The event loops it serves on (0: a thread per connection).
    event_loops: usize,
    /// Its shared instances (0 unless it serves the protocol world).
    instances: usize,
    /// The memory cap of each of its instances.
    max_memory: usize,
}

/// What runs a listener on its thread.
enum Runner {
    Stream(Box<(Server, ReloadOnHup<StreamSlot>)>),
    Datagram(Box<(UdpServer, ReloadOnHup<DatagramSlot>)>),
}

/// Loads the listener's plugin and binds its address.
fn start(
    plan: &ListenerPlan,
    service: &ServicePlan,
    metrics: &Metrics,
    backends: &Backends,
) -> Result<Started> {
    let grace = service.grace;
    let event_loops = plan.event_loops.unwrap_or_else(default_event_loops);
    if event_loops > MAX_EVENT_LOOPS {
        bail!(
            "listener {}: {event_loops} event loops is more than the {MAX_EVENT_LOOPS} allowed \
             (one per core is the useful number)",
            plan.address,
        );
    }
    if !plan.proxy_protocol.is_empty() && !matches!(plan.address, ListenAddr::Tcp(_)) {
        bail!(
            "listener {}: the PROXY protocol (--proxy-protocol) applies to TCP listeners only",
            plan.address
        );
    }
    let tls = match &plan.tls {
        Some(_) if matches!(plan.address, ListenAddr::Udp(_)) => bail!(
            "listener {}: TLS (--tls-cert) applies to stream listeners (TCP, Unix) only",
            plan.address
        ),
        Some(spec) => {
            let terminator =
                Terminator::new(spec).with_context(|| format!("listener {}: TLS", plan.address))?;
            Some(Arc::new(terminator))
        }
        None => None,
    };
    let source = PluginSource::parse(&plan.plugin)?;
    let store = listener_store(plan, metrics, backends)?;
    let sandbox = Sandbox::new(&plan.grants, plan.config.clone())?.with_store(store.clone());
    if let ListenAddr::Udp(addr) = plan.address {
        let max_connections =
            capacity::connection_cap(plan.max_connections, false, plan.grants.dirs.len());
        let runtime = runtime_for(plan, sandbox, max_connections)?;
        let datagram = DatagramListener {
            addr,
            max_in_flight: max_connections,
            runtime,
        };
        return start_datagram(plan, datagram, grace, &source, metrics);
    }
    let bytes = source.read()?;
    let sizing = if loader::is_protocol(plan.kind, &bytes.bytes) {
        // One instance per reactor serves every connection: the cap is
        // what the open-file limit allows, and the pool holds a few
        // instances, each with the larger memory of a shared instance.
        let instances = plan.instances.unwrap_or(1);
        if instances == 0 || instances > MAX_EVENT_LOOPS {
            bail!(
                "listener {}: instances must be between 1 and {MAX_EVENT_LOOPS}, not {instances}",
                plan.address
            );
        }
        Sizing {
            max_connections: capacity::shared_connection_cap(plan.max_connections),
            event_loops: 0,
            instances,
            slots: instances * SLOTS_PER_SHARED_INSTANCE,
            shared: true,
        }
    } else {
        // Event loops serve WASM plugins; a listener that starts with a
        // native plugin (a thread per connection) gets none, and a cap
        // with room for its threads. (A reload to a WASM plugin then runs
        // on threads too.)
        let wasm = loader::kind_of(plan.kind, &bytes.bytes) == PluginKind::Wasm;
        let event_loops = if wasm { event_loops } else { 0 };
        let max_connections = capacity::connection_cap(
            plan.max_connections,
            event_loops > 0,
            plan.grants.dirs.len(),
        );
        Sizing {
            max_connections,
            event_loops,
            instances: 0,
            slots: max_connections,
            shared: false,
        }
    };
    let max_memory = plan
        .max_memory
        .unwrap_or(InstanceLimits::default_max_memory(sizing.shared));
    let limits = InstanceLimits::for_listener(
        max_memory,
        plan.call_timeout,
        sizing.slots,
        sizing.event_loops > 0,
    );
    let runtime = WasmRuntime::new(limits, plan.cache.clone(), sandbox)?;
    let loader = Loader::new(runtime, plan.kind);
    let (plugin, details) = loader.load(&bytes, &source.to_string())?;
    tracing::info!(
        plugin = %bytes.version,
        build = bytes.build_time.map(tracing::field::debug),
        compile = ?details.compile_time(),
        cached = details.cached(),
        "loaded {source}"
    );
    if let LoadDetails::Native { name } = &details {
        tracing::warn!(
            "serving native plugin `{name}`: it runs unsandboxed, without memory or CPU limits"
        );
    }
    for grant in plan.grants.describe() {
        tracing::info!(plugin = %bytes.version, "grant: {grant}");
    }
    if let Some(store) = &store {
        tracing::info!(plugin = %bytes.version, "grant: {}", store.describe());
    }
    let current = CurrentPlugin::new(plugin);
    let config = ServerConfig {
        name: plan.name.clone(),
        addrs: vec![plan.address.clone()],
        grace,
        drain_delay: service.drain_delay,
        max_connections: sizing.max_connections,
        idle_timeout: plan.idle_timeout,
        thread_stack: CONNECTION_THREAD_STACK,
        event_loops: sizing.event_loops,
        access: AccessRules {
            allow: plan.allow.clone(),
            deny: plan.deny.clone(),
        },
        reuse_port: plan.reuse_port,
        instances: sizing.instances,
        write_limit: plan.write_buffer.unwrap_or(DEFAULT_WRITE_BUFFER),
        proxy_protocol: plan.proxy_protocol.clone(),
        tls: tls.clone(),
    };
    let server = Server::bind(config, current.clone(), metrics)?;
    if let Some(terminator) = &tls {
        for line in terminator.describe() {
            tracing::info!(listener = server.metrics().name(), "tls: {line}");
        }
    }
    let slot = StreamSlot {
        loader,
        current: current.clone(),
    };
    let mut hooks = ReloadOnHup::start(slot, &source, server.metrics(), plan.watch)?;
    if let Some(terminator) = tls {
        hooks.reload_certificates(terminator, server.metrics(), plan.watch)?;
    }
    let status = ListenerStatus {
        metrics: server.metrics().clone(),
        plugin: ServingPlugin::Swappable(current),
    };
    Ok(Started {
        runner: Runner::Stream(Box::new((server, hooks))),
        status,
        max_connections: sizing.max_connections,
        event_loops: sizing.event_loops,
        instances: sizing.instances,
        max_memory,
    })
}

/// How a stream listener is sized, by the shape of its plugin.
struct Sizing {
    /// The connection cap.
    max_connections: usize,
    /// Event-loop threads (per-connection WASM plugins).
    event_loops: usize,
    /// Shared instances (protocol plugins).
    instances: usize,
    /// Instances the pooling allocator makes room for.
    slots: usize,
    /// Whether instances are shared (protocol world).
    shared: bool,
}

/// The WebAssembly runtime of a UDP listener: room for `max_in_flight`
/// instances at once.
fn runtime_for(plan: &ListenerPlan, sandbox: Sandbox, max_in_flight: usize) -> Result<WasmRuntime> {
    let max_memory = plan
        .max_memory
        .unwrap_or(InstanceLimits::default_max_memory(false));
    let limits = InstanceLimits::for_listener(max_memory, plan.call_timeout, max_in_flight, false);
    WasmRuntime::new(limits, plan.cache.clone(), sandbox)
}

/// What a UDP listener is started with.
struct DatagramListener {
    addr: SocketAddr,
    max_in_flight: usize,
    runtime: WasmRuntime,
}

/// Loads a `datagram-handler` plugin and binds the UDP address.
fn start_datagram(
    plan: &ListenerPlan,
    listener: DatagramListener,
    grace: Duration,
    source: &PluginSource,
    metrics: &Metrics,
) -> Result<Started> {
    let DatagramListener {
        addr,
        max_in_flight,
        runtime,
    } = listener;
    if plan.kind == Some(PluginKind::Native) {
        bail!("udp:{addr}: native plugins serve stream listeners only");
    }
    if plan.event_loops.is_some_and(|loops| loops > 0) {
        tracing::warn!("udp:{addr}: event loops serve stream listeners only; ignored");
    }
    let bytes = source.read()?;
    let runtime_memory = runtime.limits().max_memory;
    let (plugin, info) = runtime.load_datagram(&bytes, &source.to_string())?;
    tracing::info!(
        plugin = %bytes.version,
        compile = ?info.compile_time,
        cached = info.cached,
        "loaded {source}"
    );
    let config = UdpConfig {
        name: plan.name.clone(),
        addr,
        max_in_flight,
        grace,
        access: AccessRules {
            allow: plan.allow.clone(),
            deny: plan.deny.clone(),
        },
        thread_stack: CONNECTION_THREAD_STACK,
    };
    let current: CurrentDatagram = Arc::new(ArcSwap::from_pointee(plugin));
    let server = UdpServer::bind(config, current.clone(), metrics)?;
    let slot = DatagramSlot {
        runtime,
        current: current.clone(),
    };
    let hooks = ReloadOnHup::start(slot, source, server.metrics(), plan.watch)?;
    let status = ListenerStatus {
        metrics: server.metrics().clone(),
        plugin: ServingPlugin::Datagram(current),
    };
    Ok(Started {
        runner: Runner::Datagram(Box::new((server, hooks))),
        status,
        max_connections: max_in_flight,
        event_loops: 0,
        instances: 0,
        max_memory: runtime_memory,
    })
}

/// What a listener runs with as started (derived, not only asked).
struct InForce {
    max_connections: usize,
    event_loops: usize,
    instances: usize,
    max_memory: usize,
}

/// The settings `/status` reports (`in_force`: each listener's settings as
/// started).
fn summary(plan: &ServicePlan, in_force: &[InForce]) -> serde_json::Value {
    let listeners: Vec<_> = plan
        .listeners
        .iter()
        .zip(in_force)
        .map(|(l, in_force)| {
            serde_json::json!({
                "name": l.name,
                "address": l.address.to_string(),
                "plugin": l.plugin,
                "watch": l.watch,
                "max_connections": in_force.max_connections,
                "event_loops": in_force.event_loops,
                "instances": in_force.instances,
                "write_buffer": l.write_buffer.unwrap_or(DEFAULT_WRITE_BUFFER),
                "idle_timeout_ms": l.idle_timeout.map(|t| t.as_millis() as u64),
                "max_memory": in_force.max_memory,
                "call_timeout_ms": l.call_timeout.as_millis() as u64,
                "reuse_port": l.reuse_port,
                "proxy_protocol": l.proxy_protocol.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "tls": l.tls.is_some(),
                "allow": l.allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "deny": l.deny.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "grants": l.grants.describe(),
                "config_keys": l.config.keys().collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "grace_ms": plan.grace.as_millis() as u64,
        "drain_delay_ms": plan.drain_delay.as_millis() as u64,
        "listeners": listeners,
    })
}

struct ReloadOnHup<S> {
    reloader: Reloader<S>,
    /// A TLS listener's certificates, reloaded with the plugin.
    certificates: Option<CertificateReload>,
}

/// Reloading a TLS listener's certificates: new handshakes get the new
/// ones; a broken file keeps the ones in force, as a broken plugin does.
#[derive(Clone)]
struct CertificateReload {
    terminator: Arc<Terminator>,
    metrics: ListenerMetrics,
}

impl CertificateReload {
    fn reload(&self, why: &str) {
        let listener = self.metrics.name();
        match self.terminator.reload() {
            Ok(()) => {
                self.metrics.tls_reloaded(true);
                for line in self.terminator.describe() {
                    tracing::info!(listener, "tls: reloaded ({why}): {line}");
                }
            }
            Err(err) => {
                self.metrics.tls_reloaded(false);
                tracing::error!(
                    listener,
                    "tls: certificates not reloaded ({why}), the ones in force stay: {}",
                    crate::one_line(&err)
                );
            }
        }
    }
}

impl<S: PluginSlot> ReloadOnHup<S> {
    /// Reloads `slot` from `source` on SIGHUP, and on file changes too
    /// when `watch`.
    fn start(
        slot: S,
        source: &PluginSource,
        metrics: &ListenerMetrics,
        watch: bool,
    ) -> Result<Self> {
        let reloader = Reloader::new(slot, source.clone(), metrics.clone());
        if watch {
            watch::spawn(source, reloader.clone())?;
        }
        Ok(Self {
            reloader,
            certificates: None,
        })
    }

    /// Reloads `terminator`'s certificates on SIGHUP too, and when their
    /// files change if `watch`.
    fn reload_certificates(
        &mut self,
        terminator: Arc<Terminator>,
        metrics: &ListenerMetrics,
        watch: bool,
    ) -> Result<()> {
        let reload = CertificateReload {
            terminator,
            metrics: metrics.clone(),
        };
        if watch {
            let on_change = reload.clone();
            watch::files(&reload.terminator.files(), move || {
                on_change.reload("file changed");
            })?;
        }
        self.certificates = Some(reload);
        Ok(())
    }
}

impl<S: PluginSlot> ServerHooks for ReloadOnHup<S> {
    fn reload(&mut self) {
        self.reloader.reload_in_background("SIGHUP");
        if let Some(certificates) = &self.certificates {
            certificates.reload("SIGHUP");
        }
    }
}
