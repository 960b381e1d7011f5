//! `portcullis policy report`: the auditor's report for the shipped policies, rendered in
//! headless Chromium (it must show every rule id, the fixture users' decisions and the
//! examples' results, and load nothing from outside the file), its Markdown twin, and a
//! failing example that makes the command fail and the report say so.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use support::repo_root;

fn report(config: &Path, fixtures: Option<&Path>, out: &Path) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .args(["policy", "report", "-c"])
        .arg(config)
        .arg("--out")
        .arg(out);
    if let Some(f) = fixtures {
        command.arg("--fixtures").arg(f);
    }
    let run = command.output().unwrap();
    (
        run.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        ),
    )
}

/// What Chromium shows for a local file.
fn rendered(file: &Path, screenshot: &str) -> Value {
    assert!(
        repo_root()
            .join("tests/browser/node_modules/playwright-core")
            .exists(),
        "tests/browser/node_modules is missing: run ./tests/run.sh"
    );
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(repo_root().join("tests/browser/render.mjs"))
        .arg(format!("file://{}", file.display()))
        .arg(shots.join(screenshot))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every rule id in the policy files of `dir`.
fn rule_ids(dir: &Path) -> Vec<(String, String)> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let doc: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let app = doc["app"].as_str().unwrap().to_string();
        for kind in ["allow", "deny", "require"] {
            for rule in doc
                .get(kind)
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                ids.push((app.clone(), rule["id"].as_str().unwrap().to_string()));
            }
        }
    }
    ids
}

#[test]
fn the_report_renders_every_rule_and_who_gets_what_and_flags_a_failing_example() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = dir.path().join("users.toml");
    std::fs::write(
        &fixtures,
        "[[user]]\nname = \"Fiona (finance)\"\nemail = \"fiona@corp.example\"\ngroups = [\"finance\", \"staff\"]\n\n\
         [[user]]\nname = \"Carl (contractor)\"\nemail = \"carl@contractors.corp.example\"\ngroups = [\"staff\"]\n\n\
         [[request]]\napp = \"timesheet\"\nrequest = \"POST /approve/week-48\"\n",
    )
    .unwrap();
    let out = dir.path().join("report");
    let config = repo_root().join("deploy/portcullis.toml");
    let (code, said) = report(&config, Some(&fixtures), &out);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("0 failing example(s)"), "{said}");

    let page = rendered(&out.join("index.html"), "policy-report.png");
    let text = page["text"].as_str().unwrap();
    assert_eq!(page["title"], "Portcullis access policy report");
    assert_eq!(page["lang"], "en");
    assert_eq!(page["scripts"], 0, "a printable document, no scripts");
    assert_eq!(page["external"], serde_json::json!([]), "self-contained");
    let ids = rule_ids(&repo_root().join("policies"));
    assert!(ids.len() >= 10, "{ids:?}");
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    for (app, id) in &ids {
        assert!(
            text.contains(id),
            "rule {app}/{id} missing from the page:\n{text}"
        );
        assert!(
            markdown.contains(&format!("`{id}`")),
            "rule {id} missing from report.md"
        );
    }
    for wanted in [
        "finance-systems@corp.example",
        "Fiona (finance)",
        "Carl (contractor)",
        "POST /approve/week-48",
        "Approving timesheets releases pay",
        "idle 1h, absolute 8h",
        "x-remote-user",
        "pass",
    ] {
        assert!(text.contains(wanted), "{wanted} missing:\n{text}");
    }
    // Each app's policy hash, as the gateway computes it (and /metrics shows it).
    let timesheet = std::fs::read(repo_root().join("policies/timesheet.toml")).unwrap();
    let sha: String = openssl::sha::sha256(&timesheet)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(text.contains(&sha), "timesheet's SHA-256 {sha} missing");

    // A policy whose example no longer holds: the command fails and the report says so.
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("wiki.toml"),
        "schema = 1\napp = \"wiki\"\nowner = \"it@corp.example\"\nsummary = \"s\"\nhosts = [\"wiki.example\"]\n\
         upstreams = [{ url = \"http://127.0.0.1:9\" }]\n\n[[allow]]\nid = \"everyone\"\nwhy = \"open\"\npublic = true\n\n\
         [[test]]\nname = \"admin is closed\"\nrequest = \"GET /admin\"\nexpect = \"no_allow\"\n",
    )
    .unwrap();
    let gateway = dir.path().join("portcullis.toml");
    std::fs::write(
        &gateway,
        "policies = \"policies\"\n[listen]\nhttp = \"127.0.0.1:18080\"\n",
    )
    .unwrap();
    let failing = dir.path().join("failing");
    let (code, said) = report(&gateway, None, &failing);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("1 failing example(s)"), "{said}");
    let page = rendered(&failing.join("index.html"), "policy-report-failing.png");
    let text = page["text"].as_str().unwrap();
    assert!(text.contains("FAIL: got public:everyone"), "{text}");
}
