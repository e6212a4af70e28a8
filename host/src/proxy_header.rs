//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load
//! balancer sends first on each connection to say who the client really
//! is. [`parse`] reads one from the start of what a connection received;
//! it is pure, so the serving code decides when to read and how long to
//! wait (see `server/preamble.rs`).
//!
//! Version 1 is a text line, `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`
//! (or `TCP6`, or `UNKNOWN …`), at most 107 bytes. Version 2 is binary: a
//! 12-byte signature, a version/command byte, a family byte, a length and
//! the addresses, then optional TLVs (skipped). A `LOCAL` command (a
//! health check from the balancer itself) or an `UNKNOWN` family carries
//! no client address: the connection keeps its own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The signature every version 2 header starts with.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, `\r\n` included.
const V1_MAX: usize = 107;
/// The longest version 2 header this host accepts (addresses and TLVs).
pub const V2_MAX: usize = 16 + 536;

/// What the start of a connection holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not enough bytes yet to tell.
    Incomplete,
    /// A header of `len` bytes; `source` is the client it names (`None`
    /// for `LOCAL` or `UNKNOWN`: the connection's own peer stands).
    Header {
        /// Bytes the header takes; the plugin's data starts after them.
        len: usize,
        /// The client's address.
        source: Option<SocketAddr>,
    },
    /// Not a valid header: why.
    Invalid(&'static str),
}

/// Parses a PROXY header (either version) at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let probe = buf.len().min(V2_SIGNATURE.len());
    if buf[..probe] == V2_SIGNATURE[..probe] {
        return if buf.len() < V2_SIGNATURE.len() {
            Parsed::Incomplete
        } else {
            parse_v2(buf)
        };
    }
    let probe = buf.len().min(6);
    if buf[..probe] == b"PROXY "[..probe] {
        return if buf.len() < 6 {
            Parsed::Incomplete
        } else {
            parse_v1(buf)
        };
    }
    Parsed::Invalid("the connection does not start with a PROXY protocol header")
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid("PROXY v1 header longer than 107 bytes")
        } else {
            Parsed::Incomplete
        };
    };
    let len = end + 2;
    let Ok(line) = std::str::from_utf8(&buf[..end]) else {
        return Parsed::Invalid("PROXY v1 header is not text");
    };
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Parsed::Header { len, source: None },
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let (Ok(src), Ok(_dst)) = (src.parse::<IpAddr>(), dst.parse::<IpAddr>()) else {
                return Parsed::Invalid("PROXY v1 header has a bad address");
            };
            let (Some(sport), Some(_)) = (port(sport), port(dport)) else {
                return Parsed::Invalid("PROXY v1 header has a bad port");
            };
            if (*family == "TCP4") != src.is_ipv4() {
                return Parsed::Invalid("PROXY v1 header's address does not match its family");
            }
            Parsed::Header {
                len,
                source: Some(SocketAddr::new(src, sport)),
            }
        }
        _ => Parsed::Invalid("malformed PROXY v1 header"),
    }
}

/// A decimal port without sign or leading zeros.
fn port(text: &str) -> Option<u16> {
    let plain = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let canonical = text == "0" || !text.starts_with('0');
    (plain && canonical).then(|| text.parse().ok()).flatten()
}

fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::Incomplete;
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Parsed::Invalid("PROXY v2 header with an unknown version");
    }
    let family = buf[13];
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > V2_MAX {
        return Parsed::Invalid("PROXY v2 header too long");
    }
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    let addresses = &buf[16..len];
    let source = match (command, family) {
        // LOCAL: the balancer's own connection (a health check).
        (0x0, _) => None,
        (0x1, 0x11) if addresses.len() >= 12 => {
            let ip = Ipv4Addr::new(addresses[0], addresses[1], addresses[2], addresses[3]);
            let port = u16::from_be_bytes([addresses[8], addresses[9]]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        (0x1, 0x21) if addresses.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&addresses[..16]);
            let port = u16::from_be_bytes([addresses[32], addresses[33]]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        (0x1, 0x11 | 0x21) => return Parsed::Invalid("PROXY v2 addresses are truncated"),
        // UNSPEC, or a family this host does not serve (UDP, Unix):
        // nothing to use.
        (0x1, _) => None,
        _ => return Parsed::Invalid("PROXY v2 header with an unknown command"),
    };
    Parsed::Header { len, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(0x20 | command);
        header.push(family);
        header.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        header.extend_from_slice(addresses);
        header
    }

    #[test]
    fn a_v1_header_names_the_client_and_its_length() {
        let buf = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /";
        assert_eq!(
            parse(buf),
            Parsed::Header {
                len: 45,
                source: Some("192.0.2.1:56324".parse().unwrap())
            }
        );
        let buf = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n";
        assert!(matches!(parse(buf), Parsed::Header { source: Some(a), .. } if a.is_ipv6()));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                source: None
            }
        );
    }

    #[test]
    fn a_v1_header_is_incomplete_until_its_line_ends() {
        for cut in 1..44 {
            let buf = &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"[..cut];
            assert_eq!(parse(buf), Parsed::Incomplete, "{cut} bytes");
        }
    }

    #[test]
    fn malformed_v1_headers_are_invalid() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 1\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 +1 1\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 01 1\r\n",
            b"PROXY UDP4 1.2.3.4 1.2.3.4 1 1\r\n",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert!(matches!(parse(bad), Parsed::Invalid(_)), "{bad:?}");
        }
        let endless = [b'P'; 200];
        assert!(matches!(parse(&endless), Parsed::Invalid(_)));
        let mut long = b"PROXY ".to_vec();
        long.extend_from_slice(&[b'x'; 120]);
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
    }

    #[test]
    fn a_v2_header_names_the_client() {
        let mut ipv4 = vec![192, 0, 2, 1, 198, 51, 100, 2];
        ipv4.extend_from_slice(&56324u16.to_be_bytes());
        ipv4.extend_from_slice(&443u16.to_be_bytes());
        let header = v2(1, 0x11, &ipv4);
        let mut buf = header.clone();
        buf.extend_from_slice(b"data");
        assert_eq!(
            parse(&buf),
            Parsed::Header {
                len: header.len(),
                source: Some("192.0.2.1:56324".parse().unwrap())
            }
        );
        for cut in 1..header.len() {
            assert_eq!(parse(&header[..cut]), Parsed::Incomplete, "{cut} bytes");
        }
        let mut ipv6 = vec![0u8; 36];
        ipv6[15] = 1;
        ipv6[32..34].copy_from_slice(&8080u16.to_be_bytes());
        assert_eq!(
            parse(&v2(1, 0x21, &ipv6)),
            Parsed::Header {
                len: 52,
                source: Some("[::1]:8080".parse().unwrap())
            }
        );
        // LOCAL (a health check) and TLVs after the addresses.
        assert!(matches!(
            parse(&v2(0, 0, &[])),
            Parsed::Header { source: None, .. }
        ));
        let mut with_tlv = ipv4.clone();
        with_tlv.extend_from_slice(&[0x04, 0, 1, 7]);
        assert!(matches!(
            parse(&v2(1, 0x11, &with_tlv)),
            Parsed::Header { len: 32, .. }
        ));
    }

    #[test]
    fn malformed_v2_headers_are_invalid() {
        assert!(matches!(
            parse(&v2(1, 0x11, &[1, 2, 3])),
            Parsed::Invalid(_)
        ));
        assert!(matches!(parse(&v2(7, 0x11, &[0; 12])), Parsed::Invalid(_)));
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(matches!(parse(&wrong_version), Parsed::Invalid(_)));
        let mut huge = v2(1, 0x11, &[]);
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(parse(&huge), Parsed::Invalid(_)));
    }

    /// Property tests: any input is answered without a panic, a valid
    /// header of either version is read back exactly, and a valid header
    /// cut short is `Incomplete`, never a wrong answer.
    mod properties {
        use std::net::{SocketAddrV4, SocketAddrV6};

        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::*;

        /// A valid header of either version naming `source`, and its length.
        fn header(source: SocketAddr, destination_port: u16, tlvs: &[u8]) -> Vec<u8> {
            match source {
                SocketAddr::V4(a) => {
                    let mut addresses = a.ip().octets().to_vec();
                    addresses.extend_from_slice(&[198, 51, 100, 2]);
                    addresses.extend_from_slice(&a.port().to_be_bytes());
                    addresses.extend_from_slice(&destination_port.to_be_bytes());
                    addresses.extend_from_slice(tlvs);
                    v2(1, 0x11, &addresses)
                }
                SocketAddr::V6(a) => {
                    let mut addresses = a.ip().octets().to_vec();
                    addresses.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
                    addresses.extend_from_slice(&a.port().to_be_bytes());
                    addresses.extend_from_slice(&destination_port.to_be_bytes());
                    addresses.extend_from_slice(tlvs);
                    v2(1, 0x21, &addresses)
                }
            }
        }

        fn v1(source: SocketAddr, destination_port: u16) -> Vec<u8> {
            let (family, destination) = match source {
                SocketAddr::V4(_) => ("TCP4", "198.51.100.2"),
                SocketAddr::V6(_) => ("TCP6", "::1"),
            };
            format!(
                "PROXY {family} {} {destination} {} {destination_port}\r\n",
                source.ip(),
                source.port()
            )
            .into_bytes()
        }

        fn source() -> impl Strategy<Value = SocketAddr> {
            prop_oneof![
                any::<SocketAddrV4>().prop_map(SocketAddr::V4),
                any::<SocketAddrV6>().prop_map(|a| SocketAddr::V6(SocketAddrV6::new(
                    *a.ip(),
                    a.port(),
                    0,
                    0
                ))),
            ]
        }

        proptest! {
            #[test]
            fn any_bytes_get_an_answer(buf in vec(any::<u8>(), 0..700)) {
                let _ = parse(&buf);
            }

            #[test]
            fn bytes_after_a_signature_get_an_answer(
                rest in vec(any::<u8>(), 0..600),
                v1_prefix in any::<bool>(),
            ) {
                let mut buf = if v1_prefix { b"PROXY ".to_vec() } else { V2_SIGNATURE.to_vec() };
                buf.extend_from_slice(&rest);
                if let Parsed::Header { len, .. } = parse(&buf) {
                    prop_assert!(len <= buf.len() && len <= V2_MAX.max(V1_MAX));
                }
            }

            #[test]
            fn a_valid_header_is_read_back_exactly(
                source in source(),
                destination_port in any::<u16>(),
                tlvs in vec(any::<u8>(), 0..64),
                data in vec(any::<u8>(), 0..64),
                version_one in any::<bool>(),
            ) {
                let mut buf = if version_one {
                    v1(source, destination_port)
                } else {
                    header(source, destination_port, &tlvs)
                };
                let len = buf.len();
                buf.extend_from_slice(&data);
                prop_assert_eq!(parse(&buf), Parsed::Header { len, source: Some(source) });
                // Cut anywhere short of its end, it is not yet a header.
                for cut in 0..len {
                    prop_assert_eq!(parse(&buf[..cut]), Parsed::Incomplete, "cut at {}", cut);
                }
            }
        }
    }
}
