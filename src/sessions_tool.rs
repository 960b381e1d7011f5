//! `portcullis sessions list|revoke`: asks the running gateway's admin listener (the address
//! and token from `portcullis.toml`), so a revocation reaches every node sharing the store.

use anyhow::Context;
use portcullis::config;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Which sessions a command names (exactly one is set, clap sees to it).
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Which {
    /// Every session of the user with this email (any IdP).
    #[arg(long)]
    pub user: Option<String>,
    /// Every session made for this app.
    #[arg(long)]
    pub app: Option<String>,
    /// Every session.
    #[arg(long)]
    pub all: bool,
}

impl Which {
    fn query(&self) -> Vec<(&'static str, String)> {
        match (&self.user, &self.app) {
            (Some(user), _) => vec![("user", user.clone())],
            (_, Some(app)) => vec![("app", app.clone())],
            _ => vec![("all", "yes".to_string())],
        }
    }
}

/// Lists the sessions `which` names, one per line.
pub fn list(config_path: &Path, which: &Which) -> anyhow::Result<ExitCode> {
    let (status, body) = call(config_path, "GET", "/sessions", which)?;
    if status != 200 {
        eprintln!("portcullis: the admin API answered {status}: {body}");
        return Ok(ExitCode::from(1));
    }
    let doc: serde_json::Value = serde_json::from_str(&body).context("admin API answer")?;
    let empty = Vec::new();
    let sessions = doc
        .get("sessions")
        .and_then(serde_json::Value::as_array)
        .unwrap_or(&empty);
    for s in sessions {
        let field = |k: &str| s.get(k).cloned().unwrap_or_default();
        let text = |k: &str| field(k).as_str().unwrap_or("-").to_string();
        let time = |k: &str| {
            field(k)
                .as_i64()
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .map_or_else(
                    || "-".to_string(),
                    |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
                )
        };
        println!(
            "{}  idp={}  app={}  host={}  signed in {}  last seen {}",
            text("user"),
            text("idp"),
            text("app"),
            text("host"),
            time("created_unix"),
            time("last_seen_unix")
        );
    }
    println!("{} session(s)", sessions.len());
    Ok(ExitCode::SUCCESS)
}

/// Revokes the sessions `which` names, on every node sharing the store.
pub fn revoke(config_path: &Path, which: &Which) -> anyhow::Result<ExitCode> {
    let (status, body) = call(config_path, "POST", "/sessions/revoke", which)?;
    if status != 200 {
        eprintln!("portcullis: the admin API answered {status}: {body}");
        return Ok(ExitCode::from(1));
    }
    let doc: serde_json::Value = serde_json::from_str(&body).context("admin API answer")?;
    println!(
        "revoked {} session(s)",
        doc.get("revoked")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    );
    Ok(ExitCode::SUCCESS)
}

fn call(
    config_path: &Path,
    method: &str,
    path: &str,
    which: &Which,
) -> anyhow::Result<(u16, String)> {
    let gateway = match config::load_gateway(config_path) {
        Ok((g, _)) => g,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            anyhow::bail!("the gateway configuration has errors");
        }
    };
    let admin = gateway
        .admin
        .with_context(|| format!("no [admin] listen in {}", config_path.display()))?;
    let token = gateway
        .admin_token
        .with_context(|| format!("no [admin] token_file in {}", config_path.display()))?;
    // A wildcard bind is reached on loopback.
    let host = if admin.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), admin.port())
    } else {
        admin
    };
    let operator = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        let url = reqwest::Url::parse_with_params(&format!("http://{host}{path}"), which.query())?;
        let request = match method {
            "POST" => client.post(url),
            _ => client.get(url),
        };
        let response = request
            .bearer_auth(token.expose())
            .header(portcullis::admin::sessions::OPERATOR_HEADER, operator)
            .send()
            .await
            .with_context(|| format!("cannot reach the admin listener at {host}"))?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    })
}
