//! `host run`: load plugins and serve connections with them, from flags
//! (one listener) or from a configuration file (any number of listeners).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use host::address::ListenAddr;
use host::config::{ConfigFile, ListenerConfig};
use host::plugin::wasm::{Grants, InstanceLimits};
use host::service::{self, ListenerPlan, ServicePlan};
use host::store::StoreSpec;
use host::tls::TlsSpec;

use super::options::EngineOptions;

/// The help of `--plugin`, naming every built-in.
fn plugin_help() -> String {
    format!(
        "The plugin: a built-in name ({}), the path of a component or native library, \
         or a plugin directory with a plugin.toml [default: echo]",
        host::plugin::builtin::names()
    )
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Serve the listeners of this configuration file (TOML; see the
    /// README). Every limit flag given overrides the file's value for each
    /// listener; with a one-listener file, --plugin, --host, --port and
    /// --unix override it too.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,

    /// The plugin: a built-in name, the path of a component or native
    /// library, or a plugin directory with a plugin.toml (the help text
    /// names the built-ins: [`plugin_help`]).
    #[arg(long, short = 'P', value_name = "NAME|PATH", help = plugin_help())]
    plugin: Option<String>,

    /// IP address to listen on (IPv4 or IPv6, e.g. 0.0.0.0 or ::1)
    /// [default: 127.0.0.1].
    #[arg(long, value_name = "IP")]
    host: Option<IpAddr>,

    /// TCP port to listen on; 0 picks a free one (see the "listening on"
    /// log line) [default: 8000].
    #[arg(long, short)]
    port: Option<u16>,

    /// Listen on this Unix stream socket instead of TCP (a stale socket
    /// file is replaced; the file is removed on exit).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["host", "port", "reuse_port"])]
    unix: Option<PathBuf>,

    /// Listen for UDP datagrams on --host/--port instead of TCP; the
    /// plugin must implement the datagram-handler world (e.g. udp-echo).
    #[arg(long, conflicts_with_all = ["unix", "reuse_port"])]
    udp: bool,

    /// How long open connections may finish after SIGINT/SIGTERM before
    /// the host closes them [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    grace: Option<Duration>,

    /// After SIGINT/SIGTERM, go on accepting for this long while /readyz
    /// says not ready, so that load balancers checking it stop sending
    /// before the listener closes; a second signal cuts it short
    /// [default: the file's `drain_delay`, else 0s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    drain_delay: Option<Duration>,

    /// Most connections served at once; more wait in the listen backlog
    /// [default: 10000, lowered to what vm.max_map_count allows: about
    /// 6,100 on threads with the Linux default, 10,000 on event loops].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,

    /// Serve WASM plugins on N event-loop threads: a plugin waiting for
    /// its client suspends, so N threads serve every connection (a plugin
    /// computing yields every 10 ms). 0 = a thread per connection instead.
    /// Native plugins always get a thread. [default: the file's
    /// `event_loops`, else one per CPU the host may use]
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(0..=service::MAX_EVENT_LOOPS as i64))]
    event_loops: Option<u16>,

    /// Serve a protocol-world plugin (one instance, many connections) with
    /// N instances on N reactor threads, spreading connections over them;
    /// each instance has its own state [default: the file's `instances`,
    /// else 1: one state for every connection, as Twisted's Factory].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=service::MAX_EVENT_LOOPS as i64))]
    instances: Option<u16>,

    /// Most bytes a protocol-world instance may have written to one
    /// connection and not yet sent; a write past it is refused, and the
    /// plugin decides (stop producing, or drop the client) [default: the
    /// file's `write_buffer`, else 1MiB].
    #[arg(long, value_name = "SIZE", value_parser = host::size::parse_size)]
    write_buffer: Option<usize>,

    /// Close a connection whose client sends nothing for this long
    /// (0 = never) [default: the file's `idle_timeout`, else 10m].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,

    /// Serve only peers in this network (CIDR, e.g. 10.0.0.0/8; repeat
    /// for several). Default: everyone.
    #[arg(long, value_name = "CIDR")]
    allow: Vec<ipnet::IpNet>,

    /// Refuse peers in this network (CIDR; repeatable; wins over --allow).
    #[arg(long, value_name = "CIDR")]
    deny: Vec<ipnet::IpNet>,

    /// Expect the PROXY protocol (v1 or v2) from load balancers in this
    /// network (CIDR; repeatable): every connection must then come from
    /// one of them and start with the header, and the plugin, the access
    /// rules and the log see the client it names. Off by default.
    #[arg(long, value_name = "CIDR")]
    proxy_protocol: Vec<ipnet::IpNet>,

    /// Terminate TLS with this certificate (PEM: the certificate, then its
    /// chain); the plugin sees plaintext. Repeat with --tls-key for more
    /// certificates: the first is the default, the others serve the names
    /// they are issued for (SNI). SIGHUP (and --watch) reloads them.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Vec<PathBuf>,

    /// The private key of the --tls-cert given at the same position (PEM:
    /// PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Vec<PathBuf>,

    /// Offer this application protocol in the TLS handshake (ALPN, e.g.
    /// http/1.1; repeatable, most preferred first); a client offering
    /// none of them is refused. Default: none negotiated.
    #[arg(long, value_name = "PROTOCOL", requires = "tls_cert")]
    tls_alpn: Vec<String>,

    /// Close a client that has not finished its TLS handshake within this
    /// long [default: the file's `handshake_timeout`, else 10s].
    #[arg(long, value_name = "DURATION", requires = "tls_cert",
          value_parser = humantime::parse_duration)]
    tls_handshake_timeout: Option<Duration>,

    /// Give the plugin a shared store: keys (wasi:keyvalue) and topics.
    /// `memory` keeps them in this process; `redis://HOST:PORT` shares
    /// them with every host process using that Redis. Off by default
    /// [default: the file's `store`].
    #[arg(long, value_name = "memory|redis://HOST:PORT")]
    store: Option<StoreSpec>,

    /// The store namespace: hosts and listeners naming the same one share
    /// keys and topics [default: the listener's name, else the plugin's].
    #[arg(long, value_name = "NAME")]
    store_namespace: Option<String>,

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

    /// Describe the plugins' compiled functions in /tmp/perf-<pid>.map, so
    /// that `perf record -p <pid>` and `perf report` name them (a plugin
    /// built without stripping its name section shows its own function
    /// names; a stripped one shows wasm[0]::function[N]).
    #[arg(long)]
    perf_map: bool,

    #[command(flatten)]
    engine: EngineOptions,
}

