//! The config file's serde shape: what `[server]`, `[auth]`, `[limits]`, ... may contain, their
//! types and their defaults (`DEFAULT_*` and the `Default` impls), and the JSON Schema derived
//! from it (`wsgate config-schema`). Parsing fails here with the dotted path of the offending
//! key; every check beyond the shape is in the validation of [`super::Config`].

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::ConfigError;

/// Default public listener.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// Default admin listener: loopback only, so metrics and admin never face the internet by default.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Clock skew tolerated on `exp`/`nbf`, in seconds (jsonwebtoken's own default of 60 is too lax).
pub const DEFAULT_LEEWAY_SECONDS: u64 = 5;
/// How long before the deadline `auth.expiring` is sent.
pub const DEFAULT_EXPIRY_WARNING_SECONDS: u64 = 30;
/// Longest token lifetime accepted (`exp - iat`, or `exp - now` without `iat`): one day. A
/// stolen token with a far `exp` is worth more than one an IdP would really issue.
pub const DEFAULT_MAX_TOKEN_LIFETIME_SECONDS: u64 = 86_400;

/// The JSON Schema of the config file (draft 2020-12), from the same serde shape the parser
/// uses: editors validate a `wsgate.toml` with it (`wsgate config-schema`). Checks that need
/// more than the shape (addresses, URLs, files, cross-key rules) stay with `check-config`.
pub fn json_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(RawConfig)).unwrap_or_default();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), "wsgate configuration".into());
    }
    schema
}

/// Parse TOML text into the raw shape. A wrong type or an unknown key fails with its dotted
/// path (`limits.messages_per_second`).
pub(super) fn parse(text: &str) -> Result<RawConfig, ConfigError> {
    let de = toml::Deserializer::parse(text)
        .map_err(|e| ConfigError::Parse { key: "(file)".into(), reason: e.message().to_string() })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Parse {
            key: if key == "." { "(root)".into() } else { key },
            reason: e.inner().message().to_string(),
        }
    })
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) auth: RawAuth,
    #[serde(default)]
    pub(super) limits: Limits,
    #[serde(default)]
    pub(super) timeouts: Timeouts,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    /// Fleet mode (several nodes sharing caps, rates and revocations through Redis).
    pub(super) fleet: Option<super::fleet::RawFleet>,
    /// One-time connection tickets (`POST /v1/ws-ticket`, the `ticket` token source).
    pub(super) tickets: Option<super::tickets::RawTickets>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub(super) listen: String,
    pub(super) workers: usize,
    pub(super) trusted_proxies: Vec<String>,
    pub(super) proxy_protocol: bool,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) tls: Option<RawTls>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            workers: 0,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            state_dir: None,
            tls: None,
        }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert_file: PathBuf,
    pub(super) key_file: PathBuf,
    #[serde(default = "default_reload_check_seconds")]
    pub(super) reload_check_seconds: u64,
}

fn default_reload_check_seconds() -> u64 {
    10
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    pub(super) listen: String,
    pub(super) token_env: Option<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self { listen: DEFAULT_ADMIN_LISTEN.into(), token_env: None }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAuth {
    pub(super) issuer: Option<String>,
    pub(super) audience: Option<String>,
    pub(super) leeway_seconds: u64,
    pub(super) scope_claim: String,
    pub(super) token_sources: Vec<String>,
    pub(super) cookie_name: String,
    pub(super) query_param: String,
    pub(super) expiry_warning_seconds: u64,
    pub(super) max_token_lifetime_seconds: u64,
    pub(super) require_iat: bool,
    pub(super) jwks_file: Option<PathBuf>,
    pub(super) jwks_url: Option<String>,
    pub(super) jwks_refresh_seconds: u64,
    pub(super) jwks_timeout_seconds: u64,
    pub(super) keys: Vec<KeyConfig>,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
            scope_claim: "scope".into(),
            token_sources: vec!["header".into(), "subprotocol".into()],
            cookie_name: "access_token".into(),
            query_param: "access_token".into(),
            expiry_warning_seconds: DEFAULT_EXPIRY_WARNING_SECONDS,
            max_token_lifetime_seconds: DEFAULT_MAX_TOKEN_LIFETIME_SECONDS,
            require_iat: false,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_seconds: 300,
            jwks_timeout_seconds: 5,
            keys: Vec::new(),
        }
    }
}

