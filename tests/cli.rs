//! The command line as a new user meets it: `check-config` errors, `token`, and `wsgate demo`
//! end to end (printed token, printed client command, a real client through it).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[test]
fn a_bad_value_fails_with_the_key_path_and_a_nonzero_exit() {
    let good = Setup::new("ws://127.0.0.1:9/").toml();
    let bad = good.replace("[limits]\n", "[limits]\nmessages_per_second = \"fast\"\n");
    let (_dir, path) = write_config(&bad);
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .env("WSGATE_TEST_SECRET", SECRET)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limits.messages_per_second: invalid type: string \"fast\", expected u32"), "{err}");
    // Unknown keys and a missing secret are errors too; a good file passes.
    let (_d2, unknown) = write_config(&good.replace("[timeouts]\n", "[timeouts]\nidle_secs = 1\n"));
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&unknown)
        .env("WSGATE_TEST_SECRET", SECRET)
        .output()
        .expect("run");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("timeouts.idle_secs"));
    let (_d3, ok) = write_config(&good);
    let out = Command::new(bin()).args(["check-config", "--config"]).arg(&ok).output().expect("run");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("WSGATE_TEST_SECRET"),
        "missing secret env is named"
    );
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&ok)
        .env("WSGATE_TEST_SECRET", SECRET)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_prints_only_a_jwt_the_gateway_accepts() {
    let gw = spawn_gateway(&Setup::new(&format!("{}/whoami", echo_upstream().await)));
    let path = gw.dir.path().join("wsgate.toml");
    let out = Command::new(bin())
        .args(["token", "--config"])
        .arg(&path)
        .args(["--sub", "scripted", "--scope", "chat:read", "--ttl", "5m"])
        .env("WSGATE_TEST_SECRET", SECRET)
        .output()
        .expect("run");
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    let jwt = stdout.trim();
    assert_eq!(stdout.lines().count(), 1);
    assert_eq!(jwt.split('.').count(), 3, "{jwt}");
    let mut ws = gw.connect_with("/ws", Some(ORIGIN), Some(jwt), &[]).await.expect("minted token accepted");
    assert_eq!(recv_json(&mut ws).await["x-wsgate-subject"], "scripted");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_prints_a_working_token_and_client_command() {
    let mut child = Command::new(bin())
        .args(["demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        let done = line.starts_with("then send");
        lines.push(line);
        if done {
            break;
        }
    }
    let find = |prefix: &str| lines.iter().find_map(|l| l.strip_prefix(prefix).map(str::to_string));
    let token = find("token: ").expect("token line");
    let url = find("wsgate demo: gateway ").and_then(|l| l.split_whitespace().next().map(str::to_string)).expect("url");
    assert!(find("client (Node): ").is_some_and(|c| c.contains(&url) && c.contains(&token)));
    // A browser-style connection: the token rides in the subprotocol list.
    let mut req = url.into_client_request().expect("req");
    req.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_str(&format!("chat.v1, bearer.{token}")).expect("hv"));
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.expect("connect to demo");
    assert_eq!(resp.headers().get("sec-websocket-protocol").map(|v| v.as_bytes()), Some(&b"chat.v1"[..]));
    assert_eq!(recv_json(&mut ws).await["x-wsgate-subject"], "demo");
    let msg = serde_json::json!({"type": "chat.send", "payload": {"room": "ops", "text": "hi"}, "id": "c-1"});
    send_json(&mut ws, &msg).await;
    assert_eq!(recv_json(&mut ws).await, msg);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/wsgate.example.toml");
    let out = Command::new(bin())
        .args(["check-config", "--config", path])
        .env("WSGATE_JWT_SECRET", "an-example-secret-of-at-least-32-bytes")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
