//! SAML 2.0 login end to end: the real gateway as SP, a real SAML IdP (samlify on Node), real
//! echo backends, and a headless browser that follows every redirect and auto-POST.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use serde_json::json;
use support::browser::{query_param, Browser};
use support::saml_idp::TestSamlIdp;
use support::{echo_backend, free_addr, header_values, Backend, GatewaySpec, RunningGateway};

const WIKI: &str = "wiki.localhost";
const LEGACY: &str = "legacy.localhost";

struct Fixture {
    idp: TestSamlIdp,
    gw: RunningGateway,
    wiki: Backend,
    legacy: Backend,
}

impl Fixture {
    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.gw.http.port())
    }
    fn acs(&self, host: &str) -> String {
        self.url(host, "/.portcullis/saml/acs")
    }
    fn sp_entity(&self, host: &str) -> String {
        self.url(host, "/.portcullis/saml/metadata")
    }
    fn browser(&self) -> Browser {
        Browser::new(self.gw.http, &[WIKI, LEGACY])
    }
    /// A browser in which `user` signed in to the wiki.
    async fn signed_in(&self, user: &str) -> Browser {
        let browser = self.browser();
        let trip = browser
            .saml_login(&self.url(WIKI, "/"), user, &format!("{user}-pw"))
            .await;
        assert_eq!(trip.status, 200, "{user} could not sign in: {trip:?}");
        browser
    }
    /// A response for alice forged (and signed) by the IdP's test hook, aimed at the wiki.
    async fn forge(&self, overrides: serde_json::Value) -> (String, String) {
        let mut o = json!({ "sp": self.sp_entity(WIKI), "user": "alice" });
        for (k, v) in overrides.as_object().unwrap() {
            o[k] = v.clone();
        }
        self.idp.forge(o).await
    }
}

fn policy(app: &str, host: &str, upstream: &str, extra: &str) -> String {
    format!(
        r#"schema = 1
app = "{app}"
owner = "it@corp.example"
summary = "test app behind SAML"
hosts = ["{host}"]
upstreams = [{{ url = "{upstream}" }}]
idp = "corp-saml"
logout_path = "/logout"
{extra}
[identity.headers]
"X-Remote-User" = "email"
"X-Remote-Name" = "name"
"X-Groups" = {{ claim = "groups", join = "," }}
"X-First-Name" = "firstName"

[[allow]]
id = "staff"
why = "Staff use it daily"
groups = ["staff"]

[[deny]]
id = "no-contractors"
why = "Contractors never see it"
email_domain = ["contractors.corp.example"]
"#
    )
}

async fn fixture() -> Fixture {
    fixture_with(json!({}), "").await
}

/// `idp_options` go to the IdP's config; `idp_extra` into the gateway's `[idp.corp-saml]`.
async fn fixture_with(idp_options: serde_json::Value, idp_extra: &str) -> Fixture {
    let http = free_addr();
    let sp_metadata: Vec<String> = [WIKI, LEGACY]
        .iter()
        .map(|h| format!("http://{h}:{}/.portcullis/saml/metadata", http.port()))
        .collect();
    let idp = TestSamlIdp::start_with(&sp_metadata, idp_options).await;
    let wiki = echo_backend("wiki").await;
    let legacy = echo_backend("legacy").await;
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&idp.gateway_toml(
            "corp-saml",
            &format!("attributes = [\"firstName\"]\n{idp_extra}"),
        ))
        .policy("wiki.toml", policy("wiki", WIKI, &wiki.url(), ""))
        .policy(
            "legacy.toml",
            policy(
                "legacy",
                LEGACY,
                &legacy.url(),
                "allow_idp_initiated = true",
            ),
        )
        .start()
        .await;
    // Metadata loads in the background: wait until a protected page redirects to the IdP.
    let browser = Browser::new(gw.http, &[WIKI]);
    let url = format!("http://{WIKI}:{}/", gw.http.port());
    for _ in 0..200 {
        if browser.get(&url).await.status() == 302 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Fixture {
        idp,
        gw,
        wiki,
        legacy,
    }
}

#[tokio::test]
async fn sp_initiated_login_lands_on_the_deep_link_with_identity_headers() {
    let f = fixture().await;
    let browser = f.browser();
    let deep = f.url(WIKI, "/pages/Quarterly%20Plan?rev=3");
    let first = browser.get(&deep).await;
    assert_eq!(first.status(), 302);
    let to_idp = first.headers()["location"].to_str().unwrap().to_string();
    assert!(
        to_idp.starts_with(&f.idp.url("/sso?SAMLRequest=")),
        "{to_idp}"
    );
    // The RelayState is an opaque key, never the URL the user asked for.
    let relay = query_param(&to_idp, "RelayState").unwrap();
    assert!(
        !relay.contains('/') && !relay.contains("Quarterly") && relay.len() >= 40,
        "{relay}"
    );
    assert!(
        query_param(&to_idp, "Signature").is_some(),
        "AuthnRequest must be signed"
    );

    let trip = browser.saml_login(&deep, "alice", "alice-pw").await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", f.gw.logs());
    assert_eq!(trip.final_url(), deep);
    let echo = trip.json();
    assert_eq!(echo["uri"], "/pages/Quarterly%20Plan?rev=3");
    assert_eq!(
        header_values(&echo, "x-remote-user"),
        ["alice@corp.example"]
    );
    assert_eq!(header_values(&echo, "x-remote-name"), ["Alice Example"]);
    assert_eq!(header_values(&echo, "x-groups"), ["staff,finance"]);
    assert_eq!(header_values(&echo, "x-first-name"), ["Alice"]);
    assert_eq!(f.wiki.hits(), 1);
    let logs = f.gw.logs();
    assert!(logs.contains("login succeeded"), "{logs}");
    assert!(logs.contains("idp=corp-saml"), "{logs}");
}

