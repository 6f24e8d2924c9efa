//! Shared test harness: spawns the real `wsgate` binary on port 0 with a generated config,
//! test upstreams on loopback, and real WebSocket clients (tokio-tungstenite).
#![allow(dead_code)]

pub mod redis;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The HMAC secret the test gateways verify with (passed through the environment).
pub const SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";
/// The allowed browser origin of the default route.
pub const ORIGIN: &str = "https://app.example.com";
/// Issuer and audience the default config requires.
pub const ISSUER: &str = "https://idp.test/";
pub const AUDIENCE: &str = "wsgate";
/// The admin bearer token of the test gateways (unless `Setup::no_admin_token`).
pub const ADMIN_TOKEN: &str = "admin-test-token-7f3a9c";

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// Claims of a valid token for `sub` with `scope`, living `ttl` seconds.
pub fn claims(sub: &str, scope: &str, ttl: i64) -> Value {
    let n = now() as i64;
    serde_json::json!({"sub": sub, "scope": scope, "iat": n, "exp": n + ttl, "iss": ISSUER, "aud": AUDIENCE, "jti": format!("jti-{sub}-{n}")})
}

/// Sign `claims` with the test secret (HS256).
pub fn sign(claims: &Value) -> String {
    sign_with(claims, Algorithm::HS256, SECRET)
}

pub fn sign_with(claims: &Value, alg: Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret.as_bytes())).expect("sign")
}

/// A token for `alice` with both chat scopes, one hour.
pub fn token() -> String {
    sign(&claims("alice", "chat:read chat:write", 3600))
}

/// The pieces of a test config; `toml()` assembles them.
#[derive(Clone)]
pub struct Setup {
    pub upstream: String,
    /// Lines for `[limits]`.
    pub limits: String,
    /// Lines for `[timeouts]`.
    pub timeouts: String,
    /// Extra lines for `[auth]`.
    pub auth: String,
    /// Extra lines for the default route `/ws`.
    pub route: String,
    /// Further `[[routes]]` tables.
    pub more_routes: String,
    /// Further tables appended at the end (e.g. `[server.tls]`).
    pub tail: String,
    /// Extra lines for `[server]`.
    pub server: String,
    /// Pass the admin token in the environment (default true).
    pub admin_token: bool,
}

impl Setup {
    pub fn new(upstream: &str) -> Self {
        Self {
            upstream: upstream.to_string(),
            limits: String::new(),
            timeouts: String::new(),
            auth: String::new(),
            route: String::new(),
            more_routes: String::new(),
            tail: String::new(),
            server: String::new(),
            admin_token: true,
        }
    }

    pub fn no_admin_token(mut self) -> Self {
        self.admin_token = false;
        self
    }

    pub fn server(mut self, s: &str) -> Self {
        self.server.push_str(s);
        self.server.push('\n');
        self
    }

    pub fn tail(mut self, s: &str) -> Self {
        self.tail.push_str(s);
        self.tail.push('\n');
        self
    }

    pub fn limits(mut self, s: &str) -> Self {
        self.limits.push_str(s);
        self.limits.push('\n');
        self
    }

    pub fn timeouts(mut self, s: &str) -> Self {
        self.timeouts.push_str(s);
        self.timeouts.push('\n');
        self
    }

    pub fn auth(mut self, s: &str) -> Self {
        self.auth.push_str(s);
        self.auth.push('\n');
        self
    }

    pub fn route(mut self, s: &str) -> Self {
        self.route.push_str(s);
        self.route.push('\n');
        self
    }

    pub fn more_routes(mut self, s: &str) -> Self {
        self.more_routes.push_str(s);
        self.more_routes.push('\n');
        self
    }

    pub fn toml(&self) -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
{server}
[admin]
listen = "127.0.0.1:0"
token_env = "WSGATE_TEST_ADMIN_TOKEN"
[auth]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
leeway_seconds = 0
{auth}
[[auth.keys]]
algorithm = "HS256"
secret_env = "WSGATE_TEST_SECRET"
[limits]
{limits}
[timeouts]
{timeouts}
[[routes]]
path = "/ws"
upstream = "{upstream}"
origins = ["{ORIGIN}", "https://*.example.com"]
subprotocols = ["chat.v1"]
{route}
[[routes.messages]]
type = "chat.send"
scope = "chat:write"
schema_file = "chat.send.json"
[[routes.messages]]
type = "chat.read"
scope = "chat:read"
{more}
{tail}
"#,
            auth = self.auth,
            limits = self.limits,
            timeouts = self.timeouts,
            upstream = self.upstream,
            route = self.route,
            more = self.more_routes,
            tail = self.tail,
            server = self.server,
        )
    }
}

/// A running gateway process; killed on drop.
pub struct Gateway {
    child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wsgate")
}

/// Write `toml` (and the chat.send schema) to a temp dir.
pub fn write_config(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = serde_json::json!({
        "type": "object", "required": ["text"],
        "properties": {"text": {"type": "string", "maxLength": 200}, "room": {"type": "string"}}
    });
    std::fs::write(dir.path().join("chat.send.json"), schema.to_string()).expect("schema");
    let path = dir.path().join("wsgate.toml");
    std::fs::write(&path, toml).expect("config");
    (dir, path)
}

