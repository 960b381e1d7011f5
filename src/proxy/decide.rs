//! Steps 5–7 of a request's journey: who is asking (an API caller's bearer token, else the
//! browser's session), the rules' decision and what follows from it (proxy with identity,
//! redirect to sign in, refuse), with its audit record.

use super::ctx::{Action, Outcome, RequestCtx, RequestError};
use super::login::{here, is_navigation, start_login};
use crate::audit;
use crate::auth::{Origin, SessionLookup};
use crate::config::AppConfig;
use crate::delivery::{Backend, Outgoing, Prepared, Reach, Recipient};
use crate::gateway::{AppRuntime, Gateway};
use crate::policy::{Decision, RequestFacts, UserFacts};
use crate::refresh::Refresh;
use crate::secret::Secret;
use crate::session::cookies::clear_session_cookie;
use crate::session::pending::StepUp;
use crate::session::Scope;
use crate::session::{LogoutHint, Session as UserSession, SessionId, SessionTokens, SignInFamily};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::sync::Arc;
use tracing::{info, Instrument};

/// Session, decision, action for a request to `app`.
pub async fn decide(
    session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    app: Arc<AppRuntime>,
    origin: Origin,
) -> Result<Action, RequestError> {
    let config = &app.config;
    let rule_path = config.rules().rule_path(&ctx.path);
    if config
        .logout_path()
        .is_some_and(|p| config.rules().rule_path(p) == rule_path)
    {
        // The gateway's logout endpoint does it: the browser sends the ID-token cookie only
        // there.
        return Ok(Action::redirect(crate::auth::LOGOUT_PATH));
    }
    // A bearer token, where the app reads one, stands for the caller; the browser's cookie
    // is then not consulted (one request, one identity).
    let bearer = match config.bearer().filter(|b| b.covers(&rule_path)) {
        Some(b) => crate::bearer::token_of(&session.req_header().headers)?
            .map(|token| (b, token.to_string())),
        None => None,
    };
    let store_trouble = match (bearer, config.idp()) {
        (Some((settings, token)), _) => {
            attach_bearer(ctx, gateway, config, settings, &token).await?;
            None
        }
        (None, Some(_)) => attach_session(session, ctx, gateway, config, &origin).await,
        (None, None) => None,
    };
    let req = session.req_header();
    if let (Some(mark), Some(user)) = (config.directory_required(), &ctx.user) {
        if user.identity.claims.iter().any(|(name, _)| name == mark) {
            return Err(RequestError::DirectoryUnavailable);
        }
    }
    if let Some(maintenance) = config.maintenance() {
        let admin = ctx
            .user
            .as_ref()
            .is_some_and(|u| maintenance.admits(&u.identity.groups));
        if !admin {
            return Ok(maintenance_page(req, ctx, config, maintenance));
        }
    }
    let facts = RequestFacts {
        method: &req.method,
        path: &ctx.path,
        client_ip: ctx.client_ip,
        now: gateway.clock.now_unix(),
    };
    let scopes = ctx.bearer.as_ref().map_or(&[][..], |b| &b.scopes);
    let user_facts = ctx.user.as_ref().map(|u| UserFacts {
        scopes,
        ..u.identity.facts()
    });
    let verdict = config.rules().evaluate(&facts, user_facts.as_ref());
    let decision = verdict.decision;
    ctx.outcome = Some(Outcome::of(&decision));
    if let Some(rule) = decision.rule() {
        ctx.span.record("rule", rule);
        ctx.rule = Some(rule.to_string());
    }
    crate::metrics::decision(
        config.id(),
        decision.rule(),
        Outcome::of(&decision).as_str(),
    );
    for hit in &verdict.shadow {
        crate::metrics::shadow(config.id(), hit.rule, hit.would);
        ctx.span.in_scope(|| {
            info!(
                rule = hit.rule,
                would = hit.would,
                decided = decision.name(),
                "shadow rule would {} this request",
                hit.would
            )
        });
    }
    // The record (and the reason it spells out) is only built when someone listens: the log
    // at info, or the audit file.
    if tracing::enabled!(target: "audit", tracing::Level::INFO) {
        let reason = config
            .rules()
            .reason(&decision, &facts, user_facts.as_ref());
        audit::access_decision(
            &ctx.audit(config.id()),
            &audit::AccessRecord {
                decision: Outcome::of(&decision),
                rule: decision.rule(),
                reason: &reason,
                shadow: &verdict.shadow,
                user: ctx.user.as_ref().map(|u| &u.identity),
                via: match (&ctx.bearer, &ctx.user) {
                    (Some(_), _) => "bearer",
                    (None, Some(_)) => "session",
                    (None, None) => "-",
                },
                client_id: ctx.bearer.as_ref().and_then(|b| b.client_id.as_deref()),
                method: req.method.as_str(),
                path: &ctx.path,
                policy_sha256: config.policy_sha256(),
            },
        );
    }
    // With the store down nobody can be recognised: public routes still serve (anonymously),
    // everything else gets the 503 page rather than a sign-in that cannot be kept.
    if let Some(trouble) = store_trouble {
        if !matches!(decision, Decision::Public { .. } | Decision::Allow { .. }) {
            return Err(match trouble {
                SessionTrouble::Store(e) => RequestError::StoreUnavailable(e),
                SessionTrouble::Idp(idp) => RequestError::SignInUnavailable(idp),
            });
        }
    }
    match decision {
        Decision::Public { adaptive, .. } => {
            if adaptive {
                deliver(req, ctx, gateway, config, Reach::IdentityOnly).await
            } else {
                Ok(Action::Proxy)
            }
        }
        Decision::Allow { .. } => deliver(req, ctx, gateway, config, Reach::Full).await,
        _ if ctx.bearer.is_some() && !decision.admits() => Err(bearer_refusal(
            config,
            &facts,
            user_facts.as_ref(),
            &decision,
        )),
        Decision::Deny { rule } | Decision::Unmet { rule } => Err(RequestError::Denied {
            outcome: Outcome::of(&decision),
            rule: rule.to_string(),
        }),
        Decision::StepUp { rule } => {
            let (Some(user), Some(required)) = (&ctx.user, config.rules().rule(rule)) else {
                ctx.outcome = Some(Outcome::StepUpRefused);
                return Err(RequestError::Denied {
                    outcome: Outcome::StepUpRefused,
                    rule: rule.to_string(),
                });
            };
            if !is_navigation(req) {
                return Err(RequestError::StepUpRequired);
            }
            let strength = required.strength();
            let step_up = StepUp {
                rule: rule.to_string(),
                subject: user.identity.subject.clone(),
                acr: strength.acr.clone(),
                amr: strength.amr.clone(),
                max_age: strength.max_age,
                started_unix: gateway.clock.now_unix(),
            };
            let return_to = here(req, &ctx.path);
            start_login(ctx, gateway, &app, &origin, &return_to, Some(step_up)).await
        }
        Decision::NoAllowMatched => Err(RequestError::NoAllowRule),
        Decision::LoginNeeded => {
            if !is_navigation(req) {
                return Err(RequestError::LoginRequired);
            }
            let return_to = here(req, &ctx.path);
            start_login(ctx, gateway, &app, &origin, &return_to, None).await
        }
    }
}

