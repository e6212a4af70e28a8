//! Who may connect: allow and deny lists of networks, checked on accept
//! before a plugin instance is created (socketserver's `verify_request`).

use std::net::IpAddr;

use ipnet::IpNet;

/// Allow/deny rules for peer addresses.
#[derive(Debug, Clone, Default)]
pub struct AccessRules {
    /// If not empty, only peers in one of these networks are served.
    pub allow: Vec<IpNet>,
    /// Peers in any of these networks are refused (deny wins over allow).
    pub deny: Vec<IpNet>,
}

impl AccessRules {
    /// Whether a peer at `ip` may be served.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        let allowed = self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip));
        allowed && !self.deny.iter().any(|net| net.contains(&ip))
    }

    /// Whether any rule is set.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// IPv4 peers of an IPv6 listener arrive as `::ffff:a.b.c.d`; rules are
/// written for the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> AccessRules {
        AccessRules {
            allow: allow.iter().map(|n| n.parse().unwrap()).collect(),
            deny: deny.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn no_rules_permit_everyone() {
        assert!(AccessRules::default().permits("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn allow_lists_restrict_and_deny_wins() {
        let r = rules(&["127.0.0.0/8"], &["127.0.0.2/32"]);
        assert!(r.permits("127.0.0.1".parse().unwrap()));
        assert!(!r.permits("127.0.0.2".parse().unwrap()));
        assert!(!r.permits("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_rules() {
        let r = rules(&["127.0.0.0/8"], &[]);
        assert!(r.permits("::ffff:127.0.0.1".parse().unwrap()));
    }
}
