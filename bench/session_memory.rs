//! Memory per session: fills the real session store with realistic sessions and reports the
//! resident memory it took, next to the store's own estimate.
//!
//! Run: `cargo run --release --example session_memory [-- COUNT]` (default 100 000).

use portcullis::idp::Identity;
use portcullis::secret::Secret;
use portcullis::session::{LogoutHint, Session, SessionStore};
use std::time::Duration;

/// Resident set size in bytes, from /proc (Linux).
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn session(i: usize) -> Session {
    let identity = Identity {
        subject: format!("00u{i:017}"),
        email: Some(format!("user{i}@corp.example")),
        name: Some(format!("User Number {i}")),
        groups: ["Everyone", "staff", "finance", "vpn-users", "wiki-editors"]
            .map(String::from)
            .to_vec(),
        claims: vec![],
        acr: Some("urn:okta:loa:2fa:any".into()),
        amr: vec!["pwd".into(), "mfa".into()],
        auth_time: Some(1_800_000_000),
        idp: "okta".into(),
    };
    // An Okta ID token with a groups claim is about 1 KB.
    let id_token = Secret::new("x".repeat(1000));
    Session::new(
        identity,
        LogoutHint::IdToken(id_token),
        "wiki",
        Duration::from_secs(3600),
        Duration::from_secs(8 * 3600),
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let store = SessionStore::new(u64::MAX);
    let estimate = session(0).approx_bytes();
    let before = rss_bytes();
    for i in 0..count {
        if store.create(session(i)).await.is_none() {
            eprintln!("no random bytes for a session id");
            return;
        }
    }
    store.run_maintenance().await;
    let after = rss_bytes();
    let per_session = (after.saturating_sub(before)) / count.max(1);
    println!("sessions: {count}");
    println!(
        "resident memory added: {:.1} MiB",
        (after - before) as f64 / 1048576.0
    );
    println!(
        "measured per session: {per_session} bytes (with a 1000-byte ID token kept for logout)"
    );
    println!(
        "estimated per session: {estimate} bytes (Session::approx_bytes, before cache overhead)"
    );
}
