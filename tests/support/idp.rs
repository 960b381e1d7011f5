//! A real OpenID Provider (panva's `oidc-provider`, run by Node from `tests/idp/`) on a
//! loopback port, with test users and clients. Killed when dropped.

use super::free_addr;
use super::node::NodeService;
use serde_json::json;
use std::net::SocketAddr;

/// A client registered at the test IdP.
#[derive(Clone)]
pub struct IdpClient {
    pub id: String,
    pub secret: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub auth_method: &'static str,
    /// Grants beyond `authorization_code` (e.g. `refresh_token`).
    pub extra_grants: Vec<&'static str>,
    /// Where the IdP posts back-channel logout tokens, and whether they name the `sid`.
    pub backchannel_logout: Option<(String, bool)>,
}

impl IdpClient {
    /// A confidential client for the gateway serving `hosts` on `base` ports, e.g.
    /// `http://wiki.localhost:1234`.
    pub fn gateway(id: &str, origins: &[String]) -> Self {
        Self {
            id: id.to_string(),
            secret: format!("{id}-secret-TEST-ONLY"),
            redirect_uris: origins
                .iter()
                .map(|o| format!("{o}/.portcullis/oidc/callback"))
                .collect(),
            post_logout_redirect_uris: origins
                .iter()
                .map(|o| format!("{o}/.portcullis/logged-out"))
                .collect(),
            auth_method: "client_secret_basic",
            extra_grants: Vec::new(),
            backchannel_logout: None,
        }
    }

    /// A client of an API (no gateway): it gets tokens for itself (client credentials) and
    /// for users (authorization code, its code sent to a loopback URL nobody serves).
    pub fn api_caller(id: &str) -> Self {
        let mut client = Self::gateway(id, &[]);
        client.redirect_uris = vec![format!("http://127.0.0.1:9/{id}/callback")];
        client.extra_grants.push("client_credentials");
        client
    }

    /// This client, also allowed refresh tokens.
    pub fn with_refresh(mut self) -> Self {
        self.extra_grants.push("refresh_token");
        self
    }

    /// This client, sent back-channel logout tokens at `uri` (with `sid` when `session`).
    pub fn with_backchannel_logout(mut self, uri: &str, session: bool) -> Self {
        self.backchannel_logout = Some((uri.to_string(), session));
        self
    }
}

/// Options of a test IdP beyond its clients.
#[derive(Clone, Copy, Default)]
pub struct IdpOptions {
    /// ID tokens expire after this many seconds.
    pub id_token_ttl: Option<u64>,
    /// Access tokens expire after this many seconds.
    pub access_token_ttl: Option<u64>,
    /// APIs tokens can be asked for: (resource indicator, scopes, `jwt` or `opaque`).
    pub resource_servers: &'static [(&'static str, &'static str, &'static str)],
}

/// Test users: (id, password, email, name, groups).
pub const USERS: &[(&str, &str, &str, &str, &[&str])] = &[
    (
        "alice",
        "alice-pw",
        "alice@corp.example",
        "Alice Example",
        &["staff", "finance"],
    ),
    (
        "bob",
        "bob-pw",
        "bob@corp.example",
        "Bob Example",
        &["staff"],
    ),
    (
        "carol",
        "carol-pw",
        "carol@contractors.corp.example",
        "Carol Contractor",
        &[],
    ),
    (
        "dave",
        "dave-pw",
        "dave@corp.example",
        "Dave Operator",
        &["staff", "it-admins"],
    ),
];

/// The running IdP.
pub struct TestIdp {
    pub addr: SocketAddr,
    pub issuer: String,
    pub dir: tempfile::TempDir,
    service: NodeService,
}

impl TestIdp {
    /// Starts the IdP on a free port.
    pub async fn start(clients: &[IdpClient]) -> Self {
        Self::start_on(free_addr(), clients).await
    }

    /// Starts the IdP on `addr` (to bring it up after a gateway that already points there).
    pub async fn start_on(addr: SocketAddr, clients: &[IdpClient]) -> Self {
        Self::launch(addr, clients, false, IdpOptions::default()).await
    }

