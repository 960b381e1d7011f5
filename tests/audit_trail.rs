//! The hash-chained audit file: one record per access decision with the policy's SHA-256,
//! written by the real gateway, checked by `portcullis audit verify` — which passes on the
//! untouched file and names the first bad line once a record is edited or removed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::*;

const POLICY_EXTRA: &str =
    "[[deny]]\nid = \"no-admin\"\nwhy = \"closed\"\npaths = [\"/admin/**\"]\n";

fn policy(upstream: &str) -> String {
    open_policy("app", &[APP_HOST], &[(upstream, 1)], "")
        .replace("paths = [\"/**\"]", "paths = [\"/public/**\"]")
        + POLICY_EXTRA
}

/// The audit file's records once it holds at least `n`.
async fn records(file: &Path, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("audit file {} never reached {n} records", file.display());
}

fn verify(files: &[&Path]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["audit", "verify"])
        .args(files)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn every_access_decision_lands_in_a_chain_that_audit_verify_checks() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit").join("portcullis-audit.jsonl");
    let backend = echo_backend("app").await;
    let text = policy(&backend.url());
    let start = || {
        GatewaySpec::new()
            .gateway_toml(&format!("[audit]\nfile = \"{}\"\n", file.display()))
            .policy("app.toml", text.clone())
            .start()
    };
    let gw = start().await;
    for path in [
        "/public/a",
        "/admin/users",
        "/secret",
        "/public/%2e%2e/admin/users",
    ] {
        gw.get(APP_HOST, path).await;
    }
    let recs = records(&file, 4).await;
    let sha: String = openssl::sha::sha256(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let decisions: Vec<(&str, &str, &str)> = recs
        .iter()
        .map(|r| {
            assert_eq!(r["event"], "access", "{r}");
            assert_eq!(r["policy_sha256"], sha.as_str(), "{r}");
            assert_eq!(r["app"], "app");
            assert!(
                r["request_id"].as_str().is_some_and(|id| id.len() == 32),
                "{r}"
            );
            assert_eq!(r["client"], "127.0.0.1");
            (
                r["decision"].as_str().unwrap(),
                r["rule"].as_str().unwrap(),
                r["path"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            ("public", "everyone", "/public/a"),
            ("deny", "no-admin", "/admin/users"),
            ("no_allow", "-", "/secret"),
            // The normalised path is what was judged and recorded.
            ("deny", "no-admin", "/admin/users"),
        ]
    );
    let (code, out, err) = verify(&[&file]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 4 record(s)"), "{out}");

    // A restart continues the same chain.
    drop(gw);
    let gw = start().await;
    gw.get(APP_HOST, "/public/b").await;
    let recs = records(&file, 5).await;
    assert_eq!(recs[4]["seq"], 5);
    assert_eq!(recs[4]["prev"], recs[3]["hash"]);
    drop(gw);
    let (code, out, err) = verify(&[&file]);
    assert_eq!(code, 0, "{out}{err}");

    let original = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    // An auditor's nightmare: a deny turned into an allow.
    let mut edited = lines.clone();
    let forged = lines[1].replace("\"decision\":\"deny\"", "\"decision\":\"allow\"");
    assert_ne!(forged, lines[1]);
    edited[1] = &forged;
    std::fs::write(&file, edited.join("\n") + "\n").unwrap();
    let (code, _, err) = verify(&[&file]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{}:2: ", file.display())) && err.contains("edited"),
        "{err}"
    );
    // A record removed.
    let mut removed = lines.clone();
    removed.remove(2);
    std::fs::write(&file, removed.join("\n") + "\n").unwrap();
    let (code, _, err) = verify(&[&file]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{}:3: ", file.display())) && err.contains("removed"),
        "{err}"
    );
    // Restored, it verifies again.
    std::fs::write(&file, &original).unwrap();
    assert_eq!(verify(&[&file]).0, 0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "audit file readable by others");
    }
}

#[tokio::test]
async fn records_follow_the_published_schema_which_names_every_event_the_gateway_writes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let backend = echo_backend("app").await;
    let gw = GatewaySpec::new()
        .gateway_toml(&format!("[audit]\nfile = \"{}\"\n", file.display()))
        .policy("app.toml", policy(&backend.url()))
        .start()
        .await;
    for path in ["/public/a", "/admin/users", "/secret"] {
        gw.get(APP_HOST, path).await;
    }
    let recs = records(&file, 3).await;
    assert!(recs.iter().all(|r| r["schema"] == "portcullis.audit/1"));
    let found = support::audit_schema::problems(&recs);
    assert!(found.is_empty(), "{found:#?}");

    // The validator can fail: a record without its decision, or with an unknown one.
    let mut broken = recs[0].clone();
    broken.as_object_mut().unwrap().remove("decision");
    let mut unknown = recs[1].clone();
    unknown["decision"] = "maybe".into();
    assert_eq!(support::audit_schema::problems(&[broken, unknown]).len(), 2);

    // Every `event = "..."` the source writes with target "audit" is described.
    let described = support::audit_schema::events();
    let mut written = Vec::new();
    for file in walk(&repo_root().join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for chunk in text.split("target: \"audit\"").skip(1) {
            if let Some(rest) = chunk.split("event = \"").nth(1) {
                written.push(rest.split('"').next().unwrap().to_string());
            }
        }
    }
    assert!(written.len() >= 10, "{written:?}");
    for event in &written {
        assert!(
            described.contains(event),
            "audit event `{event}` is not in deploy/audit-schema.json"
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
