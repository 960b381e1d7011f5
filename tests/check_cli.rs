//! `portcullis check`: exact `file:line:col: message` reports and exit codes, on the shipped
//! configuration and on deliberately broken files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::Path;
use std::process::Command;
use support::*;

struct CheckRun {
    code: i32,
    stdout: String,
    stderr: String,
}

fn check(config: &Path) -> CheckRun {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "-c"])
        .arg(config)
        .output()
        .unwrap();
    CheckRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A config directory with `portcullis.toml` and the given policy files.
fn config_dir(gateway: &str, policies: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("portcullis.toml"), gateway).unwrap();
    for (name, text) in policies {
        std::fs::write(dir.path().join("policies").join(name), text).unwrap();
    }
    dir
}

const GATEWAY: &str = "[listen]\nhttp = \"127.0.0.1:18080\"\n";

const GOOD: &str = "schema = 1\napp = \"good\"\nowner = \"o@corp.example\"\nsummary = \"fine\"\nhosts = [\"good.example\"]\nupstreams = [{ url = \"http://127.0.0.1:9\" }]\n\n[[allow]]\nid = \"all\"\nwhy = \"test\"\npublic = true\n";

#[test]
fn shipped_demo_configuration_and_every_shipped_policy_pass() {
    let run = check(&repo_root().join("deploy/portcullis.toml"));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let shipped: Vec<_> = std::fs::read_dir(repo_root().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    assert!(shipped.len() >= 2);
    for policy in shipped {
        let app = std::fs::read_to_string(&policy).unwrap();
        let id = app
            .lines()
            .find_map(|l| l.strip_prefix("app"))
            .unwrap()
            .split('"')
            .nth(1)
            .unwrap()
            .to_string();
        assert!(
            run.stdout.contains(&format!("ok   {id}:")),
            "{} not reported ok:\n{}",
            policy.display(),
            run.stdout
        );
    }
}

#[test]
fn valid_configuration_exits_zero_with_one_line_per_app() {
    let dir = config_dir(GATEWAY, &[("good.toml", GOOD)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "ok   good: good.example / -> 1 upstream(s), 1 rule(s), no login; owner o@corp.example; fine"
        ),
        "{}",
        run.stdout
    );
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn unknown_key_is_reported_at_its_line_and_column() {
    let typo = GOOD.replace(
        "summary = \"fine\"\n",
        "summary = \"fine\"\ncolour = \"blue\"\n",
    );
    let dir = config_dir(GATEWAY, &[("good.toml", GOOD), ("typo.toml", &typo)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1);
    let file = dir.path().join("policies/typo.toml");
    assert!(
        run.stderr
            .contains(&format!("{}:5:1: unknown field `colour`", file.display())),
        "{}",
        run.stderr
    );
    // The good app is still reported as fine.
    assert!(run.stdout.contains("ok   good:"), "{}", run.stdout);
}

#[test]
fn every_bad_value_in_a_file_is_reported_in_reading_order() {
    let bad = "schema = 1\napp = \"bad\"\nowner = \"o@corp.example\"\nsummary = \"s\"\n\
hosts = [\"Bad.Example:80\"]\n\
upstreams = [{ url = \"ftp://x\", weight = 500 }]\n\
\n[[allow]]\nid = \"staff\"\nwhy = \"staff\"\nmethods = [\"get\"]\npaths = [\"/a//b\"]\n\
\n[[deny]]\nid = \"staff\"\nwhy = \"\"\n";
    let dir = config_dir(GATEWAY, &[("bad.toml", bad)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1);
    let f = dir.path().join("policies/bad.toml").display().to_string();
    let expected = [
        format!("{f}:5:10: host `Bad.Example:80` is not a lower-case host name"),
        format!("{f}:6:22: upstream scheme `ftp` is not supported"),
        format!("{f}:6:42: weight must be between 1 and 100"),
        format!("{f}:8:1: allow rule `staff` is for signed-in users: name the app's identity provider with `idp = \"...\"`, or set `public = true`"),
        format!("{f}:11:12: methods are upper-case: write `GET`"),
        format!("{f}:12:10: path `/a//b` is not in normal form (requests are matched after normalisation); write `/a/b`"),
        format!("{f}:15:6: rule id `staff` is used twice in this file"),
        format!("{f}:16:7: why must not be empty"),
    ];
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{}", run.stderr);
    for (line, want) in lines.iter().zip(&expected) {
        assert!(line.starts_with(want.as_str()), "got  {line}\nwant {want}");
    }
}

#[test]
fn idp_durations_out_of_range_are_named_at_their_lines() {
    let gateway = format!(
        "{GATEWAY}[idp.a]\nkind = \"oidc\"\nissuer = \"https://idp.example\"\nclient_id = \"x\"\n\
         client_secret = \"y\"\ntimeout = \"0s\"\nhealth_check_interval = \"2h\"\n"
    );
    let dir = config_dir(&gateway, &[("good.toml", GOOD)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("portcullis.toml:8:11: idp `a`: timeout must be between 1s and 60s"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "portcullis.toml:9:25: idp `a`: health_check_interval must be between 1s and 1h"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn toml_syntax_error_names_file_line_and_column() {
    let dir = config_dir(
        GATEWAY,
        &[("syntax.toml", "schema = 1\napp = \"unterminated\n")],
    );
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1);
    let f = dir
        .path()
        .join("policies/syntax.toml")
        .display()
        .to_string();
    assert!(run.stderr.starts_with(&format!("{f}:2:")), "{}", run.stderr);
}

#[test]
fn two_apps_claiming_one_host_and_prefix_are_both_refused() {
    let other = GOOD.replace("app = \"good\"", "app = \"other\"");
    let dir = config_dir(GATEWAY, &[("good.toml", GOOD), ("other.toml", &other)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1);
    let good = dir.path().join("policies/good.toml").display().to_string();
    let other = dir.path().join("policies/other.toml").display().to_string();
    assert!(
        run.stderr.contains(&format!(
            "{good}:5:10: host `good.example` with path prefix `/` is also claimed by {other}"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "{other}:5:10: host `good.example` with path prefix `/` is also claimed by {good}"
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn duplicate_app_ids_are_refused() {
    let twin = GOOD.replace("good.example", "twin.example");
    let dir = config_dir(GATEWAY, &[("good.toml", GOOD), ("twin.toml", &twin)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("twin.toml: app id `good` is already used by"),
        "{}",
        run.stderr
    );
}

#[test]
fn gateway_config_errors_name_the_gateway_file() {
    let gateway = "[listen]\nhttp = \"localhost\"\nhttps = { addr = \"127.0.0.1:8443\", cert = \"missing.crt\", key = \"missing.key\" }\n[headers]\ntrusted_proxies = [\"10.0.0.0/33\"]\n[server]\nthreads = 0\n";
    let dir = config_dir(gateway, &[("good.toml", GOOD)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1);
    let f = dir.path().join("portcullis.toml").display().to_string();
    for want in [
        format!("{f}:2:8: listen.http `localhost` is not an address"),
        format!("{f}:3:43: TLS certificate file"),
        format!("{f}:3:64: TLS key file"),
        format!("{f}:5:20: trusted proxy `10.0.0.0/33`"),
        format!("{f}:7:11: server.threads must be between 1 and 1024"),
    ] {
        assert!(run.stderr.contains(&want), "missing {want}\n{}", run.stderr);
    }
}

#[test]
fn mismatched_tls_key_is_caught_by_check() {
    let gateway = format!(
        "[listen]\nhttps = {{ addr = \"127.0.0.1:8443\", cert = \"{}\", key = \"{}\" }}\n",
        dev_cert("gateway.crt").display(),
        dev_cert("backend.key").display()
    );
    let dir = config_dir(&gateway, &[("good.toml", GOOD)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("does not match certificate"),
        "{}",
        run.stderr
    );
}

#[test]
fn allow_rule_for_signed_in_users_is_refused_until_login_exists() {
    let signed_in = GOOD.replace("public = true\n", "");
    let explicit_false = GOOD.replace("public = true", "public = false");
    for text in [signed_in, explicit_false] {
        let dir = config_dir(GATEWAY, &[("good.toml", &text)]);
        let run = check(&dir.path().join("portcullis.toml"));
        assert_eq!(run.code, 1, "{text}");
        assert!(run.stderr.contains("public = true"), "{}", run.stderr);
    }
}

#[test]
fn https_upstream_by_ip_without_sni_and_empty_sni_are_refused() {
    let by_ip = GOOD.replace("http://127.0.0.1:9", "https://127.0.0.1:9");
    let empty_sni = format!(
        "{}\n[upstream_tls]\nsni = \"\"\n",
        GOOD.replace("\n\n[[allow]]", "\n[[allow]]")
    );
    for (text, want) in [
        (by_ip, "is an IP address: set [upstream_tls] sni"),
        (empty_sni, "sni `` must be a host name"),
    ] {
        let dir = config_dir(GATEWAY, &[("good.toml", &text)]);
        let run = check(&dir.path().join("portcullis.toml"));
        assert_eq!(run.code, 1, "{text}");
        assert!(run.stderr.contains(want), "{}", run.stderr);
    }
}

#[test]
fn disabling_upstream_verification_is_a_warning_not_an_error() {
    let insecure = GOOD.replace(
        "\n\n[[allow]]",
        "\n[upstream_tls]\nverify = false\n\n[[allow]]",
    );
    let dir = config_dir(GATEWAY, &[("good.toml", &insecure)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(": warning: upstream certificate verification is off"),
        "{}",
        run.stderr
    );
}

const GATEWAY_WITH_IDP: &str = "[listen]\nhttp = \"127.0.0.1:18080\"\n\n[idp.corp]\nkind = \"oidc\"\nissuer = \"https://idp.corp.example\"\nclient_id = \"portcullis\"\nclient_secret = \"TEST-ONLY\"\n";

#[test]
fn login_settings_in_policies_are_checked_against_the_gateway_idps() {
    let protected = "schema = 1\napp = \"wiki\"\nowner = \"o@corp.example\"\nsummary = \"s\"\nhosts = [\"wiki.example\"]\nupstreams = [{ url = \"http://127.0.0.1:9\" }]\nidp = \"corp\"\nlogout_path = \"/logout\"\n\n[session]\nidle = \"30m\"\n\n[identity.headers]\n\"X-Remote-User\" = \"email\"\n\"X-Groups\" = { claim = \"groups\", join = \";\" }\n\n[[allow]]\nid = \"staff\"\nwhy = \"s\"\ngroups = [\"staff\"]\nemail_domain = [\"corp.example\"]\n";
    let bad = "schema = 1\napp = \"bad\"\nowner = \"o@corp.example\"\nsummary = \"s\"\nhosts = [\"bad.example\"]\nupstreams = [{ url = \"http://127.0.0.1:9\" }]\nidp = \"okta\"\n\n[identity.headers]\n\"Host\" = \"email\"\n\"X-Dept\" = \"department\"\n\"X-Key\" = { secret_file = \"missing.key\" }\n\n[[allow]]\nid = \"all\"\nwhy = \"s\"\npublic = true\ngroups = [\"staff\"]\n\n[[deny]]\nid = \"x\"\nwhy = \"s\"\nemails = [\"not-an-email\"]\n";
    let dir = config_dir(
        GATEWAY_WITH_IDP,
        &[("wiki.toml", protected), ("bad.toml", bad)],
    );
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("ok   wiki:"), "{}", run.stdout);
    let f = dir.path().join("policies/bad.toml").display().to_string();
    let expected = [
        format!("{f}:7:7: idp `okta` is not defined in the gateway config (defined: corp)"),
        format!("{f}:10:10: header `Host` is managed by the gateway or HTTP itself"),
        format!("{f}:11:12: header `X-Dept`: `department` is not a session attribute"),
        format!("{f}:12:11: header `X-Key`: cannot read secret file"),
        format!(
            "{f}:14:1: allow rule `all` is public (anyone, no login) yet names groups, emails or claims"
        ),
        format!("{f}:23:11: `not-an-email` is not an email address"),
    ];
    let problems: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("bad.toml"))
        .collect();
    for want in &expected {
        assert!(
            problems.iter().any(|l| l.starts_with(want.as_str())),
            "missing {want}\nin:\n{}",
            run.stderr
        );
    }
    // The inline secret is accepted, loudly.
    assert!(
        run.stderr
            .contains("client_secret is written in the config file"),
        "{}",
        run.stderr
    );
}

fn saml_metadata(cert_pems: &[&str]) -> String {
    support::saml_idp::metadata_with_certs("https://idp.example/saml", cert_pems)
}

fn weak_cert_pem() -> String {
    support::saml_idp::rsa_key_and_cert("weak", 1024).1
}

#[test]
fn saml_idps_are_checked_down_to_their_metadata_signing_keys() {
    let (_, strong) = support::saml_idp::key_and_cert("idp");
    let weak = weak_cert_pem();
    let saml_gateway = |file: &str, extra: &str| {
        format!("[listen]\nhttp = \"127.0.0.1:18080\"\n\n[idp.corp-saml]\nkind = \"saml\"\nmetadata_file = \"{file}\"\n{extra}")
    };
    let app = |extra: &str| {
        format!("schema = 1\napp = \"wiki\"\nowner = \"o@corp.example\"\nsummary = \"s\"\nhosts = [\"wiki.example\"]\nupstreams = [{{ url = \"http://127.0.0.1:9\" }}]\nidp = \"corp-saml\"\n{extra}\n[[allow]]\nid = \"staff\"\nwhy = \"s\"\ngroups = [\"staff\"]\n")
    };

    // Good metadata: the app logs in via the SAML IdP.
    let dir = config_dir(
        &saml_gateway("idp.xml", ""),
        &[("wiki.toml", &app("allow_idp_initiated = true\n"))],
    );
    std::fs::write(dir.path().join("idp.xml"), saml_metadata(&[&strong])).unwrap();
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("login via corp-saml"), "{}", run.stdout);

    // Each unusable metadata file fails check, naming the config line and the metadata file.
    for (metadata, want) in [
        (saml_metadata(&[]), "no usable signing certificate"),
        (saml_metadata(&[&weak]), "1024 bits"),
        (format!("<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>{}", saml_metadata(&[&strong])), "DOCTYPE"),
        ("<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" entityID=\"x\"/>".to_string(), "no IDPSSODescriptor"),
    ] {
        let dir = config_dir(&saml_gateway("idp.xml", ""), &[("wiki.toml", &app(""))]);
        std::fs::write(dir.path().join("idp.xml"), metadata).unwrap();
        let run = check(&dir.path().join("portcullis.toml"));
        assert_eq!(run.code, 1, "{want}: {}{}", run.stdout, run.stderr);
        let f = dir.path().join("portcullis.toml").display().to_string();
        let md = dir.path().join("idp.xml").display().to_string();
        assert!(
            run.stderr.contains(&format!("{f}:6:17: idp `corp-saml`: metadata file `{md}`")) && run.stderr.contains(want),
            "want `{want}`:\n{}",
            run.stderr
        );
        // `run` refuses to start on the same configuration.
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "-c"])
            .arg(dir.path().join("portcullis.toml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("portcullis run started with unusable SAML metadata ({want})");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(!status.success(), "{want}");
    }

    // Settings that belong to the other protocol, an insecure Okta URL, and IdP-initiated
    // login on an OIDC app are named too.
    let gateway = "[listen]\nhttp = \"127.0.0.1:18080\"\n\n[idp.okta-saml]\nkind = \"saml\"\nokta_metadata_url = \"http://dev-1.okta.com/app/x/sso/saml/metadata\"\nclient_id = \"x\"\n\n[idp.corp]\nkind = \"oidc\"\nissuer = \"https://idp.corp.example\"\nclient_id = \"p\"\nclient_secret = \"TEST-ONLY\"\nmetadata_url = \"https://x\"\n";
    let dir = config_dir(gateway, &[("good.toml", GOOD)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1);
    let f = dir.path().join("portcullis.toml").display().to_string();
    for want in [
        format!("{f}:6:21: idp `okta-saml`: okta_metadata_url must be the https metadata URL"),
        format!("{f}:7:13: idp `okta-saml`: `client_id` is an OpenID Connect setting; this IdP is `kind = \"saml\"`"),
        format!("{f}:14:16: idp `corp`: `metadata_url` is a SAML setting; this IdP is `kind = \"oidc\"`"),
    ] {
        assert!(run.stderr.contains(&want), "missing {want}\n{}", run.stderr);
    }
    let oidc_app = app("allow_idp_initiated = true\n").replace("corp-saml", "corp");
    let dir = config_dir(GATEWAY_WITH_IDP, &[("wiki.toml", &oidc_app)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1);
    let f = dir.path().join("policies/wiki.toml").display().to_string();
    let want = format!("{f}:8:23: allow_idp_initiated applies to SAML only");
    assert!(run.stderr.contains(&want), "missing {want}\n{}", run.stderr);
}

#[test]
fn saml_encryption_and_algorithm_settings_are_checked_at_their_line() {
    let (_, strong) = support::saml_idp::key_and_cert("idp");
    let (next_key, _) = support::saml_idp::key_and_cert("next");
    let (_, unrelated_cert) = support::saml_idp::key_and_cert("unrelated");
    let app = "schema = 1\napp = \"wiki\"\nowner = \"o@corp.example\"\nsummary = \"s\"\nhosts = [\"wiki.example\"]\nupstreams = [{ url = \"http://127.0.0.1:9\" }]\nidp = \"corp-saml\"\n[[allow]]\nid = \"staff\"\nwhy = \"s\"\ngroups = [\"staff\"]\n";
    let sp_key = support::dev_cert("saml-sp.key").display().to_string();
    let sp_cert = support::dev_cert("saml-sp.crt").display().to_string();
    let gateway = |extra: &str| {
        format!("[listen]\nhttp = \"127.0.0.1:18080\"\n\n[idp.corp-saml]\nkind = \"saml\"\nmetadata_file = \"idp.xml\"\n{extra}")
    };
    let run_with = |extra: &str| {
        let dir = config_dir(&gateway(extra), &[("wiki.toml", app)]);
        std::fs::write(dir.path().join("idp.xml"), saml_metadata(&[&strong])).unwrap();
        std::fs::write(dir.path().join("next.key"), &next_key).unwrap();
        std::fs::write(dir.path().join("unrelated.crt"), &unrelated_cert).unwrap();
        let f = dir.path().join("portcullis.toml").display().to_string();
        (check(&dir.path().join("portcullis.toml")), f)
    };
    // Encryption required without a key to decrypt with.
    let (run, f) = run_with("require_encrypted_assertions = true\n");
    assert_eq!(run.code, 1, "{}", run.stderr);
    let want =
        format!("{f}:7:32: idp `corp-saml`: require_encrypted_assertions = true needs sp_key_file");
    assert!(run.stderr.contains(&want), "missing {want}\n{}", run.stderr);
    // A next key whose certificate is another key's.
    let (run, f) = run_with(&format!(
        "sp_key_file = \"{sp_key}\"\nsp_cert_file = \"{sp_cert}\"\nsp_next_key_file = \"next.key\"\nsp_next_cert_file = \"unrelated.crt\"\n"
    ));
    assert_eq!(run.code, 1, "{}", run.stderr);
    let want = format!(
        "{f}:10:21: idp `corp-saml`: sp_next_cert_file does not belong to sp_next_key_file"
    );
    assert!(run.stderr.contains(&want), "missing {want}\n{}", run.stderr);
    // SHA-1 accepted on request, with a warning at its line.
    let (run, f) = run_with("allow_sha1 = true\n");
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let want = format!(
        "{f}:7:14: warning: idp `corp-saml`: allow_sha1: this IdP's SHA-1 signatures are accepted"
    );
    assert!(run.stderr.contains(&want), "missing {want}\n{}", run.stderr);
    // What the SP signs: SHA-256 and up, SHA-1 never (not even with allow_sha1).
    for bad in ["sha1", "SHA-256", "md5"] {
        let (run, f) = run_with(&format!("allow_sha1 = true\nsignature_hash = \"{bad}\"\n"));
        assert_eq!(run.code, 1, "{bad}: {}", run.stderr);
        let want = format!("{f}:8:18: idp `corp-saml`: signature_hash must be \"sha256\", \"sha384\" or \"sha512\", not `{bad}`");
        assert!(run.stderr.contains(&want), "missing {want}\n{}", run.stderr);
    }
    let (run, _) = run_with("signature_hash = \"sha384\"\n");
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

#[test]
fn new_rule_conditions_are_checked_at_their_line() {
    let policy = "schema = 1\napp = \"wiki\"\nowner = \"o@corp.example\"\nsummary = \"s\"\nhosts = [\"wiki.example\"]\nupstreams = [{ url = \"http://127.0.0.1:9\" }]\nidp = \"corp\"\n\n\
[[allow]]\nid = \"a\"\nwhy = \"s\"\nmode = \"dry-run\"\npaths = [\"~/api/.*\", \"~^/api/(x$\", \"/a/./b/*\"]\nnetworks = [\"10.0.0.1/8\", \"not-a-net\"]\nclaims = { department = \"x\", sub = { regex = \"00u.*\" }, acr = 5 }\n\n\
[[require]]\nid = \"r\"\nwhy = \"s\"\npaths = [\"/admin/**\"]\n\n\
[[deny]]\nid = \"d\"\nwhy = \"s\"\nadaptive = true\n";
    let dir = config_dir(GATEWAY_WITH_IDP, &[("wiki.toml", policy)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1, "{}", run.stderr);
    let f = dir.path().join("policies/wiki.toml").display().to_string();
    for want in [
        format!("{f}:12:8: mode `dry-run` is unknown"),
        format!("{f}:13:10: path regex `~/api/.*` must be anchored"),
        format!("{f}:13:22: path regex `~^/api/(x$` does not compile"),
        format!("{f}:13:36: path `/a/./b/*` is not in normal form"),
        format!("{f}:14:13: network `10.0.0.1/8` has host bits set; write `10.0.0.0/8`"),
        format!("{f}:14:27: network `not-a-net` is not a CIDR"),
        format!("{f}:15:25: claim `department` is not kept in the session"),
        format!("{f}:15:36: claim `sub`: regex must be anchored"),
        format!("{f}:15:63: claim `acr`: write a value"),
        format!("{f}:17:1: require rule `r` requires nothing"),
        format!("{f}:22:1: deny rule `d`: `adaptive` belongs to allow rules"),
    ] {
        assert!(run.stderr.contains(&want), "missing {want}\n{}", run.stderr);
    }
}

fn portcullis(args: &[&str]) -> CheckRun {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .unwrap();
    CheckRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn shipped_policy_examples_pass() {
    let config = repo_root().join("deploy/portcullis.toml");
    let run = portcullis(&["policy", "test", "-c", config.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(" 0 failed"), "{}", run.stdout);
    let passed: usize = run.stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(passed >= 10, "{}", run.stdout);
}

const EXAMPLE_POLICY: &str = "schema = 1\napp = \"ledger\"\nowner = \"o@corp.example\"\nsummary = \"s\"\nhosts = [\"ledger.example\"]\nupstreams = [{ url = \"http://127.0.0.1:9\" }]\nidp = \"corp\"\n\n\
[[allow]]\nid = \"finance\"\nwhy = \"s\"\ngroups = [\"finance\"]\n\n\
[[deny]]\nid = \"no-contractors\"\nwhy = \"s\"\nemail_domain = [\"contractors.corp.example\"]\n\n\
[[test]]\nname = \"finance reads\"\nuser = { email = \"a@corp.example\", groups = [\"finance\"] }\nrequest = \"GET /books\"\nexpect = \"allow:finance\"\n\n\
[[test]]\nname = \"sales reads too (wrong)\"\nuser = { email = \"s@corp.example\", groups = [\"sales\"] }\nrequest = \"GET /books\"\nexpect = \"allow:finance\"\n\n\
[[test]]\nname = \"an ambiguous path is refused\"\nrequest = \"GET /books/..;/admin\"\nexpect = \"refused\"\n";

#[test]
fn a_wrong_example_fails_with_a_readable_diff() {
    let dir = config_dir(GATEWAY_WITH_IDP, &[("ledger.toml", EXAMPLE_POLICY)]);
    let config = dir.path().join("portcullis.toml");
    let run = portcullis(&["policy", "test", "-c", config.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let f = dir
        .path()
        .join("policies/ledger.toml")
        .display()
        .to_string();
    let want = format!(
        "FAIL {f}:25: ledger: sales reads too (wrong)\n       expected allow:finance\n       got      no_allow\n       because  no allow rule matched (default deny): `finance` needs groups any of [\"finance\"]"
    );
    assert!(run.stdout.contains(&want), "{}", run.stdout);
    assert!(
        run.stdout.contains("ok   ledger: finance reads"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("ok   ledger: an ambiguous path is refused"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("2 passed, 1 failed"), "{}", run.stdout);

    // The same file with the expectation corrected passes.
    let fixed = EXAMPLE_POLICY.replacen(
        "request = \"GET /books\"\nexpect = \"allow:finance\"\n\n[[test]]\nname = \"an",
        "request = \"GET /books\"\nexpect = \"no_allow\"\n\n[[test]]\nname = \"an",
        1,
    )
    .replacen("name = \"sales reads too (wrong)\"\nuser = { email = \"s@corp.example\", groups = [\"sales\"] }\nrequest = \"GET /books\"\nexpect = \"allow:finance\"", "name = \"sales is refused\"\nuser = { email = \"s@corp.example\", groups = [\"sales\"] }\nrequest = \"GET /books\"\nexpect = \"no_allow\"", 1);
    std::fs::write(dir.path().join("policies/ledger.toml"), fixed).unwrap();
    let run = portcullis(&["policy", "test", "-c", config.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

#[test]
fn malformed_examples_are_check_errors() {
    let bad = EXAMPLE_POLICY.to_string()
        + "\n[[test]]\nrequest = \"/books\"\nexpect = \"allow:finance\"\n\n[[test]]\nrequest = \"GET /books\"\nexpect = \"allow:nobody\"\n\n[[test]]\nrequest = \"GET /books\"\nexpect = \"permit\"\n\n[[test]]\nrequest = \"GET /books\"\nexpect = \"deny:finance\"\n";
    let dir = config_dir(GATEWAY_WITH_IDP, &[("ledger.toml", &bad)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1);
    for want in [
        "request `/books` must be `METHOD /path`",
        "expect `allow:nobody`: this file has no allow rule `nobody`",
        "expect `permit` is not one of",
        "expect `deny:finance`: this file has no deny rule `finance`",
    ] {
        assert!(run.stderr.contains(want), "missing {want}\n{}", run.stderr);
    }
}

#[test]
fn explain_takes_one_decision_apart() {
    let config = repo_root().join("deploy/portcullis.toml");
    let run = portcullis(&[
        "policy",
        "explain",
        "-c",
        config.to_str().unwrap(),
        "--app",
        "wiki",
        "--user",
        "{ email = \"carol@contractors.corp.example\", groups = [\"staff\"] }",
        "GET",
        "//%61dmin/x",
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for want in [
        "request:  GET /admin/x  (normalised from //%61dmin/x)",
        "decision: deny:no-admin",
        "yes email domain one of [\"contractors.corp.example\"]",
        "as a test: user = { email = \"carol@contractors.corp.example\", groups = [\"staff\"] }, request = \"GET //%61dmin/x\", expect = \"deny:no-admin\"",
    ] {
        assert!(run.stdout.contains(want), "missing {want}\n{}", run.stdout);
    }
}

#[test]
fn explain_refuses_user_keys_that_tests_refuse() {
    let config = repo_root().join("deploy/portcullis.toml");
    let run = portcullis(&[
        "policy",
        "explain",
        "-c",
        config.to_str().unwrap(),
        "--app",
        "wiki",
        "--user",
        "{ email = \"ana@corp.example\", group = [\"staff\"] }",
        "GET",
        "/",
    ]);
    assert_ne!(run.code, 0, "a misspelt key was ignored:\n{}", run.stdout);
    assert!(run.stderr.contains("group"), "{}", run.stderr);
    assert!(!run.stdout.contains("decision:"), "{}", run.stdout);
}

#[test]
fn policy_diff_names_who_gains_and_loses_access() {
    let old = "schema = 1\napp = \"ledger\"\nowner = \"o@corp.example\"\nsummary = \"s\"\nhosts = [\"ledger.example\"]\nupstreams = [{ url = \"http://127.0.0.1:9\" }]\nidp = \"corp\"\n\n[[allow]]\nid = \"finance\"\nwhy = \"s\"\ngroups = [\"finance\"]\n\n[[allow]]\nid = \"help\"\nwhy = \"s\"\npublic = true\npaths = [\"/help/**\"]\n\n[[deny]]\nid = \"no-contractors\"\nwhy = \"s\"\nemail_domain = [\"contractors.corp.example\"]\n";
    let new = old
        .replace("groups = [\"finance\"]", "groups = [\"finance\", \"sales\"]")
        .replace("paths = [\"/help/**\"]", "paths = [\"/help/faq\"]")
        .replace("[[deny]]\nid = \"no-contractors\"\nwhy = \"s\"\nemail_domain = [\"contractors.corp.example\"]\n", "");
    let dir = config_dir(GATEWAY_WITH_IDP, &[("ledger.toml", old)]);
    let new_dir = dir.path().join("proposed");
    std::fs::create_dir(&new_dir).unwrap();
    std::fs::write(new_dir.join("ledger.toml"), new).unwrap();
    let fixtures = dir.path().join("fixtures.toml");
    std::fs::write(
        &fixtures,
        "[[user]]\nname = \"sam (sales)\"\nemail = \"sam@corp.example\"\ngroups = [\"sales\"]\n\n\
         [[user]]\nname = \"cleo (contractor in finance)\"\nemail = \"cleo@contractors.corp.example\"\ngroups = [\"finance\"]\n\n\
         [[user]]\nname = \"fay (finance)\"\nemail = \"fay@corp.example\"\ngroups = [\"finance\"]\n\n\
         [[request]]\nrequest = \"GET /books\"\n",
    )
    .unwrap();
    let config = dir.path().join("portcullis.toml");
    let run = portcullis(&[
        "policy",
        "diff",
        "-c",
        config.to_str().unwrap(),
        dir.path().join("policies").to_str().unwrap(),
        new_dir.to_str().unwrap(),
        "--fixtures",
        fixtures.to_str().unwrap(),
    ]);
    // Like `diff`: exit 1 when access changes, so CI can gate on it.
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    for want in [
        "GAINS sam (sales): GET /books  (no_allow -> allow:finance)",
        "GAINS cleo (contractor in finance): GET /books  (deny:no-contractors -> allow:finance)",
        "LOSES anonymous: GET /help  (public:help -> login)",
    ] {
        assert!(run.stdout.contains(want), "missing {want}\n{}", run.stdout);
    }
    assert!(
        !run.stdout.contains("fay (finance): GET /books"),
        "{}",
        run.stdout
    );
    // Comparing a version with itself: no change, exit 0.
    let same = portcullis(&[
        "policy",
        "diff",
        "-c",
        config.to_str().unwrap(),
        new_dir.to_str().unwrap(),
        new_dir.to_str().unwrap(),
        "--fixtures",
        fixtures.to_str().unwrap(),
    ]);
    assert_eq!(same.code, 0, "{}{}", same.stdout, same.stderr);
}

#[test]
fn time_windows_are_checked_and_examples_can_set_the_clock() {
    let policy = "schema = 1\napp = \"payroll\"\nowner = \"o@corp.example\"\nsummary = \"s\"\nhosts = [\"payroll.example\"]\nupstreams = [{ url = \"http://127.0.0.1:9\" }]\nidp = \"corp\"\n\n\
[[allow]]\nid = \"finance\"\nwhy = \"s\"\ngroups = [\"finance\"]\n\n\
[[require]]\nid = \"office-hours\"\nwhy = \"payroll runs are reviewed by day\"\npaths = [\"/run/**\"]\ntime = { days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"], from = \"08:00\", to = \"18:00\", tz = \"Europe/Berlin\" }\n\n\
[[test]]\nname = \"a Monday morning in Berlin\"\nuser = { email = \"f@corp.example\", groups = [\"finance\"] }\nrequest = \"POST /run/november\"\nat = \"2026-11-30T09:00:00+01:00\"\nexpect = \"allow:finance\"\n\n\
[[test]]\nname = \"a Sunday\"\nuser = { email = \"f@corp.example\", groups = [\"finance\"] }\nrequest = \"POST /run/november\"\nat = \"2026-11-29T09:00:00+01:00\"\nexpect = \"require:office-hours\"\n\n\
[[test]]\nname = \"7:30 in Berlin is 6:30 UTC\"\nuser = { email = \"f@corp.example\", groups = [\"finance\"] }\nrequest = \"POST /run/november\"\nat = \"2026-11-30T06:30:00Z\"\nexpect = \"require:office-hours\"\n";
    let dir = config_dir(GATEWAY_WITH_IDP, &[("payroll.toml", policy)]);
    let config = dir.path().join("portcullis.toml");
    let run = portcullis(&["policy", "test", "-c", config.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("3 passed, 0 failed"), "{}", run.stdout);

    let bad = policy
        .replace("from = \"08:00\"", "from = \"8am\"")
        .replace("at = \"2026-11-30T09:00:00+01:00\"", "at = \"monday\"");
    let bad = bad + "\n[[deny]]\nid = \"x\"\nwhy = \"s\"\ntime = { days = [\"funday\"], from = \"01:00\", to = \"02:00\" }\n\n[[deny]]\nid = \"y\"\nwhy = \"s\"\ntime = { from = \"01:00\", to = \"02:00\", tz = \"Mars/Olympus\" }\n";
    let dir = config_dir(GATEWAY_WITH_IDP, &[("payroll.toml", &bad)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1);
    for want in [
        "time: `from` and `to` are 24-hour times",
        "at `monday` is not a time",
        "time: `funday` is not a day",
        "time: `Mars/Olympus` is not an IANA time zone",
    ] {
        assert!(run.stderr.contains(want), "missing {want}\n{}", run.stderr);
    }
}

#[test]
fn an_allow_rule_a_deny_rule_always_overrides_is_a_warning() {
    let policy = "schema = 1\napp = \"wiki\"\nowner = \"o@corp.example\"\nsummary = \"s\"\nhosts = [\"wiki.example\"]\nupstreams = [{ url = \"http://127.0.0.1:9\" }]\n\n\
[[allow]]\nid = \"admin-tools\"\nwhy = \"s\"\npublic = true\npaths = [\"/admin/tools/**\"]\n\n\
[[allow]]\nid = \"pages\"\nwhy = \"s\"\npublic = true\npaths = [\"/pages/**\"]\n\n\
[[deny]]\nid = \"no-admin\"\nwhy = \"s\"\npaths = [\"/admin/**\"]\n";
    let dir = config_dir(GATEWAY, &[("wiki.toml", policy)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let f = dir.path().join("policies/wiki.toml").display().to_string();
    let want = format!("{f}:8:1: warning: allow rule `admin-tools` never admits anyone: deny rule `no-admin` always overrides it");
    assert!(run.stderr.contains(&want), "missing {want}\n{}", run.stderr);
    assert!(
        !run.stderr.contains("`pages` never admits"),
        "{}",
        run.stderr
    );
}

#[test]
fn identity_cookie_names_are_checked() {
    let policy = "schema = 1\napp = \"wiki\"\nowner = \"o@corp.example\"\nsummary = \"s\"\nhosts = [\"wiki.example\"]\nupstreams = [{ url = \"http://127.0.0.1:9\" }]\nidp = \"corp\"\n\n\
[identity.cookies]\n\"bad name\" = \"email\"\nportcullis_session = \"email\"\nREMOTE_USER = \"email\"\n\"remote-user\" = \"sub\"\nDEPT = \"department\"\n\n\
[[allow]]\nid = \"staff\"\nwhy = \"s\"\ngroups = [\"staff\"]\n";
    let dir = config_dir(GATEWAY_WITH_IDP, &[("wiki.toml", policy)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1);
    for want in [
        "`bad name` is not a valid cookie name",
        "cookie `portcullis_session` is the gateway's own",
        "cookie `remote-user` is listed twice",
        "cookie `DEPT`: `department` is not a session attribute",
    ] {
        assert!(run.stderr.contains(want), "missing {want}\n{}", run.stderr);
    }
}

#[test]
fn jwt_keys_and_headers_are_checked() {
    let (rsa_key, _) = support::saml_idp::key_and_cert("not ec");
    let policy = "schema = 1\napp = \"wiki\"\nowner = \"o@corp.example\"\nsummary = \"s\"\nhosts = [\"wiki.example\"]\nupstreams = [{ url = \"http://127.0.0.1:9\" }]\nidp = \"corp\"\n\n[identity]\njwt_header = \"X-Portcullis-Jwt-Assertion\"\n\n[[allow]]\nid = \"staff\"\nwhy = \"s\"\ngroups = [\"staff\"]\n";
    // No [jwt] in the gateway: the policy's header is an error.
    let dir = config_dir(GATEWAY_WITH_IDP, &[("wiki.toml", policy)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("jwt_header needs signing keys"),
        "{}",
        run.stderr
    );
    // An RSA key cannot sign ES256.
    let gateway = format!("{GATEWAY_WITH_IDP}\n[jwt]\nkey_files = [\"rsa.key\"]\n");
    let dir = config_dir(&gateway, &[("wiki.toml", policy)]);
    std::fs::write(dir.path().join("rsa.key"), rsa_key).unwrap();
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not an EC P-256 key"), "{}", run.stderr);
    // The shipped test key works.
    let gateway = format!(
        "{GATEWAY_WITH_IDP}\n[jwt]\nkey_files = [\"{}\"]\n",
        dev_cert("jwt-signing.key").display()
    );
    let dir = config_dir(&gateway, &[("wiki.toml", policy)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn vault_rotate_reseals_every_entry_under_the_new_key() {
    use portcullis::delivery::vault::{Credential, Vault};
    use portcullis::secret::{Secret, SecretBytes};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("old.key"), [1u8; 32]).unwrap();
    std::fs::write(dir.path().join("new.key"), [2u8; 32]).unwrap();
    let file = dir.path().join("vault.json");
    let old = Vault::new(&file, vec![("old".into(), SecretBytes::new(vec![1u8; 32]))]).unwrap();
    for user in ["okta:alice", "okta:bob"] {
        let cred = Credential {
            username: user.into(),
            password: Secret::new(format!("pw-{user}")),
        };
        old.put("ledger", user, &cred).unwrap();
    }
    let gateway = format!(
        "{GATEWAY}\n[vault]\nfile = \"vault.json\"\nkeys = [{{ id = \"new\", file = \"new.key\" }}, {{ id = \"old\", file = \"old.key\" }}]\n"
    );
    std::fs::write(dir.path().join("portcullis.toml"), gateway).unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let config = dir.path().join("portcullis.toml");
    let run = portcullis(&["vault", "rotate", "-c", config.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("re-sealed 2 entries"), "{}", run.stdout);
    // Not on a terminal: no progress bar in the output.
    assert!(!run.stderr.contains("re-sealing"), "{}", run.stderr);
    // On a terminal (a pty from util-linux `script`): the bar, with the count.
    let on_terminal = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} vault rotate -c {}",
            env!("CARGO_BIN_EXE_portcullis"),
            config.display()
        ))
        .arg("/dev/null")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(on_terminal.status.success(), "{shown}");
    assert!(
        shown.contains("re-sealing vault entries") && shown.contains("2/2"),
        "{shown}"
    );
    let new_only =
        Vault::new(&file, vec![("new".into(), SecretBytes::new(vec![2u8; 32]))]).unwrap();
    for user in ["okta:alice", "okta:bob"] {
        let got = new_only.get("ledger", user).unwrap().unwrap();
        assert_eq!(got.password.expose(), format!("pw-{user}"));
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("pw-okta"), "{text}");
}

#[test]
fn this_rounds_settings_are_checked_at_their_line() {
    let gateway = "[listen]\nhttp = \"127.0.0.1:18080\"\n\n[server]\nrequest_head_timeout = \"10ms\"\n\n\
                   [idp.corp]\nkind = \"oidc\"\nissuer = \"https://idp.corp.example\"\nclient_id = \"portcullis\"\nclient_secret = \"TEST-ONLY\"\nhealth_check_interval = \"2h\"\n";
    let dir = config_dir(gateway, &[("good.toml", GOOD)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("portcullis.toml:5:") && run.stderr.contains("request_head_timeout"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("portcullis.toml:12:") && run.stderr.contains("health_check_interval"),
        "{}",
        run.stderr
    );

    let bad_app = "schema = 1\napp = \"iis\"\nowner = \"o@corp.example\"\nsummary = \"s\"\nhosts = [\"iis.example\"]\n\
                   case_insensitive_paths = \"yes\"\nupstreams = [{ url = \"http://127.0.0.1:9\" }]\n\n\
                   [health]\neject_after = 0\neject_for = \"0s\"\n\n[[allow]]\nid = \"all\"\nwhy = \"t\"\npublic = true\n";
    let dir = config_dir(GATEWAY, &[("iis.toml", bad_app)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("iis.toml:6:"), "{}", run.stderr);
    let health = "schema = 1\napp = \"iis\"\nowner = \"o@corp.example\"\nsummary = \"s\"\nhosts = [\"iis.example\"]\n\
                  case_insensitive_paths = true\nupstreams = [{ url = \"http://127.0.0.1:9\" }]\n\n\
                  [health]\neject_after = 0\neject_for = \"0s\"\n\n[[allow]]\nid = \"all\"\nwhy = \"t\"\npublic = true\n";
    let dir = config_dir(GATEWAY, &[("iis.toml", health)]);
    let run = check(&dir.path().join("portcullis.toml"));
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    for want in ["iis.toml:10:", "eject_after", "iis.toml:11:", "eject_for"] {
        assert!(run.stderr.contains(want), "missing {want}: {}", run.stderr);
    }
}
