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

/// A served client beside an attacker: a second connection keeps getting its echo.
async fn served_beside(gw: &Gateway) -> Ws {
    let mut ws = gw.connect().await;
    let msg = json!({"type": "chat.read", "payload": {"beside": true}});
    send_json(&mut ws, &msg).await;
    assert_eq!(recv_json(&mut ws).await, msg, "the client beside the attacker is served");
    ws
}

async fn still_served(ws: &mut Ws) {
    let msg = json!({"type": "chat.read", "payload": {"after": true}});
    send_json(ws, &msg).await;
    assert_eq!(recv_json(ws).await, msg, "the client beside the attacker is still served");
}

const FLOOD_LIMITS: &str = "messages_per_second = 5\nmessage_burst = 10\nviolations_before_close = 3";

#[tokio::test(flavor = "multi_thread")]
async fn an_unsolicited_pong_flood_closes_4029() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).limits(FLOOD_LIMITS));
    let mut good = served_beside(&gw).await;
    let mut raw = RawClient::connect(&gw, "/ws").await;
    for _ in 0..200 {
        raw.send(0x0a, true, b"pong-pong").await;
    }
    assert_eq!(raw.close_code().await, 4029);
    // Empty pongs are frames too.
    let mut raw = RawClient::connect(&gw, "/ws").await;
    for _ in 0..200 {
        raw.send(0x0a, true, b"").await;
    }
    assert_eq!(raw.close_code().await, 4029);
    still_served(&mut good).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pong_byte_flood_is_charged_to_the_byte_bucket() {
    let gw = spawn_gateway(
        &Setup::new(&echo_upstream().await)
            .limits("bytes_per_second = 1024\nmax_message_bytes = 1024\nviolations_before_close = 3"),
    );
    let mut good = served_beside(&gw).await;
    let mut raw = RawClient::connect(&gw, "/ws").await;
    for _ in 0..40 {
        raw.send(0x0a, true, &[7u8; 125]).await;
    }
    assert_eq!(raw.close_code().await, 4029);
    still_served(&mut good).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_empty_continuation_frames_close_4029() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).limits(FLOOD_LIMITS));
    let mut good = served_beside(&gw).await;
    let mut raw = RawClient::connect(&gw, "/ws").await;
    raw.send(0x01, false, br#"{"type":"chat.read","#).await;
    for _ in 0..200 {
        raw.send(0x00, false, b"").await;
    }
    assert_eq!(raw.close_code().await, 4029);
    still_served(&mut good).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_refresh_has_a_burst_then_is_rate_limited() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).limits("violations_before_close = 0"));
    let mut good = served_beside(&gw).await;
    let mut ws = gw.connect().await;
    let fresh = sign(&claims("alice", "chat:read chat:write", 600));
    for i in 0..3 {
        send_json(&mut ws, &json!({"type": "auth.refresh", "payload": {"token": fresh}, "id": i})).await;
        assert_eq!(recv_json(&mut ws).await["type"], "auth.refreshed", "refresh {i} is within the burst");
    }
    for i in 3..6 {
        send_json(&mut ws, &json!({"type": "auth.refresh", "payload": {"token": fresh}, "id": i})).await;
        let e = recv_json(&mut ws).await;
        assert_eq!(e["payload"]["code"], "rate_limited", "{e}");
        assert_eq!(e["payload"]["ref"], i.to_string());
    }
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(metrics.contains(r#"wsgate_auth_refresh_total{result="ok"} 3"#), "{metrics}");
    still_served(&mut good).await;
    // Counted as violations: with the default limit of 10 the connection closes 4029.
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).limits("violations_before_close = 2"));
    let mut ws = gw.connect().await;
    for _ in 0..3 {
        send_json(&mut ws, &json!({"type": "auth.refresh", "payload": {"token": fresh}})).await;
        assert_eq!(recv_json(&mut ws).await["type"], "auth.refreshed");
    }
    for _ in 0..2 {
        send_json(&mut ws, &json!({"type": "auth.refresh", "payload": {"token": fresh}})).await;
    }
    assert_eq!(close_code(&mut ws).await, 4029);
}

