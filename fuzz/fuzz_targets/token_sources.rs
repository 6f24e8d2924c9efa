//! Token extraction and verification on unauthenticated input: the four carriers (split from
//! the input at 0xff bytes), then subprotocol selection and JWT verification (or, for a
//! ticket, the strict ticket syntax) of what was found.
#![no_main]

use std::sync::OnceLock;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use wsgate::auth::jwt;
use wsgate::auth::keys::KeySet;
use wsgate::config::{AuthConfig, KeyConfig};
use wsgate::auth::ticket;
use wsgate::policy::token_source::{extract_token, select_subprotocol, TokenCarriers, TokenSource};

fn fixture() -> &'static (KeySet, AuthConfig) {
    static F: OnceLock<(KeySet, AuthConfig)> = OnceLock::new();
    F.get_or_init(|| {
        let key = KeyConfig { kid: Some("k".into()), algorithm: "HS256".into(), secret_env: Some("S".into()), public_key_file: None };
        let keys = KeySet::load_with(&[key], |_| Some("0123456789abcdef0123456789abcdef".into())).expect("keys");
        let auth = AuthConfig {
            issuer: Some("https://idp/".into()),
            audience: Some("wsgate".into()),
            ..AuthConfig::default()
        };
        (keys, auth)
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{fffd}');
    let (a, p, c, q) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (auth, prot, cook) = ([a], [p], [c]);
    let carriers = TokenCarriers { authorization: &auth, protocols: &prot, cookies: &cook, query: q };
    let sources =
        [TokenSource::Header, TokenSource::Subprotocol, TokenSource::Cookie, TokenSource::Query, TokenSource::Ticket];
    if let Some(selected) = select_subprotocol(&prot, &["chat.v1".to_string(), "*".to_string()]) {
        assert!(!selected.starts_with("bearer.") && !selected.starts_with("ticket."), "a credential selected");
    }
    match extract_token(&sources, &carriers, "access_token", "access_token") {
        Ok(Some((t, TokenSource::Ticket))) => {
            if let Some(key) = ticket::parse(t) {
                assert_eq!(t.len(), ticket::TICKET_LEN);
                assert_eq!(key.hex().len(), 64);
            }
        }
        Ok(Some((token, _))) => {
            let (keys, settings) = fixture();
            let _ = jwt::verify(token, keys, settings, SystemTime::now());
        }
        _ => {}
    }
    let _ = ticket::parse(&text);
    let _ = jwt::verify(&text, &fixture().0, &fixture().1, SystemTime::now());
});
