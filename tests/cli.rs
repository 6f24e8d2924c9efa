//! The command line as a new user meets it: `check-config` errors, `token`, and `wsgate demo`
//! end to end (printed token, printed client command, a real client through it, and the
//! printed ticket example: a ticket fetched and a client connected with it).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// `wsgate check-config --config path` with the test secret in the environment.
fn check_config(path: &std::path::Path) -> std::process::Output {
    Command::new(bin())
        .args(["check-config", "--config"])
        .arg(path)
        .env("WSGATE_TEST_SECRET", SECRET)
        .output()
        .expect("run")
}

#[test]
fn a_bad_value_fails_with_the_key_path_and_a_nonzero_exit() {
    let good = Setup::new("ws://127.0.0.1:9/").toml();
    let bad = good.replace("[limits]\n", "[limits]\nmessages_per_second = \"fast\"\n");
    let (_dir, path) = write_config(&bad);
    let out = check_config(&path);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limits.messages_per_second: invalid type: string \"fast\", expected u32"), "{err}");
    // Unknown keys and a missing secret are errors too; a good file passes.
    let (_d2, unknown) = write_config(&good.replace("[timeouts]\n", "[timeouts]\nidle_secs = 1\n"));
    let out = check_config(&unknown);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("timeouts.idle_secs"));
    let (_d3, ok) = write_config(&good);
    let out = Command::new(bin()).args(["check-config", "--config"]).arg(&ok).output().expect("run");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("WSGATE_TEST_SECRET"),
        "missing secret env is named"
    );
    let out = check_config(&ok);
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
    let mut req = url.clone().into_client_request().expect("req");
    req.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_str(&format!("chat.v1, bearer.{token}")).expect("hv"));
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.expect("connect to demo");
    assert_eq!(resp.headers().get("sec-websocket-protocol").map(|v| v.as_bytes()), Some(&b"chat.v1"[..]));
    assert_eq!(recv_json(&mut ws).await["x-wsgate-subject"], "demo");
    let msg = serde_json::json!({"type": "chat.send", "payload": {"room": "ops", "text": "hi"}, "id": "c-1"});
    send_json(&mut ws, &msg).await;
    assert_eq!(recv_json(&mut ws).await, msg);

    // The ticket example: POST /v1/ws-ticket with the token, then ?ticket= on the printed URL.
    let curl = find("ticket (curl): ").expect("a ticket curl line");
    let snippet = find("browser with a ticket: ").expect("a ticket browser line");
    assert!(snippet.contains("fetch(") && snippet.contains("new WebSocket(") && snippet.contains("?ticket="));
    let endpoint = curl.split_whitespace().find(|w| w.ends_with("/v1/ws-ticket")).expect("endpoint in the curl line");
    assert!(curl.contains(&token) && snippet.contains(endpoint), "{curl}\n{snippet}");
    let addr: std::net::SocketAddr =
        endpoint.trim_start_matches("http://").trim_end_matches("/v1/ws-ticket").parse().expect("address");
    let req = format!(
        "POST /v1/ws-ticket HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
    );
    let (status, text) = raw_request(addr, &req).await;
    assert_eq!(status, 200, "{text}");
    let body: serde_json::Value = serde_json::from_str(text.split_once("\r\n\r\n").expect("body").1).expect("json");
    let ticket = body["ticket"].as_str().expect("ticket");
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{url}?ticket={ticket}")).await.expect("ticket accepted");
    assert_eq!(recv_json(&mut ws).await["x-wsgate-subject"], "demo");
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

