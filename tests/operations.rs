//! Day-2 operations through the real binary: the admin API (token, list with paging, kick,
//! revoke by jti and by subject, revocations surviving a restart), config reload (SIGHUP and
//! `POST /admin/reload`, a bad config refused), key rotation through a JWKS file, and drain
//! (admin and SIGTERM) with traffic flowing.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn chat(text: &str) -> Value {
    json!({"type": "chat.send", "payload": {"text": text}})
}

async fn echo_ok(ws: &mut Ws, text: &str) {
    send_json(ws, &chat(text)).await;
    assert_eq!(recv_json(ws).await, chat(text));
}

/// A token for `sub` with a fixed `jti`.
fn token_with_jti(sub: &str, jti: &str) -> String {
    let mut c = claims(sub, "chat:read chat:write", 3600);
    c["jti"] = json!(jti);
    sign(&c)
}

async fn connect_token(gw: &Gateway, token: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    gw.connect_with("/ws", Some(ORIGIN), Some(token), &[]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_needs_its_bearer_token_and_is_off_without_one() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await));
    assert_eq!(gw.admin_as(None, "GET", "/admin/connections", None).await.0, 401);
    assert_eq!(gw.admin_as(Some("wrong-token-of-same-size!"), "GET", "/admin/connections", None).await.0, 401);
    assert_eq!(gw.admin_as(Some(""), "POST", "/admin/drain", None).await.0, 401);
    assert_eq!(gw.admin_get("/readyz").await.0, 200, "a refused drain did not drain");
    let (status, body) = gw.admin("GET", "/admin/connections", None).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"connections": [], "next": null}));
    assert!(!gw.log().contains(ADMIN_TOKEN), "the admin token is never logged");

    let off = spawn_gateway(&Setup::new(&echo_upstream().await).no_admin_token());
    assert_eq!(off.admin("GET", "/admin/connections", None).await.0, 404);
    assert_eq!(off.admin("POST", "/admin/revoke", Some(&json!({"jti": "x"}))).await.0, 404);
    assert_eq!(off.admin_get("/healthz").await.0, 200, "health stays public");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_listed_page_by_page_and_one_can_be_kicked() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await));
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut ws = gw.connect().await;
        for n in 0..=i {
            echo_ok(&mut ws, &format!("m{n}")).await;
        }
        clients.push(ws);
    }
    let (status, first) = gw.admin("GET", "/admin/connections?limit=2", None).await;
    assert_eq!(status, 200, "{first}");
    let rows = first["connections"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    let next = first["next"].as_u64().expect("a next id while more remain");
    assert_eq!(next, rows[1]["id"].as_u64().expect("id"));
    let row = &rows[0];
    assert_eq!(row["route"], "/ws");
    assert_eq!(row["subject"], "alice");
    assert_eq!(row["client_ip"], "127.0.0.1");
    assert!(row["expires_at"].as_u64().expect("exp") > now());
    assert!(row["age_seconds"].is_u64());
    let (_, second) = gw.admin("GET", &format!("/admin/connections?limit=2&after={next}"), None).await;
    let rest = second["connections"].as_array().expect("rows");
    assert_eq!(rest.len(), 1);
    assert_eq!(second["next"], Value::Null);
    assert_eq!(rest[0]["messages_in"], 3, "{second}");
    assert_eq!(rest[0]["messages_out"], 3, "{second}");
    assert_eq!(gw.admin("GET", "/admin/connections?limit=0", None).await.0, 400);
    assert_eq!(gw.admin("GET", "/admin/connections?limit=abc", None).await.0, 400);

    let victim = rows[0]["id"].as_u64().expect("id");
    let (status, body) = gw.admin("DELETE", &format!("/admin/connections/{victim}"), None).await;
    assert_eq!((status, body), (200, json!({"closed": 1})));
    assert_eq!(close_code(&mut clients[0]).await, 4003);
    drop(clients.remove(0));
    echo_ok(&mut clients[0], "still here").await;
    // Gone from the index once closed.
    let mut gone = false;
    for _ in 0..100 {
        if gw.admin("DELETE", &format!("/admin/connections/{victim}"), None).await.0 == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "a closed connection is removed from the index");
    assert_eq!(gw.admin("DELETE", "/admin/connections/abc", None).await.0, 400);
    assert!(gw.log().contains("\"event\":\"operator_kick\""), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_jti_closes_its_connections_and_refuses_it_after_a_restart() {
    let state = tempfile::tempdir().expect("state dir");
    let setup =
        Setup::new(&echo_upstream().await).server(&format!("state_dir = {:?}", state.path().display().to_string()));
    let (revoked, kept) = (token_with_jti("alice", "jti-revoked"), token_with_jti("alice", "jti-kept"));
    {
        let gw = spawn_gateway(&setup);
        let mut a = connect_token(&gw, &revoked).await.expect("connect");
        let mut a2 = connect_token(&gw, &revoked).await.expect("connect");
        let mut b = connect_token(&gw, &kept).await.expect("connect");
        echo_ok(&mut a, "before").await;
        let started = Instant::now();
        let (status, body) = gw.admin("POST", "/admin/revoke", Some(&json!({"jti": "jti-revoked"}))).await;
        assert_eq!((status, body), (200, json!({"closed": 2})));
        // In force for whatever is read after the answer: a frame sent now is not judged any
        // more (an open session would answer this non-JSON text with an invalid_json error
        // frame at once, where a forwarded message's echo could lose the race to the close).
        a.send(Message::text("after the revocation")).await.expect("send");
        match tokio::time::timeout(Duration::from_secs(15), a.next()).await.expect("an answer") {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4003),
            other => panic!("the revoked connection got {other:?} instead of its close"),
        }
        assert_eq!(close_code(&mut a2).await, 4003);
        eprintln!("revoke to close frame: {:?}", started.elapsed());
        drop((a, a2));
        echo_ok(&mut b, "unaffected").await;
        let err = connect_token(&gw, &revoked).await.expect_err("revoked token refused");
        assert_eq!(common::status(&err), 401);
        let mut metrics = String::new();
        for _ in 0..100 {
            metrics = gw.admin_get("/metrics").await.1;
            if metrics.contains(r#"wsgate_disconnects_total{route="/ws",reason="revoked"} 2"#) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(metrics.contains("wsgate_revocations_total 1"), "{metrics}");
        assert!(metrics.contains(r#"wsgate_disconnects_total{route="/ws",reason="revoked"} 2"#), "{metrics}");
        let log = gw.log();
        assert!(log.contains("\"event\":\"revocation_kick\""), "{log}");
        assert!(log.contains("\"event\":\"revocation_added\""), "{log}");
        assert_eq!(gw.admin("POST", "/admin/revoke", Some(&json!({"jti": "a", "sub": "b"}))).await.0, 400);
        assert_eq!(gw.admin("POST", "/admin/revoke", Some(&json!({}))).await.0, 400);
        assert_eq!(gw.admin("POST", "/admin/revoke", Some(&json!({"jti": "x", "exp": 5}))).await.0, 400);
    }
    // A new process on the same state_dir still refuses the token.
    let gw = spawn_gateway(&setup);
    let err = connect_token(&gw, &revoked).await.expect_err("still revoked after a restart");
    assert_eq!(common::status(&err), 401);
    let mut b = connect_token(&gw, &kept).await.expect("other tokens still work");
    echo_ok(&mut b, "after restart").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_subject_covers_tokens_issued_before_it_and_refreshes() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await));
    let mut bob = connect_token(&gw, &token_with_jti("bob", "bob-1")).await.expect("connect");
    let mut carol = connect_token(&gw, &token_with_jti("carol", "carol-1")).await.expect("connect");
    let (status, body) = gw.admin("POST", "/admin/revoke", Some(&json!({"sub": "bob"}))).await;
    assert_eq!((status, body), (200, json!({"closed": 1})));
    assert_eq!(close_code(&mut bob).await, 4003);
    let err = connect_token(&gw, &token_with_jti("bob", "bob-2")).await.expect_err("issued before: refused");
    assert_eq!(common::status(&err), 401);
    // A token issued after the revocation is fine (`iat` in whole seconds: the next second;
    // an `iat` in the future beyond the leeway would be refused).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut later = claims("bob", "chat:read chat:write", 3600);
    later["iat"] = json!(now());
    let mut bob = connect_token(&gw, &sign(&later)).await.expect("a token issued later is accepted");
    echo_ok(&mut bob, "new token").await;

    // auth.refresh with a revoked token is refused; the connection stays up on its old token.
    let (status, _) = gw.admin("POST", "/admin/revoke", Some(&json!({"jti": "carol-2", "exp": now() + 600}))).await;
    assert_eq!(status, 200);
    let revoked = token_with_jti("carol", "carol-2");
    send_json(&mut carol, &json!({"type": "auth.refresh", "payload": {"token": revoked}, "id": "r"})).await;
    let reply = recv_json(&mut carol).await;
    assert_eq!(reply["payload"]["code"], "forbidden", "{reply}");
    echo_ok(&mut carol, "still up").await;
}

fn with_types(setup: &Setup, extra: &str) -> String {
    setup.toml().replace(
        "[[routes.messages]]\ntype = \"chat.read\"",
        &format!("{extra}\n[[routes.messages]]\ntype = \"chat.read\""),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_applies_new_rules_to_open_connections_and_a_bad_config_is_refused() {
    let setup = Setup::new(&echo_upstream().await);
    let gw = spawn_gateway(&setup);
    let mut ws = gw.connect().await;
    let typing = json!({"type": "chat.typing", "payload": {}});
    send_json(&mut ws, &typing).await;
    assert_eq!(recv_json(&mut ws).await["payload"]["code"], "unknown_type");
    let newcomer = "https://new.example.org";
    assert_eq!(
        common::status(&gw.connect_with("/ws", Some(newcomer), Some(&token()), &[]).await.expect_err("refused")),
        403
    );

    // New message type and a new origin, applied by SIGHUP.
    let reloaded = with_types(&setup, "[[routes.messages]]\ntype = \"chat.typing\"\n")
        .replace("origins = [", &format!("origins = [\"{newcomer}\", "));
    std::fs::write(gw.config_path(), reloaded).expect("rewrite config");
    gw.signal("HUP");
    wait_for_log(&gw, "\"event\":\"config_reloaded\"", 1).await;
    send_json(&mut ws, &typing).await;
    assert_eq!(recv_json(&mut ws).await, typing, "the open connection forwards the new type");
    let mut fresh = gw.connect_with("/ws", Some(newcomer), Some(&token()), &[]).await.expect("new origin allowed");
    echo_ok(&mut fresh, "hi").await;

    // A broken config is refused and the one in force stays.
    std::fs::write(gw.config_path(), "[server\nlisten = ").expect("break config");
    let (status, body) = gw.admin("POST", "/admin/reload", None).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("config")), "{body}");
    send_json(&mut ws, &typing).await;
    assert_eq!(recv_json(&mut ws).await, typing, "old (reloaded) rules still in force");
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(metrics.contains(r#"wsgate_config_reloads_total{result="ok"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"wsgate_config_reloads_total{result="failed"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"wsgate_connections_active{route="/ws"} 2"#), "a reload keeps the gauge: {metrics}");
}

/// An ES256 key pair: the private key (PKCS#8 PEM) and its public JWK with `kid`.
fn es256_key(kid: &str) -> (EncodingKey, Value) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let point = pair.public_key_raw();
    assert_eq!((point.len(), point[0]), (65, 4), "uncompressed P-256 point");
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]), "kid": kid, "alg": "ES256", "use": "sig"});
    (EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("pem"), jwk)
}

