//! The per-message checks of docs/protocol.md that follow the size check and the token bucket:
//! UTF-8/JSON parse → envelope shape → message type known on the route → scope → JSON Schema.
//!
//! Pure: takes the route, the client's scopes and the frame text; returns what to do with the
//! frame. The session actor owns the order with the bucket and the violation count.

use std::borrow::Cow;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::config::{BinaryPolicy, ExtraFields, MessageRule, Route, UnknownTypes};

/// The gateway's own control type from client to gateway (never forwarded).
pub const AUTH_REFRESH: &str = "auth.refresh";

/// Why a frame was rejected; each maps to the `code` of the error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The token bucket (messages or bytes) is empty.
    RateLimited,
    /// Not strict JSON: a syntax error, a number outside double range, a lone surrogate
    /// escape, a member name twice in one object inside the message, nesting past
    /// [`MAX_NESTING`].
    InvalidJson,
    /// JSON, but not `{"type": string, "payload": object, "id": ...}` (a top-level member
    /// twice, or an extra top-level field on a route that rejects them).
    InvalidEnvelope,
    /// The type is not listed on the route.
    UnknownType,
    /// The token lacks the type's scope, or a refresh failed.
    Forbidden,
    /// The payload fails the type's JSON Schema.
    SchemaViolation,
    /// A binary frame on a route with `binary = "reject"`.
    BinaryNotAllowed,
    /// The message holds data a `block` rule of the sensitive-data guard found.
    SensitiveData,
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
            Self::SensitiveData => "sensitive_data",
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
            Self::SensitiveData => "message holds sensitive data and was not forwarded",
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
    /// The frame's message type, when it had a string one (for the log; at most
    /// [`KIND_LOG_BYTES`] of it).
    pub kind: Option<String>,
}

impl Refused {
    fn new(rejection: Rejection, id: Option<String>) -> Self {
        Self { rejection, id, kind: None }
    }
}

/// Longest message type copied into a refusal's log line (a client chooses it).
pub const KIND_LOG_BYTES: usize = 64;

/// `kind` cut to at most [`KIND_LOG_BYTES`] bytes, on a character boundary.
pub fn kind_for_log(kind: &str) -> &str {
    let mut end = kind.len().min(KIND_LOG_BYTES);
    while !kind.is_char_boundary(end) {
        end -= 1;
    }
    &kind[..end]
}

/// The envelope's `id` (a string or a number) and type of a message already judged, for the
/// refusal of a message the checks passed (the sensitive-data guard's `block`). `None`s when
/// the text is not a JSON object.
pub fn envelope_id_and_type(text: &[u8], type_field: &str) -> (Option<String>, Option<String>) {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(text) else { return (None, None) };
    let id = match map.get("id") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let kind = map.get(type_field).and_then(Value::as_str).map(|k| kind_for_log(k).to_string());
    (id, kind)
}

