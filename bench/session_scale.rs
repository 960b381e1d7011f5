//! The gateway with many live sessions: loads `--sessions N` signed-in sessions through the
//! same `Auth::sign_in` every finished login uses, writes the cookies of a sample of them for
//! the load generator, reports the resident memory the sessions took, then serves exactly as
//! `portcullis run` does.
//!
//! Used by `bench/run.sh` (session-scale phase). Each session looks like an Okta login: a
//! 17-character subject, email, display name, five groups, acr/amr, auth_time, and an ID token
//! of `--id-token-bytes` for RP-initiated logout, kept where a real login keeps it (in the
//! browser's sealed cookie when it fits, else in the session).
//!
//! Run: `cargo run --release --example session_scale -- -c portcullis.toml --app bench
//!       --host bench.localhost:18082 --sessions 100000 --cookies-out cookies.txt`

use anyhow::{bail, Context};
use clap::Parser;
use portcullis::auth::Origin;
use portcullis::idp::Identity;
use portcullis::secret::Secret;
use portcullis::session::cookies::id_token_cookie_fits;
use portcullis::session::LogoutHint;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Gateway configuration file.
    #[arg(short, long)]
    config: PathBuf,
    /// App the sessions were made for.
    #[arg(long)]
    app: String,
    /// `host[:port]` the browser uses (cookies are sealed for it).
    #[arg(long)]
    host: String,
    /// Sessions to load.
    #[arg(long)]
    sessions: usize,
    /// Where to write sample session cookies, one `name=value` per line.
    #[arg(long)]
    cookies_out: PathBuf,
    /// How many sessions (spread evenly over all of them) get their cookie written.
    #[arg(long, default_value_t = 20_000)]
    cookies: usize,
    /// Size of the ID token each session keeps for logout (an Okta token with groups is ~1 KB).
    #[arg(long, default_value_t = 1000)]
    id_token_bytes: usize,
    /// Where to write the memory figures (`key value` lines).
    #[arg(long)]
    stats_out: PathBuf,
    /// Load the sessions and exit instead of serving (with `[sessions.redis]`, to measure
    /// what Redis holds).
    #[arg(long)]
    load_only: bool,
}

/// Resident memory in bytes, from /proc (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn identity(i: usize, idp: &str) -> Identity {
    Identity {
        subject: format!("00u{i:017}"),
        email: Some(format!("user{i}@corp.example")),
        name: Some(format!("User Number {i}")),
        // Shared copies, as a real login interns them (see portcullis::intern).
        groups: portcullis::intern::intern_all([
            "Everyone",
            "staff",
            "finance",
            "vpn-users",
            "wiki-editors",
        ]),
        claims: vec![],
        acr: Some(portcullis::intern::intern("urn:okta:loa:2fa:any")),
        amr: portcullis::intern::intern_all(["pwd", "mfa"]),
        auth_time: Some(1_800_000_000),
        idp: portcullis::intern::intern(idp),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (config, _warnings) = portcullis::config::load_gateway(&args.config).map_err(|p| {
        anyhow::anyhow!(
            "configuration errors: {}",
            p.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    portcullis::logging::init(config.log_format, &config.log_level, None, None)?;
    let policies = portcullis::config::load_policies(&config);
    let Some(app) = policies.apps.iter().find(|a| a.id() == args.app) else {
        bail!("no app {} in the policies", args.app);
    };
    let idp = app.idp().context("the app has no idp")?.to_string();
    let assembled = portcullis::server::assemble(
        &args.config,
        config,
        policies,
        portcullis::server::Start::Fresh,
    )?;
    let gateway = assembled.gateway.load_full();
    let origin = Origin {
        secure: false,
        authority: args.host.clone(),
    };
    let limits = (Duration::from_secs(3600), Duration::from_secs(8 * 3600));
    let stride = (args.sessions / args.cookies.max(1)).max(1);
    // As a finished OIDC login does: a token that fits in a cookie is kept by the browser.
    let hint = if id_token_cookie_fits(args.id_token_bytes) {
        LogoutHint::IdTokenInCookie
    } else {
        LogoutHint::IdToken(Secret::new("x".repeat(args.id_token_bytes)))
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let before = rss_bytes();
    let started = Instant::now();
    let mut cookies = Vec::with_capacity(args.cookies);
    runtime.block_on(async {
        for i in 0..args.sessions {
            // As a login does: one sign-in family per user (each session its own sign-in here).
            let who = identity(i, &idp);
            let family = portcullis::session::SignInFamily::of(&who, None, Some(i as u64))
                .context("no random bytes")?;
            let (_session, _id, set_cookie) = gateway
                .auth
                .sign_in(who, hint.clone(), &args.app, limits, &origin, family, None)
                .await
                .map_err(|e| anyhow::anyhow!("sign-in {i}: {e}"))?;
            if i % stride == 0 && cookies.len() < args.cookies {
                let pair = set_cookie.split(';').next().unwrap_or_default();
                cookies.push(pair.to_string());
            }
        }
        gateway.auth.sessions.run_maintenance().await;
        anyhow::Ok(())
    })?;
    let took = started.elapsed();
    let after = rss_bytes();
    let held = gateway.auth.sessions.held();
    drop(runtime);
    // With Redis the sessions are there, not in this process (its L1 starts cold).
    if gateway.auth.stores.redis.is_none() && held != args.sessions as u64 {
        bail!(
            "loaded {} sessions but the store holds {held}",
            args.sessions
        );
    }

    let mut out = std::fs::File::create(&args.cookies_out)?;
    for c in &cookies {
        writeln!(out, "{c}")?;
    }
    let per_session = after.saturating_sub(before) / args.sessions.max(1) as u64;
    std::fs::write(
        &args.stats_out,
        format!(
            "sessions {}\nrss_before {before}\nrss_after {after}\nbytes_per_session {per_session}\nload_seconds {:.2}\n",
            args.sessions,
            took.as_secs_f64()
        ),
    )?;
    drop(gateway);
    if args.load_only {
        return Ok(());
    }
    portcullis::server::serve(assembled);
    Ok(())
}
