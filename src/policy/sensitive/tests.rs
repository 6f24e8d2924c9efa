use super::*;

use proptest::prelude::*;
use serde_json::Value;

const C2U: Direction = Direction::ClientToUpstream;
const U2C: Direction = Direction::UpstreamToClient;

fn def(name: &str, kind: RuleKind, action: GuardAction) -> RuleDef {
    RuleDef::new(name, kind, Direction::Both, action)
}

/// The default pack: every built-in, log, both directions.
fn default_pack() -> Vec<RuleDef> {
    vec![
        def("card_number", RuleKind::CardNumber, GuardAction::Log),
        def("iban", RuleKind::Iban, GuardAction::Log),
        def("aws_access_key", RuleKind::AwsAccessKey, GuardAction::Log),
        def("private_key_pem", RuleKind::PrivateKeyPem, GuardAction::Log),
        def("jwt", RuleKind::Jwt, GuardAction::Log),
        def("password_field", RuleKind::PasswordField { names: vec![] }, GuardAction::Log),
    ]
}

fn key() -> FingerprintKey {
    FingerprintKey::from_bytes(b"test key")
}

fn guard(defs: &[RuleDef]) -> Guard {
    Guard::compile(defs).expect("compiles")
}

/// (rule, pointer) of each hit of the default pack in `text`.
fn hits_in(g: &Guard, text: &str) -> Vec<(String, String)> {
    g.scan(C2U, text, &key()).map_or_else(Vec::new, |f| f.hits.into_iter().map(|h| (h.rule, h.pointer)).collect())
}

fn found(text: &str) -> Vec<(String, String)> {
    hits_in(&guard(&default_pack()), text)
}

fn one(rule: &str, pointer: &str) -> Vec<(String, String)> {
    vec![(rule.to_string(), pointer.to_string())]
}

fn chat(text: &str) -> String {
    serde_json::json!({"type": "chat.send", "payload": {"room": "ops", "text": text}}).to_string()
}

const JWT: &str =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

