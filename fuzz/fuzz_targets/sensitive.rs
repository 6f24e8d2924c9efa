//! The sensitive-data guard on arbitrary text: the default pack plus a custom pattern, in both
//! directions, must never panic, also on binary messages (every rule reads them); a redaction
//! of valid JSON is valid JSON again, a binary message's findings are never a redaction, and a
//! finding never carries more than its fingerprint of the value.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wsgate::policy::sensitive::{redact, Direction, FingerprintKey, Guard, GuardAction, RuleDef, RuleKind};

fn guard() -> &'static (Guard, FingerprintKey) {
    static G: OnceLock<(Guard, FingerprintKey)> = OnceLock::new();
    G.get_or_init(|| {
        let rule = |name: &str, kind, action| RuleDef { binary: true, ..RuleDef::new(name, kind, Direction::Both, action) };
        let defs = vec![
            rule("card_number", RuleKind::CardNumber, GuardAction::Redact),
            rule("iban", RuleKind::Iban, GuardAction::Redact),
            rule("aws_access_key", RuleKind::AwsAccessKey, GuardAction::Block),
            rule("private_key_pem", RuleKind::PrivateKeyPem, GuardAction::Log),
            rule("jwt", RuleKind::Jwt, GuardAction::Redact),
            rule("password_field", RuleKind::PasswordField { names: Vec::new() }, GuardAction::Redact),
            rule(
                "employee_id",
                RuleKind::Pattern { regex: "EMP-[0-9]{6}".into(), keywords: vec!["emp-".into()] },
                GuardAction::Redact,
            ),
        ];
        (Guard::compile(&defs).expect("pack"), FingerprintKey::from_bytes(b"fuzz"))
    })
}

fuzz_target!(|data: &[u8]| {
    let (g, key) = guard();
    for dir in [Direction::ClientToUpstream, Direction::UpstreamToClient] {
        if let Some(found) = g.scan_binary(dir, data, key) {
            assert!(found.hits.iter().all(|h| h.fingerprint.len() == 16));
            assert_eq!(redact("", &found), None, "a binary message is never rewritten");
        }
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    for dir in [Direction::ClientToUpstream, Direction::UpstreamToClient] {
        let Some(found) = g.scan(dir, text, key) else { continue };
        assert!(!found.hits.is_empty());
        for hit in &found.hits {
            assert_eq!(hit.fingerprint.len(), 16);
            assert!(hit.len <= text.len());
        }
        if let Some(out) = redact(text, &found) {
            if serde_json::from_str::<serde_json::Value>(text).is_ok() {
                assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "redaction broke the JSON: {out}");
            }
        }
    }
});
