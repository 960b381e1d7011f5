//! A hostile OpenID Provider (tests/idp/hostile-op.mjs, written for the harness: the real
//! oidc-provider signs correctly and cannot be made to do this): ID tokens forged or bent in
//! every way a verifier has been fooled before, JWKS documents full of keys nobody should use,
//! and a token endpoint that redirects, hangs or floods. Each login is refused with a named
//! reason in the audit log, nothing reaches the app, and the gateway answers every time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::browser::{Browser, Trip};
use support::node::NodeService;
use support::*;

const APP: &str = "ledger.localhost";
const CLIENT_ID: &str = "portcullis-under-attack";

/// The hostile provider, running.
struct HostileOp {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    _service: NodeService,
}

impl HostileOp {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let config = dir.path().join("op.json");
        std::fs::write(
            &config,
            json!({ "port": addr.port(), "client_id": CLIENT_ID }).to_string(),
        )
        .unwrap();
        let service =
            NodeService::start("hostile-op.mjs", &config, dir.path().join("op.log")).await;
        Self {
            addr,
            dir,
            _service: service,
        }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    /// Chooses what `/jwks` answers from now on.
    async fn set_jwks(&self, mode: &str) {
        let url = format!("{}/test/jwks?mode={mode}", self.issuer());
        let answer = http_client().post(url).send().await.unwrap();
        assert!(answer.status().is_success());
    }

    /// Makes the discovery document name `issuer` (not where it is served).
    async fn set_discovery_issuer(&self, issuer: &str) {
        let url = format!("{}/test/discovery-issuer?value={issuer}", self.issuer());
        let answer = http_client().post(url).send().await.unwrap();
        assert!(answer.status().is_success());
    }

