//! The sensitive-data guard through the binary: each action (log, redact, block) in each
//! direction, violations, reload, `check-config`, and that no value it found reaches a log
//! line, a metric or an error frame.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const CARD: &str = "4111 1111 1111 1111";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const PASSWORD: &str = "hunter2-correct-horse";

/// `[[routes.sensitive]]` tables for the default route: card numbers blocked, password fields
/// redacted, AWS keys logged, all in `direction`.
fn rules(direction: &str) -> String {
    format!(
        "[[routes.sensitive]]\nrule = \"card_number\"\ndirection = \"{direction}\"\naction = \"block\"\n\
         [[routes.sensitive]]\nrule = \"password_field\"\ndirection = \"{direction}\"\naction = \"redact\"\n\
         [[routes.sensitive]]\nrule = \"aws_access_key\"\ndirection = \"{direction}\"\naction = \"log\"\n"
    )
}

fn assert_no_value_leaked(text: &str) {
    for value in [CARD, "4111111111111111", AWS_KEY, PASSWORD] {
        assert!(!text.contains(value), "{value} leaked into: {text}");
    }
}

async fn metric(gw: &Gateway, rule: &str, direction: &str, action: &str) -> u64 {
    let (_, body) = gw.admin_get("/metrics").await;
    let series = format!(
        "wsgate_sensitive_hits_total{{route=\"/ws\",rule=\"{rule}\",direction=\"{direction}\",action=\"{action}\"}} "
    );
    body.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Wait until the log holds `n` `sensitive_data` events (the log is written asynchronously).
async fn events(gw: &Gateway, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let found: Vec<Value> = gw
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["event"] == "sensitive_data" || v["event"] == "sensitive_data")
            .collect();
        if found.len() >= n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} sensitive_data events in: {}", gw.log());
}

