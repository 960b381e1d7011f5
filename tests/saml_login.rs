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
use support::browser::{form_action, hidden_input, query_param, Browser};
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
        self.gw.app_url(host, path)
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
    /// Posts a SAML response (base64) to `host`'s ACS from a fresh browser.
    async fn post(&self, host: &str, saml_response: &str) -> support::browser::Trip {
        self.browser()
            .post_saml_response(&self.acs(host), saml_response, None)
            .await
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
    let head = support::policy_head(app, host, upstream, Some("corp-saml"));
    format!(
        r#"{head}logout_path = "/logout"
{extra}
[identity.headers]
"X-Remote-User" = "email"
"X-Remote-Name" = "name"
"X-Groups" = {{ claim = "groups", join = "," }}
"X-First-Name" = "firstName"
"X-Remote-Subject" = "sub"

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
    fixture_full(idp_options, idp_extra, "").await
}

/// [`fixture_with`] plus `wiki_extra` in the wiki's policy.
async fn fixture_full(
    idp_options: serde_json::Value,
    idp_extra: &str,
    wiki_extra: &str,
) -> Fixture {
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
        .policy(
            "wiki.toml",
            policy("wiki", WIKI, &wiki.url(), "") + wiki_extra,
        )
        .policy(
            "legacy.toml",
            policy(
                "legacy",
                LEGACY,
                &legacy.url(),
                "allow_idp_initiated = true\nidp_initiated_relay_state = true\nidp_initiated_paths = [\"/reports/**\"]",
            ),
        )
        .start()
        .await;
    // `start` returned after /readyz said ready, which waits for the IdP's metadata.
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

/// The AuthnRequest carried by an IdP redirect URL, inflated.
fn authn_request_xml(url: &str) -> String {
    let request = query_param(url, "SAMLRequest").unwrap();
    let deflated =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, request).unwrap();
    let mut xml = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::DeflateDecoder::new(deflated.as_slice()),
        &mut xml,
    )
    .unwrap();
    xml
}

/// Starts a login in `browser` and returns (RelayState, AuthnRequest ID) without visiting the
/// IdP.
async fn started_login(f: &Fixture, browser: &Browser) -> (String, String) {
    let first = browser.get(&f.url(WIKI, "/")).await;
    assert_eq!(first.status(), 302);
    let to_idp = first.headers()["location"].to_str().unwrap().to_string();
    let relay = query_param(&to_idp, "RelayState").unwrap();
    let xml = authn_request_xml(&to_idp);
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
async fn idp_initiated_deep_links_land_only_on_the_paths_the_app_lists() {
    let f = fixture().await;
    let land = |relay: &'static str| {
        let f = &f;
        async move {
            let browser = f.browser();
            let tile: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("sp", &f.sp_entity(LEGACY))
                .append_pair("relay", relay)
                .finish();
            let form = browser
                .follow(&f.idp.url(&format!("/idp-init?{tile}")))
                .await;
            let posted = browser.sign_in(&form, "alice", "alice-pw").await;
            let trip = browser.auto_post(&posted).await;
            assert_eq!(trip.status, 200, "{relay}: {trip:?}\n{}", f.gw.logs());
            trip.final_url().to_string()
        }
    };
    // Okta's "Default RelayState": a listed path of the app, query kept.
    assert_eq!(
        land("/reports/q3?year=2026").await,
        f.url(LEGACY, "/reports/q3?year=2026")
    );
    // Anything else lands on the start page: other paths, other hosts, tricks.
    for relay in [
        "/admin",
        "/reports/../admin",
        "https://evil.example/reports/x",
        "//evil.example/reports/x",
        "/\\evil.example/reports/x",
        "reports/q3",
    ] {
        assert_eq!(land(relay).await, f.url(LEGACY, "/"), "{relay}");
    }
    assert!(f
        .gw
        .logs()
        .contains("IdP-initiated RelayState not honoured"));
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
    let trip = f.post(LEGACY, &stray).await;
    assert_refused(&f, &trip, "unsolicited response carries InResponseTo");
    let (_, wrong_audience) = forge(json!({ "audience": f.sp_entity(WIKI) })).await;
    let trip = f.post(LEGACY, &wrong_audience).await;
    assert_refused(&f, &trip, "Audience");
    let (_, wrong_recipient) = forge(json!({ "recipient": f.acs(WIKI) })).await;
    let trip = f.post(LEGACY, &wrong_recipient).await;
    assert_refused(&f, &trip, "Recipient");
}

#[tokio::test]
async fn certificates_near_expiry_are_named_by_check_at_start_and_on_readyz() {
    use support::saml_idp::rsa_key_and_cert_for_days;
    let http = free_addr();
    let (idp_key, idp_cert) = rsa_key_and_cert_for_days("Expiring IdP", 2048, 10);
    let idp = TestSamlIdp::start_with(
        &[format!(
            "http://{WIKI}:{}/.portcullis/saml/metadata",
            http.port()
        )],
        json!({ "key": idp_key, "cert": idp_cert }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (sp_key, sp_cert) = rsa_key_and_cert_for_days("Expiring SP", 2048, 5);
    let (key_file, cert_file) = (dir.path().join("sp.key"), dir.path().join("sp.crt"));
    std::fs::write(&key_file, sp_key).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(&cert_file, sp_cert).unwrap();
    let toml = idp
        .gateway_toml("corp-saml", "")
        .replace(
            &support::dev_cert("saml-sp.key").display().to_string(),
            &key_file.display().to_string(),
        )
        .replace(
            &support::dev_cert("saml-sp.crt").display().to_string(),
            &cert_file.display().to_string(),
        );
    let wiki = echo_backend("wiki").await;
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&toml)
        .policy("wiki.toml", policy("wiki", WIKI, &wiki.url(), ""))
        .start()
        .await;
    // `check` names the SP's own certificate, with its file and line.
    let out = std::process::Command::new(support::gateway_binary())
        .args(["check", "-c"])
        .arg(gw.config_path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("portcullis.toml:"), "{text}");
    assert!(text.contains("sp.crt` expires in"), "{text}");
    // At start, the IdP's signing certificate: in the log and on /readyz.
    let logs = gw
        .wait_for_log("the IdP's signing certificate expires soon")
        .await;
    assert!(logs.contains("Expiring IdP"), "{logs}");
    let ready = gw.readyz().await;
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("idp corp-saml signing certificate")
                && l.contains("Expiring IdP")
                && l.contains("days left")),
        "{ready}"
    );
    // The everyday certificates of the other tests are a year long: no such line.
    let f = fixture().await;
    let ready = f.gw.readyz().await;
    assert!(!ready.contains("signing certificate"), "{ready}");
}

#[tokio::test]
async fn the_next_sp_certificate_is_published_beside_the_current_one_and_logins_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (_, next) = support::saml_idp::key_and_cert("Portcullis SP next key (TEST ONLY)");
    let next_file = dir.path().join("sp-next.crt");
    std::fs::write(&next_file, &next).unwrap();
    let f = fixture_full(
        json!({}),
        &format!("sp_next_cert_file = \"{}\"", next_file.display()),
        "",
    )
    .await;
    let xml = f
        .browser()
        .get(&f.sp_entity(WIKI))
        .await
        .text()
        .await
        .unwrap();
    let body = |pem: &str| -> String { pem.lines().filter(|l| !l.starts_with("-----")).collect() };
    let current = std::fs::read_to_string(support::dev_cert("saml-sp.crt")).unwrap();
    assert!(
        xml.contains(&body(&current)),
        "current certificate missing: {xml}"
    );
    assert!(
        xml.contains(&body(&next)),
        "next certificate missing: {xml}"
    );
    assert_eq!(xml.matches("use=\"signing\"").count(), 2, "{xml}");
    // The IdP reads both and still verifies what the current key signs.
    f.signed_in("alice").await;
}

