//! Form-fill: logging a user in to a backend's own login form, server-side, with the password
//! from the vault — so the browser never sees the form, the password or the backend's cookie.
//!
//! `login` does one login: GET the login page (keeping its cookies, scraping its CSRF token),
//! POST the fields, and judge the answer (a redirect away from the login page, or the
//! configured success cookie). [`prepare`] decides when (first use, or after the backend logged
//! the user out); the per-session jar lives in `jars`.

use super::jars::BackendJar;
use super::{Backend, DeliveryError, Outgoing, Prepared, Recipient, ResponseEdits, Services};
use crate::secret::Secret;
use crate::upstream::{UpstreamTarget, UpstreamTimeouts, UpstreamTls};
use http::{HeaderMap, StatusCode};
use std::time::{Duration, Instant};
use thiserror::Error;
use tracing::info;

/// How to log in to one app's form.
#[derive(Debug, Clone, PartialEq)]
pub struct FormFill {
    /// Path of the backend's login page (the form is fetched and posted there).
    pub login_url: String,
    /// Form field for the account name.
    pub username_field: String,
    /// Form field for the password.
    pub password_field: String,
    /// Hidden input holding the page's CSRF token, sent back with the form.
    pub csrf_field: Option<String>,
    /// Fixed extra fields.
    pub extra_fields: Vec<(String, String)>,
    /// A cookie whose appearance means success (else: a redirect away from the login page).
    pub success_cookie: Option<String>,
    /// A status of the login POST that means success (for apps that answer 200 on success).
    pub success_status: Option<u16>,
    /// Text in a backend page that means "you are logged out" (besides a redirect to the
    /// login page): the next request logs in again.
    pub logged_out_marker: Option<String>,
    /// Where the account name comes from: a session attribute, or (`None`) the vault entry.
    pub username: Option<super::identity::IdentitySource>,
    /// One shared account for every user (apps with a single account), instead of the vault.
    pub service: Option<super::vault::Credential>,
}

/// Why a form login did not work.
#[derive(Debug, Error)]
pub enum FormFillError {
    /// The backend could not be reached or answered strangely.
    #[error("backend login failed: {0}")]
    Backend(String),
    /// The backend refused the credentials (it showed its form again).
    #[error("the backend refused the stored credentials")]
    Refused,
}

/// Is `location` (absolute or relative) the login page?
pub fn points_at_login(location: &str, login_url: &str) -> bool {
    let path = match url::Url::parse(location) {
        Ok(u) => u.path().to_string(),
        Err(_) => location.split(['?', '#']).next().unwrap_or("").to_string(),
    };
    path == login_url
}

