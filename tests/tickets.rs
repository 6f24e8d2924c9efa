//! One-time connection tickets through the real binary (docs/protocol.md, "Browser tickets"):
//! `POST /v1/ws-ticket` (token pipeline, CORS, limits, hostile bodies) and the redemption at
//! the handshake (once, bound to route and origin, the session on the token's claims), on a
//! single node. Fleet mode: tests/tickets_fleet.rs.

mod common;

use std::time::Duration;

use common::*;
use futures_util::future::join_all;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::MaybeTlsStream;

/// `/ws` (tickets, header and subprotocol tokens) and `/other` (tickets only), with `[tickets]`
/// holding `tickets`.
fn setup(upstream: &str, tickets: &str) -> Setup {
    Setup::new(upstream)
        .route("token_sources = [\"ticket\", \"header\", \"subprotocol\"]")
        .more_routes(&format!(
            "[[routes]]\npath = \"/other\"\nupstream = \"{upstream}\"\norigins = [\"{ORIGIN}\"]\ntoken_sources = [\"ticket\"]\nsubprotocols = [\"chat.v1\"]\n"
        ))
        .tail(&format!("[tickets]\n{tickets}"))
}

async fn whoami() -> String {
    format!("{}/whoami", echo_upstream().await)
}

/// One HTTP answer: status, head (lowercased) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(|v| v.trim().to_string()))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn ticket(&self) -> String {
        assert_eq!(self.status, 200, "{}{}", self.head, self.body);
        self.json()["ticket"].as_str().expect("a ticket").to_string()
    }
}

/// Send `method /v1/ws-ticket` with `headers` and `body` to `gw`'s public listener.
async fn request(gw: &Gateway, method: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut req = format!("{method} /v1/ws-ticket HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let (status, text) = raw_request(gw.public, &req).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer { status, head: head.to_ascii_lowercase(), body: body.to_string() }
}

/// `POST` as a page on `origin` with `token` as bearer and `body`.
async fn issue(gw: &Gateway, origin: Option<&str>, token: Option<&str>, body: &str) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(o) = origin {
        headers.push(("Origin", o));
    }
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    request(gw, "POST", &headers, body).await
}

/// The body naming `/ws` (two routes accept tickets: the body must name one).
const WS: &str = "{\"route\": \"/ws\"}";

/// A ticket for `/ws` from the allowed origin.
async fn ticket_for(gw: &Gateway, token: &str) -> String {
    issue(gw, Some(ORIGIN), Some(token), WS).await.ticket()
}

/// Open `path?ticket=` as a page on `origin`.
async fn redeem(gw: &Gateway, path: &str, origin: Option<&str>, ticket: &str) -> Result<Ws, WsError> {
    gw.connect_with(&format!("{path}?ticket={ticket}"), origin, None, &[]).await
}

async fn redeem_status(gw: &Gateway, path: &str, origin: Option<&str>, ticket: &str) -> u16 {
    match redeem(gw, path, origin, ticket).await {
        Ok(_) => 101,
        Err(e) => status(&e),
    }
}

