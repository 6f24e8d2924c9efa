//! Hostile clients against the real server; each test ends with a normal client still served.
//! (Oversized and fragmented frames, invalid UTF-8, control frames, ping floods and slow
//! readers are in session.rs.)

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

async fn assert_served(gw: &Gateway) {
    let mut ws = gw.connect().await;
    let msg = json!({"type": "chat.read", "payload": {"probe": true}});
    send_json(&mut ws, &msg).await;
    assert_eq!(recv_json(&mut ws).await, msg, "a normal client is still served");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slowloris_handshake_is_cut_at_the_handshake_timeout() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).timeouts("handshake_seconds = 1"));
    let mut s = tokio::net::TcpStream::connect(gw.public).await.expect("connect");
    let request = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let mut cut = false;
    for b in request.iter().cycle().take(200) {
        if s.write_all(std::slice::from_ref(b)).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            // An answer (408) or EOF both mean the gateway gave up on us.
            let _ = n;
            cut = true;
            break;
        }
    }
    assert!(cut, "a handshake trickled over 10 s was never cut (handshake_seconds = 1)");
    assert_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_handshakes_from_one_ip_are_refused_while_another_ip_connects() {
    let gw = spawn_gateway(
        &Setup::new(&echo_upstream().await).limits("handshakes_per_second_per_ip = 5\nhandshake_burst_per_ip = 10"),
    );
    // Handshakes that pass the rate check fail at the token (401), so none stays open.
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: {ORIGIN}\r\nAuthorization: Bearer not.a.token\r\n\r\n"
    );
    let addr = gw.public;
    let mut tasks = Vec::new();
    for worker in 0..20 {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut counts = [0u32; 2]; // [429, other]
            for _ in 0..500 {
                let (status, _) = raw_request(addr, &request).await;
                counts[usize::from(status != 429)] += 1;
            }
            let _ = worker;
            counts
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.expect("task")[0];
    }
    assert!(refused >= 9_900, "only {refused} of 10000 handshakes refused with 429");
    // Another address on the loopback network is unaffected.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.3:0".parse().expect("addr")).expect("bind");
    let stream = sock.connect(gw.public).await.expect("connect");
    let mut req = gw.url("/ws").into_client_request().expect("req");
    req.headers_mut().insert("origin", HeaderValue::from_static(ORIGIN));
    req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {}", token())).expect("hv"));
    let (mut ws, _) = tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
        .expect("other IP admitted");
    let msg = json!({"type": "chat.read", "payload": {}});
    send_json(&mut ws, &msg).await;
    assert_eq!(recv_json(&mut ws).await, msg);
}

#[tokio::test(flavor = "multi_thread")]
async fn deeply_nested_json_is_rejected_without_crashing() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).limits("max_message_bytes = 1048576"));
    let mut ws = gw.connect().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    ws.send_text(deep).await;
    let e = recv_json(&mut ws).await;
    assert_eq!(e["payload"]["code"], "invalid_json");
    let deep_obj = format!(r#"{{"type":"chat.read","payload":{}{}}}"#, r#"{"a":"#.repeat(50_000), "}".repeat(50_000));
    ws.send_text(deep_obj).await;
    let e = recv_json(&mut ws).await;
    assert_eq!(e["payload"]["code"], "invalid_json");
    assert_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_after_the_upgrade_closes_only_that_connection() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await));
    let mut raw = RawClient::connect(&gw, "/ws").await;
    raw.stream.write_all(&[0xff; 64]).await.expect("write");
    assert_eq!(raw.close_code().await, 1002);
    assert_served(&gw).await;
}

trait SendText {
    async fn send_text(&mut self, s: String);
}

impl SendText for Ws {
    async fn send_text(&mut self, s: String) {
        use futures_util::SinkExt;
        self.send(Message::text(s)).await.expect("send");
    }
}
