//! Bearer tokens for APIs, end to end: the real oidc-provider issues JWT access tokens (RFC
//! 9068, resource indicators) and opaque ones (checked by introspection, RFC 7662) to API
//! clients and users; the gateway admits callers by audience, client and scope, hands the
//! backend identity headers from the token's claims, answers as RFC 6750 says, and refuses
//! every forged, foreign or stale token tried here. A second, independent IdP issues tokens
//! for the same audience that must not count.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use serde_json::{json, Value};
use support::browser::Browser;
use support::idp::{IdpClient, IdpOptions, TestIdp};
use support::{echo_backend, free_addr, header_values, Backend, GatewaySpec, RunningGateway};

const ORDERS: &str = "orders.localhost";
const LEDGER: &str = "ledger.localhost";
const ORDERS_API: &str = "api://orders";
const LEDGER_API: &str = "api://ledger";

const RESOURCES: &[(&str, &str, &str)] = &[
    (ORDERS_API, "orders:read orders:write", "jwt"),
    (LEDGER_API, "ledger:read", "opaque"),
    ("api://other", "other:read", "jwt"),
];

struct Fixture {
    idp: TestIdp,
    partner: TestIdp,
    gw: RunningGateway,
    /// The API client whose tokens the orders app accepts.
    caller: IdpClient,
    /// A client of the same IdP the orders app does not list.
    stranger: IdpClient,
    /// The partner IdP's API client.
    partner_caller: IdpClient,
    _backends: Vec<Backend>,
}

impl Fixture {
    fn http(&self) -> reqwest::Client {
        self.gw.client(&[ORDERS, LEDGER])
    }

    /// A call to `path` on `host` with `Authorization: Bearer <token>`: status, the
    /// `WWW-Authenticate` challenge, and the JSON body.
    async fn call(
        &self,
        method: &str,
        host: &str,
        path: &str,
        token: &str,
    ) -> (u16, String, Value) {
        let response = self
            .http()
            .request(method.parse().unwrap(), self.gw.app_url(host, path))
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(" | ");
        let body = response.json().await.unwrap_or(Value::Null);
        (status, challenge, body)
    }
}

fn orders_policy(upstream: &str) -> String {
    let head = support::policy_head("orders", ORDERS, upstream, Some("corp"));
    format!(
        r#"{head}
[bearer]
audiences = ["{ORDERS_API}"]
client_ids = ["orders-client"]
paths = ["/api/**", "/"]

[identity.headers]
"X-Remote-User" = "email"
"X-Subject" = "sub"
"X-Groups" = {{ claim = "groups", join = "," }}

[[allow]]
id = "staff-pages"
why = "Staff read the order pages"
groups = ["staff"]
paths = ["/"]

[[allow]]
id = "api-read"
why = "Callers granted orders:read may read orders"
paths = ["/api/**"]
methods = ["GET"]
scopes = ["orders:read"]

[[allow]]
id = "api-write"
why = "Callers granted orders:write may place orders"
paths = ["/api/**"]
methods = ["POST"]
scopes = ["orders:write"]

[[test]]
user = {{ sub = "orders-client", scopes = ["orders:read"] }}
request = "GET /api/orders"
expect = "allow:api-read"

[[test]]
user = {{ sub = "orders-client", scopes = ["orders:read"] }}
request = "POST /api/orders"
expect = "no_allow"
"#
    )
}

fn ledger_policy(upstream: &str) -> String {
    let head = support::policy_head("ledger", LEDGER, upstream, Some("corp"));
    format!(
        r#"{head}
[bearer]
audiences = ["{LEDGER_API}"]
introspect = true

[identity.headers]
"X-Subject" = "sub"

[[allow]]
id = "readers"
why = "Ledger readers"
scopes = ["ledger:read"]
"#
    )
}

