//! The SAML endpoints on every app host: SP metadata, the assertion consumer service
//! (HTTP-POST) and single logout (HTTP-Redirect, and HTTP-POST from the IdP). Wiring between the
//! request and `auth`.

use super::ctx::{Action, RequestCtx, RequestError};
use crate::audit;
use crate::auth::{CallbackError, Origin, UnsolicitedTarget, LOGGED_OUT_PATH};
use crate::config::idp::IdpKind;
use crate::gateway::{AppRuntime, Gateway, Route};
use crate::idp::saml::{SamlError, SamlProvider};
use crate::pages::Page;
use crate::routing::normalise_host;
use crate::session::cookies::{clear_session_cookie, request_cookies};
use pingora::proxy::Session;
use std::sync::Arc;
use tracing::info;

/// Where an IdP-initiated login lands: the RelayState when it is a same-host relative path of
/// this very app that its policy lists (`idp_initiated_relay_state`), else `/`. (For an
/// SP-initiated login the RelayState is our own key, and this is not consulted.)
fn idp_initiated_landing(
    gateway: &Gateway,
    app: &AppRuntime,
    host: &str,
    relay: Option<&str>,
) -> String {
    let start = || "/".to_string();
    let Some(relay) = relay.filter(|r| r.starts_with('/')) else {
        return start();
    };
    // No scheme, no `//host`, no backslash, no control characters.
    if crate::auth::safe_return_to(relay) != relay {
        return start();
    }
    let path_part = relay.split(['?', '#']).next().unwrap_or_default();
    let Ok(path) = crate::policy::path::normalise(path_part) else {
        return start();
    };
    let rest = relay.get(path_part.len()..).unwrap_or_default();
    // Still this app, not a neighbour on the same host, and on its list.
    let same_app = matches!(
        gateway.route(host, &path),
        Some(Route::App(a)) if a.config.id() == app.config.id()
    );
    if same_app
        && app
            .config
            .idp_initiated_lands_on(&app.config.rules().rule_path(&path))
    {
        return format!("{path}{rest}");
    }
    info!(
        app = app.config.id(),
        "IdP-initiated RelayState not honoured: it is not a path this app lists; landing on /"
    );
    start()
}

/// The app on this host that signs in with a SAML IdP, and that IdP. Tried at the host root
/// first, then at each app's own path prefix (apps that share a host).
fn saml_app(
    gateway: &Gateway,
    origin: &Origin,
) -> Result<(Arc<AppRuntime>, Arc<SamlProvider>), RequestError> {
    let host = normalise_host(&origin.authority).ok_or(RequestError::BadHost)?;
    let candidates = std::iter::once("/".to_string()).chain(
        gateway
            .apps()
            .iter()
            .map(|a| format!("{}/", a.config.path_prefix())),
    );
    for path in candidates {
        if let Some(Route::App(app)) = gateway.route(&host, &path) {
            let provider = app
                .config
                .idp_ref()
                .filter(|idp| idp.kind() == IdpKind::Saml)
                .and_then(|idp| gateway.auth.saml_provider(idp.name()));
            if let Some(provider) = provider {
                return Ok((app.clone(), provider.clone()));
            }
        }
    }
    Err(RequestError::NoRoute)
}

/// `GET /.portcullis/saml/metadata`: this SP as the host's SAML IdP should know it.
pub async fn metadata(
    _session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    origin: &Origin,
) -> Result<Action, RequestError> {
    let (app, provider) = saml_app(gateway, origin)?;
    ctx.app = Some(app);
    let other_acs = if provider.shares_entity_id() {
        shared_acs_urls(gateway, provider.name(), origin)
    } else {
        Vec::new()
    };
    let body = provider
        .sp_metadata(&provider.endpoints(&origin.base()), &other_acs)
        .map_err(RequestError::Saml)?;
    Ok(Action::Xml { body })
}

