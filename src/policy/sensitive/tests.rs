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
    // a named member's value may be an array or an object: every string and number under it
    assert_eq!(found(r#"{"password":["hunter2"]}"#), one("password_field", "/password/0"));
    assert_eq!(found(r#"{"password":{"a":1}}"#), one("password_field", "/password/[REDACTED]"));
    assert_eq!(
        found(r#"[{"token":{"v":[{"x":"s1"}],"w":"s2"}},{"v":"no"},["no"],{"token":""}]"#),
        vec![
            ("password_field".to_string(), "/0/token/[REDACTED]/0/[REDACTED]".to_string()),
            ("password_field".into(), "/0/token/[REDACTED]".into())
        ]
    );
    for miss in [
        r#"{"password":""}"#,
        r#"{"password":null}"#,
        r#"{"password":{}}"#,
        r#"{"password":[]}"#,
        r#"{"password":[null,true,""]}"#,
        r#"{"password":{},"next":"x"}"#,
        r#"[{"pin":[]},"x"]"#,
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
fn password_fields_in_text_that_is_not_json() {
    let g = guard(&default_pack());
    let values = |text: &str| -> Vec<usize> {
        g.scan(C2U, text, &key()).map_or_else(Vec::new, |f| {
            assert!(f.hits.iter().all(|h| h.rule == "password_field" && h.pointer.is_empty()), "{text}: {f:?}");
            f.hits.iter().map(|h| h.len).collect()
        })
    };
    // cut short, several values in a row, JSON inside prose, escaped names, unquoted values
    assert_eq!(values(r#"{"password":"hunter2""#), vec![7]);
    assert_eq!(values(r#"{"password":"hunter2"#), vec![7], "a string cut short");
    assert_eq!(values("{\"a\":1}\n{\"password\":\"hunter2\"}"), vec![7]);
    assert_eq!(values(r#"{"pass\u0077ord":"hunter2""#), vec![7]);
    assert_eq!(values(r#"login with "Password": hunter2, ok"#), vec![7]);
    assert_eq!(values(r#"{"user":{"token":["ab",{"k":"cde"},12],"x":"no"}"#), vec![2, 3, 2]);
    assert_eq!(values(r#"{"user":{"token":["ab""#), vec![2], "an array cut short");
    assert_eq!(values(r#"{"a":"x"} {"pin" : 1234}"#), vec![4]);
    for miss in [
        r#"{"password":"""#,
        r#"{"password":null"#,
        r#"{"password":true}{"#,
        r#"{"password":[null,true,""]"#,
        r#"{"password""#,
        r#"{"text":"password":"#,
        r#"say "password" twice"#,
        r#"{"mypassword":"x""#,
    ] {
        assert_eq!(values(miss), Vec::<usize>::new(), "{miss}");
    }
    // linear in the text: nested names cut short, named or not (quadratic would not finish)
    let nested = format!("{}\"x\"", r#"{"password":"#.repeat(200_000));
    assert_eq!(values(&nested), vec![1], "one value: the members under a named one are part of it");
    let nested = format!("{}\"x\"", r#"{"a":["#.repeat(200_000));
    assert_eq!(values(&nested), Vec::<usize>::new());
    // redaction cannot rewrite a text that is not JSON: the caller blocks it
    let r = guard(&[def("password_field", RuleKind::PasswordField { names: vec![] }, GuardAction::Redact)]);
    let f = r.scan(U2C, r#"{"password":"hunter2""#, &key()).expect("found");
    assert_eq!(f.action, GuardAction::Redact);
    assert_eq!(redact(r#"{"password":"hunter2""#, &f), None);
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
    for t in [r#"{"password":""}"#, r#"{"password":null}"#, r#"{"password":true}"#, r#"{"password":{}}"#] {
        assert_eq!(hits(&g, t), 0, "{t}");
    }
    for t in [r#"{"password":123}"#, r#"{"password":"x"}"#, r#"{"password":{"a":1}}"#, r#"{"password":["x"]}"#] {
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
    // every hit is counted: listed or, per rule, unlisted
    let count = |rule: &str| found.by_rule.iter().find(|c| c.rule == rule).map(|c| (c.count, c.unlisted));
    let listed = |rule: &str| found.hits.iter().filter(|h| h.rule == rule).count() as u32;
    let (aws, aws_unlisted) = count("aws_access_key").expect("aws counted");
    assert_eq!(aws as usize, MAX_HITS + 10);
    assert_eq!(aws_unlisted + listed("aws_access_key"), aws, "listed and unlisted add up");
    let (card, card_unlisted) = count("card_number").expect("card counted");
    assert_eq!((card, card_unlisted + listed("card_number")), (1, 1));
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

/// Secrets and near misses the soundness property places into generated texts.
const PIECES: &[&str] = &[
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "4111111111111111",
    "378282246310005",
    "5555 5555 5555 4444",
    "4111 1111 1111 1112",
    "DE89 3704 0044 0532 0130 00",
    "DE89370400440532013000",
    "GB29NWBK60161331926819",
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAIOSFODNN7EXAMPL3",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----",
    "\"password\":\"x\"",
    "\"password\" : \"x\"",
    "\"secret\"\r\n:\t\"y\"",
    "\"Token\": [1]",
    "12 34 56 78 90 12 34",
    "AB12",
    " - ",
];

fn generated_text() -> impl Strategy<Value = String> {
    let filler = proptest::string::string_regex("[0-9A-Z a-z:,{}\\[\\]\"éJ€-]{0,90}").expect("regex");
    let piece = proptest::sample::select(PIECES).prop_map(str::to_string);
    // long runs of lowercase letters and spaces: whole blocks the sweep skips unclassified
    let quiet = proptest::string::string_regex("[a-z ]{0,200}").expect("regex");
    proptest::collection::vec(prop_oneof![3 => filler, 1 => quiet, 1 => piece], 0..8).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    /// Stage 1 (the raw sweep) never turns away a text in which stage 2 finds something: a
    /// scan finds exactly what the walk alone finds, for raw text and for the same text as a
    /// JSON string, a member name, or spread over members, at every offset of the 64-byte
    /// blocks (the leading pad).
    #[test]
    fn the_sweep_never_misses_what_the_walk_finds(t in generated_text(), pad in 0usize..70) {
        let g = guard(&default_pack());
        let k = key();
        let as_string = serde_json::to_string(&t).expect("string");
        let wrapped = [
            t.clone(),
            format!("{}{t}", " ".repeat(pad)),
            format!("{{\"a\":{}{as_string}}}", " ".repeat(pad)),
            format!("{{{as_string}:1}}"),
            format!("{{\"x\":[{}]}}", t.split(' ').map(|w| serde_json::to_string(w).unwrap_or_default()).collect::<Vec<_>>().join(",")),
        ];
        for text in wrapped {
            let plan = &g.plans[0];
            let walked = g.walk(plan, &text, &k);
            let scanned = g.scan(C2U, &text, &k);
            prop_assert_eq!(scanned, walked, "{}", text);
        }
    }
}

#[test]
fn member_names_are_read_like_values_and_never_written_down() {
    // a card number used as a member name: found, and the pointer does not show it
    assert_eq!(found(r#"{"4111111111111111":"x"}"#), one("card_number", "/[REDACTED]"));
    // hits under such a member: their pointers hide it too
    assert_eq!(
        found(r#"{"a":{"4111 1111 1111 1111":{"password":"x"}}}"#),
        vec![
            ("card_number".to_string(), "/a/[REDACTED]".to_string()),
            ("password_field".into(), "/a/[REDACTED]/password".into())
        ]
    );
    assert_eq!(found(r#"{"AKIAIOSFODNN7EXAMPLE":1}"#), one("aws_access_key", "/[REDACTED]"));
    // an escaped name is unescaped first
    assert_eq!(found(r#"{"\u0034111111111111111":1}"#), one("card_number", "/[REDACTED]"));
    // custom patterns read names too, and hide them
    let mut d = def(
        "ticket",
        RuleKind::Pattern { regex: "OPS-[0-9]{4}".into(), keywords: vec!["ops-".into()] },
        GuardAction::Log,
    );
    d.direction = Direction::Both;
    let g = guard(&[d, def("password_field", RuleKind::PasswordField { names: vec![] }, GuardAction::Log)]);
    assert_eq!(
        hits_in(&g, r#"{"OPS-2291":{"token":"t"}}"#),
        vec![("password_field".to_string(), "/[REDACTED]/token".to_string()), ("ticket".into(), "/[REDACTED]".into())]
    );
    // a redact rule that finds its value in a member name blocks (a name is not replaced)
    let g = guard(&[def("card_number", RuleKind::CardNumber, GuardAction::Redact)]);
    let f = g.scan(C2U, r#"{"4111111111111111":"x","n":"4111111111111111"}"#, &key()).expect("found");
    assert_eq!(f.action, GuardAction::Block);
    let f = g.scan(C2U, r#"{"card":"4111111111111111"}"#, &key()).expect("found");
    assert_eq!(f.action, GuardAction::Redact);
}

#[test]
fn redaction_is_linear_in_the_hits() {
    let g = guard(&[def("card_number", RuleKind::CardNumber, GuardAction::Redact)]);
    let text = format!("[{}]", vec!["\"4111111111111111\""; 20_000].join(","));
    let f = g.scan(C2U, &text, &key()).expect("found");
    let out = redact(&text, &f).expect("json");
    assert!(!out.contains("4111"));
    assert_eq!(out.matches("[REDACTED:card_number]").count(), 20_000, "every hit redacted, also past the listed ones");
    assert_eq!(f.hits.len(), crate::policy::sensitive::MAX_HITS);
    assert_eq!(f.by_rule.len(), 1);
    assert_eq!(f.by_rule[0].count, 20_000, "every hit is counted");
    assert_eq!(f.by_rule[0].unlisted as usize, 20_000 - crate::policy::sensitive::MAX_HITS);
}

#[test]
fn review_cases_redaction_spans_names_under_fields_and_linear_digit_search() {
    // a rule below its min_matches must not take another rule's redaction with it
    let mut card = def("card_number", RuleKind::CardNumber, GuardAction::Redact);
    card.min_matches = 2;
    let g = guard(&[card, def("password_field", RuleKind::PasswordField { names: vec![] }, GuardAction::Redact)]);
    let text = r#"{"password":"4111111111111111"}"#;
    let f = g.scan(C2U, text, &key()).expect("found");
    assert_eq!(f.action, GuardAction::Redact);
    assert_eq!(redact(text, &f).as_deref(), Some(r#"{"password":"[REDACTED:password_field]"}"#));
    // names under a named member are part of its value: hidden in pointers
    assert_eq!(found(r#"{"api_key":{"sk_live_abc":"x"}}"#), one("password_field", "/api_key/[REDACTED]"));
    assert_eq!(
        found(r#"{"api_key":"k","other":{"visible":"4111111111111111"}}"#).last().cloned(),
        Some(("card_number".into(), "/other/visible".into()))
    );
    // a long text of digit runs with no punctuation: the digit search looks back only once
    let g = guard(&default_pack());
    // (a look-back to the text's start at every block took minutes on this one)
    let t = "1111111111111 ".repeat(200_000);
    assert!(g.scan(C2U, &t, &key()).is_none());
}

/// Member names at every offset of the 64-byte blocks, after strings and runs of lowercase
/// text of every length (blocks the sweep skips unclassified), with whitespace before the
/// `:`: the name is found wherever its quotes fall, and a value string shaped like a name
/// is not taken for one.
#[test]
fn names_are_paired_across_blocks_and_quiet_runs() {
    let g = guard(&default_pack());
    for n in 0..200 {
        let filler = "x".repeat(n);
        for name in [r#""password":"v""#, r#""password" : "v""#, "\"password\"\r\n:\t\"v\""] {
            for text in [
                format!(r#"{{"note":"{filler}",{name}}}"#),
                format!(r#"{{"{filler}":1,{name}}}"#),
                format!(r#"{{"a":"b", "note" :"{filler}",{name}}}"#),
            ] {
                assert_eq!(hits_in(&g, &text), one("password_field", "/password"), "{text}");
            }
        }
        // not JSON whitespace: the text is not JSON, so no member is read (walk and sweep agree)
        for text in [
            format!(r#"{{"note":"{filler}","v":"password"}}"#),
            format!(r#"["{filler}","password",":"]"#),
            format!("{{\"note\":\"{filler}\",\"password\"\u{c}:\"v\"}}"),
            format!("{{\"note\":\"{filler}\",\"password\"\u{a0}:\"v\"}}"),
        ] {
            assert_eq!(hits_in(&g, &text), vec![], "{text}");
        }
    }
}

#[test]
fn binary_messages_are_read_only_by_the_rules_that_ask() {
    let mut card = def("card_number", RuleKind::CardNumber, GuardAction::Redact);
    card.binary = true;
    let g = guard(&[card, def("aws_access_key", RuleKind::AwsAccessKey, GuardAction::Log)]);
    assert!(g.reads_binary(C2U) && g.reads_binary(U2C));
    // bytes around the number that are not UTF-8 (a protobuf, a msgpack map…)
    let mut payload = vec![0x82, 0xa4, b'c', b'a', b'r', b'd', 0xb0, 0xff, 0xfe];
    payload.extend_from_slice(b"4111111111111111");
    payload.extend_from_slice(&[0x00, 0xc3, 0x28]);
    payload.extend_from_slice(b" AKIAIOSFODNN7EXAMPLE");
    let f = g.scan_binary(U2C, &payload, &key()).expect("the card");
    assert_eq!(
        f.hits.iter().map(|h| h.rule.as_str()).collect::<Vec<_>>(),
        ["card_number"],
        "the AWS rule reads text only"
    );
    assert_eq!(f.hits[0].len, 16);
    assert_eq!(f.action, GuardAction::Redact);
    assert_eq!(redact("ignored", &f), None, "a binary message is not rewritten: the caller blocks or drops it");
    // JSON in a binary frame is read as JSON
    let f = g.scan_binary(C2U, br#"{"pay":{"card":"4111 1111 1111 1111"}}"#, &key()).expect("found");
    assert_eq!(f.hits[0].pointer, "/pay/card");
    assert_eq!(g.scan_binary(C2U, b"\x00\x01 4111 1111 1111 1112", &key()), None, "Luhn still decides");
    // without `binary`, no rule reads them
    let text_only = guard(&default_pack());
    assert!(!text_only.reads_binary(C2U));
    assert_eq!(text_only.scan_binary(C2U, b"4111111111111111", &key()), None);
    // one direction only
    let mut only_in = RuleDef::new("card_number", RuleKind::CardNumber, C2U, GuardAction::Block);
    only_in.binary = true;
    let g = guard(&[only_in]);
    assert!(g.reads_binary(C2U) && !g.reads_binary(U2C));
    assert_eq!(g.scan_binary(U2C, b"4111111111111111", &key()), None);
    assert!(g.scan_binary(C2U, b"4111111111111111", &key()).is_some());
}
