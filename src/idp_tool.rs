//! `portcullis idp inspect`: what IT needs when an IdP integration refuses to work — a pasted
//! SAMLResponse (base64 or XML) or ID token, what it says, and every check the gateway would
//! make with its verdict. Reads the IdP's metadata or discovery document as the gateway does;
//! keeps nothing (no replay record, no session).

use anyhow::Context;
use portcullis::config::{self, HostPattern, IdpProtocol};
use portcullis::idp::http::IdpHttpClient;
use portcullis::idp::oidc::OidcProvider;
use portcullis::idp::saml::SamlProvider;
use portcullis::session::store::{memory::MemoryStore, Stores};
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Largest pasted message read (a SAML response with many attributes is tens of KiB).
const MAX_INPUT: u64 = 4 * 1024 * 1024;

/// Inspects `input` (a file, or stdin for `-`) for IdP `name`; exit 0 when the gateway would
/// accept it, 1 when not.
pub async fn inspect(
    config_path: &Path,
    name: &str,
    origin: Option<&str>,
    input: &Path,
) -> anyhow::Result<ExitCode> {
    let gateway = match config::load_gateway(config_path) {
        Ok((g, _)) => g,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let Some(idp) = gateway.idps.iter().find(|i| i.name == name) else {
        let known: Vec<&str> = gateway.idps.iter().map(|i| i.name.as_str()).collect();
        eprintln!("no IdP `{name}` (configured: {})", known.join(", "));
        return Ok(ExitCode::from(1));
    };
    let mut pasted = String::new();
    if input == Path::new("-") {
        std::io::stdin()
            .take(MAX_INPUT)
            .read_to_string(&mut pasted)
            .context("reading stdin")?;
    } else {
        std::fs::File::open(input)
            .with_context(|| format!("opening `{}`", input.display()))?
            .take(MAX_INPUT)
            .read_to_string(&mut pasted)
            .with_context(|| format!("reading `{}`", input.display()))?;
    }
    let clock = portcullis::clock::system();
    let ca = match &idp.protocol {
        IdpProtocol::Oidc(o) => o.ca_pem.as_deref(),
        IdpProtocol::Saml(s) => s.ca_pem.as_deref(),
    };
    let http = IdpHttpClient::new(name, Duration::from_secs(5), Duration::from_secs(15), ca)?;
    let report = match &idp.protocol {
        IdpProtocol::Oidc(o) => {
            let provider = OidcProvider::new(name, o.clone(), http, clock);
            provider.inspect_id_token(&pasted).await
        }
        IdpProtocol::Saml(s) => {
            let stores = Stores::memory(Arc::new(MemoryStore::new(16, 16, clock.clone())));
            let provider = SamlProvider::new(name, s.clone(), http, clock, &stores)
                .map_err(|e| anyhow::anyhow!("IdP `{name}`: {e}"))?;
            if let Err(e) = provider.refresh().await {
                eprintln!("IdP `{name}`: metadata not loaded: {e}");
            }
            let Some(origin) = origin
                .map(str::to_string)
                .or_else(|| default_origin(&gateway, name))
            else {
                eprintln!("no app signs in with `{name}`: give --origin https://app-host");
                return Ok(ExitCode::from(1));
            };
            let sp = provider.endpoints(origin.trim_end_matches('/'));
            println!("for the SP at {origin} (ACS {})\n", sp.acs_url);
            provider.inspect_response(&pasted, &sp).await
        }
    };
    print!("{}", report.render());
    Ok(if report.accepted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The origin of the first app that signs in with `idp`, as the gateway serves it.
fn default_origin(gateway: &config::GatewayConfig, idp: &str) -> Option<String> {
    let policies = config::load_policies(gateway);
    let host = policies
        .apps
        .iter()
        .filter(|a| a.idp() == Some(idp))
        .flat_map(|a| a.hosts())
        .find_map(|h| match h {
            HostPattern::Exact(host) => Some(host.clone()),
            HostPattern::Wildcard(_) => None,
        })?;
    let origin = match (gateway.https.as_ref(), gateway.http.as_ref()) {
        (Some(tls), _) if tls.addr.port() == 443 => format!("https://{host}"),
        (Some(tls), _) => format!("https://{host}:{}", tls.addr.port()),
        (None, Some(plain)) if plain.port() == 80 => format!("http://{host}"),
        (None, Some(plain)) => format!("http://{host}:{}", plain.port()),
        (None, None) => return None,
    };
    Some(origin)
}