#[tokio::test]
async fn during_an_idp_key_rollover_either_listed_key_verifies_and_no_other() {
    let (next_key, next_cert) = support::saml_idp::key_and_cert("IdP next key (TEST ONLY)");
    let f = fixture_full(json!({ "next_signing_certs": [next_cert] }), "", "").await;
    let legacy = f.sp_entity(LEGACY);
    // Signed with the next key, which the metadata already lists: accepted.
    let (_, response) = f
        .idp
        .forge(json!({ "sp": legacy, "user": "alice", "key": next_key, "cert": next_cert }))
        .await;
    let trip = f.post(LEGACY, &response).await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", f.gw.logs());
    // Signed with a key the metadata does not list: refused, whatever certificate it carries.
    let (other_key, other_cert) = support::saml_idp::key_and_cert("attacker");
    let (_, forged) = f
        .idp
        .forge(json!({ "sp": legacy, "user": "bob", "key": other_key, "cert": other_cert }))
        .await;
    let trip = f.post(LEGACY, &forged).await;
    assert_refused(&f, &trip, "verification failed");
}

#[tokio::test]
async fn one_sp_entity_serves_every_app_host_with_an_acs_for_each() {
    let shared = "https://sso.corp.example/saml";
    let f = fixture_full(json!({}), &format!("sp_entity_id = \"{shared}\""), "").await;
    // Either host's metadata names the one entity and every host's ACS, its own first.
    for (host, other) in [(WIKI, LEGACY), (LEGACY, WIKI)] {
        let xml = f
            .browser()
            .get(&f.url(host, "/.portcullis/saml/metadata"))
            .await
            .text()
            .await
            .unwrap();
        assert!(xml.contains(&format!("entityID=\"{shared}\"")), "{xml}");
        let own = xml.find(&format!("Location=\"{}\"", f.acs(host)));
        let theirs = xml.find(&format!("Location=\"{}\"", f.acs(other)));
        assert!(own.is_some() && theirs.is_some() && own < theirs, "{xml}");
        assert_eq!(xml.matches("isDefault=\"true\"").count(), 1, "{xml}");
    }
    // One IdP integration: each host signs in on its own ACS, with its own session.
    let wiki = f.signed_in("alice").await;
    assert_eq!(wiki.get(&f.url(WIKI, "/")).await.status(), 200);
    let browser = f.browser();
    let trip = browser
        .saml_login(&f.url(LEGACY, "/reports"), "bob", "bob-pw")
        .await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", f.gw.logs());
    assert_eq!(trip.final_url(), f.url(LEGACY, "/reports"));
    assert_eq!(
        header_values(&trip.json(), "x-remote-user"),
        ["bob@corp.example"]
    );
    // A response meant for one host is not taken at the other.
    let (_, for_wiki) = f
        .idp
        .forge(json!({ "sp": shared, "user": "alice", "recipient": f.acs(WIKI), "destination": f.acs(WIKI) }))
        .await;
    let trip = f.post(LEGACY, &for_wiki).await;
    assert_ne!(trip.status, 200, "{trip:?}");
}