/// Starts a login in `browser` and returns (RelayState, AuthnRequest ID) without visiting the
/// IdP.
async fn started_login(f: &Fixture, browser: &Browser) -> (String, String) {
    let first = browser.get(&f.url(WIKI, "/")).await;
    assert_eq!(first.status(), 302);
    let to_idp = first.headers()["location"].to_str().unwrap().to_string();
    let relay = query_param(&to_idp, "RelayState").unwrap();
    let request = query_param(&to_idp, "SAMLRequest").unwrap();
    let deflated =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, request).unwrap();
    let mut xml = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::DeflateDecoder::new(deflated.as_slice()),
        &mut xml,
    )
    .unwrap();
    let id_at = xml.find(" ID=\"").unwrap() + 5;
    let id = xml[id_at..xml[id_at..].find('"').unwrap() + id_at].to_string();
    (relay, id)
}

/// Asserts the ACS refused `trip` (sign-in failed page) and the log names `reason`.
fn assert_refused(f: &Fixture, trip: &support::browser::Trip, reason: &str) {
    assert_eq!(
        trip.status,
        400,
        "expected a refusal ({reason}) but got {} at {}: {}",
        trip.status,
        trip.final_url(),
        trip.body
    );
    assert!(trip.body.contains("Sign-in failed"), "{}", trip.body);
    let logs = f.gw.logs();
    let last = logs
        .lines()
        .rev()
        .find(|l| l.contains("login failed"))
        .unwrap_or_else(|| panic!("no `login failed` audit record:\n{logs}"));
    assert!(
        last.contains(reason),
        "the last audit record should name `{reason}`: {last}"
    );
}

/// The gateway still answers after whatever came before.
async fn assert_still_serving(f: &Fixture) {
    let r = f.browser().get(&f.url(WIKI, "/")).await;
    assert_eq!(
        r.status(),
        302,
        "gateway stopped answering:\n{}",
        f.gw.logs()
    );
}

#[tokio::test]
async fn solicited_response_must_answer_this_browsers_own_request() {
    let f = fixture().await;
    let browser = f.browser();
    let (relay, request_id) = started_login(&f, &browser).await;

    // Another login's InResponseTo: refused even with this browser's RelayState.
    let (_, other) = f
        .forge(json!({ "in_response_to_request": "_0123456789abcdef0123456789abcdef0123" }))
        .await;
    let trip = browser
        .post_saml_response(&f.acs(WIKI), &other, Some(&relay))
        .await;
    assert_refused(&f, &trip, "InResponseTo does not match");

    // The RelayState is one-time: a correct response after the failure finds no login.
    let (relay, request_id2) = started_login(&f, &browser).await;
    assert_ne!(request_id, request_id2);
    // A correct response, but from a browser that did not start the login (no cookie).
    let (_, good) = f
        .forge(json!({ "in_response_to_request": request_id2 }))
        .await;
    let stranger = f.browser();
    let trip = stranger
        .post_saml_response(&f.acs(WIKI), &good, Some(&relay))
        .await;
    assert_refused(&f, &trip, "state is not bound to this browser");

    // The positive control: the browser's own login, answered correctly, signs in.
    let (relay, request_id3) = started_login(&f, &browser).await;
    let (_, good) = f
        .forge(json!({ "in_response_to_request": request_id3 }))
        .await;
    let trip = browser
        .post_saml_response(&f.acs(WIKI), &good, Some(&relay))
        .await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", f.gw.logs());
    assert_eq!(
        header_values(&trip.json(), "x-remote-user"),
        ["alice@corp.example"]
    );
}