/// One verification key (`[[auth.keys]]`). Exactly one of `secret_env` (HMAC) or
/// `public_key_file` (RSA/EC/Ed25519 PEM) is set; the key is only ever used with `algorithm`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Key id; a token whose header names a `kid` is checked with that key only.
    pub kid: Option<String>,
    /// JWS algorithm this key verifies (`HS256`, `RS256`, `PS256`, `ES256`, `EdDSA`, ...).
    pub algorithm: String,
    /// Environment variable holding the HMAC secret.
    pub secret_env: Option<String>,
    /// PEM file with the public key.
    pub public_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) path: String,
    pub(super) upstream: String,
    pub(super) upstream_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) origins: Vec<String>,
    #[serde(default)]
    pub(super) allow_missing_origin: bool,
    pub(super) token_sources: Option<Vec<String>>,
    pub(super) connect_scope: Option<String>,
    #[serde(default)]
    pub(super) subprotocols: Vec<String>,
    #[serde(default)]
    pub(super) envelope: Envelope,
    #[serde(default = "default_type_field")]
    pub(super) type_field: String,
    #[serde(default)]
    pub(super) unknown_types: UnknownTypes,
    #[serde(default)]
    pub(super) binary: BinaryPolicy,
    #[serde(default = "default_true")]
    pub(super) forward_identity: bool,
    #[serde(default)]
    pub(super) extra_fields: ExtraFields,
    #[serde(default)]
    pub(super) messages: Vec<RawMessage>,
    /// The sensitive-data guard's rules (`[[routes.sensitive]]`).
    #[serde(default)]
    pub(super) sensitive: Vec<RawSensitive>,
}

/// One rule of the sensitive-data guard.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSensitive {
    /// A built-in rule (`card_number`, `iban`, `aws_access_key`, `private_key_pem`, `jwt`,
    /// `password_field`), or the name of a custom rule given with `pattern`.
    pub(super) rule: String,
    /// A custom rule's regular expression (Rust `regex` syntax).
    pub(super) pattern: Option<String>,
    /// A custom rule's prefilter: its pattern runs only on messages holding one of these
    /// literals (ASCII case-insensitive). Without keywords it runs on every message.
    #[serde(default)]
    pub(super) keywords: Vec<String>,
    /// `password_field` only: the JSON member names to look for (case-folded), instead of
    /// the built-in list.
    #[serde(default)]
    pub(super) fields: Vec<String>,
    /// Which messages the rule reads.
    #[serde(default)]
    pub(super) direction: SensitiveDirection,
    /// What a hit does.
    #[serde(default)]
    pub(super) action: SensitiveAction,
    /// Hits of this rule needed in one message before it acts (0 or 1: any hit).
    #[serde(default)]
    pub(super) min_matches: u32,
    /// The rule reads binary messages too (as text; a redact rule's hit blocks them).
    #[serde(default)]
    pub(super) binary: bool,
}

/// Which messages a sensitive-data rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SensitiveDirection {
    /// Client messages on their way to the upstream.
    ClientToUpstream,
    /// Upstream messages on their way to the client.
    UpstreamToClient,
    /// Both.
    #[default]
    Both,
}

/// What a sensitive-data hit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SensitiveAction {
    /// The message flows; a `sensitive_data` event is logged and counted.
    #[default]
    Log,
    /// The value is replaced by `"[REDACTED:<rule>]"` and the message re-serialized.
    Redact,
    /// The message is not forwarded (a client gets an error frame `sensitive_data`; counts as
    /// a violation).
    Block,
}

pub(super) fn default_type_field() -> String {
    "type".into()
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMessage {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) scope: Option<String>,
    pub(super) schema_file: Option<PathBuf>,
}

