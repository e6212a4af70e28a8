//! `host run`: load a plugin and serve connections with it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use host::capacity;
use std::sync::Arc;

use host::admin::{self, ListenerStatus};
use host::metrics::Metrics;
use host::plugin::CurrentPlugin;
use host::plugin::loader::LoadDetails;
use host::plugin::source::PluginSource;
use host::reload::Reloader;
use host::server::{AccessRules, Server, ServerConfig, ServerHooks};

use super::options::EngineOptions;

/// Stack of connection threads: room for the guest's 512 KiB wasm stack
/// plus host frames.
const CONNECTION_THREAD_STACK: usize = 1024 * 1024;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plugin: a built-in name (echo, bot10086, http-hello) or the
    /// path of a component file.
    #[arg(long, short = 'P', value_name = "NAME|PATH", default_value = "echo")]
    plugin: String,

    /// IP address to listen on (IPv4 or IPv6, e.g. 0.0.0.0 or ::1).
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    host: IpAddr,

    /// TCP port to listen on; 0 picks a free one (see the "listening on"
    /// log line).
    #[arg(long, short, default_value_t = 8000)]
    port: u16,

    /// How long open connections may finish after SIGINT/SIGTERM before
    /// the host closes them.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    grace: Duration,

    /// Most connections served at once; more wait in the listen backlog
    /// [default: 10000, lowered to what vm.max_map_count allows].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,

    /// Close a connection whose client sends nothing for this long
    /// (0 = never).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,

    /// Serve only peers in this network (CIDR, e.g. 10.0.0.0/8; repeat
    /// for several). Default: everyone.
    #[arg(long, value_name = "CIDR")]
    allow: Vec<ipnet::IpNet>,

    /// Refuse peers in this network (CIDR; repeatable; wins over --allow).
    #[arg(long, value_name = "CIDR")]
    deny: Vec<ipnet::IpNet>,

    /// Serve /metrics (Prometheus) and /status (JSON) on this address,
    /// e.g. 127.0.0.1:9100. Off by default.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,

    /// Set SO_REUSEPORT so several host processes can listen on the same
    /// port; the kernel spreads connections across them.
    #[arg(long)]
    reuse_port: bool,

    /// Reload the plugin when its file changes (or rebuild it, for a
    /// plugin directory with a plugin.toml); open connections keep the
    /// version they started with. SIGHUP reloads without --watch.
    #[arg(long)]
    watch: bool,

    #[command(flatten)]
    engine: EngineOptions,
}

impl RunArgs {
    pub fn run(self) -> Result<()> {
        let source = PluginSource::parse(&self.plugin)?;
        let max_connections = self.max_connections();
        let loader = self.engine.loader(max_connections)?;
        let bytes = source.read()?;
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
        let current = CurrentPlugin::new(plugin);
        let config = ServerConfig {
            addrs: vec![SocketAddr::new(self.host, self.port)],
            grace: self.grace,
            max_connections,
            idle_timeout: (!self.idle_timeout.is_zero()).then_some(self.idle_timeout),
            thread_stack: CONNECTION_THREAD_STACK,
            access: AccessRules {
                allow: self.allow.clone(),
                deny: self.deny.clone(),
            },
            reuse_port: self.reuse_port,
        };
        let metrics = Arc::new(Metrics::new());
        let server = Server::bind(config.clone(), current.clone(), &metrics)?;
        let listener_metrics = server.metrics().clone();
        if let Some(admin) = self.admin {
            let status = vec![ListenerStatus {
                metrics: listener_metrics.clone(),
                plugin: current.clone(),
            }];
            admin::spawn(admin, metrics, status, self.config_summary(&config))?;
        }
        let reloader = Reloader::new(loader, source.clone(), current, listener_metrics);
        if self.watch {
            host::watch::spawn(&source, reloader.clone())?;
        }
        server.run(&mut RunHooks { reloader })
    }

    /// The settings `/status` reports.
    fn config_summary(&self, config: &ServerConfig) -> serde_json::Value {
        serde_json::json!({
            "plugin": self.plugin,
            "listen": config.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "max_connections": config.max_connections,
            "grace_ms": config.grace.as_millis() as u64,
            "idle_timeout_ms": config.idle_timeout.map(|t| t.as_millis() as u64),
            "max_memory": self.engine.max_memory,
            "call_timeout_ms": self.engine.call_timeout.as_millis() as u64,
            "watch": self.watch,
            "reuse_port": config.reuse_port,
            "allow": config.access.allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "deny": config.access.deny.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
    }

    fn max_connections(&self) -> usize {
        let safe = capacity::default_max_connections();
        match self.max_connections {
            None => safe,
            Some(asked) => {
                let asked = asked as usize;
                if asked > safe {
                    tracing::warn!(
                        "--max-connections {asked} exceeds what vm.max_map_count allows \
                         (about {safe}); raise it with `sysctl -w vm.max_map_count=262144`"
                    );
                }
                asked
            }
        }
    }
}

struct RunHooks {
    reloader: Reloader,
}

impl ServerHooks for RunHooks {
    fn reload(&mut self) {
        self.reloader.reload_in_background("SIGHUP");
    }
}