/// Judge one client text frame on a JSON-envelope route.
///
/// The whole text is read once and strictly, so that the gateway and any backend read the
/// same message: standard JSON only (no `NaN`/`Infinity`, leading zeros or `+`), every number
/// within IEEE-754 double range (`1e400` is refused; big integers inside the range pass, and
/// the frame is forwarded byte for byte, never re-serialized), no lone UTF-16 surrogate in a
/// string escape, and no member name twice in one object (compared after unescaping:
/// `"\u0071ty"` is `"qty"`). A payload the checks need as a tree (a type with a schema,
/// `auth.refresh`, or a type that comes after the payload) is built in that same pass;
/// any other payload is scanned with the same rules without building anything.
///
/// Refusals: a broken rule anywhere inside the message is `invalid_json`; at the top level, a
/// member name twice (type, payload, id or any other) or a field other than the type field,
/// `payload` and `id` (unless the route's `extra_fields = "forward"`) is `invalid_envelope`.
///
/// # Errors
/// [`Refused`] with the first failing check, in docs/protocol.md order.
pub fn check_text(route: &Route, scopes: &[String], text: &str) -> Result<Verdict, Refused> {
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = EnvelopeSeed { route }.deserialize(&mut de).and_then(|p| de.end().map(|()| p));
    let env = match parsed {
        Ok(Parsed::Object(env)) => env,
        Ok(Parsed::Other) => return Err(Refused::new(Rejection::InvalidEnvelope, None)),
        Err(_) => return Err(Refused::new(Rejection::InvalidJson, None)),
    };
    // The id is only copied out when the frame is refused.
    let refuse = |rejection| Refused {
        rejection,
        id: env.id.as_ref().and_then(Loose::to_id),
        kind: match &env.kind {
            Some(Loose::Str(k)) => Some(kind_for_log(k).to_string()),
            _ => None,
        },
    };
    let (Some(Loose::Str(kind)), Some(payload)) = (&env.kind, &env.payload) else {
        return Err(refuse(Rejection::InvalidEnvelope));
    };
    if env.duplicate || env.extra || !payload.is_object() {
        return Err(refuse(Rejection::InvalidEnvelope));
    }
    if kind == AUTH_REFRESH {
        let Payload::Tree(tree) = payload else { return Err(refuse(Rejection::InvalidEnvelope)) };
        return match tree.get("token").and_then(Value::as_str) {
            Some(token) => {
                Ok(Verdict::Refresh { token: token.to_string(), id: env.id.as_ref().and_then(Loose::to_id) })
            }
            None => Err(refuse(Rejection::InvalidEnvelope)),
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
        // A schema'd type always has its payload as a tree: built in the envelope's pass
        // (type first), or because the type was not known yet (payload first).
        let valid = match payload {
            Payload::Tree(v) => schema.is_valid(v),
            Payload::Scanned { .. } => false,
        };
        if !valid {
            return Err(refuse(Rejection::SchemaViolation));
        }
    }
    Ok(Verdict::Forward)
}

/// Deepest nesting of arrays and objects accepted in a client message: serde_json's own
/// recursion limit, which every part of the strict pass goes through.
pub const MAX_NESTING: usize = 128;

/// The strict rules broken by a message (the serde error's text is never shown to a client).
/// The error a strict parse reports for a member name seen twice in one object.
pub(crate) const DUPLICATE_NAME: &str = "duplicate member name";
const NOT_FINITE: &str = "number outside double range";

/// Objects with more members than this check their names for duplicates in a hash set
/// instead of by comparing with each earlier name.
const LINEAR_NAMES: usize = 8;

type NameSet<'de> = std::collections::HashSet<Cow<'de, str>, foldhash::fast::RandomState>;

/// A member name, borrowed from the text when it has no escapes, unescaped otherwise (so
/// escaped-equal names compare equal).
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The member names of one object seen so far, for the duplicate check. The first
/// [`LINEAR_NAMES`] stay inline (on the stack: no allocation for the objects of ordinary
/// messages) and are compared one by one; past them the object moves its names into a hash
/// set of its own, so a hostile object with thousands of members costs linear time, not
/// quadratic.
struct Names<'de> {
    inline: [Cow<'de, str>; LINEAR_NAMES],
    len: usize,
    set: Option<NameSet<'de>>,
}

impl<'de> Names<'de> {
    fn new() -> Self {
        Self { inline: [const { Cow::Borrowed("") }; LINEAR_NAMES], len: 0, set: None }
    }

    /// Record `name`; an error when the object already has it.
    fn add<E: de::Error>(&mut self, name: Cow<'de, str>) -> Result<(), E> {
        let fresh = match &mut self.set {
            Some(set) => set.insert(name),
            None if self.inline[..self.len].contains(&name) => false,
            None if self.len < LINEAR_NAMES => {
                self.inline[self.len] = name;
                self.len += 1;
                true
            }
            None => {
                let mut set: NameSet<'de> = self.inline.iter_mut().map(std::mem::take).collect();
                set.insert(name);
                self.set = Some(set);
                true
            }
        };
        if fresh {
            Ok(())
        } else {
            Err(E::custom(DUPLICATE_NAME))
        }
    }
}

/// Any JSON value, checked strictly (see [`check_text`]) and not built: numbers are parsed
/// (range), strings unescaped (surrogates), member names compared. Evaluates to whether the
/// value was an object. Goes through serde_json's recursion limit ([`MAX_NESTING`]).
struct Scan;

impl<'de> DeserializeSeed<'de> for Scan {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scan {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        finite(v).map(|_| false)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element_seed(Scan)?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut names = Names::new();
        while let Some(Name(name)) = map.next_key::<Name<'de>>()? {
            names.add::<A::Error>(name)?;
            map.next_value_seed(Scan)?;
        }
        Ok(true)
    }
}

