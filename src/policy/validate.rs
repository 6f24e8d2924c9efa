//! The per-message checks of DESIGN.md §3 that follow the size check and the token bucket:
//! UTF-8/JSON parse → envelope shape → message type known on the route → scope → JSON Schema.
//!
//! Pure: takes the route, the client's scopes and the frame text; returns what to do with the
//! frame. The session actor owns the order with the bucket and the violation count.

use serde_json::Value;

use crate::config::{BinaryPolicy, Route, UnknownTypes};

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
/// # Errors
/// [`Refused`] with the first failing check, in DESIGN.md §3 order.
pub fn check_text(route: &Route, scopes: &[String], text: &str) -> Result<Verdict, Refused> {
    let value: Value = serde_json::from_str(text).map_err(|_| Refused::new(Rejection::InvalidJson, None))?;
    let Value::Object(map) = value else {
        return Err(Refused::new(Rejection::InvalidEnvelope, None));
    };
    let id = match map.get("id") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let (Some(Value::String(kind)), Some(Value::Object(payload))) = (map.get(&route.type_field), map.get("payload"))
    else {
        return Err(Refused::new(Rejection::InvalidEnvelope, id));
    };
    if kind == AUTH_REFRESH {
        return match payload.get("token") {
            Some(Value::String(t)) => Ok(Verdict::Refresh { token: t.clone(), id }),
            _ => Err(Refused::new(Rejection::InvalidEnvelope, id)),
        };
    }
    let Some(rule) = route.messages.get(kind.as_str()) else {
        return match route.unknown_types {
            UnknownTypes::Forward if !is_reserved(kind) => Ok(Verdict::Forward),
            _ => Err(Refused::new(Rejection::UnknownType, id)),
        };
    };
    if let Some(scope) = &rule.scope {
        if !scopes.iter().any(|s| s == scope) {
            return Err(Refused::new(Rejection::Forbidden, id));
        }
    }
    if let Some(schema) = &rule.schema {
        let payload = map.get("payload").unwrap_or(&Value::Null);
        if !schema.is_valid(payload) {
            return Err(Refused::new(Rejection::SchemaViolation, id));
        }
    }
    Ok(Verdict::Forward)
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
    let mut frame = serde_json::Map::new();
    frame.insert(type_field.to_string(), Value::String("error".into()));
    frame.insert("payload".into(), payload);
    Value::Object(frame).to_string()
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
    fn deeply_nested_json_is_rejected_without_overflowing_the_stack() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(rejection(&deep, &[]), Some(Rejection::InvalidJson));
    }

    #[test]
    fn binary_follows_route_policy() {
        let mut r = route(UnknownTypes::Reject);
        assert_eq!(check_binary(&r), Err(Rejection::BinaryNotAllowed));
        r.binary = BinaryPolicy::Forward;
        assert_eq!(check_binary(&r), Ok(()));
    }
}