/// The app's maintenance page; an anonymous visitor of an app with administrators is offered
/// the sign-in that lets an administrator through.
fn maintenance_page(
    req: &RequestHeader,
    ctx: &RequestCtx,
    config: &AppConfig,
    maintenance: &crate::config::app::Maintenance,
) -> Action {
    ctx.span.in_scope(|| {
        info!(
            signed_in = ctx.user.is_some(),
            "app in maintenance: answered with the maintenance page"
        )
    });
    let sign_in =
        (ctx.user.is_none() && config.idp().is_some() && !maintenance.admin_groups.is_empty())
            .then(|| {
                let back: String =
                    url::form_urlencoded::byte_serialize(here(req, &ctx.path).as_bytes()).collect();
                format!("{}?return_to={back}", crate::auth::LOGIN_PATH)
            });
    Action::Maintenance {
        body: crate::pages::maintenance(
            maintenance.message.as_deref(),
            sign_in.as_deref(),
            &ctx.request_id,
        ),
        retry_after: maintenance.retry_after.map(|d| d.as_secs()),
    }
}

/// Why an API caller is refused: `insufficient_scope` (RFC 6750 §3.1) when the token would be
/// let in with the scopes the rules name, else the rule's refusal.
fn bearer_refusal(
    config: &AppConfig,
    facts: &RequestFacts<'_>,
    caller: Option<&UserFacts<'_>>,
    decision: &Decision<'_>,
) -> RequestError {
    let refused = match decision {
        Decision::Deny { rule } | Decision::Unmet { rule } => RequestError::Denied {
            outcome: Outcome::of(decision),
            rule: rule.to_string(),
        },
        _ => RequestError::NoAllowRule,
    };
    let Some(caller) = caller else {
        return refused;
    };
    let named: Vec<std::sync::Arc<str>> = crate::intern::intern_all(
        config
            .rules()
            .rules()
            .flat_map(|r| r.identity().scopes.iter()),
    );
    if named.is_empty() {
        return refused;
    }
    let with_every_scope = UserFacts {
        scopes: &named,
        ..*caller
    };
    let would = config.rules().decide(facts, Some(&with_every_scope));
    if !would.admits() {
        return refused;
    }
    // The scopes of the rules that would then decide, which the token lacks.
    let missing: Vec<String> = config
        .rules()
        .rules()
        .filter(|r| r.paths().is_empty() || r.paths().iter().any(|p| p.matches(facts.path)))
        .flat_map(|r| r.identity().scopes.iter())
        .filter(|s| !caller.scopes.iter().any(|have| **have == ***s))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    crate::bearer::BearerError::InsufficientScope(missing).into()
}