fn text_of(m: Message) -> String {
    match m {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

fn field<'a>(event: &'a Value, name: &str) -> &'a Value {
    if event["fields"].is_object() {
        &event["fields"][name]
    } else {
        &event[name]
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_messages_are_logged_redacted_or_blocked_and_no_value_leaks() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).route(&rules("client_to_upstream")));
    let mut ws = gw.connect().await;

    // log: forwarded unchanged.
    let logged = json!({"type": "chat.read", "payload": {"note": format!("key {AWS_KEY} here")}});
    send_json(&mut ws, &logged).await;
    assert_eq!(recv_json(&mut ws).await, logged);

    // redact: the upstream receives (and echoes) the redacted message, still valid JSON.
    let secret = json!({"type": "chat.read", "payload": {"user": "alice", "Password": PASSWORD, "n": [1, 2]}});
    send_json(&mut ws, &secret).await;
    let echoed = recv_json(&mut ws).await;
    assert_eq!(echoed["payload"]["Password"], "[REDACTED:password_field]", "{echoed}");
    assert_eq!(echoed["payload"]["user"], "alice");
    assert_eq!(echoed["payload"]["n"], json!([1, 2]));
    // An escaped member name is the same name.
    let escaped = r#"{"type":"chat.read","payload":{"pass\u0077ord":"hunter2-correct-horse"}}"#;
    ws.send(Message::text(escaped)).await.expect("send");
    let echoed = recv_json(&mut ws).await;
    assert_eq!(echoed["payload"]["password"], "[REDACTED:password_field]", "{echoed}");

    // block: not forwarded; an error frame with the message's id; the connection stays up.
    let card = json!({"type": "chat.read", "payload": {"card": CARD}, "id": "m-9"});
    send_json(&mut ws, &card).await;
    let error = recv_json(&mut ws).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["payload"]["code"], "sensitive_data");
    assert_eq!(error["payload"]["ref"], "m-9");
    assert_no_value_leaked(&error.to_string());
    // A card number that fails Luhn is no card number.
    let not_a_card = json!({"type": "chat.read", "payload": {"n": "4111 1111 1111 1112"}});
    send_json(&mut ws, &not_a_card).await;
    assert_eq!(recv_json(&mut ws).await, not_a_card);

    let found = events(&gw, 4).await;
    for (rule, action) in [("aws_access_key", "log"), ("password_field", "redact"), ("card_number", "block")] {
        let e = found.iter().find(|e| field(e, "rule") == rule).unwrap_or_else(|| panic!("no {rule} event"));
        assert_eq!(field(e, "action"), action);
        assert_eq!(field(e, "direction"), "in");
        assert_eq!(field(e, "subject"), "alice");
        let fingerprint = field(e, "fingerprint").as_str().unwrap_or("");
        assert!(fingerprint.len() == 16 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit()), "{e}");
        assert!(field(e, "len").as_u64().unwrap_or(0) > 0, "{e}");
    }
    let card_event = found.iter().find(|e| field(e, "rule") == "card_number").expect("card event");
    assert_eq!(field(card_event, "pointer"), "/payload/card");
    assert_eq!(metric(&gw, "card_number", "in", "block").await, 1);
    assert_eq!(metric(&gw, "password_field", "in", "redact").await, 2);
    assert_eq!(metric(&gw, "aws_access_key", "in", "log").await, 1);
    let (_, body) = gw.admin_get("/metrics").await;
    assert!(body.contains(r#"verdict="sensitive_data"} 1"#), "the blocked message is counted as refused");
    assert_no_value_leaked(&body);
    assert_no_value_leaked(&gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_messages_are_logged_redacted_or_dropped() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).route(&rules("upstream_to_client")));
    let mut ws = gw.connect().await;
    // Nothing is done on the way in: the echo sends each message back, the guard reads it there.
    let logged = json!({"type": "chat.read", "payload": {"note": AWS_KEY}});
    send_json(&mut ws, &logged).await;
    assert_eq!(recv_json(&mut ws).await, logged);
    send_json(&mut ws, &json!({"type": "chat.read", "payload": {"api_key": PASSWORD}})).await;
    assert_eq!(recv_json(&mut ws).await["payload"]["api_key"], "[REDACTED:password_field]");
    // A blocked upstream message is dropped: the next message the client gets is the clean one.
    send_json(&mut ws, &json!({"type": "chat.read", "payload": {"card": CARD}})).await;
    let clean = json!({"type": "chat.read", "payload": {"text": "after"}});
    send_json(&mut ws, &clean).await;
    assert_eq!(recv_json(&mut ws).await, clean);

    let found = events(&gw, 3).await;
    assert!(found.iter().all(|e| field(e, "direction") == "out"), "{found:?}");
    assert_eq!(metric(&gw, "card_number", "out", "block").await, 1);
    assert_eq!(metric(&gw, "password_field", "out", "redact").await, 1);
    assert_eq!(metric(&gw, "aws_access_key", "out", "log").await, 1);
    assert_no_value_leaked(&gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn blocked_messages_are_violations() {
    let gw =
        spawn_gateway(&Setup::new(&echo_upstream().await).limits("violations_before_close = 2").route(&rules("both")));
    let mut ws = gw.connect().await;
    let card = json!({"type": "chat.read", "payload": {"card": CARD}});
    send_json(&mut ws, &card).await;
    assert_eq!(recv_json(&mut ws).await["payload"]["code"], "sensitive_data");
    send_json(&mut ws, &card).await;
    assert_eq!(recv_json(&mut ws).await["payload"]["code"], "sensitive_data");
    assert_eq!(close_code(&mut ws).await, 1008);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_changes_the_rules_of_open_connections() {
    let setup = Setup::new(&echo_upstream().await);
    let gw = spawn_gateway(&setup);
    let mut ws = gw.connect().await;
    let card = json!({"type": "chat.read", "payload": {"card": CARD}});
    send_json(&mut ws, &card).await;
    assert_eq!(recv_json(&mut ws).await, card, "no rule yet");
    std::fs::write(gw.config_path(), setup.route(&rules("both")).toml()).expect("rewrite config");
    gw.signal("HUP");
    wait_for_log(&gw, "\"event\":\"config_reloaded\"", 1).await;
    send_json(&mut ws, &card).await;
    assert_eq!(recv_json(&mut ws).await["payload"]["code"], "sensitive_data", "the open connection takes the rule");
}

/// `wsgate check-config` on the config of `setup`.
fn check_config(setup: &Setup) -> std::process::Output {
    let (_dir, path) = write_config(&setup.toml());
    std::process::Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .env("WSGATE_TEST_SECRET", SECRET)
        .output()
        .expect("run")
}

#[test]
fn check_config_names_the_key_of_a_bad_rule() {
    let base = Setup::new("ws://127.0.0.1:9/");
    for (rule, key) in [
        ("rule = \"ssn\"\npattern = \"[0-9]{3\"\n", "routes[0].sensitive[0].pattern"),
        ("rule = \"nope\"\n", "routes[0].sensitive[0].rule"),
        ("rule = \"card_number\"\npattern = \"x\"\n", "routes[0].sensitive[0].pattern"),
        ("rule = \"iban\"\nfields = [\"a\"]\n", "routes[0].sensitive[0].fields"),
        ("rule = \"card_number\"\naction = \"shred\"\n", "routes[0].sensitive[0].action"),
    ] {
        let out = check_config(&base.clone().route(&format!("[[routes.sensitive]]\n{rule}")));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(key), "{rule}: {stderr}");
    }
    let ok = "[[routes.sensitive]]\nrule = \"employee_id\"\npattern = \"EMP-[0-9]{6}\"\nkeywords = [\"emp-\"]\n";
    let out = check_config(&base.route(ok));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn member_names_and_nested_password_values_are_read_and_never_written_down() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).route(&rules("client_to_upstream")));
    let mut ws = gw.connect().await;
    // a card number used as a member name is a card number: blocked, and its event's pointer
    // hides the name
    let named = json!({"type": "chat.read", "payload": {"4111111111111111": "x"}, "id": "k-1"});
    send_json(&mut ws, &named).await;
    let error = recv_json(&mut ws).await;
    assert_eq!(
        (error["payload"]["code"].as_str(), error["payload"]["ref"].as_str()),
        (Some("sensitive_data"), Some("k-1"))
    );
    // a password member whose value is an array or an object: every string under it redacted
    let nested = json!({"type": "chat.read", "payload": {"token": ["t1", {"v": PASSWORD}], "ok": "kept"}});
    send_json(&mut ws, &nested).await;
    let echoed = recv_json(&mut ws).await;
    assert_eq!(
        echoed["payload"]["token"],
        json!(["[REDACTED:password_field]", {"v": "[REDACTED:password_field]"}]),
        "{echoed}"
    );
    assert_eq!(echoed["payload"]["ok"], "kept");
    let found = events(&gw, 3).await;
    let card = found.iter().find(|e| field(e, "rule") == "card_number").expect("card event");
    assert_eq!(field(card, "pointer"), "/payload/[REDACTED]");
    let pointers: Vec<&str> = found
        .iter()
        .filter(|e| field(e, "rule") == "password_field")
        .filter_map(|e| field(e, "pointer").as_str())
        .collect();
    // names under the member are part of its value: hidden too
    assert_eq!(pointers, ["/payload/token/0", "/payload/token/1/[REDACTED]"]);
    assert_no_value_leaked(&gw.log());
    let (_, body) = gw.admin_get("/metrics").await;
    assert_no_value_leaked(&body);
}

