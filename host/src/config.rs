//! `host run --config host.toml`: several listeners in one process, each
//! with its own address, plugin, limits, grants and plugin configuration.
//!
//! ```toml
//! admin = "127.0.0.1:9100"          # optional: /metrics and /status
//! grace = "5s"                       # optional
//! drain_delay = "1s"                 # optional: accept, not ready, this long after SIGTERM
//! store = "memory"                   # optional: a shared store for every listener
//!                                    #   ("memory" or "redis://HOST:PORT")
//!
//! [[listener]]
//! name = "echo"                      # optional; default: the address
//! address = "127.0.0.1:8000"         # IPv4, [IPv6]:port or unix:/path.sock
//! plugin = "echo"                    # built-in name, component/library path, or plugin dir
//! watch = true                       # optional
//! max_connections = 1000             # optional
//! event_loops = 2                    # optional; 0 = a thread per connection
//! instances = 2                      # optional; protocol world: shared instances (1)
//! write_buffer = "1MiB"              # optional; protocol world: unsent bytes per connection
//! idle_timeout = "10m"               # optional
//! max_memory = "64MiB"               # optional
//! call_timeout = "5s"                # optional
//! allow = ["127.0.0.0/8"]            # optional CIDRs
//! proxy_protocol = ["10.0.0.0/8"]    # optional: balancers that send a PROXY header
//! deny = []
//! store = "redis://127.0.0.1:6379"   # optional: this listener's store (else the file's)
//! store_namespace = "chat"           # optional; default: the name, else the plugin's name
//! [listener.tls]                     # optional: terminate TLS (TCP and Unix listeners)
//! cert = "site.pem"                  # PEM certificate chain (relative to this file)
//! key = "site.key"                   # PEM private key
//! alpn = ["http/1.1"]                # optional: application protocols offered
//! handshake_timeout = "10s"          # optional
//! [[listener.tls.certificates]]     # optional: more certificates, chosen by SNI
//! cert = "other.pem"
//! key = "other.key"
//! [listener.config]                  # values the plugin reads with config.get
//! greeting = "hello"
//! [listener.grants]                  # all off by default
//! env = ["LANG"]                     # host environment variables passed through
//! connect = ["127.0.0.1:5432"]       # outbound TCP the plugin may open
//! [[listener.grants.dirs]]
//! host = "/srv/data"
//! guest = "/data"
//! writable = false
//! ```
//!
//! Errors name the file, the line and column, and the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use crate::address::ListenAddr;
use crate::plugin::loader::PluginKind;
use crate::plugin::wasm::Grants;
use crate::store::StoreSpec;
use crate::tls::TlsSpec;

/// A parsed configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Where to serve `/metrics` and `/status`.
    pub admin: Option<SocketAddr>,
    /// How long connections may finish after SIGINT/SIGTERM.
    #[serde(default, deserialize_with = "duration")]
    pub grace: Option<Duration>,
    /// How long to go on accepting, not ready, after SIGTERM.
    #[serde(default, deserialize_with = "duration")]
    pub drain_delay: Option<Duration>,
    /// The shared store of every listener that names none.
    pub store: Option<StoreSpec>,
    /// The listeners (at least one).
    #[serde(default)]
    pub listener: Vec<ListenerConfig>,
}

