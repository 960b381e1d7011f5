//! `portcullis policy test` and `portcullis policy explain`: the policy files' executable
//! examples, and one request's decision taken apart, printed for people.

use anyhow::Context;
use http::Method;
use portcullis::config::{self, AppConfig, Problem};
use portcullis::policy::examples::{self, ExampleUser, Expectation};
use portcullis::policy::path::normalise;
use portcullis::policy::RequestFacts;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

/// Loads the gateway config and the policies (from `dir` when given); problems are printed,
/// and an error in any file is a failure.
fn load(config_path: &Path, dir: Option<&Path>) -> anyhow::Result<Option<Vec<AppConfig>>> {
    let mut gateway = match config::load_gateway(config_path) {
        Ok((g, _)) => g,
        Err(problems) => {
            print(&problems);
            return Ok(None);
        }
    };
    if let Some(dir) = dir {
        gateway.policies_dir = dir.to_path_buf();
    }
    let policies = config::load_policies(&gateway);
    print(&policies.problems);
    if policies.problems.iter().any(Problem::is_error) {
        return Ok(None);
    }
    Ok(Some(policies.apps))
}

fn print(problems: &[Problem]) {
    for p in problems {
        eprintln!("{p}");
    }
}

/// Runs every `[[test]]`; prints one line per example and a summary.
pub fn test(config_path: &Path, dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Some(apps) = load(config_path, dir)? else {
        return Ok(ExitCode::from(1));
    };
    let (mut passed, mut failed) = (0usize, 0usize);
    for app in &apps {
        for example in app.examples() {
            match examples::run(app.rules(), example) {
                Ok(()) => {
                    passed += 1;
                    println!("ok   {}: {}", app.id(), example.name);
                }
                Err(mismatch) => {
                    failed += 1;
                    println!(
                        "FAIL {}:{}: {}: {}\n       expected {}\n       got      {}\n       because  {}",
                        app.file().display(),
                        example.line,
                        app.id(),
                        example.name,
                        example.expect,
                        mismatch.got,
                        mismatch.reason
                    );
                }
            }
        }
    }
    let without: Vec<&str> = apps
        .iter()
        .filter(|a| a.examples().is_empty())
        .map(|a| a.id())
        .collect();
    if !without.is_empty() {
        println!("note: no [[test]] examples in: {}", without.join(", "));
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Reads `--user`: an inline TOML table or a file holding one, with exactly the keys a
/// `[[test]]` user takes (an unknown key is an error here too, not silently ignored).
fn user_from(arg: &str) -> anyhow::Result<ExampleUser> {
    let text = if arg.trim_start().starts_with('{') {
        format!("user = {arg}")
    } else {
        let body = std::fs::read_to_string(arg)
            .with_context(|| format!("reading user fixture `{arg}`"))?;
        format!("[user]\n{body}")
    };
    config::app::example_user(&text, "-", portcullis::clock::unix_now())
        .map_err(|e| anyhow::anyhow!("--user (the keys of a [[test]] user): {e}"))
}

/// An identity as an inline TOML table in `[[test]]` notation.
fn as_test_user(caller: &ExampleUser) -> String {
    let who = &caller.identity;
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let list = |items: &[std::sync::Arc<str>]| {
        let inner: Vec<String> = items.iter().map(|i| quote(i)).collect();
        format!("[{}]", inner.join(", "))
    };
    let mut parts = Vec::new();
    if who.email.as_deref() != Some(who.subject.as_str()) {
        parts.push(format!("sub = {}", quote(&who.subject)));
    }
    if let Some(email) = &who.email {
        parts.push(format!("email = {}", quote(email)));
    }
    if let Some(name) = &who.name {
        parts.push(format!("name = {}", quote(name)));
    }
    if !who.groups.is_empty() {
        parts.push(format!("groups = {}", list(&who.groups)));
    }
    if &*who.idp != "-" {
        parts.push(format!("idp = {}", quote(&who.idp)));
    }
    if let Some(acr) = &who.acr {
        parts.push(format!("acr = {}", quote(acr)));
    }
    if !who.amr.is_empty() {
        parts.push(format!("amr = {}", list(&who.amr)));
    }
    if !who.claims.is_empty() {
        let claims: Vec<String> = who
            .claims
            .iter()
            .map(|(k, v)| {
                let values: Vec<String> = v.iter().map(|x| quote(x)).collect();
                format!("{} = [{}]", quote(k), values.join(", "))
            })
            .collect();
        parts.push(format!("claims = {{ {} }}", claims.join(", ")));
    }
    if !caller.scopes.is_empty() {
        parts.push(format!("scopes = {}", list(&caller.scopes)));
    }
    format!("{{ {} }}", parts.join(", "))
}

/// Users and requests to try the rules with (`--fixtures`): `[[user]]` tables (a `name` and
/// the keys of a `[[test]]` user) and `[[request]]` tables (`request = "GET /path"`, optional
/// `app`). The anonymous user comes first.
pub struct Fixtures {
    /// Label and user (`None`: anonymous).
    pub users: Vec<(String, Option<ExampleUser>)>,
    /// Optional app, method, path.
    pub requests: Vec<(Option<String>, String, String)>,
}

/// Reads `--fixtures`.
pub fn load_fixtures(fixtures: &Path) -> anyhow::Result<Fixtures> {
    let text = std::fs::read_to_string(fixtures)
        .with_context(|| format!("reading fixtures `{}`", fixtures.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("fixtures `{}`", fixtures.display()))?;
    let array = |key: &str| -> Vec<toml::Table> {
        table
            .get(key)
            .and_then(toml::Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_table().cloned()).collect())
            .unwrap_or_default()
    };
    let mut users: Vec<(String, Option<ExampleUser>)> = vec![("anonymous".into(), None)];
    let now = portcullis::clock::unix_now();
    for mut u in array("user") {
        // `name` labels the fixture; the rest is a `[[test]]` user, read by the same code.
        let label = u
            .remove("name")
            .and_then(|n| n.as_str().map(str::to_string));
        let mut doc = toml::Table::new();
        doc.insert("user".into(), toml::Value::Table(u));
        let who = config::app::example_user(&doc.to_string(), "-", now).map_err(|e| {
            anyhow::anyhow!(
                "fixtures `{}`: user {}: {e}",
                fixtures.display(),
                label.as_deref().unwrap_or("(unnamed)")
            )
        })?;
        let name = label.unwrap_or_else(|| who.identity.display().into_owned());
        users.push((name, Some(who)));
    }
    let requests: Vec<(Option<String>, String, String)> = array("request")
        .iter()
        .filter_map(|r| {
            let line = r.get("request")?.as_str()?;
            let (m, p) = line.split_once(' ')?;
            let app = r
                .get("app")
                .and_then(toml::Value::as_str)
                .map(str::to_string);
            Some((app, m.to_string(), p.to_string()))
        })
        .collect();
    Ok(Fixtures { users, requests })
}

/// The requests to probe an app's rules with: the fixture requests for it, and every literal
/// path its rules (in any of `versions`) name.
pub fn probes(
    versions: &[&AppConfig],
    requests: &[(Option<String>, String, String)],
) -> Vec<(String, String)> {
    let Some(id) = versions.first().map(|a| a.id()) else {
        return Vec::new();
    };
    let mut probes: Vec<(String, String)> = requests
        .iter()
        .filter(|(app, _, _)| app.as_deref().is_none_or(|a| a == id))
        .map(|(_, m, p)| (m.clone(), p.clone()))
        .collect();
    for rule in versions.iter().flat_map(|v| v.rules().rules()) {
        for pattern in rule.paths() {
            if let Some(base) = pattern.literal_base() {
                let path = if base.is_empty() { "/" } else { base };
                probes.push(("GET".into(), path.to_string()));
            }
        }
    }
    if probes.is_empty() {
        probes.push(("GET".into(), "/".into()));
    }
    probes.sort();
    probes.dedup();
    probes
}

/// Compares two policy versions over fixture users and requests (plus every literal path the
/// rules of either version name) and prints who gains or loses access to what.
pub fn diff(
    config_path: &Path,
    old_dir: &Path,
    new_dir: &Path,
    fixtures: &Path,
) -> anyhow::Result<ExitCode> {
    let (Some(old), Some(new)) = (
        load(config_path, Some(old_dir))?,
        load(config_path, Some(new_dir))?,
    ) else {
        return Ok(ExitCode::from(1));
    };
    let Fixtures {
        users,
        requests: fixture_requests,
    } = load_fixtures(fixtures)?;
    let now = portcullis::clock::unix_now();
    let mut ids: Vec<&str> = old.iter().chain(&new).map(|a| a.id()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut changes = 0usize;
    let progress = portcullis::progress::Progress::new(
        u64::try_from(ids.len()).unwrap_or(u64::MAX),
        "comparing apps",
    );
    let mut report = Vec::new();
    for id in ids {
        progress.step();
        let (before, after) = match (
            old.iter().find(|a| a.id() == id),
            new.iter().find(|a| a.id() == id),
        ) {
            (Some(b), Some(a)) => (b, a),
            (None, _) => {
                report.push(format!("{id}: new app"));
                changes += 1;
                continue;
            }
            (_, None) => {
                report.push(format!("{id}: app removed"));
                changes += 1;
                continue;
            }
        };
        let probes = probes(&[before, after], &fixture_requests);
        let mut lines = Vec::new();
        for (method, path) in &probes {
            let (Ok(method_value), Ok(normalised)) =
                (Method::from_bytes(method.as_bytes()), normalise(path))
            else {
                continue;
            };
            let facts = RequestFacts {
                method: &method_value,
                path: &normalised,
                client_ip: None,
                now,
            };
            for (name, who) in &users {
                let user = who.as_ref().map(ExampleUser::facts);
                let b = before.rules().decide(&facts, user.as_ref());
                let a = after.rules().decide(&facts, user.as_ref());
                if b.admits() != a.admits() {
                    let verb = if a.admits() { "GAINS" } else { "LOSES" };
                    lines.push(format!(
                        "  {verb} {name}: {method} {path}  ({} -> {})",
                        examples::describe(&b),
                        examples::describe(&a)
                    ));
                }
            }
        }
        if lines.is_empty() {
            report.push(format!("{id}: no change for these users and requests"));
        } else {
            changes += lines.len();
            report.push(format!("{id}:"));
            report.extend(lines);
        }
    }
    progress.finish();
    for line in report {
        println!("{line}");
    }
    println!("{changes} change(s) in access");
    // Like `diff`: 1 when something changed, so CI can gate a policy change on review.
    Ok(if changes == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Prints the decision for one request and every rule's conditions.
pub fn explain(
    config_path: &Path,
    app_id: &str,
    user: Option<&str>,
    ip: Option<IpAddr>,
    method: &str,
    path: &str,
) -> anyhow::Result<ExitCode> {
    let Some(apps) = load(config_path, None)? else {
        return Ok(ExitCode::from(1));
    };
    let Some(app) = apps.iter().find(|a| a.id() == app_id) else {
        let known: Vec<&str> = apps.iter().map(|a| a.id()).collect();
        eprintln!("no app `{app_id}` (apps: {})", known.join(", "));
        return Ok(ExitCode::from(1));
    };
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).context("method")?;
    let normalised = match normalise(path) {
        Ok(p) => p,
        Err(e) => {
            println!("decision: refused before any rule (400): {e}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let identity = user.map(user_from).transpose()?;
    let facts = RequestFacts {
        method: &method,
        path: &normalised,
        client_ip: ip,
        now: portcullis::clock::unix_now(),
    };
    let user_facts = identity.as_ref().map(ExampleUser::facts);
    let verdict = app.rules().evaluate(&facts, user_facts.as_ref());
    println!("app:      {} ({})", app.id(), app.file().display());
    println!(
        "request:  {method} {normalised}{}",
        if normalised == path {
            String::new()
        } else {
            format!("  (normalised from {path})")
        }
    );
    println!(
        "user:     {}",
        identity.as_ref().map_or_else(
            || "anonymous".to_string(),
            |u| u.identity.display().into_owned()
        )
    );
    println!("decision: {}", examples::describe(&verdict.decision));
    println!(
        "reason:   {}",
        app.rules()
            .reason(&verdict.decision, &facts, user_facts.as_ref())
    );
    for hit in &verdict.shadow {
        println!("shadow:   rule `{}` would {}", hit.rule, hit.would);
    }
    println!("rules:");
    // The rules compare the path as the app does (lower-cased with case_insensitive_paths).
    let rule_path = app.rules().rule_path(&normalised);
    let rule_facts = RequestFacts {
        path: &rule_path,
        ..facts
    };
    for rule in app.rules().rules() {
        let checks = rule.checks(&rule_facts, user_facts.as_ref());
        let all = checks.iter().all(|c| c.held);
        println!(
            "  {} {:?} `{}`{}: {}",
            if all { "✓" } else { "✗" },
            rule.kind(),
            rule.id(),
            if rule.mode() == portcullis::policy::Mode::Shadow {
                " (shadow)"
            } else {
                ""
            },
            rule.why()
        );
        for c in checks {
            println!(
                "      {} {}",
                if c.held { "yes" } else { "no " },
                c.condition
            );
        }
    }
    // Keep the notation shared with `[[test]]`: print the line to paste into the file.
    let expect = Expectation {
        decision: verdict.decision.name().to_string(),
        rule: verdict.decision.rule().map(str::to_string),
    };
    let user_part = identity
        .as_ref()
        .map_or_else(String::new, |u| format!("user = {}, ", as_test_user(u)));
    println!("as a test: {user_part}request = \"{method} {path}\", expect = \"{expect}\"");
    Ok(ExitCode::SUCCESS)
}