fn es256_token(key: &EncodingKey, kid: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims("alice", "chat:read chat:write", 3600), key).expect("sign")
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_rotate_through_the_jwks_file_without_a_restart() {
    let (k1, jwk1) = es256_key("2026-10");
    let (k2, jwk2) = es256_key("2026-11");
    let jwks_dir = tempfile::tempdir().expect("dir");
    let jwks = jwks_dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [jwk1]}).to_string()).expect("jwks");
    let setup = Setup::new(&echo_upstream().await).auth(&format!("jwks_file = {:?}", jwks.display().to_string()));
    let gw = spawn_gateway(&setup);
    let (old, new) = (es256_token(&k1, "2026-10"), es256_token(&k2, "2026-11"));
    let mut ws = connect_token(&gw, &old).await.expect("key in the JWKS");
    echo_ok(&mut ws, "k1").await;
    assert_eq!(common::status(&connect_token(&gw, &new).await.expect_err("unknown kid")), 401);

    // Rotate: the new key in, the old one out.
    std::fs::write(&jwks, json!({"keys": [jwk2]}).to_string()).expect("jwks");
    let (status, body) = gw.admin("POST", "/admin/reload", None).await;
    assert_eq!(status, 200, "{body}");
    let mut ws2 = connect_token(&gw, &new).await.expect("new key accepted after the reload");
    echo_ok(&mut ws2, "k2").await;
    assert_eq!(common::status(&connect_token(&gw, &old).await.expect_err("removed key")), 401);
    // The old connection stays up, and cannot refresh with a token of the removed key.
    send_json(&mut ws, &json!({"type": "auth.refresh", "payload": {"token": es256_token(&k1, "2026-10")}})).await;
    assert_eq!(recv_json(&mut ws).await["payload"]["code"], "forbidden");
    send_json(&mut ws, &json!({"type": "auth.refresh", "payload": {"token": es256_token(&k2, "2026-11")}})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "auth.refreshed");
}

