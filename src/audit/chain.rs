//! The tamper-evident audit file: one JSON record per line, each carrying the SHA-256 of the
//! record before it (`prev`) and of itself (`hash`), so editing, removing or reordering any
//! line breaks the chain at that line. Rotation by size continues the chain in the next file.
//!
//! A record's `hash` is the SHA-256 (hex) of the line's text up to the `,"hash":` that ends
//! it; `prev` is the previous record's `hash` (64 zeros for the first record ever).

use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// `prev` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const HASH_MARK: &str = ",\"hash\":\"";

/// Why the audit file cannot be written.
#[derive(Debug, Error)]
pub enum ChainError {
    /// Opening, writing or rotating failed.
    #[error("audit file `{0}`: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Appends records to the chained file, rotating by size.
pub struct ChainWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    keep: usize,
    seq: u64,
    prev: String,
}

impl ChainWriter {
    /// Opens (or creates, mode 0600) `path`, continuing the chain from its last record.
    pub fn open(path: &Path, max_size: u64, keep: usize) -> Result<Self, ChainError> {
        let io = |e| ChainError::Io(path.to_path_buf(), e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let (seq, prev) = last_link(path).unwrap_or((0, GENESIS.to_string()));
        let file = open_append(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            max_size: max_size.max(4096),
            keep: keep.max(1),
            seq,
            prev,
        })
    }

    /// Appends one record (the fields of `fields`, in key order, after `seq`, `time`-first
    /// fields as given); returns its hash.
    pub fn append(&mut self, fields: Map<String, Value>) -> Result<String, ChainError> {
        let line = self.seal(fields);
        if self.size > 0 && self.size + line.len() as u64 + 1 > self.max_size {
            self.rotate()?;
        }
        let io = |e| ChainError::Io(self.path.clone(), e);
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.write_all(b"\n").map_err(io)?;
        self.size += line.len() as u64 + 1;
        Ok(self.prev.clone())
    }

    /// Makes the next line: `{"seq":n,"prev":"…",<fields>,"hash":"…"}`.
    fn seal(&mut self, fields: Map<String, Value>) -> String {
        self.seq += 1;
        let mut record = Map::new();
        record.insert("seq".into(), Value::from(self.seq));
        record.insert("prev".into(), Value::from(self.prev.clone()));
        for (k, v) in fields {
            if k != "seq" && k != "prev" && k != "hash" {
                record.insert(k, v);
            }
        }
        let body = Value::Object(record).to_string();
        let unclosed = body.strip_suffix('}').unwrap_or(&body);
        let hash = hex_sha256(unclosed.as_bytes());
        let line = format!("{unclosed}{HASH_MARK}{hash}\"}}");
        self.prev = hash;
        line
    }

    /// `file` → `file.1` → … → `file.<keep>` (the oldest goes), then a fresh `file`.
    fn rotate(&mut self) -> Result<(), ChainError> {
        let io = |e| ChainError::Io(self.path.clone(), e);
        self.file.flush().map_err(io)?;
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            if numbered(n).exists() {
                std::fs::rename(numbered(n), numbered(n + 1)).map_err(io)?;
            }
        }
        std::fs::rename(&self.path, numbered(1)).map_err(io)?;
        self.file = open_append(&self.path).map_err(io)?;
        self.size = 0;
        Ok(())
    }

    /// Pushes buffered bytes to the file.
    pub fn flush(&mut self) -> Result<(), ChainError> {
        self.file
            .flush()
            .map_err(|e| ChainError::Io(self.path.clone(), e))
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// `seq` and `hash` of the file's last record, if it has a readable one.
fn last_link(path: &Path) -> Option<(u64, String)> {
    let file = File::open(path).ok()?;
    let last = BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .last()?;
    let link = check_line(&last).ok()?;
    Some((link.seq, link.hash))
}

fn hex_sha256(data: &[u8]) -> String {
    openssl::sha::sha256(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One verified line's place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its sequence number.
    pub seq: u64,
    /// Its `prev`.
    pub prev: String,
    /// Its own hash.
    pub hash: String,
}

/// Checks one line on its own: its `hash` matches its content.
pub fn check_line(line: &str) -> Result<Link, String> {
    let at = line
        .rfind(HASH_MARK)
        .ok_or_else(|| "no hash: not an audit record".to_string())?;
    let (body, tail) = line.split_at(at);
    let hash = tail
        .strip_prefix(HASH_MARK)
        .and_then(|t| t.strip_suffix("\"}"))
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| "malformed hash".to_string())?;
    if hex_sha256(body.as_bytes()) != hash {
        return Err("content does not match its hash (the record was edited)".into());
    }
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let seq = value
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(|| "no seq".to_string())?;
    let prev = value
        .get("prev")
        .and_then(Value::as_str)
        .ok_or_else(|| "no prev".to_string())?
        .to_string();
    Ok(Link {
        seq,
        prev,
        hash: hash.to_string(),
    })
}

/// The outcome of verifying a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub records: u64,
    /// The chain starts mid-way (the first file was rotated from an older one not given).
    pub starts_after: Option<String>,
    /// Hash of the last record.
    pub head: String,
}

