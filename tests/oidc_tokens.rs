//! ID token verification against real tokens from a real OpenID Provider: a token the IdP
//! issued to another client must be refused, even though its signature is genuine.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use base64::Engine;
use portcullis::config::{OidcIdpConfig, TokenAuth};
use portcullis::idp::http::IdpHttpClient;
use portcullis::idp::oidc::{LoginError, OidcProvider};
use portcullis::secret::Secret;
use std::time::Duration;
use support::browser::{query_param, Browser};
use support::idp::{IdpClient, TestIdp};

const OTHER_REDIRECT: &str = "http://other-app.localhost:9/cb";

fn provider(idp: &TestIdp, client: &IdpClient) -> OidcProvider {
    provider_with_skew(idp, client, Duration::from_secs(60))
}

fn provider_with_skew(idp: &TestIdp, client: &IdpClient, clock_skew: Duration) -> OidcProvider {
    let config = OidcIdpConfig {
        issuer: idp.issuer.clone(),
        client_id: client.id.clone(),
        client_secret: Secret::new(client.secret.clone()),
        scopes: vec!["openid".into(), "email".into(), "groups".into()],
        auth_params: vec![],
        token_auth: TokenAuth::ClientSecretBasic,
        userinfo: false,
        groups_claim: "groups".into(),
        extra_claims: vec![],
        clock_skew,
        refresh_interval: None,
        allow_insecure_issuer: true,
        post_logout_redirect_uri: None,
        ca_pem: None,
    };
    let http = IdpHttpClient::new(
        "test",
        Duration::from_secs(5),
        Duration::from_secs(10),
        None,
    )
    .unwrap();
    OidcProvider::new("corp", config, http, portcullis::clock::system())
}

/// Runs a code flow at the IdP as `client` (no gateway involved) and returns its ID token.
async fn id_token_for(idp: &TestIdp, client: &IdpClient, nonce: &str) -> String {
    let verifier = "a-test-pkce-verifier-that-is-long-enough-0123456789";
    let digest = openssl::sha::sha256(verifier.as_bytes());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    let authorize = format!(
        "{}/auth?response_type=code&client_id={}&redirect_uri={}&scope=openid%20email%20groups&state=s&nonce={nonce}&code_challenge={challenge}&code_challenge_method=S256",
        idp.issuer, client.id, OTHER_REDIRECT
    );
    let browser = Browser::new(idp.addr, &[]);
    let form = browser.follow(&authorize).await;
    let back = browser.sign_in_stop_at(&form, OTHER_REDIRECT).await;
    let code = query_param(&back, "code").unwrap();
    let response: serde_json::Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/token", idp.issuer))
        .basic_auth(&client.id, Some(&client.secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", OTHER_REDIRECT),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    response["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{response}"))
        .to_string()
}

#[tokio::test]
async fn id_token_for_another_audience_is_refused() {
    let gateway = IdpClient::gateway("portcullis", &["http://wiki.localhost:9".to_string()]);
    let mut other = IdpClient::gateway("other-app", &[]);
    other.redirect_uris = vec![OTHER_REDIRECT.to_string()];
    let idp = TestIdp::start(&[gateway.clone(), other.clone()]).await;
    let token = id_token_for(&idp, &other, "n-0123456789").await;

    // Genuine signature, right issuer, right nonce, but issued to `other-app`.
    let ours = provider(&idp, &gateway);
    ours.discover().await.unwrap();
    match ours.verify_id_token(&token, "n-0123456789").await {
        Err(LoginError::IdToken(reason)) => {
            assert!(reason.to_lowercase().contains("audience"), "{reason}")
        }
        Err(e) => panic!("refused for the wrong reason: {e}"),
        Ok(identity) => panic!("accepted a token for another client: {identity:?}"),
    }

    // Control: the client it was issued to accepts it — and only with the right nonce.
    let theirs = provider(&idp, &other);
    theirs.discover().await.unwrap();
    let identity = theirs
        .verify_id_token(&token, "n-0123456789")
        .await
        .unwrap();
    assert_eq!(identity.subject, "alice");
    assert_eq!(identity.email.as_deref(), Some("alice@corp.example"));
    assert_eq!(
        identity.groups,
        [
            std::sync::Arc::<str>::from("staff"),
            std::sync::Arc::<str>::from("finance")
        ]
    );
    assert!(matches!(
        theirs.verify_id_token(&token, "another-nonce").await,
        Err(LoginError::IdToken(r)) if r.to_lowercase().contains("nonce")
    ));
    // A tampered payload breaks the signature.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&parts[1])
        .unwrap();
    let forged = String::from_utf8(payload)
        .unwrap()
        .replace("alice@corp.example", "admin@corp.example");
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged);
    assert!(matches!(
        theirs
            .verify_id_token(&parts.join("."), "n-0123456789")
            .await,
        Err(LoginError::IdToken(_))
    ));
}

#[tokio::test]
async fn rotated_signing_key_is_fetched_once_then_rate_limited() {
    let gateway = IdpClient::gateway("portcullis", &["http://wiki.localhost:9".to_string()]);
    let mut other = IdpClient::gateway("other-app", &[]);
    other.redirect_uris = vec![OTHER_REDIRECT.to_string()];
    let clients = [gateway, other.clone()];
    let first = TestIdp::start(&clients).await;
    let addr = first.addr;
    let provider = provider(&first, &other);
    provider.discover().await.unwrap();
    let token = id_token_for(&first, &other, "n-1").await;
    provider.verify_id_token(&token, "n-1").await.unwrap();
    drop(first);

    // The IdP restarts with a new signing key: the cached JWKS does not know its key id.
    let second = TestIdp::start_on(addr, &clients).await;
    let rotated = id_token_for(&second, &other, "n-2").await;
    let identity = provider.verify_id_token(&rotated, "n-2").await.unwrap();
    assert_eq!(identity.subject, "alice");
    drop(second);

    // Another rotation right away: no second JWKS fetch within the rate limit, so refused.
    let third = TestIdp::start_on(addr, &clients).await;
    let again = id_token_for(&third, &other, "n-3").await;
    match provider.verify_id_token(&again, "n-3").await {
        Err(LoginError::IdToken(reason)) => {
            assert!(reason.to_lowercase().contains("key"), "{reason}")
        }
        other => panic!(
            "expected an unknown-key refusal, got {:?}",
            other.map(|i| i.subject)
        ),
    }
}

#[tokio::test]
async fn expired_id_token_is_refused_beyond_the_clock_skew() {
    let mut other = IdpClient::gateway("other-app", &[]);
    other.redirect_uris = vec![OTHER_REDIRECT.to_string()];
    let idp = TestIdp::start_with_id_token_ttl(std::slice::from_ref(&other), 2).await;
    // Issued with exp = iat + 2 s (iat in whole seconds): valid now, expired 2.1 s later.
    let token = id_token_for(&idp, &other, "n-exp").await;
    let fetched = std::time::Instant::now();
    let strict = provider_with_skew(&idp, &other, Duration::ZERO);
    strict.discover().await.unwrap();
    strict.verify_id_token(&token, "n-exp").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(fetched.elapsed())).await;
    match strict.verify_id_token(&token, "n-exp").await {
        Err(LoginError::IdToken(reason)) => assert!(reason.contains("expired"), "{reason}"),
        other => panic!("expired token accepted: {:?}", other.map(|i| i.subject)),
    }
    // A minute of tolerated skew still accepts it.
    let lenient = provider(&idp, &other);
    lenient.discover().await.unwrap();
    lenient.verify_id_token(&token, "n-exp").await.unwrap();
}