#[tokio::test(flavor = "multi_thread")]
async fn hits_past_the_listed_ones_are_counted_in_full() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await).route(&rules("both")));
    let mut ws = gw.connect().await;
    // 1100 AWS keys (action log) in one message: 1024 are listed, the rest counted per rule.
    let keys = vec![AWS_KEY; 1100];
    let msg = json!({"type": "chat.read", "payload": {"keys": keys}});
    send_json(&mut ws, &msg).await;
    assert_eq!(recv_json(&mut ws).await, msg, "log: forwarded unchanged");
    assert_eq!(metric(&gw, "aws_access_key", "in", "log").await, 1100);
    assert_eq!(metric(&gw, "aws_access_key", "out", "log").await, 1100);
    let mut unlisted = Vec::new();
    for _ in 0..100 {
        unlisted = gw
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["event"] == "sensitive_data_unlisted" || v["event"] == "sensitive_data_unlisted")
            .collect();
        if !unlisted.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The client's message is reported first, its unlisted line before its listed hits (the
    // echo's lines fall in the same second's log budget, which the listed hits have used).
    assert!(unlisted.iter().any(|e| field(e, "direction") == "in"), "{}", gw.log());
    for e in &unlisted {
        assert_eq!(field(e, "rule"), "aws_access_key");
        assert_eq!(field(e, "count"), 1100 - 1024);
    }
    assert_no_value_leaked(&gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn members_in_text_that_is_not_json_are_read_in_each_direction() {
    let up = echo_upstream().await;
    let raw = |path: &str, direction: &str| {
        format!(
            "[[routes]]\npath = \"{path}\"\nupstream = \"{up}\"\norigins = [\"{ORIGIN}\"]\nenvelope = \"none\"\n\
             [[routes.sensitive]]\nrule = \"password_field\"\ndirection = \"{direction}\"\naction = \"block\"\n"
        )
    };
    let setup = Setup::new(&up)
        .more_routes(&raw("/raw-in", "client_to_upstream"))
        .more_routes(&raw("/raw-out", "upstream_to_client"));
    let gw = spawn_gateway(&setup);
    // cut short, and two JSON values in one message: not JSON, still a password member
    let cut = format!(r#"{{"user":"alice","password":"{PASSWORD}""#);
    let two = format!("{{\"a\":1}}\n{{\"Password\": \"{PASSWORD}\"}}");
    let mut inbound = gw.connect_with("/raw-in", Some(ORIGIN), Some(&token()), &[]).await.expect("connect");
    for text in [&cut, &two] {
        inbound.send(Message::text(text.as_str())).await.expect("send");
        let error = recv_json(&mut inbound).await;
        assert_eq!(error["payload"]["code"], "sensitive_data", "{text}: {error}");
    }
    let clean = r#"{"user":"alice","note":"password reset""#;
    inbound.send(Message::text(clean)).await.expect("send");
    assert_eq!(text_of(recv(&mut inbound).await), clean, "a name without a value is no hit");
    // from the upstream: dropped, the next message arrives
    let mut outbound = gw.connect_with("/raw-out", Some(ORIGIN), Some(&token()), &[]).await.expect("connect");
    outbound.send(Message::text(two.as_str())).await.expect("send");
    outbound.send(Message::text(clean)).await.expect("send");
    assert_eq!(text_of(recv(&mut outbound).await), clean);
    let found = events(&gw, 3).await;
    assert!(found.iter().all(|e| field(e, "rule") == "password_field" && field(e, "pointer") == ""), "{found:?}");
    assert_no_value_leaked(&gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_messages_are_read_when_a_rule_asks() {
    let up = echo_upstream().await;
    let route = |path: &str, direction: &str, binary: bool| {
        format!(
            "[[routes]]\npath = \"{path}\"\nupstream = \"{up}\"\norigins = [\"{ORIGIN}\"]\nenvelope = \"none\"\n\
             [[routes.sensitive]]\nrule = \"card_number\"\ndirection = \"{direction}\"\naction = \"block\"\nbinary = {binary}\n"
        )
    };
    let setup = Setup::new(&up)
        .more_routes(&route("/bin-in", "client_to_upstream", true))
        .more_routes(&route("/bin-out", "upstream_to_client", true))
        .more_routes(&route("/text-only", "both", false))
        .more_routes(&format!(
            "[[routes]]\npath = \"/bin-redact\"\nupstream = \"{up}\"\norigins = [\"{ORIGIN}\"]\nenvelope = \"none\"\n\
             [[routes.sensitive]]\nrule = \"password_field\"\naction = \"redact\"\nbinary = true\n"
        ));
    let gw = spawn_gateway(&setup);
    let mut payload = vec![0x82, 0xa4, 0xff, 0x00];
    payload.extend_from_slice(b"4111111111111111");
    let clean = vec![0xffu8, 0x00, b'4', b'1'];
    let t = token();
    let connect = |path: &'static str| gw.connect_with(path, Some(ORIGIN), Some(&t), &[]);
    // from the client: refused with the error frame, a clean one still flows
    let mut ws = connect("/bin-in").await.expect("connect");
    ws.send(Message::binary(payload.clone())).await.expect("send");
    assert_eq!(recv_json(&mut ws).await["payload"]["code"], "sensitive_data");
    ws.send(Message::binary(clean.clone())).await.expect("send");
    assert_eq!(recv(&mut ws).await, Message::binary(clean.clone()));
    // fragmented: assembled, then read
    let (head, tail) = payload.split_at(9);
    ws.send(raw_frame(head, 2, false)).await.expect("send");
    ws.send(raw_frame(tail, 0, true)).await.expect("send");
    assert_eq!(recv_json(&mut ws).await["payload"]["code"], "sensitive_data", "fragments are read whole");
    // from the upstream: dropped, the next message arrives
    let mut ws = connect("/bin-out").await.expect("connect");
    ws.send(raw_frame(head, 2, false)).await.expect("send");
    ws.send(raw_frame(tail, 0, true)).await.expect("send");
    ws.send(Message::binary(clean.clone())).await.expect("send");
    assert_eq!(recv(&mut ws).await, Message::binary(clean.clone()));
    // a rule without `binary = true` does not read them
    let mut ws = connect("/text-only").await.expect("connect");
    ws.send(Message::binary(payload.clone())).await.expect("send");
    assert_eq!(recv(&mut ws).await, Message::binary(payload.clone()));
    // a redact rule never rewrites a binary message: JSON in it is refused instead
    let mut ws = connect("/bin-redact").await.expect("connect");
    ws.send(Message::binary(format!(r#"{{"password":"{PASSWORD}"}}"#).into_bytes())).await.expect("send");
    assert_eq!(recv_json(&mut ws).await["payload"]["code"], "sensitive_data");
    let found = events(&gw, 4).await;
    let found: Vec<&Value> = found.iter().filter(|e| field(e, "rule") == "card_number").collect();
    let dirs: Vec<&str> = found.iter().map(|e| field(e, "direction").as_str().unwrap_or("")).collect();
    assert_eq!(dirs.iter().filter(|d| **d == "in").count(), 2, "{found:?}");
    assert_eq!(dirs.iter().filter(|d| **d == "out").count(), 1, "{found:?}");
    assert_no_value_leaked(&gw.log());
}
