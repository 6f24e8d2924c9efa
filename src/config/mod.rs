//! Configuration: the TOML file of docs/configuration.md, parsed into the raw serde shape
//! (config/raw.rs: keys, types, defaults) and then validated here into [`Config`]: times as
//! [`Duration`]s, addresses and CIDRs parsed, origins and JSON Schemas compiled.
//!
//! Owns: key names, defaults (`DEFAULT_*`), the meaning of `0` for each limit, and every check
//! that can be made before the gateway starts. A bad file fails with the key's dotted path and
//! the reason. Does not own: loading key material (auth/keys.rs) or TLS files (tls.rs).

pub mod fleet;
mod raw;
pub mod tickets;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use fleet::{Fleet, RedisDown, RedisTarget, HEARTBEATS_TO_DEATH};
pub use tickets::Tickets;

use crate::policy::origin::OriginPolicy;
use crate::policy::sensitive::{Direction, Guard, GuardAction, RuleDef, RuleKind};
use crate::policy::token_source::TokenSource;

pub use raw::{
    json_schema, BinaryPolicy, Envelope, ExtraFields, KeyConfig, Limits, SensitiveAction, SensitiveDirection,
    UnknownTypes, DEFAULT_ADMIN_LISTEN, DEFAULT_EXPIRY_WARNING_SECONDS, DEFAULT_LEEWAY_SECONDS, DEFAULT_LISTEN,
    DEFAULT_MAX_TOKEN_LIFETIME_SECONDS,
};
use raw::{RawAuth, RawConfig, RawRoute};

/// Largest value of any `timeouts.*_seconds` key (one year).
pub const MAX_TIMEOUT_SECONDS: u64 = 365 * 86_400;
/// Largest `auth.leeway_seconds` accepted: clock skew beyond an hour is a broken clock.
pub const MAX_LEEWAY_SECONDS: u64 = 3_600;
/// The path of the ticket endpoint on the public listener (with `[tickets]`).
pub const TICKET_ENDPOINT: &str = "/v1/ws-ticket";

/// Why a configuration was refused. Every variant names the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or a value had the wrong type / an unknown key.
    #[error("{key}: {reason}")]
    Parse {
        /// Dotted path of the offending key (`limits.messages_per_second`).
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted path of the offending key.
        key: String,
        /// What was wrong.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { key: key.into(), reason: reason.into() }
    }
}

// ---------------------------------------------------------------------------------------------
// Validated shape.
// ---------------------------------------------------------------------------------------------

/// Timeouts (`[timeouts]`), validated. Zero disables the timeout where that makes sense
/// (`idle`, `ping_interval`, `frame`); the connect and handshake timeouts are never zero.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Time a client has to send its complete upgrade request (`timeouts.handshake_seconds`).
    pub handshake: Duration,
    /// Time the upstream has to accept the WebSocket, then 504
    /// (`timeouts.upstream_connect_seconds`).
    pub upstream_connect: Duration,
    /// A client silent (no frame, no pong) this long is closed; zero = never
    /// (`timeouts.idle_seconds`).
    pub idle: Duration,
    /// Interval of gateway pings to the client; zero = no pings (`timeouts.ping_interval_seconds`).
    pub ping_interval: Duration,
    /// Time over which open clients are closed when draining (`timeouts.drain_seconds`).
    pub drain: Duration,
    /// Time one client frame (header and payload) may take to arrive once its first byte
    /// did; past it, close 1008. Bytes of an incomplete frame are not activity for `idle`.
    /// Zero = no limit (`timeouts.frame_seconds`).
    pub frame: Duration,
}

impl Default for Timeouts {
    /// The `[timeouts]` defaults of an omitted section.
    fn default() -> Self {
        timeouts(&raw::Timeouts::default())
    }
}

/// One message type a route accepts.
#[derive(Clone)]
pub struct MessageRule {
    /// Scope the token must hold to send this type; `None` = any authenticated client.
    pub scope: Option<String>,
    /// Compiled JSON Schema for the whole envelope's `payload`, if configured.
    pub schema: Option<Arc<jsonschema::Validator>>,
}

impl MessageRule {
    /// A rule requiring `scope` and, if given, compiling `schema` for the payload.
    ///
    /// # Errors
    /// The schema compiler's message when `schema` is not a valid JSON Schema.
    pub fn new(scope: Option<&str>, schema: Option<&serde_json::Value>) -> Result<Self, String> {
        let schema = match schema {
            Some(s) => Some(Arc::new(jsonschema::validator_for(s).map_err(|e| e.to_string())?)),
            None => None,
        };
        Ok(Self { scope: scope.map(str::to_string), schema })
    }
}

