//! Path conditions, matched against the normalised path (never the query), case-sensitively.
//!
//! - `"/login"`: exactly this path;
//! - `"/static/**"`: the directory itself and everything below it;
//! - `"/files/*.pdf"`, `"/api/*/users"`: `*` stands for any characters within one segment,
//!   and a `**` segment for any number of segments;
//! - `"~^/api/v[0-9]+/users$"`: a regular expression, which must be anchored (`^…$`).

use regex::Regex;

/// A compiled path condition.
#[derive(Debug, Clone)]
pub enum PathPattern {
    /// Exactly this path.
    Exact(String),
    /// The directory (stored without the `/**`; `""` for `/**`) and everything below.
    Under(String),
    /// Segments with `*` wildcards; a `**` segment matches zero or more segments.
    Glob(Vec<String>),
    /// An anchored regular expression.
    Regex(Regex),
}

impl PartialEq for PathPattern {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PathPattern::Exact(a), PathPattern::Exact(b))
            | (PathPattern::Under(a), PathPattern::Under(b)) => a == b,
            (PathPattern::Glob(a), PathPattern::Glob(b)) => a == b,
            (PathPattern::Regex(a), PathPattern::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// Why a path condition cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternError {
    /// A regex not anchored at both ends.
    Unanchored,
    /// A regex that does not compile.
    BadRegex(String),
}

impl PathPattern {
    /// Compiles a policy path (validated for normal form by `config::app`).
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if let Some(re) = text.strip_prefix('~') {
            if !re.starts_with('^') || !re.ends_with('$') {
                return Err(PatternError::Unanchored);
            }
            return Regex::new(re)
                .map(PathPattern::Regex)
                .map_err(|e| PatternError::BadRegex(e.to_string()));
        }
        if let Some(dir) = text.strip_suffix("/**") {
            if !dir.contains('*') {
                return Ok(PathPattern::Under(dir.to_string()));
            }
        }
        if text.contains('*') {
            return Ok(PathPattern::Glob(
                text.split('/').skip(1).map(str::to_string).collect(),
            ));
        }
        Ok(PathPattern::Exact(text.to_string()))
    }

    /// The pattern as a policy file writes it.
    pub fn text(&self) -> String {
        match self {
            PathPattern::Exact(p) => p.clone(),
            PathPattern::Under(dir) => format!("{dir}/**"),
            PathPattern::Glob(segments) => format!("/{}", segments.join("/")),
            PathPattern::Regex(re) => format!("~{}", re.as_str()),
        }
    }

    /// Does the normalised `path` match?
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => path == p,
            PathPattern::Under(dir) => match path.strip_prefix(dir.as_str()) {
                Some(rest) => rest.is_empty() || rest.starts_with('/'),
                None => false,
            },
            PathPattern::Glob(segments) => {
                let Some(rest) = path.strip_prefix('/') else {
                    return false;
                };
                let parts: Vec<&str> = rest.split('/').collect();
                glob_segments(segments, &parts)
            }
            PathPattern::Regex(re) => re.is_match(path),
        }
    }

    /// The same condition for an app whose paths compare without ASCII letter case
    /// (`case_insensitive_paths`): literal text lower-cased, regexes matched case-insensitively.
    /// Such an app's rules then see lower-cased request paths (see `RuleSet`).
    pub fn case_folded(self) -> Self {
        match self {
            PathPattern::Exact(p) => PathPattern::Exact(p.to_ascii_lowercase()),
            PathPattern::Under(p) => PathPattern::Under(p.to_ascii_lowercase()),
            PathPattern::Glob(segments) => {
                PathPattern::Glob(segments.iter().map(|s| s.to_ascii_lowercase()).collect())
            }
            PathPattern::Regex(re) => match Regex::new(&format!("(?i){}", re.as_str())) {
                Ok(folded) => PathPattern::Regex(folded),
                // It compiled without the flag; it compiles with it.
                Err(_) => PathPattern::Regex(re),
            },
        }
    }

    /// The text of a plain path (for checks on literal prefixes), if the pattern is one.
    pub fn literal_base(&self) -> Option<&str> {
        match self {
            PathPattern::Exact(p) | PathPattern::Under(p) => Some(p),
            PathPattern::Glob(_) | PathPattern::Regex(_) => None,
        }
    }
}