/// The `wsgate.toml` of a Kubernetes ConfigMap manifest (the block under `wsgate.toml: |`).
fn configmap_toml(manifest: &str) -> String {
    let text = std::fs::read_to_string(manifest).expect("manifest");
    let (_, block) = text.split_once("wsgate.toml: |\n").expect("a wsgate.toml block");
    block.lines().map(|l| l.strip_prefix("    ").unwrap_or(l)).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_kubernetes_configs_are_valid_and_the_fleet_one_says_so() {
    for (manifest, fleet) in
        [("deploy/kubernetes/configmap.yaml", false), ("deploy/kubernetes/fleet/configmap.yaml", true)]
    {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("wsgate.toml");
        std::fs::write(&path, configmap_toml(&format!("{}/{manifest}", env!("CARGO_MANIFEST_DIR")))).expect("write");
        let out = Command::new(bin())
            .args(["check-config", "--config"])
            .arg(&path)
            .env("WSGATE_JWT_SECRET", "an-example-secret-of-at-least-32-bytes")
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{manifest}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(stdout.contains("fleet: node"), fleet, "{manifest}: {stdout}");
    }
}

#[test]
fn a_listen_address_in_use_exits_non_zero_with_one_line_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    for (key, server, admin) in [
        ("server.listen", format!("listen = \"{addr}\""), String::new()),
        ("admin.listen", String::new(), format!("{addr}")),
    ] {
        let mut toml = Setup::new("ws://127.0.0.1:9/").server(&server).toml();
        if !admin.is_empty() {
            toml = toml.replacen("[admin]\nlisten = \"127.0.0.1:0\"", &format!("[admin]\nlisten = \"{admin}\""), 1);
            toml = toml.replacen("listen = \"127.0.0.1:0\"\n\n", "listen = \"127.0.0.1:0\"\n", 1);
        } else {
            toml = toml.replacen("[server]\nlisten = \"127.0.0.1:0\"\n", "[server]\n", 1);
        }
        let (_dir, path) = write_config(&toml);
        let out = Command::new(bin())
            .args(["serve", "--config"])
            .arg(&path)
            .env("WSGATE_TEST_SECRET", SECRET)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{key}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim(), format!("wsgate: {key} {addr}: address already in use"), "{key}");
    }
    for args in [["--listen", &addr.to_string()], ["--admin-listen", &addr.to_string()]] {
        let out = Command::new(bin()).arg("demo").args(args).output().expect("run demo");
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let key = if args[0] == "--listen" { "server.listen" } else { "admin.listen" };
        assert_eq!(err.trim(), format!("wsgate: {key} {addr}: address already in use"), "{args:?}");
    }
}

#[test]
fn check_config_refuses_cookie_tokens_on_a_route_that_allows_a_missing_origin() {
    let toml =
        Setup::new("ws://127.0.0.1:9/").route("token_sources = [\"cookie\"]\nallow_missing_origin = true").toml();
    let (_dir, path) = write_config(&toml);
    let out = check_config(&path);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routes[0].allow_missing_origin: must be false on a route with the cookie token source"),
        "{err}"
    );
}

#[test]
fn token_refuses_a_lifetime_the_gateway_would_refuse() {
    let (_dir, path) = write_config(&Setup::new("ws://127.0.0.1:9/").toml());
    for ttl in ["25h", "99999999999999d"] {
        let out = Command::new(bin())
            .args(["token", "--config"])
            .arg(&path)
            .args(["--sub", "a", "--scope", "x", "--ttl", ttl])
            .env("WSGATE_TEST_SECRET", SECRET)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{ttl}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("auth.max_token_lifetime_seconds"), "{ttl}: {err}");
        assert!(!err.contains("panicked"), "{ttl}: {err}");
    }
}

/// The admin `curl` lines of the README and of docs/operations.md, run as printed (only the
/// address is the test gateway's): each must do what its comment says.
#[tokio::test(flavor = "multi_thread")]
async fn the_docs_admin_curl_lines_work_when_pasted() {
    assert!(
        Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success()),
        "curl is needed by this test (CI installs it)"
    );
    for doc in ["README.md", "docs/operations.md"] {
        let text = std::fs::read_to_string(format!("{}/{doc}", env!("CARGO_MANIFEST_DIR"))).expect("doc");
        let block = text.split("H=\"Authorization: Bearer $WSGATE_ADMIN_TOKEN\"\n").nth(1).expect("an admin block");
        let lines: Vec<&str> = block.lines().take_while(|l| l.starts_with("curl ")).collect();
        assert!(lines.len() >= 3, "{doc}: {lines:?}");
        run_curl_lines(doc, &lines).await;
    }
}

