//! The frame-header guard on arbitrary client bytes, fed in arbitrary chunk sizes: it never
//! panics, and feeding the same bytes whole or split gives the same verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::policy::framing::FrameGuard;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = usize::from(data[0]).min(data.len() - 1) + 1;
    let bytes = &data[1..];
    let mut whole = FrameGuard::new(4096);
    let w = whole.feed(bytes);
    let mut parts = FrameGuard::new(4096);
    let mut p = Ok(());
    for chunk in bytes.chunks(split) {
        p = parts.feed(chunk);
        if p.is_err() {
            break;
        }
    }
    assert_eq!(w, p, "chunking changed the verdict");
});