fn glob_segments(pattern: &[String], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=parts.len()).any(|skip| parts.get(skip..).is_some_and(|p| glob_segments(rest, p)))
        }
        Some((first, rest)) => match parts.split_first() {
            Some((part, others)) => glob_segment(first, part) && glob_segments(rest, others),
            None => false,
        },
    }
}

/// `*` matches any run of characters (within the segment).
fn glob_segment(pattern: &str, text: &str) -> bool {
    let pieces: Vec<&str> = pattern.split('*').collect();
    let (Some(first), Some(last)) = (pieces.first(), pieces.last()) else {
        return pattern == text;
    };
    if pieces.len() == 1 {
        return pattern == text;
    }
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = text.get(first.len()..text.len() - last.len()).unwrap_or("");
    for middle in pieces.iter().skip(1).take(pieces.len() - 2) {
        match rest.find(middle) {
            Some(at) => rest = rest.get(at + middle.len()..).unwrap_or(""),
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        PathPattern::parse(pattern).unwrap().matches(path)
    }

    #[test]
    fn table_of_patterns_and_paths() {
        let table: &[(&str, &str, bool)] = &[
            ("/login", "/login", true),
            ("/login", "/login/", false),
            ("/login", "/LOGIN", false),
            ("/admin/**", "/admin", true),
            ("/admin/**", "/admin/", true),
            ("/admin/**", "/admin/users/1", true),
            ("/admin/**", "/administrator", false),
            ("/admin/**", "/Admin/users", false),
            ("/**", "/anything/at/all", true),
            ("/files/*.pdf", "/files/report.pdf", true),
            ("/files/*.pdf", "/files/a/report.pdf", false),
            ("/files/*.pdf", "/files/report.pdf.exe", false),
            ("/api/*/users", "/api/v1/users", true),
            ("/api/*/users", "/api/v1/x/users", false),
            ("/api/**/users", "/api/v1/x/users", true),
            ("/api/**/users", "/api/users", true),
            ("/a*b*c", "/abc", true),
            ("/a*b*c", "/axxbyyc", true),
            ("/a*b*c", "/axxcyyb", false),
            ("~^/api/v[0-9]+/users$", "/api/v2/users", true),
            ("~^/api/v[0-9]+/users$", "/api/v2/users/x", false),
            ("~^/api/v[0-9]+/users$", "/x/api/v2/users", false),
        ];
        for (pattern, path, want) in table {
            assert_eq!(m(pattern, path), *want, "{pattern} vs {path}");
        }
    }

    #[test]
    fn folded_patterns_match_any_letter_case_of_a_lowered_path() {
        for (pattern, path) in [
            ("/Admin/**", "/ADMIN/users"),
            ("/login", "/LogIn"),
            ("/files/*.PDF", "/FILES/x.pdf"),
            ("~^/api/v[0-9]+/Users$", "/API/V2/users"),
        ] {
            let folded = PathPattern::parse(pattern).unwrap().case_folded();
            assert!(
                folded.matches(&path.to_ascii_lowercase()),
                "{pattern} vs {path}"
            );
        }
    }

    #[test]
    fn regexes_must_be_anchored_and_valid() {
        assert_eq!(
            PathPattern::parse("~/api/.*").unwrap_err(),
            PatternError::Unanchored
        );
        assert_eq!(
            PathPattern::parse("~^/api/.*").unwrap_err(),
            PatternError::Unanchored
        );
        assert!(matches!(
            PathPattern::parse("~^/api/(x$").unwrap_err(),
            PatternError::BadRegex(_)
        ));
    }
}
