//! The admin console: a read-only web UI on the admin listener, for IT and auditors. Its one
//! action is revoking sessions.
//!
//! Who may use it: members of `[admin.console] groups`, signed in through the gateway's own
//! OpenID Connect login at `[admin.console] idp` (the same code path as any app, with the
//! console as the app), or anyone who types the admin token. Either way the result is a
//! gateway session for the console's own host only: no app accepts it, and the console
//! accepts no app's session. Every form carries a token bound to that session (CSRF) and must
//! come from the console's own origin; the revoke is audited with the operator's name.

mod views;

use crate::admin::sessions;
use crate::audit::{self, AuditContext};
use crate::auth::{Origin, SessionLookup, CALLBACK_PATH};
use crate::gateway::Gateway;
use crate::idp::Identity;
use crate::policy::examples;
use crate::session::cookies::{clear_id_token_cookie, clear_session_cookie, request_cookies};
use crate::session::store::Selector;
use crate::session::{LogoutHint, Scope, Session, SessionId, SignInFamily};
use bytes::Bytes;
use pingora::protocols::http::ServerSession;
use std::net::IpAddr;
use std::sync::Arc;

/// Where the console lives on the admin listener.
pub const PREFIX: &str = "/console";
/// The app id of console sessions (no policy file may take it: sessions are host-bound and the
/// console's host is its own, see `config::console`).
pub const CONSOLE_APP: &str = "portcullis-console";
/// The pseudo-IdP of sessions begun with the admin token.
pub const TOKEN_IDP: &str = "admin-token";
/// Largest form body the console reads.
const MAX_FORM: usize = 16 * 1024;
/// The purpose the console's form tokens are keyed to.
const FORM_PURPOSE: &str = "admin-console-form";
/// Rows a list shows at most.
const MAX_ROWS: usize = 200;

/// Does `path` belong to the console (its pages, or its sign-in callback)?
pub fn owns(path: &str) -> bool {
    path == PREFIX || path.starts_with("/console/") || path == CALLBACK_PATH
}

/// A console answer: status, body, content type and extra headers.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// `Location`, `Set-Cookie`, ...
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn page(status: u16, markup: maud::Markup) -> Self {
        Self {
            status,
            content_type: "text/html; charset=utf-8",
            body: markup.into_string().into_bytes(),
            headers: Vec::new(),
        }
    }

    fn redirect(location: &str, cookies: Vec<String>) -> Self {
        let mut headers = vec![("Location", location.to_string())];
        headers.extend(cookies.into_iter().map(|c| ("Set-Cookie", c)));
        Self {
            status: 303,
            content_type: "text/plain; charset=utf-8",
            body: Vec::new(),
            headers,
        }
    }

    fn notice(status: u16, title: &str, text: &str) -> Self {
        Self::page(status, views::notice(title, text))
    }
}

/// The request as the console reads it.
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    query: Vec<(String, String)>,
    headers: &'a http::HeaderMap,
    client_ip: Option<IpAddr>,
    request_id: String,
}

