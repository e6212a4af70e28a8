//! What an operator may grant a plugin beyond its connection — all off by
//! default: directories (read-only or read-write), named environment
//! variables, outbound TCP to listed addresses, configuration values, and
//! the listener's shared store (`--store`; its calls are in
//! `store_import.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use serde::Deserialize;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use super::guest_output::GuestOutput;
use crate::address::PeerAddr;
use crate::store::ListenerStore;

/// A host directory visible to the plugin.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the plugin sees it.
    pub guest: String,
    /// Whether the plugin may create, change and delete files in it.
    #[serde(default)]
    pub writable: bool,
}

/// Everything a plugin is granted.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Directories.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Names of host environment variables passed through.
    #[serde(default)]
    pub env: Vec<String>,
    /// Addresses the plugin may open TCP connections to.
    #[serde(default)]
    pub connect: Vec<SocketAddr>,
}

impl Grants {
    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.env.is_empty() && self.connect.is_empty()
    }

    /// One line per grant, for `host check` and the start-up log.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for dir in &self.dirs {
            let mode = if dir.writable {
                "read-write"
            } else {
                "read-only"
            };
            lines.push(format!(
                "dir {} as {} ({mode})",
                dir.host.display(),
                dir.guest
            ));
        }
        for name in &self.env {
            lines.push(format!("env {name}"));
        }
        for addr in &self.connect {
            lines.push(format!("connect tcp {addr}"));
        }
        lines
    }
}

/// Grants checked and resolved once, applied to every connection's sandbox.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    dirs: Vec<DirGrant>,
    env: Vec<(String, String)>,
    connect: Arc<Vec<SocketAddr>>,
    /// Values for the `config` interface.
    pub(super) config: Arc<BTreeMap<String, String>>,
    /// The shared store (`--store`), if the listener has one.
    pub(super) store: Option<Arc<ListenerStore>>,
}

impl Sandbox {
    /// Checks `grants` (directories must exist) and snapshots the granted
    /// environment variables.
    pub fn new(grants: &Grants, config: BTreeMap<String, String>) -> Result<Self> {
        for dir in &grants.dirs {
            if !dir.host.is_dir() {
                bail!("granted directory {} does not exist", dir.host.display());
            }
        }
        let env = grants
            .env
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v)))
            .collect();
        Ok(Self {
            dirs: grants.dirs.clone(),
            env,
            connect: Arc::new(grants.connect.clone()),
            config: Arc::new(config),
            store: None,
        })
    }

    /// The same sandbox, with the listener's shared store granted.
    pub fn with_store(mut self, store: Option<Arc<ListenerStore>>) -> Self {
        self.store = store;
        self
    }

    /// The WASI context of the guest serving `peer` when it must exist
    /// before the guest runs: granted directories are opened here, and a
    /// directory that cannot be opened refuses the connection rather than
    /// failing a guest call later. `None` when no directory is granted;
    /// then [`Sandbox::wasi_on_demand`] builds the context at the guest's
    /// first WASI call, and a handler that makes none (most) never pays for
    /// it.
    pub(super) fn wasi_up_front(&self, peer: &PeerAddr) -> Result<Option<WasiCtx>> {
        if self.dirs.is_empty() {
            return Ok(None);
        }
        let mut builder = self.builder(peer);
        for dir in &self.dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            builder
                .preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(anyhow::Error::from)?;
        }
        Ok(Some(builder.build()))
    }

    /// The WASI context of the guest serving `peer`, for a sandbox that
    /// grants no directory (see [`Sandbox::wasi_up_front`]).
    pub(super) fn wasi_on_demand(&self, peer: &PeerAddr) -> WasiCtx {
        self.builder(peer).build()
    }

    /// Deny by default: no files, no environment, no arguments, no sockets,
    /// except the granted variables and addresses; stdout/stderr go to the
    /// log.
    fn builder(&self, peer: &PeerAddr) -> WasiCtxBuilder {
        let peer = peer.to_string();
        let mut builder = WasiCtx::builder();
        builder
            .stdout(GuestOutput::new(peer.clone(), "stdout"))
            .stderr(GuestOutput::new(peer, "stderr"))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (name, value) in &self.env {
            builder.env(name, value);
        }
        if !self.connect.is_empty() {
            let allowed = Arc::clone(&self.connect);
            builder
                .allow_tcp(true)
                .socket_addr_check(move |addr, use_| {
                    let ok = permits_connecting(&allowed, addr, use_);
                    Box::pin(async move { ok })
                });
        }
        builder
    }
}

