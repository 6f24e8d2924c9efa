//! Hostile handshakes and tokens against the real binary: claims, time claims, JOSE headers,
//! duplicated tokens and headers, subprotocol offers, cookies without Origin, log bounds,
//! refusals made by the HTTP parser, the drain's Retry-After and upstream 101 answers. Every
//! refusal is an HTTP status before any 101; each test ends with a normal client served.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A valid upgrade request for `/ws` from the allowed origin, plus `extra` header lines.
fn upgrade(extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nOrigin: {ORIGIN}\r\n{extra}\r\n"
    )
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// A token with exactly this header and claims text, HS256 with the test secret.
fn sign_raw(header: &str, claims: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let message = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let sig =
        jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(SECRET.as_bytes()), Algorithm::HS256)
            .expect("sign");
    format!("{message}.{sig}")
}

const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Claims text of a valid token for `alice`, with `extra` members appended.
fn claims_text(extra: &str) -> String {
    let n = now();
    format!(
        r#"{{"sub":"alice","scope":"chat:read chat:write","iat":{n},"exp":{},"iss":"{ISSUER}","aud":"{AUDIENCE}"{extra}}}"#,
        n + 600
    )
}

async fn assert_served(gw: &Gateway) {
    let mut ws = gw.connect().await;
    let msg = json!({"type": "chat.read", "payload": {"probe": true}});
    send_json(&mut ws, &msg).await;
    assert_eq!(recv_json(&mut ws).await, msg, "a normal client is still served");
}

