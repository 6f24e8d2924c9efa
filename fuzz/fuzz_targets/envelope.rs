//! The per-message checks on arbitrary client text: JSON, envelope, type, scope, schema, and
//! the error frame built from what was read.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wsgate::config::{MessageRule, Route};
use wsgate::policy::origin::OriginPolicy;
use wsgate::policy::validate::{check_text, error_frame};

fn route() -> &'static Route {
    static R: OnceLock<Route> = OnceLock::new();
    R.get_or_init(|| {
        let schema = serde_json::json!({"type": "object", "required": ["text"], "properties": {"text": {"type": "string", "maxLength": 100}}});
        let mut r = Route::new("/ws", "ws://127.0.0.1:1/");
        r.origins = OriginPolicy::try_new(&["https://*.example.com".to_string()], false).expect("origins");
        r.messages.insert("chat.send".into(), MessageRule::new(Some("chat:write"), Some(&schema)).expect("schema"));
        r.messages.insert("chat.read".into(), MessageRule::new(None, None).expect("rule"));
        r
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let r = route();
    match check_text(r, &["chat:write".to_string()], text) {
        Ok(_) => {}
        Err(refused) => {
            let frame = error_frame(refused.rejection, refused.id.as_deref(), &r.type_field);
            assert!(serde_json::from_str::<serde_json::Value>(&frame).is_ok(), "error frame is JSON");
        }
    }
    let _ = r.origins.check(Some(text));
});