#[tokio::test]
async fn groups_arrive_under_the_names_adfs_and_shibboleth_use() {
    let f = fixture().await;
    for name in [
        "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
        "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
    ] {
        let (_, response) = f
            .idp
            .forge(json!({ "sp": f.sp_entity(LEGACY), "user": "alice", "groups_attribute": name }))
            .await;
        let trip = f.post(LEGACY, &response).await;
        assert_eq!(trip.status, 200, "{name}: {trip:?}\n{}", f.gw.logs());
        assert_eq!(
            header_values(&trip.json(), "x-groups"),
            ["staff,finance"],
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_response_is_accepted_once_and_replay_is_refused() {
    let f = fixture().await;
    let (_, response) = f
        .idp
        .forge(json!({ "sp": f.sp_entity(LEGACY), "user": "alice" }))
        .await;
    let first = f.post(LEGACY, &response).await;
    assert_eq!(first.status, 200, "{first:?}\n{}", f.gw.logs());
    let again = f.post(LEGACY, &response).await;
    assert_refused(&f, &again, "already used (replay)");
    // Line-wrapped base64 (as some IdPs send it) is the same response: still a replay, so
    // wrapping is decoded rather than refused.
    let wrapped: String = response
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect();
    let trip = f.post(LEGACY, &wrapped).await;
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
    let trip = f.post(LEGACY, &wrapped).await;
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
        let trip = f.post(LEGACY, &response).await;
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

fn b64(xml: &str) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, xml)
}

/// The attribute value `attr="…"` of the first element named `element` in `xml`.
fn attr_of(xml: &str, element: &str, attr: &str) -> String {
    let at = xml.find(&format!("<{element} ")).unwrap();
    let tag = &xml[at..at + xml[at..].find('>').unwrap()];
    let v = tag.find(&format!("{attr}=\"")).unwrap() + attr.len() + 2;
    tag[v..v + tag[v..].find('"').unwrap()].to_string()
}

/// The signed `<saml:Assertion …>…</saml:Assertion>` of a response.
fn assertion_of(xml: &str) -> String {
    let start = xml.find("<saml:Assertion").unwrap();
    let end = xml.find("</saml:Assertion>").unwrap() + "</saml:Assertion>".len();
    xml[start..end].to_string()
}

/// An attacker's copy of a signed assertion: bob instead of alice, a new ID, no signature.
fn evil_assertion(original: &str) -> String {
    let sig_start = original.find("<ds:Signature").unwrap();
    let sig_end = original.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let id = attr_of(original, "saml:Assertion", "ID");
    format!("{}{}", &original[..sig_start], &original[sig_end..])
        .replace("alice@corp.example", "bob@corp.example")
        .replace(&id, "_evil0000000000000000000000000000000000")
}

/// XML-level attacks on a genuinely signed response: each must be refused before anything
/// resolves a reference or transform (the listener sees nothing), and never sign anyone in.
#[tokio::test]
async fn xml_attacks_are_refused_before_any_reference_is_fetched() {
    let f = fixture().await;
    let listener = echo_backend("external-reference-listener").await;
    let external = format!("{}/stolen", listener.url());
    let (xml, _) = f
        .idp
        .forge(json!({ "sp": f.sp_entity(LEGACY), "user": "alice" }))
        .await;
    let assertion = assertion_of(&xml);
    let assertion_id = attr_of(&xml, "saml:Assertion", "ID");
    let evil = evil_assertion(&assertion);
    let root_close = "</samlp:Response>";
    let response_sig_start = xml.find("<ds:Signature").unwrap();
    let response_sig_end = xml.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let response_sig = &xml[response_sig_start..response_sig_end];

    let attacks: Vec<(&str, String, &str)> = vec![
        (
            "XXE (external entity)",
            format!("<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"{external}\">]>{}", xml.replacen("alice@corp.example", "&x;", 1)),
            "DOCTYPE",
        ),
        (
            "entity expansion",
            format!("<!DOCTYPE r [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]>{}", xml.replacen("alice@corp.example", "&b;", 1)),
            "DOCTYPE",
        ),
        (
            "external Reference URI (http)",
            xml.replacen(&format!("URI=\"#{assertion_id}\""), &format!("URI=\"{external}\""), 1),
            "Reference URI",
        ),
        (
            "external Reference URI (file)",
            xml.replacen(&format!("URI=\"#{assertion_id}\""), "URI=\"file:///etc/passwd\"", 1),
            "Reference URI",
        ),
        (
            "XSLT transform",
            xml.replacen(
                "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
                &format!("<ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xslt-19991116\"><xsl:stylesheet xmlns:xsl=\"http://www.w3.org/1999/XSL/Transform\" version=\"1.0\"><xsl:template match=\"/\"><xsl:copy-of select=\"document('{external}')\"/></xsl:template></xsl:stylesheet></ds:Transform>"),
                1,
            ),
            "Transform",
        ),
        (
            "XPath transform",
            xml.replacen(
                "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
                "<ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xpath-19991116\"><ds:XPath>1</ds:XPath></ds:Transform>",
                1,
            ),
            "Transform",
        ),
        (
            "signature exclusion (all signatures removed)",
            {
                let no_response_sig = format!("{}{}", &xml[..response_sig_start], &xml[response_sig_end..]);
                let a = assertion_of(&no_response_sig);
                no_response_sig.replace(&a, &evil_assertion(&a).replace("_evil0000000000000000000000000000000000", &assertion_id))
            },
            "assertion is not signed",
        ),
        // The XML signature wrapping family (XSW1-8 as SAMLRaider catalogues them).
        (
            "XSW1: evil response wraps the signed one in its signature",
            {
                let inner = xml.replace("<?xml version=\"1.0\"?>", "");
                let evil_response = xml.replace(&assertion, &evil).replace(response_sig, "");
                evil_response.replacen("</saml:Issuer>", &format!("</saml:Issuer><ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:Object>{inner}</ds:Object></ds:Signature>"), 1)
            },
            "",
        ),
        (
            "XSW2: signed response detached beside the evil one",
            format!("{}{}{root_close}", xml.replace(&assertion, &evil).replace(root_close, ""), xml.replace("<?xml version=\"1.0\"?>", "")),
            "",
        ),
        ("XSW3: evil assertion before the signed one", xml.replace(&assertion, &format!("{evil}{assertion}")), ""),
        ("XSW3b: evil assertion after the signed one", xml.replace(&assertion, &format!("{assertion}{evil}")), ""),
        (
            "XSW4: evil assertion wraps the signed one",
            xml.replace(&assertion, &evil.replace("</saml:Assertion>", &format!("{assertion}</saml:Assertion>"))),
            "Assertion outside",
        ),
        (
            "XSW5: signature moved to the evil assertion, original appended",
            {
                let sig_start = assertion.find("<ds:Signature").unwrap();
                let sig_end = assertion.find("</ds:Signature>").unwrap() + 15;
                let sig = &assertion[sig_start..sig_end];
                let evil_signed = evil.replacen("</saml:Issuer>", &format!("</saml:Issuer>{sig}"), 1);
                xml.replace(&assertion, &evil_signed).replace(root_close, &format!("{}{root_close}", assertion.replace(sig, "")))
            },
            "",
        ),
        (
            "XSW6/8: original assertion hidden in the evil one's signature object",
            {
                let sig_start = assertion.find("<ds:Signature").unwrap();
                let sig_end = assertion.find("</ds:Signature>").unwrap() + 15;
                let sig = &assertion[sig_start..sig_end];
                let hidden = sig.replace("</ds:Signature>", &format!("<ds:Object>{}</ds:Object></ds:Signature>", assertion.replace(sig, "")));
                xml.replace(&assertion, &evil.replacen("</saml:Issuer>", &format!("</saml:Issuer>{hidden}"), 1))
            },
            "",
        ),
        (
            "XSW7: original assertion in Extensions, evil one in its place",
            xml.replace(&assertion, &format!("<samlp:Extensions>{assertion}</samlp:Extensions>{evil}")),
            "",
        ),
        (
            "duplicate ID (second element claims the signed ID)",
            xml.replace(&assertion, &format!("{assertion}{}", evil.replace("_evil0000000000000000000000000000000000", &assertion_id))),
            "",
        ),
    ];
    for (name, forged, reason) in attacks {
        let trip = f
            .browser()
            .post_saml_response(&f.acs(LEGACY), &b64(&forged), None)
            .await;
        assert_eq!(trip.status, 400, "{name} was not refused: {trip:?}");
        if !reason.is_empty() {
            assert_refused(&f, &trip, reason);
        } else {
            assert_refused(&f, &trip, "SAML");
        }
    }
    assert_eq!(listener.hits(), 0, "an external reference was fetched");
    assert_eq!(f.legacy.hits(), 0, "a forged response reached the backend");
    // The untouched response still works: the attacks failed for what they changed.
    let trip = f
        .browser()
        .post_saml_response(&f.acs(LEGACY), &b64(&xml), None)
        .await;
    assert_eq!(trip.status, 200, "{trip:?}");
    assert_eq!(
        header_values(&trip.json(), "x-remote-user"),
        ["alice@corp.example"]
    );
}

#[tokio::test]
async fn oversized_and_malformed_posts_are_refused_and_the_gateway_stays_up() {
    let f = fixture().await;
    let client = f.gw.client(&[LEGACY]);
    // 10 MB: refused by size before any decoding.
    let huge = "A".repeat(10 * 1024 * 1024);
    let r = client
        .post(f.acs(LEGACY))
        .form(&[("SAMLResponse", huge.as_str())])
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    for body in [
        "SAMLResponse=%%%".to_string(),
        "SAMLResponse=not-base64!!".to_string(),
        format!("SAMLResponse={}", b64("<not-saml/>")),
        format!("SAMLResponse={}", b64("\u{0}\u{1}binary")),
        "RelayState=x".to_string(),
        String::new(),
    ] {
        let r = client
            .post(f.acs(LEGACY))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
    let r = client.get(f.acs(LEGACY)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = client
        .post(f.acs(LEGACY))
        .header("content-type", "text/xml")
        .body("<x/>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_still_serving(&f).await;
    assert!(!f.gw.logs().contains("panicked"), "{}", f.gw.logs());
}

#[tokio::test]
async fn a_signed_name_id_with_a_newline_never_becomes_a_header_or_a_log_line() {
    let f = fixture().await;
    let (_, response) = f
        .idp
        .forge(json!({
            "sp": f.sp_entity(LEGACY),
            "user": "alice",
            "name_id_raw": "alice@corp.example&#10;X-Evil: injected",
        }))
        .await;
    let browser = f.browser();
    let trip = browser
        .post_saml_response(&f.acs(LEGACY), &response, None)
        .await;
    // The login itself is genuine; the subject is unusable as a header value, so the request
    // is refused with an error page rather than sent.
    assert_eq!(trip.status, 500, "{trip:?}\n{}", f.gw.logs());
    assert_eq!(f.legacy.hits(), 0);
    let logs = f.gw.settled_logs().await;
    assert!(!logs.contains("\nX-Evil"), "log injection: {logs}");
    assert_still_serving(&f).await;
}

#[tokio::test]
async fn sp_metadata_is_valid_saml_metadata_with_acs_slo_and_signing_cert() {
    let f = fixture().await;
    let r = f.browser().get(&f.sp_entity(WIKI)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/samlmetadata+xml");
    let xml = r.text().await.unwrap();
    assert!(
        xml.contains(&format!("entityID=\"{}\"", f.sp_entity(WIKI))),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("Location=\"{}\"", f.acs(WIKI))),
        "{xml}"
    );
    assert!(
        xml.contains(&format!(
            "Location=\"{}\"",
            f.url(WIKI, "/.portcullis/saml/slo")
        )),
        "{xml}"
    );
    assert!(xml.contains("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"));
    assert!(xml.contains("AuthnRequestsSigned=\"true\""), "{xml}");
    assert!(xml.contains("WantAssertionsSigned=\"true\""), "{xml}");
    let cert_pem = std::fs::read_to_string(support::dev_cert("saml-sp.crt")).unwrap();
    let cert_body: String = cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(
        xml.contains(&cert_body),
        "signing certificate missing: {xml}"
    );
    assert!(!xml.contains("PRIVATE"), "{xml}");

    // Validated against the OASIS SAML 2.0 metadata schema (Debian's opensaml-schemas), with
    // imports resolved locally through the XML catalogs (no network).
    let file = f.idp.dir.path().join("sp-metadata.xml");
    std::fs::write(&file, &xml).unwrap();
    let catalog = f.idp.dir.path().join("catalog.xml");
    let local = |url: &str, file: &str| {
        format!("<system systemId=\"{url}\" uri=\"/usr/share/xml/xmltooling/{file}\"/><uri name=\"{url}\" uri=\"/usr/share/xml/xmltooling/{file}\"/>")
    };
    std::fs::write(
        &catalog,
        format!(
            "<?xml version=\"1.0\"?><catalog xmlns=\"urn:oasis:names:tc:entity:xmlns:xml:catalog\">{}{}{}</catalog>",
            local("http://www.w3.org/TR/2002/REC-xmldsig-core-20020212/xmldsig-core-schema.xsd", "xmldsig-core-schema.xsd"),
            local("http://www.w3.org/TR/2002/REC-xmlenc-core-20021210/xenc-schema.xsd", "xenc-schema.xsd"),
            local("http://www.w3.org/2001/xml.xsd", "xml.xsd"),
        ),
    )
    .unwrap();
    let out = std::process::Command::new("xmllint")
        .env("XML_CATALOG_FILES", &catalog)
        .args([
            "--nonet",
            "--noout",
            "--schema",
            "/usr/share/xml/opensaml/saml-schema-metadata-2.0.xsd",
        ])
        .arg(&file)
        .output()
        .expect("xmllint (libxml2-utils) is installed by tests/run.sh");
    assert!(
        out.status.success(),
        "SP metadata does not validate:\n{}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A host with no SAML app has no SP metadata.
    let r =
        f.gw.get("unknown.localhost", "/.portcullis/saml/metadata")
            .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn sp_initiated_logout_reaches_the_idp_and_ends_the_session() {
    let f = fixture().await;
    let browser = f.signed_in("alice").await;
    let trip = browser.follow(&f.url(WIKI, "/logout")).await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", f.gw.logs());
    assert!(
        trip.visited(&f.idp.url("/slo?SAMLRequest=")),
        "{:?}",
        trip.hops
    );
    assert!(
        trip.visited("/.portcullis/saml/slo?SAMLResponse="),
        "{:?}",
        trip.hops
    );
    assert!(trip.body.contains("Signed out"), "{}", trip.body);
    // The IdP verified our signed LogoutRequest and saw who and which session.
    let logouts = f.idp.logouts().await;
    assert_eq!(
        logouts["requests"][0]["name_id"], "alice@corp.example",
        "{logouts}"
    );
    assert!(
        logouts["requests"][0]["session_index"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{logouts}"
    );
    // The session is gone: the wiki asks for a login again.
    let again = browser.get(&f.url(WIKI, "/")).await;
    assert_eq!(again.status(), 302);
    assert!(again.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with(&f.idp.url("/sso")));
}

#[tokio::test]
async fn idp_initiated_logout_kills_exactly_the_named_users_sessions() {
    let f = fixture().await;
    let alice = f.signed_in("alice").await;
    let bob = f.signed_in("bob").await;
    let logout = f.idp.idp_logout_url(&f.sp_entity(WIKI), "alice").await;
    assert!(logout.contains("Signature="), "{logout}");

    // Tampered (signature no longer matches): refused, alice stays signed in.
    let tampered = logout.replace("RelayState=", "RelayState=x");
    let tampered = if tampered == logout {
        format!("{logout}&RelayState=evil")
    } else {
        tampered
    };
    let r = alice.get(&tampered).await;
    assert_eq!(r.status(), 400);
    for (name, query) in [
        ("no SigAlg", strip_param(&logout, "SigAlg")),
        ("no Signature", strip_param(&logout, "Signature")),
        (
            "rsa-sha1",
            logout.replace("xmldsig-more%23rsa-sha256", "xmldsig%23rsa-sha1"),
        ),
    ] {
        let r = alice.get(&query).await;
        assert_eq!(r.status(), 400, "{name} must be refused");
    }
    let page = alice.follow(&f.url(WIKI, "/")).await;
    assert_eq!(
        page.status, 200,
        "alice lost her session to a forged logout"
    );

    // The genuine one: alice's session ends, the IdP gets its LogoutResponse, bob stays.
    let trip = alice.follow(&logout).await;
    assert!(trip.visited(&f.idp.url("/slo?SAMLResponse=")), "{trip:?}");
    assert_eq!(
        trip.status, 200,
        "the IdP refused our LogoutResponse: {trip:?}"
    );
    let logouts = f.idp.logouts().await;
    assert_eq!(
        logouts["responses"][0]["status"], "urn:oasis:names:tc:SAML:2.0:status:Success",
        "{logouts}"
    );
    let r = alice.get(&f.url(WIKI, "/")).await;
    assert_eq!(r.status(), 302, "alice is still signed in");
    let r = bob.follow(&f.url(WIKI, "/")).await;
    assert_eq!(r.status, 200, "bob was signed out too");
    assert!(f.gw.logs().contains("IdP-initiated logout"));
    assert!(!f.gw.logs().contains("panicked"));
}

#[tokio::test]
async fn idp_initiated_logout_by_post_is_verified_like_the_redirect_one() {
    let f = fixture().await;
    let alice = f.signed_in("alice").await;
    let (slo, request) = f.idp.idp_logout_post(&f.sp_entity(WIKI), "alice").await;
    assert_eq!(slo, f.url(WIKI, "/.portcullis/saml/slo"));
    let xml = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &request).unwrap(),
    )
    .unwrap();
    assert!(
        xml.contains("<ds:Signature") || xml.contains(":Signature"),
        "{xml}"
    );

    // Someone else's name in a signed request: the signature no longer holds.
    let forged = b64(&xml.replace("alice@corp.example", "bob@corp.example"));
    let trip = alice
        .submit(&slo, &[("SAMLRequest", forged.as_str())])
        .await;
    assert_eq!(trip.status, 400, "{trip:?}");
    let unsigned = {
        let start = xml.find("<ds:Signature").unwrap();
        let end = xml.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
        b64(&format!("{}{}", &xml[..start], &xml[end..]))
    };
    let trip = alice
        .submit(&slo, &[("SAMLRequest", unsigned.as_str())])
        .await;
    assert_eq!(trip.status, 400, "{trip:?}");
    assert_eq!(alice.follow(&f.url(WIKI, "/")).await.status, 200);

    let trip = alice
        .submit(&slo, &[("SAMLRequest", request.as_str())])
        .await;
    assert!(trip.visited(&f.idp.url("/slo?SAMLResponse=")), "{trip:?}");
    assert_eq!(alice.get(&f.url(WIKI, "/")).await.status(), 302);
}

fn strip_param(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.starts_with(&format!("{name}=")))
        .collect();
    format!("{base}?{}", kept.join("&"))
}

#[tokio::test]
async fn response_only_signatures_pass_only_when_assertion_signing_is_not_required() {
    let f = fixture_with(json!({}), "want_assertions_signed = false").await;
    let legacy = f.sp_entity(LEGACY);
    let (_, response_signed) = f
        .idp
        .forge(json!({ "sp": legacy, "user": "bob", "sign_assertion": false }))
        .await;
    let trip = f.post(LEGACY, &response_signed).await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", f.gw.logs());
    assert_eq!(
        header_values(&trip.json(), "x-remote-user"),
        ["bob@corp.example"]
    );
    // Nothing signed at all is still refused, by signature verification itself.
    let (_, unsigned) = f
        .idp
        .forge(json!({ "sp": legacy, "user": "bob", "unsigned": true }))
        .await;
    let trip = f.post(LEGACY, &unsigned).await;
    assert_refused(&f, &trip, "must be signed");
}

const AES128_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes128-cbc";
const AES256_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes256-cbc";
const AES128_GCM: &str = "http://www.w3.org/2009/xmlenc11#aes128-gcm";
const RSA_OAEP_MGF1P: &str = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";
const RSA_1_5: &str = "http://www.w3.org/2001/04/xmlenc#rsa-1_5";

/// Okta's set-up with encryption on: the IdP encrypts the signed assertion to the SP's
/// published encryption certificate. Each algorithm IdPs use opens; an assertion encrypted to
/// another key, a weak cipher and (with `require_encrypted_assertions`) a plain assertion are
/// refused.
#[tokio::test]
async fn encrypted_assertions_sign_in_and_the_ones_this_sp_cannot_open_are_refused() {
    let f = fixture_with(
        json!({ "encrypt_assertions": true }),
        "require_encrypted_assertions = true",
    )
    .await;
    let metadata = f
        .browser()
        .get(&f.sp_entity(WIKI))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        metadata.matches("use=\"encryption\"").count(),
        1,
        "{metadata}"
    );
    assert!(metadata.contains("xmlenc11#aes256-gcm"), "{metadata}");
    // A whole login, samlify encrypting (AES-256-GCM, RSA-OAEP) and signing.
    let browser = f.browser();
    let trip = browser
        .saml_login(&f.url(WIKI, "/docs"), "alice", "alice-pw")
        .await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", f.gw.logs());
    assert_eq!(
        header_values(&trip.json(), "x-remote-user"),
        ["alice@corp.example"]
    );
    assert_eq!(header_values(&trip.json(), "x-groups"), ["staff,finance"]);
    let legacy = f.sp_entity(LEGACY);
    for (data, key) in [
        (AES128_CBC, RSA_1_5),
        (AES256_CBC, RSA_OAEP_MGF1P),
        (AES128_GCM, RSA_OAEP_MGF1P),
    ] {
        let (xml, response) = f
            .idp
            .forge(json!({ "sp": legacy, "user": "bob", "encrypt": { "data": data, "key": key } }))
            .await;
        assert!(xml.contains("EncryptedAssertion") && !xml.contains("bob@corp.example"));
        let trip = f.post(LEGACY, &response).await;
        assert_eq!(
            trip.status,
            200,
            "{data} + {key}: {trip:?}\n{}",
            f.gw.logs()
        );
        assert_eq!(
            header_values(&trip.json(), "x-remote-user"),
            ["bob@corp.example"]
        );
    }
    // Encrypted for somebody else.
    let (_, other_cert) = support::saml_idp::key_and_cert("another SP (TEST ONLY)");
    let (_, response) = f
        .idp
        .forge(json!({ "sp": legacy, "user": "bob", "encrypt": { "cert": other_cert } }))
        .await;
    let trip = f.post(LEGACY, &response).await;
    assert_refused(&f, &trip, "encrypted under a key this SP does not hold");
    // Triple-DES.
    let (_, response) = f
        .idp
        .forge(json!({ "sp": legacy, "user": "bob", "encrypt": { "data": "http://www.w3.org/2001/04/xmlenc#tripledes-cbc" } }))
        .await;
    let trip = f.post(LEGACY, &response).await;
    assert_refused(&f, &trip, "content encryption");
    // A plain (validly signed) assertion where encryption is required.
    let (_, plain) = f.idp.forge(json!({ "sp": legacy, "user": "bob" })).await;
    let trip = f.post(LEGACY, &plain).await;
    assert_refused(&f, &trip, "not encrypted (require_encrypted_assertions");
    assert_still_serving(&f).await;
}

/// Signature wrapping around an encrypted assertion: an unsigned assertion encrypted to the
/// SP's public certificate, a plain assertion beside a genuine encrypted one, a second one
/// hidden inside the encryption, an encrypted assertion out of place, and ciphertext altered
/// under a response signature. Each is refused; a response-only signature over an encrypted
/// assertion (Shibboleth's default) passes only when assertion signing is not required.
#[tokio::test]
async fn wrapping_around_an_encrypted_assertion_is_refused() {
    let f = fixture().await;
    let legacy = f.sp_entity(LEGACY);
    // Anyone can encrypt to the SP's certificate: an unsigned assertion so encrypted is not
    // trusted.
    let (_, unsigned) = f
        .idp
        .forge(json!({ "sp": legacy, "user": "bob", "unsigned": true, "encrypt": {} }))
        .await;
    assert_refused(&f, &f.post(LEGACY, &unsigned).await, "not signed");
    let (genuine, _) = f.idp.forge(json!({ "sp": legacy, "user": "alice" })).await;
    let evil = evil_assertion(&assertion_of(&genuine));
    for (extra, reason) in [
        (json!({ "beside": evil }), "exactly one Assertion"),
        (json!({ "extra_plaintext": evil }), "exactly one Assertion"),
        (json!({ "misplace": true }), "Assertion outside"),
    ] {
        let (_, response) = f
            .idp
            .forge(json!({ "sp": legacy, "user": "alice", "encrypt": extra }))
            .await;
        assert_refused(&f, &f.post(LEGACY, &response).await, reason);
    }
    // The response signature covers the ciphertext: altering it is caught before decryption.
    let (xml, _) = f
        .idp
        .forge(json!({ "sp": legacy, "user": "alice", "sign_assertion": false, "encrypt": {} }))
        .await;
    // The content's CipherValue (the last one; the key's comes first), a few characters in.
    let at = xml.rfind("<xenc:CipherValue>").unwrap() + "<xenc:CipherValue>".len() + 12;
    let flipped = if &xml[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &xml[..at], &xml[at + 1..]);
    assert_refused(
        &f,
        &f.post(LEGACY, &b64(&tampered)).await,
        "verification failed",
    );
    // Untampered, it still needs want_assertions_signed = false.
    let (_, response_signed) = f
        .idp
        .forge(json!({ "sp": legacy, "user": "alice", "sign_assertion": false, "encrypt": {} }))
        .await;
    assert_refused(&f, &f.post(LEGACY, &response_signed).await, "not signed");
    let lenient = fixture_with(json!({}), "want_assertions_signed = false").await;
    let (_, response_signed) = lenient
        .idp
        .forge(json!({ "sp": lenient.sp_entity(LEGACY), "user": "bob", "sign_assertion": false, "encrypt": {} }))
        .await;
    let trip = lenient.post(LEGACY, &response_signed).await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", lenient.gw.logs());
    assert_eq!(
        header_values(&trip.json(), "x-remote-user"),
        ["bob@corp.example"]
    );
    // Decryption takes the response's (verified) signature off; the response still counts as
    // signed, so it must still name its Destination.
    let (_, undirected) = lenient
        .idp
        .forge(json!({ "sp": lenient.sp_entity(LEGACY), "user": "bob", "sign_assertion": false, "encrypt": {}, "omit_destination": true }))
        .await;
    let trip = lenient.post(LEGACY, &undirected).await;
    assert_refused(&lenient, &trip, "has no Destination");
    assert_still_serving(&f).await;
}

/// During an SP key rollover with the next key configured, the metadata offers both
/// certificates for encryption and an assertion encrypted to either opens.
#[tokio::test]
async fn assertions_encrypted_to_the_next_sp_key_open_during_a_rollover() {
    let dir = tempfile::tempdir().unwrap();
    let (next_key, next_cert) =
        support::saml_idp::key_and_cert("Portcullis SP next key (TEST ONLY)");
    std::fs::write(dir.path().join("sp-next.crt"), &next_cert).unwrap();
    std::fs::write(dir.path().join("sp-next.key"), &next_key).unwrap();
    let f = fixture_full(
        json!({}),
        &format!(
            "sp_next_cert_file = \"{0}/sp-next.crt\"\nsp_next_key_file = \"{0}/sp-next.key\"",
            dir.path().display()
        ),
        "",
    )
    .await;
    let metadata = f
        .browser()
        .get(&f.sp_entity(WIKI))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        metadata.matches("use=\"encryption\"").count(),
        2,
        "{metadata}"
    );
    let current = std::fs::read_to_string(support::dev_cert("saml-sp.crt")).unwrap();
    for (user, cert) in [("alice", &current), ("bob", &next_cert)] {
        let (_, response) = f
            .idp
            .forge(json!({ "sp": f.sp_entity(LEGACY), "user": user, "encrypt": { "cert": cert } }))
            .await;
        let trip = f.post(LEGACY, &response).await;
        assert_eq!(trip.status, 200, "{user}: {trip:?}\n{}", f.gw.logs());
    }
}

/// SHA-1 signatures are refused unless the IdP entry opts in with `allow_sha1`, which the
/// configuration check warns about; even then, only the IdP's own keys verify.
#[tokio::test]
async fn sha1_signatures_pass_only_where_the_idp_entry_opts_in() {
    const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
    let strict = fixture().await;
    let (_, response) = strict
        .idp
        .forge(json!({ "sp": strict.sp_entity(LEGACY), "user": "bob", "sig_alg": RSA_SHA1 }))
        .await;
    let trip = strict.post(LEGACY, &response).await;
    assert_refused(&strict, &trip, "SignatureMethod");
    let lenient = fixture_with(json!({}), "allow_sha1 = true").await;
    assert!(
        lenient
            .gw
            .logs()
            .contains("allow_sha1: this IdP's SHA-1 signatures are accepted"),
        "{}",
        lenient.gw.logs()
    );
    let legacy = lenient.sp_entity(LEGACY);
    let (xml, response) = lenient
        .idp
        .forge(json!({ "sp": legacy, "user": "bob", "sig_alg": RSA_SHA1 }))
        .await;
    assert!(xml.contains("xmldsig#sha1\""), "SHA-1 digests too: {xml}");
    let trip = lenient.post(LEGACY, &response).await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", lenient.gw.logs());
    let (other_key, other_cert) = support::saml_idp::key_and_cert("attacker");
    let (_, forged) = lenient
        .idp
        .forge(json!({ "sp": legacy, "user": "bob", "sig_alg": RSA_SHA1, "key": other_key, "cert": other_cert }))
        .await;
    let trip = lenient.post(LEGACY, &forged).await;
    assert_refused(&lenient, &trip, "verification failed");
}

/// An IdP that takes AuthnRequests by HTTP-POST only: the gateway answers with a page whose
/// one script (allowed by its hash, posting only to the IdP) submits a signed AuthnRequest,
/// which samlify verifies; the login then ends on the deep link as with the redirect binding.
#[tokio::test]
async fn an_idp_that_wants_authn_requests_by_post_gets_a_signed_one_in_an_auto_submitted_form() {
    let f = fixture_with(json!({ "sso_bindings": ["post"] }), "").await;
    let browser = f.browser();
    let page = browser.follow(&f.url(WIKI, "/docs/q3")).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("Taking you to sign-in"), "{}", page.body);
    assert_eq!(form_action(&page.body), f.idp.url("/sso"));
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'sha256-")
            && csp.contains(format!("form-action {}", f.idp.url("")).trim_end_matches('/')),
        "{csp}"
    );
    let request = String::from_utf8(
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            hidden_input(&page.body, "SAMLRequest"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        request.contains("<ds:SignatureValue>") || request.contains("SignatureValue>"),
        "{request}"
    );
    let idp_form = browser.auto_post(&page).await;
    let posted = browser.sign_in(&idp_form, "alice", "alice-pw").await;
    let trip = browser.auto_post(&posted).await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", f.gw.logs());
    assert!(
        trip.final_url().ends_with("/docs/q3"),
        "{}",
        trip.final_url()
    );
    assert_eq!(
        header_values(&trip.json(), "x-remote-user"),
        ["alice@corp.example"]
    );
    assert_eq!(f.idp.posted_requests().await[0]["signed"], true);
    // The IdP does verify: a request altered after signing is refused there.
    let page = f.browser().follow(&f.url(WIKI, "/")).await;
    let tampered = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        request.replace("/.portcullis/saml/acs", "/.portcullis/saml/acs-evil"),
    );
    let refused = f
        .browser()
        .submit(
            &form_action(&page.body),
            &[("SAMLRequest", &tampered), ("RelayState", "x")],
        )
        .await;
    assert!(
        !refused.is_login_form(),
        "a tampered AuthnRequest was accepted: {refused:?}"
    );
}

/// What this SP signs uses `signature_hash` for the signature and the digest, by either
/// binding, and samlify verifies each; by default SHA-256 throughout — never a SHA-1 digest
/// (samael's signature template has one, which the gateway replaces).
#[tokio::test]
async fn what_this_sp_signs_uses_the_configured_hash_and_never_sha1() {
    const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
    const RSA_SHA512: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512";
    const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
    const SHA512: &str = "http://www.w3.org/2001/04/xmlenc#sha512";
    for (extra, signature, digest) in [
        ("", RSA_SHA256, SHA256),
        ("signature_hash = \"sha512\"\n", RSA_SHA512, SHA512),
    ] {
        // HTTP-POST: an XML signature.
        let f = fixture_with(json!({ "sso_bindings": ["post"] }), extra).await;
        let browser = f.browser();
        let page = browser.follow(&f.url(WIKI, "/docs")).await;
        let idp_form = browser.auto_post(&page).await;
        let posted = browser.sign_in(&idp_form, "alice", "alice-pw").await;
        let trip = browser.auto_post(&posted).await;
        assert_eq!(trip.status, 200, "{extra}: {trip:?}\n{}", f.gw.logs());
        let seen = &f.idp.posted_requests().await[0];
        assert_eq!(seen["signed"], true, "{seen}");
        assert_eq!(seen["signature_method"], signature, "{seen}");
        assert_eq!(seen["digest_methods"], json!([digest]), "{seen}");
        drop(f);

        // HTTP-Redirect: SigAlg over the query.
        let f = fixture_with(json!({}), extra).await;
        let browser = f.browser();
        let first = browser.get(&f.url(WIKI, "/docs")).await;
        let to_idp = first.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(
            query_param(&to_idp, "SigAlg").as_deref(),
            Some(signature),
            "{to_idp}"
        );
        let trip = browser
            .saml_login(&f.url(WIKI, "/docs"), "alice", "alice-pw")
            .await;
        assert_eq!(trip.status, 200, "{extra}: {trip:?}\n{}", f.gw.logs());
    }
}

/// Thirty copies of one valid response at once: exactly one signs in (the replay check is
/// atomic), and a signed-in user's proxied requests are served meanwhile.
#[tokio::test]
async fn concurrent_copies_of_one_response_sign_in_exactly_once() {
    let f = fixture().await;
    let bob = f.signed_in("bob").await;
    let (_, response) = f
        .idp
        .forge(json!({ "sp": f.sp_entity(LEGACY), "user": "alice" }))
        .await;
    let posts = (0..30).map(|_| {
        let browser = f.browser();
        let acs = f.acs(LEGACY);
        let response = response.clone();
        async move {
            browser
                .post_saml_response(&acs, &response, None)
                .await
                .status
        }
    });
    let reads = (0..30).map(|_| async { bob.follow(&f.url(WIKI, "/")).await.status });
    let (posted, read) = tokio::join!(
        futures_util::future::join_all(posts),
        futures_util::future::join_all(reads)
    );
    assert_eq!(
        posted.iter().filter(|s| **s == 200).count(),
        1,
        "{posted:?}"
    );
    assert_eq!(
        posted.iter().filter(|s| **s == 400).count(),
        29,
        "{posted:?}"
    );
    assert!(read.iter().all(|s| *s == 200), "{read:?}");
}

#[tokio::test]
async fn metadata_from_a_file_works_like_metadata_from_a_url() {
    let http = free_addr();
    let sp = format!("http://{WIKI}:{}/.portcullis/saml/metadata", http.port());
    let idp = TestSamlIdp::start(std::slice::from_ref(&sp)).await;
    let file = idp.metadata_file().await;
    let wiki = echo_backend("wiki").await;
    let toml = idp
        .gateway_toml("corp-saml", "attributes = [\"firstName\"]")
        .replace(
            &format!(
                "metadata_url = \"{}\"\nallow_insecure_metadata_url = true\n",
                idp.metadata_url()
            ),
            &format!("metadata_file = \"{}\"\n", file.display()),
        );
    assert!(toml.contains("metadata_file"), "{toml}");
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&toml)
        .policy("wiki.toml", policy("wiki", WIKI, &wiki.url(), ""))
        .start()
        .await;
    let browser = Browser::new(gw.http, &[WIKI]);
    let trip = browser
        .saml_login(&format!("http://{WIKI}:{}/", http.port()), "bob", "bob-pw")
        .await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", gw.logs());
    assert_eq!(
        header_values(&trip.json(), "x-remote-user"),
        ["bob@corp.example"]
    );
    let ready = reqwest::get(format!("http://{}/readyz", gw.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        ready.contains("idp corp-saml (saml): metadata loaded"),
        "{ready}"
    );
}

/// Okta signs only the assertion unless told otherwise: that is enough, and the unsigned
/// envelope around it is still checked (Destination).
#[tokio::test]
async fn an_assertion_only_signature_is_accepted_and_the_envelope_still_checked() {
    let f = fixture().await;
    let legacy = f.sp_entity(LEGACY);
    let (xml, response) = f
        .idp
        .forge(json!({ "sp": legacy, "user": "alice", "sign_response": false }))
        .await;
    assert_eq!(xml.matches("<ds:Signature xmlns").count(), 1, "{xml}");
    let trip = f.post(LEGACY, &response).await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", f.gw.logs());
    let (_, elsewhere) = f
        .idp
        .forge(json!({ "sp": legacy, "user": "alice", "sign_response": false, "destination": f.acs(WIKI) }))
        .await;
    let trip = f.post(LEGACY, &elsewhere).await;
    assert_refused(&f, &trip, "Destination");
}

const OTP_CLASS: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:TimeSyncToken";

#[tokio::test]
async fn saml_step_up_asks_the_idp_for_a_stronger_class_and_checks_it_came_back() {
    let rule = format!("\n[[require]]\nid = \"token-for-payroll\"\nwhy = \"Payroll needs a second factor\"\npaths = [\"/payroll/**\"]\nacr = [\"{OTP_CLASS}\"]\n");
    let f = fixture_full(json!({}), "", &rule).await;
    let browser = f.signed_in("alice").await;
    assert_eq!(browser.follow(&f.url(WIKI, "/pages")).await.status, 200);
    let first = browser.get(&f.url(WIKI, "/payroll/slip")).await;
    assert_eq!(first.status(), 302);
    let to_idp = first.headers()["location"].to_str().unwrap().to_string();
    // The AuthnRequest asks for a fresh sign-in of the token class.
    let xml = authn_request_xml(&to_idp);
    assert!(xml.contains("ForceAuthn=\"true\""), "{xml}");
    assert!(
        xml.contains(OTP_CLASS) && xml.contains("RequestedAuthnContext"),
        "{xml}"
    );

    let form = browser.follow(&to_idp).await;
    let code_form = browser.sign_in(&form, "alice", "alice-pw").await;
    assert!(
        code_form.body.contains("name=\"otp\""),
        "the IdP did not ask for a code: {code_form:?}"
    );
    let action = support::browser::form_action(&code_form.body);
    let url = url::Url::parse(code_form.final_url())
        .unwrap()
        .join(&action)
        .unwrap();
    let wrong = browser.submit(url.as_str(), &[("otp", "111111")]).await;
    assert!(wrong.body.contains("Wrong code"), "{wrong:?}");
    let posted = browser.submit(url.as_str(), &[("otp", "246810")]).await;
    let trip = browser.auto_post(&posted).await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", f.gw.logs());
    assert_eq!(trip.final_url(), f.url(WIKI, "/payroll/slip"));
    let logs = f.gw.logs();
    let step = logs
        .lines()
        .find(|l| l.contains("step-up sign-in succeeded"))
        .unwrap_or_else(|| panic!("no step-up audit record:\n{logs}"));
    assert!(step.contains(OTP_CLASS), "{step}");

    // A plain password assertion is not a step-up, even when it answers the step-up request.
    let browser = f.signed_in("alice").await;
    let first = browser.get(&f.url(WIKI, "/payroll/slip")).await;
    let to_idp = first.headers()["location"].to_str().unwrap().to_string();
    let relay = query_param(&to_idp, "RelayState").unwrap();
    let xml = authn_request_xml(&to_idp);
    let id_at = xml.find(" ID=\"").unwrap() + 5;
    let id = &xml[id_at..xml[id_at..].find('"').unwrap() + id_at];
    let (_, weak) = f.forge(json!({ "in_response_to_request": id })).await;
    let trip = browser
        .post_saml_response(&f.acs(WIKI), &weak, Some(&relay))
        .await;
    assert_refused(&f, &trip, "step-up refused");
}

/// Claim conditions work on SAML attributes exactly as on OIDC claims.
#[tokio::test]
async fn rules_on_saml_attributes_decide_like_rules_on_claims() {
    let rule = "\n[[require]]\nid = \"alices-corner\"\nwhy = \"only people called Alice\"\npaths = [\"/corner/**\"]\nclaims = { firstName = [\"Alice\", \"Alicia\"], idp = \"corp-saml\" }\n";
    let f = fixture_full(json!({}), "", rule).await;
    let alice = f.signed_in("alice").await;
    let bob = f.signed_in("bob").await;
    assert_eq!(alice.follow(&f.url(WIKI, "/corner/x")).await.status, 200);
    let refused = bob.follow(&f.url(WIKI, "/corner/x")).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    let logs = f.gw.logs();
    let record = logs
        .lines()
        .rev()
        .find(|l| l.contains("access decision") && l.contains("decision=\"require\""))
        .unwrap_or_else(|| panic!("no require decision:\n{logs}"));
    assert!(
        record.contains("alices-corner") && record.contains("claim firstName one of"),
        "{record}"
    );
}

/// `text` as UTF-7 would carry it with `<` and `>` hidden in shift sequences (and `+` written
/// `+-`): the same markup to a UTF-7 decoder, plain text to one that reads UTF-8.
fn utf7_hidden(text: &str) -> String {
    text.replace('+', "+-")
        .replace('<', "+ADw-")
        .replace('>', "+AD4-")
}

/// libxml2 honours the declared encoding; the guard must read exactly what libxml2 reads, so
/// any declared encoding but UTF-8 (and anything not XML 1.0 text) is refused before either
/// parser sees the message — and the external reference such a message hides is never fetched.
#[tokio::test]
async fn messages_in_another_encoding_are_refused_and_their_hidden_references_never_fetched() {
    let f = fixture().await;
    let listener = echo_backend("encoding-reference-listener").await;
    let external = format!("{}/stolen", listener.url());
    let (xml, _) = f
        .idp
        .forge(json!({ "sp": f.sp_entity(LEGACY), "user": "alice" }))
        .await;
    let body = xml.replace("<?xml version=\"1.0\"?>", "");
    let hidden_signature = format!(
        "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo>\
         <ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\
         <ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/>\
         <ds:Reference URI=\"{external}\"><ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/>\
         <ds:DigestValue>AAAA</ds:DigestValue></ds:Reference></ds:SignedInfo>\
         <ds:SignatureValue>AAAA</ds:SignatureValue></ds:Signature>"
    );
    // The hidden signature comes first, so a verifier reaches its reference before any other.
    let open_end = body.find('>').unwrap() + 1;
    let utf7 = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-7\"?>{}{}{}",
        &body[..open_end],
        utf7_hidden(&hidden_signature),
        body[open_end..].replace('+', "+-")
    );
    let utf16: Vec<u8> = format!("<?xml version=\"1.0\" encoding=\"UTF-16\"?>{body}")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let latin1 = format!("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>{body}");
    let xml11 = format!("<?xml version=\"1.1\"?>{body}");
    let nul = body.replacen("alice@corp.example", "alice@corp.example\u{0}", 1);
    let attacks: Vec<(&str, String, &str)> = vec![
        (
            "UTF-7 with a hidden external reference",
            b64(&utf7),
            "encoding `UTF-7`",
        ),
        (
            "UTF-16 without a byte-order mark",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &utf16),
            "U+0000",
        ),
        ("ISO-8859-1", b64(&latin1), "encoding `ISO-8859-1`"),
        ("XML 1.1", b64(&xml11), "version `1.1`"),
        ("a NUL character", b64(&nul), "U+0000"),
    ];
    for (name, message, reason) in attacks {
        let trip = f.post(LEGACY, &message).await;
        assert_eq!(trip.status, 400, "{name} was not refused: {trip:?}");
        assert_refused(&f, &trip, reason);
    }
    // Give a fetch, had one started, time to arrive.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        listener.hits(),
        0,
        "a reference hidden in another encoding was fetched"
    );
    assert_eq!(
        f.legacy.hits(),
        0,
        "a re-encoded response reached the backend"
    );
    // A genuine UTF-8 declaration is fine.
    let declared = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>{body}");
    let trip = f
        .browser()
        .post_saml_response(&f.acs(LEGACY), &b64(&declared), None)
        .await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", f.gw.logs());
}

