//! What a refused request is answered and how it is logged: [`Refused`] (why, a detail for
//! the log, `Retry-After`, a body), [`Attempt`] (what the log and the handshake metric need to
//! know about a request), and the answer on the wire ([`refusal_bytes`] for an upgrade's raw
//! socket, [`refusal_response`] for a plain request).
//!
//! Owns: the refusal's HTTP form (status, `WWW-Authenticate`, `Retry-After`, fixed body) and
//! its log line. Does not own: the decision (`handshake.rs`, `redeem.rs`, `ticket.rs`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use actix_http::header::{self, HeaderMap};
use actix_http::{HttpMessage, Request, Response};

use crate::error::HandshakeRefusal;
use crate::log_text::log_text;
use crate::metrics::{self as m, NO_ROUTE};
use crate::store::admission::Refusal;

/// A refusal on its way to the client: why, a detail for the log, `Retry-After`, and a body
/// that tells the client more than the fixed text when that helps it (which subprotocols
/// the route accepts, which header is repeated). Bodies never carry a client's input.
pub(crate) struct Refused {
    pub(crate) denied: HandshakeRefusal,
    pub(crate) detail: String,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Option<String>,
}

impl Refused {
    pub(crate) fn new(denied: HandshakeRefusal, detail: impl Into<String>) -> Self {
        Self { denied, detail: detail.into(), retry_after: None, body: None }
    }

    pub(crate) fn with_body(mut self, body: String) -> Self {
        self.body = Some(body);
        self
    }
}

impl From<Refusal> for Refused {
    fn from(r: Refusal) -> Self {
        Self { denied: r.denied, detail: String::new(), retry_after: r.retry_after, body: None }
    }
}

/// What the log and metrics need to know about a handshake.
pub(crate) struct Attempt<'a> {
    pub(crate) started: Instant,
    pub(crate) ip: IpAddr,
    pub(crate) route_path: Option<&'a str>,
    pub(crate) path: &'a str,
    /// The `Origin` as the policy reads it: `None` when absent or not visible ASCII (see
    /// `origin_raw`).
    pub(crate) origin: Option<&'a str>,
    /// The raw `Origin` and `User-Agent` values, for logs (escaped and bounded there).
    pub(crate) origin_raw: Option<&'a [u8]>,
    pub(crate) user_agent_raw: Option<&'a [u8]>,
    /// Token subject and id, once the token verified.
    pub(crate) subject: Option<String>,
    pub(crate) jti: Option<String>,
}

impl<'a> Attempt<'a> {
    pub(crate) fn new(req: &'a Request, ip: IpAddr, route_path: Option<&'a str>) -> Self {
        let headers = req.headers();
        Self {
            started: Instant::now(),
            ip,
            route_path,
            path: req.path(),
            origin: header_str(headers, header::ORIGIN),
            origin_raw: headers.get(header::ORIGIN).map(|v| v.as_bytes()),
            user_agent_raw: headers.get(header::USER_AGENT).map(|v| v.as_bytes()),
            subject: None,
            jti: None,
        }
    }

    pub(crate) fn route_label(&self) -> &str {
        self.route_path.unwrap_or(NO_ROUTE)
    }

    /// Count and log a refusal.
    pub(crate) fn log_refusal(&self, r: &Refused) {
        m::handshake(self.route_label(), r.denied.reason(), self.started.elapsed());
        tracing::warn!(
            event = "handshake_refused",
            reason = r.denied.reason(),
            status = r.denied.status().as_u16(),
            detail = r.detail.as_str(),
            route = self.route_label(),
            path = &*log_text(self.path.as_bytes()),
            client_ip = %self.ip,
            origin = &*self.origin_log(),
            user_agent = &*self.user_agent_log(),
            subject = &*log_text(self.subject.as_deref().unwrap_or("").as_bytes()),
            jti = &*log_text(self.jti.as_deref().unwrap_or("").as_bytes()),
        );
    }

    pub(crate) fn origin_log(&self) -> std::borrow::Cow<'a, str> {
        log_text(self.origin_raw.unwrap_or_default())
    }

    pub(crate) fn user_agent_log(&self) -> std::borrow::Cow<'a, str> {
        log_text(self.user_agent_raw.unwrap_or_default())
    }
}

/// The headers a refusal carries besides content type, length and `Connection: close`.
pub(crate) fn refusal_headers(denied: HandshakeRefusal, retry_after: Option<Duration>) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    let auth = match denied {
        HandshakeRefusal::UnsupportedVersion => {
            headers.push(("sec-websocket-version", "13".to_string()));
            None
        }
        HandshakeRefusal::MissingToken => Some("Bearer realm=\"wsgate\""),
        // A revoked token is refused exactly like any invalid one.
        HandshakeRefusal::InvalidToken | HandshakeRefusal::Revoked => {
            Some("Bearer realm=\"wsgate\", error=\"invalid_token\"")
        }
        HandshakeRefusal::ExpiredToken => {
            Some("Bearer realm=\"wsgate\", error=\"invalid_token\", error_description=\"token expired\"")
        }
        HandshakeRefusal::ConnectScope => Some("Bearer realm=\"wsgate\", error=\"insufficient_scope\""),
        _ => None,
    };
    if let Some(value) = auth {
        headers.push(("www-authenticate", value.to_string()));
    }
    if let Some(wait) = retry_after {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        headers.push(("retry-after", secs.to_string()));
    }
    headers
}

/// A refusal as an HTTP/1.1 response on the wire. A refused client gets no keep-alive: its
/// next attempt pays the admission checks again and a refused connection holds nothing here.
pub(crate) fn refusal_bytes(denied: HandshakeRefusal, retry_after: Option<Duration>, body: Option<&str>) -> Vec<u8> {
    let status = denied.status();
    let body = format!("{}\n", body.unwrap_or(denied.client_text()));
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    for (name, value) in refusal_headers(denied, retry_after) {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// A refusal as an actix-http response (for requests that are not upgrades).
pub(crate) fn refusal_response(
    denied: HandshakeRefusal,
    retry_after: Option<Duration>,
    body: Option<&str>,
) -> Response<String> {
    let mut resp = Response::with_body(denied.status(), format!("{}\n", body.unwrap_or(denied.client_text())));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    for (name, value) in refusal_headers(denied, retry_after) {
        if let Ok(value) = header::HeaderValue::from_str(&value) {
            headers.insert(header::HeaderName::from_static(name), value);
        }
    }
    resp.head_mut().set_connection_type(actix_http::ConnectionType::Close);
    resp
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_token_is_answered_like_an_invalid_one() {
        assert_eq!(
            refusal_bytes(HandshakeRefusal::Revoked, None, None),
            refusal_bytes(HandshakeRefusal::InvalidToken, None, None)
        );
    }

    #[test]
    fn refusals_on_the_wire_are_complete_responses() {
        let bytes = refusal_bytes(HandshakeRefusal::HandshakeRate, Some(Duration::from_millis(1500)), None);
        let text = String::from_utf8(bytes).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{head}");
        assert!(head.contains("\r\nretry-after: 2"), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())), "{head}");
        let text = String::from_utf8(refusal_bytes(HandshakeRefusal::InvalidToken, None, None)).expect("ascii");
        assert!(text.contains("www-authenticate: Bearer realm=\"wsgate\", error=\"invalid_token\"\r\n"), "{text}");
    }
}
