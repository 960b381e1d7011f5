//! `[admin.console]` in `portcullis.toml`: the admin console's address and who may use it
//! (members of the named groups, signed in through one of the gateway's OpenID Connect IdPs).

use super::idp::IdpConfig;
use super::problem::{Problem, SourceFile};
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConsole {
    url: Spanned<String>,
    idp: Spanned<String>,
    groups: Spanned<Vec<String>>,
}

/// Who may use the admin console, and where browsers reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSettings {
    /// The console reached over `https` (its cookies are then `Secure`, `__Host-` named).
    pub secure: bool,
    /// `host[:port]` as browsers reach the admin listener (the redirect URI repeats it).
    pub authority: String,
    /// The IdP an operator signs in with (OpenID Connect).
    pub idp: String,
    /// Members of any of these groups may use the console.
    pub groups: Vec<String>,
}

impl ConsoleSettings {
    /// `http(s)://host[:port]`.
    pub fn base(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }
}

/// Compiles `[admin.console]`; every mistake is a problem naming the line.
pub(super) fn compile_console(
    file: &FileConsole,
    src: &SourceFile<'_>,
    idps: &[IdpConfig],
    problems: &mut Vec<Problem>,
) -> Option<ConsoleSettings> {
    let mut ok = true;
    let mut refuse = |span: std::ops::Range<usize>, message: String| {
        problems.push(src.error(Some(span), message));
        ok = false;
    };
    let address = match url::Url::parse(file.url.get_ref()) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && matches!(u.path(), "" | "/")
                && u.query().is_none()
                && u.fragment().is_none()
                && u.username().is_empty()
                && u.password().is_none() =>
        {
            Some(u)
        }
        _ => {
            refuse(
                file.url.span(),
                format!(
                    "[admin.console] url `{}` must be `http(s)://host[:port]` as browsers reach the admin listener, without a path (e.g. `https://portcullis-admin.corp.example`)",
                    file.url.get_ref()
                ),
            );
            None
        }
    };
    let idp = file.idp.get_ref();
    match idps.iter().find(|i| i.name == *idp) {
        Some(found) if found.oidc().is_some() => {}
        Some(_) => refuse(
            file.idp.span(),
            format!("[admin.console] idp `{idp}` is a SAML IdP; the console signs in with an OpenID Connect IdP (or the admin token)"),
        ),
        None => {
            let known: Vec<&str> = idps.iter().map(|i| i.name.as_str()).collect();
            refuse(
                file.idp.span(),
                format!(
                    "[admin.console] idp `{idp}` is not configured (configured: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            );
        }
    }
    let groups: Vec<String> = file
        .groups
        .get_ref()
        .iter()
        .map(|g| g.trim().to_string())
        .collect();
    if groups.is_empty() || groups.iter().any(String::is_empty) {
        refuse(
            file.groups.span(),
            "[admin.console] groups must name at least one group, none empty (the console is for its members only)".to_string(),
        );
    }
    let address = address?;
    if !ok {
        return None;
    }
    let host = address.host_str().unwrap_or_default();
    let authority = match address.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    Some(ConsoleSettings {
        secure: address.scheme() == "https",
        authority,
        idp: idp.clone(),
        groups,
    })
}
