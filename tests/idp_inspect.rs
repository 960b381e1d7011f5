//! `portcullis idp inspect`: a pasted SAML response (from the real samlify IdP, good and
//! tampered) or ID token (signed by the real oidc-provider's key, good and bad) is shown
//! with every check and its verdict; exit 0 only when the gateway would accept it; nonces and
//! signatures never printed.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use serde_json::json;
use std::path::Path;
use std::process::Command;
use support::idp::{IdpClient, TestIdp};
use support::saml_idp::TestSamlIdp;
use support::{echo_backend, free_addr, GatewaySpec};

const HR: &str = "hr.localhost";

fn inspect(config: &Path, idp: &str, extra: &[&str], message: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pasted.txt");
    std::fs::write(&file, message).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["idp", "inspect", "-c"])
        .arg(config)
        .args(["--idp", idp])
        .args(extra)
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_tokens_are_taken_apart_check_by_check() {
    let client = IdpClient::gateway("portcullis", &["http://wiki.localhost:1".to_string()]);
    let idp = TestIdp::start(std::slice::from_ref(&client)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "policies = \"policies\"\n[listen]\nhttp = \"127.0.0.1:18080\"\n{}",
            idp.gateway_toml("corp", &client, "")
        ),
    )
    .unwrap();
    let now = support::unix_now();
    let claims = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut c = json!({
            "iss": idp.issuer, "aud": client.id, "sub": "alice", "email": "alice@corp.example",
            "groups": ["staff"], "iat": now, "exp": now + 300, "nonce": "n-SECRET-NONCE-0123",
        });
        change(&mut c);
        c
    };
    let good = idp.sign(json!({}), claims(&|_| {})).await;
    let (code, said) = inspect(&config, "corp", &[], &good);
    assert_eq!(code, 0, "{said}");
    for line in [
        "PASS signature (the IdP's JWKS)",
        "PASS iss is the IdP's",
        "PASS aud names this client",
        "PASS exp, nbf, iat",
        "---- nonce: left aside",
        "PASS the gateway's ID token verification",
        "alice@corp.example",
        "verdict: the gateway would accept it",
    ] {
        assert!(said.contains(line), "{line}:\n{said}");
    }
    assert!(
        !said.contains("SECRET-NONCE"),
        "the nonce was printed:\n{said}"
    );
    let signature = good.rsplit('.').next().unwrap();
    assert!(!said.contains(signature), "the signature was printed");

    let other_client = idp
        .sign(json!({}), claims(&|c| c["aud"] = "someone-else".into()))
        .await;
    let (code, said) = inspect(&config, "corp", &[], &other_client);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("FAIL aud names this client"), "{said}");
    assert!(said.contains("PASS signature"), "{said}");
    assert!(said.contains("would refuse it"), "{said}");

    let expired = idp
        .sign(
            json!({}),
            claims(&|c| {
                c["iat"] = (now - 7200).into();
                c["exp"] = (now - 3600).into();
            }),
        )
        .await;
    let (code, said) = inspect(&config, "corp", &[], &expired);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("FAIL exp, nbf, iat (with the configured clock skew): expired"),
        "{said}"
    );
    assert!(said.contains("PASS aud names this client"), "{said}");

    // Claims changed after signing: the signature check says so.
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let payload = base64_url(&claims(&|c| c["email"] = "mallory@corp.example".into()).to_string());
    parts[1] = payload;
    let (code, said) = inspect(&config, "corp", &[], &parts.join("."));
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("FAIL signature (the IdP's JWKS): bad signature"),
        "{said}"
    );

    let (code, said) = inspect(&config, "corp", &[], "not a token at all");
    assert_eq!(code, 1);
    assert!(said.contains("FAIL shape"), "{said}");
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saml_responses_are_taken_apart_check_by_check() {
    let http = free_addr();
    let origin = format!("http://{HR}:{}", http.port());
    let idp = TestSamlIdp::start(&[format!("{origin}/.portcullis/saml/metadata")]).await;
    let hr = echo_backend("hr").await;
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&idp.gateway_toml("corp-saml", ""))
        .policy(
            "hr.toml",
            format!(
                "{}\n[[allow]]\nid = \"staff\"\nwhy = \"s\"\ngroups = [\"staff\"]\n",
                support::policy_head("hr", HR, &hr.url(), Some("corp-saml"))
            ),
        )
        .start()
        .await;
    let config = gw.config_path();
    let sp = format!("{origin}/.portcullis/saml/metadata");
    let (xml, base64) = idp.forge(json!({ "sp": sp, "user": "alice" })).await;

    // Base64 as posted, with the app's origin found from the policies.
    let (code, said) = inspect(&config, "corp-saml", &[], &base64);
    assert_eq!(code, 0, "{said}");
    for line in [
        "PASS structure",
        "PASS Destination is this ACS",
        "PASS status is Success",
        "PASS signature and conditions",
        "PASS audience, lifetime, AuthnStatement",
        "PASS Assertion Issuer is the IdP's",
        "---- InResponseTo: left aside",
        "alice@corp.example",
        "verdict: the gateway would accept it",
    ] {
        assert!(said.contains(line), "{line}:\n{said}");
    }
    assert!(!said.contains("SignatureValue"), "{said}");
    // The same response pasted as XML; and again (nothing was recorded: no replay).
    let (code, said) = inspect(&config, "corp-saml", &[], &xml);
    assert_eq!(code, 0, "{said}");

    // Meant for another app host: the destination and audience say so.
    let (code, said) = inspect(
        &config,
        "corp-saml",
        &["--origin", "https://other.corp.example"],
        &base64,
    );
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("FAIL Destination is this ACS"), "{said}");

    // One word changed in the signed assertion: the signature check fails.
    let tampered = xml.replacen("alice@corp.example", "mallory@corp.example", 1);
    assert_ne!(tampered, xml);
    let (code, said) = inspect(&config, "corp-saml", &[], &tampered);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("FAIL signature and conditions"), "{said}");

    // A response for another SP (its audience) is refused by the audience check.
    let (_, elsewhere) = idp
        .forge(json!({ "sp": sp, "user": "alice", "audience": "https://other.example/sp" }))
        .await;
    let (code, said) = inspect(&config, "corp-saml", &[], &elsewhere);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("FAIL audience") || said.contains("FAIL signature and conditions"),
        "{said}"
    );
}
