//! `[audit]` in `portcullis.toml`: where audit records go besides the log — the hash-chained
//! file (`file`) and a SIEM over syslog (`[audit.syslog]`).

use super::files::{load_ca_file, resolve};
use super::problem::{Problem, SourceFile};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAudit {
    file: Option<Spanned<String>>,
    max_size_mb: Option<Spanned<u64>>,
    keep: Option<Spanned<usize>>,
    syslog: Option<FileSyslog>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSyslog {
    address: Spanned<String>,
    transport: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    server_name: Option<Spanned<String>>,
    facility: Option<Spanned<String>>,
    app_name: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    queue: Option<Spanned<usize>>,
}

/// The hash-chained audit file (`[audit] file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// Where records are appended.
    pub file: PathBuf,
    /// Size at which the file rotates, in bytes.
    pub max_size: u64,
    /// Rotated files kept (`file.1` … `file.<keep>`).
    pub keep: usize,
}

/// How each record is written into a syslog message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    /// The gateway's own record (the documented, versioned schema).
    Json,
    /// Mapped to an OCSF event (Authentication, Authorize Session, Account Change).
    Ocsf,
}

/// RFC 5424 syslog to a SIEM (`[audit.syslog]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSettings {
    /// `host:port` of the receiver, resolved at each connect.
    pub address: String,
    /// TLS towards the receiver (RFC 5425), when set.
    pub tls: Option<SyslogTls>,
    /// The syslog facility number (e.g. 4 for `auth`).
    pub facility: u8,
    /// APP-NAME in each message.
    pub app_name: String,
    /// What the message body holds.
    pub format: RecordFormat,
    /// Records buffered while the receiver is slow or away; beyond this they are dropped
    /// (counted in metrics and logged).
    pub queue: usize,
}

/// TLS settings for the syslog connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogTls {
    /// Extra CA certificates (PEM) besides the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Name the receiver's certificate must carry (default: the address's host).
    pub server_name: String,
}

/// Facility names of RFC 5424 §6.2.1 that suit an audit feed.
const FACILITIES: &[(&str, u8)] = &[
    ("user", 1),
    ("daemon", 3),
    ("auth", 4),
    ("authpriv", 10),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// Compiles `[audit]`: the file sink and the syslog sink, each if configured.
pub(super) fn compile_audit(
    a: &FileAudit,
    src: &SourceFile<'_>,
    base: &Path,
    problems: &mut Vec<Problem>,
) -> (Option<AuditSettings>, Option<SyslogSettings>) {
    if a.file.is_none() && a.syslog.is_none() {
        problems.push(src.error(None, "[audit] needs `file`, `[audit.syslog]`, or both"));
    }
    let max_size_mb = match &a.max_size_mb {
        Some(m) if *m.get_ref() == 0 || *m.get_ref() > 1024 * 1024 => {
            problems.push(src.error(
                Some(m.span()),
                "audit.max_size_mb must be between 1 and 1048576",
            ));
            100
        }
        Some(m) => *m.get_ref(),
        None => 100,
    };
    let keep = match &a.keep {
        Some(k) if *k.get_ref() == 0 || *k.get_ref() > 10_000 => {
            problems.push(src.error(Some(k.span()), "audit.keep must be between 1 and 10000"));
            10
        }
        Some(k) => *k.get_ref(),
        None => 10,
    };
    let file = a.file.as_ref().map(|f| {
        if f.get_ref().trim().is_empty() {
            problems.push(src.error(Some(f.span()), "audit.file must name a file"));
        }
        AuditSettings {
            file: resolve(base, f.get_ref()),
            max_size: max_size_mb * 1024 * 1024,
            keep,
        }
    });
    let syslog = a
        .syslog
        .as_ref()
        .and_then(|s| compile_syslog(s, src, base, problems));
    (file, syslog)
}

fn compile_syslog(
    s: &FileSyslog,
    src: &SourceFile<'_>,
    base: &Path,
    problems: &mut Vec<Problem>,
) -> Option<SyslogSettings> {
    let address = s.address.get_ref().trim().to_string();
    let host = match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        _ => {
            problems.push(src.error(
                Some(s.address.span()),
                "audit.syslog.address must be `host:port` (e.g. \"siem.corp.example:6514\")",
            ));
            return None;
        }
    };
    let tls = match s.transport.as_ref().map(|t| t.get_ref().as_str()) {
        None | Some("tls") => true,
        Some("tcp") => false,
        Some(other) => {
            problems.push(src.error(
                s.transport.as_ref().map(Spanned::span),
                format!("audit.syslog.transport `{other}`: use \"tls\" (RFC 5425) or \"tcp\" (RFC 6587)"),
            ));
            return None;
        }
    };
    if !tls {
        for (name, set) in [
            ("ca_file", s.ca_file.as_ref().map(Spanned::span)),
            ("server_name", s.server_name.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = set {
                problems.push(src.error(
                    Some(span),
                    format!("audit.syslog.{name} is for transport = \"tls\""),
                ));
            }
        }
    }
    let ca_pem = match &s.ca_file {
        Some(f) => match load_ca_file(&resolve(base, f.get_ref())) {
            Ok((pem, _)) => Some(pem),
            Err(message) => {
                problems.push(src.error(Some(f.span()), message));
                None
            }
        },
        None => None,
    };
    let facility = match &s.facility {
        None => 4,
        Some(f) => match FACILITIES
            .iter()
            .find(|(name, _)| *name == f.get_ref().as_str())
        {
            Some((_, code)) => *code,
            None => {
                let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
                problems.push(src.error(
                    Some(f.span()),
                    format!(
                        "audit.syslog.facility `{}`: use one of {}",
                        f.get_ref(),
                        names.join(", ")
                    ),
                ));
                4
            }
        },
    };
    let app_name = match &s.app_name {
        None => "portcullis".to_string(),
        Some(n) => {
            let name = n.get_ref();
            // RFC 5424 APP-NAME: 1*48 printable US-ASCII, no spaces.
            if name.is_empty() || name.len() > 48 || !name.bytes().all(|b| b.is_ascii_graphic()) {
                problems.push(src.error(
                    Some(n.span()),
                    "audit.syslog.app_name must be 1 to 48 printable ASCII characters, no spaces",
                ));
            }
            name.clone()
        }
    };
    let format = match s.format.as_ref().map(|f| f.get_ref().as_str()) {
        None | Some("json") => RecordFormat::Json,
        Some("ocsf") => RecordFormat::Ocsf,
        Some(other) => {
            problems.push(src.error(
                s.format.as_ref().map(Spanned::span),
                format!("audit.syslog.format `{other}`: use \"json\" or \"ocsf\""),
            ));
            RecordFormat::Json
        }
    };
    let queue = match &s.queue {
        Some(q) if *q.get_ref() < 100 || *q.get_ref() > 10_000_000 => {
            problems.push(src.error(
                Some(q.span()),
                "audit.syslog.queue must be between 100 and 10000000 records",
            ));
            100_000
        }
        Some(q) => *q.get_ref(),
        None => 100_000,
    };
    Some(SyslogSettings {
        address,
        tls: tls.then(|| SyslogTls {
            ca_pem,
            server_name: s.server_name.as_ref().map_or(host, |n| n.get_ref().clone()),
        }),
        facility,
        app_name,
        format,
        queue,
    })
}
