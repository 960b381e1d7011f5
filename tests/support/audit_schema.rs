//! Checks audit records against the published schema (`deploy/audit-schema.json`) with the
//! Python `jsonschema` validator (Debian's python3-jsonschema, installed by `tests/run.sh`).

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

const VALIDATE: &str = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
bad = 0
for n, line in enumerate(sys.stdin, 1):
    record = json.loads(line)
    for error in validator.iter_errors(record):
        bad += 1
        print(f"record {n} ({record.get('event')}): {error.message}")
sys.exit(1 if bad else 0)
"#;

/// Every problem the validator finds in `records` (empty when all conform).
pub fn problems(records: &[Value]) -> Vec<String> {
    let schema = super::repo_root().join("deploy/audit-schema.json");
    let mut child = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(VALIDATE)
        .arg(&schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("Debian's python3 with python3-jsonschema (tests/run.sh installs it)");
    let mut input = String::new();
    for r in records {
        input.push_str(&r.to_string());
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "validator failed: {stderr}");
    let found: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(out.status.success(), found.is_empty(), "{found:?}");
    found
}

/// The event names the schema describes.
pub fn events() -> Vec<String> {
    let schema: Value =
        serde_json::from_str(&super::read_repo_file("deploy/audit-schema.json")).unwrap();
    schema["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            e["properties"]["event"]["const"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}