/// One SP for many apps: the ACS URL of every app host that signs in with IdP `idp`, on the
/// scheme and port this request came in on (wildcard hosts have no one URL to list).
fn shared_acs_urls(gateway: &Gateway, idp: &str, origin: &Origin) -> Vec<String> {
    let scheme = if origin.secure { "https" } else { "http" };
    let port = origin
        .authority
        .rsplit_once(':')
        .filter(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(String::new(), |(_, port)| format!(":{port}"));
    let mut urls: Vec<String> = gateway
        .apps()
        .iter()
        .filter(|a| a.config.idp() == Some(idp))
        .flat_map(|a| a.config.hosts().iter())
        .filter_map(|h| match h {
            crate::config::HostPattern::Exact(host) => Some(format!(
                "{scheme}://{host}{port}{}",
                crate::idp::saml::ACS_PATH
            )),
            crate::config::HostPattern::Wildcard(_) => None,
        })
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

/// Reads a form body, refusing more than `limit` bytes before reading them all.
pub(super) async fn read_form(
    session: &mut Session,
    limit: usize,
) -> Result<Vec<(String, String)>, RequestError> {
    let body = read_body(
        session,
        limit,
        "application/x-www-form-urlencoded",
        "an HTML form post",
    )
    .await?;
    Ok(url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

/// Reads a request body of at most `limit` bytes whose `Content-Type` is `media_type`
/// (`what` names it in the refusal).
pub(super) async fn read_body(
    session: &mut Session,
    limit: usize,
    media_type: &str,
    what: &str,
) -> Result<Vec<u8>, RequestError> {
    let req = session.req_header();
    let content_type = req
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence != media_type {
        return Err(RequestError::BodyUnreadable(format!(
            "expected {what} ({media_type})"
        )));
    }
    let declared = req
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(RequestError::BodyTooLarge(limit));
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(RequestError::BodyTooLarge(limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(RequestError::BodyUnreadable(e.to_string())),
        }
    }
    Ok(body)
}

/// `POST /.portcullis/saml/acs`: verifies the response and signs the user in.
pub async fn acs(
    session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    origin: &Origin,
) -> Result<Action, RequestError> {
    super::login::within_login_limits(ctx, gateway)?;
    let (app, provider) = saml_app(gateway, origin)?;
    // Room for the form encoding around the base64 response itself.
    let limit = provider.max_response_bytes() * 3 / 2 + 4096;
    let form = match read_form(session, limit).await {
        Ok(form) => form,
        Err(e) => {
            audit::login_failed(&ctx.audit(app.config.id()), Some(provider.name()), &e);
            crate::metrics::login(
                Some(provider.name()),
                "saml",
                crate::metrics::LoginOutcome::Failure,
                "unreadable_form",
            );
            return Err(e);
        }
    };
    let cookies = request_cookies(session.req_header().headers.get_all("cookie").iter());
    let relay = form
        .iter()
        .find(|(k, _)| k == "RelayState")
        .map(|(_, v)| v.as_str());
    let target = UnsolicitedTarget {
        app: app.config.id().to_string(),
        idp: provider.name().to_string(),
        allowed: app.config.allow_idp_initiated(),
        landing: idp_initiated_landing(gateway, &app, &ctx.host, relay),
    };
    let limits = |app_id: &str| gateway.session_limits(app_id);
    match gateway
        .auth
        .finish_saml_login(&form, &cookies, origin, Some(target), limits)
        .await
    {
        Ok(signed_in) => {
            let app_id = signed_in.session.app.clone();
            ctx.span.record("app", &*app_id);
            audit::login_succeeded(&ctx.audit(&app_id), &signed_in.session.identity);
            super::login::login_counted(&signed_in, "saml");
            if let Some(rule) = &signed_in.stepped_up_for {
                audit::stepped_up(&ctx.audit(&app_id), &signed_in.session.identity, rule);
            }
            ctx.user = Some(signed_in.session);
            ctx.app = Some(app);
            Ok(Action::Redirect {
                location: signed_in.return_to,
                cookies: signed_in.cookies,
            })
        }
        Err((error, pending)) => {
            let app_id = pending.as_ref().map_or(app.config.id(), |p| p.app.as_str());
            audit::login_failed(&ctx.audit(app_id), Some(provider.name()), &error);
            crate::metrics::login(
                Some(provider.name()),
                "saml",
                crate::metrics::LoginOutcome::Failure,
                error.code(),
            );
            ctx.app = Some(app.clone());
            if let CallbackError::Saml(SamlError::Busy | SamlError::NotReady) = error {
                return Err(RequestError::SignInUnavailable(provider.name().to_string()));
            }
            Err(RequestError::LoginFailed(error))
        }
    }
}

/// `/.portcullis/saml/slo`: an IdP-initiated `LogoutRequest` (HTTP-Redirect or HTTP-POST,
/// signature required) ends the subject's sessions and is answered with a `LogoutResponse`; a
/// `LogoutResponse` (the end of our own logout) lands on the signed-out page.
pub async fn slo(
    session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    origin: &Origin,
) -> Result<Action, RequestError> {
    let (app, provider) = saml_app(gateway, origin)?;
    ctx.app = Some(app.clone());
    let sp = provider.endpoints(&origin.base());
    let posted = session.req_header().method == http::Method::POST;
    // A LogoutResponse as it came: the posted value, or the raw query (the redirect binding
    // signs the query octets).
    let (request, response) = if posted {
        let form = read_form(session, provider.max_response_bytes() * 3 / 2 + 4096).await?;
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let request = field("SAMLRequest").map(|r| (r, field("RelayState")));
        (request, field("SAMLResponse"))
    } else {
        let raw_query = session.req_header().uri.query().unwrap_or("").to_string();
        let has = |name: &str| {
            raw_query
                .split('&')
                .any(|p| p.split('=').next() == Some(name))
        };
        let request = has("SAMLRequest").then(|| (raw_query.clone(), None));
        (request, has("SAMLResponse").then(|| raw_query.clone()))
    };
    if let Some((message, relay)) = request {
        let verified = if posted {
            provider
                .verify_posted_logout_request(&message, relay, &sp)
                .await
        } else {
            provider.verify_logout_request(&message, &sp)
        };
        let logout = match verified {
            Ok(logout) => logout,
            Err(e) => {
                ctx.span.in_scope(
                    || info!(idp = provider.name(), reason = %e, "IdP-initiated logout refused"),
                );
                return Err(RequestError::LogoutRefused(e));
            }
        };
        let ended = gateway
            .auth
            .end_saml_sessions(&provider, &logout)
            .await
            .map_err(RequestError::StoreUnavailable)?;
        for s in &ended {
            audit::session_ended(&ctx.audit(&s.app), s, audit::SignInEnded::IdpLogout);
        }
        ctx.span.in_scope(|| {
            info!(
                idp = provider.name(),
                sessions = ended.len(),
                "IdP-initiated logout"
            )
        });
        let location = provider
            .logout_response_url(&sp, &logout)
            .unwrap_or_else(|| format!("{}{LOGGED_OUT_PATH}", origin.base()));
        return Ok(Action::Redirect {
            location,
            cookies: vec![clear_session_cookie(origin.secure)],
        });
    }
    if let Some(message) = response {
        // The gateway session already ended when the logout started; this says whether the
        // IdP ended its side too.
        let verified = if posted {
            provider.verify_posted_logout_response(&message, &sp).await
        } else {
            provider.verify_logout_response(&message, &sp).await
        };
        if let Err(e) = verified {
            audit::logout_unconfirmed(&ctx.audit(app.config.id()), provider.name(), &e);
            return Ok(Action::Page {
                page: Page::SignedOutUnconfirmed,
                cookies: vec![clear_session_cookie(origin.secure)],
            });
        }
        ctx.span
            .in_scope(|| info!(idp = provider.name(), "the IdP confirmed the logout"));
        let location = provider.post_logout_redirect_uri().map_or_else(
            || format!("{}{LOGGED_OUT_PATH}", origin.base()),
            str::to_string,
        );
        return Ok(Action::Redirect {
            location,
            cookies: Vec::new(),
        });
    }
    Err(RequestError::BodyUnreadable(
        "neither SAMLRequest nor SAMLResponse".into(),
    ))
}