impl Request<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        param(&self.query, name)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn audit(&self) -> AuditContext<'_> {
        AuditContext {
            request_id: &self.request_id,
            client_ip: self.client_ip,
            app: Some(CONSOLE_APP),
        }
    }
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn form_pairs(text: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(text)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The signed-in console user.
struct Operator {
    id: SessionId,
    session: Arc<Session>,
    by_token: bool,
}

impl Operator {
    /// The name revocations are audited under.
    fn name(&self) -> String {
        if self.by_token {
            "admin token (console)".to_string()
        } else {
            format!("{} (console)", self.session.identity.display())
        }
    }
}

/// Answers one console request.
pub async fn answer(gateway: &Arc<Gateway>, session: &mut ServerSession) -> Answer {
    let header = session.req_header().clone();
    let client_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let query = header
        .uri
        .query()
        .map(|q| form_pairs(q.as_bytes()))
        .unwrap_or_default();
    let request = Request {
        method: header.method.as_str(),
        path: header.uri.path(),
        query,
        headers: &header.headers,
        client_ip,
        request_id: crate::hygiene::new_request_id(),
    };
    let span =
        tracing::info_span!("console", request_id = %request.request_id, path = %request.path);
    let _entered = span.enter();
    if gateway.config.console.is_none() && gateway.config.admin_token.is_none() {
        return Answer::notice(
            404,
            "Admin console off",
            "Set [admin] token_file or [admin.console] in portcullis.toml to use the console.",
        );
    }
    if request.path == "/console/console.css" {
        return Answer {
            status: 200,
            content_type: "text/css; charset=utf-8",
            body: views::STYLE.as_bytes().to_vec(),
            headers: Vec::new(),
        };
    }
    let origin = match origin_of(gateway, &request) {
        Ok(o) => o,
        Err(refused) => return refused,
    };
    let body = if request.method == "POST" {
        match read_form(session).await {
            Ok(b) => form_pairs(&b),
            Err(refused) => return refused,
        }
    } else {
        Vec::new()
    };
    match (request.method, request.path) {
        ("GET", CALLBACK_PATH) => return finish_sign_in(gateway, &request, &origin).await,
        ("GET", "/console/signin") => {
            return Answer::page(
                200,
                views::sign_in(gateway.config.console.as_ref(), return_to(&request), None),
            )
        }
        ("GET", "/console/login") => return start_sign_in(gateway, &request, &origin).await,
        ("POST", "/console/token") => {
            return token_sign_in(gateway, &request, &origin, &body).await
        }
        _ => {}
    }
    let operator = match operator(gateway, &request, &origin).await {
        Ok(Some(op)) => op,
        Ok(None) => {
            let back = match request.query.is_empty() {
                true => request.path.to_string(),
                false => format!(
                    "{}?{}",
                    request.path,
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(request.query.iter())
                        .finish()
                ),
            };
            let location = format!(
                "/console/signin?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("return", &back)
                    .finish()
            );
            return Answer::redirect(&location, Vec::new());
        }
        Err(refused) => return refused,
    };
    let csrf = gateway
        .auth
        .session_token(&operator.id, FORM_PURPOSE)
        .unwrap_or_default();
    if request.method == "POST" {
        if let Err(refused) = same_origin_form(&request, &origin, &body, &csrf) {
            return refused;
        }
    }
    if request.path == "/console/signout" && request.method == "POST" {
        return sign_out(gateway, &request, &origin, &operator).await;
    }
    let page = views::Frame {
        operator: if operator.by_token {
            "admin token".to_string()
        } else {
            operator.session.identity.display().into_owned()
        },
        csrf: csrf.clone(),
    };
    if !is_admin(gateway, &operator) {
        tracing::warn!(user = %operator.session.identity.display(), "console refused: not in the console's groups");
        let groups = gateway
            .config
            .console
            .as_ref()
            .map(|c| c.groups.join(", "))
            .unwrap_or_default();
        return Answer::page(403, views::not_an_operator(&page, &groups));
    }
    match (request.method, request.path) {
        ("GET", "/console" | "/console/") => overview(gateway, &page).await,
        ("GET", "/console/explain") => explain(gateway, &page, &request),
        ("GET", "/console/sessions") => sessions_page(gateway, &page, &request).await,
        ("POST", "/console/sessions/revoke") => revoke(gateway, &request, &operator, &body).await,
        ("GET", "/console/decisions") => decisions(gateway, &page, &request),
        ("GET", path) if path.starts_with("/console/apps/") => {
            let id = path.trim_start_matches("/console/apps/");
            match gateway.apps().iter().find(|a| a.config.id() == id) {
                Some(app) => Answer::page(200, views::app(&page, app, gateway.loaded_unix())),
                None => Answer::page(404, views::missing(&page, "No such app is serving.")),
            }
        }
        ("GET", _) => Answer::page(404, views::missing(&page, "The console has no such page.")),
        _ => Answer::notice(
            405,
            "Method not allowed",
            "The console does not take this method here.",
        ),
    }
}

/// The console's origin: the configured one (the browser must use it), or, with the admin
/// token only, the host the browser named.
fn origin_of(gateway: &Gateway, request: &Request<'_>) -> Result<Origin, Answer> {
    let host = request.header("host").unwrap_or_default();
    match &gateway.config.console {
        Some(console) => {
            if !host.eq_ignore_ascii_case(&console.authority) {
                return Err(Answer::page(421, views::elsewhere(&console.base())));
            }
            Ok(Origin {
                secure: console.secure,
                authority: console.authority.clone(),
            })
        }
        None => match crate::routing::normalise_host(host) {
            Some(_) => Ok(Origin {
                secure: false,
                authority: host.to_ascii_lowercase(),
            }),
            None => Err(Answer::notice(
                400,
                "Bad request",
                "The request names no valid host.",
            )),
        },
    }
}

async fn read_form(session: &mut ServerSession) -> Result<Bytes, Answer> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_FORM {
                    return Err(Answer::notice(
                        413,
                        "Request too large",
                        "The console's forms are small; this one was not.",
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Bytes::from(body)),
            Err(e) => {
                tracing::info!(error = %e, "console form not read");
                return Err(Answer::notice(
                    400,
                    "Bad request",
                    "The form could not be read.",
                ));
            }
        }
    }
}

