//! The one canonical form of a request path, computed once per request.
//!
//! Every path decision (routing, reserved paths, rules) and the upstream request use the same
//! normalised path, so a backend can never see a path the policy did not judge. Ambiguous
//! encodings that different servers decode differently are refused instead of guessed.

use thiserror::Error;

/// Why a request path was refused (answered with 400).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PathError {
    /// The path is not origin-form (`/...`).
    #[error("path does not start with `/`")]
    NotAbsolute,
    /// `%` not followed by two hex digits.
    #[error("malformed percent-encoding")]
    BadPercentEncoding,
    /// `%2F` or `%5C`: servers disagree on whether it separates segments.
    #[error("encoded slash or backslash in path")]
    EncodedSeparator,
    /// A literal backslash: some backends (IIS, Windows) treat it as `/`.
    #[error("backslash in path")]
    Backslash,
    /// NUL or another control character, literal or encoded.
    #[error("control character in path")]
    ControlCharacter,
    /// `..;` / `.;` segments: Tomcat and others strip `;params` after our check.
    #[error("dot segment with parameters in path")]
    DotSegmentWithParams,
    /// `%25` followed by two hex digits: a backend that decodes twice would see another path.
    #[error("double percent-encoding in path")]
    DoubleEncoded,
    /// Encoded bytes that are not valid UTF-8 (including overlong forms such as `%C0%AF`).
    #[error("invalid UTF-8 in path")]
    InvalidUtf8,
}

/// Normalises a request path (without query): percent-decodes unreserved characters, resolves
/// `.` and `..` segments (never above the root), and collapses repeated slashes.
pub fn normalise(raw: &str) -> Result<String, PathError> {
    normalise_with(raw, false)
}

/// [`normalise`] for apps that opt in to encoded slashes (`allow_encoded_slash = true`):
/// `%2F` stays `%2F` inside its segment instead of being refused. Everything else is as strict.
pub fn normalise_keeping_encoded_slash(raw: &str) -> Result<String, PathError> {
    normalise_with(raw, true)
}

fn normalise_with(raw: &str, keep_encoded_slash: bool) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(raw, keep_encoded_slash)?;
    let mut segments: Vec<&str> = Vec::new();
    let ends_with_slash = decoded.ends_with('/');
    let mut last_was_dot = false;
    for segment in decoded.split('/') {
        last_was_dot = false;
        match segment {
            "" => {}
            "." => last_was_dot = true,
            ".." => {
                segments.pop();
                last_was_dot = true;
            }
            s if s.starts_with("..;") || s.starts_with(".;") => {
                return Err(PathError::DotSegmentWithParams)
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || ((ends_with_slash || last_was_dot) && !segments.is_empty()) {
        out.push('/');
    }
    Ok(out)
}

/// Decodes `%XX` of unreserved characters (RFC 3986 §2.3), keeps other escapes (upper-cased),
/// and refuses the ambiguous ones.
fn decode_unreserved(raw: &str, keep_encoded_slash: bool) -> Result<String, PathError> {
    let mut out = String::with_capacity(raw.len());
    // Every escape's byte, to check that escapes form valid UTF-8 (refuses overlong forms).
    let mut escaped_bytes: Vec<u8> = Vec::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                let hi = chars.next().and_then(hex);
                let lo = chars.next().and_then(hex);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let value = hi << 4 | lo;
                match value {
                    b'/' if keep_encoded_slash => push_escape(&mut out, value),
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v => push_escape(&mut out, v),
                }
                if value >= 0x80 {
                    escaped_bytes.push(value);
                } else if !escaped_bytes.is_empty() {
                    check_utf8(&mut escaped_bytes)?;
                }
            }
            '\\' => return Err(PathError::Backslash),
            c if c.is_control() => return Err(PathError::ControlCharacter),
            c => {
                check_utf8(&mut escaped_bytes)?;
                out.push(c);
            }
        }
    }
    check_utf8(&mut escaped_bytes)?;
    // Double encoding is judged on the result: `%25` followed by two hex digits, whether those
    // were sent as digits or as escapes of digits (`%25%34%31`, found by fuzzing), is a path a
    // backend that decodes twice reads as another one.
    let double = out.as_bytes().windows(5).any(
        |w| matches!(w, [b'%', b'2', b'5', a, b] if a.is_ascii_hexdigit() && b.is_ascii_hexdigit()),
    );
    if double {
        return Err(PathError::DoubleEncoded);
    }
    Ok(out)
}

/// Checks (and clears) a run of consecutive escaped non-ASCII bytes.
fn check_utf8(run: &mut Vec<u8>) -> Result<(), PathError> {
    if !run.is_empty() {
        std::str::from_utf8(run).map_err(|_| PathError::InvalidUtf8)?;
        run.clear();
    }
    Ok(())
}

/// Writes `%XX` with upper-case hex, the form RFC 3986 §6.2.2.1 calls normal.
fn push_escape(out: &mut String, value: u8) {
    out.push('%');
    for nibble in [value >> 4, value & 0xf] {
        let digit = char::from_digit(u32::from(nibble), 16).unwrap_or('0');
        out.push(digit.to_ascii_uppercase());
    }
}

fn hex(c: char) -> Option<u8> {
    c.to_digit(16).and_then(|d| u8::try_from(d).ok())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_dots_and_collapses_slashes() {
        let cases = [
            ("/", "/"),
            ("//admin", "/admin"),
            ("/a/./b", "/a/b"),
            ("/a/b/../c", "/a/c"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/b/..", "/a/"),
            ("/a/", "/a/"),
            ("/a//b///", "/a/b/"),
            ("/.", "/"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalise(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn decodes_unreserved_and_keeps_other_escapes_uppercased() {
        assert_eq!(normalise("/%61dmin").as_deref(), Ok("/admin"));
        assert_eq!(normalise("/%2e%2e/admin").as_deref(), Ok("/admin"));
        assert_eq!(normalise("/a%20b%3f").as_deref(), Ok("/a%20b%3F"));
        assert_eq!(normalise("/caf%C3%A9").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(normalise("/100%25").as_deref(), Ok("/100%25"));
    }

    #[test]
    fn refuses_ambiguous_paths() {
        let cases = [
            ("admin", PathError::NotAbsolute),
            ("/a%2Fb", PathError::EncodedSeparator),
            ("/a%5cb", PathError::EncodedSeparator),
            ("/a\\b", PathError::Backslash),
            ("/a%00", PathError::ControlCharacter),
            ("/admin/..;/x", PathError::DotSegmentWithParams),
            ("/%C0%AFetc", PathError::InvalidUtf8),
            ("/a%zz", PathError::BadPercentEncoding),
            ("/a%4", PathError::BadPercentEncoding),
            ("/%2561dmin", PathError::DoubleEncoded),
            // The hex digits after `%25` sent as escapes themselves (found by fuzz/path).
            ("/%25%36%31dmin", PathError::DoubleEncoded),
            ("/a%25%352%52/!", PathError::DoubleEncoded),
            ("/%25%3641dmin", PathError::DoubleEncoded),
        ];
        for (raw, want) in cases {
            assert_eq!(normalise(raw), Err(want), "{raw}");
        }
    }
}
