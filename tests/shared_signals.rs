//! Universal Logout and Shared Signals, end to end on one node with the embedded store: Global
//! Token Revocation requests signed with the real oidc-provider's key (as Okta signs them with
//! its org key), and CAEP security events pushed by the harness's transmitter (no real one
//! runs here; it signs with its own test key). Each ends exactly the sessions it names; every
//! forged, foreign, stale or replayed one is refused and changes nothing.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use serde_json::{json, Value};
use support::browser::Browser;
use support::idp::{IdpClient, TestIdp};
use support::ssf::Transmitter;
use support::{echo_backend, free_addr, Backend, GatewaySpec, RunningGateway};

const WIKI: &str = "wiki.localhost";
const TIMESHEET: &str = "timesheet.localhost";
const GTR: &str = "/.portcullis/global-token-revocation";
const EVENTS: &str = "/.portcullis/ssf/events";
const STREAM_AUDIENCE: &str = "https://portcullis.test/ssf";
const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";

struct Fixture {
    idp: TestIdp,
    transmitter: Transmitter,
    gw: RunningGateway,
    _backends: Vec<Backend>,
}

impl Fixture {
    fn gtr_audience(&self) -> String {
        format!("http://{}{GTR}", self.gw.http)
    }

    async fn signed_in(&self, user: &str) -> Browser {
        let browser = Browser::new(self.gw.http, &[WIKI, TIMESHEET]);
        let trip = browser
            .login(&self.gw.app_url(WIKI, "/"), user, &format!("{user}-pw"))
            .await;
        assert_eq!(trip.status, 200, "{user}: {trip:?}");
        browser
    }

    /// 200 while the browser's session is honoured at `host`, 302 once it must sign in.
    async fn status(&self, browser: &Browser, host: &str) -> u16 {
        browser
            .get(&self.gw.app_url(host, "/"))
            .await
            .status()
            .as_u16()
    }

    /// A revocation JWT signed with the IdP's key, claims changed by `change`.
    async fn revocation_jwt(&self, change: impl FnOnce(&mut Value)) -> String {
        let now = support::unix_now();
        let mut claims = json!({
            "iss": self.idp.issuer, "aud": self.gtr_audience(), "iat": now, "exp": now + 300,
            "jti": format!("gtr-{now}-{}", rand_suffix()), "sub": "okta-universal-logout",
        });
        change(&mut claims);
        self.idp
            .sign(json!({ "typ": "global-token-revocation+jwt" }), claims)
            .await
    }