/// One listener and the plugin that serves it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name in logs and metrics (default: the address).
    pub name: Option<String>,
    /// `ip:port`, `[ipv6]:port` or `unix:/path/to.sock`.
    pub address: ListenAddr,
    /// Built-in name, file path or plugin directory (relative paths are
    /// relative to the configuration file).
    pub plugin: String,
    /// Force the plugin kind.
    pub kind: Option<PluginKind>,
    /// Reload when the plugin changes.
    #[serde(default)]
    pub watch: bool,
    /// Most connections served at once.
    pub max_connections: Option<u32>,
    /// Event-loop threads for WASM plugins.
    pub event_loops: Option<usize>,
    /// Shared instances (reactor threads) of a `protocol` plugin.
    pub instances: Option<usize>,
    /// Unsent bytes a shared instance buffers per connection.
    #[serde(default, deserialize_with = "size")]
    pub write_buffer: Option<usize>,
    /// Close clients silent for this long (`"0s"` = never).
    #[serde(default, deserialize_with = "duration")]
    pub idle_timeout: Option<Duration>,
    /// Largest linear memory per instance.
    #[serde(default, deserialize_with = "size")]
    pub max_memory: Option<usize>,
    /// CPU budget per plugin call.
    #[serde(default, deserialize_with = "duration")]
    pub call_timeout: Option<Duration>,
    /// Only these networks may connect.
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// These networks may not connect.
    #[serde(default)]
    pub deny: Vec<IpNet>,
    /// SO_REUSEPORT.
    #[serde(default)]
    pub reuse_port: bool,
    /// Networks trusted to send a PROXY protocol header first.
    #[serde(default)]
    pub proxy_protocol: Vec<IpNet>,
    /// The listener's shared store (else the file's `store`).
    pub store: Option<StoreSpec>,
    /// TLS termination.
    pub tls: Option<TlsSpec>,
    /// The store namespace: listeners naming the same one share keys and
    /// topics.
    pub store_namespace: Option<String>,
    /// What the plugin may reach beyond its connection.
    #[serde(default)]
    pub grants: Grants,
    /// Values the plugin reads through the `config` interface.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

impl ListenerConfig {
    /// The listener's name.
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.address.to_string())
    }
}

/// A duration written as text (`"5s"`, `"10m"`).
pub(crate) fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(de)?;
    humantime::parse_duration(&text).map(Some).map_err(|err| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration ({err}); try \"5s\" or \"10m\""
        ))
    })
}

fn size<'de, D: Deserializer<'de>>(de: D) -> Result<Option<usize>, D::Error> {
    let text = String::deserialize(de)?;
    crate::size::parse_size(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

impl ConfigFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for listener in &mut config.listener {
            listener.plugin = resolve(base, &listener.plugin);
            listener.tls = listener.tls.take().map(|tls| tls.relative_to(base));
        }
        Ok(config)
    }

    /// Parses `text` (read from `path`, for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|err| located(path, text, err.span(), err.message(), None))?;
        let config: Self = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = err.path().to_string();
            let inner = err.into_inner();
            located(path, text, inner.span(), inner.message(), Some(key))
        })?;
        if config.listener.is_empty() {
            return Err(anyhow!(
                "{}: no [[listener]] defined (each needs `address` and `plugin`)",
                path.display()
            ));
        }
        Ok(config)
    }
}

/// Relative plugin paths are relative to the config file; built-in names
/// (no separator, no extension, no such file) are kept as they are.
fn resolve(base: &Path, plugin: &str) -> String {
    let candidate = base.join(plugin);
    let looks_like_path = plugin.contains('/') || Path::new(plugin).extension().is_some();
    if Path::new(plugin).is_relative() && (looks_like_path || candidate.exists()) {
        candidate.to_string_lossy().into_owned()
    } else {
        plugin.to_string()
    }
}