/// Closed-loop clients must not hit the per-connection rate limit.
const UNLIMITED_RATE: &str = "messages_per_second = 0\nbytes_per_second = 0";

/// Closed loop with sequence numbers until the gateway closes; returns (echoes, close code).
async fn sequenced(mut ws: Ws) -> (u64, u16) {
    let mut next_send = 0u64;
    let mut expect = 0u64;
    for _ in 0..4 {
        send_json(&mut ws, &chat(&next_send.to_string())).await;
        next_send += 1;
    }
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(15), ws.next()).await.expect("no close in 15 s");
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("json");
                let n: u64 = v["payload"]["text"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("not an echo: {v}"));
                assert_eq!(n, expect, "echoes arrive in order with no gap");
                expect += 1;
                if ws.send(Message::text(chat(&next_send.to_string()).to_string())).await.is_ok() {
                    next_send += 1;
                }
            }
            Some(Ok(Message::Close(Some(f)))) => return (expect, u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("stream ended without a close frame: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_closes_clients_1001_with_traffic_flowing_and_exits_0() {
    let (upstream, received) = counting_echo_upstream().await;
    let mut gw = spawn_gateway(&Setup::new(&upstream).timeouts("drain_seconds = 2").limits(UNLIMITED_RATE));
    let mut flows = Vec::new();
    for _ in 0..6 {
        flows.push(tokio::spawn(sequenced(gw.connect().await)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (status, body) = gw.admin("POST", "/admin/drain", None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["connections"], 6);
    assert_eq!(gw.admin_get("/readyz").await.0, 503);
    let err = gw.connect_with("/ws", Some(ORIGIN), Some(&token()), &[]).await.expect_err("no new connections");
    assert_eq!(common::status(&err), 503);
    let mut echoed = 0;
    for flow in flows {
        let (echoes, code) = flow.await.expect("flow");
        assert_eq!(code, 1001);
        assert!(echoes > 0, "traffic flowed before the drain");
        echoed += echoes;
    }
    let spread = started.elapsed();
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0), "{}", gw.log());
    eprintln!("6 clients closed over {spread:?}");
    let log = gw.log();
    assert_eq!(log.matches("\"event\":\"drain_close\"").count(), 6, "{log}");
    // Every frame the gateway accepted from a client reached the upstream.
    let accepted: u64 = log
        .lines()
        .filter(|l| l.contains("\"event\":\"connection_closed\""))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["messages_in"].as_u64())
        .sum();
    assert!(accepted > 0);
    for _ in 0..100 {
        if received.load(std::sync::atomic::Ordering::SeqCst) >= accepted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        received.load(std::sync::atomic::Ordering::SeqCst),
        accepted,
        "frames lost between gateway and upstream"
    );
    // And every answer the upstream sent before the drain's close reached its client.
    assert_eq!(echoed, accepted, "answers in flight were lost in the drain");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_exits_0() {
    let mut gw =
        spawn_gateway(&Setup::new(&echo_upstream().await).timeouts("drain_seconds = 1").limits(UNLIMITED_RATE));
    let flow = tokio::spawn(sequenced(gw.connect().await));
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.signal("TERM");
    let (echoes, code) = flow.await.expect("flow");
    assert_eq!(code, 1001);
    assert!(echoes > 0);
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0), "{}", gw.log());
}