/// serde_json never hands out a non-finite f64 (it refuses `1e400` itself); checked here
/// too, so no other input path can let one through.
fn finite<E: de::Error>(v: f64) -> Result<f64, E> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(E::custom(NOT_FINITE))
    }
}

/// Any JSON value built into a [`Value`] under the rules of [`Scan`] (serde_json's own
/// `Value` keeps the last of two equal member names; this refuses the second). Also the
/// reading of JWT headers and claims (`auth::jwt`).
pub(crate) struct Strict(pub(crate) Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Strict, E> {
                Ok(Strict(Value::String(v.to_string())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Strict, E> {
                Ok(Strict(Value::String(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Strict, E> {
                Ok(Strict(Value::String(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Strict, E> {
                Ok(Strict(Value::Number(v.into())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Strict, E> {
                Ok(Strict(Value::Number(v.into())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
                let n = serde_json::Number::from_f64(finite(v)?).ok_or_else(|| E::custom(NOT_FINITE))?;
                Ok(Strict(Value::Number(n)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Strict, E> {
                Ok(Strict(Value::Bool(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Strict, E> {
                Ok(Strict(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(Strict(v)) = seq.next_element()? {
                    items.push(v);
                }
                Ok(Strict(Value::Array(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
                let mut members = serde_json::Map::new();
                while let Some(name) = map.next_key::<String>()? {
                    let Strict(v) = map.next_value()?;
                    if members.insert(name, v).is_some() {
                        return Err(de::Error::custom(DUPLICATE_NAME));
                    }
                }
                Ok(Strict(Value::Object(members)))
            }
        }
        d.deserialize_any(V)
    }
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
    payload: Option<Payload>,
    /// The type's rule when it was looked up while reading (type before payload): not
    /// looked up a second time by the checks.
    rule: Option<&'r MessageRule>,
    /// A top-level member name appeared more than once.
    duplicate: bool,
    /// A top-level field other than the type field, `payload` and `id`, on a route that
    /// rejects them.
    extra: bool,
}

/// An envelope's payload: built into a tree while the envelope is read when the checks need
/// one (see [`check_text`]), else only scanned.
enum Payload {
    Scanned { object: bool },
    Tree(Value),
}

impl Payload {
    fn is_object(&self) -> bool {
        match self {
            Payload::Scanned { object } => *object,
            Payload::Tree(v) => v.is_object(),
        }
    }
}

/// A JSON value read loosely but strictly checked: a string (borrowed when it has no
/// escapes), a number, or anything else (scanned).
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

/// Reads a [`Loose`] value.
struct LooseSeed;

impl<'de> DeserializeSeed<'de> for LooseSeed {
    type Value = Loose<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Loose<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LooseSeed {
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
        Ok(serde_json::Number::from_f64(finite(v)?).map_or(Loose::Other, Loose::Num))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Scan.visit_seq(seq).map(|_| Loose::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Scan.visit_map(map).map(|_| Loose::Other)
    }
}

/// Parses an envelope, knowing the route's type field, which types have a schema and what
/// to do with extra top-level fields.
struct EnvelopeSeed<'r> {
    route: &'r Route,
}

impl<'de, 'r> DeserializeSeed<'de> for EnvelopeSeed<'r> {
    type Value = Parsed<'de, 'r>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Parsed<'de, 'r>, D::Error> {
        d.deserialize_any(EnvelopeVisitor { route: self.route })
    }
}

struct EnvelopeVisitor<'r> {
    route: &'r Route,
}

impl<'de, 'r> Visitor<'de> for EnvelopeVisitor<'r> {
    type Value = Parsed<'de, 'r>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let route = self.route;
        let mut env = Envelope::default();
        // Names of the top level other than the three the envelope reads (rare).
        let mut others: Vec<Cow<'de, str>> = Vec::new();
        let mut seen_id = false;
        while let Some(Name(key)) = map.next_key::<Name<'de>>()? {
            if key == route.type_field {
                env.duplicate |= env.kind.is_some();
                env.kind = Some(map.next_value_seed(LooseSeed)?);
            } else if key == "payload" {
                env.duplicate |= env.payload.is_some();
                let rule = match &env.kind {
                    Some(Loose::Str(kind)) if kind != AUTH_REFRESH => route.messages.get(kind.as_ref()),
                    _ => None,
                };
                // A tree when the checks need one: the type's schema or auth.refresh, or
                // the type is not known yet (it may come after the payload).
                let tree = match &env.kind {
                    Some(Loose::Str(kind)) => kind == AUTH_REFRESH || rule.is_some_and(|r| r.schema.is_some()),
                    Some(_) => false,
                    None => true,
                };
                env.rule = rule;
                env.payload = Some(if tree {
                    Payload::Tree(map.next_value::<Strict>()?.0)
                } else {
                    Payload::Scanned { object: map.next_value_seed(Scan)? }
                });
            } else if key == "id" {
                env.duplicate |= std::mem::replace(&mut seen_id, true);
                env.id = Some(map.next_value_seed(LooseSeed)?);
            } else {
                env.extra |= route.extra_fields == ExtraFields::Reject;
                env.duplicate |= others.contains(&key);
                if others.len() <= LINEAR_NAMES * 4 {
                    others.push(key);
                } else if !env.duplicate {
                    // Hundreds of extra fields: refused as such where they are; where they
                    // are forwarded, the rest are compared in a set.
                    let mut set: NameSet<'de> = others.drain(..).collect();
                    set.insert(key);
                    map.next_value_seed(Scan)?;
                    while let Some(Name(more)) = map.next_key::<Name<'de>>()? {
                        if more == route.type_field || more == "payload" || more == "id" || !set.insert(more) {
                            env.duplicate = true;
                        }
                        map.next_value_seed(Scan)?;
                    }
                    break;
                }
                map.next_value_seed(Scan)?;
            }
        }
        Ok(Parsed::Object(env))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Scan.visit_seq(seq).map(|_| Parsed::Other)
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
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        finite(v).map(|_| Parsed::Other)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Parsed::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Parsed::Other)
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
        let wide = format!(r#"{{"type":"chat.ping","payload":{{"a":[{}]}}}}"#, vec!["{}"; 500].join(","));
        assert_eq!(rejection(&wide, &[]), None, "many siblings are not depth");
        let in_string =
            format!(r#"{{"type":"chat.ping","payload":{{"s":"{}\"{}"}}}}"#, "[".repeat(300), "{".repeat(300));
        assert_eq!(rejection(&in_string, &[]), None);
        let deep_payload = format!(r#"{{"type":"chat.ping","payload":{}{}}}"#, r#"{"a":"#.repeat(200), "}".repeat(200));
        assert_eq!(rejection(&deep_payload, &[]), Some(Rejection::InvalidJson));
        let at_limit = format!(r#"{{"type":"chat.ping","payload":{}1{}}}"#, r#"{"a":"#.repeat(120), "}".repeat(120));
        assert_eq!(rejection(&at_limit, &[]), None);
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
    fn duplicate_member_names_are_refused_at_every_depth_and_after_unescaping() {
        let w = &["chat:write"];
        for text in [
            r#"{"type":"chat.send","payload":{"text":"hi","text":"hello"}}"#,
            r#"{"type":"chat.ping","payload":{"qty":500,"qty":1}}"#,
            r#"{"type":"chat.ping","payload":{"qty":500,"\u0071ty":1}}"#,
            r#"{"type":"chat.ping","payload":{"q\u0074y":500,"qt\u0079":1}}"#,
            r#"{"type":"chat.ping","payload":{"a":[{"b":{"c":1,"c":1}}]}}"#,
            r#"{"payload":{"x":1,"x":2},"type":"chat.ping"}"#,
            r#"{"type":{"a":1,"a":2},"payload":{}}"#,
            r#"{"type":"chat.ping","payload":{},"id":{"a":1,"a":2}}"#,
        ] {
            assert_eq!(rejection(text, w), Some(Rejection::InvalidJson), "{text}");
        }
        // Names equal in one object only are not duplicates.
        assert_eq!(rejection(r#"{"type":"chat.ping","payload":{"a":{"x":1},"b":{"x":1},"x":1}}"#, w), None);
        // Past the linear check, a set compares: a duplicate after many members is found.
        let many: Vec<String> = (0..500).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let ok = format!(r#"{{"type":"chat.ping","payload":{{{}}}}}"#, many.join(","));
        assert_eq!(rejection(&ok, w), None);
        let dup = format!(r#"{{"type":"chat.ping","payload":{{{},"k3":0}}}}"#, many.join(","));
        assert_eq!(rejection(&dup, w), Some(Rejection::InvalidJson));
        let dup_early = format!(r#"{{"type":"chat.ping","payload":{{"k3":0,{}}}}}"#, many.join(","));
        assert_eq!(rejection(&dup_early, w), Some(Rejection::InvalidJson));
        // At the top level: invalid_envelope, escaped names included.
        for text in [
            r#"{"type":"chat.ping","payload":{},"id":1,"id":2}"#,
            r#"{"type":"chat.ping","payload":{},"\u0070ayload":{}}"#,
            r#"{"\u0074ype":"chat.send","type":"chat.ping","payload":{}}"#,
        ] {
            assert_eq!(rejection(text, w), Some(Rejection::InvalidEnvelope), "{text}");
        }
    }

    #[test]
    fn numbers_and_escapes_are_standard_json_within_double_range() {
        let w = &["chat:write"];
        let with = |v: &str| format!(r#"{{"type":"chat.ping","payload":{{"n":{v}}}}}"#);
        let with_schema = |v: &str| format!(r#"{{"type":"chat.send","payload":{{"text":"t","n":{v}}}}}"#);
        for bad in [
            "1e400",
            "-1e400",
            "1e309",
            "NaN",
            "Infinity",
            "-Infinity",
            "01",
            "-01",
            "00",
            "+1",
            ".5",
            "0.",
            "1.e5",
            "1e",
            "0x1",
            "--1",
            r#""\ud800""#,
            r#""\udfff""#,
            r#""\ud800\ud800""#,
            r#""\ud800a""#,
            "'a'",
        ] {
            assert_eq!(rejection(&with(bad), w), Some(Rejection::InvalidJson), "{bad}");
            assert_eq!(rejection(&with_schema(bad), w), Some(Rejection::InvalidJson), "{bad} (schema)");
        }
        assert_eq!(rejection(&with(&"9".repeat(400)), w), Some(Rejection::InvalidJson), "400 digits");
        for good in [
            "-0",
            "0",
            "1E5",
            "1e-400",
            "0.5",
            "-1.5e-3",
            "18446744073709551616",
            "-9223372036854775809",
            "1.7976931348623157e308",
            r#""\ud83d\ude00""#,
            r#""\u0000""#,
        ] {
            assert_eq!(rejection(&with(good), w), None, "{good}");
            assert_eq!(rejection(&with_schema(good), w), None, "{good} (schema)");
        }
        // The id and the type field are held to the same rules.
        assert_eq!(rejection(r#"{"type":"chat.ping","payload":{},"id":1e400}"#, w), Some(Rejection::InvalidJson));
        assert_eq!(rejection(r#"{"type":"\ud800","payload":{}}"#, w), Some(Rejection::InvalidJson));
        assert_eq!(rejection("1e400", w), Some(Rejection::InvalidJson));
        assert_eq!(rejection("[NaN]", w), Some(Rejection::InvalidJson));
    }

    #[test]
    fn extra_top_level_fields_follow_the_route_policy() {
        let mut r = route(UnknownTypes::Reject);
        let text = r#"{"type":"chat.ping","payload":{},"sub":"admin"}"#;
        let refused = check_text(&r, &[], text).unwrap_err();
        assert_eq!((refused.rejection, refused.kind.as_deref()), (Rejection::InvalidEnvelope, Some("chat.ping")));
        r.extra_fields = ExtraFields::Forward;
        assert_eq!(check_text(&r, &[], text), Ok(Verdict::Forward));
        let dup = r#"{"type":"chat.ping","payload":{},"sub":"a","s\u0075b":"b"}"#;
        assert_eq!(check_text(&r, &[], dup).unwrap_err().rejection, Rejection::InvalidEnvelope);
        let bad = r#"{"type":"chat.ping","payload":{},"sub":[1e400]}"#;
        assert_eq!(check_text(&r, &[], bad).unwrap_err().rejection, Rejection::InvalidJson);
        // Hundreds of extra fields: compared in a set, duplicates (and repeated envelope keys) still found.
        let many: Vec<String> = (0..300).map(|i| format!(r#""x{i}":{i}"#)).collect();
        let ok = format!(r#"{{"type":"chat.ping","payload":{{}},{}}}"#, many.join(","));
        assert_eq!(check_text(&r, &[], &ok), Ok(Verdict::Forward));
        let dup = format!(r#"{{"type":"chat.ping","payload":{{}},{},"x1":0}}"#, many.join(","));
        assert_eq!(check_text(&r, &[], &dup).unwrap_err().rejection, Rejection::InvalidEnvelope);
        let dup_type = format!(r#"{{"type":"chat.ping","payload":{{}},{},"type":"chat.send"}}"#, many.join(","));
        assert_eq!(check_text(&r, &[], &dup_type).unwrap_err().rejection, Rejection::InvalidEnvelope);
    }

    #[test]
    fn a_configured_type_field_makes_type_an_extra_field_and_refresh_is_strict_too() {
        let mut r = route(UnknownTypes::Reject);
        r.type_field = "action".into();
        assert_eq!(check_text(&r, &[], r#"{"action":"chat.ping","payload":{}}"#), Ok(Verdict::Forward));
        let both = r#"{"action":"chat.ping","type":"chat.send","payload":{}}"#;
        assert_eq!(check_text(&r, &[], both).unwrap_err().rejection, Rejection::InvalidEnvelope);
        let r = route(UnknownTypes::Reject);
        let last = r#"{"payload":{"token":"a.b.c"},"type":"auth.refresh"}"#;
        assert_eq!(check_text(&r, &[], last), Ok(Verdict::Refresh { token: "a.b.c".into(), id: None }));
        let dup = r#"{"type":"auth.refresh","payload":{"token":"a.b.c","token":"d.e.f"}}"#;
        assert_eq!(check_text(&r, &[], dup).unwrap_err().rejection, Rejection::InvalidJson);
        let no_token = r#"{"type":"auth.refresh","payload":{"token":5}}"#;
        assert_eq!(check_text(&r, &[], no_token).unwrap_err().rejection, Rejection::InvalidEnvelope);
    }

    #[test]
    fn a_refusal_names_its_type_for_the_log_cut_on_a_character_boundary() {
        let long = format!("{}é", "a".repeat(KIND_LOG_BYTES - 1));
        assert_eq!(kind_for_log(&long).len(), KIND_LOG_BYTES - 1);
        assert_eq!(kind_for_log("chat.x"), "chat.x");
        let r = check_text(&route(UnknownTypes::Reject), &[], r#"{"type":"nope","payload":{}}"#).unwrap_err();
        assert_eq!(r.kind.as_deref(), Some("nope"));
    }

    #[test]
    fn binary_follows_route_policy() {
        let mut r = route(UnknownTypes::Reject);
        assert_eq!(check_binary(&r), Err(Rejection::BinaryNotAllowed));
        r.binary = BinaryPolicy::Forward;
        assert_eq!(check_binary(&r), Ok(()));
    }
}
