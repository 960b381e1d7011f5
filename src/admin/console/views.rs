//! The admin console's pages: server-rendered HTML (maud escapes every value), one stylesheet,
//! no script. Accessible by construction: a language, a skip link, labelled controls, tables
//! with captions and header cells, states in words (not only colour), visible focus, and
//! colours that keep WCAG AA contrast.

use crate::audit::recent::RecentDecision;
use crate::config::console::ConsoleSettings;
use crate::config::BrokenApp;
use crate::gateway::AppRuntime;
use crate::idp::saml::SigningCertificate;
use crate::metrics::Summary;
use crate::policy::examples;
use crate::session::Session;
use maud::{html, Markup, DOCTYPE};
use std::sync::Arc;

/// The console's stylesheet (served at `/console/console.css`; the pages allow no other).
pub const STYLE: &str = r#"
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, sans-serif; color: #1b1b1b; background: #fff; }
a { color: #0b4f9c; }
a:focus, button:focus, input:focus, select:focus, textarea:focus, summary:focus {
  outline: 3px solid #b35900; outline-offset: 2px; }
.skip { position: absolute; left: -999px; }
.skip:focus { left: 8px; top: 8px; background: #fff; padding: 4px 8px; }
header { background: #1f2d3d; color: #fff; padding: 8px 24px; display: flex; flex-wrap: wrap;
  align-items: center; gap: 16px; }
header a { color: #fff; }
header .who { margin-left: auto; }
nav ul { list-style: none; display: flex; gap: 16px; margin: 0; padding: 0; }
nav a[aria-current="page"] { font-weight: bold; text-decoration-thickness: 3px; }
main { padding: 16px 24px; max-width: 1200px; }
table { border-collapse: collapse; margin: 8px 0 24px; width: 100%; }
caption { text-align: left; font-weight: bold; padding: 4px 0; }
th, td { border: 1px solid #8a8a8a; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f4; }
code, .mono { font-family: ui-monospace, monospace; font-size: 0.92em; word-break: break-all; }
.ok { color: #1d6b2f; font-weight: bold; }
.bad { color: #a3141f; font-weight: bold; }
.warn { color: #7a4b00; font-weight: bold; }
form.inline { display: inline; }
label { display: block; font-weight: bold; margin-top: 8px; }
input, select, textarea { font: inherit; padding: 4px; border: 1px solid #595959; min-width: 18em; }
textarea { width: 100%; min-height: 4em; }
button { font: inherit; padding: 4px 12px; border: 2px solid #1f2d3d; background: #1f2d3d;
  color: #fff; cursor: pointer; margin-top: 8px; }
button.danger { background: #a3141f; border-color: #a3141f; }
.note { background: #f4f6f8; border-left: 4px solid #1f2d3d; padding: 8px 12px; }
.error { background: #fdeeee; border-left: 4px solid #a3141f; padding: 8px 12px; }
"#;

/// What every signed-in page shows around its content.
pub struct Frame {
    /// Who is signed in.
    pub operator: String,
    /// The form token of this session.
    pub csrf: String,
}

const NAV: [(&str, &str); 4] = [
    ("/console/", "Overview"),
    ("/console/sessions", "Sessions"),
    ("/console/decisions", "Recent decisions"),
    ("/console/explain", "Explain a decision"),
];

fn shell(title: &str, header: Markup, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (title) " · Portcullis console" }
                link rel="stylesheet" href="/console/console.css";
                // No favicon request to the admin listener.
                link rel="icon" href="data:,";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header { (header) }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

fn layout(frame: &Frame, current: &str, title: &str, content: Markup) -> Markup {
    let header = html! {
        strong { "Portcullis console" }
        nav aria-label="Console" {
            ul {
                @for (href, text) in NAV {
                    li {
                        @if href == current {
                            a href=(href) aria-current="page" { (text) }
                        } @else {
                            a href=(href) { (text) }
                        }
                    }
                }
            }
        }
        span.who {
            "Signed in as " strong { (frame.operator) } " "
            form.inline method="post" action="/console/signout" {
                input type="hidden" name="csrf" value=(frame.csrf);
                button type="submit" { "Sign out" }
            }
        }
    };
    shell(title, header, content)
}

fn plain(title: &str, content: Markup) -> Markup {
    shell(title, html! { strong { "Portcullis console" } }, content)
}

/// A short notice (errors, refusals).
pub fn notice(title: &str, text: &str) -> Markup {
    plain(
        title,
        html! { p.error role="alert" { (text) } p { a href="/console/" { "Back to the console" } } },
    )
}

/// The console is reached at another address.
pub fn elsewhere(base: &str) -> Markup {
    let url = format!("{base}/console/");
    plain(
        "Open the console at its address",
        html! { p { "The console answers at " a href=(url) { (url) } " only." } },
    )
}

/// The sign-in page: single sign-on (when configured) and the admin token.
pub fn sign_in(
    console: Option<&ConsoleSettings>,
    return_to: String,
    error: Option<&str>,
) -> Markup {
    let sso = console.map(|c| {
        let href = format!(
            "/console/login?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("return", &return_to)
                .finish()
        );
        (href, c.idp.clone(), c.groups.join(", "))
    });
    plain(
        "Sign in",
        html! {
            @if let Some(e) = error { p.error role="alert" { (e) } }
            @if let Some((href, idp, groups)) = &sso {
                h2 { "With single sign-on" }
                p { "For members of: " strong { (groups) } "." }
                p { a href=(href) id="sso" { "Sign in with " (idp) } }
            }
            h2 { "With the admin token" }
            form method="post" action="/console/token" {
                input type="hidden" name="return" value=(return_to);
                label for="token" { "Admin token (the contents of [admin] token_file)" }
                input id="token" name="token" type="password" autocomplete="off" required;
                div { button type="submit" { "Sign in with the token" } }
            }
        },
    )
}

/// Signed in, but not in the console's groups.
pub fn not_an_operator(frame: &Frame, groups: &str) -> Markup {
    plain(
        "Not a console operator",
        html! {
            p.error role="alert" {
                "You are signed in as " strong { (frame.operator) } ", who is not in the console's groups ("
                (groups) "). Ask IT to add you, or sign in as someone else."
            }
            form method="post" action="/console/signout" {
                input type="hidden" name="csrf" value=(frame.csrf);
                button type="submit" { "Sign out" }
            }
        },
    )
}

/// A page or app that is not there.
pub fn missing(frame: &Frame, text: &str) -> Markup {
    layout(frame, "", "Not found", html! { p.error { (text) } })
}

fn when(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(
            || unix.to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// One IdP's state for the overview.
pub struct IdpState {
    /// Configured name.
    pub name: String,
    /// `oidc` or `saml`.
    pub kind: &'static str,
    /// Discovery or metadata loaded at least once.
    pub loaded: bool,
    /// Answering now.
    pub reachable: bool,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// SAML: the signing certificates from its metadata.
    pub certificates: Vec<SigningCertificate>,
}

/// What the overview shows.
pub struct Overview<'a> {
    /// Serving apps.
    pub apps: &'a [Arc<AppRuntime>],
    /// Disabled apps and their problems.
    pub broken: Vec<(Arc<BrokenApp>, Vec<String>)>,
    /// When the configuration was loaded.
    pub loaded_unix: u64,
    /// Identity providers.
    pub idps: Vec<IdpState>,
    /// The session store, in words.
    pub store: String,
    /// Sessions this node holds.
    pub sessions_held: u64,
    /// Counters since start.
    pub metrics: Summary,
}

/// Apps, disabled apps, IdPs and a metrics summary.
pub fn overview(frame: &Frame, o: &Overview<'_>) -> Markup {
    let content = html! {
        p { "Configuration loaded " (when(o.loaded_unix)) ". Session store: " (o.store)
            ". Sessions held on this node: " (o.sessions_held) "." }
        table {
            caption { "Apps serving (" (o.apps.len()) ")" }
            thead { tr { th scope="col" { "App" } th scope="col" { "Hosts" } th scope="col" { "IdP" }
                th scope="col" { "Upstreams" } th scope="col" { "Policy file (SHA-256)" } } }
            tbody {
                @for app in o.apps {
                    tr {
                        td { a href={ "/console/apps/" (app.config.id()) } { (app.config.id()) } }
                        td { @for h in app.config.hosts() { code { (h) (app.config.path_prefix()) } " " } }
                        td { (app.config.idp().unwrap_or("none (public only)")) }
                        td {
                            @for (url, up) in app.upstream_health() {
                                div { code { (url) } " "
                                    @if up { span.ok { "in rotation" } } @else { span.bad { "ejected" } } }
                            }
                        }
                        td { code title=(app.config.policy_sha256()) { (short_hash(app.config.policy_sha256())) } }
                    }
                }
            }
        }
        @if !o.broken.is_empty() {
            table {
                caption { "Apps disabled by policy errors (" (o.broken.len()) "): their hosts answer 503" }
                thead { tr { th scope="col" { "File" } th scope="col" { "App" } th scope="col" { "Problems" } } }
                tbody {
                    @for (b, problems) in &o.broken {
                        tr {
                            td { code { (b.file.display()) } }
                            td { (b.id.as_deref().unwrap_or("(unreadable)")) }
                            td { ul { @for p in problems { li { (p) } } } }
                        }
                    }
                }
            }
        }
        table {
            caption { "Identity providers" }
            thead { tr { th scope="col" { "IdP" } th scope="col" { "Protocol" } th scope="col" { "State" }
                th scope="col" { "Last error" } th scope="col" { "Signing certificates" } } }
            tbody {
                @for idp in &o.idps {
                    tr {
                        td { (idp.name) }
                        td { (idp.kind) }
                        td {
                            @if !idp.loaded { span.bad { "not loaded (sign-in unavailable)" } }
                            @else if idp.reachable { span.ok { "loaded, reachable" } }
                            @else { span.bad { "loaded, unreachable (sign-in unavailable)" } }
                        }
                        td { (idp.last_error.as_deref().unwrap_or("none")) }
                        td {
                            @if idp.kind == "oidc" { "keys from its JWKS (rotated by the IdP)" }
                            @for c in &idp.certificates {
                                div {
                                    (c.subject) ": valid until " (c.not_after) " "
                                    @match c.days_left {
                                        Some(d) if d < 0 => span.bad { "(expired)" },
                                        Some(d) if d < crate::config::idp::EXPIRY_WARNING_DAYS => span.warn { "(" (d) " days left)" },
                                        Some(d) => span.ok { "(" (d) " days left)" },
                                        None => "",
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (metrics(&o.metrics))
    };
    layout(frame, "/console/", "Overview", content)
}

fn metrics(m: &Summary) -> Markup {
    let row = |map: &std::collections::BTreeMap<String, u64>| {
        if map.is_empty() {
            "none yet".to_string()
        } else {
            map.iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    html! {
        table {
            caption { "Since this node started (details: /metrics)" }
            tbody {
                tr { th scope="row" { "Requests by status" } td { (row(&m.requests)) } }
                tr { th scope="row" { "Access decisions" } td { (row(&m.decisions)) } }
                tr { th scope="row" { "Sign-ins" } td { (row(&m.logins)) } }
                tr { th scope="row" { "Upstream errors" } td { (m.upstream_errors) } }
                tr { th scope="row" { "IdP call errors" } td { (m.idp_errors) } }
                tr { th scope="row" { "Session store errors" } td { (m.store_errors) } }
                tr { th scope="row" { "Audit records dropped" } td { (m.audit_dropped) } }
            }
        }
    }
}

fn duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// One app's policy for auditors: every rule with id and why, and its examples run now.
pub fn app(frame: &Frame, app: &AppRuntime, loaded_unix: u64) -> Markup {
    let c = &app.config;
    let content = html! {
        table {
            caption { "The app" }
            tbody {
                tr { th scope="row" { "Owner" } td { (c.owner()) } }
                tr { th scope="row" { "Summary" } td { (c.summary()) } }
                tr { th scope="row" { "Policy file" } td { code { (c.file().display()) } } }
                tr { th scope="row" { "SHA-256" } td { code { (c.policy_sha256()) } } }
                tr { th scope="row" { "Loaded" } td { (when(loaded_unix)) } }
                tr { th scope="row" { "Hosts" } td { @for h in c.hosts() { code { (h) (c.path_prefix()) } " " } } }
                tr { th scope="row" { "Identity provider" } td { (c.idp().unwrap_or("none (public only)")) } }
                tr { th scope="row" { "Session limits" } td { "idle " (duration(c.session_idle())) ", absolute " (duration(c.session_absolute())) } }
                tr { th scope="row" { "Identity delivered" } td { ul { @for d in c.delivery().describe() { li { (d) } } } } }
            }
        }
        table {
            caption { "Rules (default deny; a matching deny wins; order does not matter)" }
            thead { tr { th scope="col" { "Rule" } th scope="col" { "Kind" } th scope="col" { "Why" } th scope="col" { "Conditions" } } }
            tbody {
                @for rule in c.rules().rules() {
                    tr {
                        td { code { (rule.id()) } }
                        td { (rule.kind().table()) @if rule.mode() == crate::policy::Mode::Shadow { " (shadow: reports only)" } }
                        td { (rule.why()) }
                        td { ul { @for cond in rule.conditions() { li { (cond) } } } }
                    }
                }
            }
        }
        @let results: Vec<_> = c.examples().iter().map(|e| (e, examples::run(c.rules(), e))).collect();
        @let failed = results.iter().filter(|(_, r)| r.is_err()).count();
        table {
            caption { "Examples ([[test]]) run now: " (results.len() - failed) " passed, " (failed) " failed" }
            thead { tr { th scope="col" { "Example" } th scope="col" { "Request" } th scope="col" { "Expected" } th scope="col" { "Result" } } }
            tbody {
                @for (e, r) in &results {
                    tr {
                        td { (e.name) }
                        td { code { (e.method) " " (e.path) } }
                        td { code { (e.expect) } }
                        td {
                            @match r {
                                Ok(()) => span.ok { "pass" },
                                Err(m) => { span.bad { "FAIL" } ": got " code { (m.got) } " because " (m.reason) },
                            }
                        }
                    }
                }
            }
        }
        p { a href={ "/console/explain?app=" (c.id()) } { "Explain a request to this app" } }
    };
    layout(frame, "", &format!("App {}", c.id()), content)
}

/// The explain form's fields, as submitted.
pub struct ExplainForm {
    /// App id.
    pub app: String,
    /// The user as a `[[test]]` inline table, or empty for anonymous.
    pub user: String,
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Client address, or empty.
    pub ip: String,
}

/// One rule's conditions and whether each held.
pub struct RuleChecks {
    /// `allow`, `deny` or `require`.
    pub table: &'static str,
    /// Its id.
    pub id: String,
    /// Its why.
    pub why: String,
    /// Report-only.
    pub shadow: bool,
    /// Each condition and whether it held.
    pub checks: Vec<(String, bool)>,
}

/// A request explained.
pub struct Explained {
    /// The decision, in `[[test]]` notation with words.
    pub decision: String,
    /// Why.
    pub reason: String,
    /// The user, or `anonymous`.
    pub user: String,
    /// The normalised path.
    pub path: String,
    /// Shadow rules that would have decided otherwise.
    pub shadow: Vec<String>,
    /// Every rule.
    pub rules: Vec<RuleChecks>,
}

/// The explain form, and its answer when one was asked.
pub fn explain(
    frame: &Frame,
    apps: &[&str],
    form: &ExplainForm,
    answer: Option<Result<Explained, String>>,
) -> Markup {
    let content = html! {
        form method="get" action="/console/explain" {
            label for="app" { "App" }
            select id="app" name="app" required {
                @for a in apps {
                    option value=(a) selected[*a == form.app] { (a) }
                }
            }
            label for="user" { "User, as in a [[test]] entry (empty: anonymous)" }
            textarea id="user" name="user" placeholder=r#"{ email = "alice@corp.example", groups = ["staff"] }"# { (form.user) }
            label for="method" { "Method" }
            input id="method" name="method" value=(form.method) required;
            label for="path" { "Path" }
            input id="path" name="path" value=(form.path) required;
            label for="ip" { "Client address (optional)" }
            input id="ip" name="ip" value=(form.ip);
            div { button type="submit" { "Explain" } }
        }
        @match &answer {
            None => {},
            Some(Err(problem)) => p.error role="alert" { (problem) },
            Some(Ok(x)) => {
                section aria-labelledby="decision" {
                    h2 id="decision" { "Decision: " (x.decision) }
                    p { "For " strong { (x.user) } " at " code { (x.path) } ". " (x.reason) }
                    @for s in &x.shadow { p.note { "Shadow: " (s) } }
                    table {
                        caption { "Every rule, condition by condition" }
                        thead { tr { th scope="col" { "Rule" } th scope="col" { "Why" } th scope="col" { "Conditions" } } }
                        tbody {
                            @for r in &x.rules {
                                @let all = r.checks.iter().all(|(_, held)| *held);
                                tr {
                                    td {
                                        @if all { span.ok { "matches" } } @else { span.bad { "does not match" } }
                                        " " (r.table) " " code { (r.id) } @if r.shadow { " (shadow)" }
                                    }
                                    td { (r.why) }
                                    td { ul { @for (c, held) in &r.checks {
                                        li { @if *held { span.ok { "yes" } } @else { span.bad { "no" } } " " (c) }
                                    } } }
                                }
                            }
                        }
                    }
                }
            },
        }
    };
    layout(frame, "/console/explain", "Explain a decision", content)
}

/// Sessions (all, or one user's) with revoke buttons.
pub fn sessions(
    frame: &Frame,
    user: &str,
    found: &[Arc<Session>],
    total: usize,
    revoked: Option<usize>,
) -> Markup {
    let content = html! {
        @if let Some(n) = revoked {
            p.note role="status" { (n) " session(s) revoked on every node." }
        }
        form method="get" action="/console/sessions" {
            label for="user" { "User's email (empty: everyone)" }
            input id="user" name="user" type="search" value=(user);
            div { button type="submit" { "Search" } }
        }
        @if !user.is_empty() && total > 0 {
            form method="post" action="/console/sessions/revoke" {
                input type="hidden" name="csrf" value=(frame.csrf);
                input type="hidden" name="user" value=(user);
                input type="hidden" name="back" value=(user);
                button.danger type="submit" { "Revoke all " (total) " session(s) of " (user) }
            }
        }
        table {
            caption { (total) " session(s)" @if total > found.len() { ", the " (found.len()) " most recently used shown" } }
            thead { tr { th scope="col" { "User" } th scope="col" { "IdP" } th scope="col" { "App" } th scope="col" { "Host" }
                th scope="col" { "Groups" } th scope="col" { "Signed in" } th scope="col" { "Last used" } th scope="col" { "Action" } } }
            tbody {
                @for s in found {
                    @let who = s.identity.display();
                    tr {
                        td { (who) }
                        td { (s.identity.idp) }
                        td { (s.app) }
                        td { (s.host) }
                        td { (s.identity.groups.iter().map(|g| &**g).collect::<Vec<_>>().join(", ")) }
                        td { (when(s.created_unix())) }
                        td { (when(s.last_seen_ms() / 1000)) }
                        td {
                            form.inline method="post" action="/console/sessions/revoke" {
                                input type="hidden" name="csrf" value=(frame.csrf);
                                input type="hidden" name="idp" value=(s.identity.idp);
                                input type="hidden" name="subject" value=(s.identity.subject);
                                input type="hidden" name="back" value=(user);
                                button.danger type="submit" aria-label={ "Revoke the sessions of " (who) " at " (s.identity.idp) } { "Revoke" }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(frame, "/console/sessions", "Sessions", content)
}

/// The node's recent access decisions, filtered by app and outcome.
pub fn decisions(
    frame: &Frame,
    apps: &[&str],
    app: &str,
    outcome: &str,
    list: &[RecentDecision],
) -> Markup {
    const OUTCOMES: [&str; 8] = [
        "allow",
        "public",
        "deny",
        "require",
        "login",
        "no_allow",
        "step-up",
        "step-up-refused",
    ];
    let content = html! {
        p { "The last " (crate::audit::recent::KEPT) " decisions this node made (the audit trail holds them all)." }
        form method="get" action="/console/decisions" {
            label for="app" { "App" }
            select id="app" name="app" {
                option value="" selected[app.is_empty()] { "any" }
                @for a in apps { option value=(a) selected[*a == app] { (a) } }
            }
            label for="outcome" { "Outcome" }
            select id="outcome" name="outcome" {
                option value="" selected[outcome.is_empty()] { "any" }
                @for o in OUTCOMES { option value=(o) selected[o == outcome] { (o) } }
            }
            div { button type="submit" { "Filter" } }
        }
        table {
            caption { (list.len()) " decision(s)" }
            thead { tr { th scope="col" { "When" } th scope="col" { "App" } th scope="col" { "Decision" } th scope="col" { "Rule" }
                th scope="col" { "User" } th scope="col" { "Request" } th scope="col" { "Client" } th scope="col" { "Request id" } } }
            tbody {
                @for d in list {
                    tr {
                        td { (when(d.at_unix)) }
                        td { (d.app) }
                        td { @if matches!(d.decision, "allow" | "public") { span.ok { (d.decision) } } @else { span.bad { (d.decision) } } }
                        td { code { (d.rule) } }
                        td { (d.user) }
                        td { code { (d.method) " " (d.path) } }
                        td { (d.client) }
                        td { code { (d.request_id) } }
                    }
                }
            }
        }
    };
    layout(frame, "/console/decisions", "Recent decisions", content)
}