/// Open `/ws` from `local` (a loopback address) after writing `preamble` (a PROXY header) on
/// the TCP connection; the upstream (`/whoami`) greets with the headers it received.
async fn via_proxy(
    gw: &Gateway,
    local: &str,
    preamble: &[u8],
) -> Result<(Ws, Value), tokio_tungstenite::tungstenite::Error> {
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(format!("{local}:0").parse().expect("addr")).expect("bind");
    let mut stream = sock.connect(gw.public).await.expect("connect");
    stream.write_all(preamble).await.expect("preamble");
    let mut req = gw.url("/ws").into_client_request().expect("request");
    req.headers_mut().insert("origin", HeaderValue::from_static(ORIGIN));
    req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {}", token())).expect("hv"));
    let (mut ws, _) = tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(stream)).await?;
    let greeting = recv_json(&mut ws).await;
    Ok((ws, greeting))
}

/// A PROXY v2 header (TCP over IPv4) naming `source` → `dest`.
fn proxy_v2(source: [u8; 4], source_port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&source);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&source_port.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_protocol_names_the_client_only_from_trusted_proxies() {
    let setup = Setup::new(&format!("{}/whoami", echo_upstream().await))
        .server("trusted_proxies = [\"127.0.0.1/32\"]\nproxy_protocol = true")
        .limits("max_connections_per_ip = 1");
    let gw = spawn_gateway(&setup);
    let (_a, seen) = via_proxy(&gw, "127.0.0.1", b"PROXY TCP4 198.51.100.20 127.0.0.1 5000 443\r\n").await.expect("v1");
    assert_eq!(seen["x-wsgate-client-ip"], "198.51.100.20", "v1 from a trusted proxy");
    let (_b, seen) = via_proxy(&gw, "127.0.0.1", &proxy_v2([203, 0, 113, 9], 6000)).await.expect("v2");
    assert_eq!(seen["x-wsgate-client-ip"], "203.0.113.9", "v2 from a trusted proxy");
    // Per-IP caps count the real client: a second connection of 198.51.100.20 is refused
    // even though it arrives through the same proxy as the others.
    let err = via_proxy(&gw, "127.0.0.1", b"PROXY TCP4 198.51.100.20 127.0.0.1 5001 443\r\n").await.expect_err("cap");
    assert_eq!(common::status(&err), 429);
    // A PROXY header from 127.0.0.2 (not a trusted proxy) is consumed and ignored.
    let (_c, seen) =
        via_proxy(&gw, "127.0.0.2", b"PROXY TCP4 192.0.2.1 127.0.0.1 5000 443\r\n").await.expect("untrusted");
    assert_eq!(seen["x-wsgate-client-ip"], "127.0.0.2", "a spoofed PROXY header is ignored");
    // No header at all: the TCP peer.
    let (_d, seen) = via_proxy(&gw, "127.0.0.3", b"").await.expect("no header");
    assert_eq!(seen["x-wsgate-client-ip"], "127.0.0.3");
    assert!(gw.log().contains("\"event\":\"proxy_header_ignored\""), "{}", gw.log());
    // A broken header closes that connection only.
    let mut bad = tokio::net::TcpStream::connect(gw.public).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut bad, b"PROXY TCP9 nonsense\r\nGET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let n =
        tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut bad, &mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "closed without an answer: {n:?} {buf:?}");
    let (_e, seen) = via_proxy(&gw, "127.0.0.1", &proxy_v2([192, 0, 2, 44], 7000)).await.expect("still serving");
    assert_eq!(seen["x-wsgate-client-ip"], "192.0.2.44");
}