/// Is a POST from the console's own page? Its `Origin` (browsers send one with every POST)
/// must be the console's, and its form token this session's.
fn same_origin_form(
    request: &Request<'_>,
    origin: &Origin,
    body: &[(String, String)],
    csrf: &str,
) -> Result<(), Answer> {
    let refused = || {
        tracing::warn!("console form refused: not from the console's page (CSRF check)");
        Answer::notice(
            403,
            "Form refused",
            "This form did not come from the console's own page, or it expired. Reload the page and try again.",
        )
    };
    if request
        .header("origin")
        .is_some_and(|o| !o.eq_ignore_ascii_case(&origin.base()))
    {
        return Err(refused());
    }
    if request
        .header("sec-fetch-site")
        .is_some_and(|s| s != "same-origin")
    {
        return Err(refused());
    }
    let presented = param(body, "csrf").unwrap_or_default();
    if csrf.is_empty()
        || presented.len() != csrf.len()
        || !openssl::memcmp::eq(presented.as_bytes(), csrf.as_bytes())
    {
        return Err(refused());
    }
    Ok(())
}

/// The console session the browser holds, if any.
async fn operator(
    gateway: &Gateway,
    request: &Request<'_>,
    origin: &Origin,
) -> Result<Option<Operator>, Answer> {
    let host = crate::routing::normalise_host(&origin.authority).unwrap_or_default();
    let limits = (
        gateway.config.sessions.idle,
        gateway.config.sessions.absolute,
    );
    let idps = gateway
        .config
        .console
        .as_ref()
        .map(|c| c.idp.as_str())
        .into_iter()
        .chain(std::iter::once(TOKEN_IDP));
    for idp in idps {
        let cookies = request.headers.get_all("cookie").iter();
        match gateway
            .auth
            .lookup(
                cookies,
                origin.secure,
                Scope { host: &host, idp },
                limits.0,
                limits.1,
            )
            .await
        {
            SessionLookup::Found { id, session } if &*session.app == CONSOLE_APP => {
                return Ok(Some(Operator {
                    id,
                    session,
                    by_token: idp == TOKEN_IDP,
                }))
            }
            SessionLookup::Found { .. } | SessionLookup::NotHere(_) => continue,
            SessionLookup::Unavailable(e) => {
                crate::metrics::login(
                    Some(idp),
                    "console",
                    crate::metrics::LoginOutcome::Failure,
                    "store",
                );
                tracing::warn!(error = %e, "console: session store unavailable");
                return Err(Answer::notice(
                    503,
                    "Session store unavailable",
                    "The session store does not answer, so the console cannot check who you are. Try again in a moment.",
                ));
            }
            SessionLookup::None | SessionLookup::Rejected(_) | SessionLookup::Expired(..) => {
                return Ok(None)
            }
        }
    }
    Ok(None)
}

