//! The PROXY protocol header (HAProxy's v1 text and v2 binary, as sent by HAProxy, AWS NLB and
//! most L4 load balancers) at the start of a connection: is there one, is it complete, how
//! long is it, and which client address does it name. Parsing is done by the `ppp` crate;
//! whether to believe the address is the caller's decision (only from `trusted_proxies`).

use std::net::{IpAddr, SocketAddr};

use ppp::{v1, v2, HeaderResult, PartialResult};

/// The v1 header starts with this.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The v2 header starts with this 12-byte signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest header accepted: v1 is at most 107 bytes; v2 with TLVs (AWS NLB adds a VPC
/// endpoint id, HAProxy may add SSL details) stays well under this.
pub const MAX_HEADER_BYTES: usize = 536;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspected {
    /// No PROXY header: the connection starts with the client's own bytes.
    Absent,
    /// A PROXY header has begun; more bytes are needed.
    Incomplete,
    /// A complete header of `len` bytes naming `source` (`None` for `UNKNOWN` / `LOCAL`, e.g.
    /// a load balancer's own health check).
    Header {
        /// Header length, to be consumed before the client's bytes.
        len: usize,
        /// The client's address.
        source: Option<SocketAddr>,
    },
    /// A PROXY header that can never be valid.
    Invalid(String),
}

fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

/// Inspect the first bytes of a connection.
pub fn inspect(buf: &[u8]) -> Inspected {
    if buf.is_empty() {
        return Inspected::Incomplete;
    }
    if !starts_like(buf, V1_PREFIX) && !starts_like(buf, V2_SIGNATURE) {
        return Inspected::Absent;
    }
    let parsed = HeaderResult::parse(buf);
    if parsed.is_incomplete() {
        return if buf.len() >= MAX_HEADER_BYTES {
            Inspected::Invalid(format!("header longer than {MAX_HEADER_BYTES} bytes"))
        } else {
            Inspected::Incomplete
        };
    }
    match parsed {
        HeaderResult::V1(Ok(h)) => {
            let source = match h.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
                v1::Addresses::Unknown => None,
            };
            Inspected::Header { len: h.header.len(), source }
        }
        HeaderResult::V2(Ok(h)) => {
            let source = match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
                (_, v2::Addresses::IPv6(a)) => Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
                _ => None,
            };
            Inspected::Header { len: h.len(), source }
        }
        HeaderResult::V1(Err(e)) => Inspected::Invalid(format!("PROXY v1: {e}")),
        HeaderResult::V2(Err(e)) => Inspected::Invalid(format!("PROXY v2: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn v1_names_the_client_and_its_length() {
        let line = b"PROXY TCP4 198.51.100.7 10.0.0.1 51234 443\r\n";
        let mut conn = line.to_vec();
        conn.extend_from_slice(b"GET /ws HTTP/1.1\r\n");
        assert_eq!(
            inspect(&conn),
            Inspected::Header { len: line.len(), source: Some("198.51.100.7:51234".parse().expect("addr")) }
        );
        let six = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\n";
        assert_eq!(
            inspect(six),
            Inspected::Header { len: six.len(), source: Some("[2001:db8::7]:4000".parse().expect("addr")) }
        );
        assert_eq!(inspect(b"PROXY UNKNOWN\r\n"), Inspected::Header { len: 15, source: None });
    }

    #[test]
    fn v2_names_the_client_and_local_commands_name_nobody() {
        let addrs = [203, 0, 113, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb];
        let mut conn = v2(1, 0x11, &addrs);
        let len = conn.len();
        conn.extend_from_slice(b"\x16\x03\x01"); // a TLS ClientHello follows
        assert_eq!(inspect(&conn), Inspected::Header { len, source: Some("203.0.113.9:8080".parse().expect("addr")) });
        let local = v2(0, 0x00, &[]);
        assert_eq!(inspect(&local), Inspected::Header { len: 16, source: None });
    }

    #[test]
    fn partial_absent_and_broken_headers_are_told_apart() {
        assert_eq!(inspect(b"GET /ws HTTP/1.1\r\n"), Inspected::Absent);
        assert_eq!(inspect(b"\x16\x03\x01\x02\x00"), Inspected::Absent, "a TLS ClientHello");
        assert_eq!(inspect(b"PRO"), Inspected::Incomplete);
        assert_eq!(inspect(b"PROXY TCP4 198.51.100.7 10.0"), Inspected::Incomplete);
        assert_eq!(inspect(&V2_SIGNATURE[..7]), Inspected::Incomplete);
        assert!(matches!(inspect(b"PROXY TCP9 x y 1 2\r\n"), Inspected::Invalid(_)));
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; MAX_HEADER_BYTES]].concat();
        assert!(matches!(inspect(&endless), Inspected::Invalid(_)));
    }
}