/// Connection and message limits (`[limits]`). `0` means unlimited for every key.
// The serde shape and the validated type at once: every field is used as read, the one
// interval becomes a `Duration` as it is read.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Live connections through this gateway process; over it, handshakes get 503.
    pub max_connections: u64,
    /// Live connections per client IP; over it, 429.
    pub max_connections_per_ip: u32,
    /// Live connections per token subject; over it, 429.
    pub max_connections_per_subject: u32,
    /// Sustained handshakes per second per client IP (token bucket refill).
    pub handshakes_per_second_per_ip: u32,
    /// Handshake burst per client IP (token bucket size).
    pub handshake_burst_per_ip: u32,
    /// Sustained client messages per second per connection.
    pub messages_per_second: u32,
    /// Message burst per connection.
    pub message_burst: u32,
    /// Sustained client bytes per second per connection (burst: one second's worth, at least
    /// one maximal message).
    pub bytes_per_second: u64,
    /// Largest message (all fragments together) in either direction; over it, close 1009.
    pub max_message_bytes: usize,
    /// Rejected frames within 60 s before the connection is closed (4029 or 1008).
    pub violations_before_close: u32,
    /// Bytes from the upstream waiting for a client that does not read; over it, close 4008.
    pub outbound_buffer_bytes: usize,
    /// `auth.refresh` messages a connection may send at once (each one is a signature
    /// verification); over it, `rate_limited`. 0 = unlimited.
    pub refresh_burst: u32,
    /// After the burst, one `auth.refresh` per this many seconds per connection. 0 = unlimited.
    #[serde(rename = "refresh_interval_seconds", deserialize_with = "seconds", serialize_with = "as_seconds")]
    #[schemars(rename = "refresh_interval_seconds", with = "u64")]
    pub refresh_interval: Duration,
    /// Per-IP limits (connection cap, handshake rate) key an IPv6 client by this many leading
    /// bits of its address (its /64 by default: one subscriber's whole prefix counts as one
    /// client); 128 = the full address. IPv4 clients are keyed by their full address. Logs and
    /// the admin API keep the full address.
    pub ipv6_prefix_length: u8,
}

/// A whole number of seconds, read as a [`Duration`].
fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

/// A [`Duration`] as whole seconds (the default shown by `wsgate config-schema`).
fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_connections_per_ip: 100,
            max_connections_per_subject: 20,
            handshakes_per_second_per_ip: 20,
            handshake_burst_per_ip: 40,
            messages_per_second: 50,
            message_burst: 100,
            bytes_per_second: 1_048_576,
            max_message_bytes: 65_536,
            violations_before_close: 10,
            outbound_buffer_bytes: 1_048_576,
            refresh_burst: 3,
            refresh_interval: Duration::from_secs(10),
            ipv6_prefix_length: 64,
        }
    }
}

/// Timeouts (`[timeouts]`), in seconds. `0` disables the timeout where that makes sense
/// (`idle_seconds`, `ping_interval_seconds`); the connect and handshake timeouts must be > 0.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Timeouts {
    /// Time a client has to send its complete upgrade request.
    pub handshake_seconds: u64,
    /// Time the upstream has to accept the WebSocket (then 504).
    pub upstream_connect_seconds: u64,
    /// A client silent (no frame, no pong) this long is closed; 0 = never.
    pub idle_seconds: u64,
    /// Interval of gateway pings to the client; 0 = no pings.
    pub ping_interval_seconds: u64,
    /// Time over which open clients are closed when draining.
    pub drain_seconds: u64,
    /// Time one client frame (header and payload) may take to arrive once its first byte
    /// did; past it, close 1008. Bytes of an incomplete frame are not activity for
    /// `idle_seconds`. 0 = no limit.
    pub frame_seconds: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake_seconds: 10,
            upstream_connect_seconds: 5,
            idle_seconds: 300,
            ping_interval_seconds: 30,
            drain_seconds: 30,
            frame_seconds: 10,
        }
    }
}

/// Whether frames on a route are JSON envelopes (checked) or opaque (passed through).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Envelope {
    /// `{"type": ..., "payload": {...}}`, validated per docs/protocol.md.
    #[default]
    Json,
    /// Opaque text/binary frames: no JSON steps, every other check still applies.
    None,
}

/// What happens to a message type the route does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnknownTypes {
    /// Answered with `unknown_type`.
    #[default]
    Reject,
    /// Forwarded (still size/rate checked).
    Forward,
}

/// What happens to binary frames on a JSON route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BinaryPolicy {
    /// Answered with `binary_not_allowed`.
    #[default]
    Reject,
    /// Forwarded unchanged.
    Forward,
}

/// What happens to top-level envelope fields other than the type field, `payload` and `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExtraFields {
    /// Answered with `invalid_envelope`: a field such as `"sub"` or `"tenant"` next to the
    /// envelope never reaches a backend that might believe it.
    #[default]
    Reject,
    /// Forwarded unchanged (still parsed strictly), for backends that read fields of their own.
    Forward,
}
