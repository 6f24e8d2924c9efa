//! What a run counts, shared by every connection task, and the summary it prints.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Counters of one run. Hot counters are atomics; the maps are touched on rare events.
pub struct Stats {
    pub recording: AtomicBool,
    pub connected: AtomicU64,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub handshakes: AtomicU64,
    pub refused: Mutex<BTreeMap<String, u64>>,
    pub rejected: Mutex<BTreeMap<String, u64>>,
    pub errors: Mutex<BTreeMap<String, u64>>,
    pub close_codes: Mutex<BTreeMap<u16, u64>>,
    pub events: Mutex<BTreeMap<String, u64>>,
    pub rtt: Mutex<Histogram<u64>>,
    pub handshake_us: Mutex<Histogram<u64>>,
}

impl Stats {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            recording: AtomicBool::new(false),
            connected: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
            refused: Mutex::default(),
            rejected: Mutex::default(),
            errors: Mutex::default(),
            close_codes: Mutex::default(),
            events: Mutex::default(),
            rtt: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
            handshake_us: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        })
    }

    pub fn recording(&self) -> bool {
        self.recording.load(Ordering::Relaxed)
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn load(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
        *map.lock().expect("stats lock").entry(key).or_default() += 1;
    }

    /// An error frame from the gateway (`{"type":"error","payload":{"code":...}}`): count its code.
    pub fn note_incoming(&self, text: &str) -> bool {
        if !text.contains("\"error\"") {
            return false;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else { return false };
        match v["payload"]["code"].as_str() {
            Some(code) if v["type"] == "error" => {
                Self::bump(&self.rejected, code.to_string());
                true
            }
            _ => false,
        }
    }
}

/// The `p` quantile of `h` (0 when empty).
pub fn q(h: &Histogram<u64>, p: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(p)
    }
}
