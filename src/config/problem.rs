//! Configuration problems with their position, printed as `file:line:col: message`.
//!
//! Owns turning byte spans into human positions. It does not decide what is a problem.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// How serious a problem is: errors stop a file from loading, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The file (or the whole gateway, for `portcullis.toml`) cannot be used.
    Error,
    /// Allowed, but an operator should look (e.g. upstream TLS verification turned off).
    Warning,
}

/// One problem found in one file, with a 1-based line and column when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File the problem is in.
    pub file: PathBuf,
    /// 1-based line and column, when the problem has a position.
    pub position: Option<(usize, usize)>,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl Problem {
    /// Is this problem an error (as opposed to a warning)?
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        match self.severity {
            Severity::Error => write!(f, ": {}", self.message),
            Severity::Warning => write!(f, ": warning: {}", self.message),
        }
    }
}

/// The text of one configuration file, used to place problems in it.
pub struct SourceFile<'a> {
    path: &'a Path,
    text: &'a str,
}

impl<'a> SourceFile<'a> {
    /// Wraps a file's path and its text.
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Self { path, text }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.path
    }

    /// An error at a byte span of this file.
    pub fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Problem {
        self.problem(Severity::Error, span, message)
    }

    /// A warning at a byte span of this file.
    pub fn warning(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Problem {
        self.problem(Severity::Warning, span, message)
    }

    fn problem(
        &self,
        severity: Severity,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            file: self.path.to_path_buf(),
            position: span.map(|s| line_col(self.text, s.start)),
            severity,
            message: message.into(),
        }
    }

    /// The problem a TOML parse or shape error describes.
    pub fn from_toml(&self, err: &toml::de::Error) -> Problem {
        // toml's message can span several lines with a code excerpt; keep the first line only,
        // since we print our own position.
        let message = err
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .trim()
            .to_string();
        self.error(err.span(), message)
    }
}

/// A problem about a file as a whole (unreadable, missing), with no position.
pub fn file_problem(path: &Path, message: impl Into<String>) -> Problem {
    Problem {
        file: path.to_path_buf(),
        position: None,
        severity: Severity::Error,
        message: message.into(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_character_columns() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_col(text, 9), (2, 3));
    }

    #[test]
    fn display_names_file_line_and_column() {
        let path = Path::new("policies/wiki.toml");
        let src = SourceFile::new(path, "x = 1\ny = 2\n");
        let p = src.error(Some(6..7), "unknown key `y`");
        assert_eq!(p.to_string(), "policies/wiki.toml:2:1: unknown key `y`");
    }
}
