//! The admin listener: health, readiness, and Prometheus metrics with every DESIGN.md §7 name,
//! help text, and no IP, subject or token in any label.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_health_and_readiness_are_served_on_the_admin_listener_only() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await));
    assert_eq!(gw.admin_get("/healthz").await.0, 200);
    assert_eq!(gw.admin_get("/readyz").await.0, 200);
    // Not on the public port.
    let (status, _) = http_get(gw.public, "/metrics").await;
    assert_ne!(status, 200);

    let mut ws = gw.connect().await;
    let msg = json!({"type": "chat.read", "payload": {}});
    send_json(&mut ws, &msg).await;
    assert_eq!(recv_json(&mut ws).await, msg);
    let _ = gw.connect_with("/ws", Some("https://evil.example"), Some(&token()), &[]).await;
    let (status, body) = gw.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "wsgate_connections_active",
        "wsgate_handshakes_total",
        "wsgate_messages_total",
        "wsgate_message_bytes_total",
        "wsgate_disconnects_total",
        "wsgate_auth_refresh_total",
        "wsgate_revocations_total",
        "wsgate_message_forward_seconds",
        "wsgate_handshake_seconds",
        "wsgate_upstream_connect_seconds",
        "wsgate_build_info",
    ] {
        assert!(body.contains(&format!("# HELP {name}")), "no HELP for {name}");
    }
    assert!(body.contains(r#"wsgate_connections_active{route="/ws"} 1"#), "{body}");
    assert!(body.contains(r#"wsgate_handshakes_total{route="/ws",result="origin"} 1"#));
    assert!(body.contains(r#"wsgate_messages_total{route="/ws",direction="in",verdict="forwarded"} 1"#));
    assert!(body.contains("wsgate_message_forward_seconds_bucket"), "histograms have buckets");
    assert!(!body.contains("127.0.0.1"), "an IP in a label");
    assert!(!body.contains("alice"), "a subject in a label");
}
