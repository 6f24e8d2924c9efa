//! The per-message checks of DESIGN.md §3 that follow the size check and the token bucket:
//! UTF-8/JSON parse → envelope shape → message type known on the route → scope → JSON Schema.
//!
//! Pure: takes the route, the client's scopes and the frame text; returns what to do with the
//! frame. The session actor owns the order with the bucket and the violation count.

use std::borrow::Cow;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::{BinaryPolicy, MessageRule, Route, UnknownTypes};

/// The gateway's own control type from client to gateway (never forwarded).
pub const AUTH_REFRESH: &str = "auth.refresh";

/// Why a frame was rejected; each maps to the `code` of the error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The token bucket (messages or bytes) is empty.
    RateLimited,
    /// Not JSON (or not UTF-8).
    InvalidJson,
    /// JSON, but not `{"type": string, "payload": object, ...}`.
    InvalidEnvelope,
    /// The type is not listed on the route.
    UnknownType,
    /// The token lacks the type's scope, or a refresh failed.
    Forbidden,
    /// The payload fails the type's JSON Schema.
    SchemaViolation,
    /// A binary frame on a route with `binary = "reject"`.
    BinaryNotAllowed,
}

// === impl Rejection ===

impl Rejection {
    /// The `code` of the error frame (also a bounded metric label).
    pub fn code(&self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::InvalidJson => "invalid_json",
            Self::InvalidEnvelope => "invalid_envelope",
            Self::UnknownType => "unknown_type",
            Self::Forbidden => "forbidden",
            Self::SchemaViolation => "schema_violation",
            Self::BinaryNotAllowed => "binary_not_allowed",
        }
    }

    /// A short fixed message for the error frame.
    pub fn message(&self) -> &'static str {
        match self {
            Self::RateLimited => "message rate limit exceeded",
            Self::InvalidJson => "message is not valid JSON",
            Self::InvalidEnvelope => "message must be an object with a string type and an object payload",
            Self::UnknownType => "message type is not accepted on this route",
            Self::Forbidden => "token does not grant this message type",
            Self::SchemaViolation => "payload does not match the schema of this message type",
            Self::BinaryNotAllowed => "binary frames are not accepted on this route",
        }
    }
}

/// What to do with a client text frame that passed the checks.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the frame unchanged to the upstream.
    Forward,
    /// A gateway control message: refresh the session's token.
    Refresh {
        /// The new token (never logged).
        token: String,
        /// The envelope's `id`, echoed as `ref`.
        id: Option<String>,
    },
}

/// A refused frame: the reason and the envelope `id` to echo as `ref`, if one was read.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    /// Why.
    pub rejection: Rejection,
    /// The frame's `id`, when it had a string or number one.
    pub id: Option<String>,
}

impl Refused {
    fn new(rejection: Rejection, id: Option<String>) -> Self {
        Self { rejection, id }
    }
}