    /// Posts a Global Token Revocation request as Okta would.
    async fn revoke(&self, token: Option<&str>, body: Value) -> u16 {
        let mut request = support::http_client()
            .post(format!("http://{}{GTR}", self.gw.http))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.send().await.unwrap().status().as_u16()
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(11);
    h.finish()
}

fn policy(app: &str, host: &str, upstream: &str) -> String {
    let head = support::policy_head(app, host, upstream, Some("corp"));
    format!(
        "{head}\n[identity.headers]\n\"X-Remote-User\" = \"email\"\n\
         [[allow]]\nid = \"everyone\"\nwhy = \"Every employee\"\nemail_domain = [\"corp.example\", \"contractors.corp.example\"]\n"
    )
}

async fn fixture() -> Fixture {
    let http = free_addr();
    let origins: Vec<String> = [WIKI, TIMESHEET]
        .iter()
        .map(|h| format!("http://{h}:{}", http.port()))
        .collect();
    let client = IdpClient::gateway("portcullis", &origins);
    let idp = TestIdp::start(std::slice::from_ref(&client)).await;
    let transmitter = Transmitter::start(&format!("http://{http}{EVENTS}"), STREAM_AUDIENCE).await;
    let signals = format!(
        "[idp.corp.universal_logout]\naudience = \"http://{http}{GTR}\"\n\
         [idp.corp.shared_signals]\nissuer = \"{}\"\njwks_uri = \"{}\"\naudience = \"{STREAM_AUDIENCE}\"\n",
        transmitter.issuer,
        transmitter.jwks_uri()
    );
    let wiki = echo_backend("wiki").await;
    let timesheet = echo_backend("timesheet").await;
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&idp.gateway_toml("corp", &client, &signals))
        .policy("wiki.toml", policy("wiki", WIKI, &wiki.url()))
        .policy(
            "timesheet.toml",
            policy("timesheet", TIMESHEET, &timesheet.url()),
        )
        .start()
        .await;
    Fixture {
        idp,
        transmitter,
        gw,
        _backends: vec![wiki, timesheet],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn universal_logout_ends_the_named_users_sessions_and_refuses_forgeries() {
    let f = fixture().await;
    let alice = f.signed_in("alice").await;
    // Single sign-on to a second app: alice holds two sessions.
    assert_eq!(
        alice.follow(&f.gw.app_url(TIMESHEET, "/")).await.status,
        200
    );
    let bob = f.signed_in("bob").await;
    let carol = f.signed_in("carol").await;

    let by_email = json!({ "sub_id": { "format": "email", "email": "Alice@corp.example" } });
    let now = support::unix_now();
    let unsigned = {
        use base64::Engine;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(&json!({ "alg": "none" })),
            b64(
                &json!({ "iss": f.idp.issuer, "aud": f.gtr_audience(), "iat": now, "jti": "none-1" })
            )
        )
    };
    let refused: Vec<(&str, Option<String>, Value, u16)> = vec![
        ("no Authorization", None, by_email.clone(), 401),
        ("unsigned", Some(unsigned), by_email.clone(), 401),
        (
            "another audience",
            Some(
                f.revocation_jwt(|c| c["aud"] = json!("https://elsewhere.example/gtr"))
                    .await,
            ),
            by_email.clone(),
            401,
        ),
        (
            "another issuer (signed with the IdP's key)",
            Some(
                f.revocation_jwt(|c| c["iss"] = json!("https://evil.example"))
                    .await,
            ),
            by_email.clone(),
            401,
        ),
        (
            "issued an hour ago",
            Some(f.revocation_jwt(|c| c["iat"] = json!(now - 3600)).await),
            by_email.clone(),
            401,
        ),
        (
            "a security event token",
            Some(f.revocation_jwt(|c| c["events"] = json!({ "x": {} })).await),
            by_email.clone(),
            401,
        ),
        (
            "a subject of another issuer",
            Some(f.revocation_jwt(|_| {}).await),
            json!({ "sub_id": { "format": "iss_sub", "iss": "https://evil.example", "sub": "alice" } }),
            400,
        ),
        (
            "an unsupported subject format",
            Some(f.revocation_jwt(|_| {}).await),
            json!({ "sub_id": { "format": "phone_number", "phone_number": "+1" } }),
            400,
        ),
        (
            "no sub_id",
            Some(f.revocation_jwt(|_| {}).await),
            json!({}),
            400,
        ),
    ];
    for (what, token, body, expected) in &refused {
        assert_eq!(
            f.revoke(token.as_deref(), body.clone()).await,
            *expected,
            "{what}"
        );
    }
    for (who, browser) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        assert_eq!(f.status(browser, WIKI).await, 200, "{who} still signed in");
    }