/// A JWKS endpoint on loopback serving whatever `body` holds; counts the requests.
async fn jwks_server(
    body: std::sync::Arc<std::sync::Mutex<String>>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().expect("addr"));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (body, counter) = (body.clone(), counter.clone());
            tokio::spawn(async move {
                let mut req = vec![0u8; 4096];
                let mut n = 0;
                while !req[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut req[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let text = body.lock().expect("lock").clone();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_come_from_a_jwks_url_refetched_on_unknown_kids_at_a_bounded_rate() {
    use std::sync::atomic::Ordering::SeqCst;
    let (k1, jwk1) = es256_key("idp-1");
    let (k2, jwk2) = es256_key("idp-2");
    let body = std::sync::Arc::new(std::sync::Mutex::new(json!({"keys": [jwk1]}).to_string()));
    let (url, hits) = jwks_server(body.clone()).await;
    let gw = spawn_gateway(
        &Setup::new(&echo_upstream().await).auth(&format!("jwks_url = \"{url}\"\njwks_refresh_seconds = 3600")),
    );
    assert_eq!(hits.load(SeqCst), 1, "fetched once at start");
    let mut ws = connect_token(&gw, &es256_token(&k1, "idp-1")).await.expect("key from the URL");
    echo_ok(&mut ws, "idp-1").await;

    // The IdP rotates: a token with the new kid triggers one fetch and is accepted at once.
    *body.lock().expect("lock") = json!({"keys": [jwk2]}).to_string();
    let mut ws2 = connect_token(&gw, &es256_token(&k2, "idp-2")).await.expect("rotated key fetched on demand");
    echo_ok(&mut ws2, "idp-2").await;
    assert_eq!(hits.load(SeqCst), 2);
    assert_eq!(common::status(&connect_token(&gw, &es256_token(&k1, "idp-1")).await.expect_err("removed")), 401);

    // A flood of made-up kids: refused, and the IdP is asked at most once more in 10 s.
    let (fake, _) = es256_key("made-up");
    for i in 0..30 {
        let err = connect_token(&gw, &es256_token(&fake, &format!("made-up-{i}"))).await.expect_err("unknown kid");
        assert_eq!(common::status(&err), 401);
    }
    assert!(hits.load(SeqCst) <= 3, "{} fetches for 30 unknown kids", hits.load(SeqCst));
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(metrics.contains(r#"wsgate_jwks_fetches_total{result="ok"}"#), "{metrics}");
}
