//! `[identity.kerberos]`: the backend gets `Authorization: Negotiate` with a service ticket
//! for the signed-in user, obtained by constrained delegation ([`crate::kerberos`]). The
//! user's password is never needed.

use super::identity::{value_of, IdentitySource};
use super::{DeliveryError, Outgoing, Prepared, Recipient, Services};
use crate::idp::loggable;
use crate::kerberos::KerberosError;
use http::HeaderValue;
use tracing::{info, warn};

/// How one app gets Kerberos tickets.
#[derive(Debug, Clone, PartialEq)]
pub struct KerberosDelivery {
    /// The app's service principal name, `HTTP/host`.
    pub spn: String,
    /// Where the user's principal comes from (the UPN claim, the email, a directory
    /// attribute…); its domain becomes the realm.
    pub principal: IdentitySource,
    /// That source as the policy wrote it (for messages).
    pub principal_from: String,
}

/// Adds `Authorization: Negotiate` for this user at the app's SPN.
pub async fn prepare(
    kerberos: &KerberosDelivery,
    app: &str,
    who: &Recipient<'_>,
    services: &Services<'_>,
    out: &mut Outgoing,
) -> Result<Prepared, DeliveryError> {
    let client = services.kerberos.ok_or(DeliveryError::NoKerberos)?;
    let started = std::time::Instant::now();
    let principal = value_of(&kerberos.principal, who.identity, who.access_token)
        .filter(|v| !v.is_empty())
        .map(|user| client.principal_for(&user));
    let result = match &principal {
        None => Err(KerberosError::NoPrincipal(kerberos.principal_from.clone())),
        Some(principal) => client.negotiate(principal, &kerberos.spn).await,
    };
    let outcome = result
        .as_ref()
        .map_or_else(KerberosError::outcome, |_| "ok");
    crate::metrics::kerberos_ticket(app, outcome, started.elapsed());
    let principal = principal.as_deref().map_or("-", |p| p);
    match result {
        Ok(ticket) => {
            if ticket.fresh {
                info!(target: "audit", event = "kerberos_ticket", outcome, app, user = %who.identity.display(), principal = %loggable(principal), spn = %kerberos.spn, request_id = %who.request_id, "Kerberos credential obtained for the user by constrained delegation");
            }
            let mut value = HeaderValue::try_from(ticket.authorization)
                .map_err(|_| DeliveryError::UnsendableCredential)?;
            value.set_sensitive(true);
            out.headers.push((http::header::AUTHORIZATION, value));
            Ok(Prepared::Send)
        }
        Err(e) => {
            warn!(target: "audit", event = "kerberos_ticket", outcome, reason = %e, app, user = %who.identity.display(), principal = %loggable(principal), spn = %kerberos.spn, request_id = %who.request_id, "no Kerberos ticket for the user");
            Err(DeliveryError::Kerberos(e))
        }
    }
}