    // The genuine request ends both of alice's sessions; bob and carol keep theirs.
    let genuine = f.revocation_jwt(|_| {}).await;
    assert_eq!(f.revoke(Some(&genuine), by_email.clone()).await, 204);
    assert_eq!(f.status(&alice, WIKI).await, 302);
    assert_eq!(f.status(&alice, TIMESHEET).await, 302);
    assert_eq!(f.status(&bob, WIKI).await, 200);
    // The same JWT again is a replay.
    let bob_by_sub =
        json!({ "sub_id": { "format": "iss_sub", "iss": f.idp.issuer, "sub": "bob" } });
    assert_eq!(f.revoke(Some(&genuine), bob_by_sub.clone()).await, 400);
    assert_eq!(f.status(&bob, WIKI).await, 200);
    // Issuer and subject name bob.
    let fresh = f.revocation_jwt(|_| {}).await;
    assert_eq!(f.revoke(Some(&fresh), bob_by_sub).await, 204);
    assert_eq!(f.status(&bob, WIKI).await, 302);
    assert_eq!(f.status(&carol, WIKI).await, 200);
    let audit = f.gw.wait_for_log("reason=\"security_event\"").await;
    assert!(audit.contains("alice@corp.example"), "{audit}");
    f.gw.wait_for_log("event=\"signal_refused\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_security_events_end_sessions_and_forged_ones_are_refused() {
    let f = fixture().await;
    let alice = f.signed_in("alice").await;
    let bob = f.signed_in("bob").await;
    let carol = f.signed_in("carol").await;
    let event = |name: &str, payload: Value| json!({ format!("{CAEP}{name}"): payload });
    let revoke_alice = json!({
        "sub_id": { "format": "email", "email": "alice@corp.example" },
        "events": event("session-revoked", json!({ "event_timestamp": support::unix_now() })),
    });

    // Forged or foreign events change nothing.
    let refused: Vec<(&str, Value, Value, &str, &str)> = vec![
        (
            "unsigned",
            revoke_alice.clone(),
            json!({}),
            "none",
            "authentication_failed",
        ),
        (
            "signed by a key the transmitter never published",
            revoke_alice.clone(),
            json!({}),
            "stranger",
            "invalid_key",
        ),
        (
            "another audience",
            with(&revoke_alice, "aud", json!("https://elsewhere.example")),
            json!({}),
            "own",
            "invalid_audience",
        ),
        (
            "another issuer",
            with(&revoke_alice, "iss", json!("https://evil.example")),
            json!({}),
            "own",
            "invalid_issuer",
        ),
        (
            "issued two hours ago",
            with(&revoke_alice, "iat", json!(support::unix_now() - 7200)),
            json!({}),
            "own",
            "authentication_failed",
        ),
        (
            "no jti",
            with(&revoke_alice, "jti", Value::Null),
            json!({}),
            "own",
            "authentication_failed",
        ),
        (
            "not a security event (typ)",
            revoke_alice.clone(),
            json!({ "typ": "JWT" }),
            "own",
            "authentication_failed",
        ),
        (
            "no events",
            with(&revoke_alice, "events", json!({})),
            json!({}),
            "own",
            "authentication_failed",
        ),
    ];
    for (what, claims, header, key, code) in refused {
        let (status, body) = f.transmitter.push(claims, header, key).await;
        assert_eq!(status, 400, "{what}: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["err"], code, "{what}: {body}");
    }
    for (who, browser) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        assert_eq!(f.status(browser, WIKI).await, 200, "{who} still signed in");
    }

    // session-revoked (SSF: the subject at the top) ends alice's session; the same SET again
    // is a replay.
    let (status, body) = f.transmitter.push(revoke_alice, json!({}), "own").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(f.status(&alice, WIKI).await, 302);
    let (status, body) = f.transmitter.resend().await;
    assert_eq!(status, 400, "replay: {body}");
    assert!(body.contains("invalid_request"), "{body}");

    // credential-change by issuer and subject ends bob's.
    let (status, body) = f
        .transmitter
        .push(
            json!({
                "sub_id": { "format": "iss_sub", "iss": f.idp.issuer, "sub": "bob" },
                "events": event("credential-change", json!({ "credential_type": "password", "change_type": "update" })),
            }),
            json!({}),
            "own",
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(f.status(&bob, WIKI).await, 302);

    // A raised assurance level needs nothing; a lowered one (subject inside the event, as
    // earlier CAEP drafts put it) ends carol's session, so her next sign-in says the level
    // the IdP holds now.
    let carol_id = json!({ "format": "opaque", "id": "carol" });
    let (status, _) = f
        .transmitter
        .push(
            json!({ "sub_id": null, "events": event("assurance-level-change", json!({
                "subject": carol_id, "namespace": "RFC8176", "current_level": "mfa",
                "previous_level": "pwd", "change_direction": "increase" })) }),
            json!({}),
            "own",
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        f.status(&carol, WIKI).await,
        200,
        "an increase ends nothing"
    );
    let (status, _) = f
        .transmitter
        .push(
            json!({ "sub_id": null, "events": event("assurance-level-change", json!({
                "subject": carol_id, "namespace": "RFC8176", "current_level": "pwd",
                "previous_level": "mfa", "change_direction": "decrease" })) }),
            json!({}),
            "own",
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(f.status(&carol, WIKI).await, 302);

    // token-claims-change: the next page load signs in again and reads the claims anew.
    let (status, _) = f
        .transmitter
        .push(
            json!({
                "sub_id": { "format": "email", "email": "carol@contractors.corp.example" },
                "events": event("token-claims-change", json!({ "claims": { "groups": ["staff"] } })),
            }),
            json!({}),
            "own",
        )
        .await;
    assert_eq!(status, 202);
    let logs = f.gw.wait_for_log("event=token-claims-change").await;
    assert!(
        logs.contains("sessions=0"),
        "carol had no session left: {logs}"
    );

    // Not a SET at all.
    let wrong = support::http_client()
        .post(format!("http://{}{EVENTS}", f.gw.http))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
}

/// `claims` with `name` set to `value`.
fn with(claims: &Value, name: &str, value: Value) -> Value {
    let mut out = claims.clone();
    out[name] = value;
    out
}