fn is_admin(gateway: &Gateway, operator: &Operator) -> bool {
    if operator.by_token {
        return gateway.config.admin_token.is_some();
    }
    gateway.config.console.as_ref().is_some_and(|c| {
        *operator.session.identity.idp == *c.idp
            && operator
                .session
                .identity
                .groups
                .iter()
                .any(|g| c.groups.iter().any(|wanted| **g == **wanted))
    })
}

/// Where to go after signing in: a console page, nothing else.
fn return_to(request: &Request<'_>) -> String {
    let wanted = request.param("return").unwrap_or("/console/");
    let safe = crate::auth::safe_return_to(wanted);
    if safe == PREFIX || safe.starts_with("/console/") {
        safe
    } else {
        "/console/".to_string()
    }
}

fn within_limits(gateway: &Gateway, request: &Request<'_>, origin: &Origin) -> Result<(), Answer> {
    let host = crate::routing::normalise_host(&origin.authority).unwrap_or_default();
    gateway
        .login_limits
        .check(request.client_ip, &host, gateway.clock.now_unix())
        .map_err(|throttled| {
            crate::metrics::throttled(throttled.limit.as_str(), 1);
            if let Some(refused) = throttled.audit {
                audit::login_throttled(&request.audit(), throttled.limit.as_str(), refused);
            }
            let mut answer = Answer::notice(
                429,
                "Too many sign-in attempts",
                "There were too many sign-in attempts just now. Wait a minute, then try again.",
            );
            answer
                .headers
                .push(("Retry-After", throttled.retry_after_secs.to_string()));
            answer
        })
}

async fn start_sign_in(gateway: &Gateway, request: &Request<'_>, origin: &Origin) -> Answer {
    let Some(console) = &gateway.config.console else {
        return Answer::page(
            404,
            views::sign_in(
                None,
                return_to(request),
                Some("Single sign-on is not configured for the console; use the admin token."),
            ),
        );
    };
    if let Err(refused) = within_limits(gateway, request, origin) {
        return refused;
    }
    let Some(provider) = gateway
        .auth
        .provider(&console.idp)
        .filter(|p| p.is_available())
    else {
        return Answer::notice(
            503,
            "Sign-in temporarily unavailable",
            "The identity provider cannot be reached right now. Try again in a moment, or use the admin token.",
        );
    };
    match gateway
        .auth
        .start_login(provider, CONSOLE_APP, origin, &return_to(request), None)
        .await
    {
        Ok(redirect) => match redirect.to_idp {
            crate::idp::ToIdp::Redirect(location) => {
                let mut answer = Answer::redirect(&location, vec![redirect.cookie]);
                answer.status = 302;
                answer
            }
            // The console's pages run no script and post only to themselves.
            crate::idp::ToIdp::Post { .. } => Answer::notice(
                503,
                "Sign-in not available here",
                "This identity provider takes sign-in requests by HTTP-POST only, which the console does not send. Use the admin token, or a console IdP with the redirect binding.",
            ),
        },
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in not started");
            Answer::notice(
                503,
                "Sign-in temporarily unavailable",
                "The sign-in could not be started. Try again in a moment.",
            )
        }
    }
}

