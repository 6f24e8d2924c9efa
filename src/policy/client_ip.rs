//! The client's real IP behind trusted load balancers (`server.trusted_proxies`).
//!
//! From a peer inside a trusted CIDR, `X-Forwarded-For` is read right to left: every address
//! that is itself a trusted proxy is skipped and the first untrusted one is the client (the
//! "rightmost untrusted" rule: entries to its left were written by the client and prove
//! nothing). From any other peer the header is ignored, so a client cannot pick the address
//! its per-IP limits and logs are charged to.

use std::net::IpAddr;

use ipnet::IpNet;

/// True when `ip` is inside one of `trusted`.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client address of a request from `peer` carrying the `X-Forwarded-For` header values
/// `forwarded_for` (in the order they appeared).
pub fn client_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    let entries = forwarded_for.iter().rev().flat_map(|v| v.rsplit(','));
    for entry in entries {
        let Some(ip) = parse_entry(entry.trim()) else {
            // Unreadable: trust nothing further left; the last trusted hop stands.
            return client;
        };
        client = ip;
        if !is_trusted(ip, trusted) {
            return ip;
        }
    }
    client
}

/// One X-Forwarded-For entry: an IPv4 or IPv6 address, optionally `[v6]` or with a port.
fn parse_entry(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sock) = s.parse::<std::net::SocketAddr>() {
        return Some(sock.ip());
    }
    s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).and_then(|r| r.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("cidr")).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("203.0.113.7"), &["1.2.3.4"], &t), ip("203.0.113.7"));
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let t = nets(&["10.0.0.0/8", "fd00::/8"]);
        // client-supplied garbage, then the real client, then an inner proxy.
        let xff = ["6.6.6.6, 198.51.100.20", "10.1.2.3"];
        assert_eq!(client_ip(ip("10.0.0.1"), &xff, &t), ip("198.51.100.20"));
        assert_eq!(client_ip(ip("10.0.0.1"), &["[2001:db8::1]"], &t), ip("2001:db8::1"));
        assert_eq!(client_ip(ip("10.0.0.1"), &["198.51.100.20:4711"], &t), ip("198.51.100.20"));
    }

    #[test]
    fn without_a_usable_header_the_last_trusted_hop_stands() {
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &[], &t), ip("10.0.0.1"));
        assert_eq!(client_ip(ip("10.0.0.1"), &["10.9.9.9, not-an-ip"], &t), ip("10.0.0.1"));
        assert_eq!(client_ip(ip("10.0.0.1"), &["10.2.2.2"], &t), ip("10.2.2.2"), "all trusted: the leftmost");
    }
}