/// The body and `WWW-Authenticate` of a refused handshake.
fn refusal_of(err: &WsError) -> (u16, Option<String>, String) {
    match err {
        WsError::Http(resp) => (
            resp.status().as_u16(),
            resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_string),
            resp.body().as_ref().map(|b| String::from_utf8_lossy(b).to_string()).unwrap_or_default(),
        ),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

/// `wsgate_tickets_total{result}` now.
async fn tickets_metric(gw: &Gateway, result: &str) -> u64 {
    let (_, text) = gw.admin_get("/metrics").await;
    let line = format!("wsgate_tickets_total{{result=\"{result}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&line)).and_then(|v| v.trim().parse().ok()).unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issued_ticket_opens_one_session_on_the_tokens_claims() {
    let gw = spawn_gateway(&setup(&whoami().await, ""));
    for result in ["issued", "redeemed", "expired", "replayed", "mismatched", "refused"] {
        assert_eq!(tickets_metric(&gw, result).await, 0, "{result} pre-registered at 0");
    }
    let answer = issue(&gw, Some(ORIGIN), Some(&token()), "{\"route\": \"/ws\"}").await;
    let ticket = answer.ticket();
    assert_eq!(answer.json()["expires_in"], 30);
    assert!(ticket.starts_with("wst_") && ticket.len() == 47, "{ticket}");
    assert_eq!(answer.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(answer.header("access-control-allow-origin").as_deref(), Some(ORIGIN));
    assert_eq!(answer.header("content-type").as_deref(), Some("application/json"));
    assert!(answer.header("access-control-allow-credentials").is_none());

    let mut ws = redeem(&gw, "/ws", Some(ORIGIN), &ticket).await.expect("ticket accepted");
    let seen = recv_json(&mut ws).await;
    assert_eq!(seen["x-wsgate-subject"], "alice");
    assert_eq!(seen["x-wsgate-scopes"], "chat:read chat:write");
    assert_eq!(seen["path"], "/whoami", "the ticket is not forwarded upstream");
    let msg = json!({"type": "chat.send", "payload": {"text": "hi"}, "id": "t-1"});
    send_json(&mut ws, &msg).await;
    assert_eq!(recv_json(&mut ws).await, msg, "the session runs");
    // In-band refresh works on a ticket session (same subject).
    send_json(&mut ws, &json!({"type": "auth.refresh", "payload": {"token": token()}})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "auth.refreshed");

    // The same ticket again: the same 401 as an invalid token.
    let err = redeem(&gw, "/ws", Some(ORIGIN), &ticket).await.unwrap_err();
    let invalid = gw.connect_with("/ws", Some(ORIGIN), Some("not.a.jwt"), &[]).await.unwrap_err();
    let (code, challenge, body) = refusal_of(&err);
    assert_eq!(code, 401);
    assert_eq!((challenge, body), (refusal_of(&invalid).1, refusal_of(&invalid).2), "replay = invalid token");
    assert_eq!(tickets_metric(&gw, "issued").await, 1);
    assert_eq!(tickets_metric(&gw, "redeemed").await, 1);
    assert_eq!(tickets_metric(&gw, "replayed").await, 1);
    let log = gw.log();
    assert!(!log.contains(&ticket) && !log.contains(&ticket[4..]), "the ticket is in the gateway log");
    assert!(log.contains("\"event\":\"ticket_issued\"") && log.contains("\"event\":\"ticket_redeemed\""));
    assert!(log.contains("\"token_source\":\"ticket\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ticket_session_ends_when_the_token_it_was_issued_on_expires() {
    let gw = spawn_gateway(&setup(&whoami().await, "ttl_seconds = 120").auth("expiry_warning_seconds = 2"));
    // The ticket would live 120 s; the token 3 s: the session follows the token.
    let short = claims("alice", "chat:read", 3);
    let ticket = ticket_for(&gw, &sign(&short)).await;
    let mut ws = redeem(&gw, "/ws", Some(ORIGIN), &ticket).await.expect("ticket accepted");
    assert_eq!(recv_json(&mut ws).await["x-wsgate-subject"], "alice");
    let warning = recv_json(&mut ws).await;
    assert_eq!(warning["type"], "auth.expiring", "{warning}");
    assert_eq!(warning["payload"]["exp"], short["exp"]);
    assert_eq!(close_code(&mut ws).await, 4001);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ticket_subprotocol_entry_is_redeemed_and_never_selected() {
    let gw = spawn_gateway(&setup(&whoami().await, ""));
    let ticket = ticket_for(&gw, &token()).await;
    let mut req = gw.url("/ws").into_client_request().expect("req");
    let offer = format!("ticket.{ticket}, chat.v1");
    req.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_str(&offer).expect("hv"));
    req.headers_mut().insert("origin", HeaderValue::from_static(ORIGIN));
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.expect("connect");
    assert_eq!(resp.headers().get("sec-websocket-protocol").map(|v| v.as_bytes()), Some(&b"chat.v1"[..]));
    let seen = recv_json(&mut ws).await;
    assert_eq!(seen["sec-websocket-protocol"], "chat.v1", "the upstream is offered the selected protocol only");
    assert_eq!(seen["x-wsgate-subject"], "alice");
}

#[tokio::test(flavor = "multi_thread")]
async fn of_ten_clients_racing_with_one_ticket_exactly_one_connects() {
    let gw = spawn_gateway(&setup(&echo_upstream().await, "").limits("handshake_burst_per_ip = 100"));
    for _ in 0..3 {
        let ticket = ticket_for(&gw, &token()).await;
        let tries = (0..10).map(|_| redeem(&gw, "/ws", Some(ORIGIN), &ticket));
        let results = join_all(tries).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "exactly one of ten redeems wins");
        for r in &results {
            if let Err(e) = r {
                assert_eq!(status(e), 401);
            }
        }
    }
    assert_eq!(tickets_metric(&gw, "redeemed").await, 3);
    assert_eq!(tickets_metric(&gw, "replayed").await, 27);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_ticket_and_a_ticket_of_an_expired_token_get_401() {
    let gw = spawn_gateway(&setup(&echo_upstream().await, "ttl_seconds = 1"));
    let ticket = ticket_for(&gw, &token()).await;
    assert_eq!(issue(&gw, Some(ORIGIN), Some(&token()), WS).await.json()["expires_in"], 1);
    // A token living 2 s (leeway 0) and a ticket of it.
    let short = sign(&claims("alice", "chat:read", 2));
    let late = ticket_for(&gw, &short).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(redeem_status(&gw, "/ws", Some(ORIGIN), &ticket).await, 401, "past the ticket's ttl");
    assert_eq!(tickets_metric(&gw, "expired").await, 1);
    assert_eq!(redeem_status(&gw, "/ws", Some(ORIGIN), &late).await, 401, "its token expired");

    let gw = spawn_gateway(&setup(&echo_upstream().await, "ttl_seconds = 30"));
    let late = ticket_for(&gw, &sign(&claims("alice", "chat:read", 2))).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(redeem_status(&gw, "/ws", Some(ORIGIN), &late).await, 401, "the token's exp passed, not the ticket's");
    assert_eq!(tickets_metric(&gw, "refused").await, 1);
    assert!(gw.log().contains("ticket_token_expired"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ticket_is_bound_to_its_route_and_origin_and_dies_on_a_mismatch() {
    let gw = spawn_gateway(&setup(&echo_upstream().await, ""));
    // Issued for /ws, presented on /other: refused, and consumed.
    let ticket = issue(&gw, Some(ORIGIN), Some(&token()), "{\"route\": \"/ws\"}").await.ticket();
    assert_eq!(redeem_status(&gw, "/other", Some(ORIGIN), &ticket).await, 401);
    assert_eq!(redeem_status(&gw, "/ws", Some(ORIGIN), &ticket).await, 401, "a mismatch consumes the ticket");
    // Issued on one allowed origin, presented from another allowed one.
    let ticket = issue(&gw, Some(ORIGIN), Some(&token()), "{\"route\": \"/ws\"}").await.ticket();
    assert_eq!(redeem_status(&gw, "/ws", Some("https://chat.example.com"), &ticket).await, 401);
    assert_eq!(tickets_metric(&gw, "mismatched").await, 2);
    // A foreign origin is refused at the origin stage, before the ticket: it survives.
    let ticket = issue(&gw, Some(ORIGIN), Some(&token()), "{\"route\": \"/other\"}").await.ticket();
    assert_eq!(redeem_status(&gw, "/other", Some("https://evil.example"), &ticket).await, 403);
    assert_eq!(redeem_status(&gw, "/other", Some(ORIGIN), &ticket).await, 101);
    // A route that lists no ticket source does not read one.
    let gw2 = spawn_gateway(
        &Setup::new(&echo_upstream().await)
            .more_routes(&format!(
        "[[routes]]\npath = \"/t\"\nupstream = \"{}\"\norigins = [\"{ORIGIN}\"]\ntoken_sources = [\"ticket\"]\n",
        echo_upstream().await
    ))
            .tail("[tickets]\n"),
    );
    let ticket = issue(&gw2, Some(ORIGIN), Some(&token()), "").await.ticket();
    let err = redeem(&gw2, "/ws", Some(ORIGIN), &ticket).await.unwrap_err();
    assert_eq!(status(&err), 401);
    assert_eq!(refusal_of(&err).1.as_deref(), Some("Bearer realm=\"wsgate\""), "missing token, ticket unread");
    assert_eq!(redeem_status(&gw2, "/t", Some(ORIGIN), &ticket).await, 101, "and still good");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ticket_without_origin_needs_a_route_for_clients_without_one() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(&setup(&up, "").more_routes(&format!(
        "[[routes]]\npath = \"/native\"\nupstream = \"{up}\"\nallow_missing_origin = true\ntoken_sources = [\"ticket\"]\n"
    )));
    assert_eq!(issue(&gw, None, Some(&token()), "{\"route\": \"/ws\"}").await.status, 403, "/ws needs an Origin");
    let ticket = issue(&gw, None, Some(&token()), "{\"route\": \"/native\"}").await.ticket();
    let browser = issue(&gw, Some(ORIGIN), Some(&token()), "{\"route\": \"/native\"}").await;
    assert_eq!(browser.status, 403, "/native lists no origin");
    assert_eq!(redeem_status(&gw, "/native", None, &ticket).await, 101);
    let ticket = issue(&gw, None, Some(&token()), "{\"route\": \"/native\"}").await.ticket();
    assert_eq!(redeem_status(&gw, "/native", Some(ORIGIN), &ticket).await, 403, "an origin the route does not list");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_subjects_unredeemed_tickets_die_with_it() {
    let gw = spawn_gateway(&setup(&echo_upstream().await, ""));
    let bob = sign(&claims("bob", "chat:read", 3600));
    let tickets = [ticket_for(&gw, &bob).await, ticket_for(&gw, &bob).await];
    let carol_claims = claims("carol", "chat:read", 3600);
    let carol = ticket_for(&gw, &sign(&carol_claims)).await;
    let (code, _) = gw.admin("POST", "/admin/revoke", Some(&json!({"sub": "bob"}))).await;
    assert_eq!(code, 200);
    let (code, _) = gw.admin("POST", "/admin/revoke", Some(&json!({"jti": carol_claims["jti"]}))).await;
    assert_eq!(code, 200);
    for t in &tickets {
        assert_eq!(redeem_status(&gw, "/ws", Some(ORIGIN), t).await, 401);
    }
    assert_eq!(redeem_status(&gw, "/ws", Some(ORIGIN), &carol).await, 401, "a revoked jti too");
    assert!(gw.log().contains("ticket_token_revoked"));
    // And no new ticket for a revoked token.
    assert_eq!(issue(&gw, Some(ORIGIN), Some(&bob), WS).await.status, 401);
    // A token issued after the revocation works again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = sign(&claims("bob", "chat:read", 3600));
    let ticket = ticket_for(&gw, &fresh).await;
    assert_eq!(redeem_status(&gw, "/ws", Some(ORIGIN), &ticket).await, 101);
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_takes_a_bearer_token_only_and_refuses_like_the_handshake() {
    let gw = spawn_gateway(&setup(&echo_upstream().await, "").route("connect_scope = \"chat:read\""));
    let cookie = format!("access_token={}", token());
    let only_cookie = request(&gw, "POST", &[("Origin", ORIGIN), ("Cookie", &cookie)], WS).await;
    assert_eq!(only_cookie.status, 401, "a cookie is no credential here");
    assert_eq!(only_cookie.header("www-authenticate").as_deref(), Some("bearer realm=\"wsgate\""));
    let expired = issue(&gw, Some(ORIGIN), Some(&sign(&claims("alice", "chat:read", -10))), WS).await;
    assert_eq!(expired.status, 401);
    assert!(expired.header("www-authenticate").is_some_and(|v| v.contains("token expired")));
    let forged = sign_with(&claims("alice", "x", 60), Algorithm::HS256, "wrong");
    assert_eq!(issue(&gw, Some(ORIGIN), Some(&forged), WS).await.status, 401);
    let unsigned = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.", b64.encode(r#"{"alg":"none"}"#), b64.encode(claims("alice", "chat:read", 60).to_string()))
    };
    assert_eq!(issue(&gw, Some(ORIGIN), Some(&unsigned), WS).await.status, 401);
    let no_scope = issue(&gw, Some(ORIGIN), Some(&sign(&claims("alice", "chat:write", 60))), WS).await;
    assert_eq!(no_scope.status, 403, "the route's connect scope");
    assert_eq!(issue(&gw, Some("https://evil.example"), Some(&token()), WS).await.status, 403);
    let bearer = format!("Bearer {}", token());
    let twice = [("Origin", ORIGIN), ("Authorization", bearer.as_str()), ("Authorization", bearer.as_str())];
    assert_eq!(request(&gw, "POST", &twice, WS).await.status, 400);
    assert_eq!(tickets_metric(&gw, "refused").await, 7);
    assert_eq!(tickets_metric(&gw, "issued").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_issue_requests_are_refused_without_a_ticket() {
    let gw = spawn_gateway(&setup(&echo_upstream().await, ""));
    let t = token();
    for (body, want) in [
        ("{\"route\": 5}", 400),
        ("[]", 400),
        ("\"/ws\"", 400),
        ("{\"route\": \"/ws\", \"route\": \"/other\"}", 400),
        ("{\"route\": \"/ws\", \"admin\": true}", 400),
        ("{\"route\": \"/nope\"}", 400),
        ("{\"route\": \"/v1/ws-ticket\"}", 400),
        ("{", 400),
        ("", 400), // two routes accept tickets: one must be named
    ] {
        let a = issue(&gw, Some(ORIGIN), Some(&t), body).await;
        assert_eq!(a.status, want, "{body:?}: {}", a.body);
        assert!(!a.body.contains("wst_"));
    }
    let huge = format!("{{\"route\": \"/ws\", \"x\": \"{}\"}}", "a".repeat(4096));
    assert_eq!(issue(&gw, Some(ORIGIN), Some(&t), &huge).await.status, 413);
    let get = request(&gw, "GET", &[("Origin", ORIGIN)], "").await;
    assert_eq!(get.status, 405);
    assert_eq!(get.header("allow").as_deref(), Some("post, options"));
    let null_route = issue(&gw, Some(ORIGIN), Some(&t), "{\"route\": null}").await;
    assert_eq!(null_route.status, 400, "null is no route: several accept tickets");
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_answers_allowed_origins_only_and_never_a_wildcard() {
    let gw = spawn_gateway(&setup(&echo_upstream().await, ""));
    let preflight = |origin: &'static str| {
        let gw = &gw;
        async move {
            request(
                gw,
                "OPTIONS",
                &[
                    ("Origin", origin),
                    ("Access-Control-Request-Method", "POST"),
                    ("Access-Control-Request-Headers", "authorization, content-type"),
                ],
                "",
            )
            .await
        }
    };
    for origin in [ORIGIN, "https://chat.example.com"] {
        let ok = preflight(origin).await;
        assert_eq!(ok.status, 204, "{origin}");
        assert_eq!(ok.header("access-control-allow-origin").as_deref(), Some(origin));
        assert!(ok.header("access-control-allow-methods").is_some_and(|m| m.contains("post")));
        assert!(ok.header("access-control-allow-headers").is_some_and(|m| m.contains("authorization")));
        assert!(ok.header("access-control-allow-credentials").is_none());
        assert_eq!(ok.header("vary").as_deref(), Some("origin"));
    }
    for origin in ["https://evil.example", "null", "https://example.com"] {
        let no = preflight(origin).await;
        assert_eq!(no.status, 403, "{origin}");
        assert!(no.header("access-control-allow-origin").is_none(), "{origin}: {}", no.head);
        let post = issue(&gw, Some(origin), Some(&token()), "{\"route\": \"/ws\"}").await;
        assert_eq!(post.status, 403);
        assert!(post.header("access-control-allow-origin").is_none());
    }
    let put = request(&gw, "OPTIONS", &[("Origin", ORIGIN), ("Access-Control-Request-Method", "PUT")], "").await;
    assert_eq!(put.status, 403);
    let no_method = request(&gw, "OPTIONS", &[("Origin", ORIGIN)], "").await;
    assert_eq!(no_method.status, 403, "a preflight names its method");
    // A refusal to an allowed origin carries CORS, so the page can read why.
    let refused = issue(&gw, Some(ORIGIN), None, "{\"route\": \"/ws\"}").await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("access-control-allow-origin").as_deref(), Some(ORIGIN));
    assert!(
        refused.header("access-control-expose-headers").is_some_and(|h| h.contains("retry-after")),
        "the page can read Retry-After: {}",
        refused.head
    );
    assert!(!gw.log().contains("\"access-control-allow-origin\":\"*\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn issues_per_subject_are_rate_limited_and_capped() {
    let gw = spawn_gateway(
        &setup(&echo_upstream().await, "issue_per_subject_per_minute = 3\nmax_outstanding_per_subject = 10")
            .limits("handshake_burst_per_ip = 100"),
    );
    for _ in 0..3 {
        ticket_for(&gw, &token()).await;
    }
    let limited = issue(&gw, Some(ORIGIN), Some(&token()), WS).await;
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|s| (1..=20).contains(&s))));
    ticket_for(&gw, &sign(&claims("bob", "chat:read", 600))).await;

    let gw = spawn_gateway(
        &setup(&echo_upstream().await, "issue_per_subject_per_minute = 100\nmax_outstanding_per_subject = 2")
            .limits("handshake_burst_per_ip = 100"),
    );
    let first = ticket_for(&gw, &token()).await;
    ticket_for(&gw, &token()).await;
    let capped = issue(&gw, Some(ORIGIN), Some(&token()), WS).await;
    assert_eq!(capped.status, 429);
    assert_eq!(capped.body.trim(), "too many tickets outstanding");
    assert_eq!(redeem_status(&gw, "/ws", Some(ORIGIN), &first).await, 101);
    ticket_for(&gw, &token()).await;
    assert_eq!(tickets_metric(&gw, "refused").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_tickets_get_the_same_401_or_400_and_cost_no_ticket() {
    let gw = spawn_gateway(&setup(&echo_upstream().await, "").limits("handshake_burst_per_ip = 100"));
    let ticket = ticket_for(&gw, &token()).await;
    let encoded = ticket.replacen('_', "%5F", 1);
    let big = "a".repeat(10 * 1024);
    for bad in ["", "wst_", "wst_short", encoded.as_str(), big.as_str(), "wst_ÿ", "eyJhbGciOiJub25lIn0.e30."] {
        let path = format!("/ws?ticket={}", bad.replace('ÿ', "%C3%BF"));
        let err = gw.connect_with(&path, Some(ORIGIN), None, &[]).await.unwrap_err();
        assert_eq!(status(&err), 401, "{bad:.20}");
    }
    let multiple = [format!("/ws?ticket={ticket}&ticket={ticket}"), format!("/ws?ticket={ticket}&ticket=wst_other")];
    for path in &multiple {
        assert_eq!(status(&gw.connect_with(path, Some(ORIGIN), None, &[]).await.unwrap_err()), 400);
    }
    let both = gw.connect_with(&format!("/ws?ticket={ticket}"), Some(ORIGIN), Some(&token()), &[]).await;
    assert_eq!(status(&both.unwrap_err()), 400, "a ticket beside a bearer token");
    let entry = format!("chat.v1, ticket.{ticket}");
    let path = format!("/ws?ticket={ticket}");
    let both = gw.connect_with(&path, Some(ORIGIN), None, &[("sec-websocket-protocol", &entry)]).await;
    assert_eq!(status(&both.unwrap_err()), 400, "in the query and a subprotocol entry");
    let empty = gw.connect_with("/ws", Some(ORIGIN), None, &[("sec-websocket-protocol", "chat.v1, ticket.")]).await;
    assert_eq!(status(&empty.unwrap_err()), 401);
    let alone = format!("ticket.{ticket}");
    let alone = gw.connect_with("/ws", Some(ORIGIN), None, &[("sec-websocket-protocol", &alone)]).await;
    assert_eq!(status(&alone.unwrap_err()), 400, "a ticket entry alone selects no subprotocol");
    // None of these reached or spent the ticket.
    assert_eq!(redeem_status(&gw, "/ws", Some(ORIGIN), &ticket).await, 101);
    assert_eq!(tickets_metric(&gw, "redeemed").await, 1);
    assert!(!gw.log().contains(&ticket[4..]), "the ticket is in the gateway log");
}

/// A socket bound to source address `src`, connected to `gw`.
async fn redeem_from(gw: &Gateway, src: &str, ticket: &str) -> u16 {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{src}:0").parse().expect("source")).expect("bind source");
    let stream = socket.connect(gw.public).await.expect("tcp connect");
    let mut req = gw.url(&format!("/ws?ticket={ticket}")).into_client_request().expect("request");
    req.headers_mut().insert("origin", HeaderValue::from_static(ORIGIN));
    match tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await {
        Ok(_) => 101,
        Err(e) => status(&e),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ticket_bound_to_the_client_address_redeems_from_that_address_only() {
    let gw = spawn_gateway(&setup(&echo_upstream().await, "bind_client_ip = true"));
    let ticket = ticket_for(&gw, &token()).await; // issued from 127.0.0.1
    assert_eq!(redeem_from(&gw, "127.0.0.2", &ticket).await, 401);
    let ticket = ticket_for(&gw, &token()).await;
    assert_eq!(redeem_from(&gw, "127.0.0.1", &ticket).await, 101);
    assert_eq!(tickets_metric(&gw, "mismatched").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_tickets_section_the_endpoint_is_an_unknown_path() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await));
    let a = issue(&gw, Some(ORIGIN), Some(&token()), "{\"route\": \"/ws\"}").await;
    assert_eq!(a.status, 404);
    assert!(!a.body.contains("wst_"));
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(!metrics.contains("wsgate_tickets_total{"), "no ticket series without [tickets]");
    // A query named ticket is nothing to a route without the source.
    let err = gw.connect_with("/ws?ticket=wst_x", Some(ORIGIN), None, &[]).await.unwrap_err();
    assert_eq!(status(&err), 401);
}
