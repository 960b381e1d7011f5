//! Which app serves a request: by Host (exact, then `*.` wildcard), then longest path prefix.
//!
//! Owns the lookup structure only. Built once per configuration; lookups hash the host and
//! scan only that host's few prefixes, never every app.

use crate::config::HostPattern;
use std::collections::HashMap;

/// Host + path prefix → target, for any target type.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    exact: HashMap<String, Vec<Prefixed<T>>>,
    wildcard: HashMap<String, Vec<Prefixed<T>>>,
}

/// One route on a host: its path prefix, whether it compares without letter case, its target.
#[derive(Debug, Clone)]
struct Prefixed<T> {
    prefix: String,
    fold_case: bool,
    target: T,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<T> RouteTable<T> {
    /// Adds a route; `prefix` is normalised without trailing slash (`""` = whole host).
    /// With `fold_case` the prefix matches paths in any ASCII letter case (an app with
    /// `case_insensitive_paths`). Cross-file checks guarantee one target per host and prefix;
    /// a repeat replaces.
    pub fn insert(&mut self, host: &HostPattern, prefix: &str, fold_case: bool, target: T) {
        let (map, key) = match host {
            HostPattern::Exact(h) => (&mut self.exact, h),
            HostPattern::Wildcard(s) => (&mut self.wildcard, s),
        };
        let routes = map.entry(key.clone()).or_default();
        routes.retain(|r| r.prefix != prefix);
        routes.push(Prefixed {
            prefix: prefix.to_string(),
            fold_case,
            target,
        });
        // Longest prefix first, so the first match is the most specific.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    }

    /// Is some route on this exact or wildcard host (whatever the path)?
    pub fn has_host(&self, host: &str) -> bool {
        self.exact.contains_key(host)
            || host
                .split_once('.')
                .is_some_and(|(_, parent)| self.wildcard.contains_key(parent))
    }

    /// The target for a normalised host (see [`normalise_host`]) and normalised path.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&T> {
        if let Some(t) = self.exact.get(host).and_then(|r| longest_prefix(r, path)) {
            return Some(t);
        }
        // `*.example.com` covers exactly one label in front of `example.com`.
        let (_, parent) = host.split_once('.')?;
        self.wildcard
            .get(parent)
            .and_then(|r| longest_prefix(r, path))
    }
}

fn longest_prefix<'a, T>(routes: &'a [Prefixed<T>], path: &str) -> Option<&'a T> {
    routes
        .iter()
        .find(|r| {
            if r.fold_case {
                under_prefix_any_case(path, &r.prefix)
            } else {
                under_prefix(path, &r.prefix)
            }
        })
        .map(|r| &r.target)
}

/// [`under_prefix`], ignoring ASCII letter case.
fn under_prefix_any_case(path: &str, prefix: &str) -> bool {
    let head_matches = path
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix));
    head_matches
        && path
            .get(prefix.len()..)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Is `path` the prefix itself or below it (on a segment boundary: `/wiki` ≠ `/wikis`)?
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Canonical host from a `Host` header or URI authority: lower-case, port and trailing dot
/// removed. `None` for a value that is not a plausible host.
pub fn normalise_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        // IPv6 literal: keep the brackets, drop the port.
        let end = raw.find(']')?;
        raw.get(..=end)?
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                raw
            }
        })
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let valid = !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '[' | ']' | ':'));
    valid.then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable<&'static str> {
        let mut t = RouteTable::default();
        t.insert(
            &HostPattern::Exact("intranet.example".into()),
            "",
            false,
            "portal",
        );
        t.insert(
            &HostPattern::Exact("intranet.example".into()),
            "/wiki",
            false,
            "wiki",
        );
        t.insert(
            &HostPattern::Exact("intranet.example".into()),
            "/wiki/admin",
            false,
            "wiki-admin",
        );
        t.insert(
            &HostPattern::Exact("intranet.example".into()),
            "/Legacy",
            true,
            "iis-app",
        );
        t.insert(
            &HostPattern::Wildcard("apps.example".into()),
            "",
            false,
            "any-app",
        );
        t
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let t = table();
        assert_eq!(t.lookup("intranet.example", "/"), Some(&"portal"));
        assert_eq!(t.lookup("intranet.example", "/wiki"), Some(&"wiki"));
        assert_eq!(t.lookup("intranet.example", "/wiki/page"), Some(&"wiki"));
        assert_eq!(
            t.lookup("intranet.example", "/wiki/admin/x"),
            Some(&"wiki-admin")
        );
        assert_eq!(t.lookup("intranet.example", "/wikis"), Some(&"portal"));
        assert_eq!(t.lookup("intranet.example", "/WIKI/page"), Some(&"portal"));
    }

    #[test]
    fn a_case_folding_route_matches_any_letter_case_on_segment_boundaries() {
        let t = table();
        for path in ["/Legacy", "/legacy/x", "/LEGACY/Admin"] {
            assert_eq!(
                t.lookup("intranet.example", path),
                Some(&"iis-app"),
                "{path}"
            );
        }
        assert_eq!(t.lookup("intranet.example", "/legacyx"), Some(&"portal"));
        assert!(t.has_host("intranet.example") && t.has_host("x.apps.example"));
        assert!(!t.has_host("other.example"));
    }

    #[test]
    fn wildcard_covers_one_label_only() {
        let t = table();
        assert_eq!(t.lookup("hr.apps.example", "/"), Some(&"any-app"));
        assert_eq!(t.lookup("apps.example", "/"), None);
        assert_eq!(t.lookup("a.hr.apps.example", "/"), None);
        assert_eq!(t.lookup("unknown.example", "/"), None);
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(
            normalise_host("Intranet.Example:8443").as_deref(),
            Some("intranet.example")
        );
        assert_eq!(
            normalise_host("intranet.example.").as_deref(),
            Some("intranet.example")
        );
        assert_eq!(normalise_host("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(normalise_host("evil.example/x"), None);
        assert_eq!(normalise_host(""), None);
    }
}