/// Start the binary with `setup` and wait for its listening line.
pub fn spawn_gateway(setup: &Setup) -> Gateway {
    let (dir, path) = write_config(&setup.toml());
    let log = std::fs::File::create(dir.path().join("gateway.log")).expect("log file");
    let mut cmd = Command::new(bin());
    cmd.args(["--log-format", "json", "serve", "--config"])
        .arg(&path)
        .env("WSGATE_TEST_SECRET", SECRET)
        // Fleet tests' Redis password (`fleet.redis_password_env`).
        .env("WSGATE_TEST_REDIS_PASSWORD", "s3cret-redis")
        .env("WSGATE_LOG", "info,actix_server=warn")
        .stdout(Stdio::piped())
        .stderr(log);
    if setup.admin_token {
        cmd.env("WSGATE_TEST_ADMIN_TOKEN", ADMIN_TOKEN);
    }
    let mut child = cmd.spawn().expect("spawn wsgate");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
            panic!("gateway did not start; log:\n{log}");
        }
    };
    let addr = |key: &str| -> SocketAddr {
        let part = line.split_whitespace().find_map(|w| w.strip_prefix(key)).expect("address in listening line");
        part.split("://").nth(1).expect("scheme").parse().expect("socket address")
    };
    let (public, admin) = (addr("public="), addr("admin="));
    Gateway { child, public, admin, dir }
}