async fn finish_sign_in(gateway: &Gateway, request: &Request<'_>, origin: &Origin) -> Answer {
    if let Err(refused) = within_limits(gateway, request, origin) {
        return refused;
    }
    let cookies = request_cookies(request.headers.get_all("cookie").iter());
    let limits = (
        gateway.config.sessions.idle,
        gateway.config.sessions.absolute,
    );
    match gateway
        .auth
        .finish_login(&request.query, &cookies, origin, |_| limits)
        .await
    {
        Ok(signed_in) if &*signed_in.session.app == CONSOLE_APP => {
            let identity = &signed_in.session.identity;
            crate::metrics::login(
                Some(&identity.idp),
                "oidc",
                crate::metrics::LoginOutcome::Success,
                "-",
            );
            audit::login_succeeded(&request.audit(), identity);
            let target = if signed_in.return_to.starts_with("/console") {
                signed_in.return_to.clone()
            } else {
                "/console/".to_string()
            };
            Answer::redirect(&target, signed_in.cookies)
        }
        Ok(signed_in) => {
            // Cannot happen through the host check; refuse rather than keep a stray session.
            tracing::warn!(app = %signed_in.session.app, "console callback finished another app's login");
            Answer::notice(
                400,
                "Sign-in failed",
                "This sign-in was not started by the console.",
            )
        }
        Err((e, pending)) => {
            let idp = pending.as_ref().map(|p| p.idp.as_str());
            crate::metrics::login(idp, "oidc", crate::metrics::LoginOutcome::Failure, e.code());
            audit::login_failed(&request.audit(), idp, &e);
            tracing::info!(error = %e, "console sign-in failed");
            Answer::notice(
                400,
                "Sign-in failed",
                &format!("The sign-in could not be accepted ({}). Start again from the console's sign-in page.", e.code()),
            )
        }
    }
}

async fn token_sign_in(
    gateway: &Gateway,
    request: &Request<'_>,
    origin: &Origin,
    body: &[(String, String)],
) -> Answer {
    if let Err(refused) = within_limits(gateway, request, origin) {
        return refused;
    }
    if request
        .header("origin")
        .is_some_and(|o| !o.eq_ignore_ascii_case(&origin.base()))
    {
        return Answer::notice(
            403,
            "Form refused",
            "This form did not come from the console's own page.",
        );
    }
    let presented = param(body, "token").unwrap_or_default().trim();
    let matches = gateway
        .config
        .admin_token
        .as_ref()
        .is_some_and(|expected| sessions::token_matches(expected, presented));
    let back = param(body, "return").unwrap_or("/console/");
    if !matches {
        crate::metrics::login(
            Some(TOKEN_IDP),
            "token",
            crate::metrics::LoginOutcome::Failure,
            "wrong_token",
        );
        audit::login_failed(
            &request.audit(),
            Some(TOKEN_IDP),
            &"wrong admin token at the console",
        );
        return Answer::page(
            401,
            views::sign_in(
                gateway.config.console.as_ref(),
                back.to_string(),
                Some("That is not the admin token."),
            ),
        );
    }
    let identity = Identity {
        subject: TOKEN_IDP.to_string(),
        name: Some("admin token".to_string()),
        idp: Arc::from(TOKEN_IDP),
        ..Identity::default()
    };
    let Some(family) = SignInFamily::of(&identity, None, None) else {
        return Answer::notice(500, "Gateway error", "No randomness for a session.");
    };
    let limits = (
        gateway.config.sessions.idle,
        gateway.config.sessions.absolute,
    );
    match gateway
        .auth
        .sign_in(
            identity,
            LogoutHint::None,
            CONSOLE_APP,
            limits,
            origin,
            family,
            None,
        )
        .await
    {
        Ok((session, _, cookie)) => {
            crate::metrics::login(
                Some(TOKEN_IDP),
                "token",
                crate::metrics::LoginOutcome::Success,
                "-",
            );
            audit::login_succeeded(&request.audit(), &session.identity);
            let target = crate::auth::safe_return_to(back);
            let target = if target.starts_with("/console") {
                target
            } else {
                "/console/".to_string()
            };
            Answer::redirect(&target, vec![cookie])
        }
        Err(e) => {
            tracing::warn!(error = %e, "console token session not stored");
            Answer::notice(
                503,
                "Session store unavailable",
                "The session could not be stored. Try again in a moment.",
            )
        }
    }
}

async fn sign_out(
    gateway: &Gateway,
    request: &Request<'_>,
    origin: &Origin,
    operator: &Operator,
) -> Answer {
    if let Err(e) = gateway.auth.sessions.remove(&operator.id).await {
        tracing::warn!(error = %e, "console session not removed");
        return Answer::notice(
            503,
            "Sign-out not finished",
            "The session store does not answer; sign out again in a moment.",
        );
    }
    audit::logged_out(&request.audit(), Some(&operator.session.identity));
    Answer::redirect(
        "/console/signin",
        vec![
            clear_session_cookie(origin.secure),
            clear_id_token_cookie(origin.secure),
        ],
    )
}

