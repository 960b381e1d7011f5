//! The pages people click, in a real browser: headless Chromium (Debian's `chromium`) driven
//! by `playwright-core` (`tests/browser/e2e.mjs`), against the real gateway, a real OpenID
//! Provider, a real SAML IdP, echo backends and the sample form-login app — all started once
//! here for every scenario. Browsers do what curl does not (favicon requests, cookie rules,
//! auto-posted forms); each scenario asserts on page content and URLs and leaves a
//! screenshot under `target/browser-screenshots/` for a human to look at.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use serde_json::json;
use support::form_app::FormApp;
use support::idp::{IdpClient, TestIdp};
use support::internal_app::{InternalApp, INTERNAL_ORIGIN};
use support::saml_idp::TestSamlIdp;
use support::{echo_backend, free_addr, repo_root, GatewaySpec};

const WIKI: &str = "wiki.localhost";
const TIMESHEET: &str = "timesheet.localhost";
const FORMS: &str = "forms.localhost";
const HR: &str = "hr.localhost";
const PAYROLL: &str = "payroll.localhost";
const CONSOLE: &str = "console.localhost";
const ERP: &str = "erp.localhost";
const CLOSED: &str = "closed.localhost";
/// TEST-ONLY admin token.
const ADMIN_TOKEN: &str = "console-test-admin-token-0123456789abcdef";

fn oidc_app(app: &str, host: &str, upstream: &str, extra: &str) -> String {
    format!(
        "schema = 1\napp = \"{app}\"\nowner = \"it@corp.example\"\nsummary = \"{app} behind OIDC\"\nhosts = [\"{host}\"]\n\
         upstreams = [{{ url = \"{upstream}\" }}]\nidp = \"corp\"\nlogout_path = \"/logout\"\n{extra}\n\
         [[allow]]\nid = \"staff\"\nwhy = \"Staff use it\"\ngroups = [\"staff\"]\n\n\
         [[deny]]\nid = \"no-contractors\"\nwhy = \"Contractors never see it\"\nemail_domain = [\"contractors.corp.example\"]\n"
    )
}

