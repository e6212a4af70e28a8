//! Addresses the host listens on and that peers connect from: TCP (IPv4 or
//! IPv6) or Unix stream sockets.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix stream socket at this path.
    Unix(PathBuf),
    /// A UDP address (datagram plugins).
    Udp(SocketAddr),
}

impl FromStr for ListenAddr {
    type Err = String;

    /// `127.0.0.1:8000`, `[::1]:8000`, `unix:/run/plughost.sock` or
    /// `udp:127.0.0.1:9000`.
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(addr) = text.strip_prefix("udp:") {
            return addr
                .parse()
                .map(Self::Udp)
                .map_err(|_| format!("`{text}` is not a UDP address: use udp:ip:port"));
        }
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a socket path, e.g. unix:/run/echo.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        text.parse().map(Self::Tcp).map_err(|_| {
            format!(
                "`{text}` is not an address: use ip:port, [ipv6]:port, unix:/path or udp:ip:port"
            )
        })
    }
}

impl<'de> serde::Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Udp(addr) => write!(f, "udp:{addr}"),
        }
    }
}

/// One end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAddr {
    /// An IP address and port.
    Ip(SocketAddr),
    /// A Unix socket; `None` for an unnamed (client) socket.
    Unix(Option<PathBuf>),
}

impl PeerAddr {
    /// The IP address and port, for TCP peers.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            Self::Ip(addr) => Some(*addr),
            Self::Unix(_) => None,
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(addr) => write!(f, "{addr}"),
            Self::Unix(Some(path)) => write!(f, "unix:{}", path.display()),
            Self::Unix(None) => write!(f, "unix:(unnamed)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            "127.0.0.1:80".parse::<ListenAddr>(),
            Ok(ListenAddr::Tcp("127.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(
            "unix:/tmp/x.sock".parse::<ListenAddr>(),
            Ok(ListenAddr::Unix("/tmp/x.sock".into()))
        );
        assert!("unix:".parse::<ListenAddr>().is_err());
        assert_eq!(
            "udp:127.0.0.1:9".parse::<ListenAddr>(),
            Ok(ListenAddr::Udp("127.0.0.1:9".parse().unwrap()))
        );
        assert!("localhost:80".parse::<ListenAddr>().is_err());
        assert_eq!(
            "unix:/tmp/x.sock"
                .parse::<ListenAddr>()
                .unwrap()
                .to_string(),
            "unix:/tmp/x.sock"
        );
    }

    #[test]
    fn peers_display_like_the_log_shows_them() {
        assert_eq!(PeerAddr::Unix(None).to_string(), "unix:(unnamed)");
        assert_eq!(
            PeerAddr::Ip("[::1]:9".parse().unwrap()).to_string(),
            "[::1]:9"
        );
    }

    /// Property tests: any text is answered without a panic, and every
    /// address reads back from how it is shown.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn listen_addr() -> impl Strategy<Value = ListenAddr> {
            let ip = any::<SocketAddr>().prop_map(|a| match a {
                SocketAddr::V6(v6) => SocketAddr::new(std::net::IpAddr::V6(*v6.ip()), v6.port()),
                v4 => v4,
            });
            prop_oneof![
                ip.clone().prop_map(ListenAddr::Tcp),
                ip.prop_map(ListenAddr::Udp),
                "/[a-z0-9._/-]{1,40}".prop_map(|p| ListenAddr::Unix(PathBuf::from(p))),
            ]
        }

        proptest! {
            #[test]
            fn any_text_gets_an_answer(text in "\\PC{0,80}") {
                let _ = text.parse::<ListenAddr>();
            }

            #[test]
            fn address_like_text_gets_an_answer(text in "(udp:|unix:|\\[)?[0-9a-f:.\\]]{0,50}") {
                let _ = text.parse::<ListenAddr>();
            }

            #[test]
            fn every_address_reads_back_from_its_text(addr in listen_addr()) {
                prop_assert_eq!(addr.to_string().parse::<ListenAddr>(), Ok(addr));
            }
        }
    }
}
