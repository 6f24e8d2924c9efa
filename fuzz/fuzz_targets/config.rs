//! The config loader on arbitrary TOML: it must refuse with an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = wsgate::config::Config::parse(text, std::path::Path::new("/nonexistent")) {
        let _ = e.to_string();
    }
});