/// Runs the app's delivery steps for the signed-in user, if any: the request goes on to the
/// backend, or a step answers (the enrollment form, the app's start page).
async fn deliver(
    req: &RequestHeader,
    ctx: &mut RequestCtx,
    gateway: &Gateway,
    config: &AppConfig,
    reach: Reach,
) -> Result<Action, RequestError> {
    let (Some(user), Some(session)) = (ctx.user.clone(), ctx.session_id) else {
        return Ok(Action::Proxy);
    };
    if config.delivery().steps().is_empty() {
        return Ok(Action::Proxy);
    }
    let navigation = is_navigation(req);
    let return_to = here(req, &ctx.path);
    let backend = Backend {
        app: config.id(),
        target: config.upstreams().first(),
        tls: config.upstream_tls(),
        timeouts: &config.timeouts(),
        fold_case: config.case_insensitive_paths(),
    };
    let who = Recipient {
        identity: &user.identity,
        access_token: user.tokens.as_deref().map(|t| t.access.expose()),
        session,
        path: &ctx.path,
        here: &return_to,
        navigation,
        request_id: &ctx.request_id,
    };
    let mut out = Outgoing::for_request(navigation);
    let prepared = config
        .delivery()
        .prepare(
            reach,
            &backend,
            &who,
            &gateway.delivery_services(),
            &mut out,
        )
        .instrument(ctx.span.clone())
        .await?;
    ctx.delivery = out;
    match prepared {
        Prepared::Send => Ok(Action::Proxy),
        Prepared::Redirect(location) => Ok(Action::redirect(location)),
    }
}

/// Why nobody could be recognised: the store could not say, or the session's claims are
/// overdue and its IdP cannot refresh them now.
pub enum SessionTrouble {
    /// The session store did not answer.
    Store(crate::session::StoreError),
    /// The IdP could not refresh overdue claims.
    Idp(String),
}