/// Judge one client text frame on a JSON-envelope route.
///
/// The envelope is read in one pass without building a JSON tree for it: the type and id are
/// borrowed from the text; the payload is parsed into a value in that same pass when the type
/// before it has a schema (the usual key order), kept as its raw slice otherwise (and parsed
/// once more only if the type came after it and has a schema); the type's rule found then is
/// not looked up again. A type or payload key that appears twice is refused
/// (`invalid_envelope`): the gateway must not authorize one type while a backend that keeps the
/// first duplicate acts on another.
///
/// # Errors
/// [`Refused`] with the first failing check, in DESIGN.md §3 order.
pub fn check_text(route: &Route, scopes: &[String], text: &str) -> Result<Verdict, Refused> {
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = EnvelopeSeed { route }.deserialize(&mut de).and_then(|p| de.end().map(|()| p));
    let env = match parsed {
        Ok(Parsed::Object(env)) => env,
        Ok(Parsed::Other) => return Err(Refused::new(Rejection::InvalidEnvelope, None)),
        Err(_) => return Err(Refused::new(Rejection::InvalidJson, None)),
    };
    // The id is only copied out when the frame is refused.
    let refuse = |rejection| Refused::new(rejection, env.id.as_ref().and_then(Loose::to_id));
    let (Some(Loose::Str(kind)), Some(payload)) = (&env.kind, &env.payload) else {
        return Err(refuse(Rejection::InvalidEnvelope));
    };
    if env.duplicate || !payload.is_object() {
        return Err(refuse(Rejection::InvalidEnvelope));
    }
    // A parsed payload went through serde_json's own recursion limit (= MAX_NESTING).
    if let Payload::Raw(raw) = payload {
        if !nesting_within(raw.get(), MAX_NESTING) {
            return Err(refuse(Rejection::InvalidJson));
        }
    }
    if kind == AUTH_REFRESH {
        let Payload::Raw(raw) = payload else { return Err(refuse(Rejection::InvalidEnvelope)) };
        return match serde_json::from_str::<RefreshPayload>(raw.get()) {
            Ok(p) => Ok(Verdict::Refresh { token: p.token, id: env.id.as_ref().and_then(Loose::to_id) }),
            Err(_) => Err(refuse(Rejection::InvalidEnvelope)),
        };
    }
    let Some(rule) = env.rule.or_else(|| route.messages.get(kind.as_ref())) else {
        return match route.unknown_types {
            UnknownTypes::Forward if !is_reserved(kind) => Ok(Verdict::Forward),
            _ => Err(refuse(Rejection::UnknownType)),
        };
    };
    if let Some(scope) = &rule.scope {
        if !scopes.iter().any(|s| s == scope) {
            return Err(refuse(Rejection::Forbidden));
        }
    }
    if let Some(schema) = &rule.schema {
        let valid = match payload {
            Payload::Tree(v) => schema.is_valid(v),
            // The type came after the payload in the frame: parsed now, once.
            Payload::Raw(raw) => serde_json::from_str::<Value>(raw.get()).is_ok_and(|v| schema.is_valid(&v)),
        };
        if !valid {
            return Err(refuse(Rejection::SchemaViolation));
        }
    }
    Ok(Verdict::Forward)
}

/// Deepest nesting of arrays and objects accepted in a client message (serde_json's own
/// recursion limit for the parts it builds).
pub const MAX_NESTING: usize = 128;

/// True when `json` (valid JSON) nests arrays and objects at most `limit` deep. A text
/// shorter than two bytes per level cannot; counting the openers outside strings (memchr over
/// the text) settles almost every other message; only one with more openers than `limit` is
/// walked byte by byte.
fn nesting_within(json: &str, limit: usize) -> bool {
    let b = json.as_bytes();
    if b.len() <= limit * 2 {
        // Too short to nest deeper than the limit (each level takes two bytes).
        return true;
    }
    let (mut i, mut openers) = (0, 0);
    while let Some(off) = memchr::memchr3(b'"', b'[', b'{', &b[i..]) {
        let at = i + off;
        if b[at] == b'"' {
            i = string_end(b, at + 1);
        } else {
            openers += 1;
            if openers > limit {
                return exact_nesting_within(b, limit);
            }
            i = at + 1;
        }
    }
    true
}

/// Index just past the closing quote of the string starting at `i` (after its opening quote).
fn string_end(b: &[u8], mut i: usize) -> usize {
    while let Some(off) = memchr::memchr2(b'"', b'\\', &b[i..]) {
        let at = i + off;
        if b[at] == b'\\' {
            i = at + 2;
            if i >= b.len() {
                return b.len();
            }
        } else {
            return at + 1;
        }
    }
    b.len()
}

