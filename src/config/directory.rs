//! `[directory.<name>]` in `portcullis.toml`: an LDAP or Active Directory server the gateway
//! reads users' attributes and groups from at sign-in, for the IdPs it names.

use super::duration::ConfigDuration;
use super::files::{load_ca_file, resolve, secret_from_file_or_env};
use super::idp::IdpConfig;
use super::problem::{Problem, SourceFile};
use crate::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDirectory {
    url: Spanned<String>,
    idps: Spanned<Vec<Spanned<String>>>,
    bind_dn: Option<Spanned<String>>,
    bind_password_file: Option<Spanned<String>>,
    bind_password_env: Option<Spanned<String>>,
    base_dn: Spanned<String>,
    user_filter: Spanned<String>,
    #[serde(default)]
    attributes: Vec<Spanned<String>>,
    groups_base_dn: Option<Spanned<String>>,
    group_filter: Option<Spanned<String>>,
    group_name_attribute: Option<Spanned<String>>,
    nested_groups: Option<Spanned<String>>,
    timeout: Option<Spanned<ConfigDuration>>,
    ca_file: Option<Spanned<String>>,
}

/// How group membership inside groups is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nesting {
    /// Only the groups that list the user.
    Direct,
    /// Groups of groups, searched level by level (any LDAP server; OpenLDAP's `groupOfNames`).
    Expand,
    /// Active Directory's `LDAP_MATCHING_RULE_IN_CHAIN` (one search, the server follows).
    InChain,
}

/// Where a directory's groups are and how they are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSearch {
    /// Subtree searched for groups.
    pub base_dn: String,
    /// Filter with `{dn}` for the member's DN (default `(member={dn})`).
    pub filter: String,
    /// The attribute that names a group (default `cn`).
    pub name_attribute: String,
    /// How nested membership is followed.
    pub nesting: Nesting,
}

/// One directory, compiled.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// The name policies use (`{ directory = "corp", attribute = "…" }`).
    pub name: String,
    /// `ldap://host:389` or `ldaps://host:636`.
    pub url: String,
    /// Users signing in through these IdPs are looked up here.
    pub idps: Vec<String>,
    /// The account the gateway binds as (anonymous when absent).
    pub bind_dn: Option<String>,
    /// Its password.
    pub bind_password: Option<Secret>,
    /// Subtree searched for users.
    pub base_dn: String,
    /// Filter finding the one user: `{email}`, `{sub}`, `{name}` or `{upn}` (the email),
    /// escaped (RFC 4515) when filled in.
    pub user_filter: String,
    /// Attributes read from the user's entry.
    pub attributes: Vec<String>,
    /// The user's groups, when wanted.
    pub groups: Option<GroupSearch>,
    /// One lookup, bind and searches included, takes at most this long.
    pub timeout: Duration,
    /// PEM CAs trusted for `ldaps://` instead of the system store.
    pub ca_pem: Option<Vec<u8>>,
}

impl DirectoryConfig {
    /// The session claim a directory attribute is kept under (`corp:employeeNumber`); never
    /// one an IdP's token can fill (those are replaced at every lookup).
    pub fn claim_name(&self, attribute: &str) -> String {
        format!("{}:{attribute}", self.name)
    }

    /// The claim that marks a sign-in whose lookup failed.
    pub fn unavailable_claim(&self) -> String {
        self.claim_name("!unavailable")
    }

    /// Every claim this directory may add: its attributes and, with groups, `groups`.
    pub fn claim_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.attributes.iter().map(|a| self.claim_name(a)).collect();
        if self.groups.is_some() {
            names.push(self.claim_name("groups"));
        }
        names
    }
}

/// The placeholders a user filter may hold.
const PLACEHOLDERS: &[&str] = &["{email}", "{sub}", "{name}", "{upn}"];

