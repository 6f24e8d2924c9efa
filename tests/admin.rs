//! The admin listener: health, readiness, and Prometheus metrics with every docs/observability.md name,
//! help text, and no IP, subject or token in any label.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_health_and_readiness_are_served_on_the_admin_listener_only() {
    // One sensitive-data rule and [tickets], so that their (pre-registered) series are rendered
    // too.
    let gw = spawn_gateway(
        &Setup::new(&echo_upstream().await)
            .route("token_sources = [\"header\", \"ticket\"]\n[[routes.sensitive]]\nrule = \"card_number\"\n")
            .tail("[tickets]\n"),
    );
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
    // One connection that ends, so the lifetime histogram has a sample to render.
    let mut short = gw.connect().await;
    short.close(None).await.expect("close");
    while let Some(Ok(_)) = short.next().await {}
    let mut body = String::new();
    for _ in 0..100 {
        let (status, text) = gw.admin_get("/metrics").await;
        assert_eq!(status, 200);
        body = text;
        if body.contains("wsgate_connection_duration_seconds_count 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for name in wsgate::metrics::names::ALL {
        if wsgate::metrics::names::FLEET_ONLY.contains(&name) {
            assert!(!body.contains(name), "{name} without fleet mode");
            continue;
        }
        assert!(body.contains(&format!("# HELP {name}")), "no HELP for {name}");
    }
    assert!(body.contains(r#"wsgate_connections_active{route="/ws"} 1"#), "{body}");
    assert!(body.contains(r#"wsgate_handshakes_total{route="/ws",result="origin"} 1"#));
    assert!(body.contains(r#"wsgate_messages_total{route="/ws",direction="in",verdict="forwarded"} 1"#));
    assert!(body.contains("wsgate_message_forward_seconds_bucket"), "histograms have buckets");
    assert!(!body.contains("127.0.0.1"), "an IP in a label");
    assert!(!body.contains("alice"), "a subject in a label");
}
