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