    /// How often each endpoint was called.
    async fn calls(&self) -> Value {
        let url = format!("{}/test/calls", self.issuer());
        http_client()
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn gateway_toml(&self, extra: &str) -> String {
        let secret = self.dir.path().join("client.secret");
        std::fs::write(&secret, "not-checked-by-this-provider\n").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        format!(
            "[idp.hostile]\nkind = \"oidc\"\nissuer = \"{}\"\nallow_insecure_issuer = true\n\
             client_id = \"{CLIENT_ID}\"\nclient_secret_file = \"{}\"\n{extra}\n",
            self.issuer(),
            secret.display()
        )
    }
}

struct Fixture {
    op: HostileOp,
    gw: RunningGateway,
    app: Backend,
}

async fn fixture(jwks_at_start: &str) -> Fixture {
    let op = HostileOp::start().await;
    op.set_jwks(jwks_at_start).await;
    let app = echo_backend("ledger").await;
    let policy = format!(
        "{}[identity.headers]\n\"X-Remote-User\" = \"email\"\n\n\
         [[allow]]\nid = \"staff\"\nwhy = \"test\"\ngroups = [\"staff\"]\n",
        policy_head("ledger", APP, &app.url(), Some("hostile"))
    );
    let gw = GatewaySpec::new()
        // A provider that hangs is given up on after 2 s (the default is 10 s).
        .gateway_toml(&op.gateway_toml("timeout = \"2s\""))
        .policy("ledger.toml", policy)
        .start()
        .await;
    Fixture { op, gw, app }
}

/// What one sign-in through the provider behaving as `scenario` ended with.
async fn sign_in(f: &Fixture, scenario: &str) -> Trip {
    let browser = Browser::new(f.gw.http, &[APP]);
    let first = browser.get(&f.gw.app_url(APP, "/books")).await;
    assert_eq!(first.status(), 302, "{scenario}: sent to the provider");
    let authorize = first.headers()["location"].to_str().unwrap().to_string();
    assert!(authorize.starts_with(&f.op.issuer()), "{authorize}");
    browser
        .follow(&format!("{authorize}&scenario={scenario}"))
        .await
}

/// The `login_failure` audit lines, in order.
fn failures(gw: &RunningGateway) -> Vec<String> {
    gw.logs()
        .lines()
        .filter(|l| l.contains("event=\"login_failure\"") || l.contains("event=login_failure"))
        .map(str::to_string)
        .collect()
}

/// Waits for the `n`th login failure's audit line.
async fn nth_failure(gw: &RunningGateway, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(line) = failures(gw).get(n - 1) {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no audit line for login failure {n}:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Tries each scenario in turn: refused with `status`, its audit reason holding `reason`.
async fn assert_refused(f: &Fixture, cases: &[(&str, u16, &str)]) {
    for (scenario, status, reason) in cases {
        let seen = failures(&f.gw).len();
        let started = Instant::now();
        let trip = sign_in(f, scenario).await;
        assert_eq!(trip.status, *status, "{scenario}: {trip:?}");
        assert!(
            trip.body.contains("Sign-in")
                && !trip.body.contains("mallory")
                && !trip.final_url().contains("/books"),
            "{scenario}: a clear page, not the app: {trip:?}"
        );
        // Bounded: the slowest case waits out the 2 s timeout once.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{scenario} took {:?}",
            started.elapsed()
        );
        let line = nth_failure(&f.gw, seen + 1).await;
        assert!(
            line.to_lowercase().contains(&reason.to_lowercase()),
            "{scenario}: the audit reason should name {reason:?}:\n{line}"
        );
        assert!(line.contains("idp=\"hostile\""), "{line}");
    }
}

#[tokio::test]
async fn forged_and_bent_id_tokens_are_refused_each_with_its_reason() {
    let f = fixture("normal").await;
    // The control: the same provider, behaving, signs Mallory in (so the refusals below are
    // the verifier's doing, not a broken harness).
    let good = sign_in(&f, "good").await;
    assert_eq!(good.status, 200, "{good:?}");
    assert_eq!(f.app.hits(), 1);

    assert_refused(
        &f,
        &[
            ("alg-none", 400, "no signature found"),
            ("hs256-with-public-key", 400, "algorithm `hs256` is not one of: rs256"),
            ("no-kid", 400, "ambiguous key identification"),
            ("unknown-kid", 400, "no matching key found"),
            ("signed-by-other-key", 400, "bad signature"),
            ("iat-in-future", 400, "issued in the future"),
            ("no-exp", 400, "token response unreadable: failed to parse server response: failed to parse payload json: error(\"missing field `exp`\""),
            ("expired", 400, "expired"),
            ("untrusted-audience-no-azp", 400, "audience"),
            ("azp-other-client", 400, "not a trusted audience"),
            ("not-our-audience", 400, "audience"),
            ("wrong-nonce", 400, "nonce"),
            ("no-nonce", 400, "nonce"),
            ("other-issuer", 400, "issuer"),
            ("no-sub", 400, "token response unreadable: failed to parse server response: failed to parse payload json: error(\"missing field `sub`\""),
            ("garbage", 400, "token response unreadable: failed to parse server response: failed to parse header json"),
        ],
    )
    .await;
    // The unknown key id made the gateway look at the JWKS again, once.
    let calls = f.op.calls().await;
    assert_eq!(calls["/jwks"], 2, "{calls}");
    assert_eq!(f.app.hits(), 1, "no refused login reached the app");
    assert!(!f.gw.logs().contains("panicked"), "{}", f.gw.logs());
}

#[tokio::test]
async fn a_token_endpoint_that_redirects_hangs_or_floods_is_refused_in_bounded_time() {
    let f = fixture("normal").await;
    assert_refused(
        &f,
        &[
            // Never followed: the gateway does not go where a provider points it.
            (
                "token-redirects",
                400,
                "code exchange failed: other error: server returned empty error response",
            ),
            (
                "token-not-json",
                400,
                "unexpected response content-type: \"text/html\"",
            ),
            ("token-no-id-token", 400, "no id_token"),
            // Read up to 1 MiB, then given up on.
            ("token-huge", 503, "larger than"),
            // Given up on after the IdP's `timeout` (2 s here), with the unavailable page.
            ("token-hangs", 503, "token endpoint unreachable"),
        ],
    )
    .await;
    let calls = f.op.calls().await;
    assert!(calls.get("/token-elsewhere").is_none(), "{calls}");
    assert_eq!(f.app.hits(), 0);
    // Still serving: the control login works after all of that.
    let good = sign_in(&f, "good").await;
    assert_eq!(good.status, 200, "{good:?}");
}

#[tokio::test]
async fn a_jwks_of_unusual_keys_is_read_and_only_the_real_keys_verify() {
    // Symmetric keys, a 64 Kib modulus, a 4 Kib exponent, unknown curves and key types, keys
    // that are not base64, and an encryption key: all skipped or refused, never fatal.
    let f = fixture("unusual").await;
    let good = sign_in(&f, "good").await;
    assert_eq!(good.status, 200, "the real keys still work: {good:?}");
    assert_refused(
        &f,
        &[
            // A symmetric key published in the JWKS is a key everyone has.
            (
                "hs256-with-shared-key",
                400,
                "algorithm `hs256` is not one of: rs256",
            ),
            ("kid-of-huge-key", 400, "modulus too large"),
            (
                "hs256-with-public-key",
                400,
                "algorithm `hs256` is not one of: rs256",
            ),
        ],
    )
    .await;
    assert_eq!(f.app.hits(), 1);
}

#[tokio::test]
async fn an_oversized_or_broken_jwks_on_refetch_keeps_the_keys_already_known() {
    let f = fixture("normal").await;
    f.op.set_jwks("oversized").await;
    // An unknown key id makes the gateway re-fetch: the 2 MiB answer is refused.
    assert_refused(&f, &[("unknown-kid", 400, "larger than")]).await;
    let calls = f.op.calls().await;
    assert_eq!(calls["/jwks"], 2, "{calls}");
    // The keys it had still verify.
    let good = sign_in(&f, "good").await;
    assert_eq!(good.status, 200, "{good:?}");
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_never_used() {
    let op = HostileOp::start().await;
    op.set_discovery_issuer("http://idp.attacker.example").await;
    let app = echo_backend("ledger").await;
    let gw = GatewaySpec::new()
        .gateway_toml(&op.gateway_toml(""))
        .policy(
            "ledger.toml",
            format!(
                "{}[[allow]]\nid = \"staff\"\nwhy = \"test\"\ngroups = [\"staff\"]\n",
                policy_head("ledger", APP, &app.url(), Some("hostile"))
            ),
        )
        .idps_may_be_down()
        .start()
        .await;
    let logs = gw.wait_for_log("idp.attacker.example").await;
    assert!(logs.to_lowercase().contains("issuer"), "{logs}");
    // No sign-in starts against a provider whose discovery failed: a clear page, no redirect.
    let browser = Browser::new(gw.http, &[APP]);
    let page = browser.get(&gw.app_url(APP, "/")).await;
    assert_eq!(page.status(), 503);
    assert!(page.headers().get("location").is_none());
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("temporarily unavailable"));
    assert_eq!(app.hits(), 0);
}
