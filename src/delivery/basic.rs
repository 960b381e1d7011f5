//! HTTP Basic replay: the backend gets `Authorization: Basic` built from the user's stored
//! password (or the app's one service account). Built once per session and app, kept in the
//! backend jar; a `401` from the backend drops it and sends the user to store the current one.

use super::identity::{value_of, IdentitySource};
use super::vault::{enrollment_path, Credential};
use super::{DeliveryError, Outgoing, Prepared, Recipient, ResponseEdits, Services};
use base64::Engine;
use http::{HeaderValue, StatusCode};
use tracing::info;

/// How one app gets Basic credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct BasicReplay {
    /// Where the account name comes from: a session attribute, or (`None`) the vault entry.
    pub username: Option<IdentitySource>,
    /// One shared account for every user (apps with a single account), instead of the vault.
    pub service: Option<Credential>,
}

/// Adds `Authorization` for this user, or asks for the password when none is stored.
pub async fn prepare(
    basic: &BasicReplay,
    app: &str,
    who: &Recipient<'_>,
    services: &Services<'_>,
    out: &mut Outgoing,
) -> Result<Prepared, DeliveryError> {
    let jar = services.jars.for_session(&who.session, app);
    let mut held = jar.lock().await;
    if let Some(value) = held.authorization.clone() {
        drop(held);
        out.headers.push((http::header::AUTHORIZATION, value));
        out.jar = Some(jar);
        return Ok(Prepared::Send);
    }
    let Some(credential) = super::stored_credential(basic.service.as_ref(), app, who, services)?
    else {
        return super::enroll(app, who, false);
    };
    let username = match &basic.username {
        None => credential.username.clone(),
        Some(source) => value_of(source, who.identity, who.access_token).unwrap_or_default(),
    };
    let token = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{}", credential.password.expose()));
    let mut value = HeaderValue::try_from(format!("Basic {token}"))
        .map_err(|_| DeliveryError::UnsendableCredential)?;
    value.set_sensitive(true);
    held.authorization = Some(value.clone());
    drop(held);
    out.headers.push((http::header::AUTHORIZATION, value));
    out.jar = Some(jar);
    Ok(Prepared::Send)
}

/// The backend refused the password this request replayed: forget it, and send a page load
/// to the form. (A `401` to a request that carried no replayed password — a public path — is
/// the backend's own business.)
pub async fn upstream_response(
    basic: &BasicReplay,
    app: &str,
    out: &Outgoing,
    status: StatusCode,
    edits: &mut ResponseEdits,
) {
    let Some(jar) = &out.jar else {
        return;
    };
    if basic.service.is_some() || status != StatusCode::UNAUTHORIZED {
        return;
    }
    jar.lock().await.authorization = None;
    edits.drop_www_authenticate = true;
    // A browser's own sub-requests keep the 401 (without the backend's Basic challenge); only
    // pages go to the form.
    if out.navigation {
        edits.status = Some(302);
        edits.location = Some(format!("{}?failed=1", enrollment_path(app)));
        info!(
            app,
            "backend refused the replayed password: asking the user to update it"
        );
    }
}