#[tokio::test]
async fn people_sign_in_step_up_enrol_get_refused_and_sign_out_in_a_real_browser() {
    let http = free_addr();
    let admin = free_addr();
    let console = format!("http://{CONSOLE}:{}", admin.port());
    let mut origins: Vec<String> = [WIKI, TIMESHEET, FORMS]
        .iter()
        .map(|h| format!("http://{h}:{}", http.port()))
        .collect();
    // The admin console signs its operators in through the same IdP, at its own address.
    origins.push(console.clone());
    let client = IdpClient::gateway("portcullis", &origins);
    let idp = TestIdp::start(std::slice::from_ref(&client)).await;
    let saml = TestSamlIdp::start(&[format!(
        "http://{HR}:{}/.portcullis/saml/metadata",
        http.port()
    )])
    .await;
    // An IdP that takes AuthnRequests by HTTP-POST only.
    let saml_post = TestSamlIdp::start_with(
        &[format!(
            "http://{PAYROLL}:{}/.portcullis/saml/metadata",
            http.port()
        )],
        json!({ "sso_bindings": ["post"] }),
    )
    .await;
    let wiki = echo_backend("wiki").await;
    let timesheet = echo_backend("timesheet").await;
    let hr = echo_backend("hr").await;
    let payroll = echo_backend("payroll").await;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    std::fs::write(&users, r#"{"asmith": "Winter2026!"}"#).unwrap();
    let forms_port = free_addr().port();
    let _forms = FormApp::start(forms_port, &users).await;
    let erp = InternalApp::start(free_addr().port()).await;
    let vault_key = dir.path().join("vault.key");
    std::fs::write(&vault_key, [3u8; 32]).unwrap();
    let headers = "[identity.headers]\n\"X-Remote-User\" = \"email\"\n\"X-Acr\" = \"acr\"\n";
    let gw = GatewaySpec::new()
        .http_addr(http)
        .admin_addr(admin)
        .admin_token(ADMIN_TOKEN)
        .gateway_toml(&format!(
            "[admin.console]\nurl = \"{console}\"\nidp = \"corp\"\ngroups = [\"it-admins\"]\n"
        ))
        .gateway_toml(&idp.gateway_toml("corp", &client, ""))
        .gateway_toml(&saml.gateway_toml("corp-saml", ""))
        .gateway_toml(&saml_post.gateway_toml("post-saml", ""))
        .gateway_toml(&format!(
            "[vault]\nfile = \"{}\"\nkeys = [{{ id = \"k1\", file = \"{}\" }}]\n",
            dir.path().join("vault.json").display(),
            vault_key.display()
        ))
        .policy(
            "wiki.toml",
            oidc_app(
                "wiki",
                WIKI,
                &wiki.url(),
                &format!("{headers}\n[[require]]\nid = \"mfa-for-payroll\"\nwhy = \"Payroll needs a second factor\"\npaths = [\"/payroll/**\"]\nacr = [\"mfa\"]\n"),
            ),
        )
        .policy(
            "timesheet.toml",
            oidc_app("timesheet", TIMESHEET, &timesheet.url(), headers),
        )
        .policy(
            "forms.toml",
            oidc_app(
                "forms",
                FORMS,
                &format!("http://127.0.0.1:{forms_port}"),
                "[form_fill]\nlogin_url = \"/login\"\nusername_field = \"user\"\npassword_field = \"pass\"\ncsrf_field = \"csrf_token\"\n",
            ),
        )
        .policy(
            "erp.toml",
            support::open_policy(
                "erp",
                &[ERP],
                &[(&erp.url(), 1)],
                &format!("[rewrite]\ninternal_origins = [\"{INTERNAL_ORIGIN}\"]\nbody = [\"text/html\", \"text/css\", \"application/javascript\"]\n"),
            ),
        )
        .policy(
            "closed.toml",
            support::open_policy(
                "closed",
                &[CLOSED],
                &[(&erp.url(), 1)],
                "[maintenance]\nenabled = true\nmessage = \"The archive moves to new storage this weekend.\"\n",
            ),
        )
        .policy(
            "hr.toml",
            format!(
                "schema = 1\napp = \"hr\"\nowner = \"it@corp.example\"\nsummary = \"HR portal behind SAML\"\nhosts = [\"{HR}\"]\n\
                 upstreams = [{{ url = \"{}\" }}]\nidp = \"corp-saml\"\n\n{headers}\n\
                 [[allow]]\nid = \"staff\"\nwhy = \"Staff\"\ngroups = [\"staff\"]\n",
                hr.url()
            ),
        )
        .policy(
            "payroll.toml",
            format!(
                "schema = 1\napp = \"payroll\"\nowner = \"it@corp.example\"\nsummary = \"Payroll behind a POST-only SAML IdP\"\nhosts = [\"{PAYROLL}\"]\n\
                 upstreams = [{{ url = \"{}\" }}]\nidp = \"post-saml\"\n\n{headers}\n\
                 [[allow]]\nid = \"staff\"\nwhy = \"Staff\"\ngroups = [\"staff\"]\n",
                payroll.url()
            ),
        )
        .start()
        .await;

    let screenshots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| repo_root().join("target"), std::path::Path::to_path_buf)
        .join("browser-screenshots");
    let config = dir.path().join("browser.json");
    std::fs::write(
        &config,
        json!({
            "port": http.port(), "screenshots": screenshots, "otp": "246810",
            "wiki": WIKI, "timesheet": TIMESHEET, "hr": HR, "forms": FORMS, "payroll": PAYROLL,
        })
        .to_string(),
    )
    .unwrap();
    assert!(
        repo_root()
            .join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "tests/browser/node_modules is missing: run ./tests/run.sh (or `npm ci --prefix tests/browser`)"
    );
    let run = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/browser/e2e.mjs"))
        .arg(&config)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), run)
        .await
        .expect("the browser run took more than 3 minutes")
        .expect("node runs the browser tests");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser scenarios failed:\n{stdout}\n{stderr}\ngateway log:\n{}",
        gw.logs()
    );
    for scenario in [
        "OIDC login from a deep link",
        "single sign-on to a second app",
        "step-up",
        "one logout ends every app session",
        "a deny page says who is signed in",
        "SAML login",
        "form-fill: enrolment in the browser",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok ") && l.contains(scenario)),
            "scenario `{scenario}` did not pass:\n{stdout}"
        );
    }

    // The admin console, in the same browser against the same gateway.
    let console_config = dir.path().join("console.json");
    std::fs::write(
        &console_config,
        json!({
            "console": console, "screenshots": screenshots, "token": ADMIN_TOKEN, "idp": idp.issuer,
            "wiki": format!("http://{WIKI}:{}", http.port()),
        })
        .to_string(),
    )
    .unwrap();
    let run = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/browser/console.mjs"))
        .arg(&console_config)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), run)
        .await
        .expect("the console run took more than 3 minutes")
        .expect("node runs the console tests");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "console scenarios failed:\n{stdout}\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.logs()
    );
    for scenario in [
        "an anonymous visitor is sent to sign in",
        "a wrong admin token is refused",
        "a signed-in user outside the admin group is refused",
        "an operator signs in with SSO and every page renders",
        "a revoke really ends the session",
        "a forged revoke is refused",
        "the admin token opens the console",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok ") && l.contains(scenario)),
            "console scenario `{scenario}` did not pass:\n{stdout}"
        );
    }
    // Legacy apps: the internal-name app and the maintenance page.
    let legacy_config = dir.path().join("legacy.json");
    std::fs::write(
        &legacy_config,
        json!({
            "erp": format!("http://{ERP}:{}", http.port()),
            "closed": format!("http://{CLOSED}:{}", http.port()),
            "internal": INTERNAL_ORIGIN, "screenshots": screenshots,
        })
        .to_string(),
    )
    .unwrap();
    let run = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/browser/legacy.mjs"))
        .arg(&legacy_config)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the legacy-app run took more than 2 minutes")
        .expect("node runs the legacy-app tests");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "legacy-app scenarios failed:\n{stdout}\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.logs()
    );
    for scenario in [
        "an app that knows only its internal name stays on the public host",
        "an app down for maintenance shows its page and message",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok ") && l.contains(scenario)),
            "legacy-app scenario `{scenario}` did not pass:\n{stdout}"
        );
    }

    // The revoke is audited with the operator's name; the refused forms are logged.
    let logs = gw.settled_logs().await;
    assert!(
        logs.lines()
            .any(|l| l.contains("sessions revoked") && l.contains("dave@corp.example (console)")),
        "no audit record of the console's revoke:\n{logs}"
    );
    assert!(logs.contains("console form refused"), "{logs}");
    assert!(
        logs.contains("console refused: not in the console's groups"),
        "{logs}"
    );
    // The browser's own favicon request met the form-fill app too: no enrolment redirect.
    assert!(!gw.logs().contains("panicked"));
}
