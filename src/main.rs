//! The `wsgate` command: `demo`, `serve`, `check-config`, `token` (docs/configuration.md), and the
//! conveniences around them: `init` (a minimal config), `completions` (shell completions) and
//! `config-schema` (the config's JSON Schema for editors).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use wsgate::auth::jwt::{self, MintRequest};
use wsgate::auth::keys::KeySet;
use wsgate::config::Config;

/// jemalloc with a background purging thread: pages freed after a load peak go back to the OS
/// within a second or two (glibc's malloc kept a 2 000-connection soak's peak RSS after every
/// client had left).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc options read at start: purge dirty pages after 1 s, skip the muzzy stage, and let
/// the background thread do it (no purging work on the request path).
#[cfg(feature = "jemalloc")]
#[allow(unsafe_code)]
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Env var name the demo's generated HMAC secret is known by (never read from the environment).
const DEMO_SECRET_ENV: &str = "WSGATE_DEMO_SECRET";

#[derive(Parser)]
#[command(name = "wsgate", version, about = "WebSocket security gateway")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "human", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run with an embedded echo upstream and a generated dev key; prints a token, a client
    /// command and a ticket-based browser example.
    Demo {
        /// Public listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener (metrics, health).
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
        /// Lifetime of the printed token (s, m, h or d); the expiry warning comes 30 s before
        /// its end plus the 5 s leeway.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        token_ttl: Duration,
    },
    /// Run the gateway with a config file.
    Serve {
        /// TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file (and load its keys) without serving.
    CheckConfig {
        /// TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Mint a token with the config's first HMAC key; prints only the JWT.
    Token {
        /// TOML config file.
        #[arg(long)]
        config: PathBuf,
        /// Subject (`sub`).
        #[arg(long)]
        sub: String,
        /// Space-separated scopes.
        #[arg(long, default_value = "")]
        scope: String,
        /// Lifetime: a number with an optional unit s, m, h or d (default seconds).
        #[arg(long, default_value = "15m", value_parser = parse_ttl)]
        ttl: Duration,
    },
    /// Print a minimal, commented config for one route (`wsgate init > wsgate.toml`).
    Init,
    /// Print shell completions (`wsgate completions bash > /etc/bash_completion.d/wsgate`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the JSON Schema of the config file, for editors (e.g. taplo, Even Better TOML).
    ConfigSchema,
    /// Exit 0 when the admin listener's `/healthz` answers 200 (a container HEALTHCHECK that
    /// needs no shell and no curl).
    Healthcheck {
        /// The admin listener (an address, not resolved).
        #[arg(long, default_value = "127.0.0.1:9090", conflicts_with = "config")]
        admin: SocketAddr,
        /// Take the admin listener from this config file's `admin.listen` instead (an
        /// unspecified address such as 0.0.0.0 is checked on loopback).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Give up after this long (s, m, h or d).
        #[arg(long, default_value = "3s", value_parser = parse_ttl)]
        timeout: Duration,
    },
}

/// What `wsgate init` prints: every line `check-config` accepts once the two environment
/// variables are set.
const INIT_CONFIG: &str = r#"# wsgate: one route in front of one WebSocket backend.
# Check it:  WSGATE_JWT_SECRET=$(openssl rand -hex 32) wsgate check-config --config wsgate.toml
# Every key, with its default: wsgate.example.toml in the repository; editors can validate
# this file against `wsgate config-schema`.

[server]
listen = "127.0.0.1:8443"            # public listener; add [server.tls] cert_file/key_file for wss://
# state_dir = "/var/lib/wsgate"      # revocations survive restarts here

[admin]
listen = "127.0.0.1:9090"            # /metrics, /healthz, /readyz and /admin/*
token_env = "WSGATE_ADMIN_TOKEN"     # bearer token of /admin/*; unset variable = /admin/* off

[auth]
# issuer = "https://idp.example.com/"   # when set, tokens must carry this iss
# audience = "wsgate"                   # when set, tokens must carry this aud

[[auth.keys]]
algorithm = "HS256"                  # or RS256/ES256/EdDSA ... with public_key_file = "key.pem"
secret_env = "WSGATE_JWT_SECRET"     # the HMAC secret, at least 32 bytes, from this variable

[[routes]]
path = "/ws"
upstream = "ws://127.0.0.1:9000/ws"  # your backend
origins = ["https://app.example.com"]   # browser pages allowed to connect
subprotocols = ["chat.v1"]           # what browsers offer beside their bearer.<jwt> entry

[[routes.messages]]
type = "chat.send"                   # a message type clients may send ...
scope = "chat:write"                 # ... with this scope in their token
"#;

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: expected a number with an optional unit s, m, h, d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    if n == 0 {
        return Err("ttl must be > 0".into());
    }
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

/// The log filter without `WSGATE_LOG`: the gateway's own events at info; the framework's
/// worker start/stop lines only from warn; the HTTP parser's per-connection error lines off
/// (each request it refuses is logged as `handshake_refused` by the gateway, with the client).
const DEFAULT_LOG_FILTER: &str = "info,actix_server=warn,actix_http::h1::dispatcher=off";

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WSGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Human => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Demo { listen, admin_listen, token_ttl } => run_system(demo(listen, admin_listen, token_ttl)),
        Command::Serve { config } => serve(&config),
        Command::CheckConfig { config } => check_config(&config),
        Command::Token { config, sub, scope, ttl } => token(&config, &sub, &scope, ttl),
        Command::Init => print_out(INIT_CONFIG),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "wsgate", &mut std::io::stdout());
            Ok(())
        }
        Command::Healthcheck { admin, config, timeout } => match config {
            Some(path) => Config::load(&path)
                .with_context(|| format!("config {}", path.display()))
                .and_then(|c| healthcheck(loopback_if_unspecified(c.admin_listen), timeout)),
            None => healthcheck(admin, timeout),
        },
        Command::ConfigSchema => {
            let schema = serde_json::to_string_pretty(&wsgate::config::json_schema()).unwrap_or_default();
            print_out(&format!("{schema}\n"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `0.0.0.0:p` / `[::]:p` listen on every address: check them on loopback.
fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// `GET /healthz` on `admin` with plain std sockets (no runtime needed for one request).
fn healthcheck(admin: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&admin, timeout).with_context(|| format!("connect {admin}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while head.len() < 12 {
        let n = s.read(&mut buf).with_context(|| format!("read from {admin}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    anyhow::ensure!(
        head.starts_with(b"HTTP/1.") && head.get(9..12) == Some(b"200".as_slice()),
        "{admin}/healthz answered {:?}",
        String::from_utf8_lossy(&head).lines().next().unwrap_or("nothing")
    );
    println!("healthy");
    Ok(())
}

fn print_out(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn run_system(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(fut)
}

fn load(path: &Path) -> anyhow::Result<(Config, KeySet)> {
    let config = Config::load(path).with_context(|| format!("config {}", path.display()))?;
    let keys =
        wsgate::auth::keys::load_configured(&config.auth).with_context(|| format!("config {}", path.display()))?;
    Ok((config, keys))
}

fn serve(path: &Path) -> anyhow::Result<()> {
    let (config, keys) = load(path)?;
    run_system(async move {
        wsgate::app::run(
            config,
            keys,
            wsgate::app::ConfigOrigin::File(path.to_path_buf()),
            |bound: wsgate::app::Bound| {
                let scheme = if bound.tls { "wss" } else { "ws" };
                println!("wsgate listening public={scheme}://{} admin=http://{}", bound.public, bound.admin);
                let _ = std::io::stdout().flush();
            },
        )
        .await?;
        Ok(())
    })
}

fn check_config(path: &Path) -> anyhow::Result<()> {
    let (config, keys) = load(path)?;
    println!(
        "config ok: {} route(s), {} key(s), listen {}, admin {}",
        config.routes.len(),
        keys.len(),
        config.listen,
        config.admin_listen
    );
    if let Some(f) = &config.fleet {
        let at = f.target.describe();
        // Not connected here: check-config reads files only.
        println!(
            "fleet: node {} (plus a boot id), redis {at}, on_redis_down = {}",
            f.node_name,
            f.on_redis_down.name()
        );
    }
    Ok(())
}

fn token(path: &Path, sub: &str, scope: &str, ttl: Duration) -> anyhow::Result<()> {
    let (config, keys) = load(path)?;
    let jwt = jwt::mint(&keys, &config.auth, &MintRequest { sub, scope, ttl }, SystemTime::now())?;
    println!("{jwt}");
    Ok(())
}

/// The demo's config: one route `/ws` in front of the embedded echo upstream, taking a token
/// in the header or a subprotocol entry, or a one-time ticket (`POST /v1/ws-ticket`).
fn demo_config(listen: SocketAddr, admin: SocketAddr, upstream: SocketAddr, state_dir: &Path) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
state_dir = "{state_dir}"
[admin]
listen = "{admin}"
[auth]
token_sources = ["header", "subprotocol"]
[[auth.keys]]
kid = "demo"
algorithm = "HS256"
secret_env = "{DEMO_SECRET_ENV}"
[[routes]]
path = "/ws"
upstream = "ws://{upstream}/whoami"
origins = ["http://{listen}", "http://localhost:{port}"]
allow_missing_origin = true
token_sources = ["header", "subprotocol", "ticket"]
subprotocols = ["chat.v1"]
[[routes.messages]]
type = "chat.send"
scope = "chat:write"
[[routes.messages]]
type = "chat.read"
scope = "chat:read"
[tickets]
ttl_seconds = 30
"#,
        port = listen.port(),
        state_dir = state_dir.display()
    )
}

async fn demo(listen: SocketAddr, admin: SocketAddr, token_ttl: Duration) -> anyhow::Result<()> {
    let upstream = wsgate::echo::spawn("127.0.0.1:0".parse()?).await.context("echo upstream")?;
    let secret = jwt::random_secret()?;
    // Revocations of a demo live in a temporary folder, removed when the demo ends.
    let state_dir = std::env::temp_dir().join(format!("wsgate-demo-{}", std::process::id()));
    let config = Config::parse(&demo_config(listen, admin, upstream, &state_dir), Path::new("."))?;
    let keys = KeySet::load_with(&config.auth.keys, |_| Some(secret.clone()))?;
    let req = MintRequest { sub: "demo", scope: "chat:read chat:write", ttl: token_ttl };
    let token = jwt::mint(&keys, &config.auth, &req, SystemTime::now())?;
    let result = wsgate::app::run(config, keys, wsgate::app::ConfigOrigin::Demo, |bound: wsgate::app::Bound| {
        let url = format!("ws://{}/ws", bound.public);
        println!("wsgate demo: gateway {url} -> echo upstream ws://{upstream}/whoami");
        println!("metrics: http://{}/metrics", bound.admin);
        println!("token: {token}");
        println!("client (Node): npx -y wscat -c {url} -H \"Authorization: Bearer {token}\"");
        println!("browser page: http://{}/#token={token}", bound.public);
        println!("allowed origins: http://{listen}, http://localhost:{}", listen.port());
        println!("browser: new WebSocket(\"{url}\", [\"chat.v1\", \"bearer.{token}\"])");
        let endpoint = format!("http://{}/v1/ws-ticket", bound.public);
        println!("ticket (curl): curl -s -X POST {endpoint} -H \"Authorization: Bearer {token}\"");
        println!(
            "browser with a ticket: const {{ticket}} = await (await fetch(\"{endpoint}\", {{method: \"POST\", \
             headers: {{Authorization: \"Bearer {token}\"}}}})).json(); \
             new WebSocket(\"{url}?ticket=\" + ticket, [\"chat.v1\"])"
        );
        println!(
            "then send: {{\"type\":\"chat.send\",\"payload\":{{\"room\":\"ops\",\"text\":\"hi\"}},\"id\":\"c-1\"}}"
        );
        let _ = std::io::stdout().flush();
    })
    .await;
    let _ = std::fs::remove_dir_all(&state_dir);
    result?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("5y").is_err());
    }
}
