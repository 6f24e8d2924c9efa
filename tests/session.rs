//! Inside a connection (docs/protocol.md): every error code with the connection staying up, every
//! close code the gateway sends, expiry warning and close, in-band refresh, slow consumers,
//! upstream failures, opaque routes and the heartbeat — through the real binary.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

async fn echo_gateway(setup: impl FnOnce(Setup) -> Setup) -> Gateway {
    spawn_gateway(&setup(Setup::new(&echo_upstream().await)))
}

fn code_of(v: &serde_json::Value) -> &str {
    assert_eq!(v["type"], "error", "expected an error frame, got {v}");
    v["payload"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn each_rejected_frame_gets_its_error_code_and_the_connection_stays_up() {
    let gw = echo_gateway(|s| s).await;
    let reader = sign(&claims("carol", "chat:read", 600));
    let mut ws = gw.connect_with("/ws", Some(ORIGIN), Some(&reader), &[]).await.expect("connect");
    ws.send(Message::text("not json")).await.expect("send");
    assert_eq!(code_of(&recv_json(&mut ws).await), "invalid_json");
    send_json(&mut ws, &json!({"type": "chat.send", "payload": "text", "id": "e1"})).await;
    let e = recv_json(&mut ws).await;
    assert_eq!((code_of(&e), e["payload"]["ref"].as_str()), ("invalid_envelope", Some("e1")));
    send_json(&mut ws, &json!({"type": "chat.delete", "payload": {}, "id": "e2"})).await;
    assert_eq!(code_of(&recv_json(&mut ws).await), "unknown_type");
    send_json(&mut ws, &json!({"type": "chat.send", "payload": {"text": "hi"}, "id": "e3"})).await;
    let e = recv_json(&mut ws).await;
    assert_eq!((code_of(&e), e["payload"]["ref"].as_str()), ("forbidden", Some("e3")));
    ws.send(Message::binary(vec![1u8, 2, 3])).await.expect("send");
    assert_eq!(code_of(&recv_json(&mut ws).await), "binary_not_allowed");
    // Still up: an allowed message is forwarded and echoed.
    let ok = json!({"type": "chat.read", "payload": {"room": "ops"}});
    send_json(&mut ws, &ok).await;
    assert_eq!(recv_json(&mut ws).await, ok);

    let mut writer = gw.connect().await;
    send_json(&mut writer, &json!({"type": "chat.send", "payload": {"text": 42}, "id": "s1"})).await;
    let e = recv_json(&mut writer).await;
    assert_eq!((code_of(&e), e["payload"]["ref"].as_str()), ("schema_violation", Some("s1")));

    let (_, metrics) = gw.admin_get("/metrics").await;
    for verdict in
        ["invalid_json", "invalid_envelope", "unknown_type", "forbidden", "binary_not_allowed", "schema_violation"]
    {
        let line = format!(r#"wsgate_messages_total{{route="/ws",direction="in",verdict="{verdict}"}} 1"#);
        assert!(metrics.contains(&line), "missing {line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_bucket_frames_get_rate_limited_and_repeats_close_4029() {
    let gw =
        echo_gateway(|s| s.limits("messages_per_second = 1\nmessage_burst = 2\nviolations_before_close = 3")).await;
    let mut ws = gw.connect().await;
    let msg = json!({"type": "chat.read", "payload": {}});
    for _ in 0..2 {
        send_json(&mut ws, &msg).await;
        assert_eq!(recv_json(&mut ws).await, msg);
    }
    send_json(&mut ws, &msg).await;
    assert_eq!(code_of(&recv_json(&mut ws).await), "rate_limited");
    for _ in 0..5 {
        let _ = ws.send(Message::text(msg.to_string())).await;
    }
    assert_eq!(close_code(&mut ws).await, 4029);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ping_flood_counts_against_the_bucket() {
    let gw =
        echo_gateway(|s| s.limits("messages_per_second = 1\nmessage_burst = 2\nviolations_before_close = 3")).await;
    let mut ws = gw.connect().await;
    for _ in 0..10 {
        let _ = ws.send(Message::Ping(vec![1u8; 8].into())).await;
    }
    assert_eq!(close_code(&mut ws).await, 4029);
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_policy_violations_close_1008() {
    let gw = echo_gateway(|s| s.limits("violations_before_close = 3")).await;
    let mut ws = gw.connect().await;
    for _ in 0..3 {
        ws.send(Message::text("{")).await.expect("send");
    }
    assert_eq!(close_code(&mut ws).await, 1008);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_message_closes_1009_and_other_clients_are_unaffected() {
    let gw = echo_gateway(|s| s.limits("max_message_bytes = 1024").route("unknown_types = \"forward\"")).await;
    let mut bystander = gw.connect().await;
    let mut ws = gw.connect().await;
    let big = json!({"type": "x", "payload": {"pad": "y".repeat(2000)}});
    ws.send(Message::text(big.to_string())).await.expect("send");
    assert_eq!(close_code(&mut ws).await, 1009);
    let ok = json!({"type": "chat.read", "payload": {}});
    send_json(&mut bystander, &ok).await;
    assert_eq!(recv_json(&mut bystander).await, ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frame_declaring_2_pow_63_bytes_is_refused_from_its_header() {
    let gw = echo_gateway(|s| s).await;
    let mut ws = gw.connect().await;
    // FIN+binary, masked, 64-bit length 2^63-1, mask key; no payload follows.
    let mut header = vec![0x82u8, 0xff];
    header.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    match ws.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.write_all(&header).await.expect("raw write"),
        _ => unreachable!("plain ws:// in tests"),
    }
    assert_eq!(close_code(&mut ws).await, 1009);
    assert!(gw.rss_kib() < 200 * 1024, "gateway grew to {} KiB", gw.rss_kib());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fragmented_message_is_cut_once_it_passes_the_limit() {
    let gw = echo_gateway(|s| s.limits("max_message_bytes = 1000").route("unknown_types = \"forward\"")).await;
    let mut ws = gw.connect().await;
    ws.send(raw_frame(b"{\"type\":\"x\",", 1, false)).await.expect("first");
    for _ in 0..3 {
        ws.send(raw_frame(&[b' '; 400], 0, false)).await.expect("continuation");
    }
    assert_eq!(close_code(&mut ws).await, 1009);
}

#[tokio::test(flavor = "multi_thread")]
async fn fragmented_messages_within_the_limit_are_assembled_and_checked() {
    let gw = echo_gateway(|s| s).await;
    let mut ws = gw.connect().await;
    ws.send(raw_frame(br#"{"type":"chat.read","#, 1, false)).await.expect("first");
    ws.send(raw_frame(br#""payload":{}"#, 0, false)).await.expect("middle");
    ws.send(raw_frame(b"}", 0, true)).await.expect("last");
    assert_eq!(recv_json(&mut ws).await, json!({"type": "chat.read", "payload": {}}));
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_closes_1007() {
    let gw = echo_gateway(|s| s).await;
    let mut ws = gw.connect().await;
    ws.send(raw_frame(&[b'{', 0xff, 0xfe, b'}'], 1, true)).await.expect("send");
    assert_eq!(close_code(&mut ws).await, 1007);
    let mut ws = gw.connect().await;
    ws.send(raw_frame(&[b'{', 0xe2], 1, false)).await.expect("send");
    ws.send(raw_frame(&[0x28, b'}'], 0, true)).await.expect("send");
    assert_eq!(close_code(&mut ws).await, 1007, "invalid UTF-8 across fragments");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_control_frames_are_a_protocol_error() {
    let gw = echo_gateway(|s| s).await;
    let mut raw = RawClient::connect(&gw, "/ws").await;
    raw.send(9, true, &[0u8; 200]).await;
    assert_eq!(raw.close_code().await, 1002);
}

#[tokio::test(flavor = "multi_thread")]
async fn expiring_token_is_warned_then_closed_4001() {
    let gw = echo_gateway(|s| s.auth("expiry_warning_seconds = 2")).await;
    let short = sign(&claims("alice", "chat:read", 3));
    let mut ws = gw.connect_with("/ws", Some(ORIGIN), Some(&short), &[]).await.expect("connect");
    let warn = recv_json(&mut ws).await;
    assert_eq!(warn["type"], "auth.expiring");
    let left = warn["payload"]["in_ms"].as_u64().expect("in_ms");
    assert!(left <= 2_000, "warned with {left} ms left");
    assert!(warn["payload"]["exp"].as_u64().is_some());
    assert_eq!(close_code(&mut ws).await, 4001);
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_extends_the_session_and_a_bad_refresh_leaves_the_old_expiry() {
    let gw = echo_gateway(|s| s.auth("expiry_warning_seconds = 0")).await;
    let short = sign(&claims("alice", "chat:read", 2));
    let mut ws = gw.connect_with("/ws", Some(ORIGIN), Some(&short), &[]).await.expect("connect");
    let fresh = sign(&claims("alice", "chat:read", 120));
    send_json(&mut ws, &json!({"type": "auth.refresh", "payload": {"token": fresh}, "id": "r1"})).await;
    let reply = recv_json(&mut ws).await;
    assert_eq!(reply["type"], "auth.refreshed");
    assert_eq!(reply["payload"]["ref"], "r1");
    assert!(reply["payload"]["exp"].as_u64().expect("exp") > now() + 60);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ok = json!({"type": "chat.read", "payload": {}});
    send_json(&mut ws, &ok).await;
    assert_eq!(recv_json(&mut ws).await, ok, "alive past the first token's exp");

    let short = sign(&claims("alice", "chat:read", 2));
    let mut ws = gw.connect_with("/ws", Some(ORIGIN), Some(&short), &[]).await.expect("connect");
    let other_sub = sign(&claims("mallory", "chat:read", 120));
    send_json(&mut ws, &json!({"type": "auth.refresh", "payload": {"token": other_sub}})).await;
    assert_eq!(code_of(&recv_json(&mut ws).await), "forbidden");
    send_json(&mut ws, &json!({"type": "auth.refresh", "payload": {"token": "garbage"}})).await;
    assert_eq!(code_of(&recv_json(&mut ws).await), "forbidden");
    assert_eq!(close_code(&mut ws).await, 4001, "old expiry stands");
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(metrics.contains(r#"wsgate_auth_refresh_total{result="ok"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"wsgate_auth_refresh_total{result="failed"} 2"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_closed_4008_with_memory_bounded() {
    let flood = flood_upstream(1024, 200_000).await;
    let gw = spawn_gateway(&Setup::new(&flood).limits("outbound_buffer_bytes = 65536"));
    let mut ws = gw.connect().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = gw.rss_kib();
    assert!(rss < 150 * 1024, "gateway RSS {rss} KiB while a client does not read 200 MB");
    assert_eq!(close_code(&mut ws).await, 4008);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_dying_mid_session_closes_1014() {
    let gw = spawn_gateway(&Setup::new(&dying_upstream().await));
    // A raw client: tungstenite refuses to parse 1014 ("Bad Gateway", IANA-registered) as reserved.
    let mut raw = RawClient::connect(&gw, "/ws").await;
    raw.send(1, true, br#"{"type":"chat.read","payload":{}}"#).await;
    assert_eq!(raw.frame().await.map(|f| f.0), Some(1), "echo before the upstream dies");
    assert_eq!(raw.close_code().await, 1014);
    // The gateway lingers for the client's close or end of stream before it counts the
    // connection closed; this raw client answers by hanging up.
    drop(raw);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(metrics.contains(r#"wsgate_disconnects_total{route="/ws",reason="upstream_lost"} 1"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn close_codes_are_relayed_both_ways() {
    let gw = spawn_gateway(&Setup::new(&closing_upstream(4321).await));
    let mut ws = gw.connect().await;
    send_json(&mut ws, &json!({"type": "chat.read", "payload": {}})).await;
    assert_eq!(close_code(&mut ws).await, 4321, "upstream's code reaches the client");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let gw = spawn_gateway(&Setup::new(&recording_upstream(tx).await));
    let mut ws = gw.connect().await;
    ws.close(Some(CloseFrame { code: 4000u16.into(), reason: "done".into() })).await.expect("close");
    assert_eq!(close_code(&mut ws).await, 4000, "close echoed to the client");
    let seen = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("upstream saw a close");
    assert_eq!(seen, Some(4000), "client's code reaches the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn opaque_routes_pass_any_frames_but_keep_size_limits() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(&Setup::new(&up).limits("max_message_bytes = 4096").more_routes(&format!(
        "[[routes]]\npath = \"/raw\"\nupstream = \"{up}\"\norigins = [\"{ORIGIN}\"]\nenvelope = \"none\"\nsubprotocols = [\"*\"]\n"
    )));
    let mut ws = gw.connect_with("/raw", Some(ORIGIN), Some(&token()), &[]).await.expect("connect");
    ws.send(Message::text("plain text, not json")).await.expect("send");
    assert_eq!(recv(&mut ws).await, Message::text("plain text, not json"));
    ws.send(Message::binary(vec![0u8, 1, 255])).await.expect("send");
    assert_eq!(recv(&mut ws).await, Message::binary(vec![0u8, 1, 255]));
    ws.send(Message::binary(vec![0u8; 5000])).await.expect("send");
    assert_eq!(close_code(&mut ws).await, 1009);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_pings_and_closes_clients_that_stop_answering() {
    let gw = echo_gateway(|s| s.timeouts("ping_interval_seconds = 1\nidle_seconds = 2")).await;
    let mut ws = gw.connect().await;
    let ping = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Ok(Message::Ping(_))) = ws.next().await {
                return;
            }
        }
    })
    .await;
    assert!(ping.is_ok(), "no ping within 5 s");
    // Stop reading (so no pongs go back) for longer than idle_seconds.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(close_code(&mut ws).await, 1001);
}