async fn overview(gateway: &Gateway, page: &views::Frame) -> Answer {
    gateway.auth.sessions.run_maintenance().await;
    let reachable = gateway.auth.sessions.probe().await.is_ok();
    let mut idps: Vec<views::IdpState> = gateway
        .auth
        .providers()
        .map(|p| {
            let health = p.health();
            views::IdpState {
                name: p.name().to_string(),
                kind: p.kind(),
                loaded: health.was_loaded(),
                reachable: health.is_reachable(),
                last_error: health.last_error(),
                certificates: match p {
                    crate::auth::Provider::Saml(s) => s.signing_certificates(),
                    crate::auth::Provider::Oidc(_) => Vec::new(),
                },
            }
        })
        .collect();
    idps.sort_by(|a, b| a.name.cmp(&b.name));
    let store = gateway.auth.sessions.describe();
    let state = views::Overview {
        apps: gateway.apps(),
        broken: gateway
            .broken()
            .iter()
            .map(|b| {
                (
                    b.clone(),
                    gateway
                        .problems_in(&b.file)
                        .iter()
                        .map(|p| p.to_string())
                        .collect(),
                )
            })
            .collect(),
        loaded_unix: gateway.loaded_unix(),
        idps,
        store: format!(
            "{} ({})",
            store.kind,
            if reachable {
                "reachable"
            } else {
                "unreachable"
            }
        ),
        sessions_held: gateway.auth.sessions.held(),
        metrics: crate::metrics::summary(),
    };
    Answer::page(200, views::overview(page, &state))
}

fn explain(gateway: &Gateway, page: &views::Frame, request: &Request<'_>) -> Answer {
    let form = views::ExplainForm {
        app: request.param("app").unwrap_or_default().to_string(),
        user: request.param("user").unwrap_or_default().to_string(),
        method: request.param("method").unwrap_or("GET").to_string(),
        path: request.param("path").unwrap_or("/").to_string(),
        ip: request.param("ip").unwrap_or_default().to_string(),
    };
    let apps: Vec<&str> = gateway.apps().iter().map(|a| a.config.id()).collect();
    if form.app.is_empty() {
        return Answer::page(200, views::explain(page, &apps, &form, None));
    }
    let outcome = explain_one(gateway, &form);
    let status = if outcome.is_ok() { 200 } else { 400 };
    Answer::page(status, views::explain(page, &apps, &form, Some(outcome)))
}

