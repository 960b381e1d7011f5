//! Compiling `[maintenance]`: an app that answers "down for maintenance" while its
//! administrators still get through.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Longest maintenance message (it is shown to every user, not a document).
const MAX_MESSAGE: usize = 1000;

/// An app in maintenance, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    /// Shown on the page (plain text).
    pub message: Option<String>,
    /// Members of any of these groups get through (the app's rules still apply to them).
    pub admin_groups: Vec<String>,
    /// `Retry-After` on the page.
    pub retry_after: Option<Duration>,
}

impl Maintenance {
    /// Does a user in `groups` get through?
    pub fn admits<S: AsRef<str>>(&self, groups: &[S]) -> bool {
        groups
            .iter()
            .any(|g| self.admin_groups.iter().any(|a| a == g.as_ref()))
    }
}

impl Compiler<'_> {
    pub(super) fn maintenance(&mut self, file: &FilePolicy) -> Option<Maintenance> {
        let spec = file.maintenance.as_ref()?.get_ref();
        if !*spec.enabled.get_ref() {
            return None;
        }
        if let Some(message) = &spec.message {
            let text = message.get_ref();
            if text.trim().is_empty() || text.len() > MAX_MESSAGE {
                self.error(
                    message,
                    format!("[maintenance] message must be 1-{MAX_MESSAGE} characters"),
                );
            }
        }
        if let Some(first) = spec.admin_groups.first() {
            if file.idp.is_none() {
                self.error(first, "[maintenance] admin_groups needs `idp`: administrators are recognised by signing in");
            }
        }
        if let Some(d) = &spec.retry_after {
            if d.get_ref().0.is_zero() || d.get_ref().0 > Duration::from_secs(7 * 24 * 3600) {
                self.error(
                    d,
                    "[maintenance] retry_after must be above zero and at most 7d",
                );
            }
        }
        if let Some(at) = file.maintenance.as_ref() {
            self.warning(
                at,
                "this app is in maintenance: only its admin_groups get through",
            );
        }
        Some(Maintenance {
            message: spec
                .message
                .as_ref()
                .map(|m| m.get_ref().trim().to_string()),
            admin_groups: spec
                .admin_groups
                .iter()
                .map(|g| g.get_ref().clone())
                .collect(),
            retry_after: spec.retry_after.as_ref().map(|d| d.get_ref().0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_mentions, Fixture, HEAD};

    #[test]
    fn maintenance_is_on_only_when_enabled_and_names_its_admins() {
        let fx = Fixture::new();
        let head = format!("{HEAD}idp = \"corp\"\n");
        let (app, warnings) = fx
            .compile(&format!(
                "{head}[maintenance]\nenabled = true\nmessage = \"Back at 14:00\"\nadmin_groups = [\"it-admins\"]\nretry_after = \"30m\"\n"
            ))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let on = app.maintenance().unwrap();
        assert!(on.admits(&["staff", "it-admins"]));
        assert!(!on.admits(&["staff"]));
        assert_eq!(on.retry_after, Some(std::time::Duration::from_secs(1800)));
        assert_mentions(&warnings, "in maintenance");
        let (app, _) = fx
            .compile(&format!("{head}[maintenance]\nenabled = false\n"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(app.maintenance().is_none());
        assert_mentions(
            &fx.errors(&format!(
                "{HEAD}[maintenance]\nenabled = true\nadmin_groups = [\"it\"]\n"
            )),
            "needs `idp`",
        );
        assert_mentions(
            &fx.errors(&format!(
                "{head}[maintenance]\nenabled = true\nmessage = \" \"\n"
            )),
            "message must be",
        );
    }
}
