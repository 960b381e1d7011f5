//! `portcullis policy report`: the document an auditor files next to a change ticket — per
//! app its owner, hosts, IdP, session limits, what the backend is told, every rule in words
//! with its id and why, who gets what for the fixture users, the `[[test]]` examples run now
//! with pass/fail, and the policy file's SHA-256. Written as self-contained, printable HTML
//! (maud, no scripts, no external assets) and a Markdown twin for review tools.

use crate::policy_tool::{load_fixtures, probes, Fixtures};
use anyhow::Context;
use http::Method;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use portcullis::config::{self, AppConfig, Problem};
use portcullis::policy::examples::{self, ExampleUser};
use portcullis::policy::path::normalise;
use portcullis::policy::{Mode, RequestFacts, RuleKind};
use portcullis::progress::Progress;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// One app, as the report shows it.
struct AppReport {
    id: String,
    owner: String,
    summary: String,
    file: String,
    sha256: String,
    hosts: Vec<String>,
    idp: String,
    limits: String,
    identity: Vec<String>,
    rules: Vec<RuleReport>,
    access: Vec<(String, Vec<String>)>,
    probes: Vec<String>,
    examples: Vec<ExampleReport>,
}

struct RuleReport {
    id: String,
    kind: &'static str,
    shadow: bool,
    why: String,
    conditions: Vec<String>,
}

struct ExampleReport {
    name: String,
    expect: String,
    outcome: Result<(), String>,
}

/// A policy file that does not compile: its app is disabled.
struct BrokenReport {
    file: String,
    id: String,
    problems: Vec<String>,
}

fn kind(kind: RuleKind) -> &'static str {
    kind.table()
}

fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn app_report(app: &AppConfig, fixtures: &Fixtures) -> AppReport {
    let now = portcullis::clock::unix_now();
    let probe_list = probes(&[app], &fixtures.requests);
    let mut access = Vec::new();
    for (name, who) in &fixtures.users {
        let user = who.as_ref().map(ExampleUser::facts);
        let cells = probe_list
            .iter()
            .map(|(method, path)| {
                let (Ok(m), Ok(p)) = (Method::from_bytes(method.as_bytes()), normalise(path))
                else {
                    return "refused (400)".to_string();
                };
                let facts = RequestFacts {
                    method: &m,
                    path: &p,
                    client_ip: None,
                    now,
                };
                examples::describe(&app.rules().decide(&facts, user.as_ref()))
            })
            .collect();
        access.push((name.clone(), cells));
    }
    AppReport {
        id: app.id().to_string(),
        owner: app.owner().to_string(),
        summary: app.summary().to_string(),
        file: app.file().display().to_string(),
        sha256: app.policy_sha256().to_string(),
        hosts: app
            .hosts()
            .iter()
            .map(|h| format!("{h}{}", app.path_prefix()))
            .collect(),
        idp: app
            .idp()
            .map_or_else(|| "none (public only)".to_string(), str::to_string),
        limits: format!(
            "idle {}, absolute {}",
            duration(app.session_idle()),
            duration(app.session_absolute())
        ),
        identity: {
            let mut lines = app.delivery().describe();
            if let Some(bearer) = app.bearer() {
                lines.push(format!(
                    "API callers with bearer tokens for {} on {}",
                    bearer.audiences().join(", "),
                    bearer.path_list().join(", ")
                ));
            }
            if lines.is_empty() {
                lines.push("nothing (the app sees anonymous requests)".into());
            }
            lines
        },
        rules: app
            .rules()
            .rules()
            .map(|r| RuleReport {
                id: r.id().to_string(),
                kind: kind(r.kind()),
                shadow: r.mode() == Mode::Shadow,
                why: r.why().to_string(),
                conditions: r.conditions(),
            })
            .collect(),
        access,
        probes: probe_list.iter().map(|(m, p)| format!("{m} {p}")).collect(),
        examples: app
            .examples()
            .iter()
            .map(|e| ExampleReport {
                name: e.name.clone(),
                expect: e.expect.to_string(),
                outcome: examples::run(app.rules(), e)
                    .map_err(|m| format!("got {} because {}", m.got, m.reason)),
            })
            .collect(),
    }
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;color:#1b1b1b;max-width:70rem;margin:2rem auto;padding:0 1rem}\
h1{font-size:1.6rem}h2{font-size:1.3rem;border-top:2px solid #1b1b1b;padding-top:1rem;margin-top:2.5rem}\
table{border-collapse:collapse;margin:.5rem 0 1rem;width:100%}th,td{border:1px solid #767676;padding:.3rem .5rem;text-align:left;vertical-align:top}\
th{background:#eee}code{font-family:ui-monospace,monospace;font-size:.9em}.pass{color:#0b6b1f;font-weight:600}.fail{color:#a4000f;font-weight:600}\
.meta th{width:12rem}@media print{h2{break-before:page}body{margin:0}}";

fn html(apps: &[AppReport], broken: &[BrokenReport], config: &str, made: &str) -> String {
    let page: Markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Portcullis access policy report" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                main {
                    h1 { "Access policy report" }
                    p { "Configuration " code { (config) } ", made " (made) ". "
                        (apps.len()) " app(s) serving, " (broken.len()) " disabled by errors." }
                    @if !broken.is_empty() {
                        h2 id="disabled" { "Disabled apps" }
                        @for b in broken {
                            p { strong { (b.id) } " (" code { (b.file) } ") is disabled — its hosts answer 503:" }
                            ul { @for p in &b.problems { li { (p) } } }
                        }
                    }
                    @for app in apps {
                        h2 id={ "app-" (app.id) } { "App " code { (app.id) } }
                        p { (app.summary) }
                        table class="meta" {
                            tr { th scope="row" { "Owner" } td { (app.owner) } }
                            tr { th scope="row" { "Hosts" } td { (app.hosts.join(", ")) } }
                            tr { th scope="row" { "Identity provider" } td { (app.idp) } }
                            tr { th scope="row" { "Session limits" } td { (app.limits) } }
                            tr { th scope="row" { "The backend is given" } td { ul { @for l in &app.identity { li { (l) } } } } }
                            tr { th scope="row" { "Policy file" } td { code { (app.file) } } }
                            tr { th scope="row" { "SHA-256" } td { code { (app.sha256) } } }
                        }
                        h3 { "Rules" }
                        p { "Nobody gets in unless an allow rule matches (default deny); a matching deny rule always wins; every require rule that applies must hold; the order of rules never matters. Shadow rules only report." }
                        table {
                            thead { tr { th scope="col" { "Rule" } th scope="col" { "Kind" } th scope="col" { "Applies when" } th scope="col" { "Why" } } }
                            tbody {
                                @for r in &app.rules {
                                    tr id={ "rule-" (app.id) "-" (r.id) } {
                                        td { code { (r.id) } }
                                        td { (r.kind) @if r.shadow { " (shadow: reported, not enforced)" } }
                                        td { @if r.conditions.is_empty() { "always" } @else { (r.conditions.join("; ")) } }
                                        td { (r.why) }
                                    }
                                }
                            }
                        }
                        h3 { "Who gets what" }
                        table {
                            thead { tr { th scope="col" { "User" } @for p in &app.probes { th scope="col" { code { (p) } } } } }
                            tbody {
                                @for (user, cells) in &app.access {
                                    tr { th scope="row" { (user) } @for c in cells { td { (c) } } }
                                }
                            }
                        }
                        h3 { "Examples ([[test]]), run now" }
                        @if app.examples.is_empty() {
                            p { "None: this policy has no executable examples." }
                        } @else {
                            table {
                                thead { tr { th scope="col" { "Example" } th scope="col" { "Expected" } th scope="col" { "Result" } } }
                                tbody {
                                    @for e in &app.examples {
                                        tr {
                                            td { (e.name) }
                                            td { code { (e.expect) } }
                                            @match &e.outcome {
                                                Ok(()) => td class="pass" { "pass" },
                                                Err(why) => td class="fail" { "FAIL: " (why) },
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page.into_string()
}

/// Markdown table cells: no pipes or line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn markdown(apps: &[AppReport], broken: &[BrokenReport], config: &str, made: &str) -> String {
    let mut md = format!(
        "# Access policy report\n\nConfiguration `{config}`, made {made}. {} app(s) serving, {} disabled by errors.\n",
        apps.len(),
        broken.len()
    );
    if !broken.is_empty() {
        md.push_str("\n## Disabled apps\n\n");
        for b in broken {
            md.push_str(&format!("- **{}** (`{}`):\n", b.id, b.file));
            for p in &b.problems {
                md.push_str(&format!("  - {p}\n"));
            }
        }
    }
    for app in apps {
        md.push_str(&format!("\n## App `{}`\n\n{}\n\n", app.id, app.summary));
        md.push_str("| | |\n|---|---|\n");
        for (k, v) in [
            ("Owner", app.owner.clone()),
            ("Hosts", app.hosts.join(", ")),
            ("Identity provider", app.idp.clone()),
            ("Session limits", app.limits.clone()),
            ("The backend is given", app.identity.join("; ")),
            ("Policy file", format!("`{}`", app.file)),
            ("SHA-256", format!("`{}`", app.sha256)),
        ] {
            md.push_str(&format!("| {k} | {} |\n", cell(&v)));
        }
        md.push_str("\n### Rules\n\n| Rule | Kind | Applies when | Why |\n|---|---|---|---|\n");
        for r in &app.rules {
            let kind = if r.shadow {
                format!("{} (shadow)", r.kind)
            } else {
                r.kind.to_string()
            };
            let when = if r.conditions.is_empty() {
                "always".to_string()
            } else {
                r.conditions.join("; ")
            };
            md.push_str(&format!(
                "| `{}` | {kind} | {} | {} |\n",
                r.id,
                cell(&when),
                cell(&r.why)
            ));
        }
        md.push_str("\n### Who gets what\n\n| User |");
        for p in &app.probes {
            md.push_str(&format!(" `{}` |", cell(p)));
        }
        md.push_str("\n|---|");
        md.push_str(&"---|".repeat(app.probes.len()));
        md.push('\n');
        for (user, cells) in &app.access {
            md.push_str(&format!("| {} |", cell(user)));
            for c in cells {
                md.push_str(&format!(" {} |", cell(c)));
            }
            md.push('\n');
        }
        md.push_str("\n### Examples, run now\n\n");
        if app.examples.is_empty() {
            md.push_str("None.\n");
        }
        for e in &app.examples {
            match &e.outcome {
                Ok(()) => md.push_str(&format!("- pass: {} (`{}`)\n", e.name, e.expect)),
                Err(why) => {
                    md.push_str(&format!("- **FAIL**: {} (`{}`): {why}\n", e.name, e.expect))
                }
            }
        }
    }
    md
}

/// Writes `index.html` and `report.md` into `out`; exit 1 when an example fails or a policy
/// file has errors (the report is written either way: it says so).
pub fn report(config_path: &Path, fixtures: Option<&Path>, out: &Path) -> anyhow::Result<ExitCode> {
    let gateway = match config::load_gateway(config_path) {
        Ok((g, _)) => g,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let policies = config::load_policies(&gateway);
    let fixtures = match fixtures {
        Some(f) => load_fixtures(f)?,
        None => Fixtures {
            users: vec![("anonymous".into(), None)],
            requests: Vec::new(),
        },
    };
    let progress = Progress::new(
        u64::try_from(policies.apps.len()).unwrap_or(u64::MAX),
        "reporting on apps",
    );
    let apps: Vec<AppReport> = policies
        .apps
        .iter()
        .map(|app| {
            progress.step();
            app_report(app, &fixtures)
        })
        .collect();
    progress.finish();
    let broken: Vec<BrokenReport> = policies
        .broken
        .iter()
        .map(|b| BrokenReport {
            file: b.file.display().to_string(),
            id: b.id.clone().unwrap_or_else(|| "(unreadable)".into()),
            problems: policies
                .problems
                .iter()
                .filter(|p| p.is_error() && p.file == b.file)
                .map(Problem::to_string)
                .collect(),
        })
        .collect();
    let made = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let config = config_path.display().to_string();
    std::fs::create_dir_all(out).with_context(|| format!("creating `{}`", out.display()))?;
    let html_file = out.join("index.html");
    std::fs::write(&html_file, html(&apps, &broken, &config, &made))
        .with_context(|| format!("writing `{}`", html_file.display()))?;
    let md_file = out.join("report.md");
    std::fs::write(&md_file, markdown(&apps, &broken, &config, &made))
        .with_context(|| format!("writing `{}`", md_file.display()))?;
    let failed = apps
        .iter()
        .flat_map(|a| &a.examples)
        .filter(|e| e.outcome.is_err())
        .count();
    println!(
        "wrote {} and {}: {} app(s), {} disabled, {failed} failing example(s)",
        html_file.display(),
        md_file.display(),
        apps.len(),
        broken.len()
    );
    Ok(if failed == 0 && broken.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