async fn fixture() -> Fixture {
    let http = free_addr();
    let origins = vec![format!("http://{ORDERS}:{}", http.port())];
    let gateway_client = IdpClient::gateway("portcullis", &origins);
    let caller = IdpClient::api_caller("orders-client");
    let stranger = IdpClient::api_caller("stranger-client");
    let options = IdpOptions {
        resource_servers: RESOURCES,
        ..IdpOptions::default()
    };
    let idp = TestIdp::start_with(
        &[gateway_client.clone(), caller.clone(), stranger.clone()],
        options,
    )
    .await;
    // Same client id at the partner: only the issuer and its keys tell the tokens apart.
    let partner_caller = IdpClient::api_caller("orders-client");
    let partner_gateway = IdpClient::gateway("portcullis-partner", &origins);
    let partner =
        TestIdp::start_with(&[partner_gateway.clone(), partner_caller.clone()], options).await;
    let orders = echo_backend("orders").await;
    let ledger = echo_backend("ledger").await;
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&idp.gateway_toml("corp", &gateway_client, ""))
        .gateway_toml(&partner.gateway_toml("partner", &partner_gateway, ""))
        .policy("orders.toml", orders_policy(&orders.url()))
        .policy("ledger.toml", ledger_policy(&ledger.url()))
        .start()
        .await;
    Fixture {
        idp,
        partner,
        gw,
        caller,
        stranger,
        partner_caller,
        _backends: vec![orders, ledger],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_access_tokens_admit_api_callers_by_scope_beside_browser_sessions() {
    let f = fixture().await;

    // A service's own token (client credentials), allowed to read.
    let reader = f
        .idp
        .client_token(&f.caller, ORDERS_API, "orders:read")
        .await;
    let (status, _, echo) = f.call("GET", ORDERS, "/api/orders", &reader).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(header_values(&echo, "x-subject"), ["orders-client"]);
    // The token reaches the API too, for its own checks.
    assert_eq!(
        header_values(&echo, "authorization"),
        [format!("Bearer {reader}")]
    );
    // Writing needs orders:write: 403 insufficient_scope, naming it.
    let (status, challenge, body) = f.call("POST", ORDERS, "/api/orders", &reader).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        challenge,
        "Bearer realm=\"orders\", error=\"insufficient_scope\", scope=\"orders:write\""
    );
    assert_eq!(body["error"], "insufficient_scope");

    // A user's token (authorization code + PKCE at the IdP): identity from its claims.
    let alice = f
        .idp
        .user_token(&f.caller, "alice", ORDERS_API, "orders:read orders:write")
        .await;
    let (status, _, echo) = f.call("POST", ORDERS, "/api/orders", &alice).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(
        header_values(&echo, "x-remote-user"),
        ["alice@corp.example"]
    );
    assert_eq!(header_values(&echo, "x-subject"), ["alice"]);
    assert_eq!(header_values(&echo, "x-groups"), ["staff,finance"]);
    let audit = f.gw.wait_for_log("via=\"bearer\"").await;
    assert!(audit.contains("token_client=orders-client"), "{audit}");
    assert!(!audit.contains(&alice), "the token itself is never logged");

    // No token on an API call: 401 with a Bearer challenge (no error code: none was sent).
    let response = f
        .http()
        .get(f.gw.app_url(ORDERS, "/api/orders"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let challenges: Vec<&str> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        challenges.contains(&"Bearer realm=\"orders\""),
        "{challenges:?}"
    );

    // The same app still serves people in browsers, by session.
    let browser = Browser::new(f.gw.http, &[ORDERS]);
    let trip = browser
        .login(&f.gw.app_url(ORDERS, "/"), "bob", "bob-pw")
        .await;
    assert_eq!(trip.status, 200, "{trip:?}");
    assert_eq!(
        header_values(&trip.json(), "x-remote-user"),
        ["bob@corp.example"]
    );
    // A browser session has no scopes: the API paths stay closed to it.
    let api = browser.get(&f.gw.app_url(ORDERS, "/api/orders")).await;
    assert_eq!(api.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_foreign_and_stale_tokens_are_refused() {
    use base64::Engine;
    let f = fixture().await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let valid = f
        .idp
        .client_token(&f.caller, ORDERS_API, "orders:read")
        .await;
    let (status, _, body) = f.call("GET", ORDERS, "/api/orders", &valid).await;
    assert_eq!(status, 200, "the genuine token works: {body}");
    let payload = valid.split('.').nth(1).unwrap().to_string();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&payload)
            .unwrap(),
    )
    .unwrap();
    let now = support::unix_now();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        change(&mut c);
        c
    };

    // `alg: none` with the genuine claims.
    let unsigned = format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"at+jwt"}"#));
    // HS256 keyed with the IdP's RSA public key (PEM), the classic key-confusion forgery.
    let jwks = f.idp.jwks().await;
    let key = &jwks["keys"][0];
    let decode = |field: &str| {
        openssl::bn::BigNum::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(key[field].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let public_pem = openssl::rsa::Rsa::from_public_components(decode("n"), decode("e"))
        .unwrap()
        .public_key_to_pem()
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = key["kid"].as_str().map(str::to_string);
    let confused = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    let signed = |claims: Value| f.idp.sign(json!({ "typ": "at+jwt" }), claims);

    let refused: Vec<(&str, String)> = vec![
        ("unsigned (alg none)", unsigned),
        ("HS256 with the RSA public key", confused),
        (
            "a genuine token for another API",
            f.idp
                .client_token(&f.caller, "api://other", "other:read")
                .await,
        ),
        (
            "expired",
            signed(with(&|c| {
                c["iat"] = json!(now - 600);
                c["exp"] = json!(now - 300);
            }))
            .await,
        ),
        (
            "not valid yet",
            signed(with(&|c| c["nbf"] = json!(now + 600))).await,
        ),
        (
            "another issuer, signed with this IdP's key",
            signed(with(&|c| c["iss"] = json!("https://evil.example"))).await,
        ),
        (
            "a genuine token from another IdP, same audience and client id",
            f.partner
                .client_token(&f.partner_caller, ORDERS_API, "orders:read")
                .await,
        ),
        (
            "a client the app does not accept",
            f.idp
                .client_token(&f.stranger, ORDERS_API, "orders:read")
                .await,
        ),
        (
            "an ID token (nonce, typ JWT)",
            f.idp
                .sign(
                    json!({ "typ": "JWT" }),
                    with(&|c| {
                        c["nonce"] = json!("n-1");
                    }),
                )
                .await,
        ),
        (
            "a logout token",
            f.idp
                .sign(json!({ "typ": "logout+jwt" }), claims.clone())
                .await,
        ),
        (
            "without exp",
            signed(with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }))
            .await,
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                valid.split('.').next().unwrap(),
                b64(with(&|c| c["scope"] = json!("orders:read orders:write"))
                    .to_string()
                    .as_bytes()),
                valid.split('.').nth(2).unwrap()
            ),
        ),
        (
            "opaque garbage (this app does not introspect)",
            "x".repeat(40),
        ),
    ];
    for (what, token) in &refused {
        let (status, challenge, body) = f.call("GET", ORDERS, "/api/orders", token).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(
            challenge, "Bearer realm=\"orders\", error=\"invalid_token\"",
            "{what}"
        );
        assert_eq!(body["error"], "invalid_token", "{what}");
        assert!(
            !body.to_string().contains(token.as_str()),
            "{what}: token echoed"
        );
    }
    // A caller with a valid token but without the scope the rule asks for.
    let no_scope = f
        .idp
        .client_token(&f.caller, ORDERS_API, "orders:write")
        .await;
    let (status, _, body) = f.call("GET", ORDERS, "/api/orders", &no_scope).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "insufficient_scope");

    // Ambiguous requests: two Authorization headers, or a bearer value that is not one token.
    let two = f
        .http()
        .get(f.gw.app_url(ORDERS, "/api/orders"))
        .header("authorization", format!("Bearer {valid}"))
        .header("authorization", "Bearer other")
        .send()
        .await
        .unwrap();
    assert_eq!(two.status(), 400);
    let (status, challenge, body) = f.call("GET", ORDERS, "/api/orders", "a b").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{challenge}"
    );

    let logs = f.gw.wait_for_log("event=\"bearer_refused\"").await;
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(!logs.contains(&valid), "a token reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_are_introspected_and_the_answer_cached() {
    let f = fixture().await;
    let token = f
        .idp
        .client_token(&f.caller, LEDGER_API, "ledger:read")
        .await;
    assert_eq!(token.split('.').count(), 1, "an opaque token: {token}");
    let before = f.idp.introspections().await;
    for _ in 0..3 {
        let (status, _, echo) = f.call("GET", LEDGER, "/entries", &token).await;
        assert_eq!(status, 200, "{echo}");
        assert_eq!(header_values(&echo, "x-subject"), ["orders-client"]);
    }
    assert_eq!(
        f.idp.introspections().await - before,
        1,
        "one introspection for three calls"
    );
    // A token the IdP never issued is inactive there.
    let (status, challenge, _) = f
        .call("GET", LEDGER, "/entries", "not-a-real-token-0123")
        .await;
    assert_eq!(status, 401);
    assert!(challenge.contains("invalid_token"), "{challenge}");
    // An opaque token for the ledger is no JWT the orders app could read.
    let (status, _, _) = f.call("GET", ORDERS, "/api/orders", &token).await;
    assert_eq!(status, 401);
    // A JWT for the orders API is not the ledger's audience.
    let orders = f
        .idp
        .client_token(&f.caller, ORDERS_API, "orders:read")
        .await;
    let (status, _, _) = f.call("GET", LEDGER, "/entries", &orders).await;
    assert_eq!(status, 401);

    // With the IdP down an unknown opaque token cannot be checked: 503, never a pass.
    let issuer = f.idp.issuer.clone();
    drop(f.idp);
    let response = support::http_client()
        .get(format!("{issuer}/jwks"))
        .send()
        .await;
    assert!(response.is_err(), "the IdP is down");
    let response =
        f.gw.client(&[LEDGER])
            .get(f.gw.app_url(LEDGER, "/entries"))
            .header("authorization", "Bearer never-seen-token-0123")
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "temporarily_unavailable"
    );
}
