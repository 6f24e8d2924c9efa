//! The handshake policy of docs/protocol.md, row by row, through the real binary: each refusal
//! with its status (and headers), and the happy path with identity headers and subprotocols.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

async fn gateway(setup: Setup) -> Gateway {
    spawn_gateway(&setup)
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_client_is_proxied_with_identity_headers_and_spoofed_ones_stripped() {
    let gw = gateway(Setup::new(&format!("{}/whoami", echo_upstream().await))).await;
    let mut ws = gw
        .connect_with(
            "/ws",
            Some(ORIGIN),
            Some(&token()),
            &[("x-wsgate-subject", "admin"), ("x-wsgate-scopes", "root")],
        )
        .await
        .expect("connect");
    let seen = recv_json(&mut ws).await;
    assert_eq!(seen["x-wsgate-subject"], "alice");
    assert_eq!(seen["x-wsgate-scopes"], "chat:read chat:write");
    assert_eq!(seen["x-wsgate-client-ip"], "127.0.0.1");
    let msg = serde_json::json!({"type": "chat.send", "payload": {"text": "hi"}, "id": "1"});
    send_json(&mut ws, &msg).await;
    assert_eq!(recv_json(&mut ws).await, msg, "echoed through the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_subprotocol_carries_the_token_and_is_never_echoed() {
    let gw = gateway(Setup::new(&format!("{}/whoami", echo_upstream().await))).await;
    let mut req = gw.url("/ws").into_client_request().expect("req");
    let offer = format!("bearer.{}, chat.v1", token());
    req.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_str(&offer).expect("hv"));
    req.headers_mut().insert("origin", HeaderValue::from_static(ORIGIN));
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.expect("connect");
    assert_eq!(resp.headers().get("sec-websocket-protocol").map(|v| v.as_bytes()), Some(&b"chat.v1"[..]));
    let seen = recv_json(&mut ws).await;
    assert_eq!(seen["sec-websocket-protocol"], "chat.v1", "upstream asked for the selected protocol only");
    assert_eq!(seen["x-wsgate-subject"], "alice");
}

#[tokio::test(flavor = "multi_thread")]
async fn global_cap_answers_503_with_retry_after() {
    let gw = gateway(Setup::new(&echo_upstream().await).limits("max_connections = 1")).await;
    let _first = gw.connect().await;
    let err = gw.connect_with("/ws", Some(ORIGIN), Some(&token()), &[]).await.unwrap_err();
    assert_eq!(status(&err), 503);
    assert!(refusal_header(&err, "retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn handshake_flood_from_one_ip_gets_429_while_another_ip_connects() {
    let gw = gateway(
        Setup::new(&echo_upstream().await).limits("handshakes_per_second_per_ip = 1\nhandshake_burst_per_ip = 3"),
    )
    .await;
    let mut refused = 0;
    for _ in 0..20 {
        if let Err(e) = gw.connect_with("/ws", Some(ORIGIN), Some(&token()), &[]).await {
            assert_eq!(status(&e), 429);
            assert!(refusal_header(&e, "retry-after").is_some());
            refused += 1;
        }
    }
    // Burst 3 + 1/s: even a slow machine admits only a handful of the 20 attempts.
    assert!(refused >= 10, "only {refused} of 20 refused");
    // Another source address on the loopback network is not affected.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.2:0".parse().expect("addr")).expect("bind 127.0.0.2");
    let stream = sock.connect(gw.public).await.expect("connect");
    let mut req = gw.url("/ws").into_client_request().expect("req");
    req.headers_mut().insert("origin", HeaderValue::from_static(ORIGIN));
    req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {}", token())).expect("hv"));
    tokio_tungstenite::client_async(req, stream).await.expect("other IP admitted");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_upgrades_get_400_and_other_versions_426() {
    let gw = gateway(Setup::new(&echo_upstream().await)).await;
    let auth = format!("Authorization: Bearer {}\r\nOrigin: {ORIGIN}\r\n", token());
    let base = "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let cases = [
        (format!("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: notwebsocket\r\n{base}Sec-WebSocket-Version: 13\r\n{auth}\r\n"), 400),
        (format!("GET /ws HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\n{base}Sec-WebSocket-Version: 13\r\n{auth}\r\n"), 400),
        (format!("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n{base}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"), 400),
        (format!("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n{base}Sec-WebSocket-Version: 13\r\nContent-Length: 4\r\n{auth}\r\nbody"), 400),
        (format!("GET /ws HTTP/1.1\r\nHost: x\r\n{auth}\r\n"), 400),
        (format!("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n{base}Sec-WebSocket-Version: 8\r\n{auth}\r\n"), 426),
    ];
    for (req, want) in cases {
        let (got, text) = raw_request(gw.public, &req).await;
        assert_eq!(got, want, "request:\n{req}\nanswer:\n{text}");
        if want == 426 {
            assert!(text.to_ascii_lowercase().contains("sec-websocket-version: 13"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_path_is_404() {
    let gw = gateway(Setup::new(&echo_upstream().await)).await;
    let err = gw.connect_with("/nope", Some(ORIGIN), Some(&token()), &[]).await.unwrap_err();
    assert_eq!(status(&err), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_allowlist_refuses_foreign_and_missing_origins_with_403() {
    let gw = gateway(Setup::new(&echo_upstream().await)).await;
    for origin in [Some("https://evil.example"), Some("https://example.com.evil.net"), None] {
        let err = gw.connect_with("/ws", origin, Some(&token()), &[]).await.unwrap_err();
        assert_eq!(status(&err), 403, "origin {origin:?}");
    }
    gw.connect_with("/ws", Some("https://chat.example.com"), Some(&token()), &[])
        .await
        .expect("wildcard origin admitted");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_get_401_with_www_authenticate() {
    let gw = gateway(Setup::new(&echo_upstream().await)).await;
    let expired = sign(&claims("alice", "chat:read", -10));
    let forged =
        sign_with(&claims("alice", "chat:read", 60), Algorithm::HS256, "another-secret-0123456789-abcdefghijk");
    let hs512 = sign_with(&claims("alice", "chat:read", 60), Algorithm::HS512, SECRET);
    let mut wrong_aud = claims("alice", "chat:read", 60);
    wrong_aud["aud"] = "other".into();
    let mut wrong_iss = claims("alice", "chat:read", 60);
    wrong_iss["iss"] = "https://evil/".into();
    let mut future = claims("alice", "chat:read", 600);
    future["nbf"] = (now() + 300).into();
    let mut no_sub = claims("alice", "chat:read", 60);
    no_sub.as_object_mut().expect("obj").remove("sub");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims("alice", "chat:read", 60).to_string())
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("garbage", Some("not.a.jwt".into())),
        ("expired", Some(expired)),
        ("forged", Some(forged)),
        ("alg not allowed", Some(hs512)),
        ("alg none", Some(none)),
        ("wrong aud", Some(sign(&wrong_aud))),
        ("wrong iss", Some(sign(&wrong_iss))),
        ("nbf in future", Some(sign(&future))),
        ("no sub", Some(sign(&no_sub))),
    ];
    for (name, tok) in cases {
        let err = gw.connect_with("/ws", Some(ORIGIN), tok.as_deref(), &[]).await.unwrap_err();
        assert_eq!(status(&err), 401, "{name}");
        let www = refusal_header(&err, "www-authenticate").unwrap_or_default();
        assert!(www.starts_with("Bearer"), "{name}: {www}");
        if name != "missing" {
            assert!(www.contains("invalid_token"), "{name}: {www}");
        }
    }
    // A query token is not read unless the route enables the query source.
    let err = gw.connect_with(&format!("/ws?access_token={}", token()), Some(ORIGIN), None, &[]).await.unwrap_err();
    assert_eq!(status(&err), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn query_and_cookie_sources_work_where_enabled_and_tokens_never_reach_the_log() {
    let up = echo_upstream().await;
    let gw = gateway(Setup::new(&up).more_routes(&format!(
        "[[routes]]\npath = \"/q\"\nupstream = \"{up}\"\norigins = [\"{ORIGIN}\"]\ntoken_sources = [\"query\"]\nunknown_types = \"forward\"\n\
         [[routes]]\npath = \"/c\"\nupstream = \"{up}\"\norigins = [\"{ORIGIN}\"]\ntoken_sources = [\"cookie\"]\nunknown_types = \"forward\"\n"
    )))
    .await;
    let tok = token();
    gw.connect_with(&format!("/q?room=1&access_token={tok}"), Some(ORIGIN), None, &[]).await.expect("query token");
    let cookie = format!("theme=dark; access_token={tok}");
    gw.connect_with("/c", Some(ORIGIN), None, &[("cookie", cookie.as_str())]).await.expect("cookie token");
    // A refused one too (bad signature part), so refusal logging is covered.
    let bad = format!("{tok}x");
    let _ = gw.connect_with(&format!("/q?access_token={bad}"), Some(ORIGIN), None, &[]).await.unwrap_err();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = gw.log();
    assert!(log.contains("connection_opened") && log.contains("handshake_refused"), "log: {log}");
    let signature = tok.rsplit('.').next().expect("sig");
    assert!(!log.contains(signature), "a token appeared in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_scope_is_required_with_403() {
    let gw = gateway(Setup::new(&echo_upstream().await).route("connect_scope = \"ws:connect\"")).await;
    let err = gw.connect_with("/ws", Some(ORIGIN), Some(&token()), &[]).await.unwrap_err();
    assert_eq!(status(&err), 403);
    let ok = sign(&claims("alice", "ws:connect chat:read", 60));
    gw.connect_with("/ws", Some(ORIGIN), Some(&ok), &[]).await.expect("with connect scope");
}

#[tokio::test(flavor = "multi_thread")]
async fn per_ip_and_per_subject_caps_answer_429_and_free_on_close() {
    let gw = gateway(
        Setup::new(&echo_upstream().await).limits("max_connections_per_ip = 3\nmax_connections_per_subject = 2"),
    )
    .await;
    let bob = sign(&claims("bob", "chat:read", 600));
    let mut a = gw.connect_with("/ws", Some(ORIGIN), Some(&bob), &[]).await.expect("1");
    let _b = gw.connect_with("/ws", Some(ORIGIN), Some(&bob), &[]).await.expect("2");
    let err = gw.connect_with("/ws", Some(ORIGIN), Some(&bob), &[]).await.unwrap_err();
    assert_eq!(status(&err), 429, "per-subject cap");
    let _c = gw.connect().await;
    let err = gw.connect_with("/ws", Some(ORIGIN), Some(&token()), &[]).await.unwrap_err();
    assert_eq!(status(&err), 429, "per-IP cap");
    a.close(None).await.expect("close");
    let _ = close_code(&mut a).await;
    // The slot comes back once the registry has processed the release.
    let mut admitted = false;
    for _ in 0..50 {
        if gw.connect_with("/ws", Some(ORIGIN), Some(&bob), &[]).await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(admitted, "slot was not released");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_refusing_or_silent_gets_502_or_504_never_101() {
    let dead = dead_upstream().await;
    let refusing = refusing_upstream(403).await;
    let silent = blackhole_upstream().await;
    let gw = gateway(
        Setup::new(&dead)
            .timeouts("upstream_connect_seconds = 1")
            .more_routes(&format!("[[routes]]\npath = \"/r\"\nupstream = \"{refusing}\"\norigins = [\"{ORIGIN}\"]\n[[routes]]\npath = \"/s\"\nupstream = \"{silent}\"\norigins = [\"{ORIGIN}\"]\n")),
    )
    .await;
    for (path, want) in [("/ws", 502), ("/r", 502), ("/s", 504)] {
        let err = gw.connect_with(path, Some(ORIGIN), Some(&token()), &[]).await.unwrap_err();
        assert_eq!(status(&err), want, "{path}");
    }
    let (code, metrics) = gw.admin_get("/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains(r#"wsgate_handshakes_total{route="/s",result="upstream_timeout"} 1"#), "{metrics}");
}

/// Behind a load balancer: X-Forwarded-For names the client only when the TCP peer is a
/// trusted proxy (rightmost untrusted entry); from any other peer it is ignored, so a client
/// cannot choose the address its limits and logs are charged to.
#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_is_read_only_from_trusted_proxies() {
    use futures_util::StreamExt;

    let upstream = format!("{}/whoami", echo_upstream().await);
    let gw = gateway(Setup::new(&upstream).server(r#"trusted_proxies = ["127.0.0.1/32"]"#)).await;
    let forwarded = [("x-forwarded-for", "6.6.6.6, 198.51.100.20")];
    let mut ws = gw.connect_with("/ws", Some(ORIGIN), Some(&token()), &forwarded).await.expect("via the proxy");
    let seen = recv_json(&mut ws).await;
    assert_eq!(seen["x-wsgate-client-ip"], "198.51.100.20", "rightmost untrusted entry");

    // The same header from 127.0.0.2, which is not a trusted proxy.
    let url = gw.url("/ws");
    let addr: std::net::SocketAddr = url.trim_start_matches("ws://").trim_end_matches("/ws").parse().expect("addr");
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.2:0".parse().expect("addr")).expect("bind 127.0.0.2");
    let stream = sock.connect(addr).await.expect("connect");
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert("origin", HeaderValue::from_static(ORIGIN));
    req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {}", token())).expect("hv"));
    req.headers_mut().insert("x-forwarded-for", HeaderValue::from_static("198.51.100.20"));
    let (mut direct, _) = tokio_tungstenite::client_async(req, stream).await.expect("direct handshake");
    let msg = tokio::time::timeout(std::time::Duration::from_secs(10), direct.next())
        .await
        .expect("greeting in time")
        .expect("a message")
        .expect("no error");
    let seen: serde_json::Value = serde_json::from_str(msg.to_text().expect("text")).expect("json");
    assert_eq!(seen["x-wsgate-client-ip"], "127.0.0.2", "a spoofed header from an untrusted peer is ignored");
}