/// Step 5, for an API caller: the bearer token must be valid for this app (else 401, or 503
/// while it cannot be checked); its identity then stands in for a session, for this request
/// only.
async fn attach_bearer(
    ctx: &mut RequestCtx,
    gateway: &Gateway,
    config: &AppConfig,
    settings: &crate::config::BearerConfig,
    token: &str,
) -> Result<(), RequestError> {
    use crate::bearer::BearerError;
    let outcome = match gateway.auth.provider(settings.idp()) {
        Some(crate::auth::Provider::Oidc(provider)) => {
            gateway
                .auth
                .bearer
                .authenticate(provider, settings, token, gateway.clock.now_unix())
                .instrument(ctx.span.clone())
                .await
        }
        _ => Err(BearerError::Unavailable(
            settings.idp().to_string(),
            "not an OpenID Connect IdP".into(),
        )),
    };
    let caller = match outcome {
        Ok(caller) => {
            crate::metrics::bearer(config.id(), "accepted");
            caller
        }
        Err(e) => {
            crate::metrics::bearer(config.id(), e.code());
            ctx.span
                .in_scope(|| info!(reason = %e, "bearer token refused"));
            audit::bearer_refused(&ctx.audit(config.id()), &e);
            return Err(e.into());
        }
    };
    let now_ms = gateway.clock.now_ms();
    let (Some(family), Some(id)) = (SignInFamily::random(), SessionId::random()) else {
        return Err(RequestError::Internal("no random bytes"));
    };
    let stand_in = UserSession::new(
        caller.identity.clone(),
        LogoutHint::None,
        config.id(),
        &ctx.host,
        family,
        (config.session_idle(), config.session_absolute()),
        now_ms,
    )
    .with_tokens(Some(SessionTokens {
        refresh: None,
        access: Secret::new(token),
        access_expires_ms: Some(caller.expires_unix.saturating_mul(1000)),
        refresh_due_ms: u64::MAX,
    }));
    ctx.user = Some(Arc::new(stand_in));
    ctx.session_id = Some(id);
    ctx.bearer = Some(caller);
    Ok(())
}

/// Step 5: the browser's session for this app, if any, its claims refreshed when due. A
/// cookie that names no usable session counts as none (logged, and deleted in the response);
/// expiry and refused refreshes are audited. Returns the trouble when nobody could be
/// recognised for want of the store or the IdP.
pub async fn attach_session(
    session: &Session,
    ctx: &mut RequestCtx,
    gateway: &Gateway,
    config: &AppConfig,
    origin: &Origin,
) -> Option<SessionTrouble> {
    let idp = config.idp()?;
    let scope = Scope {
        host: &ctx.host,
        idp,
    };
    let lookup = gateway
        .auth
        .lookup(
            session.req_header().headers.get_all("cookie").iter(),
            origin.secure,
            scope,
            config.session_idle(),
            config.session_absolute(),
        )
        .await;
    match lookup {
        SessionLookup::Found { id, session } => {
            match crate::refresh::if_due(&gateway.auth, &id, session).await {
                Refresh::Use(session) => {
                    ctx.user = Some(session);
                    ctx.session_id = Some(id);
                }
                // The IdP no longer vouches for the user: the request is anonymous.
                Refresh::Ended(ended, why) => {
                    ctx.span
                        .in_scope(|| info!(reason = %why, "session ended: refresh refused"));
                    ctx.clear_stale = Some(clear_session_cookie(origin.secure));
                    audit::session_ended(
                        &ctx.audit(config.id()),
                        &ended,
                        audit::SignInEnded::RefreshRefused,
                    );
                }
                Refresh::Unverifiable(why) => {
                    ctx.span.in_scope(|| {
                        tracing::warn!(reason = %why, "session claims overdue and not refreshable now")
                    });
                    return Some(SessionTrouble::Idp(idp.to_string()));
                }
            }
        }
        SessionLookup::None => {}
        // Valid elsewhere, not here: the request is anonymous for this app, and the cookie
        // stays (the app's own login replaces it).
        SessionLookup::NotHere(reason) => {
            ctx.span
                .in_scope(|| info!(reason, "session not valid for this app"));
        }
        SessionLookup::Rejected(reason) => {
            ctx.span
                .in_scope(|| info!(reason, "session cookie ignored"));
            ctx.clear_stale = Some(clear_session_cookie(origin.secure));
        }
        SessionLookup::Expired(ended, why) => {
            ctx.clear_stale = Some(clear_session_cookie(origin.secure));
            audit::session_expired(&ctx.audit(config.id()), &ended, why);
        }
        SessionLookup::Unavailable(e) => {
            ctx.span
                .in_scope(|| tracing::warn!(error = %e, "session store unavailable"));
            return Some(SessionTrouble::Store(e));
        }
    }
    None
}
