//! The `Origin` allowlist: the defence against cross-site WebSocket hijacking.
//!
//! Entries are exact origins (`https://app.example.com`, `http://127.0.0.1:8080`) or a wildcard
//! for subdomains (`https://*.example.com`: any host ending in `.example.com`, never the apex
//! itself). Scheme, host and port must all match; hosts compare case-insensitively (RFC 6454
//! serialises them lowercase anyway). `null` origins never match a wildcard.

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// The whole origin, lowercased.
    Exact(String),
    /// `scheme://*.suffix[:port]`: `prefix` is `scheme://`, `suffix` is `.example.com[:port]`.
    Wildcard { prefix: String, suffix: String },
}

/// The origins a route admits.
/// The default admits nobody (no entries, missing origin refused).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    entries: Vec<Entry>,
    allow_missing: bool,
}

/// What the policy says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginVerdict {
    /// The origin is listed (or missing where allowed).
    Allowed,
    /// Refuse with 403.
    Refused,
}

// === impl OriginPolicy ===

impl OriginPolicy {
    /// Build from config entries.
    ///
    /// # Errors
    /// A description of the first malformed entry.
    pub fn try_new(entries: &[String], allow_missing: bool) -> Result<Self, String> {
        let mut parsed = Vec::with_capacity(entries.len());
        for e in entries {
            let lower = e.trim().to_ascii_lowercase();
            let Some((scheme, rest)) = lower.split_once("://") else {
                return Err(format!("{e:?} is not an origin (expected scheme://host[:port])"));
            };
            if scheme.is_empty() || rest.is_empty() || rest.contains('/') {
                return Err(format!("{e:?} is not an origin (no path, no trailing slash)"));
            }
            if let Some(suffix) = rest.strip_prefix("*.") {
                if suffix.is_empty() || suffix.contains('*') {
                    return Err(format!("{e:?}: a wildcard must be followed by a domain"));
                }
                parsed.push(Entry::Wildcard { prefix: format!("{scheme}://"), suffix: format!(".{suffix}") });
            } else if rest.contains('*') {
                return Err(format!("{e:?}: '*' is only allowed as the first label"));
            } else {
                parsed.push(Entry::Exact(lower));
            }
        }
        Ok(Self { entries: parsed, allow_missing })
    }

    /// True when the route has an allowlist (cookie tokens need one).
    pub fn is_restricted(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Judge the request's `Origin` header value (`None` when absent).
    pub fn check(&self, origin: Option<&str>) -> OriginVerdict {
        let Some(origin) = origin else {
            return if self.allow_missing { OriginVerdict::Allowed } else { OriginVerdict::Refused };
        };
        let origin = origin.trim().to_ascii_lowercase();
        let ok = self.entries.iter().any(|e| match e {
            Entry::Exact(x) => *x == origin,
            Entry::Wildcard { prefix, suffix } => origin
                .strip_prefix(prefix.as_str())
                .and_then(|host| host.strip_suffix(suffix.as_str()))
                .is_some_and(|label| {
                    !label.is_empty()
                        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                        && !label.starts_with('.')
                        && !label.ends_with('.')
                }),
        });
        if ok {
            OriginVerdict::Allowed
        } else {
            OriginVerdict::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str], missing: bool) -> OriginPolicy {
        let v: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        OriginPolicy::try_new(&v, missing).expect("valid")
    }

    #[test]
    fn exact_origin_matches_case_insensitively_and_nothing_else() {
        let p = policy(&["https://app.example.com"], false);
        assert_eq!(p.check(Some("https://app.example.com")), OriginVerdict::Allowed);
        assert_eq!(p.check(Some("HTTPS://App.Example.com")), OriginVerdict::Allowed);
        assert_eq!(p.check(Some("http://app.example.com")), OriginVerdict::Refused);
        assert_eq!(p.check(Some("https://app.example.com:8443")), OriginVerdict::Refused);
        assert_eq!(p.check(Some("https://app.example.com.evil.com")), OriginVerdict::Refused);
        assert_eq!(p.check(Some("null")), OriginVerdict::Refused);
    }

    #[test]
    fn wildcard_matches_subdomains_not_apex_or_lookalikes() {
        let p = policy(&["https://*.example.com"], false);
        assert_eq!(p.check(Some("https://a.example.com")), OriginVerdict::Allowed);
        assert_eq!(p.check(Some("https://a.b.example.com")), OriginVerdict::Allowed);
        assert_eq!(p.check(Some("https://example.com")), OriginVerdict::Refused);
        assert_eq!(p.check(Some("https://evilexample.com")), OriginVerdict::Refused);
        assert_eq!(p.check(Some("https://a.example.com.evil.net")), OriginVerdict::Refused);
        assert_eq!(p.check(Some("http://a.example.com")), OriginVerdict::Refused);
        assert_eq!(p.check(Some("https://a.example.com:444")), OriginVerdict::Refused);
        assert_eq!(p.check(Some("https://a/b.example.com")), OriginVerdict::Refused);
    }

    #[test]
    fn missing_origin_only_where_allowed() {
        assert_eq!(policy(&["https://x.io"], false).check(None), OriginVerdict::Refused);
        assert_eq!(policy(&["https://x.io"], true).check(None), OriginVerdict::Allowed);
        assert_eq!(policy(&[], false).check(Some("https://x.io")), OriginVerdict::Refused);
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in ["app.example.com", "https://app.example.com/", "https://a*.example.com", "https://*."] {
            assert!(OriginPolicy::try_new(&[bad.to_string()], false).is_err(), "{bad}");
        }
    }
}
