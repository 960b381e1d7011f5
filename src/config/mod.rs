//! Loading configuration: `portcullis.toml` plus one policy file per app.
//!
//! Owns reading files, compiling them into immutable typed values, and every check that spans
//! files. `portcullis check` and `portcullis run` call exactly the same code, so what `check`
//! accepts is what `run` serves. It does not decide requests (see `policy`).

pub mod app;
pub mod audit;
pub mod console;
pub mod directory;
pub mod duration;
pub mod files;
pub mod gateway;
pub mod idp;
pub mod kerberos;
pub mod problem;
pub mod session_store;

pub use app::{AppConfig, BearerConfig, BrokenApp, HostPattern};
pub use gateway::{load_gateway, AuditSettings, GatewayConfig, LogFormat, SessionSettings};
pub use idp::{
    IdpConfig, IdpProtocol, MetadataSource, OidcIdpConfig, SamlIdpConfig, SignalSource, SsoBinding,
    TokenAuth,
};
pub use problem::{Problem, Severity};

use problem::file_problem;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Every app policy found in the policies directory.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// Apps whose policy compiled and passed cross-file checks.
    pub apps: Vec<AppConfig>,
    /// Apps whose policy did not: their hosts are answered with 503.
    pub broken: Vec<BrokenApp>,
    /// Everything found, errors and warnings, in file order.
    pub problems: Vec<Problem>,
}

/// Loads every `*.toml` file in the policies directory (sorted by name; dot-files ignored).
pub fn load_policies(gateway: &GatewayConfig) -> PolicySet {
    let mut set = PolicySet::default();
    let files = match policy_files(&gateway.policies_dir) {
        Ok(f) => f,
        Err(p) => {
            set.problems.push(p);
            return set;
        }
    };
    let mut compiled: Vec<(AppConfig, String)> = Vec::new();
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                set.problems
                    .push(file_problem(&path, format!("cannot read policy: {e}")));
                set.broken.push(BrokenApp {
                    file: path,
                    id: None,
                    hosts: vec![],
                    path_prefix: String::new(),
                });
                continue;
            }
        };
        let (app, problems) = app::compile_app(&path, &text, gateway);
        set.problems.extend(problems);
        match app {
            Some(app) => compiled.push((app, text)),
            None => set.broken.push(app::salvage_broken(&path, &text)),
        }
    }
    cross_file_checks(compiled, &mut set);
    set
}

/// Duplicate app ids, and two apps claiming the same host and path prefix. A conflict disables
/// every app involved: routing a host to the wrong backend is worse than refusing it.
fn cross_file_checks(compiled: Vec<(AppConfig, String)>, set: &mut PolicySet) {
    let mut id_owner: HashMap<&str, &Path> = HashMap::new();
    let mut claims: HashMap<(HostPattern, &str), Vec<usize>> = HashMap::new();
    let mut bad: Vec<(usize, Problem)> = Vec::new();
    for (i, (app, _)) in compiled.iter().enumerate() {
        if let Some(first) = id_owner.get(app.id()) {
            bad.push((
                i,
                file_problem(
                    app.file(),
                    format!(
                        "app id `{}` is already used by {}",
                        app.id(),
                        first.display()
                    ),
                ),
            ));
        } else {
            id_owner.insert(app.id(), app.file());
        }
        for host in app.hosts() {
            claims
                .entry((host.clone(), app.path_prefix()))
                .or_default()
                .push(i);
        }
    }
    let mut conflicts: Vec<_> = claims
        .into_iter()
        .filter(|(_, owners)| owners.len() > 1)
        .collect();
    conflicts.sort_by(|a, b| a.1.cmp(&b.1));
    for ((host, prefix), owners) in conflicts {
        for &i in &owners {
            let others: Vec<String> = owners
                .iter()
                .filter(|&&j| j != i)
                .filter_map(|&j| compiled.get(j).map(|(a, _)| a.file().display().to_string()))
                .collect();
            if let Some((app, text)) = compiled.get(i) {
                let at = position_of(text, &host.to_string());
                let prefix = if prefix.is_empty() { "/" } else { prefix };
                let problem = Problem {
                    position: at,
                    ..file_problem(
                        app.file(),
                        format!(
                            "host `{host}` with path prefix `{prefix}` is also claimed by {}",
                            others.join(", ")
                        ),
                    )
                };
                bad.push((i, problem));
            }
        }
    }
    let disabled: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
    set.problems.extend(bad.into_iter().map(|(_, p)| p));
    for (i, (app, text)) in compiled.into_iter().enumerate() {
        if disabled.contains(&i) {
            set.broken.push(app::salvage_broken(app.file(), &text));
        } else {
            set.apps.push(app);
        }
    }
}

/// Line and column of the first quoted occurrence of `needle`, to point at a host in a file.
fn position_of(text: &str, needle: &str) -> Option<(usize, usize)> {
    let quoted = format!("\"{needle}\"");
    text.find(&quoted)
        .map(|offset| problem::line_col(text, offset))
}

fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, Problem> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| file_problem(dir, format!("cannot read policies directory: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}
