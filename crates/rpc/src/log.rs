//! Logging what peers control without letting them control the log: strings a peer
//! supplied are truncated and escaped ([`quote`]), and repeated warnings about one
//! peer are rate-limited ([`RateLimit`]), one line per peer per interval with a count
//! of what was suppressed.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Longest peer-supplied string shown in a log line, in characters.
pub const MAX_QUOTED: usize = 64;

/// A peer-supplied string for a log line: escaped (no control characters, no
/// newlines), quoted, and cut to [`MAX_QUOTED`] characters with the full length noted.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_QUOTED) + 8);
    out.push('"');
    for c in s.chars().take(MAX_QUOTED) {
        out.extend(c.escape_debug());
    }
    out.push('"');
    let n = s.chars().count();
    if n > MAX_QUOTED {
        out.push_str(&format!("… ({n} characters)"));
    }
    out
}

/// Keys tracked at most; past it the oldest half is forgotten.
const MAX_KEYS: usize = 4096;

struct Entry {
    last: Instant,
    suppressed: u64,
}

/// One warning line per key per interval.
pub struct RateLimit {
    interval: Duration,
    entries: Mutex<HashMap<u64, Entry>>,
}

impl RateLimit {
    /// A limiter allowing one line per key per `interval`.
    pub fn new(interval: Duration) -> Self {
        RateLimit {
            interval,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a line for `key` may be logged now; `Some(n)` with the number of lines
    /// suppressed since the last one.
    pub fn admit(&self, key: &impl Hash) -> Option<u64> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let k = h.finish();
        let now = Instant::now();
        let mut map = self.entries.lock();
        if map.len() >= MAX_KEYS && !map.contains_key(&k) {
            let cutoff = now.checked_sub(self.interval).unwrap_or(now);
            map.retain(|_, e| e.last > cutoff);
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        match map.get_mut(&k) {
            Some(e) if now.duration_since(e.last) < self.interval => {
                e.suppressed += 1;
                None
            }
            Some(e) => {
                let n = e.suppressed;
                e.last = now;
                e.suppressed = 0;
                Some(n)
            }
            None => {
                map.insert(
                    k,
                    Entry {
                        last: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }

    /// Logs `line()` at WARN unless a line for `key` was logged within the interval.
    pub fn warn(&self, key: impl Hash, line: impl FnOnce() -> String) {
        if let Some(n) = self.admit(&key) {
            if n == 0 {
                tracing::warn!("{}", line());
            } else {
                tracing::warn!("{} ({n} similar lines suppressed)", line());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_and_truncates() {
        assert_eq!(quote("master"), "\"master\"");
        assert_eq!(quote("a\nb\u{1b}[31m"), "\"a\\nb\\u{1b}[31m\"");
        let long = "x".repeat(1000);
        let q = quote(&long);
        assert!(q.len() < 100, "{q}");
        assert!(q.ends_with("(1000 characters)"), "{q}");
    }

    #[tokio::test(start_paused = true)]
    async fn one_line_per_key_per_interval() {
        let r = RateLimit::new(Duration::from_secs(10));
        assert_eq!(r.admit(&"a"), Some(0));
        assert_eq!(r.admit(&"a"), None);
        assert_eq!(r.admit(&"a"), None);
        assert_eq!(r.admit(&"b"), Some(0));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(r.admit(&"a"), Some(2));
        assert_eq!(r.admit(&"a"), None);
    }
}