/// `file:line:column: message (key `a.b`)`, on one line.
fn located(
    path: &Path,
    text: &str,
    span: Option<std::ops::Range<usize>>,
    message: &str,
    key: Option<String>,
) -> anyhow::Error {
    let place = span.map_or_else(String::new, |span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(":{line}:{column}")
    });
    let key = key
        .filter(|k| !k.is_empty() && k != ".")
        .map_or_else(String::new, |k| format!(" (key `{k}`)"));
    let message = message.trim().replace('\n', " ");
    anyhow!("{}{place}: {message}{key}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile> {
        ConfigFile::parse(text, Path::new("host.toml"))
    }

    #[test]
    fn a_full_file_parses() {
        let config = parse(
            r#"
admin = "127.0.0.1:9100"
grace = "2s"

[[listener]]
address = "127.0.0.1:8000"
plugin = "echo"
max_memory = "32MiB"
idle_timeout = "1m"
allow = ["127.0.0.0/8"]

[listener.config]
greeting = "hi"

[listener.grants]
env = ["LANG"]
connect = ["127.0.0.1:5432"]

[[listener.grants.dirs]]
host = "/tmp"
guest = "/data"

[[listener]]
name = "bot"
address = "[::1]:8001"
plugin = "bot10086"
"#,
        )
        .unwrap();
        assert_eq!(config.grace, Some(Duration::from_secs(2)));
        assert_eq!(config.listener.len(), 2);
        let echo = &config.listener[0];
        assert_eq!(echo.max_memory, Some(32 << 20));
        assert_eq!(echo.config["greeting"], "hi");
        assert_eq!(echo.grants.env, ["LANG"]);
        assert_eq!(echo.grants.dirs[0].guest, "/data");
        assert_eq!(config.listener[1].name(), "bot");
        assert_eq!(echo.name(), "127.0.0.1:8000");
    }

    #[test]
    fn unknown_keys_name_the_line_and_key() {
        let err = parse("[[listener]]\naddress = \"127.0.0.1:1\"\nplugin = \"echo\"\nbiuld = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("host.toml:4:1: unknown field `biuld`"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = parse(
            "[[listener]]\naddress = \"127.0.0.1:1\"\nplugin = \"echo\"\nmax_memory = \"lots\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("host.toml:4:"), "{err}");
        assert!(err.contains("listener[0].max_memory"), "{err}");
        let err = parse("[[listener]]\naddress = \"nowhere\"\nplugin = \"echo\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("host.toml:2:") && err.contains("address"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = parse("[[listener]\n").unwrap_err().to_string();
        assert!(err.starts_with("host.toml:1:"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn a_file_without_listeners_is_refused() {
        let err = parse("admin = \"127.0.0.1:9100\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no [[listener]]"), "{err}");
    }

    #[test]
    fn plugin_paths_are_relative_to_the_file() {
        assert_eq!(resolve(Path::new("/etc/plughost"), "echo"), "echo");
        assert_eq!(
            resolve(Path::new("/etc/plughost"), "p/echo.wasm"),
            "/etc/plughost/p/echo.wasm"
        );
        assert_eq!(
            resolve(Path::new("/etc/plughost"), "/abs/x.wasm"),
            "/abs/x.wasm"
        );
    }

    /// Property tests: whatever the file holds, parsing answers (a
    /// configuration or an error naming the problem), never a panic —
    /// arbitrary text, and files put together from the real keys with
    /// values of every kind.
    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::*;

        /// A key of the file (top level or a listener's), or a wrong one.
        fn key() -> impl Strategy<Value = &'static str> {
            proptest::sample::select(vec![
                "admin",
                "grace",
                "store",
                "address",
                "plugin",
                "kind",
                "watch",
                "max_connections",
                "event_loops",
                "instances",
                "write_buffer",
                "proxy_protocol",
                "idle_timeout",
                "max_memory",
                "call_timeout",
                "allow",
                "deny",
                "reuse_port",
                "store_namespace",
                "name",
                "biuld",
            ])
        }

        /// A TOML value of some kind, plausible or not.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                "\\PC{0,20}".prop_map(|t| format!("{t:?}")),
                "[0-9]{1,6}(ms|s|m|h|KiB|MiB|GiB|x)?".prop_map(|t| format!("\"{t}\"")),
                "(127\\.0\\.0\\.1|::1|10\\.0\\.0\\.0)(:[0-9]{1,5}|/[0-9]{1,3})?"
                    .prop_map(|t| format!("[\"{t}\"]")),
                Just("\"memory\"".to_string()),
                Just("\"redis://127.0.0.1:1\"".to_string()),
                Just("{}".to_string()),
            ]
        }

        proptest! {
            #[test]
            fn any_text_gets_an_answer(text in "\\PC{0,300}") {
                let _ = parse(&text);
            }

            #[test]
            fn files_of_real_keys_get_an_answer(
                top in vec((key(), value()), 0..4),
                listeners in vec(vec((key(), value()), 0..8), 0..3),
            ) {
                let mut text = String::new();
                for (k, v) in top {
                    text.push_str(&format!("{k} = {v}\n"));
                }
                for listener in listeners {
                    text.push_str("[[listener]]\n");
                    for (k, v) in listener {
                        text.push_str(&format!("{k} = {v}\n"));
                    }
                }
                if let Err(err) = parse(&text) {
                    prop_assert!(!err.to_string().is_empty());
                }
            }
        }
    }
}