/// The value of the hidden input `field` in `html` (attribute order and quoting vary).
fn scrape(html: &str, field: &str) -> Option<String> {
    let escaped = regex::escape(field);
    let name = format!(r#"name\s*=\s*["']?{escaped}["']?(?:[\s/>]|$)"#);
    let value = r#"value\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))"#;
    for tag in html
        .split('<')
        .filter(|t| t.starts_with("input") || t.starts_with("INPUT"))
    {
        let tag = tag.split('>').next().unwrap_or("");
        if regex::Regex::new(&name).ok()?.is_match(tag) {
            let caps = regex::Regex::new(value).ok()?.captures(tag)?;
            return caps
                .get(1)
                .or_else(|| caps.get(2))
                .or_else(|| caps.get(3))
                .map(|m| m.as_str().replace("&amp;", "&"));
        }
    }
    None
}

/// The client for one app's backend, with exactly the proxy's upstream settings: the resolved
/// address (no DNS), the TLS server name, the app's CA (instead of the system store) or no
/// verification when the app turned it off, its timeouts, and no redirects. Returns the client
/// and the URL of `path` on that backend.
fn backend_client(
    target: &UpstreamTarget,
    tls: &UpstreamTls,
    timeouts: &UpstreamTimeouts,
    path: &str,
) -> Result<(reqwest::Client, String), FormFillError> {
    let fail = |e: reqwest::Error| FormFillError::Backend(e.to_string());
    // Over TLS the URL names the certificate's host (SNI and verification); in clear, the
    // host of the upstream URL.
    let host = if target.tls {
        target.sni.clone()
    } else {
        target
            .host_header
            .rsplit_once(':')
            .map_or(target.host_header.as_str(), |(h, _)| h)
            .to_string()
    };
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeouts.connect)
        .timeout(
            timeouts
                .read
                .min(Duration::from_secs(60))
                .max(timeouts.connect),
        )
        .resolve(&host, target.addr);
    if target.tls {
        if !tls.verify {
            builder = builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        } else if let Some(cas) = &tls.ca {
            let mut certs = Vec::new();
            for ca in cas {
                let pem = ca
                    .to_pem()
                    .map_err(|e| FormFillError::Backend(format!("upstream CA: {e}")))?;
                certs.push(reqwest::Certificate::from_pem(&pem).map_err(fail)?);
            }
            builder = builder.tls_certs_only(certs);
        }
        if let Some((chain, key)) = &tls.client_pem {
            let identity = reqwest::Identity::from_pkcs8_pem(chain, key.expose()).map_err(fail)?;
            builder = builder.identity(identity);
        }
        if tls.min_version.is_some() {
            builder = builder.min_tls_version(match tls.min_version {
                Some(crate::upstream::TlsVersion::V1_3) => reqwest::tls::Version::TLS_1_3,
                _ => reqwest::tls::Version::TLS_1_2,
            });
        }
    }
    let client = builder.build().map_err(fail)?;
    let scheme = if target.tls { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{}{path}", target.addr.port());
    Ok((client, url))
}

/// Logs in to `target` with `username`/`password`, filling `jar` with the backend's cookies.
/// `tls` and `timeouts` are the app's upstream settings, the same the proxy uses.
pub async fn login(
    target: &UpstreamTarget,
    tls: &UpstreamTls,
    timeouts: &UpstreamTimeouts,
    form: &FormFill,
    username: &str,
    password: &Secret,
    jar: &mut BackendJar,
) -> Result<(), FormFillError> {
    let fail = |e: reqwest::Error| FormFillError::Backend(crate::idp::error_chain(&e));
    let (client, url) = backend_client(target, tls, timeouts, &form.login_url)?;
    jar.reset();
    let cookie_header = |jar: &BackendJar| {
        jar.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let page = client
        .get(&url)
        .header("host", &target.host_header)
        .send()
        .await
        .map_err(fail)?;
    for c in page.headers().get_all("set-cookie") {
        if let Ok(text) = c.to_str() {
            jar.apply_set_cookie(text);
        }
    }
    let html = page.text().await.map_err(fail)?;
    let mut fields: Vec<(String, String)> = form.extra_fields.clone();
    if let Some(csrf) = &form.csrf_field {
        let token = scrape(&html, csrf).ok_or_else(|| {
            FormFillError::Backend(format!("no `{csrf}` field on the login page"))
        })?;
        fields.push((csrf.clone(), token));
    }
    fields.push((form.username_field.clone(), username.to_string()));
    fields.push((form.password_field.clone(), password.expose().to_string()));
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&fields)
        .finish();
    let answer = client
        .post(&url)
        .header("host", &target.host_header)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookie_header(jar))
        .body(body)
        .send()
        .await
        .map_err(fail)?;
    let mut got_success_cookie = false;
    for c in answer.headers().get_all("set-cookie") {
        if let Ok(text) = c.to_str() {
            if let Some(name) = &form.success_cookie {
                got_success_cookie |= text.trim_start().starts_with(&format!("{name}="));
            }
            jar.apply_set_cookie(text);
        }
    }
    let redirected_away = answer.status().is_redirection()
        && answer
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .is_some_and(|l| !points_at_login(l, &form.login_url));
    let ok = match (&form.success_cookie, form.success_status) {
        (Some(_), _) => got_success_cookie,
        (None, Some(status)) => answer.status().as_u16() == status,
        (None, None) => redirected_away,
    };
    if !ok {
        jar.reset();
        return Err(FormFillError::Refused);
    }
    jar.logged_in = true;
    jar.last_login = Some(Instant::now());
    Ok(())
}