#[tokio::test]
async fn idp_initiated_login_works_only_where_the_app_allows_it() {
    let f = fixture().await;
    // legacy allows it: the IdP's dashboard tile signs alice in, landing on the start page.
    let browser = f.browser();
    let form = browser
        .follow(&f.idp.url(&format!("/idp-init?sp={}", f.sp_entity(LEGACY))))
        .await;
    let posted = browser.sign_in(&form, "alice", "alice-pw").await;
    let trip = browser.auto_post(&posted).await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", f.gw.logs());
    assert_eq!(trip.final_url(), f.url(LEGACY, "/"));
    assert_eq!(
        header_values(&trip.json(), "x-remote-user"),
        ["alice@corp.example"]
    );
    assert_eq!(f.legacy.hits(), 1);

    // wiki does not: the same kind of response is refused there.
    let browser = f.browser();
    let form = browser
        .follow(&f.idp.url(&format!("/idp-init?sp={}", f.sp_entity(WIKI))))
        .await;
    let posted = browser.sign_in(&form, "alice", "alice-pw").await;
    let trip = browser.auto_post(&posted).await;
    assert_refused(&f, &trip, "does not allow_idp_initiated");
    assert_eq!(f.wiki.hits(), 0);

    // Even where allowed, an unsolicited response that answers some request is refused
    // (a response stolen from another login), and recipient/audience are still checked.
    let legacy_entity = f.sp_entity(LEGACY);
    let forge = |o: serde_json::Value| {
        let mut o = o;
        o["sp"] = json!(legacy_entity);
        f.idp.forge(o)
    };
    let (_, stray) =
        forge(json!({ "in_response_to": "_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" })).await;
    let trip = f
        .browser()
        .post_saml_response(&f.acs(LEGACY), &stray, None)
        .await;
    assert_refused(&f, &trip, "unsolicited response carries InResponseTo");
    let (_, wrong_audience) = forge(json!({ "audience": f.sp_entity(WIKI) })).await;
    let trip = f
        .browser()
        .post_saml_response(&f.acs(LEGACY), &wrong_audience, None)
        .await;
    assert_refused(&f, &trip, "Audience");
    let (_, wrong_recipient) = forge(json!({ "recipient": f.acs(WIKI) })).await;
    let trip = f
        .browser()
        .post_saml_response(&f.acs(LEGACY), &wrong_recipient, None)
        .await;
    assert_refused(&f, &trip, "Recipient");
}

#[tokio::test]
async fn a_response_is_accepted_once_and_replay_is_refused() {
    let f = fixture().await;
    let (_, response) = f
        .idp
        .forge(json!({ "sp": f.sp_entity(LEGACY), "user": "alice" }))
        .await;
    let first = f
        .browser()
        .post_saml_response(&f.acs(LEGACY), &response, None)
        .await;
    assert_eq!(first.status, 200, "{first:?}\n{}", f.gw.logs());
    let again = f
        .browser()
        .post_saml_response(&f.acs(LEGACY), &response, None)
        .await;
    assert_refused(&f, &again, "already used (replay)");
    // Line-wrapped base64 (as some IdPs send it) is the same response: still a replay, so
    // wrapping is decoded rather than refused.
    let wrapped: String = response
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect();
    let trip = f
        .browser()
        .post_saml_response(&f.acs(LEGACY), &wrapped, None)
        .await;
    assert_refused(&f, &trip, "already used (replay)");
    let (_, fresh) = f
        .idp
        .forge(json!({ "sp": f.sp_entity(LEGACY), "user": "bob" }))
        .await;
    let wrapped: String = fresh
        .as_bytes()
        .chunks(64)
        .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
        .collect();
    let trip = f
        .browser()
        .post_saml_response(&f.acs(LEGACY), &wrapped, None)
        .await;
    assert_eq!(
        trip.status, 200,
        "line-wrapped base64 must be accepted: {trip:?}"
    );
}

/// Each defective response, signed by the real IdP code, is refused with its reason.
#[tokio::test]
async fn responses_missing_what_this_sp_requires_are_refused() {
    let f = fixture().await;
    let legacy = f.sp_entity(LEGACY);
    let (other_key, other_cert) = support::saml_idp::key_and_cert("attacker");
    let cases = [
        (json!({ "unsigned": true }), "assertion is not signed"),
        (
            json!({ "sign_assertion": false }),
            "assertion is not signed",
        ),
        (
            json!({ "key": other_key, "cert": other_cert }),
            "verification failed",
        ),
        (
            json!({ "sig_alg": "http://www.w3.org/2000/09/xmldsig#rsa-sha1" }),
            "SHA-256 or stronger",
        ),
        (json!({ "shift_seconds": -3600 }), "expired"),
        (json!({ "issue_in_future_seconds": 3600 }), "IssueInstant"),
        (json!({ "omit_conditions": true }), "no Conditions"),
        (json!({ "omit_audience": true }), "no AudienceRestriction"),
        (json!({ "omit_authn_statement": true }), "no AuthnStatement"),
        (json!({ "destination": f.acs(WIKI) }), "Destination"),
        (
            json!({ "lifetime_seconds": 3 * 24 * 3600 }),
            "longer than 24 hours",
        ),
        (
            json!({ "name_id_raw": "alice@corp.example<!---->.evil.example" }),
            "comments are not allowed",
        ),
    ];
    for (overrides, reason) in cases {
        let mut o = overrides.clone();
        o["sp"] = json!(legacy);
        o["user"] = json!("alice");
        let (_, response) = f.idp.forge(o).await;
        let trip = f
            .browser()
            .post_saml_response(&f.acs(LEGACY), &response, None)
            .await;
        assert_eq!(trip.status, 400, "{overrides} was accepted: {trip:?}");
        assert_refused(&f, &trip, reason);
    }
    assert_eq!(
        f.legacy.hits(),
        0,
        "no refused response may reach the backend"
    );
    assert_still_serving(&f).await;
}
