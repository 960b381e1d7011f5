//! SAML IdP metadata from a URL: loaded, refreshed, and the last good copy kept when a
//! refresh fails or brings metadata this gateway would refuse.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use portcullis::config::{MetadataSource, SamlIdpConfig};
use portcullis::idp::http::IdpHttpClient;
use portcullis::idp::saml::SamlProvider;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A metadata server whose answer (status, body) the test changes.
async fn metadata_server(answer: Arc<Mutex<(u16, String)>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let (status, body) = answer.lock().unwrap().clone();
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/metadata")
}

fn metadata(entity_id: &str, cert_pem: Option<&str>) -> String {
    support::saml_idp::metadata_with_certs(entity_id, &cert_pem.into_iter().collect::<Vec<_>>())
}

fn provider(url: &str) -> SamlProvider {
    let config = SamlIdpConfig {
        metadata: MetadataSource::Url(url.to_string()),
        metadata_refresh: Duration::from_secs(3600),
        sp_entity_id: None,
        sp_key: None,
        sp_cert_pem: None,
        sp_next_cert_pem: None,
        sp_next_key: None,
        require_encrypted_assertions: false,
        allow_sha1: false,
        authn_request_binding: None,
        signature_hash: Default::default(),
        sign_requests: false,
        want_assertions_signed: true,
        clock_skew: Duration::from_secs(60),
        max_response_bytes: 256 * 1024,
        name_id_format: None,
        email_attributes: vec!["email".into()],
        name_attributes: vec!["displayName".into()],
        groups_attributes: vec!["groups".into()],
        extra_attributes: Vec::new(),
        ca_pem: None,
        post_logout_redirect_uri: None,
    };
    let http =
        IdpHttpClient::new("test", Duration::from_secs(2), Duration::from_secs(5), None).unwrap();
    let clock = portcullis::clock::system();
    let stores = portcullis::session::Stores::memory(std::sync::Arc::new(
        portcullis::session::store::memory::MemoryStore::new(10, 10, clock.clone()),
    ));
    SamlProvider::new("corp-saml", config, http, clock, &stores).unwrap()
}

#[tokio::test]
async fn refresh_keeps_the_last_good_metadata_and_picks_up_a_good_change() {
    let (_, cert) = support::saml_idp::key_and_cert("idp");
    let answer = Arc::new(Mutex::new((503, String::new())));
    let url = metadata_server(answer.clone()).await;
    let p = provider(&url);

    // Unreachable at first: not ready, the reason on record.
    assert!(p.refresh().await.is_err());
    assert!(!p.is_ready());
    assert!(p.status().last_error.unwrap().contains("503"));

    *answer.lock().unwrap() = (200, metadata("https://idp.example/a", Some(&cert)));
    p.refresh().await.unwrap();
    assert!(p.is_ready());
    assert_eq!(p.idp_entity_id().as_deref(), Some("https://idp.example/a"));

    // Metadata without a signing key, an error status, garbage: each refresh fails and the
    // last good copy stays in force.
    for (status, body, why) in [
        (
            200,
            metadata("https://idp.example/evil", None),
            "no usable signing certificate",
        ),
        (500, String::new(), "HTTP 500"),
        (
            200,
            "<html>maintenance</html>".to_string(),
            "not a SAML EntityDescriptor",
        ),
    ] {
        *answer.lock().unwrap() = (status, body);
        let err = p.refresh().await.unwrap_err();
        assert!(err.contains(why), "{err}");
        assert!(p.is_ready());
        assert_eq!(p.idp_entity_id().as_deref(), Some("https://idp.example/a"));
    }

    // A good change (key rotation, new entity) is taken.
    let (_, rotated) = support::saml_idp::key_and_cert("idp-rotated");
    *answer.lock().unwrap() = (200, metadata("https://idp.example/b", Some(&rotated)));
    p.refresh().await.unwrap();
    assert_eq!(p.idp_entity_id().as_deref(), Some("https://idp.example/b"));
    assert!(p.status().last_error.is_none());
}