/// Writes `bytes` one at a time, `every` apart, ignoring write errors (the gateway may
/// have closed), until `limit` bytes.
async fn trickle(raw: &mut RawClient, bytes: &[u8], every: Duration) {
    for b in bytes {
        if raw.stream.write_all(std::slice::from_ref(b)).await.is_err() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [7u8, 1, 3, 9];
    let mut f = vec![0x81, 0x80 | 126];
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frame_trickled_byte_by_byte_is_closed_1008_at_the_frame_deadline() {
    let gw = spawn_gateway(
        &Setup::new(&echo_upstream().await).timeouts("frame_seconds = 1\nidle_seconds = 0\nping_interval_seconds = 0"),
    );
    let mut good = served_beside(&gw).await;
    let frame = masked_text_frame(&[b' '; 60_000]);
    // Cut after the first byte, inside the extended length, inside the mask key, inside the
    // payload; the rest trickles (or nothing follows).
    for (cut, every) in [(1, 1500), (3, 700), (6, 300), (40, 100)] {
        let mut raw = RawClient::connect(&gw, "/ws").await;
        trickle(&mut raw, &frame[..cut], Duration::from_millis(every)).await;
        assert_eq!(raw.close_code().await, 1008, "cut after {cut} bytes");
    }
    // A frame completed in time is served (the deadline restarts per frame).
    let mut raw = RawClient::connect(&gw, "/ws").await;
    let msg = br#"{"type":"chat.read","payload":{}}"#;
    for _ in 0..3 {
        let f = masked_text_frame(msg);
        trickle(&mut raw, &f, Duration::from_millis(10)).await;
        assert_eq!(raw.frame().await.map(|(op, p)| (op, p == msg)), Some((1, true)));
    }
    still_served(&mut good).await;
    assert!(gw.log().contains(r#""event":"frame_timeout_close""#), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_of_an_incomplete_frame_do_not_keep_an_idle_connection_open() {
    // No frame deadline: only the idle limit can end this one.
    let gw = spawn_gateway(
        &Setup::new(&echo_upstream().await).timeouts("frame_seconds = 0\nidle_seconds = 2\nping_interval_seconds = 0"),
    );
    let mut good = served_beside(&gw).await;
    let frame = masked_text_frame(&[b' '; 60_000]);
    let mut raw = RawClient::connect(&gw, "/ws").await;
    // The good client keeps sending meanwhile, so it is not idle.
    let keep_busy = async {
        for _ in 0..20 {
            still_served(&mut good).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::join!(trickle(&mut raw, &frame[..40], Duration::from_millis(250)), keep_busy);
    assert_eq!(raw.close_code().await, 1001, "closed idle although bytes kept arriving");
    still_served(&mut good).await;
}

/// Sends `text` and returns the error code it was refused with (`None`: echoed verbatim).
async fn verdict(ws: &mut Ws, text: &str) -> Option<String> {
    ws.send_text(text.to_string()).await;
    match recv(ws).await {
        Message::Text(t) if t.as_str() == text => None,
        Message::Text(t) => {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("error frame is JSON");
            assert_eq!(v["type"], "error", "neither echoed nor refused: {v}");
            Some(v["payload"]["code"].as_str().unwrap_or("").to_string())
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_member_names_are_refused_anywhere_in_the_message() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).limits("violations_before_close = 0"));
    let mut good = served_beside(&gw).await;
    let mut ws = gw.connect().await;
    for (text, code) in [
        // In a schema'd payload (chat.send) and an unschema'd one (chat.read).
        (r#"{"type":"chat.send","payload":{"text":"hi","text":"hello"}}"#, "invalid_json"),
        (r#"{"type":"chat.read","payload":{"qty":500,"qty":1}}"#, "invalid_json"),
        (r#"{"type":"chat.read","payload":{"qty":500,"\u0071ty":1}}"#, "invalid_json"),
        (r#"{"type":"chat.read","payload":{"a":{"b":1,"c":{"d":1,"d":2}}}}"#, "invalid_json"),
        (r#"{"type":"chat.read","payload":{"list":[{"x":1,"x":1}]}}"#, "invalid_json"),
        (r#"{"payload":{"qty":1,"qty":2},"type":"chat.read"}"#, "invalid_json"),
        // At the top level: type, payload, id, escaped or not.
        (r#"{"type":"chat.read","type":"chat.send","payload":{}}"#, "invalid_envelope"),
        (r#"{"type":"chat.read","payload":{},"\u0070ayload":{"x":1}}"#, "invalid_envelope"),
        (r#"{"type":"chat.read","payload":{},"id":"a","id":"b"}"#, "invalid_envelope"),
        (r#"{"\u0074ype":"chat.read","type":"chat.read","payload":{}}"#, "invalid_envelope"),
    ] {
        assert_eq!(verdict(&mut ws, text).await.as_deref(), Some(code), "{text}");
    }
    // Escaped names that are really the envelope's own are read as them.
    let ok = r#"{"\u0074ype":"chat.read","\u0070ayload":{"q\u0074y":1},"i\u0064":"x"}"#;
    assert_eq!(verdict(&mut ws, ok).await, None);
    still_served(&mut good).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn non_standard_numbers_and_lone_surrogates_are_invalid_json_and_big_integers_pass_verbatim() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).limits("violations_before_close = 0"));
    let mut good = served_beside(&gw).await;
    let mut ws = gw.connect().await;
    for value in [
        "1e400",
        "-1e400",
        "1E400",
        "NaN",
        "Infinity",
        "-Infinity",
        "01",
        "-01",
        "+1",
        ".5",
        "0.",
        "1.e5",
        "0x10",
        r#""\ud800""#,
        r#""\udc00""#,
        r#""\ud800\u0041""#,
        r#""\ud800x""#,
        // 400 digits: outside double range as well.
        &"9".repeat(400),
    ] {
        for kind in ["chat.read", "chat.send"] {
            let text = format!(r#"{{"type":"{kind}","payload":{{"text":"t","n":{value}}}}}"#);
            assert_eq!(verdict(&mut ws, &text).await.as_deref(), Some("invalid_json"), "{text}");
        }
        let in_id = format!(r#"{{"type":"chat.read","payload":{{}},"id":{value}}}"#);
        assert_eq!(verdict(&mut ws, &in_id).await.as_deref(), Some("invalid_json"), "{in_id}");
    }
    for value in [
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "-0",
        "1E5",
        "1e-400",
        "0.5e+3",
        r#""\ud83d\ude00""#,
    ] {
        let text = format!(r#"{{"type":"chat.read","payload":{{"n":{value}}},"id":"v"}}"#);
        assert_eq!(verdict(&mut ws, &text).await, None, "forwarded byte for byte: {text}");
    }
    still_served(&mut good).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn extra_top_level_fields_are_refused_unless_the_route_forwards_them() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).limits("violations_before_close = 0"));
    let mut good = served_beside(&gw).await;
    let mut ws = gw.connect().await;
    for extra in [r#""sub":"admin""#, r#""user_id":1"#, r#""tenant":{"id":"t1"}"#, r#""__proto__":{}"#, r#""Type":"x""#]
    {
        let text = format!(r#"{{"type":"chat.read","payload":{{}},{extra}}}"#);
        assert_eq!(verdict(&mut ws, &text).await.as_deref(), Some("invalid_envelope"), "{text}");
    }
    still_served(&mut good).await;

    let gw = spawn_gateway(
        &Setup::new(&echo_upstream().await).route(r#"extra_fields = "forward""#).limits("violations_before_close = 0"),
    );
    let mut ws = gw.connect().await;
    let text = r#"{"type":"chat.read","payload":{},"tenant":"t1","trace":{"n":18446744073709551616}}"#;
    assert_eq!(verdict(&mut ws, text).await, None, "forwarded verbatim");
    // Still parsed strictly: duplicates and bad numbers in forwarded fields are refused.
    let dup = r#"{"type":"chat.read","payload":{},"tenant":"a","tenant":"b"}"#;
    assert_eq!(verdict(&mut ws, dup).await.as_deref(), Some("invalid_envelope"));
    let bad = r#"{"type":"chat.read","payload":{},"trace":{"n":1e400}}"#;
    assert_eq!(verdict(&mut ws, bad).await.as_deref(), Some("invalid_json"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_clients_behind_a_proxy_are_capped_by_their_64_prefix() {
    let gw = spawn_gateway(
        &Setup::new(&echo_upstream().await)
            .server(r#"trusted_proxies = ["127.0.0.1/32"]"#)
            .limits("max_connections_per_ip = 2"),
    );
    let t = token();
    let open = |xff: &'static str| {
        let t = t.clone();
        let gw = &gw;
        async move { gw.connect_with("/ws", Some(ORIGIN), Some(&t), &[("x-forwarded-for", xff)]).await }
    };
    let _a = open("2001:db8:1:2::1").await.expect("first of the /64");
    let _b = open("2001:db8:1:2:ffff::2").await.expect("second of the /64");
    let third = open("2001:db8:1:2:aaaa:bbbb:cccc:dddd").await.expect_err("a third address of the same /64");
    assert_eq!(status(&third), 429);
    let _c = open("2001:db8:1:3::1").await.expect("another /64 is another client");
    // The admin API keeps the full address.
    let (_, list) = gw.admin("GET", "/admin/connections", None).await;
    let ips: Vec<&str> =
        list["connections"].as_array().expect("list").iter().filter_map(|c| c["client_ip"].as_str()).collect();
    assert!(ips.contains(&"2001:db8:1:2:ffff::2"), "{ips:?}");
    assert_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refused_message_is_logged_with_a_bound_per_connection() {
    let gw = spawn_gateway(
        &Setup::new(&echo_upstream().await).limits("violations_before_close = 0\nmessages_per_second = 0"),
    );
    let mut good = served_beside(&gw).await;
    let mut ws = gw.connect().await;
    assert_eq!(verdict(&mut ws, r#"{"type":"nope","payload":{}}"#).await.as_deref(), Some("unknown_type"));
    for _ in 0..300 {
        ws.send_text("{".to_string()).await;
    }
    for _ in 0..300 {
        assert_eq!(code_of_frame(recv(&mut ws).await), "invalid_json");
    }
    let _ = ws.close(None).await;
    drop(ws);
    still_served(&mut good).await;
    // The connection_closed line carries the count of lines left out.
    let mut log = String::new();
    for _ in 0..50 {
        log = gw.log();
        if log.contains(r#""refusals_not_logged""#) && log.contains(r#""reason":"client_closed""#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "message_refused")
        .collect();
    assert!(!refused.is_empty(), "{log}");
    assert!(refused.len() < 300, "the log is bounded: {} lines for 301 refusals", refused.len());
    let first = &refused[0];
    assert_eq!(first["level"], "WARN");
    let f = first;
    assert_eq!((f["code"].as_str(), f["message_type"].as_str()), (Some("unknown_type"), Some("nope")), "{first}");
    assert_eq!(f["subject"], "alice");
    assert_eq!(f["route"], "/ws");
    assert_eq!(f["client_ip"], "127.0.0.1");
    assert!(f["conn_id"].is_u64());
    let reported: u64 = refused.iter().filter_map(|v| v["suppressed"].as_u64()).sum::<u64>()
        + log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["refusals_not_logged"].as_u64())
            .sum::<u64>();
    assert_eq!(refused.len() as u64 + reported, 301, "every refusal is logged or counted");
    assert!(!log.contains(&token()), "a token never reaches the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_opcodes_are_a_protocol_error() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await));
    let mut good = served_beside(&gw).await;
    for opcode in [0x03, 0x07, 0x0b, 0x0f] {
        let mut raw = RawClient::connect(&gw, "/ws").await;
        raw.send(opcode, true, b"x").await;
        assert_eq!(raw.close_code().await, 1002, "opcode {opcode:#x}");
    }
    still_served(&mut good).await;
}

fn code_of_frame(m: Message) -> String {
    let Message::Text(t) = m else { panic!("expected a text frame, got {m:?}") };
    let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
    v["payload"]["code"].as_str().unwrap_or("").to_string()
}