/// Whether a `connect` grant of `allowed` addresses permits `use_` of
/// `addr`: connecting to a granted address, and the implicit bind that
/// precedes every connect of an unbound socket, which wasmtime-wasi checks
/// as a bind of the wildcard address with port 0 (the OS then picks the
/// local port). Binding any other address, and listening or accepting on
/// any address, stay refused, so a plugin can reach the granted services
/// but never serve a port of its own.
fn permits_connecting(allowed: &[SocketAddr], addr: SocketAddr, use_: SocketAddrUse) -> bool {
    match use_ {
        SocketAddrUse::TcpConnect => allowed.contains(&addr),
        SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_grant_permits_the_implicit_bind_and_nothing_else() {
        let granted: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:5433".parse().unwrap();
        let allowed = [granted];
        let check = |addr: &str, use_| permits_connecting(&allowed, addr.parse().unwrap(), use_);
        assert!(permits_connecting(
            &allowed,
            granted,
            SocketAddrUse::TcpConnect
        ));
        assert!(!permits_connecting(
            &allowed,
            other,
            SocketAddrUse::TcpConnect
        ));
        // What connecting an unbound socket checks first, for IPv4 and IPv6.
        assert!(check("0.0.0.0:0", SocketAddrUse::TcpBind));
        assert!(check("[::]:0", SocketAddrUse::TcpBind));
        // A bind to a chosen address or port, and any listen, are refused.
        assert!(!check("127.0.0.1:0", SocketAddrUse::TcpBind));
        assert!(!check("0.0.0.0:8080", SocketAddrUse::TcpBind));
        assert!(!check("0.0.0.0:0", SocketAddrUse::TcpListen));
        assert!(!check("127.0.0.1:5432", SocketAddrUse::TcpListen));
        assert!(!check("127.0.0.1:5432", SocketAddrUse::TcpAccept));
        assert!(!check("127.0.0.1:5432", SocketAddrUse::UdpBind));
    }

    #[test]
    fn grants_describe_themselves() {
        let grants = Grants {
            dirs: vec![DirGrant {
                host: "/tmp".into(),
                guest: "/data".into(),
                writable: false,
            }],
            env: vec!["LANG".into()],
            connect: vec!["127.0.0.1:5432".parse().unwrap()],
        };
        assert_eq!(
            grants.describe(),
            [
                "dir /tmp as /data (read-only)",
                "env LANG",
                "connect tcp 127.0.0.1:5432"
            ]
        );
        assert!(Grants::default().is_empty());
    }

    #[test]
    fn only_a_sandbox_with_directories_builds_its_wasi_context_up_front() {
        let peer = PeerAddr::Ip("127.0.0.1:1".parse().unwrap());
        let none = Sandbox::new(&Grants::default(), BTreeMap::new()).unwrap();
        assert!(none.wasi_up_front(&peer).unwrap().is_none());
        let grants = Grants {
            dirs: vec![DirGrant {
                host: std::env::temp_dir(),
                guest: "/tmp".into(),
                writable: false,
            }],
            ..Grants::default()
        };
        let dirs = Sandbox::new(&grants, BTreeMap::new()).unwrap();
        assert!(dirs.wasi_up_front(&peer).unwrap().is_some());
    }

    #[test]
    fn missing_directories_are_refused() {
        let grants = Grants {
            dirs: vec![DirGrant {
                host: "/no/such/dir".into(),
                guest: "/x".into(),
                writable: true,
            }],
            ..Grants::default()
        };
        let err = Sandbox::new(&grants, BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("/no/such/dir"));
    }
}