/// What samael leaves unchecked on the Response around a valid signed assertion: a signed
/// Response must name its Destination, its own status must be Success, and its Issuer must be
/// the assertion's (the IdP's).
#[tokio::test]
async fn the_response_around_a_valid_assertion_must_say_where_it_goes_success_and_who_sent_it() {
    let f = fixture().await;
    let cases = [
        (json!({ "omit_destination": true }), "no Destination"),
        (
            json!({ "status_code": "urn:oasis:names:tc:SAML:2.0:status:Requester" }),
            "status:Requester",
        ),
        (
            json!({ "response_issuer": "https://evil.example/idp" }),
            "https://evil.example/idp",
        ),
    ];
    for (overrides, reason) in cases {
        let mut o = overrides.clone();
        o["sp"] = json!(f.sp_entity(LEGACY));
        let (_, response) = f.idp.forge(o).await;
        let trip = f.post(LEGACY, &response).await;
        assert_refused(&f, &trip, reason);
    }
    assert_eq!(f.legacy.hits(), 0);
    let (_, good) = f.idp.forge(json!({ "sp": f.sp_entity(LEGACY) })).await;
    let trip = f.post(LEGACY, &good).await;
    assert_eq!(trip.status, 200, "{trip:?}");
}

/// samael read `SessionIndex` as an attribute, so every IdP logout ended all of a user's
/// sessions. One user, two browsers: a logout naming the first browser's IdP session ends only
/// that one.
#[tokio::test]
async fn an_idp_logout_naming_one_session_index_ends_only_that_session() {
    let f = fixture().await;
    let first = f.signed_in("alice").await;
    let second = f.signed_in("alice").await;
    let sessions = f.idp.sessions().await;
    let first_index = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["user"] == "alice")
        .unwrap()["session_index"]
        .as_str()
        .unwrap()
        .to_string();
    let logout = f
        .idp
        .idp_logout_url_for_session(&f.sp_entity(WIKI), "alice", Some(&first_index))
        .await;
    let trip = first.follow(&logout).await;
    assert!(trip.visited(&f.idp.url("/slo?SAMLResponse=")), "{trip:?}");
    assert_eq!(
        first.get(&f.url(WIKI, "/")).await.status(),
        302,
        "first still signed in"
    );
    let page = second.get(&f.url(WIKI, "/")).await;
    assert_eq!(page.status(), 200, "the other browser's session ended too");
    let echo: serde_json::Value = page.json().await.unwrap();
    assert_eq!(
        header_values(&echo, "x-remote-user"),
        ["alice@corp.example"]
    );
}

