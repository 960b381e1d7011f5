//! A real SAML IdP (`samlify`, run by Node from `tests/idp/saml-idp.mjs`) on a loopback port,
//! with the same test users as the OpenID Provider and a fresh RSA signing key per start.
//! Its test hooks sign responses with chosen defects through samlify's own signing code.

use super::free_addr;
use super::idp::USERS;
use super::node::NodeService;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509NameBuilder, X509};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A PEM key and self-signed certificate (RSA 2048, SHA-256).
pub fn key_and_cert(cn: &str) -> (String, String) {
    rsa_key_and_cert(cn, 2048)
}

/// A PEM key and self-signed certificate with an RSA key of `bits` (SHA-256, a year).
pub fn rsa_key_and_cert(cn: &str, bits: u32) -> (String, String) {
    rsa_key_and_cert_for_days(cn, bits, 365)
}

/// [`rsa_key_and_cert`] valid for `days` from now: the one certificate maker of the tests.
pub fn rsa_key_and_cert_for_days(cn: &str, bits: u32, days: u32) -> (String, String) {
    let key = PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(days).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (
        String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap(),
        String::from_utf8(b.build().to_pem().unwrap()).unwrap(),
    )
}

/// IdP metadata for `entity_id` naming `cert_pems` (PEM) as signing keys, with an
/// HTTP-Redirect SSO endpoint.
pub fn metadata_with_certs(entity_id: &str, cert_pems: &[&str]) -> String {
    let keys: String = cert_pems
        .iter()
        .map(|pem| {
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            format!("<md:KeyDescriptor use=\"signing\"><ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:X509Data><ds:X509Certificate>{body}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>")
        })
        .collect();
    format!("<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" entityID=\"{entity_id}\"><md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">{keys}<md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"https://idp.example/sso\"/></md:IDPSSODescriptor></md:EntityDescriptor>")
}

/// The running IdP.
pub struct TestSamlIdp {
    pub addr: SocketAddr,
    pub entity_id: String,
    pub dir: tempfile::TempDir,
    /// The IdP's signing certificate (PEM).
    pub cert_pem: String,
    service: NodeService,
    http: reqwest::Client,
}

impl TestSamlIdp {
    /// Starts the IdP; `sp_metadata` are the gateway's SP metadata URLs it will trust.
    pub async fn start(sp_metadata: &[String]) -> Self {
        Self::start_with(sp_metadata, json!({})).await
    }

    /// Starts the IdP with extra config (e.g. `{"sign_response": false}`).
    pub async fn start_with(sp_metadata: &[String], extra: Value) -> Self {
        let addr = free_addr();
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = key_and_cert("portcullis test saml idp");
        std::fs::write(dir.path().join("idp.key"), &key).unwrap();
        std::fs::write(dir.path().join("idp.crt"), &cert).unwrap();
        let mut config = json!({
            "port": addr.port(),
            "key_file": "idp.key",
            "cert_file": "idp.crt",
            "sps": sp_metadata,
            "test_hooks": true,
            "users": USERS.iter().map(|(id, pw, email, name, groups)| json!({
                "id": id, "password": pw, "email": email, "name": name, "groups": groups,
            })).collect::<Vec<_>>(),
        });
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        let config_path = dir.path().join("saml-idp.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let service = NodeService::start(
            "saml-idp.mjs",
            &config_path,
            dir.path().join("saml-idp.log"),
        )
        .await;
        Self {
            addr,
            entity_id: format!("http://127.0.0.1:{}/metadata", addr.port()),
            dir,
            cert_pem: cert,
            service,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    /// Where the IdP publishes its metadata.
    pub fn metadata_url(&self) -> String {
        format!("http://127.0.0.1:{}/metadata", self.addr.port())
    }

    /// A URL on the IdP.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    /// The IdP's metadata document.
    pub async fn metadata(&self) -> String {
        self.http
            .get(self.metadata_url())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Writes the IdP's metadata to a file and returns its path.
    pub async fn metadata_file(&self) -> PathBuf {
        let path = self.dir.path().join("idp-metadata.xml");
        std::fs::write(&path, self.metadata().await).unwrap();
        path
    }

    /// `[idp.<name>]` for the gateway, metadata from the IdP's URL, SP signing with the
    /// test-only SP key in `certs/dev`.
    pub fn gateway_toml(&self, name: &str, extra: &str) -> String {
        format!(
            "[idp.{name}]\nkind = \"saml\"\nmetadata_url = \"{}\"\nallow_insecure_metadata_url = true\n\
             sp_key_file = \"{}\"\nsp_cert_file = \"{}\"\n{extra}\n",
            self.metadata_url(),
            super::dev_cert("saml-sp.key").display(),
            super::dev_cert("saml-sp.crt").display(),
        )
    }

    /// A response signed by the IdP's own code, with `overrides` (see `saml-idp.mjs`):
    /// returns (XML, base64).
    pub async fn forge(&self, overrides: Value) -> (String, String) {
        let text = self
            .http
            .post(self.url("/test/response"))
            .json(&overrides)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let response: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
            panic!("IdP could not forge {overrides}: {text}\n{}", self.output())
        });
        (
            response["xml"].as_str().unwrap().to_string(),
            response["SAMLResponse"].as_str().unwrap().to_string(),
        )
    }

    /// The IdP's signed LogoutRequest URL ending `user`'s session at `sp`.
    pub async fn idp_logout_url(&self, sp: &str, user: &str) -> String {
        self.idp_logout_url_for_session(sp, user, None).await
    }

    /// [`Self::idp_logout_url`] naming one IdP session (`SessionIndex`), or the user's latest.
    pub async fn idp_logout_url_for_session(
        &self,
        sp: &str,
        user: &str,
        session_index: Option<&str>,
    ) -> String {
        let mut params = vec![("sp", sp), ("user", user)];
        params.extend(session_index.map(|s| ("session_index", s)));
        let response: Value = self
            .http
            .get(url::Url::parse_with_params(&self.url("/test/idp-logout"), &params).unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        response["url"].as_str().unwrap().to_string()
    }

    /// The IdP's signed LogoutRequest for the HTTP-POST binding: (SLO URL, base64 request).
    pub async fn idp_logout_post(&self, sp: &str, user: &str) -> (String, String) {
        let response: Value = self
            .http
            .get(
                url::Url::parse_with_params(
                    &self.url("/test/idp-logout"),
                    &[("sp", sp), ("user", user), ("binding", "post")],
                )
                .unwrap(),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            response["url"].as_str().unwrap().to_string(),
            response["SAMLRequest"].as_str().unwrap().to_string(),
        )
    }

    /// Every login the IdP answered: `{ user, session_index }`, in order.
    pub async fn sessions(&self) -> Value {
        self.test_hook("/test/sessions").await
    }

    /// LogoutRequests the IdP received from SPs.
    pub async fn logouts(&self) -> Value {
        self.test_hook("/test/logouts").await
    }

    /// The AuthnRequests the IdP received by HTTP-POST (each verified by samlify), with
    /// whether each carried an XML signature.
    pub async fn posted_requests(&self) -> Value {
        self.test_hook("/test/posted-requests").await
    }

    /// What one of the IdP's test hooks reports (JSON).
    async fn test_hook(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// What the IdP printed.
    pub fn output(&self) -> String {
        self.service.output()
    }
}