const DEFAULT_PLUGIN: &str = "echo";
const DEFAULT_HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const DEFAULT_PORT: u16 = 8000;
const DEFAULT_GRACE: Duration = Duration::from_secs(5);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

impl RunArgs {
    pub fn run(self) -> Result<()> {
        if self.perf_map {
            host::plugin::wasm::write_perf_map();
        }
        service::run(self.plan()?)
    }

    /// What to serve: the file's listeners (with flag overrides) or the
    /// one listener the flags describe.
    fn plan(&self) -> Result<ServicePlan> {
        let tls = TlsSpec::from_flags(
            &self.tls_cert,
            &self.tls_key,
            &self.tls_alpn,
            self.tls_handshake_timeout,
        )?;
        if tls.is_some() && self.udp {
            bail!("--tls-cert applies to stream listeners (TCP, Unix), not --udp");
        }
        let Some(path) = &self.config else {
            return Ok(ServicePlan {
                listeners: vec![self.flag_listener(tls)],
                grace: self.grace.unwrap_or(DEFAULT_GRACE),
                drain_delay: self.drain_delay.unwrap_or_default(),
                admin: self.admin,
            });
        };
        if self.udp {
            bail!(
                "--udp describes the command line's own listener; in {} write \
                 `address = \"udp:IP:PORT\"` for a UDP listener",
                path.display()
            );
        }
        let file = ConfigFile::load(path)?;
        let overrides = self.plugin.is_some()
            || self.host.is_some()
            || self.port.is_some()
            || self.unix.is_some()
            || tls.is_some();
        if overrides && file.listener.len() > 1 {
            bail!(
                "--plugin, --host, --port, --unix and --tls-cert override a configuration \
                 file only when it has one listener; {} has {}",
                path.display(),
                file.listener.len()
            );
        }
        let listeners = file
            .listener
            .iter()
            .map(|listener| self.file_listener(listener, file.store.as_ref(), tls.clone()))
            .collect();
        Ok(ServicePlan {
            listeners,
            grace: self.grace.or(file.grace).unwrap_or(DEFAULT_GRACE),
            drain_delay: self.drain_delay.or(file.drain_delay).unwrap_or_default(),
            admin: self.admin.or(file.admin),
        })
    }

