//! The Shared Signals transmitter of the harness (`tests/idp/ssf-transmitter.mjs`): no real
//! one runs on this machine, so the test plays it, with its own test-only signing key.
//! Killed when dropped.

use super::free_addr;
use super::node::NodeService;
use serde_json::{json, Value};

/// A running transmitter that pushes to one receiver.
pub struct Transmitter {
    pub issuer: String,
    _dir: tempfile::TempDir,
    _service: NodeService,
}

impl Transmitter {
    /// Starts a transmitter pushing to `receiver` with `audience`.
    pub async fn start(receiver: &str, audience: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let config = json!({ "port": addr.port(), "receiver": receiver, "audience": audience });
        let path = dir.path().join("ssf.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let service =
            NodeService::start("ssf-transmitter.mjs", &path, dir.path().join("ssf.log")).await;
        Self {
            issuer: format!("http://127.0.0.1:{}", addr.port()),
            _dir: dir,
            _service: service,
        }
    }

    /// Where it publishes its keys.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks.json", self.issuer)
    }

    /// Signs a SET with `claims` over the defaults (a `null` claim is left out), signed
    /// with `key` (`own`, `stranger` or `none`), pushes it; the receiver's status and body.
    pub async fn push(&self, claims: Value, header: Value, key: &str) -> (u16, String) {
        self.call(
            "/push",
            json!({ "claims": claims, "header": header, "key": key }),
        )
        .await
    }

    /// Pushes the last SET again.
    pub async fn resend(&self) -> (u16, String) {
        self.call("/resend", json!({})).await
    }

    async fn call(&self, path: &str, body: Value) -> (u16, String) {
        let answer: Value = super::http_client()
            .post(format!("{}{path}", self.issuer))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let status = answer["status"]
            .as_u64()
            .unwrap_or_else(|| panic!("{answer}"));
        (
            u16::try_from(status).unwrap(),
            answer["body"].as_str().unwrap_or_default().to_string(),
        )
    }
}