impl std::fmt::Debug for MessageRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageRule").field("scope", &self.scope).field("schema", &self.schema.is_some()).finish()
    }
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Exact request path served (query string ignored).
    pub path: String,
    /// `ws://` or `wss://` URL of the backend.
    pub upstream: String,
    /// TLS client settings for a `wss://` upstream (system roots or `upstream_ca_file`).
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
    /// Origin allowlist.
    pub origins: OriginPolicy,
    /// Where the token may come from, in order.
    pub token_sources: Vec<TokenSource>,
    /// Scope needed to open a connection, if any.
    pub connect_scope: Option<String>,
    /// Application subprotocols accepted, in preference order of the client's offer.
    pub subprotocols: Vec<String>,
    /// JSON envelopes or opaque frames.
    pub envelope: Envelope,
    /// Name of the envelope's type field.
    pub type_field: String,
    /// Policy for unlisted message types.
    pub unknown_types: UnknownTypes,
    /// Policy for binary frames (JSON routes).
    pub binary: BinaryPolicy,
    /// Add `X-Wsgate-*` identity headers to the upstream request.
    pub forward_identity: bool,
    /// Policy for top-level fields other than the type field, `payload` and `id`.
    pub extra_fields: ExtraFields,
    /// Message type -> rule.
    pub messages: MessageRules,
    /// The sensitive-data guard's compiled rules (`None`: the route has none).
    pub sensitive: Option<Arc<Guard>>,
}

/// Message type -> rule, looked up once per client frame. foldhash instead of SipHash: the
/// keys come from the config (a client only looks them up, never inserts), and SipHash was
/// about 190 instructions of a 64-byte frame's 9 900 (callgrind).
pub type MessageRules = HashMap<String, MessageRule, foldhash::fast::RandomState>;

/// TLS files for the public listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// How often the files' modification times are checked for a reload (zero = only on
    /// SIGHUP / `POST /admin/reload`; `server.tls.reload_check_seconds`).
    pub reload_check: Duration,
}

/// `[auth]`, validated.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required member of `aud`, if set.
    pub audience: Option<String>,
    /// Tolerated clock skew on `exp` and `nbf`.
    pub leeway: Duration,
    /// Claim holding the scopes.
    pub scope_claim: String,
    /// Default token sources.
    pub token_sources: Vec<TokenSource>,
    /// Cookie carrying the token (source `cookie`).
    pub cookie_name: String,
    /// Query parameter carrying the token (source `query`).
    pub query_param: String,
    /// Warning lead time before the deadline; zero = no warning.
    pub expiry_warning: Duration,
    /// Longest accepted `exp - iat` (or `exp - now` without `iat`); zero = no bound.
    pub max_token_lifetime: Duration,
    /// Refuse tokens without `iat`.
    pub require_iat: bool,
    /// JWKS file, keys by kid.
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL, fetched at start, every `jwks_refresh` and on an unknown `kid`.
    pub jwks_url: Option<String>,
    /// Interval between JWKS URL fetches.
    pub jwks_refresh: Duration,
    /// Longest time one JWKS fetch may take.
    pub jwks_timeout: Duration,
    /// Configured keys.
    pub keys: Vec<KeyConfig>,
}

impl Default for AuthConfig {
    /// The `[auth]` defaults of an omitted section, with no keys.
    fn default() -> Self {
        let raw = RawAuth::default();
        Self {
            issuer: raw.issuer,
            audience: raw.audience,
            leeway: Duration::from_secs(raw.leeway_seconds),
            scope_claim: raw.scope_claim,
            token_sources: vec![TokenSource::Header, TokenSource::Subprotocol],
            cookie_name: raw.cookie_name,
            query_param: raw.query_param,
            expiry_warning: Duration::from_secs(raw.expiry_warning_seconds),
            max_token_lifetime: Duration::from_secs(raw.max_token_lifetime_seconds),
            require_iat: raw.require_iat,
            jwks_file: raw.jwks_file,
            jwks_url: raw.jwks_url,
            jwks_refresh: Duration::from_secs(raw.jwks_refresh_seconds),
            jwks_timeout: Duration::from_secs(raw.jwks_timeout_seconds),
            keys: raw.keys,
        }
    }
}