/// Makes sure the gateway is logged in to the backend for this user (once, even for
/// concurrent first requests: the jar's lock is held across the login) and sends the
/// backend's cookies. Answers instead with the enrollment form (no password stored, or the
/// backend refused it) or with the start page (the backend's own login page is never needed
/// once the gateway is logged in).
pub async fn prepare(
    form: &FormFill,
    backend: &Backend<'_>,
    who: &Recipient<'_>,
    services: &Services<'_>,
    out: &mut Outgoing,
) -> Result<Prepared, DeliveryError> {
    let jar = services.jars.for_session(&who.session, backend.app);
    let mut held = jar.lock().await;
    if !held.logged_in {
        let Some(credential) =
            super::stored_credential(form.service.as_ref(), backend.app, who, services)?
        else {
            return super::enroll(backend.app, who, false);
        };
        let username = match &form.username {
            None => credential.username.clone(),
            Some(source) => super::identity::value_of(source, who.identity, who.access_token)
                .unwrap_or_default(),
        };
        let target = backend.target.ok_or(DeliveryError::NoUpstream)?;
        match login(
            target,
            backend.tls,
            backend.timeouts,
            form,
            &username,
            &credential.password,
            &mut held,
        )
        .await
        {
            Ok(()) => {
                info!(target: "audit", event = "backend_login", app = %backend.app, user = %who.identity.display(), request_id = %who.request_id, "form-fill login to the backend")
            }
            Err(FormFillError::Refused) if form.service.is_some() => {
                return Err(DeliveryError::ServiceAccountRefused);
            }
            Err(FormFillError::Refused) => {
                info!(app = %backend.app, "backend refused the stored credentials");
                return super::enroll(backend.app, who, true);
            }
            Err(e) => return Err(DeliveryError::BackendLogin(e)),
        }
    }
    if backend.same_path(who.path, &form.login_url) {
        return Ok(Prepared::Redirect("/".to_string()));
    }
    out.strip_cookie_keys.extend(
        held.cookies
            .iter()
            .map(|(n, _)| crate::session::cookies::cookie_name_key(n)),
    );
    out.cookies.extend(held.cookies.iter().cloned());
    drop(held);
    out.jar = Some(jar);
    out.retry_target = who.here.to_string();
    Ok(Prepared::Send)
}

/// The backend's cookies stay in the gateway's jar and never reach the browser; a redirect to
/// its login page means it logged the user out: the browser retries where it was, and the
/// gateway logs in again (unless it just did, so a backend that never accepts the login
/// cannot loop).
pub async fn upstream_response(
    form: &FormFill,
    out: &Outgoing,
    status: StatusCode,
    headers: &HeaderMap,
    edits: &mut ResponseEdits,
) {
    let Some(jar) = &out.jar else {
        return;
    };
    let mut held = jar.lock().await;
    for value in headers.get_all("set-cookie") {
        if let Ok(text) = value.to_str() {
            held.apply_set_cookie(text);
        }
    }
    edits.drop_set_cookie = true;
    let to_login = status.is_redirection()
        && headers
            .get("location")
            .and_then(|l| l.to_str().ok())
            .is_some_and(|l| points_at_login(l, &form.login_url));
    if to_login {
        let just_logged_in = held
            .last_login
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5));
        held.reset();
        if !just_logged_in {
            edits.location = Some(out.retry_target.clone());
            info!("backend session ended: logging in again on the next request");
        }
    }
}

/// A page saying "you are logged out" means the backend session is gone; the next request
/// logs in again. The marker may straddle two chunks, so a short tail is kept.
pub fn response_body(form: &FormFill, out: &mut Outgoing, chunk: &[u8]) {
    let (Some(marker), Some(jar)) = (&form.logged_out_marker, &out.jar) else {
        return;
    };
    let mut window = std::mem::take(&mut out.body_tail);
    window.extend_from_slice(chunk);
    if window.windows(marker.len()).any(|w| w == marker.as_bytes()) {
        if let Ok(mut held) = jar.try_lock() {
            held.reset();
        }
        info!("backend page says the user is logged out: logging in again on the next request");
    }
    let keep = marker.len().saturating_sub(1).min(window.len());
    out.body_tail = window.split_off(window.len() - keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_are_found_however_the_tag_is_written() {
        for html in [
            r#"<form><input type=hidden name=csrf_token value="abc123"></form>"#,
            r#"<input name="csrf_token" type="hidden" value='abc123'/>"#,
            r#"<INPUT value="abc123" name="csrf_token">"#,
            r#"<input type="hidden" name="csrf_token" value=abc123>"#,
        ] {
            assert_eq!(
                scrape(html, "csrf_token").as_deref(),
                Some("abc123"),
                "{html}"
            );
        }
        assert_eq!(
            scrape(r#"<input name="csrf_token_2" value="x">"#, "csrf_token"),
            None
        );
    }

    #[test]
    fn login_redirects_are_recognised() {
        assert!(points_at_login("/login", "/login"));
        assert!(points_at_login("/login?next=/x", "/login"));
        assert!(points_at_login("http://app.internal:8080/login", "/login"));
        assert!(!points_at_login("/", "/login"));
        assert!(!points_at_login("/login/help", "/login"));
    }
}