    /// Starts an IdP whose ID tokens expire after `seconds`.
    pub async fn start_with_id_token_ttl(clients: &[IdpClient], seconds: u64) -> Self {
        let options = IdpOptions {
            id_token_ttl: Some(seconds),
            ..IdpOptions::default()
        };
        Self::launch(free_addr(), clients, false, options).await
    }

    /// Starts an IdP with `options`.
    pub async fn start_with(clients: &[IdpClient], options: IdpOptions) -> Self {
        Self::launch(free_addr(), clients, false, options).await
    }

    /// Starts the IdP over https as `localhost`, with a certificate from the test-only CA
    /// (like an internal IdP whose CA the gateway must be told about).
    pub async fn start_tls(clients: &[IdpClient]) -> Self {
        Self::launch(free_addr(), clients, true, IdpOptions::default()).await
    }

    async fn launch(
        addr: SocketAddr,
        clients: &[IdpClient],
        tls: bool,
        options: IdpOptions,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = json!({
            "tls": tls.then(|| json!({
                "cert": super::dev_cert("backend.crt"),
                "key": super::dev_cert("backend.key"),
            })),
            "port": addr.port(),
            "id_token_ttl": options.id_token_ttl,
            "access_token_ttl": options.access_token_ttl,
            "resource_servers": options.resource_servers.iter().map(|(indicator, scope, format)| {
                (indicator.to_string(), json!({ "scope": scope, "format": format }))
            }).collect::<serde_json::Map<String, serde_json::Value>>(),
            "test_controls": true,
            "clients": clients.iter().map(|c| { let mut client = json!({
                "client_id": c.id,
                "client_secret": c.secret,
                "redirect_uris": c.redirect_uris,
                "post_logout_redirect_uris": c.post_logout_redirect_uris,
                "token_endpoint_auth_method": c.auth_method,
                "grant_types": std::iter::once("authorization_code").chain(c.extra_grants.iter().copied()).collect::<Vec<_>>(),

                // As Okta does: every ID token says when the user authenticated (single
                // sign-on repeats it, which links one sign-in's sessions for logout).
                "require_auth_time": true,
                "response_types": ["code"],
            }); if let Some((uri, session)) = &c.backchannel_logout {
                client["backchannel_logout_uri"] = json!(uri);
                client["backchannel_logout_session_required"] = json!(session);
            } client }).collect::<Vec<_>>(),
            "users": USERS.iter().map(|(id, pw, email, name, groups)| json!({
                "id": id, "password": pw, "email": email, "name": name, "groups": groups,
            })).collect::<Vec<_>>(),
        });
        let config_path = dir.path().join("idp.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = dir.path().join("idp.log");
        let issuer = if tls {
            format!("https://localhost:{}", addr.port())
        } else {
            format!("http://127.0.0.1:{}", addr.port())
        };
        let service = NodeService::start("oidc-idp.mjs", &config_path, log).await;
        Self {
            addr,
            issuer,
            dir,
            service,
        }
    }

    /// Changes a user's groups at the IdP (seen at their next refresh or sign-in).
    pub async fn set_groups(&self, user: &str, groups: &[&str]) {
        self.control(&format!("/test/users/{user}"), json!({ "groups": groups }))
            .await;
    }

    /// Deactivates (or reactivates) a user: the IdP then refuses their refresh tokens.
    pub async fn set_active(&self, user: &str, active: bool) {
        self.control(&format!("/test/users/{user}"), json!({ "active": active }))
            .await;
    }

    /// Revokes every grant the IdP gave a user (their refresh tokens stop working).
    pub async fn revoke_grants(&self, user: &str) {
        self.control(
            &format!("/test/users/{user}"),
            json!({ "revoke_grants": true }),
        )
        .await;
    }

    /// A JWT signed with the IdP's own key, with any header fields and claims: what a buggy
    /// or hostile IdP could send.
    pub async fn sign(&self, header: serde_json::Value, claims: serde_json::Value) -> String {
        self.control("/test/sign", json!({ "header": header, "claims": claims }))
            .await
    }

    /// A token for `client` itself (client credentials grant) for `resource` with `scope`.
    pub async fn client_token(&self, client: &IdpClient, resource: &str, scope: &str) -> String {
        self.token_request(
            client,
            &[
                ("grant_type", "client_credentials"),
                ("resource", resource),
                ("scope", scope),
            ],
        )
        .await
    }

    /// An access token for `user`, obtained by `client` with the authorization code flow
    /// and PKCE (the user signing in at the IdP's form), for `resource` with `scope`.
    pub async fn user_token(
        &self,
        client: &IdpClient,
        user: &str,
        resource: &str,
        scope: &str,
    ) -> String {
        use base64::Engine;
        let verifier = format!("verifier-{user}-0123456789-0123456789-0123456789");
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(openssl::sha::sha256(verifier.as_bytes()));
        let redirect = &client.redirect_uris[0];
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("client_id", client.id.as_str()),
                ("response_type", "code"),
                ("redirect_uri", redirect),
                ("scope", &format!("openid {scope}")),
                ("resource", resource),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("state", "state-TEST"),
            ])
            .finish();
        let browser = super::browser::Browser::new(self.addr, &[]);
        let form = browser
            .follow(&format!("{}/auth?{query}", self.issuer))
            .await;
        let callback = browser.sign_in_as_stop_at(&form, user, redirect).await;
        let code = super::browser::query_param(&callback, "code")
            .unwrap_or_else(|| panic!("no code in {callback}"));
        self.token_request(
            client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
                ("code_verifier", &verifier),
                ("resource", resource),
            ],
        )
        .await
    }

    async fn token_request(&self, client: &IdpClient, form: &[(&str, &str)]) -> String {
        let response = super::http_client()
            .post(format!("{}/token", self.issuer))
            .basic_auth(&client.id, Some(&client.secret))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            status.is_success(),
            "token request {form:?}: {status} {body}"
        );
        body["access_token"].as_str().unwrap().to_string()
    }

    /// The IdP's JWKS document.
    pub async fn jwks(&self) -> serde_json::Value {
        super::http_client()
            .get(format!("{}/jwks", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// How many introspection requests the IdP answered.
    pub async fn introspections(&self) -> u64 {
        let stats: serde_json::Value = super::http_client()
            .get(format!("{}/test/stats", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["introspection"].as_u64().unwrap()
    }

    /// How many refresh grants the IdP answered, and refused.
    pub async fn refresh_counts(&self) -> (u64, u64) {
        let stats: serde_json::Value = super::http_client()
            .get(format!("{}/test/stats", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            stats["refresh"].as_u64().unwrap(),
            stats["refresh_refused"].as_u64().unwrap(),
        )
    }

    async fn control(&self, path: &str, body: serde_json::Value) -> String {
        let response = super::http_client()
            .post(format!("{}{path}", self.issuer))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "test control {path}");
        response.text().await.unwrap()
    }

    /// What the IdP printed (stdout, then stderr).
    pub fn output(&self) -> String {
        self.service.output()
    }

    /// Writes a client's secret to a file and returns `[idp.<name>]` TOML for the gateway.
    pub fn gateway_toml(&self, name: &str, client: &IdpClient, extra: &str) -> String {
        let secret_file = self.dir.path().join(format!("{}.secret", client.id));
        std::fs::write(&secret_file, format!("{}\n", client.secret)).unwrap();
        std::fs::set_permissions(
            &secret_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let transport = if self.issuer.starts_with("https:") {
            format!("ca_file = \"{}\"\n", super::dev_cert("ca.crt").display())
        } else {
            "allow_insecure_issuer = true\n".to_string()
        };
        format!(
            "[idp.{name}]\nkind = \"oidc\"\nissuer = \"{}\"\n{transport}\
             client_id = \"{}\"\nclient_secret_file = \"{}\"\ngroups_scope = \"groups\"\n{extra}\n",
            self.issuer,
            client.id,
            secret_file.display()
        )
    }
}
