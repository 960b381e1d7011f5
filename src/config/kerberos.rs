//! `[kerberos]` in `portcullis.toml`: the gateway's own service principal and keytab, with
//! which it asks the KDC for tickets on users' behalf (S4U2Self + S4U2Proxy, "constrained
//! delegation") to apps that accept only `Authorization: Negotiate`.

use super::duration::ConfigDuration;
use super::files::resolve;
use super::problem::{Problem, SourceFile};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileKerberos {
    principal: Spanned<String>,
    keytab_file: Spanned<String>,
    realm: Option<Spanned<String>>,
    #[serde(default)]
    kdcs: Vec<Spanned<String>>,
    krb5_conf_file: Option<Spanned<String>>,
    timeout: Option<Spanned<ConfigDuration>>,
}

/// Where the Kerberos library finds the realm and its KDCs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealmSource {
    /// The system's `/etc/krb5.conf` (or DNS SRV records, as it says).
    System,
    /// A krb5.conf of the operator's.
    File(PathBuf),
    /// `realm` and `kdcs` given here: the gateway writes the krb5.conf itself.
    Listed {
        /// The realm, upper case.
        realm: String,
        /// `host[:port]` of each KDC.
        kdcs: Vec<String>,
    },
}

/// `[kerberos]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KerberosSettings {
    /// The gateway's service principal (`HTTP/gateway.corp.example@CORP.EXAMPLE`).
    pub principal: String,
    /// Its keytab.
    pub keytab: PathBuf,
    /// Realm and KDCs.
    pub realm: RealmSource,
    /// Longest wait for the KDC, for one ticket.
    pub timeout: Duration,
}

/// The default wait for the KDC.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn compile_kerberos(
    file: &FileKerberos,
    src: &SourceFile<'_>,
    base: &Path,
    problems: &mut Vec<Problem>,
) -> Option<KerberosSettings> {
    let mut ok = true;
    let mut refuse = |span: std::ops::Range<usize>, message: String| {
        problems.push(src.error(Some(span), format!("[kerberos] {message}")));
        ok = false;
    };
    let principal = file.principal.get_ref().trim().to_string();
    if principal.is_empty()
        || principal.len() > 256
        || principal
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        refuse(
            file.principal.span(),
            "principal must be the gateway's service principal, e.g. `HTTP/gateway.corp.example@CORP.EXAMPLE`".into(),
        );
    }
    let keytab = resolve(base, file.keytab_file.get_ref());
    match std::fs::metadata(&keytab) {
        Ok(m) if m.is_file() => {}
        _ => refuse(
            file.keytab_file.span(),
            format!("keytab_file `{}` cannot be read", keytab.display()),
        ),
    }
    let realm = match (&file.realm, file.kdcs.is_empty(), &file.krb5_conf_file) {
        (Some(r), false, None) => {
            let name = r.get_ref().trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            {
                refuse(
                    r.span(),
                    format!("realm `{name}` is not a realm name (e.g. `CORP.EXAMPLE`)"),
                );
            }
            let mut kdcs = Vec::new();
            for kdc in &file.kdcs {
                let text = kdc.get_ref().trim();
                let host_port = text
                    .rsplit_once(':')
                    .map_or(Some(text), |(h, p)| p.parse::<u16>().ok().map(|_| h));
                match host_port {
                    Some(h)
                        if !h.is_empty()
                            && h.chars().all(|c| {
                                c.is_ascii_alphanumeric()
                                    || matches!(c, '.' | '-' | '[' | ']' | ':')
                            }) =>
                    {
                        kdcs.push(text.to_string())
                    }
                    _ => refuse(kdc.span(), format!("kdcs: `{text}` is not host[:port]")),
                }
            }
            RealmSource::Listed {
                realm: name.to_string(),
                kdcs,
            }
        }
        (None, true, None) => RealmSource::System,
        (None, true, Some(conf)) => {
            let path = resolve(base, conf.get_ref());
            if !path.is_file() {
                refuse(
                    conf.span(),
                    format!("krb5_conf_file `{}` cannot be read", path.display()),
                );
            }
            RealmSource::File(path)
        }
        (Some(r), true, _) => {
            refuse(r.span(), "realm needs kdcs = [\"kdc.corp.example\", …] (or leave both out and use krb5.conf)".into());
            RealmSource::System
        }
        (_, false, _) => {
            let at = file
                .kdcs
                .first()
                .map_or(file.principal.span(), Spanned::span);
            refuse(at, "kdcs needs realm, and neither goes with krb5_conf_file: name the realm and its KDCs here, or in a krb5.conf".into());
            RealmSource::System
        }
    };
    let timeout = match &file.timeout {
        Some(t)
            if t.get_ref().0 < Duration::from_millis(100)
                || t.get_ref().0 > Duration::from_secs(60) =>
        {
            refuse(t.span(), "timeout must be between 100ms and 60s".into());
            DEFAULT_TIMEOUT
        }
        Some(t) => t.get_ref().0,
        None => DEFAULT_TIMEOUT,
    };
    ok.then_some(KerberosSettings {
        principal,
        keytab,
        realm,
        timeout,
    })
}