// === impl Route ===

impl Route {
    /// True when the route lists the `ticket` token source.
    pub fn accepts_tickets(&self) -> bool {
        self.token_sources.contains(&TokenSource::Ticket)
    }

    /// A route with the documented defaults: JSON envelopes, unknown types and binary frames
    /// rejected, identity forwarded, no origin allowed, no message types.
    pub fn new(path: &str, upstream: &str) -> Self {
        Self {
            path: path.to_string(),
            upstream: upstream.to_string(),
            upstream_tls: None,
            origins: OriginPolicy::default(),
            token_sources: AuthConfig::default().token_sources,
            connect_scope: None,
            subprotocols: Vec::new(),
            envelope: Envelope::Json,
            type_field: raw::default_type_field(),
            unknown_types: UnknownTypes::Reject,
            binary: BinaryPolicy::Reject,
            forward_identity: true,
            extra_fields: ExtraFields::Reject,
            messages: MessageRules::default(),
            sensitive: None,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Public listener address.
    pub listen: SocketAddr,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Peers whose `X-Forwarded-For` or PROXY header names the client (`server.trusted_proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Read a PROXY protocol v1/v2 header at the start of each connection (believed only from
    /// `trusted_proxies`).
    pub proxy_protocol: bool,
    /// Directory for persistent state (revocations).
    pub state_dir: Option<PathBuf>,
    /// TLS for the public listener; `None` = plain ws://.
    pub tls: Option<TlsFiles>,
    /// Admin listener address.
    pub admin_listen: SocketAddr,
    /// Env var holding the admin bearer token.
    pub admin_token_env: Option<String>,
    /// Token verification settings.
    pub auth: AuthConfig,
    /// Limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Routes, matched by exact path.
    pub routes: Vec<Arc<Route>>,
    /// Fleet mode; `None` = a single node.
    pub fleet: Option<Fleet>,
    /// One-time connection tickets; `None` = no ticket endpoint, no `ticket` token source.
    pub tickets: Option<Tickets>,
}

// === impl Config ===

impl Config {
    /// Read and validate a config file. Relative paths inside it resolve against its folder.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key and the reason.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base)
    }

    /// Parse and validate TOML text; `base` resolves relative file paths.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key and the reason.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        Self::from_raw(raw::parse(text)?, base)
    }

    fn from_raw(raw: RawConfig, base: &Path) -> Result<Self, ConfigError> {
        let listen = parse_addr("server.listen", &raw.server.listen)?;
        let admin_listen = parse_addr("admin.listen", &raw.admin.listen)?;
        let mut trusted_proxies = Vec::with_capacity(raw.server.trusted_proxies.len());
        for (i, cidr) in raw.server.trusted_proxies.iter().enumerate() {
            let net = cidr
                .parse::<ipnet::IpNet>()
                .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError::invalid(
                        format!("server.trusted_proxies[{i}]"),
                        format!("{cidr:?} is not a CIDR (10.0.0.0/8) or an address"),
                    )
                })?;
            trusted_proxies.push(net);
        }
        let tickets = raw.tickets.map(tickets::validate).transpose()?;
        let auth = validate_auth(raw.auth, base, tickets.is_some())?;
        let fleet = raw.fleet.map(|f| fleet::validate(f, base)).transpose()?;
        validate_limits(&raw.limits)?;
        validate_timeouts(&raw.timeouts)?;
        if raw.server.tls.as_ref().is_some_and(|t| t.reload_check_seconds > MAX_TIMEOUT_SECONDS) {
            return Err(ConfigError::invalid(
                "server.tls.reload_check_seconds",
                format!("must be at most {MAX_TIMEOUT_SECONDS} (one year)"),
            ));
        }
        if raw.routes.is_empty() {
            return Err(ConfigError::invalid("routes", "at least one [[routes]] is required"));
        }
        let mut routes: Vec<Arc<Route>> = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.into_iter().enumerate() {
            let route = validate_route(i, r, &auth, base, tickets.is_some())?;
            if routes.iter().any(|x| x.path == route.path) {
                return Err(ConfigError::invalid(
                    format!("routes[{i}].path"),
                    format!("duplicate path {:?}", route.path),
                ));
            }
            routes.push(Arc::new(route));
        }
        if tickets.is_some() && !routes.iter().any(|r| r.accepts_tickets()) {
            return Err(ConfigError::invalid(
                "tickets",
                "no route lists the ticket token source: add \"ticket\" to a route's token_sources (or remove [tickets])",
            ));
        }
        Ok(Self {
            listen,
            workers: raw.server.workers,
            trusted_proxies,
            proxy_protocol: raw.server.proxy_protocol,
            state_dir: raw.server.state_dir.map(|p| base.join(p)),
            tls: raw.server.tls.map(|t| TlsFiles {
                cert_file: base.join(t.cert_file),
                key_file: base.join(t.key_file),
                reload_check: Duration::from_secs(t.reload_check_seconds),
            }),
            admin_listen,
            admin_token_env: raw.admin.token_env.filter(|s| !s.is_empty()),
            auth,
            limits: raw.limits,
            timeouts: timeouts(&raw.timeouts),
            routes,
            fleet,
            tickets,
        })
    }

    /// The route serving `path`, if any.
    pub fn route(&self, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.path == path)
    }

    /// The routes that accept tickets (the `ticket` token source), in config order.
    pub fn ticket_routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter().filter(|r| r.accepts_tickets())
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|e| ConfigError::invalid(key, format!("{value:?} is not an ip:port address ({e})")))
}

fn parse_sources(key: &str, names: &[String], tickets: bool) -> Result<Vec<TokenSource>, ConfigError> {
    if names.is_empty() {
        return Err(ConfigError::invalid(key, "at least one token source is required"));
    }
    let mut sources = Vec::with_capacity(names.len());
    for n in names {
        let source = TokenSource::parse(n).ok_or_else(|| {
            ConfigError::invalid(
                key,
                format!("unknown token source {n:?} (expected header, subprotocol, cookie, query or ticket)"),
            )
        })?;
        if source == TokenSource::Ticket && !tickets {
            return Err(ConfigError::invalid(
                key,
                "the ticket token source needs a [tickets] section (the ticket endpoint is off without it)",
            ));
        }
        if sources.contains(&source) {
            return Err(ConfigError::invalid(key, format!("token source {n:?} is listed twice")));
        }
        sources.push(source);
    }
    Ok(sources)
}

fn validate_auth(raw: RawAuth, base: &Path, tickets: bool) -> Result<AuthConfig, ConfigError> {
    let token_sources = parse_sources("auth.token_sources", &raw.token_sources, tickets)?;
    if raw.scope_claim.is_empty() {
        return Err(ConfigError::invalid("auth.scope_claim", "must not be empty"));
    }
    if raw.leeway_seconds > MAX_LEEWAY_SECONDS {
        return Err(ConfigError::invalid("auth.leeway_seconds", format!("must be at most {MAX_LEEWAY_SECONDS}")));
    }
    if raw.max_token_lifetime_seconds > crate::auth::MAX_NUMERIC_DATE {
        return Err(ConfigError::invalid("auth.max_token_lifetime_seconds", "out of range (0 = no bound)"));
    }
    if raw.expiry_warning_seconds > crate::auth::MAX_NUMERIC_DATE {
        return Err(ConfigError::invalid("auth.expiry_warning_seconds", "out of range (0 = no warning)"));
    }
    if raw.issuer.as_deref() == Some("") {
        return Err(ConfigError::invalid("auth.issuer", "must not be empty (omit it to accept any iss)"));
    }
    if raw.audience.as_deref() == Some("") {
        return Err(ConfigError::invalid("auth.audience", "must not be empty (omit it to accept any aud)"));
    }
    if raw.keys.is_empty() && raw.jwks_file.is_none() && raw.jwks_url.is_none() {
        return Err(ConfigError::invalid(
            "auth.keys",
            "no verification key: configure [[auth.keys]], auth.jwks_file or auth.jwks_url",
        ));
    }
    if let Some(url) = &raw.jwks_url {
        let ok = url.parse::<actix_http::Uri>().is_ok_and(|u| matches!(u.scheme_str(), Some("https" | "http")));
        if !ok {
            return Err(ConfigError::invalid("auth.jwks_url", "must be an http(s):// URL"));
        }
    }
    if raw.jwks_refresh_seconds == 0 {
        return Err(ConfigError::invalid("auth.jwks_refresh_seconds", "must be > 0"));
    }
    if raw.jwks_timeout_seconds == 0 {
        return Err(ConfigError::invalid("auth.jwks_timeout_seconds", "must be > 0"));
    }
    let keys = raw
        .keys
        .into_iter()
        .map(|mut k| {
            k.public_key_file = k.public_key_file.map(|p| base.join(p));
            k
        })
        .collect();
    Ok(AuthConfig {
        issuer: raw.issuer,
        audience: raw.audience,
        leeway: Duration::from_secs(raw.leeway_seconds),
        scope_claim: raw.scope_claim,
        token_sources,
        cookie_name: raw.cookie_name,
        query_param: raw.query_param,
        expiry_warning: Duration::from_secs(raw.expiry_warning_seconds),
        max_token_lifetime: Duration::from_secs(raw.max_token_lifetime_seconds),
        require_iat: raw.require_iat,
        jwks_file: raw.jwks_file.map(|p| base.join(p)),
        jwks_url: raw.jwks_url,
        jwks_refresh: Duration::from_secs(raw.jwks_refresh_seconds),
        jwks_timeout: Duration::from_secs(raw.jwks_timeout_seconds),
        keys,
    })
}

fn validate_limits(l: &Limits) -> Result<(), ConfigError> {
    if l.refresh_interval > Duration::from_secs(MAX_TIMEOUT_SECONDS) {
        return Err(ConfigError::invalid(
            "limits.refresh_interval_seconds",
            format!("must be at most {MAX_TIMEOUT_SECONDS} (one year)"),
        ));
    }
    if l.max_message_bytes > 64 * 1024 * 1024 {
        return Err(ConfigError::invalid(
            "limits.max_message_bytes",
            "must be at most 67108864 (64 MiB); 0 = unlimited is not allowed for a gateway either",
        ));
    }
    if l.max_message_bytes == 0 {
        return Err(ConfigError::invalid(
            "limits.max_message_bytes",
            "must be > 0: an unbounded message size lets one client exhaust memory",
        ));
    }
    if l.outbound_buffer_bytes == 0 {
        return Err(ConfigError::invalid(
            "limits.outbound_buffer_bytes",
            "must be > 0: an unbounded buffer lets a slow reader exhaust memory",
        ));
    }
    if l.handshakes_per_second_per_ip > 0 && l.handshake_burst_per_ip == 0 {
        return Err(ConfigError::invalid(
            "limits.handshake_burst_per_ip",
            "must be > 0 when handshakes_per_second_per_ip is set",
        ));
    }
    if l.ipv6_prefix_length == 0 || l.ipv6_prefix_length > 128 {
        return Err(ConfigError::invalid(
            "limits.ipv6_prefix_length",
            "must be 1..=128 (0 would make every IPv6 client one)",
        ));
    }
    if l.messages_per_second > 0 && l.message_burst == 0 {
        return Err(ConfigError::invalid("limits.message_burst", "must be > 0 when messages_per_second is set"));
    }
    Ok(())
}

fn validate_timeouts(t: &raw::Timeouts) -> Result<(), ConfigError> {
    if t.handshake_seconds == 0 {
        return Err(ConfigError::invalid("timeouts.handshake_seconds", "must be > 0"));
    }
    if t.upstream_connect_seconds == 0 {
        return Err(ConfigError::invalid("timeouts.upstream_connect_seconds", "must be > 0"));
    }
    // Deadlines are `Instant`s: a bound keeps every `now + timeout` far from overflowing.
    for (name, value) in [
        ("handshake_seconds", t.handshake_seconds),
        ("upstream_connect_seconds", t.upstream_connect_seconds),
        ("idle_seconds", t.idle_seconds),
        ("ping_interval_seconds", t.ping_interval_seconds),
        ("drain_seconds", t.drain_seconds),
        ("frame_seconds", t.frame_seconds),
    ] {
        if value > MAX_TIMEOUT_SECONDS {
            return Err(ConfigError::invalid(
                format!("timeouts.{name}"),
                format!("must be at most {MAX_TIMEOUT_SECONDS} (one year)"),
            ));
        }
    }
    Ok(())
}

/// `[timeouts]` as [`Duration`]s.
fn timeouts(t: &raw::Timeouts) -> Timeouts {
    Timeouts {
        handshake: Duration::from_secs(t.handshake_seconds),
        upstream_connect: Duration::from_secs(t.upstream_connect_seconds),
        idle: Duration::from_secs(t.idle_seconds),
        ping_interval: Duration::from_secs(t.ping_interval_seconds),
        drain: Duration::from_secs(t.drain_seconds),
        frame: Duration::from_secs(t.frame_seconds),
    }
}

fn validate_route(i: usize, r: RawRoute, auth: &AuthConfig, base: &Path, tickets: bool) -> Result<Route, ConfigError> {
    let key = |k: &str| format!("routes[{i}].{k}");
    if !r.path.starts_with('/') {
        return Err(ConfigError::invalid(key("path"), "must start with '/'"));
    }
    if tickets && r.path == TICKET_ENDPOINT {
        return Err(ConfigError::invalid(key("path"), format!("{TICKET_ENDPOINT} is the ticket endpoint ([tickets])")));
    }
    let secure = r.upstream.starts_with("wss://");
    if !secure && !r.upstream.starts_with("ws://") {
        return Err(ConfigError::invalid(key("upstream"), "must be a ws:// or wss:// URL"));
    }
    if r.upstream.parse::<actix_http::Uri>().is_err() {
        return Err(ConfigError::invalid(key("upstream"), "not a valid URL"));
    }
    let upstream_tls = match (secure, &r.upstream_ca_file) {
        (false, Some(_)) => {
            return Err(ConfigError::invalid(key("upstream_ca_file"), "only applies to a wss:// upstream"));
        }
        (false, None) => None,
        (true, ca) => {
            let ca = ca.as_ref().map(|p| base.join(p));
            let tls = crate::tls::upstream_client_config(ca.as_deref())
                .map_err(|e| ConfigError::invalid(key("upstream_ca_file"), e.to_string()))?;
            Some(Arc::new(tls))
        }
    };
    let origins = OriginPolicy::try_new(&r.origins, r.allow_missing_origin)
        .map_err(|e| ConfigError::invalid(key("origins"), e))?;
    let token_sources = match &r.token_sources {
        Some(names) => parse_sources(&key("token_sources"), names, tickets)?,
        None => auth.token_sources.clone(),
    };
    if token_sources.contains(&TokenSource::Cookie) && r.allow_missing_origin {
        return Err(ConfigError::invalid(
            key("allow_missing_origin"),
            "must be false on a route with the cookie token source: a cookie is a browser credential, and a \
             request without Origin cannot be told apart from a cross-site one",
        ));
    }
    if token_sources.contains(&TokenSource::Cookie) && r.origins.is_empty() {
        return Err(ConfigError::invalid(
            key("token_sources"),
            "the cookie source needs an Origin allowlist on the route (cross-site WebSocket hijacking)",
        ));
    }
    if r.type_field.is_empty() {
        return Err(ConfigError::invalid(key("type_field"), "must not be empty"));
    }
    let mut messages = MessageRules::default();
    for (j, m) in r.messages.into_iter().enumerate() {
        let mkey = format!("routes[{i}].messages[{j}]");
        if m.kind.is_empty() || m.kind.starts_with("auth.") || m.kind == "error" {
            return Err(ConfigError::invalid(
                format!("{mkey}.type"),
                "must be non-empty and not a gateway control type (auth.*, error)",
            ));
        }
        let schema = match m.schema_file {
            None => None,
            Some(p) => Some(Arc::new(load_schema(&format!("{mkey}.schema_file"), &base.join(p))?)),
        };
        if messages.insert(m.kind.clone(), MessageRule { scope: m.scope, schema }).is_some() {
            return Err(ConfigError::invalid(format!("{mkey}.type"), format!("duplicate type {:?}", m.kind)));
        }
    }
    Ok(Route {
        path: r.path,
        upstream: r.upstream,
        upstream_tls,
        origins,
        token_sources,
        connect_scope: r.connect_scope,
        subprotocols: r.subprotocols,
        envelope: r.envelope,
        type_field: r.type_field,
        unknown_types: r.unknown_types,
        binary: r.binary,
        forward_identity: r.forward_identity,
        extra_fields: r.extra_fields,
        messages,
        sensitive: sensitive_guard(i, &r.sensitive)?,
    })
}

/// The built-in sensitive-data rules, by name.
pub const SENSITIVE_BUILT_INS: [&str; 6] =
    ["card_number", "iban", "aws_access_key", "private_key_pem", "jwt", "password_field"];

/// Compile a route's `[[routes.sensitive]]` rules (`None` when there are none).
fn sensitive_guard(i: usize, rules: &[raw::RawSensitive]) -> Result<Option<Arc<Guard>>, ConfigError> {
    if rules.is_empty() {
        return Ok(None);
    }
    let mut defs = Vec::with_capacity(rules.len());
    for (j, s) in rules.iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].sensitive[{j}].{field}");
        let built_in = SENSITIVE_BUILT_INS.contains(&s.rule.as_str());
        if s.rule.is_empty() || s.rule.len() > 64 || !s.rule.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ConfigError::invalid(key("rule"), "must be 1 to 64 letters, digits or underscores"));
        }
        if built_in && (s.pattern.is_some() || !s.keywords.is_empty()) {
            return Err(ConfigError::invalid(
                key("pattern"),
                format!("{:?} is a built-in rule: pattern and keywords are for custom rules", s.rule),
            ));
        }
        if !s.fields.is_empty() && s.rule != "password_field" {
            return Err(ConfigError::invalid(key("fields"), "only password_field takes fields"));
        }
        let kind = match (s.rule.as_str(), &s.pattern) {
            ("card_number", _) => RuleKind::CardNumber,
            ("iban", _) => RuleKind::Iban,
            ("aws_access_key", _) => RuleKind::AwsAccessKey,
            ("private_key_pem", _) => RuleKind::PrivateKeyPem,
            ("jwt", _) => RuleKind::Jwt,
            ("password_field", _) => RuleKind::PasswordField { names: s.fields.clone() },
            (_, Some(regex)) => RuleKind::Pattern { regex: regex.clone(), keywords: s.keywords.clone() },
            (name, None) => {
                return Err(ConfigError::invalid(
                    key("rule"),
                    format!(
                        "{name:?} is not a built-in rule ({}); a custom rule needs a pattern",
                        SENSITIVE_BUILT_INS.join(", ")
                    ),
                ))
            }
        };
        if rules[..j].iter().any(|o| o.rule == s.rule) {
            return Err(ConfigError::invalid(key("rule"), format!("rule {:?} is listed twice", s.rule)));
        }
        let direction = match s.direction {
            SensitiveDirection::ClientToUpstream => Direction::ClientToUpstream,
            SensitiveDirection::UpstreamToClient => Direction::UpstreamToClient,
            SensitiveDirection::Both => Direction::Both,
        };
        let action = match s.action {
            SensitiveAction::Log => GuardAction::Log,
            SensitiveAction::Redact => GuardAction::Redact,
            SensitiveAction::Block => GuardAction::Block,
        };
        defs.push(RuleDef {
            name: s.rule.clone(),
            kind,
            direction,
            action,
            min_matches: s.min_matches,
            binary: s.binary,
        });
    }
    Guard::compile(&defs)
        .map(|g| Some(Arc::new(g)))
        .map_err(|e| ConfigError::invalid(format!("routes[{i}].sensitive[{}].{}", e.rule, e.field), e.message))
}

fn load_schema(key: &str, path: &Path) -> Result<jsonschema::Validator, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::invalid(key, format!("{}: {e}", path.display())))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ConfigError::invalid(key, format!("{}: not JSON: {e}", path.display())))?;
    jsonschema::validator_for(&value)
        .map_err(|e| ConfigError::invalid(key, format!("{}: not a valid JSON Schema: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[auth.keys]]
algorithm = "HS256"
secret_env = "X"
[[routes]]
path = "/ws"
upstream = "ws://127.0.0.1:9000/ws"
origins = ["https://app.example.com"]
"#;

    #[test]
    fn minimal_config_takes_documented_defaults() {
        let c = Config::parse(MINIMAL, Path::new(".")).expect("valid");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.limits.max_message_bytes, 65_536);
        assert_eq!(c.auth.leeway, Duration::from_secs(5));
        assert_eq!(c.routes[0].type_field, "type");
        assert_eq!(c.routes[0].token_sources, vec![TokenSource::Header, TokenSource::Subprotocol]);
    }

    #[test]
    fn wrong_type_names_the_key_path() {
        let text = format!("{MINIMAL}\n[limits]\nmessages_per_second = \"fast\"\n");
        let err = Config::parse(&text, Path::new(".")).unwrap_err().to_string();
        assert_eq!(err, "limits.messages_per_second: invalid type: string \"fast\", expected u32");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let text = format!("{MINIMAL}\n[timeouts]\nidle_secs = 3\n");
        let err = Config::parse(&text, Path::new(".")).unwrap_err().to_string();
        assert!(err.starts_with("timeouts.idle_secs: unknown field"), "{err}");
    }

    #[test]
    fn cookie_source_requires_origin_allowlist() {
        let text =
            MINIMAL.replace("origins = [\"https://app.example.com\"]", "origins = []\ntoken_sources = [\"cookie\"]");
        let err = Config::parse(&text, Path::new(".")).unwrap_err().to_string();
        assert!(err.starts_with("routes[0].token_sources:"), "{err}");
    }

    #[test]
    fn cookie_source_refuses_requests_without_origin() {
        let text = MINIMAL.replace(
            "origins = [\"https://app.example.com\"]",
            "origins = [\"https://app.example.com\"]\nallow_missing_origin = true\ntoken_sources = [\"cookie\"]",
        );
        let err = Config::parse(&text, Path::new(".")).unwrap_err().to_string();
        assert!(err.starts_with("routes[0].allow_missing_origin:"), "{err}");
    }

    #[test]
    fn the_ticket_source_needs_a_tickets_section_and_the_section_a_ticket_route() {
        let ticket_route = MINIMAL.replace(
            "origins = [\"https://app.example.com\"]",
            "origins = [\"https://app.example.com\"]\ntoken_sources = [\"ticket\", \"header\"]",
        );
        let err = Config::parse(&ticket_route, Path::new(".")).unwrap_err().to_string();
        assert!(err.starts_with("routes[0].token_sources:") && err.contains("[tickets]"), "{err}");
        let err = Config::parse(&format!("[auth]\ntoken_sources = [\"ticket\"]\n{MINIMAL}"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("auth.token_sources:"), "{err}");
        let with = format!("{ticket_route}\n[tickets]\nttl_seconds = 10\n");
        let c = Config::parse(&with, Path::new(".")).expect("valid");
        assert_eq!(c.tickets.as_ref().map(|t| t.ttl), Some(Duration::from_secs(10)));
        assert!(c.routes[0].accepts_tickets());
        assert_eq!(c.ticket_routes().count(), 1);
        let err = Config::parse(&format!("{MINIMAL}\n[tickets]\n"), Path::new(".")).unwrap_err().to_string();
        assert!(err.starts_with("tickets:"), "{err}");
        let endpoint = with.replace("path = \"/ws\"", "path = \"/v1/ws-ticket\"");
        let err = Config::parse(&endpoint, Path::new(".")).unwrap_err().to_string();
        assert!(err.starts_with("routes[0].path:"), "{err}");
        let twice = with.replace("[\"ticket\", \"header\"]", "[\"ticket\", \"ticket\"]");
        let err = Config::parse(&twice, Path::new(".")).unwrap_err().to_string();
        assert!(err.starts_with("routes[0].token_sources:") && err.contains("twice"), "{err}");
        let err = Config::parse(&format!("{ticket_route}\n[tickets]\nttl_seconds = 121\n"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("tickets.ttl_seconds:"), "{err}");
    }

    #[test]
    fn time_keys_are_bounded() {
        for (line, key) in [
            ("leeway_seconds = 3601", "auth.leeway_seconds"),
            ("max_token_lifetime_seconds = 9223372036854775807", "auth.max_token_lifetime_seconds"),
            ("issuer = \"\"", "auth.issuer"),
            ("audience = \"\"", "auth.audience"),
        ] {
            let text = format!("[auth]\n{line}\n{MINIMAL}");
            let err = Config::parse(&text, Path::new(".")).unwrap_err().to_string();
            assert!(err.starts_with(key), "{key}: {err}");
        }
        for (section, line, key) in [
            ("timeouts", "idle_seconds = 31536001", "timeouts.idle_seconds"),
            ("timeouts", "frame_seconds = 18446744073709551615", "timeouts.frame_seconds"),
            ("limits", "refresh_interval_seconds = 18446744073709551615", "limits.refresh_interval_seconds"),
        ] {
            let text = format!("{MINIMAL}\n[{section}]\n{line}\n");
            let err = Config::parse(&text, Path::new(".")).unwrap_err().to_string();
            assert!(err.starts_with(key), "{key}: {err}");
        }
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert_file = \"c\"\nkey_file = \"k\"\nreload_check_seconds = 31536001\n{MINIMAL}"
        );
        let err = Config::parse(&text, Path::new(".")).unwrap_err().to_string();
        assert!(err.starts_with("server.tls.reload_check_seconds"), "{err}");
        // One year is accepted.
        let text = format!("{MINIMAL}\n[timeouts]\nframe_seconds = 31536000\n");
        assert!(Config::parse(&text, Path::new(".")).is_ok());
    }
}
