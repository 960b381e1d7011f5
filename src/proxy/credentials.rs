//! The credential enrollment page, `/.portcullis/credentials/<app>`: a signed-in user stores or
//! updates the password the gateway replays to that app (HTTP Basic, form-fill). The form is
//! CSRF-protected by a token derived from the user's session (the same for as long as the
//! session lives, so no other request — a favicon, a second tab — can rotate it under the
//! visible form) and a same-origin check; the password is written to the vault and never shown
//! again.

use super::ctx::{Action, RequestCtx, RequestError};
use super::login::{is_navigation, start_login};
use crate::auth::{safe_return_to, Origin};
use crate::delivery::vault::{enrollment_path, user_key, Credential, ENROLL_PREFIX};
use crate::gateway::{Gateway, Route};
use crate::routing::normalise_host;
use crate::secret::Secret;
use pingora::proxy::Session;
use std::sync::Arc;
use tracing::info;

const MAX_FORM: usize = 16 * 1024;

/// GET shows the form, POST stores the credential.
pub async fn serve(
    session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    origin: &Origin,
) -> Result<Action, RequestError> {
    let app_id = ctx
        .path
        .strip_prefix(ENROLL_PREFIX)
        .unwrap_or("")
        .to_string();
    let host = normalise_host(&origin.authority).ok_or(RequestError::BadHost)?;
    // The app must live on this host and replay credentials.
    let app = gateway
        .apps()
        .iter()
        .find(|a| a.config.id() == app_id && a.config.delivery().replays_credentials())
        .filter(|a| {
            matches!(gateway.route(&host, &format!("{}/", a.config.path_prefix())), Some(Route::App(r)) if r.config.id() == a.config.id())
        })
        .cloned()
        .ok_or(RequestError::NoRoute)?;
    let vault = gateway.vault.clone().ok_or(RequestError::NoRoute)?;
    super::decide::attach_session(session, ctx, gateway, &app.config, origin).await;
    ctx.app = Some(app.clone());
    let query: Vec<(String, String)> = session
        .req_header()
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(user) = ctx.user.clone() else {
        if !is_navigation(session.req_header()) {
            return Err(RequestError::LoginRequired);
        }
        let here = format!(
            "{}?return_to={}",
            enrollment_path(&app_id),
            url::form_urlencoded::byte_serialize(
                param("return_to").unwrap_or_else(|| "/".into()).as_bytes()
            )
            .collect::<String>()
        );
        return start_login(ctx, gateway, &app, origin, &here, None).await;
    };
    let asks_username = app.config.delivery().asks_username();
    let session_id = ctx.session_id.ok_or(RequestError::Internal(
        "a signed-in request without its session id",
    ))?;
    let token = gateway
        .auth
        .session_token(&session_id, &format!("credentials:{app_id}"))
        .ok_or(RequestError::Internal("no form token (no randomness)"))?;
    if session.req_header().method == http::Method::POST {
        let form = super::saml::read_form(session, MAX_FORM).await?;
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let same_origin = session
            .req_header()
            .headers
            .get("origin")
            .and_then(|o| o.to_str().ok())
            .is_none_or(|o| o == origin.base());
        if !same_origin {
            ctx.span.in_scope(
                || info!(app = %app_id, "credential form refused: posted from another origin"),
            );
            return Err(RequestError::FormExpired);
        }
        let sent = field("csrf").unwrap_or_default();
        // Compared in constant time (openssl::memcmp::eq needs equal lengths).
        if sent.len() != token.len() || !openssl::memcmp::eq(sent.as_bytes(), token.as_bytes()) {
            ctx.span.in_scope(
                || info!(app = %app_id, "credential form refused: token not of this session"),
            );
            return Err(RequestError::FormExpired);
        }
        let password = field("password").filter(|p| !p.is_empty() && p.len() <= 1024);
        let username = if asks_username {
            field("username").filter(|u| !u.is_empty() && u.len() <= 256 && !u.contains(':'))
        } else {
            Some(String::new())
        };
        let (Some(password), Some(username)) = (password, username) else {
            return Err(RequestError::FormIncomplete(
                "user name and password are required",
            ));
        };
        vault
            .put(
                &app_id,
                &user_key(&user.identity),
                &Credential {
                    username,
                    password: Secret::new(password),
                },
            )
            .map_err(RequestError::CredentialNotStored)?;
        // Credentials cached for this session were built from the old password.
        if let Some(jar) = gateway.jars.existing(&session_id, &app_id) {
            jar.lock().await.authorization = None;
        }
        ctx.span.in_scope(|| info!(target: "audit", event = "credential_stored", app = %app_id, user = %user.identity.display(), request_id = %ctx.request_id, "credential stored"));
        return Ok(Action::Redirect {
            location: safe_return_to(&field("return_to").unwrap_or_else(|| "/".into())),
            cookies: Vec::new(),
        });
    }
    let failed = param("failed").is_some();
    let return_to = safe_return_to(&param("return_to").unwrap_or_else(|| "/".into()));
    let form = crate::pages::CredentialForm {
        app: &app_id,
        summary: app.config.summary(),
        action: &enrollment_path(&app_id),
        asks_username,
        failed,
        csrf: &token,
        return_to: &return_to,
        signed_in_as: &user.identity.display(),
    };
    Ok(Action::Html {
        body: form.render(&ctx.request_id),
        cookies: Vec::new(),
    })
}
