//! The upstream side of a connection: dialing the backend WebSocket before the client's 101,
//! so a dead backend is an HTTP 502/504 and never a socket that opens and then closes.
//!
//! Why awc: it does the client handshake (and TLS for `wss://`) on the worker's own event
//! loop and hands back the socket with any bytes read past the 101, which the session then
//! drives itself (`session::relay`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use actix_http::header::{HeaderName, HeaderValue};
use awc::error::{SendRequestError, WsClientError};
use awc::BoxedSocket;
use bytes::BytesMut;

use crate::config::Route;
use crate::error::HandshakeRefusal;

/// Identity headers added to the upstream request (docs/protocol.md).
pub const SUBJECT_HEADER: &str = "x-wsgate-subject";
/// Space-separated scopes of the client's token.
pub const SCOPES_HEADER: &str = "x-wsgate-scopes";
/// The client's IP as the gateway saw it.
pub const CLIENT_IP_HEADER: &str = "x-wsgate-client-ip";

/// Who the client is, for the upstream.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    /// Token subject.
    pub subject: &'a str,
    /// Token scopes.
    pub scopes: &'a [String],
    /// Client IP.
    pub client_ip: IpAddr,
}

/// An open upstream WebSocket.
pub struct Dialed {
    /// The socket, past the handshake.
    pub io: BoxedSocket,
    /// Bytes the upstream sent right after its 101 (already frames).
    pub read_ahead: BytesMut,
}

/// Open the route's upstream WebSocket, asking for `protocol` and adding identity headers.
/// Only these headers are sent: nothing the client sent is forwarded, so client-made
/// `X-Wsgate-*` headers never reach the upstream.
///
/// # Errors
/// [`HandshakeRefusal::UpstreamTimeout`] past `timeout`; [`HandshakeRefusal::UpstreamFailed`] when the upstream is
/// unreachable or answers anything but `101` (the client then gets 502, never a 101 of ours).
pub async fn dial(
    client: &awc::Client,
    route: &Route,
    identity: &Identity<'_>,
    protocol: Option<&str>,
    timeout: Duration,
) -> Result<Dialed, (HandshakeRefusal, String)> {
    let mut req = client.ws(route.upstream.as_str());
    if let Some(p) = protocol {
        req = req.protocols([p]);
    }
    if route.forward_identity {
        let scopes = identity.scopes.join(" ");
        for (name, value) in [
            (SUBJECT_HEADER, identity.subject.as_bytes()),
            (SCOPES_HEADER, scopes.as_bytes()),
            (CLIENT_IP_HEADER, identity.client_ip.to_string().as_bytes()),
        ] {
            let value = HeaderValue::from_bytes(value).map_err(|_| {
                (HandshakeRefusal::UpstreamFailed, format!("identity header {name} has an invalid value"))
            })?;
            req = req.set_header(HeaderName::from_static(name), value);
        }
    }
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, req.connect()).await;
    crate::metrics::upstream_connect(started.elapsed());
    match result {
        Err(_) => Err((HandshakeRefusal::UpstreamTimeout, "upstream did not accept in time".into())),
        Ok(Err(WsClientError::SendRequest(SendRequestError::Timeout))) => {
            Err((HandshakeRefusal::UpstreamTimeout, "upstream did not accept in time".into()))
        }
        Ok(Err(e)) => Err((HandshakeRefusal::UpstreamFailed, upstream_error_detail(&e))),
        Ok(Ok((resp, framed))) => {
            check_answer(resp.headers(), protocol)
                .map_err(|why| (HandshakeRefusal::UpstreamFailed, why.to_string()))?;
            let parts = framed.into_parts();
            Ok(Dialed { io: parts.io, read_ahead: parts.read_buf })
        }
    }
}

/// RFC 6455 §4.1, the client's rules for the server's 101: the gateway offers no extension,
/// so any `Sec-WebSocket-Extensions` answer fails the dial (an unoffered `permessage-deflate`
/// would have the upstream inflate frames the gateway judged as plain bytes); a subprotocol
/// must be exactly the one offered, in a single header.
///
/// # Errors
/// The reason, for the log.
pub fn check_answer(headers: &actix_http::header::HeaderMap, offered: Option<&str>) -> Result<(), &'static str> {
    use actix_http::header::{SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL};
    if headers.contains_key(SEC_WEBSOCKET_EXTENSIONS) {
        return Err("upstream answered with an extension that was not offered");
    }
    let mut selected = headers.get_all(SEC_WEBSOCKET_PROTOCOL);
    match (selected.next(), selected.next()) {
        (None, _) => Ok(()),
        (Some(p), None) if Some(p.as_bytes()) == offered.map(str::as_bytes) => Ok(()),
        _ => Err("upstream selected a subprotocol that was not offered"),
    }
}

fn upstream_error_detail(e: &WsClientError) -> String {
    match e {
        WsClientError::InvalidResponseStatus(s) => format!("upstream answered {} instead of 101", s.as_u16()),
        WsClientError::SendRequest(e) => format!("upstream unreachable: {e}"),
        other => format!("upstream handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use actix_http::header::{HeaderMap, HeaderName, HeaderValue};

    use super::*;

    fn answer(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn only_what_was_offered_is_accepted_from_the_upstream() {
        assert_eq!(check_answer(&answer(&[]), None), Ok(()));
        assert_eq!(check_answer(&answer(&[]), Some("chat.v1")), Ok(()));
        assert_eq!(check_answer(&answer(&[("sec-websocket-protocol", "chat.v1")]), Some("chat.v1")), Ok(()));
        for bad in [
            vec![("sec-websocket-extensions", "permessage-deflate")],
            vec![("sec-websocket-extensions", "")],
            vec![("sec-websocket-protocol", "chat.v2")],
            vec![("sec-websocket-protocol", "chat.v1, chat.v2")],
            vec![("sec-websocket-protocol", "chat.v1"), ("sec-websocket-protocol", "chat.v1")],
        ] {
            assert!(check_answer(&answer(&bad), Some("chat.v1")).is_err(), "{bad:?}");
        }
        assert!(check_answer(&answer(&[("sec-websocket-protocol", "chat.v1")]), None).is_err());
    }
}