#[test]
fn cards_valid_split_and_near_misses() {
    for card in [
        "4111111111111111",
        "5555555555554444",
        "378282246310005",
        "4222222222222",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "3782 822463 10005",
        "4111 1111 1111 1111 12/25",
    ] {
        assert_eq!(found(&chat(&format!("my card: {card} thanks"))), one("card_number", "/payload/text"), "{card}");
    }
    for miss in [
        "4111111111111112",     // Luhn
        "411111111111",         // 12 digits
        "41111111111111111110", // 20 digits in one run
        "4111  1111 1111 1111", // a double space splits the run
        "x4111111111111111",    // inside a word
        "1712345678901",        // a millisecond timestamp (Luhn-valid, starts with 1)
        "0.4111111111111111",   // a decimal fraction
        "0000000000000000",     // zeros
    ] {
        assert_eq!(found(&chat(&format!("n {miss} n"))), vec![], "{miss}");
    }
    // a JSON number, and the plain text (not JSON) case
    assert_eq!(found(r#"{"card":4111111111111111}"#), one("card_number", "/card"));
    assert_eq!(found("card 4111111111111111"), one("card_number", ""));
}

#[test]
fn ibans_valid_and_bad_checksum() {
    for iban in
        ["DE89370400440532013000", "DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "NL91ABNA0417164300"]
    {
        assert_eq!(found(&chat(&format!("pay to {iban}, ok"))), one("iban", "/payload/text"), "{iban}");
    }
    for miss in
        ["DE88370400440532013000", "DE8937040044053201300", "XDE89370400440532013000", "DE89 3704 0044 0532 0130 001"]
    {
        assert_eq!(found(&chat(&format!("pay to {miss}, ok"))), vec![], "{miss}");
    }
}

#[test]
fn aws_keys_alone_not_embedded() {
    assert_eq!(found(&chat("key AKIAIOSFODNN7EXAMPLE here")), one("aws_access_key", "/payload/text"));
    assert_eq!(found(&chat("ASIAIOSFODNN7EXAMPLE")), one("aws_access_key", "/payload/text"));
    for miss in
        ["xAKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE9", "AKIAIOSFODNN7EXAMPL", "AKIAiosfodnn7example", "Asia is big"]
    {
        assert_eq!(found(&chat(miss)), vec![], "{miss}");
    }
}

#[test]
fn pem_private_key_not_certificate() {
    let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n";
    assert_eq!(found(&chat(key)), one("private_key_pem", "/payload/text"));
    assert_eq!(found("-----BEGIN PRIVATE KEY-----"), one("private_key_pem", ""));
    let cert = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";
    assert_eq!(found(&chat(cert)), vec![]);
    assert_eq!(found("-----BEGIN PUBLIC KEY-----"), vec![]);
}

#[test]
fn jwt_needs_a_header_with_alg() {
    assert_eq!(found(&chat(&format!("Bearer {JWT}"))), one("jwt", "/payload/text"));
    // `{"not json` in base64url, and a header without alg
    for miss in [
        "eyJub3QganNvbg.eyJzdWIiOiIxIn0.c2ln",
        "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.c2ln",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0",
        "xeyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.c2ln",
    ] {
        assert_eq!(found(&chat(miss)), vec![], "{miss}");
    }
}

#[test]
fn password_fields_escaped_nested_and_typed() {
    assert_eq!(found(r#"{"pass\u0077ord":"hunter2"}"#), one("password_field", "/password"));
    assert_eq!(found(r#"{"a":{"b":[{"Password":"x"}]}}"#), one("password_field", "/a/b/0/Password"));
    assert_eq!(found(r#"{"PIN": 1234}"#), one("password_field", "/PIN"));
    assert_eq!(found(r#"{"x": {"api_key" : "k"}}"#), one("password_field", "/x/api_key"));
    for miss in [
        r#"{"password":""}"#,
        r#"{"password":null}"#,
        r#"{"password":{"a":1}}"#,
        r#"{"text":"password"}"#,
        r#"{"mypassword":"x"}"#,
        r#"{"type":"ping","pin_hint":"x"}"#,
        "password: hunter2",
    ] {
        assert_eq!(found(miss), vec![], "{miss}");
    }
    let custom =
        guard(&[def("password_field", RuleKind::PasswordField { names: vec!["Motdepasse".into()] }, GuardAction::Log)]);
    assert_eq!(hits_in(&custom, r#"{"MOTDEPASSE":"x"}"#), one("password_field", "/MOTDEPASSE"));
    assert_eq!(hits_in(&custom, r#"{"password":"x"}"#), vec![]);
}

#[test]
fn escapes_cannot_hide_a_value() {
    assert_eq!(found(r#"{"k":"\u0041KIAIOSFODNN7EXAMPLE"}"#), one("aws_access_key", "/k"));
    assert_eq!(found(r#"{"k":"4111\u00201111 1111 1111"}"#), one("card_number", "/k"));
    assert_eq!(found(r#"{"k":"a \"quote\" and 4111111111111111"}"#), one("card_number", "/k"));
    assert_eq!(found(r#"{"k":"line\nno secret"}"#), vec![]);
}

#[test]
fn duplicate_members_are_all_read() {
    assert_eq!(found(r#"{"text":"4111111111111111","text":"hi"}"#), one("card_number", "/text"));
}

#[test]
fn min_matches_counts_per_message() {
    let mut d = def("card_number", RuleKind::CardNumber, GuardAction::Block);
    d.min_matches = 2;
    let g = guard(&[d]);
    assert_eq!(g.scan(C2U, &chat("4111111111111111"), &key()), None);
    let f = g.scan(C2U, &chat("4111111111111111 and 5555555555554444"), &key()).expect("two");
    assert_eq!(f.hits.len(), 2);
    assert_eq!(f.action, GuardAction::Block);
}

#[test]
fn directions() {
    let mut d = def("card_number", RuleKind::CardNumber, GuardAction::Log);
    d.direction = C2U;
    let g = guard(&[d]);
    let text = chat("4111111111111111");
    assert!(g.applies_to(C2U) && !g.applies_to(U2C) && g.applies_to(Direction::Both) && !g.is_empty());
    assert!(g.scan(C2U, &text, &key()).is_some());
    assert_eq!(g.scan(U2C, &text, &key()), None);
    assert!(g.scan(Direction::Both, &text, &key()).is_some());
    assert!(guard(&[]).is_empty());
}

#[test]
fn strongest_action_wins() {
    let g = guard(&[
        def("card_number", RuleKind::CardNumber, GuardAction::Log),
        def("aws_access_key", RuleKind::AwsAccessKey, GuardAction::Redact),
    ]);
    let f = g.scan(C2U, &chat("4111111111111111 AKIAIOSFODNN7EXAMPLE"), &key()).expect("hits");
    assert_eq!(f.action, GuardAction::Redact);
    assert_eq!(f.hits.len(), 2);
}

#[test]
fn custom_patterns_with_and_without_keywords() {
    let ssn = RuleKind::Pattern { regex: r"\b\d{3}-\d{2}-\d{4}\b".into(), keywords: vec!["SSN".into()] };
    let g = guard(&[def("ssn", ssn, GuardAction::Log)]);
    assert_eq!(hits_in(&g, &chat("call 123-45-6789")), vec![]);
    assert_eq!(hits_in(&g, &chat("my ssn is 123-45-6789")), one("ssn", "/payload/text"));
    assert_eq!(hits_in(&g, r#"{"Ssn":"123-45-6789"}"#), one("ssn", "/Ssn"));
    assert_eq!(hits_in(&g, r#"{"\u0053sn":"123-45-6789"}"#), one("ssn", "/Ssn"));

    let emp = RuleKind::Pattern { regex: r"\bEMP-\d{6}\b".into(), keywords: vec![] };
    let g = guard(&[def("employee_id", emp, GuardAction::Log)]);
    assert_eq!(hits_in(&g, &chat("ask EMP-123456")), one("employee_id", "/payload/text"));
    assert_eq!(hits_in(&g, &chat("ask EMP-12345")), vec![]);

    // anchors are the string's ends
    let anchored = RuleKind::Pattern { regex: r"^secret-\w+$".into(), keywords: vec![] };
    let g = guard(&[def("anchored", anchored, GuardAction::Log)]);
    assert_eq!(hits_in(&g, r#"{"t":"secret-abc","u":"x secret-abc"}"#), one("anchored", "/t"));
}

#[test]
fn rule_errors_name_the_field() {
    let bad = RuleKind::Pattern { regex: "(".into(), keywords: vec![] };
    let e = Guard::compile(&[default_pack()[0].clone(), def("bad", bad, GuardAction::Log)]).expect_err("bad regex");
    assert_eq!((e.rule, e.field), (1, "pattern"));
    let empty = RuleKind::Pattern { regex: "a*".into(), keywords: vec![] };
    assert_eq!(Guard::compile(&[def("e", empty, GuardAction::Log)]).expect_err("empty").field, "pattern");
    let kw = RuleKind::Pattern { regex: "a".into(), keywords: vec![String::new()] };
    assert_eq!(Guard::compile(&[def("k", kw, GuardAction::Log)]).expect_err("keyword").field, "keywords");
    let names = RuleKind::PasswordField { names: vec!["a\"b".into()] };
    assert_eq!(Guard::compile(&[def("p", names, GuardAction::Log)]).expect_err("names").field, "fields");
}

#[test]
fn findings_never_carry_the_value() {
    let text = r#"{"password":"hunter2hunter2","c":"4111111111111111","k":"AKIAIOSFODNN7EXAMPLE"}"#;
    let f = guard(&default_pack()).scan(C2U, text, &key()).expect("hits");
    let dump = format!("{f:?}");
    for v in ["hunter2", "4111111111111111", "AKIAIOSFODNN7EXAMPLE"] {
        assert!(!dump.contains(v), "{dump}");
    }
    let pw = f.hits.iter().find(|h| h.rule == "password_field").expect("pw");
    assert_eq!((pw.len, pw.fingerprint.len()), (14, 16));
    assert_eq!(pw.fingerprint, key().fingerprint(b"hunter2hunter2"));
    // one card, grouped differently: one fingerprint
    let a = guard(&default_pack()).scan(C2U, &chat("4111 1111 1111 1111"), &key()).expect("a");
    let b = guard(&default_pack()).scan(C2U, &chat("4111111111111111"), &key()).expect("b");
    assert_eq!(a.hits[0].fingerprint, b.hits[0].fingerprint);
    assert_ne!(a.hits[0].len, b.hits[0].len);
}

#[test]
fn redaction_replaces_values_only_of_redact_and_block_rules() {
    let g = guard(&[
        def("card_number", RuleKind::CardNumber, GuardAction::Redact),
        def("password_field", RuleKind::PasswordField { names: vec![] }, GuardAction::Block),
        def("aws_access_key", RuleKind::AwsAccessKey, GuardAction::Log),
    ]);
    let text = r#"{"a": [ "x 4111111111111111" ], "pin": 1234, "k": "AKIAIOSFODNN7EXAMPLE", "t": "keep"}"#;
    let f = g.scan(C2U, text, &key()).expect("hits");
    assert_eq!(f.action, GuardAction::Block);
    let out = redact(text, &f).expect("json");
    assert_eq!(
        out,
        r#"{"a": [ "[REDACTED:card_number]" ], "pin": "[REDACTED:password_field]", "k": "AKIAIOSFODNN7EXAMPLE", "t": "keep"}"#
    );
    let f = g.scan(C2U, "card 4111111111111111", &key()).expect("plain");
    assert_eq!(redact("card 4111111111111111", &f), None);
}

#[test]
fn hostile_input_is_linear_and_does_not_panic() {
    let g = guard(&default_pack());
    for text in [
        "eyJ".repeat(20_000),
        "AKIA".repeat(16_000),
        "-----BEGIN PRIVATE KEY-----".repeat(2_000),
        "1 ".repeat(30_000),
        "DE89 ".repeat(10_000),
        format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)),
        format!("{}\"4111111111111111\"{}", "[".repeat(20_000), "]".repeat(20_000)),
        "\"password\":".repeat(5_000),
        "\\u".repeat(30_000),
    ] {
        let t = std::time::Instant::now();
        let _ = g.scan(C2U, &text, &key());
        assert!(t.elapsed() < std::time::Duration::from_secs(2), "{}", &text[..20]);
    }
}

/// A JSON value whose strings may hold a card number (letters around it).
fn value_with_cards() -> impl Strategy<Value = Value> {
    let word = prop::collection::vec(prop::char::range('a', 'z'), 0..6).prop_map(|v| v.into_iter().collect::<String>());
    let card =
        prop::sample::select(vec!["4111111111111111", "4111 1111 1111 1111", "5555-5555-5555-4444", "378282246310005"]);
    let string = (word.clone(), prop::option::of(card), word.clone())
        .prop_map(|(a, c, b)| Value::String(c.map_or_else(|| format!("{a}{b}"), |c| format!("{a} {c} {b}"))));
    let leaf =
        prop_oneof![string, any::<bool>().prop_map(Value::Bool), (0u32..1000).prop_map(Value::from), Just(Value::Null)];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(word.clone(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Same keys and array lengths; a string that held a card is now the placeholder.
fn same_shape(before: &Value, after: &Value) -> bool {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same_shape(v, w)))
        }
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(v, w)| same_shape(v, w)),
        (Value::String(a), Value::String(b)) if a.bytes().any(|c| c.is_ascii_digit()) => b == "[REDACTED:card_number]",
        (a, b) => a == b,
    }
}

proptest! {
    #[test]
    fn redacted_json_keeps_its_shape_and_loses_the_cards(v in value_with_cards(), pretty in any::<bool>()) {
        let v = Value::Object([("payload".to_string(), v)].into_iter().collect());
        let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.expect("json");
        let g = guard(&[def("card_number", RuleKind::CardNumber, GuardAction::Redact)]);
        let out = match g.scan(C2U, &text, &key()) {
            Some(f) => redact(&text, &f).expect("json stays json"),
            None => text.clone(),
        };
        let after: Value = serde_json::from_str(&out).expect("valid JSON");
        prop_assert!(same_shape(&v, &after), "{text} -> {out}");
        for card in ["4111111111111111", "5555555555554444", "378282246310005", "1111 1111", "5555-5555"] {
            prop_assert!(!out.contains(card), "{out}");
        }
    }
}

#[test]
fn password_fields_need_a_value_and_numbers_or_non_json_are_handled() {
    let g = Guard::compile(&[RuleDef::new(
        "password_field",
        RuleKind::PasswordField { names: Vec::new() },
        Direction::Both,
        GuardAction::Log,
    )])
    .expect("rule");
    let k = FingerprintKey::random();
    let hits = |g: &Guard, t: &str| g.scan(Direction::ClientToUpstream, t, &k).map_or(0, |f| f.hits.len());
    for t in [r#"{"password":""}"#, r#"{"password":null}"#, r#"{"password":true}"#, r#"{"password":{"a":1}}"#] {
        assert_eq!(hits(&g, t), 0, "{t}");
    }
    for t in [r#"{"password":123}"#, r#"{"password":"x"}"#] {
        assert_eq!(hits(&g, t), 1, "{t}");
    }
    let card =
        Guard::compile(&[RuleDef::new("card_number", RuleKind::CardNumber, Direction::Both, GuardAction::Redact)])
            .expect("rule");
    let number = r#"{"n":4111111111111111}"#;
    let found = card.scan(Direction::ClientToUpstream, number, &k).expect("a card as a JSON number");
    assert_eq!(redact(number, &found).as_deref(), Some(r#"{"n":"[REDACTED:card_number]"}"#));
    let plain = "not json 4111 1111 1111 1111";
    let found = card.scan(Direction::ClientToUpstream, plain, &k).expect("a card in plain text");
    assert_eq!(redact(plain, &found), None, "text that is not JSON cannot be redacted");
}

#[test]
fn guard_is_shareable() {
    fn shared<T: Send + Sync>() {}
    shared::<Guard>();
    shared::<FingerprintKey>();
}

#[test]
fn a_flood_of_log_hits_cannot_push_a_block_hit_out_of_the_list() {
    let rule = |name: &str, kind, action| RuleDef::new(name, kind, Direction::Both, action);
    let g = Guard::compile(&[
        rule("aws_access_key", RuleKind::AwsAccessKey, GuardAction::Log),
        rule("card_number", RuleKind::CardNumber, GuardAction::Block),
    ])
    .expect("rules");
    let k = FingerprintKey::random();
    let mut items: Vec<String> = (0..MAX_HITS + 10).map(|_| "\"AKIAIOSFODNN7EXAMPLE\"".to_string()).collect();
    items.push("\"4111 1111 1111 1111\"".to_string());
    let text = format!("[{}]", items.join(","));
    let found = g.scan(Direction::ClientToUpstream, &text, &k).expect("hits");
    assert!(found.hits.len() <= MAX_HITS);
    assert_eq!(found.action, GuardAction::Block, "the unlisted card still blocks");
}

#[test]
fn labels_list_each_rule_once_per_direction_it_reads() {
    let g = Guard::compile(&[
        RuleDef::new("card_number", RuleKind::CardNumber, Direction::Both, GuardAction::Block),
        RuleDef::new("jwt", RuleKind::Jwt, Direction::UpstreamToClient, GuardAction::Log),
    ])
    .expect("rules");
    let labels: Vec<_> = g.labels().collect();
    assert_eq!(
        labels,
        vec![
            ("card_number", Direction::ClientToUpstream, GuardAction::Block),
            ("card_number", Direction::UpstreamToClient, GuardAction::Block),
            ("jwt", Direction::UpstreamToClient, GuardAction::Log),
        ]
    );
}
