//! The gateway configuration and policy compilers on arbitrary text: problems, never a panic
//! (`portcullis check` and every reload run these on files an admin typed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::app::compile_app;
use portcullis::config::gateway::compile_gateway;
use std::path::Path;
use std::sync::OnceLock;

const GATEWAY: &str = r#"
policies = "policies"
[listen]
http = "127.0.0.1:8080"
[idp.corp]
kind = "oidc"
issuer = "https://idp.example"
client_id = "portcullis"
client_secret = "fuzz-only-not-a-secret"
"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // As the gateway file.
    let _ = compile_gateway(Path::new("/nonexistent/fuzz/portcullis.toml"), text);
    // As a policy file, under a fixed gateway.
    static BASE: OnceLock<Option<portcullis::config::GatewayConfig>> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        compile_gateway(Path::new("/nonexistent/fuzz/portcullis.toml"), GATEWAY)
            .ok()
            .map(|(config, _)| config)
    });
    if let Some(gateway) = base {
        let _ = compile_app(
            Path::new("/nonexistent/fuzz/policies/app.toml"),
            text,
            gateway,
        );
    }
});