/// The end of our own logout: the LogoutResponse must be signed by the IdP, answer a
/// LogoutRequest we sent (once), and say Success. The local session ends either way; a
/// failed confirmation says so and is audited.
#[tokio::test]
async fn logout_responses_are_verified_and_a_failed_one_says_so() {
    let f = fixture().await;
    let browser = f.signed_in("alice").await;
    let trip = browser.follow(&f.url(WIKI, "/logout")).await;
    assert_eq!(trip.status, 200, "{trip:?}");
    assert!(trip.body.contains("Signed out"), "{}", trip.body);
    assert!(!trip.body.contains("did not confirm"), "{}", trip.body);
    let genuine = trip
        .hops
        .iter()
        .find(|h| h.contains("/.portcullis/saml/slo?SAMLResponse="))
        .unwrap()
        .clone();
    let unsigned_failure = {
        let xml = format!(
            "<samlp:LogoutResponse xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_r1\" Version=\"2.0\" IssueInstant=\"2026-01-01T00:00:00Z\" InResponseTo=\"_x\"><saml:Issuer>{}</saml:Issuer><samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Requester\"/></samlp:Status></samlp:LogoutResponse>",
            f.idp.url("/metadata")
        );
        let mut deflater =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut deflater, xml.as_bytes()).unwrap();
        let encoded = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            deflater.finish().unwrap(),
        );
        f.url(
            WIKI,
            &format!(
                "/.portcullis/saml/slo?SAMLResponse={}",
                url::form_urlencoded::byte_serialize(encoded.as_bytes()).collect::<String>()
            ),
        )
    };
    for (name, url) in [
        (
            "not base64",
            f.url(WIKI, "/.portcullis/saml/slo?SAMLResponse=not-base64"),
        ),
        ("unsigned, status Requester", unsigned_failure),
        ("the genuine response again (already answered)", genuine),
    ] {
        let r = browser.follow(&url).await;
        assert_eq!(r.status, 200, "{name}: {r:?}");
        assert!(r.body.contains("did not confirm"), "{name}: {}", r.body);
    }
    let logs = f.gw.logs();
    assert!(
        logs.matches("event=\"logout_failure\"").count()
            + logs.matches("event=logout_failure").count()
            >= 3,
        "{logs}"
    );
}

/// Strict IdPs compare the NameID of a LogoutRequest with the one they issued, qualifiers
/// included: it goes back exactly as received.
#[tokio::test]
async fn our_logout_request_sends_the_name_id_back_with_its_qualifiers() {
    let f = fixture().await;
    let (_, response) = f
        .idp
        .forge(json!({
            "sp": f.sp_entity(LEGACY),
            "name_qualifier": "https://idp.corp.example",
            "sp_name_qualifier": f.sp_entity(LEGACY),
        }))
        .await;
    let browser = f.browser();
    let trip = browser
        .post_saml_response(&f.acs(LEGACY), &response, None)
        .await;
    assert_eq!(trip.status, 200, "{trip:?}");
    let out = browser.follow(&f.url(LEGACY, "/logout")).await;
    assert!(out.visited(&f.idp.url("/slo?SAMLRequest=")), "{out:?}");
    let logouts = f.idp.logouts().await;
    let xml = logouts["requests"][0]["xml"].as_str().unwrap();
    assert!(
        xml.contains("NameQualifier=\"https://idp.corp.example\""),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("SPNameQualifier=\"{}\"", f.sp_entity(LEGACY))),
        "{xml}"
    );
}