fn exact_nesting_within(b: &[u8], limit: usize) -> bool {
    let (mut i, mut depth) = (0, 0usize);
    while i < b.len() {
        match b[i] {
            b'"' => {
                i = string_end(b, i + 1);
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    true
}

/// Any JSON value, skipped; unlike `serde::de::IgnoredAny` it goes through serde_json's recursion limit.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Skip;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Skip)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(Skip)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(serde::Deserialize)]
struct RefreshPayload {
    token: String,
}

/// A client frame's top level: an envelope object, or any other JSON value.
enum Parsed<'a, 'r> {
    Object(Envelope<'a, 'r>),
    Other,
}

/// The fields of an envelope the checks read.
#[derive(Default)]
struct Envelope<'a, 'r> {
    kind: Option<Loose<'a>>,
    id: Option<Loose<'a>>,
    payload: Option<Payload<'a>>,
    /// The type's rule when it was looked up while reading (type before payload): not
    /// looked up a second time by the checks.
    rule: Option<&'r MessageRule>,
    /// The type or payload key appeared more than once.
    duplicate: bool,
}

/// An envelope's payload: parsed into a tree while the envelope is read when the type before
/// it has a JSON Schema (the one parse the schema needs), else kept as its raw text.
enum Payload<'a> {
    Raw(&'a RawValue),
    Tree(Value),
}

impl Payload<'_> {
    fn is_object(&self) -> bool {
        match self {
            Payload::Raw(raw) => raw.get().starts_with('{'),
            Payload::Tree(v) => v.is_object(),
        }
    }
}

/// A JSON value read loosely: a string (borrowed when it has no escapes), a number,
/// or anything else (skipped).
enum Loose<'a> {
    Str(Cow<'a, str>),
    Num(serde_json::Number),
    Other,
}

impl Loose<'_> {
    /// The envelope `id` to echo as `ref`: a string or a number.
    fn to_id(&self) -> Option<String> {
        match self {
            Loose::Str(s) => Some(s.to_string()),
            Loose::Num(n) => Some(n.to_string()),
            Loose::Other => None,
        }
    }
}

impl<'de> Deserialize<'de> for Loose<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Loose<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Loose::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Loose::Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Loose::Str(Cow::Owned(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Loose::Num(v.into()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Loose::Num(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(serde_json::Number::from_f64(v).map_or(Loose::Other, Loose::Num))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Loose::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Loose::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Loose::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(Loose::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses an envelope, knowing the route's type field and which types have a schema.
struct EnvelopeSeed<'r> {
    route: &'r Route,
}

impl<'de, 'r> DeserializeSeed<'de> for EnvelopeSeed<'r> {
    type Value = Parsed<'de, 'r>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Parsed<'de, 'r>, D::Error> {
        struct V<'r>(&'r Route);
        impl<'de, 'r> Visitor<'de> for V<'r> {
            type Value = Parsed<'de, 'r>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut env = Envelope::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == self.0.type_field {
                        env.duplicate |= env.kind.is_some();
                        env.kind = Some(map.next_value::<Loose<'de>>()?);
                    } else if key == "payload" {
                        env.duplicate |= env.payload.is_some();
                        let rule = match &env.kind {
                            Some(Loose::Str(kind)) if kind != AUTH_REFRESH => self.0.messages.get(kind.as_ref()),
                            _ => None,
                        };
                        let schema_follows = rule.is_some_and(|r| r.schema.is_some());
                        env.rule = rule;
                        env.payload = Some(if schema_follows {
                            Payload::Tree(map.next_value::<Value>()?)
                        } else {
                            Payload::Raw(map.next_value::<&'de RawValue>()?)
                        });
                    } else if key == "id" {
                        env.id = Some(map.next_value::<Loose<'de>>()?);
                    } else {
                        map.next_value::<Skip>()?;
                    }
                }
                Ok(Parsed::Object(env))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Parsed::Other)
            }
            fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<Self::Value, E> {
                Ok(Parsed::Other)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Parsed::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Parsed::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Parsed::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Parsed::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Parsed::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Parsed::Other)
            }
        }
        d.deserialize_any(V(self.route))
    }
}

/// Judge a client binary frame on a JSON-envelope route.
///
/// # Errors
/// [`Rejection::BinaryNotAllowed`] where the route rejects binary frames.
pub fn check_binary(route: &Route) -> Result<(), Rejection> {
    match route.binary {
        BinaryPolicy::Forward => Ok(()),
        BinaryPolicy::Reject => Err(Rejection::BinaryNotAllowed),
    }
}

/// Gateway-reserved types a client may not send upstream even where unknown types forward.
fn is_reserved(kind: &str) -> bool {
    kind.starts_with("auth.") || kind == "error"
}

/// The error frame sent to the client for a refused frame.
pub fn error_frame(rejection: Rejection, id: Option<&str>, type_field: &str) -> String {
    let mut payload = serde_json::json!({"code": rejection.code(), "message": rejection.message()});
    if let Some(id) = id {
        payload["ref"] = Value::String(id.to_string());
    }
    gateway_frame(type_field, "error", &payload)
}

/// A frame of the gateway's own, `{"<type_field>":"<kind>","payload":<payload>}`, with the
/// type first as clients are asked to write theirs (a `Value` map would sort `payload` first).
pub fn gateway_frame(type_field: &str, kind: &str, payload: &Value) -> String {
    let mut out = String::with_capacity(64);
    out.push('{');
    out.push_str(&Value::String(type_field.to_string()).to_string());
    out.push(':');
    out.push_str(&Value::String(kind.to_string()).to_string());
    out.push_str(",\"payload\":");
    out.push_str(&payload.to_string());
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MessageRule;

    fn route(unknown: UnknownTypes) -> Route {
        let schema = serde_json::json!({
            "type": "object", "required": ["text"],
            "properties": {"text": {"type": "string", "maxLength": 10}}
        });
        let mut r = Route { unknown_types: unknown, ..Route::new("/ws", "ws://127.0.0.1:1/") };
        r.messages.insert("chat.send".into(), MessageRule::new(Some("chat:write"), Some(&schema)).expect("schema"));
        r.messages.insert("chat.ping".into(), MessageRule::new(None, None).expect("rule"));
        r
    }

    fn scopes(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn rejection(text: &str, s: &[&str]) -> Option<Rejection> {
        check_text(&route(UnknownTypes::Reject), &scopes(s), text).err().map(|r| r.rejection)
    }

    #[test]
    fn each_check_rejects_with_its_code_in_order() {
        let w = &["chat:write"];
        assert_eq!(rejection("not json", w), Some(Rejection::InvalidJson));
        assert_eq!(rejection("[1,2]", w), Some(Rejection::InvalidEnvelope));
        assert_eq!(rejection(r#"{"type":1,"payload":{}}"#, w), Some(Rejection::InvalidEnvelope));
        assert_eq!(rejection(r#"{"type":"chat.send","payload":"x"}"#, w), Some(Rejection::InvalidEnvelope));
        assert_eq!(rejection(r#"{"type":"nope","payload":{}}"#, w), Some(Rejection::UnknownType));
        assert_eq!(rejection(r#"{"type":"chat.send","payload":{"text":"hi"}}"#, &[]), Some(Rejection::Forbidden));
        assert_eq!(rejection(r#"{"type":"chat.send","payload":{"text":5}}"#, w), Some(Rejection::SchemaViolation));
        assert_eq!(rejection(r#"{"type":"chat.send","payload":{"text":"hi"}}"#, w), None);
        assert_eq!(rejection(r#"{"type":"chat.ping","payload":{}}"#, &[]), None);
    }

    #[test]
    fn id_is_echoed_as_ref_when_present() {
        let r = check_text(&route(UnknownTypes::Reject), &[], r#"{"type":"x","payload":{},"id":"c-17"}"#).unwrap_err();
        assert_eq!(r.id.as_deref(), Some("c-17"));
        let frame = error_frame(r.rejection, r.id.as_deref(), "type");
        let v: Value = serde_json::from_str(&frame).expect("json");
        assert_eq!(v["type"], "error");
        assert_eq!(v["payload"]["code"], "unknown_type");
        assert_eq!(v["payload"]["ref"], "c-17");
        assert!(frame.starts_with(r#"{"type":"error","payload":{"#), "type first: {frame}");
        let custom = error_frame(r.rejection, None, "act\"ion");
        assert!(custom.starts_with(r#"{"act\"ion":"error","#), "{custom}");
        assert!(serde_json::from_str::<Value>(&custom).is_ok());
    }

    #[test]
    fn refresh_is_a_control_message_not_forwarded() {
        let v =
            check_text(&route(UnknownTypes::Forward), &[], r#"{"type":"auth.refresh","payload":{"token":"a.b.c"}}"#);
        assert_eq!(v, Ok(Verdict::Refresh { token: "a.b.c".into(), id: None }));
    }

    #[test]
    fn unknown_types_forward_only_where_configured_and_never_reserved_ones() {
        let r = route(UnknownTypes::Forward);
        assert_eq!(check_text(&r, &[], r#"{"type":"other","payload":{}}"#), Ok(Verdict::Forward));
        let err = check_text(&r, &[], r#"{"type":"auth.expiring","payload":{}}"#).unwrap_err();
        assert_eq!(err.rejection, Rejection::UnknownType);
    }

    #[test]
    fn duplicate_type_or_payload_keys_are_refused() {
        let w = &["chat:write"];
        let dup_type = r#"{"type":"chat.ping","type":"chat.send","payload":{"text":"hi"}}"#;
        assert_eq!(rejection(dup_type, w), Some(Rejection::InvalidEnvelope));
        let dup_payload = r#"{"type":"chat.send","payload":{"text":"hi"},"payload":{"text":5}}"#;
        assert_eq!(rejection(dup_payload, w), Some(Rejection::InvalidEnvelope));
    }

    #[test]
    fn escaped_strings_and_numeric_ids_are_read() {
        let w = &["chat:write"];
        assert_eq!(rejection(r#"{"type":"chat\u002esend","payload":{"text":"hi"}}"#, w), None);
        let r = check_text(&route(UnknownTypes::Reject), &[], r#"{"id":42,"type":"x","payload":{}}"#).unwrap_err();
        assert_eq!(r.id.as_deref(), Some("42"));
        assert_eq!(rejection(r#"{"type":"chat.send","payload":{"text":"hi"}} x"#, w), Some(Rejection::InvalidJson));
        assert_eq!(rejection(r#"{"type":"chat.send","payload":{"text":"hi"}"#, w), Some(Rejection::InvalidJson));
    }

    #[test]
    fn deeply_nested_json_is_rejected_without_overflowing_the_stack() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(rejection(&deep, &[]), Some(Rejection::InvalidJson));
    }

    #[test]
    fn nesting_is_measured_outside_strings() {
        assert!(nesting_within(r#"{"a":[{"b":[]}]}"#, 4));
        assert!(!nesting_within(r#"{"a":[{"b":[]}]}"#, 3));
        let wide = format!("[{}]", vec!["{}"; 500].join(","));
        assert!(nesting_within(&wide, 2), "many siblings are not depth");
        let in_string = format!(r#"{{"s":"{}\"{}"}}"#, "[".repeat(300), "{".repeat(300));
        assert!(nesting_within(&in_string, 1));
        let deep_payload = format!(r#"{{"type":"chat.ping","payload":{}{}}}"#, r#"{"a":"#.repeat(200), "}".repeat(200));
        assert_eq!(rejection(&deep_payload, &[]), Some(Rejection::InvalidJson));
    }

    /// The payload of a schema'd type is parsed in the envelope's pass when the type comes
    /// first and afterwards when it comes last: the verdict is the same either way.
    #[test]
    fn schema_is_checked_whichever_key_comes_first() {
        let w = &["chat:write"];
        for (text, want) in [
            (r#"{"type":"chat.send","payload":{"text":"hi"}}"#, None),
            (r#"{"payload":{"text":"hi"},"type":"chat.send"}"#, None),
            (r#"{"type":"chat.send","payload":{"text":"far too long"}}"#, Some(Rejection::SchemaViolation)),
            (r#"{"payload":{"text":"far too long"},"type":"chat.send"}"#, Some(Rejection::SchemaViolation)),
            (r#"{"type":"chat.send","payload":[1]}"#, Some(Rejection::InvalidEnvelope)),
            (r#"{"payload":[1],"type":"chat.send"}"#, Some(Rejection::InvalidEnvelope)),
        ] {
            assert_eq!(rejection(text, w), want, "{text}");
        }
        let deep = format!(r#"{{"type":"chat.send","payload":{}{}}}"#, r#"{"a":"#.repeat(200), "}".repeat(200));
        assert_eq!(rejection(&deep, w), Some(Rejection::InvalidJson));
        let deep_last = format!(r#"{{"payload":{}{},"type":"chat.send"}}"#, r#"{"a":"#.repeat(200), "}".repeat(200));
        assert_eq!(rejection(&deep_last, w), Some(Rejection::InvalidJson));
    }

    #[test]
    fn binary_follows_route_policy() {
        let mut r = route(UnknownTypes::Reject);
        assert_eq!(check_binary(&r), Err(Rejection::BinaryNotAllowed));
        r.binary = BinaryPolicy::Forward;
        assert_eq!(check_binary(&r), Ok(()));
    }
}