/// The decision for the explain form's request, or what is wrong with the form.
fn explain_one(gateway: &Gateway, form: &views::ExplainForm) -> Result<views::Explained, String> {
    let app = gateway
        .apps()
        .iter()
        .find(|a| a.config.id() == form.app)
        .ok_or_else(|| format!("no app `{}` is serving", form.app))?;
    let method = http::Method::from_bytes(form.method.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{}` is not an HTTP method", form.method))?;
    let path = crate::policy::path::normalise(form.path.trim())
        .map_err(|e| format!("the gateway refuses this path before any rule (400): {e}"))?;
    let ip = match form.ip.trim() {
        "" => None,
        text => Some(
            text.parse::<IpAddr>()
                .map_err(|_| format!("`{text}` is not an IP address"))?,
        ),
    };
    let now = gateway.clock.now_unix();
    let user = match form.user.trim() {
        "" => None,
        text => Some(
            crate::config::app::example_user(&format!("user = {text}"), "console", now).map_err(
                |e| format!("user (the keys of a [[test]] user, as an inline table): {e}"),
            )?,
        ),
    };
    let facts = crate::policy::RequestFacts {
        method: &method,
        path: &path,
        client_ip: ip,
        now,
    };
    let user_facts = user.as_ref().map(examples::ExampleUser::facts);
    let rules = app.config.rules();
    let verdict = rules.evaluate(&facts, user_facts.as_ref());
    let rule_path = rules.rule_path(&path);
    let rule_facts = crate::policy::RequestFacts {
        path: &rule_path,
        ..facts
    };
    Ok(views::Explained {
        decision: examples::describe(&verdict.decision),
        reason: rules.reason(&verdict.decision, &facts, user_facts.as_ref()),
        user: user.as_ref().map_or_else(
            || "anonymous".to_string(),
            |u| u.identity.display().into_owned(),
        ),
        path: path.clone(),
        shadow: verdict
            .shadow
            .iter()
            .map(|h| format!("rule `{}` would {}", h.rule, h.would))
            .collect(),
        rules: rules
            .rules()
            .map(|rule| views::RuleChecks {
                table: rule.kind().table(),
                id: rule.id().to_string(),
                why: rule.why().to_string(),
                shadow: rule.mode() == crate::policy::Mode::Shadow,
                checks: rule
                    .checks(&rule_facts, user_facts.as_ref())
                    .into_iter()
                    .map(|c| (c.condition, c.held))
                    .collect(),
            })
            .collect(),
    })
}

async fn sessions_page(gateway: &Gateway, page: &views::Frame, request: &Request<'_>) -> Answer {
    let user = request.param("user").unwrap_or_default().trim().to_string();
    let revoked = request
        .param("revoked")
        .and_then(|n| n.parse::<usize>().ok());
    let which = if user.is_empty() {
        Selector::All
    } else {
        Selector::Email(user.clone())
    };
    match gateway.auth.sessions.select(&which).await {
        Ok(mut found) => {
            found.sort_by_key(|s| std::cmp::Reverse(s.last_seen_ms()));
            let total = found.len();
            found.truncate(MAX_ROWS);
            Answer::page(200, views::sessions(page, &user, &found, total, revoked))
        }
        Err(e) => {
            tracing::warn!(error = %e, "console: sessions not listed");
            Answer::notice(
                503,
                "Session store unavailable",
                "The session store does not answer. Try again in a moment.",
            )
        }
    }
}

async fn revoke(
    gateway: &Gateway,
    request: &Request<'_>,
    operator: &Operator,
    body: &[(String, String)],
) -> Answer {
    let field = |k: &str| param(body, k).map(str::trim).filter(|v| !v.is_empty());
    let which = match (field("idp"), field("subject"), field("user")) {
        (Some(idp), Some(subject), _) => Selector::Subject {
            idp: idp.to_string(),
            subject: subject.to_string(),
        },
        (None, None, Some(user)) => Selector::Email(user.to_string()),
        _ => {
            return Answer::notice(
                400,
                "Nothing to revoke",
                "Name a user, or one user at one IdP.",
            )
        }
    };
    match sessions::revoke_selected(
        gateway,
        &which,
        &operator.name(),
        request.client_ip,
        &request.request_id,
    )
    .await
    {
        Ok(ended) => {
            let back = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("user", field("back").unwrap_or_default())
                .append_pair("revoked", &ended.to_string())
                .finish();
            Answer::redirect(&format!("/console/sessions?{back}"), Vec::new())
        }
        Err(e) => {
            tracing::warn!(error = %e, "console: revoke failed");
            Answer::notice(
                503,
                "Session store unavailable",
                "Nothing was revoked: the session store does not answer. Try again in a moment.",
            )
        }
    }
}

fn decisions(gateway: &Gateway, page: &views::Frame, request: &Request<'_>) -> Answer {
    let app = request.param("app").unwrap_or_default().to_string();
    let outcome = request.param("outcome").unwrap_or_default().to_string();
    let list = audit::recent::recent(
        |d| (app.is_empty() || d.app == app) && (outcome.is_empty() || d.decision == outcome),
        MAX_ROWS,
    );
    let apps: Vec<&str> = gateway.apps().iter().map(|a| a.config.id()).collect();
    Answer::page(200, views::decisions(page, &apps, &app, &outcome, &list))
}