async fn run_curl_lines(doc: &str, lines: &[&str]) {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await));
    let mut alice = gw
        .connect_with("/ws", Some(ORIGIN), Some(&sign(&claims("alice", "chat:read", 600))), &[])
        .await
        .expect("connect");
    for line in lines {
        let line = line.replace("127.0.0.1:9090", &gw.admin.to_string());
        let script = format!("H=\"Authorization: Bearer $WSGATE_ADMIN_TOKEN\"\n{line}");
        let out =
            Command::new("bash").args(["-c", &script]).env("WSGATE_ADMIN_TOKEN", ADMIN_TOKEN).output().expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{doc}: {line}: {}", String::from_utf8_lossy(&out.stderr));
        let expected = if line.contains("/admin/revoke") {
            "\"closed\":"
        } else if line.contains("DELETE") {
            "no live connection"
        } else if line.contains("/admin/connections") {
            "\"connections\":"
        } else if line.contains("/admin/reload") {
            "reloaded"
        } else {
            "drain"
        };
        assert!(stdout.contains(expected), "{doc}: {line}: {stdout}");
    }
    // The subject revocation line (`{"sub":"alice"}`, curl's form content type) closed alice.
    assert_eq!(close_code(&mut alice).await, 4003, "{doc}");
}

#[test]
fn init_prints_a_config_check_config_accepts() {
    let out = Command::new(bin()).arg("init").output().expect("run init");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.lines().filter(|l| l.trim_start().starts_with('#')).count() >= 5, "commented: {text}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wsgate.toml");
    std::fs::write(&path, &text).expect("write");
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .env("WSGATE_JWT_SECRET", "an-example-secret-of-at-least-32-bytes")
        .output()
        .expect("run check-config");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin()).args(["completions", shell]).output().expect("run completions");
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("check-config") && text.contains("wsgate"), "{shell}: {text}");
    }
    // bash loads its script and registers the completion.
    let script = format!("source <({} completions bash) && complete -p wsgate", bin());
    let out = Command::new("bash").args(["-c", &script]).output().expect("bash");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("wsgate"), "{out:?}");
    let out = Command::new(bin()).args(["completions", "tcsh-9"]).output().expect("run");
    assert!(!out.status.success(), "an unknown shell is an error");
}

#[test]
fn the_config_schema_accepts_the_example_and_refuses_unknown_keys_and_wrong_types() {
    let out = Command::new(bin()).arg("config-schema").output().expect("run config-schema");
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let as_json = |toml_text: &str| -> serde_json::Value {
        let v: toml::Value = toml::from_str(toml_text).expect("toml");
        serde_json::to_value(v).expect("json")
    };
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/wsgate.example.toml")).expect("example");
    let errors: Vec<String> = validator.iter_errors(&as_json(&example)).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let init = String::from_utf8(Command::new(bin()).arg("init").output().expect("init").stdout).expect("utf-8");
    assert!(validator.is_valid(&as_json(&init)));
    let unknown = example.replace("[limits]\n", "[limits]\nmessages_per_sec = 5\n");
    assert!(!validator.is_valid(&as_json(&unknown)), "an unknown key");
    let wrong = example.replace("[limits]\n", "[limits]\nmax_connections = \"many\"\n");
    let wrong = wrong.replacen("\nmax_connections = 100000", "\n", 1);
    assert!(!validator.is_valid(&as_json(&wrong)), "a wrong type");
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_exits_zero_only_when_healthz_answers() {
    let gw = spawn_gateway(&Setup::new(&echo_upstream().await));
    let out = Command::new(bin()).args(["healthcheck", "--admin", &gw.admin.to_string()]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "healthy");
    // The public listener is no admin listener: its answer to /healthz is not a 200.
    let out = Command::new(bin()).args(["healthcheck", "--admin", &gw.public.to_string()]).output().expect("run");
    assert!(!out.status.success());
    // From the config: the admin address the gateway was started with.
    let out = Command::new(bin())
        .args(["healthcheck", "--config"])
        .arg(gw.config_path())
        .env("WSGATE_TEST_SECRET", SECRET)
        .output()
        .expect("run");
    assert!(!out.status.success(), "the test config listens on port 0, which is not where the gateway is");
    let toml = std::fs::read_to_string(gw.config_path()).expect("config").replacen(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!("[admin]\nlisten = \"0.0.0.0:{}\"", gw.admin.port()),
        1,
    );
    let (_dir, path) = write_config(&toml);
    let out = Command::new(bin()).args(["healthcheck", "--config"]).arg(&path).output().expect("run");
    assert!(
        out.status.success(),
        "0.0.0.0:<admin port> is checked on loopback: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let out = Command::new(bin()).args(["healthcheck", "--admin", &dead.to_string()]).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("connect {dead}")));
}