/// The first break in a chain: which file and line, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{file}:{line}: {reason}")]
pub struct Break {
    /// File.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Verifies `files`, oldest first, as one chain.
pub fn verify(files: &[PathBuf]) -> Result<Verified, Break> {
    let mut expected: Option<(u64, String)> = None;
    let mut starts_after = None;
    let mut records = 0;
    for path in files {
        let name = path.display().to_string();
        let fail = |line: usize, reason: String| Break {
            file: name.clone(),
            line,
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| fail(0, format!("cannot read: {e}")))?;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let link = check_line(line).map_err(|r| fail(n, r))?;
            match &expected {
                None if link.prev == GENESIS && link.seq == 1 => {}
                None => starts_after = Some(link.prev.clone()),
                Some((seq, hash)) => {
                    if link.prev != *hash {
                        let reason = if link.seq > seq + 1 {
                            format!(
                                "chain broken: record {} follows record {seq} (records removed)",
                                link.seq
                            )
                        } else if link.seq <= *seq {
                            format!(
                                "chain broken: record {} follows record {seq} (records reordered or repeated)",
                                link.seq
                            )
                        } else {
                            "chain broken: prev does not match the record before".to_string()
                        };
                        return Err(fail(n, reason));
                    }
                    if link.seq != seq + 1 {
                        return Err(fail(n, format!("record {} follows record {seq}", link.seq)));
                    }
                }
            }
            expected = Some((link.seq, link.hash));
            records += 1;
        }
    }
    Ok(Verified {
        records,
        starts_after,
        head: expected.map_or_else(|| GENESIS.to_string(), |(_, h)| h),
    })
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]
    use super::*;

    fn record(n: u64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("event".into(), Value::from("access"));
        m.insert("user".into(), Value::from(format!("user{n}@corp.example")));
        m
    }

    fn write(dir: &Path, n: u64, max: u64) -> PathBuf {
        let path = dir.join("audit.jsonl");
        let mut w = ChainWriter::open(&path, max, 5).unwrap();
        for i in 0..n {
            w.append(record(i)).unwrap();
        }
        w.flush().unwrap();
        path
    }

    #[test]
    fn an_untouched_chain_verifies_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 5, 1 << 20);
        write(dir.path(), 3, 1 << 20); // a restart continues the same chain
        let v = verify(&[path]).unwrap();
        assert_eq!(v.records, 8);
        assert_eq!(v.starts_after, None);
    }

    #[test]
    fn edits_removals_and_reorders_name_the_first_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 6, 1 << 20);
        let lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let check = |ls: Vec<String>| {
            std::fs::write(&path, ls.join("\n") + "\n").unwrap();
            verify(std::slice::from_ref(&path)).unwrap_err()
        };
        let mut edited = lines.clone();
        edited[2] = edited[2].replace("user2@", "admin@");
        let e = check(edited);
        assert_eq!((e.line, e.reason.contains("edited")), (3, true), "{e}");
        let mut removed = lines.clone();
        removed.remove(3);
        let e = check(removed);
        assert_eq!(e.line, 4, "{e}");
        assert!(e.reason.contains("removed"), "{e}");
        let mut swapped = lines.clone();
        swapped.swap(1, 4);
        let e = check(swapped);
        assert_eq!(e.line, 2, "{e}");
        let mut rehashed = lines.clone();
        // An edit that also recomputes its own hash still breaks the next link.
        let v: Value = serde_json::from_str(&rehashed[2]).unwrap();
        let mut fields = v.as_object().unwrap().clone();
        fields.insert("user".into(), Value::from("admin@corp.example"));
        fields.remove("hash");
        let body = Value::Object(fields).to_string();
        let body = body.strip_suffix('}').unwrap();
        rehashed[2] = format!("{body}{HASH_MARK}{}\"}}", hex_sha256(body.as_bytes()));
        let e = check(rehashed);
        assert_eq!(e.line, 4, "{e}");
    }

    #[test]
    fn rotation_keeps_the_chain_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 40, 4096);
        let mut files: Vec<PathBuf> = (1..=5)
            .rev()
            .map(|n| PathBuf::from(format!("{}.{n}", path.display())))
            .filter(|p| p.exists())
            .collect();
        assert!(!files.is_empty(), "no rotation happened");
        files.push(path.clone());
        let v = verify(&files).unwrap();
        assert_eq!(v.records, 40);
        // The newest file alone verifies, anchored on the rotated one before it.
        let alone = verify(std::slice::from_ref(&path)).unwrap();
        assert!(alone.starts_after.is_some());
        // Given out of order, the files do not chain.
        files.swap(0, 1);
        assert!(verify(&files).is_err());
    }
}