/// Compiles every `[directory.*]`; every mistake is a problem naming the line.
pub(super) fn compile_directories(
    files: &BTreeMap<String, Spanned<FileDirectory>>,
    src: &SourceFile<'_>,
    base: &Path,
    idps: &[IdpConfig],
    problems: &mut Vec<Problem>,
) -> Vec<DirectoryConfig> {
    let mut out: Vec<DirectoryConfig> = Vec::new();
    for (name, spanned) in files {
        let file = spanned.get_ref();
        let mut ok = true;
        let mut refuse = |span: std::ops::Range<usize>, message: String| {
            problems.push(src.error(Some(span), message));
            ok = false;
        };
        let prefix = format!("directory.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            refuse(
                spanned.span(),
                format!("[{prefix}]: a directory name is letters, digits, `-` and `_`"),
            );
        }
        match url::Url::parse(file.url.get_ref()) {
            Ok(u)
                if matches!(u.scheme(), "ldap" | "ldaps")
                    && u.host_str().is_some()
                    && matches!(u.path(), "" | "/")
                    && u.username().is_empty()
                    && u.password().is_none() => {}
            _ => refuse(
                file.url.span(),
                format!(
                    "{prefix}.url `{}` must be ldap://host[:port] or ldaps://host[:port]",
                    file.url.get_ref()
                ),
            ),
        }
        if file.idps.get_ref().is_empty() {
            refuse(
                file.idps.span(),
                format!("{prefix}.idps must name the IdPs whose users are looked up"),
            );
        }
        for idp in file.idps.get_ref() {
            if !idps.iter().any(|i| i.name == *idp.get_ref()) {
                refuse(
                    idp.span(),
                    format!(
                        "{prefix}.idps: `{}` is not an [idp.*] of this gateway",
                        idp.get_ref()
                    ),
                );
            } else if out.iter().any(|d| d.idps.contains(idp.get_ref())) {
                refuse(
                    idp.span(),
                    format!(
                        "{prefix}.idps: `{}` is looked up in another directory already",
                        idp.get_ref()
                    ),
                );
            }
        }
        let filter = file.user_filter.get_ref();
        let is_filter = filter.starts_with('(') && filter.ends_with(')');
        if !is_filter || !PLACEHOLDERS.iter().any(|p| filter.contains(p)) {
            refuse(
                file.user_filter.span(),
                format!("{prefix}.user_filter must be an LDAP filter in parentheses with one of {}, e.g. (mail={{email}})", PLACEHOLDERS.join(", ")),
            );
        }
        for attribute in &file.attributes {
            let a = attribute.get_ref();
            if a.is_empty()
                || a == "groups"
                || !a
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';')
            {
                refuse(
                    attribute.span(),
                    format!("{prefix}.attributes: `{a}` is not an LDAP attribute name (and `groups` is reserved for the user's groups)"),
                );
            }
        }
        let nesting = match file.nested_groups.as_ref().map(|n| n.get_ref().as_str()) {
            None | Some("expand") => Nesting::Expand,
            Some("none") => Nesting::Direct,
            Some("in_chain") => Nesting::InChain,
            Some(other) => {
                if let Some(n) = &file.nested_groups {
                    refuse(
                        n.span(),
                        format!("{prefix}.nested_groups `{other}` must be \"expand\" (any server), \"in_chain\" (Active Directory) or \"none\""),
                    );
                }
                Nesting::Expand
            }
        };
        let group_filter = file
            .group_filter
            .as_ref()
            .map_or_else(|| "(member={dn})".to_string(), |f| f.get_ref().clone());
        if let Some(f) = &file.group_filter {
            if !f.get_ref().contains("{dn}") || !f.get_ref().starts_with('(') {
                refuse(
                    f.span(),
                    format!("{prefix}.group_filter must be an LDAP filter with {{dn}}, e.g. (member={{dn}})"),
                );
            }
        }
        if file.groups_base_dn.is_none() {
            for stray in [
                &file.group_filter,
                &file.group_name_attribute,
                &file.nested_groups,
            ]
            .into_iter()
            .flatten()
            {
                refuse(
                    stray.span(),
                    format!("{prefix}: group settings need groups_base_dn (where the groups are)"),
                );
            }
        }
        let groups = file.groups_base_dn.as_ref().map(|b| GroupSearch {
            base_dn: b.get_ref().clone(),
            filter: group_filter,
            name_attribute: file
                .group_name_attribute
                .as_ref()
                .map_or_else(|| "cn".to_string(), |a| a.get_ref().clone()),
            nesting,
        });
        let bind_password = match secret_from_file_or_env(
            src,
            base,
            (
                file.bind_password_file.as_ref(),
                file.bind_password_env.as_ref(),
            ),
            (
                &format!("{prefix}.bind_password_file"),
                &format!("{prefix}.bind_password_env"),
            ),
            problems,
        ) {
            Ok(password) => password,
            Err(()) => {
                ok = false;
                None
            }
        };
        if bind_password.is_some() != file.bind_dn.is_some() {
            problems.push(src.error(
                Some(spanned.span()),
                format!(
                    "{prefix}: bind_dn and a bind password go together (neither binds anonymously)"
                ),
            ));
            ok = false;
        }
        let timeout = file
            .timeout
            .as_ref()
            .map_or(Duration::from_secs(3), |t| t.get_ref().0);
        if let Some(t) = &file.timeout {
            if t.get_ref().0.is_zero() || t.get_ref().0 > Duration::from_secs(30) {
                problems.push(src.error(
                    Some(t.span()),
                    format!("{prefix}.timeout must be above zero and at most 30s (sign-in waits for it)"),
                ));
                ok = false;
            }
        }
        let ca_pem =
            file.ca_file
                .as_ref()
                .and_then(|f| match load_ca_file(&resolve(base, f.get_ref())) {
                    Ok((pem, _)) => Some(pem),
                    Err(message) => {
                        problems.push(src.error(Some(f.span()), message));
                        ok = false;
                        None
                    }
                });
        if ok {
            out.push(DirectoryConfig {
                name: name.clone(),
                url: file.url.get_ref().clone(),
                idps: file
                    .idps
                    .get_ref()
                    .iter()
                    .map(|i| i.get_ref().clone())
                    .collect(),
                bind_dn: file.bind_dn.as_ref().map(|d| d.get_ref().clone()),
                bind_password,
                base_dn: file.base_dn.get_ref().clone(),
                user_filter: file.user_filter.get_ref().clone(),
                attributes: file
                    .attributes
                    .iter()
                    .map(|a| a.get_ref().clone())
                    .collect(),
                groups,
                timeout,
                ca_pem,
            });
        }
    }
    out
}