impl Gateway {
    /// The config file the gateway was started with (rewrite it, then reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("wsgate.toml")
    }

    /// SIGKILL the gateway process (nothing of its shutdown runs) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send the gateway process a signal (`"HUP"`, `"TERM"`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{name}");
    }

    /// Wait up to `limit` for the process to exit; its exit code (`None`: still running or
    /// killed by a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Call the admin API with the test admin token: `method path [json body]`; returns the
    /// status and the parsed JSON body (`Value::Null` when not JSON).
    pub async fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.admin_as(Some(ADMIN_TOKEN), method, path, body).await
    }

    /// As [`Gateway::admin`] with any (or no) bearer token.
    pub async fn admin_as(&self, token: Option<&str>, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(Value::to_string).unwrap_or_default();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, text) = raw_request(self.admin, &req).await;
        let json = text.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
        (status, json)
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.public, path)
    }

    /// Resident memory of the gateway process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The gateway's log so far (JSON lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// GET a path on the admin listener; returns the body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await
    }

    /// Open `path` with the given origin, bearer token header and extra headers.
    pub async fn connect_with(
        &self,
        path: &str,
        origin: Option<&str>,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Ws, WsError> {
        let mut req = self.url(path).into_client_request().expect("request");
        if let Some(o) = origin {
            req.headers_mut().insert("origin", HeaderValue::from_str(o).expect("origin"));
        }
        if let Some(t) = bearer {
            req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {t}")).expect("auth"));
        }
        for (k, v) in headers {
            req.headers_mut()
                .append(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
        }
        let (ws, _) = tokio::time::timeout(Duration::from_secs(20), tokio_tungstenite::connect_async(req))
            .await
            .expect("handshake timed out")?;
        Ok(ws)
    }

    /// Open `/ws` as a browser on the allowed origin with the default token.
    pub async fn connect(&self) -> Ws {
        self.connect_with("/ws", Some(ORIGIN), Some(&token()), &[]).await.expect("connect")
    }
}

/// The HTTP status of a refused handshake.
pub fn status(err: &WsError) -> u16 {
    match err {
        WsError::Http(resp) => resp.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

/// A response header of a refused handshake.
pub fn refusal_header(err: &WsError, name: &str) -> Option<String> {
    match err {
        WsError::Http(resp) => resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string),
        _ => None,
    }
}

/// Next data or close message, skipping pings/pongs; panics after 10 s.
pub async fn recv(ws: &mut Ws) -> Message {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no message within 10 s")
            .expect("stream ended")
            .expect("websocket error");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

/// Next text message parsed as JSON.
pub async fn recv_json(ws: &mut Ws) -> Value {
    match recv(ws).await {
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("json"),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Read until the close frame; returns its code (panics if the stream ends without one).
pub async fn close_code(ws: &mut Ws) -> u16 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await.expect("no close within 15 s");
        match next {
            Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => return u16::from(code),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error before close frame: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

pub async fn send_json(ws: &mut Ws, v: &Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The echo upstream of `wsgate demo` on a loopback port; returns its `ws://` base URL.
pub async fn echo_upstream() -> String {
    let addr = wsgate::echo::spawn("127.0.0.1:0".parse().expect("addr")).await.expect("echo");
    format!("ws://{addr}")
}

/// Accept WebSocket clients and run `behave` on each.
async fn ws_upstream<F, Fut>(behave: F) -> String
where
    F: Fn(WebSocketStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let behave = std::sync::Arc::new(behave);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let behave = behave.clone();
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                    behave(ws).await;
                }
            });
        }
    });
    format!("ws://{addr}")
}

/// Echoes every data message and counts the ones it received (over all connections).
pub async fn counting_echo_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = count.clone();
    let url = ws_upstream(move |mut ws| {
        let c = c.clone();
        async move {
            while let Some(Ok(m)) = ws.next().await {
                if m.is_text() || m.is_binary() {
                    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if ws.send(m).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    (url, count)
}

/// Sends `count` text messages of `size` bytes as fast as it can, then idles.
pub async fn flood_upstream(size: usize, count: usize) -> String {
    ws_upstream(move |mut ws| async move {
        let payload = "x".repeat(size);
        for _ in 0..count {
            if ws.send(Message::text(payload.clone())).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await
}

/// Echoes the first message, then drops the TCP connection without a close frame.
pub async fn dying_upstream() -> String {
    ws_upstream(|mut ws| async move {
        if let Some(Ok(m)) = ws.next().await {
            let _ = ws.send(m).await;
        }
        drop(ws);
    })
    .await
}

/// After the first message, closes with `code`.
pub async fn closing_upstream(code: u16) -> String {
    ws_upstream(move |mut ws| async move {
        let _ = ws.next().await;
        let _ = ws.close(Some(CloseFrame { code: code.into(), reason: "bye".into() })).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await
}

/// Records the close code the upstream receives, then reports it on the channel.
pub async fn recording_upstream(tx: tokio::sync::mpsc::UnboundedSender<u16>) -> String {
    ws_upstream(move |mut ws| {
        let tx = tx.clone();
        async move {
            while let Some(Ok(m)) = ws.next().await {
                match m {
                    Message::Close(frame) => {
                        let _ = tx.send(frame.map_or(1005, |f| u16::from(f.code)));
                        break;
                    }
                    Message::Text(_) | Message::Binary(_) => {
                        let _ = ws.send(m).await;
                    }
                    _ => {}
                }
            }
        }
    })
    .await
}

/// A plain HTTP server answering every request with `status` (never upgrades).
pub async fn refusing_upstream(status: u16) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!("HTTP/1.1 {status} Refused\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("ws://{addr}")
}

/// Accepts TCP and never answers.
pub async fn blackhole_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    format!("ws://{addr}")
}

/// A port with nothing listening.
pub async fn dead_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("ws://{addr}")
}

/// Minimal HTTP/1.1 GET over loopback; returns status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    raw_request(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).await
}

/// Send raw request bytes; returns the status and body of the answer.
pub async fn raw_request(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

/// A raw (possibly invalid) frame, for tests of hostile input.
pub fn raw_frame(payload: &[u8], opcode: u8, fin: bool) -> Message {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    Message::Frame(Frame::message(payload.to_vec(), OpCode::from(opcode), fin))
}

/// A minimal raw WebSocket client for what tungstenite will not do: send malformed frames and
/// read close codes it refuses to parse (tungstenite treats 1014 as reserved).
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    /// Handshake on `path` with the default origin and token; panics unless answered 101.
    pub async fn connect(gw: &Gateway, path: &str) -> RawClient {
        let mut stream = TcpStream::connect(gw.public).await.expect("connect");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: {ORIGIN}\r\nAuthorization: Bearer {}\r\n\r\n",
            token()
        );
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
                .await
                .expect("handshake")
                .expect("read");
            assert!(n > 0, "closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        RawClient { stream, buf: buf[end..].to_vec() }
    }

    /// Send one masked frame.
    pub async fn send(&mut self, opcode: u8, fin: bool, payload: &[u8]) {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let len = payload.len();
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = [7u8, 1, 3, 9];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&f).await.expect("write frame");
    }

    async fn fill(&mut self, n: usize) -> bool {
        let mut chunk = [0u8; 8192];
        while self.buf.len() < n {
            match tokio::time::timeout(Duration::from_secs(15), self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
                Ok(Ok(k)) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
        true
    }

    /// Next server frame as (opcode, payload), or `None` when the connection ends.
    pub async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        if !self.fill(2).await {
            return None;
        }
        let opcode = self.buf[0] & 0x0f;
        let (len, hdr) = match self.buf[1] & 0x7f {
            126 => {
                if !self.fill(4).await {
                    return None;
                }
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                if !self.fill(10).await {
                    return None;
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            n => (n as usize, 2),
        };
        if !self.fill(hdr + len).await {
            return None;
        }
        let payload = self.buf[hdr..hdr + len].to_vec();
        self.buf.drain(..hdr + len);
        Some((opcode, payload))
    }

    /// Read until the close frame; returns its code.
    pub async fn close_code(&mut self) -> u16 {
        loop {
            match self.frame().await {
                Some((8, p)) if p.len() >= 2 => return u16::from_be_bytes([p[0], p[1]]),
                Some((8, _)) => return 1005,
                Some(_) => continue,
                None => panic!("connection ended without a close frame"),
            }
        }
    }
}

/// Wait until the gateway has logged `needle` at least `times` times (the log is written
/// asynchronously); panics with the log after 10 s.
pub async fn wait_for_log(gw: &Gateway, needle: &str, times: usize) {
    for _ in 0..200 {
        if gw.log().matches(needle).count() >= times {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{needle} not logged {times} time(s):\n{}", gw.log());
}