/// Write `request` (ignoring a write cut short by an early answer) and read the answer's
/// head, and its body unless it is a 101; returns the status and the text read.
async fn exchange(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(request.as_bytes()).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
        if out.starts_with(b"HTTP/1.1 101") && out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

/// The head and body of a refusal; panics on a 101.
async fn refused(gw: &Gateway, request: &str) -> (u16, String, String) {
    let (status, text) = exchange(gw.public, request).await;
    assert_ne!(status, 101, "a hostile handshake was upgraded: {request}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

async fn assert_invalid_token(gw: &Gateway, token: &str, what: &str) {
    let (status, head, body) = refused(gw, &upgrade(&bearer(token))).await;
    assert_eq!(status, 401, "{what}: {head}");
    assert!(head.contains("www-authenticate: bearer realm=\"wsgate\", error=\"invalid_token\""), "{what}: {head}");
    assert_eq!(body, "invalid token\n", "{what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn iss_and_aud_missing_null_empty_or_of_another_type_are_invalid_tokens() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await));
    for claim in ["iss", "aud"] {
        let base = claims("alice", "chat:read", 600);
        let mut missing = base.clone();
        missing.as_object_mut().expect("object").remove(claim);
        assert_invalid_token(&gw, &sign(&missing), &format!("{claim} missing")).await;
        for bad in [Value::Null, json!(""), json!(7), json!(true), json!({}), json!([]), json!(["other"])] {
            let mut c = base.clone();
            c[claim] = bad.clone();
            assert_invalid_token(&gw, &sign(&c), &format!("{claim} = {bad}")).await;
        }
    }
    let mut listed = claims("alice", "chat:read", 600);
    listed["aud"] = json!(["other-service", AUDIENCE]);
    gw.connect_with("/ws", Some(ORIGIN), Some(&sign(&listed)), &[]).await.expect("aud as a list naming us");
    assert_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn time_claims_of_any_json_number_are_401_at_the_handshake_and_forbidden_at_refresh() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).auth("max_token_lifetime_seconds = 0"));
    let n = now();
    let mut bad = Vec::new();
    for value in ["1e20", "9223372036854775808", "18446744073709551615", "18446744073709551616", "-1", "-0.5", "1e300"]
    {
        bad.push(format!(r#"{{"sub":"alice","exp":{value},"iss":"{ISSUER}","aud":"{AUDIENCE}"}}"#));
        for name in ["nbf", "iat"] {
            bad.push(format!(
                r#"{{"sub":"alice","exp":{},"{name}":{value},"iss":"{ISSUER}","aud":"{AUDIENCE}"}}"#,
                n + 600
            ));
        }
    }
    bad.push(format!(r#"{{"sub":"alice","exp":"{}","iss":"{ISSUER}","aud":"{AUDIENCE}"}}"#, n + 600));
    bad.push(format!(r#"{{"sub":"alice","exp":1e400,"iss":"{ISSUER}","aud":"{AUDIENCE}"}}"#));
    for claims in &bad {
        assert_invalid_token(&gw, &sign_raw(HS256, claims), claims).await;
    }
    // Fractional dates are dates.
    let fractional = format!(
        r#"{{"sub":"alice","scope":"chat:read","exp":{}.5,"iat":{}.25,"iss":"{ISSUER}","aud":"{AUDIENCE}"}}"#,
        n + 600,
        n - 1
    );
    let mut ws =
        gw.connect_with("/ws", Some(ORIGIN), Some(&sign_raw(HS256, &fractional)), &[]).await.expect("fractional");
    // The same tokens at auth.refresh: forbidden, and the connection stays up.
    for claims in bad.iter().take(3) {
        send_json(&mut ws, &json!({"type": "auth.refresh", "payload": {"token": sign_raw(HS256, claims)}, "id": "r"}))
            .await;
        let text = match recv(&mut ws).await {
            tokio_tungstenite::tungstenite::Message::Text(t) => t.to_string(),
            other => panic!("{other:?}"),
        };
        assert!(text.starts_with(r#"{"type":"error","payload":{"#), "the gateway's frames put type first: {text}");
        let answer: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(answer["payload"]["code"], "forbidden", "{claims}: {answer}");
    }
    let msg = json!({"type": "chat.read", "payload": {}});
    send_json(&mut ws, &msg).await;
    assert_eq!(recv_json(&mut ws).await, msg);
    // The latest representable exp opens a session whose timers work (no overflow).
    let far =
        format!(r#"{{"sub":"alice","scope":"chat:read","exp":253402300799,"iss":"{ISSUER}","aud":"{AUDIENCE}"}}"#);
    let mut far_ws = gw.connect_with("/ws", Some(ORIGIN), Some(&sign_raw(HS256, &far)), &[]).await.expect("far exp");
    send_json(&mut far_ws, &msg).await;
    assert_eq!(recv_json(&mut far_ws).await, msg);
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
    assert_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifetime_bound_required_iat_and_future_iat_are_enforced() {
    let gw = spawn_gateway(
        &Setup::new(&echo_upstream().await).auth("max_token_lifetime_seconds = 3600\nrequire_iat = true"),
    );
    let mut long = claims("alice", "chat:read", 3601);
    assert_invalid_token(&gw, &sign(&long), "exp - iat over the bound").await;
    long["iat"] = json!(now() - 7200);
    long["exp"] = json!(now() + 60);
    assert_invalid_token(&gw, &sign(&long), "old iat, short exp: exp - iat over the bound").await;
    let mut no_iat = claims("alice", "chat:read", 600);
    no_iat.as_object_mut().expect("object").remove("iat");
    assert_invalid_token(&gw, &sign(&no_iat), "iat required").await;
    let mut future = claims("alice", "chat:read", 600);
    future["iat"] = json!(now() + 120);
    assert_invalid_token(&gw, &sign(&future), "iat in the future").await;
    gw.connect_with("/ws", Some(ORIGIN), Some(&sign(&claims("alice", "chat:read", 3600))), &[])
        .await
        .expect("exactly the bound");
    // Without iat, the bound applies to exp - now.
    let gw2 = spawn_gateway(&Setup::new(&echo_upstream().await).auth("max_token_lifetime_seconds = 600"));
    let mut no_iat = claims("alice", "chat:read", 601 + 5);
    no_iat.as_object_mut().expect("object").remove("iat");
    assert_invalid_token(&gw2, &sign(&no_iat), "exp - now over the bound").await;
    assert_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crit_headers_and_duplicate_members_are_invalid_tokens() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await));
    let headers = [
        r#"{"alg":"HS256","crit":["exp"],"exp":1}"#,
        r#"{"alg":"HS256","crit":[]}"#,
        r#"{"alg":"HS256","\u0063rit":["x"]}"#,
        r#"{"alg":"HS256","alg":"HS256"}"#,
        r#"{"alg":"HS256","\u0061lg":"none"}"#,
        r#"{"alg":"HS256","kid":"a","kid":"b"}"#,
    ];
    for header in headers {
        assert_invalid_token(&gw, &sign_raw(header, &claims_text("")), header).await;
    }
    for extra in [
        r#","scope":"chat:read""#,
        r#","\u0073cope":"admin""#,
        r#","sub":"mallory""#,
        r#","\u0073ub":"mallory""#,
        r#","exp":1"#,
        r#","nested":{"a":1,"\u0061":2}"#,
    ] {
        assert_invalid_token(&gw, &sign_raw(HS256, &claims_text(extra)), extra).await;
    }
    assert_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn more_than_one_token_is_refused_never_first_one_wins() {
    let gw = spawn_gateway(
        &Setup::new(&echo_upstream().await).route("token_sources = [\"header\", \"subprotocol\", \"query\"]"),
    );
    let good = token();
    let forged = sign_with(&claims("mallory", "chat:read", 600), Algorithm::HS256, "another-secret-another-secret-xyz");
    let cases = [
        format!("{}Sec-WebSocket-Protocol: chat.v1, bearer.{forged}\r\n", bearer(&good)),
        format!("Sec-WebSocket-Protocol: chat.v1, bearer.{good}, bearer.{forged}\r\n"),
        format!("Sec-WebSocket-Protocol: bearer.{good}\r\nSec-WebSocket-Protocol: chat.v1, bearer.{good}\r\n"),
    ];
    for extra in &cases {
        let (status, _, body) = refused(&gw, &upgrade(extra)).await;
        assert_eq!(status, 400, "{extra}");
        assert_eq!(body, "more than one token in the request\n");
    }
    let query = format!(
        "GET /ws?access_token={good}&access_token={forged} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nOrigin: {ORIGIN}\r\n\r\n"
    );
    assert_eq!(refused(&gw, &query).await.0, 400, "two query tokens");
    let query_and_header = query
        .replace(&format!("&access_token={forged}"), "")
        .replace("\r\n\r\n", &format!("\r\n{}\r\n", bearer(&good)));
    assert_eq!(refused(&gw, &query_and_header).await.0, 400, "query and header");
    // Two Authorization headers: a repeated single header (400) before any token is read.
    let (status, _, body) = refused(&gw, &upgrade(&format!("{}{}", bearer(&good), bearer(&forged)))).await;
    assert_eq!(status, 400);
    assert!(body.contains("Authorization header appears more than once"), "{body}");
    // Not a source of the route: an Authorization header is ignored by a subprotocol-only route.
    let gw2 = spawn_gateway(&Setup::new(&echo_upstream().await).route("token_sources = [\"subprotocol\"]"));
    let (status, _) = exchange(
        gw2.public,
        &upgrade(&format!("{}Sec-WebSocket-Protocol: chat.v1, bearer.{good}\r\n", bearer(&forged))),
    )
    .await;
    assert_eq!(status, 101, "only the route's sources are read");
    assert_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_and_oversized_tokens_are_answered_like_invalid_ones() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await));
    let mut c = claims("bob", "chat:read", 600);
    c["jti"] = json!("stolen-1");
    let revoked = sign(&c);
    assert_eq!(gw.admin("POST", "/admin/revoke", Some(&json!({"jti": "stolen-1"}))).await.0, 200);
    let forged = sign_with(&claims("bob", "chat:read", 600), Algorithm::HS256, "another-secret-another-secret-xyz");
    let (rs, rh, rb) = refused(&gw, &upgrade(&bearer(&revoked))).await;
    let (fs, fh, fb) = refused(&gw, &upgrade(&bearer(&forged))).await;
    assert_eq!((rs, &rb), (fs, &fb), "same status and body");
    let www = |h: &str| h.lines().find(|l| l.starts_with("www-authenticate")).map(str::to_string);
    assert_eq!(www(&rh), www(&fh), "same WWW-Authenticate");
    assert!(www(&rh).is_some_and(|v| v.contains("invalid_token")));
    let big = "a".repeat(8 * 1024 + 1);
    assert_invalid_token(&gw, &big, "oversized").await;
    let (status, head, body) = refused(&gw, &upgrade("")).await;
    assert_eq!((status, body.as_str()), (401, "missing token\n"), "{head}");
    assert_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_that_must_appear_once_and_connection_close_are_400() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await));
    let t = bearer(&token());
    for (name, line) in [
        ("Origin", "Origin: https://evil.example.net\r\n".to_string()),
        ("Origin", format!("Origin: {ORIGIN}\r\n")),
        ("Sec-WebSocket-Key", format!("Sec-WebSocket-Key: {KEY}\r\n")),
        ("Sec-WebSocket-Version", "Sec-WebSocket-Version: 13\r\n".into()),
        ("Upgrade", "Upgrade: websocket\r\n".into()),
    ] {
        let (status, _, body) = refused(&gw, &upgrade(&format!("{t}{line}"))).await;
        assert_eq!(status, 400, "{name}");
        assert!(body.contains(&format!("the {name} header appears more than once")), "{body}");
    }
    // Evil first, allowed second and the reverse: both 400, never 101 or 403.
    let evil_first = upgrade(&t)
        .replace(&format!("Origin: {ORIGIN}\r\n"), &format!("Origin: https://evil.test\r\nOrigin: {ORIGIN}\r\n"));
    assert_eq!(refused(&gw, &evil_first).await.0, 400);
    for connection in ["close, Upgrade", "Upgrade, close", "keep-alive"] {
        let req = upgrade(&t).replace("Connection: Upgrade\r\n", &format!("Connection: {connection}\r\n"));
        assert_eq!(refused(&gw, &req).await.0, 400, "{connection}");
    }
    let two_lines = upgrade(&format!("{t}Connection: close\r\n"));
    assert_eq!(refused(&gw, &two_lines).await.0, 400);
    assert_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offer_without_a_selectable_subprotocol_is_400_naming_what_the_route_accepts() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await));
    let t = token();
    for offer in [format!("bearer.{t}"), format!("bearer.{t}, mqtt"), "mqtt, chat.v2".into()] {
        let extra = if offer.contains("bearer.") { String::new() } else { bearer(&t) };
        let (status, _, body) = refused(&gw, &upgrade(&format!("{extra}Sec-WebSocket-Protocol: {offer}\r\n"))).await;
        assert_eq!(status, 400, "{offer}");
        assert!(body.contains("accepts chat.v1"), "{body}");
    }
    let (status, text) =
        exchange(gw.public, &upgrade(&format!("Sec-WebSocket-Protocol: bearer.{t}, chat.v1\r\n"))).await;
    assert_eq!(status, 101);
    assert!(text.to_ascii_lowercase().contains("sec-websocket-protocol: chat.v1\r\n"), "{text}");
    // A route listing none: any offer is refused, and the body says so.
    let upstream = echo_upstream().await;
    let gw2 = spawn_gateway(&Setup::new(&upstream).more_routes(&format!(
        "[[routes]]\npath = \"/none\"\nupstream = \"{upstream}\"\norigins = [\"{ORIGIN}\"]\nunknown_types = \"forward\""
    )));
    let req = upgrade(&format!("Sec-WebSocket-Protocol: bearer.{t}\r\n")).replace("GET /ws ", "GET /none ");
    let (status, _, body) = refused(&gw2, &req).await;
    assert_eq!(status, 400);
    assert!(body.contains("selects none"), "{body}");
    assert_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cookie_without_origin_and_an_unreadable_origin_are_refused() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).route("allow_missing_origin = true"));
    let t = bearer(&token());
    let no_origin = upgrade(&t).replace(&format!("Origin: {ORIGIN}\r\n"), "");
    assert_eq!(exchange(gw.public, &no_origin).await.0, 101, "a non-browser client without Origin");
    let with_cookie = no_origin.replace("\r\n\r\n", "\r\nCookie: session=1\r\n\r\n");
    assert_eq!(refused(&gw, &with_cookie).await.0, 403, "cookie without origin");
    // An Origin that is not visible ASCII is not "missing".
    let mut s = tokio::net::TcpStream::connect(gw.public).await.expect("connect");
    let raw = no_origin.replace("\r\n\r\n", "\r\nOrigin: https://\u{e9}vil.test\r\n\r\n");
    s.write_all(raw.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(out.starts_with(b"HTTP/1.1 403"), "{}", String::from_utf8_lossy(&out));
    assert_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_strings_reach_the_log_bounded_and_escaped() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await));
    let long_origin = format!("https://{}.test", "a".repeat(10 * 1024));
    let req = upgrade(&bearer(&token())).replace(
        &format!("Origin: {ORIGIN}\r\n"),
        &format!("Origin: {long_origin}\r\nUser-Agent: {}\r\n", "u".repeat(5000)),
    );
    assert_eq!(refused(&gw, &req).await.0, 403);
    let path = format!("/{}", "p".repeat(4000));
    let req = upgrade("").replace("GET /ws ", &format!("GET {path} "));
    assert_eq!(refused(&gw, &req).await.0, 404);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = gw.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("handshake_refused")).collect();
    assert_eq!(lines.len(), 2, "{log}");
    for line in lines {
        assert!(line.len() < 2048, "a refused handshake made a {} byte log line", line.len());
        assert!(line.contains("bytes)"), "a cut value says how long it was: {line}");
    }
    assert_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_the_http_parser_refuses_are_counted_and_logged() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await));
    let base = upgrade(&bearer(&token()));
    let cases = [
        ("bad_request", base.replace("Host: gw\r\n", "")),
        ("bad_request", base.replace("Host: gw\r\n", "Host: a\r\nHost: b\r\n")),
        ("bad_request", base.replace("Host: gw\r\n", "Host: gw\r\nX-Bad: a\u{1}b\r\n")),
        ("header_too_large", base.replace("Host: gw\r\n", &format!("Host: gw\r\nX-Big: {}\r\n", "a".repeat(200_000)))),
        ("bad_request", format!("GET /{} HTTP/1.1\r\nHost: gw\r\n\r\n", "a".repeat(100_000))),
        ("bad_request", "NOT HTTP AT ALL\r\n\r\n".to_string()),
    ];
    for (_, req) in &cases {
        let (status, _) = exchange(gw.public, req).await;
        assert!((400..500).contains(&status), "{status}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(metrics.contains(r#"wsgate_handshakes_total{route="none",result="bad_request"} 5"#), "{metrics}");
    assert!(metrics.contains(r#"wsgate_handshakes_total{route="none",result="header_too_large"} 1"#), "{metrics}");
    let log = gw.log();
    let refused_by_parser =
        log.lines().filter(|l| l.contains("handshake_refused") && l.contains("HTTP parser")).count();
    assert_eq!(refused_by_parser, 6, "{log}");
    assert_served(&gw).await;
    // A served request is not counted twice.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(metrics.contains(r#"wsgate_handshakes_total{route="none",result="bad_request"} 5"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_never_completes_is_counted_as_request_timeout() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).timeouts("handshake_seconds = 1"));
    let (status, _) = exchange(gw.public, "GET /ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n").await;
    assert_eq!(status, 408);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(metrics.contains(r#"wsgate_handshakes_total{route="none",result="request_timeout"} 1"#), "{metrics}");
    assert!(gw.log().lines().any(|l| l.contains("handshake_refused") && l.contains("request_timeout")));
    assert_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drain_503_carries_retry_after() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).timeouts("drain_seconds = 5"));
    let _held = gw.connect().await;
    assert_eq!(gw.admin("POST", "/admin/drain", None).await.0, 202);
    let (status, head, _) = refused(&gw, &upgrade(&bearer(&token()))).await;
    assert_eq!(status, 503);
    assert!(head.contains("\r\nretry-after: 5"), "{head}");
    let (status, text) = exchange(gw.public, "GET /ws HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 503);
    assert!(text.to_ascii_lowercase().contains("\r\nretry-after: 5"), "{text}");
}

/// An upstream that answers every upgrade with a 101 carrying `extra` header lines, and
/// reports how many bytes it received after its 101.
async fn answering_upstream(extra: &'static str) -> (String, tokio::sync::mpsc::UnboundedReceiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&got).to_string();
                let key = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().starts_with("sec-websocket-key:").then(|| l[18..].trim().to_string())
                    })
                    .unwrap_or_default();
                let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
                let resp = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra}\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
                let mut after = 0;
                while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                    after += n;
                }
                let _ = tx.send(after);
            });
        }
    });
    (format!("ws://{addr}"), rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_101_naming_what_was_not_offered_is_502_and_nothing_is_forwarded() {
    for extra in [
        "Sec-WebSocket-Extensions: permessage-deflate\r\n",
        "Sec-WebSocket-Extensions: x-unknown\r\n",
        "Sec-WebSocket-Protocol: chat.v2\r\n",
        "Sec-WebSocket-Protocol: chat.v1\r\nSec-WebSocket-Protocol: chat.v1\r\n",
    ] {
        let (upstream, mut received) = answering_upstream(extra).await;
        let gw = spawn_gateway(&Setup::new(&upstream));
        let t = token();
        let (status, _, _) = refused(&gw, &upgrade(&format!("Sec-WebSocket-Protocol: chat.v1, bearer.{t}\r\n"))).await;
        assert_eq!(status, 502, "{extra}");
        let after = tokio::time::timeout(Duration::from_secs(10), received.recv()).await.expect("upstream report");
        assert_eq!(after, Some(0), "{extra}: client bytes reached the upstream");
    }
    // The same upstream answering only what was offered is fine.
    let (upstream, _) = answering_upstream("Sec-WebSocket-Protocol: chat.v1\r\n").await;
    let gw = spawn_gateway(&Setup::new(&upstream));
    let (status, _) =
        exchange(gw.public, &upgrade(&format!("Sec-WebSocket-Protocol: chat.v1, bearer.{}\r\n", token()))).await;
    assert_eq!(status, 101);
}