    fn flag_listener(&self, tls: Option<TlsSpec>) -> ListenerPlan {
        let defaults = InstanceLimits::default();
        let ip = SocketAddr::new(
            self.host.unwrap_or(DEFAULT_HOST),
            self.port.unwrap_or(DEFAULT_PORT),
        );
        let address = match &self.unix {
            Some(path) => ListenAddr::Unix(path.clone()),
            None if self.udp => ListenAddr::Udp(ip),
            None => ListenAddr::Tcp(ip),
        };
        ListenerPlan {
            name: None,
            address,
            plugin: self.plugin.clone().unwrap_or_else(|| DEFAULT_PLUGIN.into()),
            kind: self.engine.kind,
            watch: self.watch,
            max_connections: self.max_connections.map(|n| n as usize),
            event_loops: self.event_loops.map(usize::from),
            instances: self.instances.map(usize::from),
            write_buffer: self.write_buffer,
            idle_timeout: nonzero(self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT)),
            max_memory: self.engine.max_memory,
            call_timeout: self.engine.call_timeout.unwrap_or(defaults.call_timeout),
            cache: self.engine.cache(),
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            reuse_port: self.reuse_port,
            proxy_protocol: self.proxy_protocol.clone(),
            tls,
            grants: Grants::default(),
            store: self.store.clone(),
            store_namespace: self.store_namespace.clone(),
            config: BTreeMap::new(),
        }
    }

    /// A listener of the file, with every flag given on the command line
    /// overriding the file's value (lists such as `--allow` add to it;
    /// `tls`, from `--tls-cert`, replaces the file's).
    fn file_listener(
        &self,
        file: &ListenerConfig,
        file_store: Option<&StoreSpec>,
        tls: Option<TlsSpec>,
    ) -> ListenerPlan {
        let defaults = InstanceLimits::default();
        let address = match (&self.unix, &file.address) {
            (Some(path), _) => ListenAddr::Unix(path.clone()),
            (None, ListenAddr::Tcp(addr)) => ListenAddr::Tcp(SocketAddr::new(
                self.host.unwrap_or(addr.ip()),
                self.port.unwrap_or(addr.port()),
            )),
            (None, ListenAddr::Udp(addr)) => ListenAddr::Udp(SocketAddr::new(
                self.host.unwrap_or(addr.ip()),
                self.port.unwrap_or(addr.port()),
            )),
            (None, unix) => match (self.host, self.port) {
                (None, None) => unix.clone(),
                (host, port) => ListenAddr::Tcp(SocketAddr::new(
                    host.unwrap_or(DEFAULT_HOST),
                    port.unwrap_or(DEFAULT_PORT),
                )),
            },
        };
        let mut allow = file.allow.clone();
        allow.extend(self.allow.iter().copied());
        let mut deny = file.deny.clone();
        deny.extend(self.deny.iter().copied());
        let event_loops = self.event_loops.map(usize::from).or(file.event_loops);
        ListenerPlan {
            name: file.name.clone(),
            address,
            plugin: self.plugin.clone().unwrap_or_else(|| file.plugin.clone()),
            kind: self.engine.kind.or(file.kind),
            watch: self.watch || file.watch,
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .map(|n| n as usize),
            event_loops,
            instances: self.instances.map(usize::from).or(file.instances),
            write_buffer: self.write_buffer.or(file.write_buffer),
            idle_timeout: nonzero(
                self.idle_timeout
                    .or(file.idle_timeout)
                    .unwrap_or(DEFAULT_IDLE_TIMEOUT),
            ),
            max_memory: self.engine.max_memory.or(file.max_memory),
            call_timeout: self
                .engine
                .call_timeout
                .or(file.call_timeout)
                .unwrap_or(defaults.call_timeout),
            cache: self.engine.cache(),
            allow,
            deny,
            reuse_port: self.reuse_port || file.reuse_port,
            proxy_protocol: {
                let mut trusted = file.proxy_protocol.clone();
                trusted.extend(self.proxy_protocol.iter().copied());
                trusted
            },
            tls: tls.or_else(|| file.tls.clone()),
            grants: file.grants.clone(),
            store: self
                .store
                .clone()
                .or_else(|| file.store.clone())
                .or_else(|| file_store.cloned()),
            store_namespace: self
                .store_namespace
                .clone()
                .or_else(|| file.store_namespace.clone()),
            config: file.config.clone(),
        }
    }
}

fn nonzero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use crate::cli::Cli;

    #[test]
    fn the_plugin_flags_help_names_every_built_in() {
        let cli = Cli::command();
        let run = cli.find_subcommand("run").expect("a run subcommand");
        let plugin = run
            .get_arguments()
            .find(|arg| arg.get_id() == "plugin")
            .expect("a --plugin flag");
        let help = plugin.get_help().expect("help for --plugin").to_string();
        for name in host::plugin::builtin::names().split(", ") {
            assert!(help.contains(name), "{name} is missing from: {help}");
        }
    }
}
