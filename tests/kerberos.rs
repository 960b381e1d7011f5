//! Kerberos single sign-on to Negotiate-only backends by constrained delegation: a real MIT
//! KDC on its LDAP back end (`support::kerberos`), the real OpenID Provider for sign-in, and
//! Apache with `mod_auth_gssapi` as the Windows-integrated app. A user signed in through the
//! IdP reaches the backend as their own Kerberos principal, without a password; the KDC's
//! refusals (an SPN the gateway may not delegate to, a user with no principal) and its outage
//! give clear pages and a metric, never an anonymous pass.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::time::{Duration, Instant};
use support::browser::Browser;
use support::idp::{IdpClient, TestIdp};
use support::kerberos::{TestRealm, ALLOWED_SPN, OTHER_SPN};
use support::{free_addr, GatewaySpec};

const INTRANET: &str = "intranet.localhost";
const OTHER: &str = "other.localhost";

fn policy(app: &str, host: &str, upstream: &str, spn: &str) -> String {
    format!(
        "{}\n[identity.kerberos]\nspn = \"{spn}\"\nprincipal = \"email\"\n\n\
         [[allow]]\nid = \"staff\"\nwhy = \"staff use the intranet\"\ngroups = [\"staff\"]\n",
        support::policy_head(app, host, upstream, Some("corp"))
    )
}

/// One realm for every case (it takes a few seconds to build), in order.
#[tokio::test]
async fn signed_in_users_reach_a_negotiate_only_app_as_their_own_principal_and_nothing_else() {
    let realm = TestRealm::start().await;
    let http = free_addr();
    let origins: Vec<String> = [INTRANET, OTHER]
        .iter()
        .map(|h| format!("http://{h}:{}", http.port()))
        .collect();
    let client = IdpClient::gateway("portcullis", &origins);
    let idp = TestIdp::start(std::slice::from_ref(&client)).await;
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&idp.gateway_toml("corp", &client, ""))
        .gateway_toml(&realm.gateway_toml("timeout = \"2s\"\n"))
        .policy(
            "intranet.toml",
            policy("intranet", INTRANET, &realm.backend_url(), ALLOWED_SPN),
        )
        .policy(
            "other.toml",
            policy("other", OTHER, &realm.backend_url(), OTHER_SPN),
        )
        .start()
        .await;

    // The backend refuses anyone without a ticket.
    let direct = support::http_client()
        .get(realm.backend_url())
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 401);

    // Alice signs in at the IdP and reaches the backend as alice@CORP.EXAMPLE.
    let alice = Browser::new(gw.http, &[INTRANET, OTHER]);
    let trip = alice
        .login(&gw.app_url(INTRANET, "/"), "alice", "alice-pw")
        .await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", gw.logs());
    assert_eq!(trip.headers["x-remote-user"], "alice@CORP.EXAMPLE");
    assert!(trip.body.contains("kerberos backend"), "{}", trip.body);
    let audit = gw
        .wait_for_log("event=\"kerberos_ticket\" outcome=\"ok\"")
        .await;
    assert!(
        audit.contains("principal=alice@CORP.EXAMPLE spn=HTTP/intranet.corp.example"),
        "{audit}"
    );
    // A Negotiate header of the client's own is never what the backend sees.
    let forged = alice
        .get_with(
            &gw.app_url(INTRANET, "/"),
            &[("authorization", "Negotiate Zm9yZ2Vk")],
        )
        .await;
    assert_eq!(forged.status(), 200);
    assert_eq!(forged.headers()["x-remote-user"], "alice@CORP.EXAMPLE");
    // Anonymous requests never reach it: a sign-in first.
    let anonymous = Browser::new(gw.http, &[INTRANET]);
    let first = anonymous.get(&gw.app_url(INTRANET, "/")).await;
    assert_eq!(first.status(), 302);

    // The gateway may not delegate to the other app's SPN: a clear page, no ticket.
    let refused = alice.follow(&gw.app_url(OTHER, "/")).await;
    let refused = if refused.status == 200 && refused.is_login_form() {
        alice.sign_in(&refused, "alice", "alice-pw").await
    } else {
        refused
    };
    assert_eq!(refused.status, 503, "{refused:?}\n{}", gw.logs());
    assert!(
        refused
            .body
            .contains("Windows sign-in to this application is unavailable"),
        "{}",
        refused.body
    );
    assert!(refused.headers.get("x-remote-user").is_none());
    gw.wait_for_log("constrained delegation refused").await;

    // Bob signs in at the IdP but has no principal in the realm.
    let bob = Browser::new(gw.http, &[INTRANET]);
    let trip = bob.login(&gw.app_url(INTRANET, "/"), "bob", "bob-pw").await;
    assert_eq!(trip.status, 403, "{trip:?}");
    assert!(
        trip.body.contains("No Windows account for you"),
        "{}",
        trip.body
    );
    gw.wait_for_log("the KDC knows no principal `bob@CORP.EXAMPLE`")
        .await;
    gw.wait_for_log("event=\"kerberos_ticket\" outcome=\"unknown_user\"")
        .await;

    // The KDC goes down: a user with no cached ticket gets a clear page within the timeout.
    realm.stop_kdc();
    let dave = Browser::new(gw.http, &[INTRANET]);
    let started = Instant::now();
    let trip = dave
        .login(&gw.app_url(INTRANET, "/"), "dave", "dave-pw")
        .await;
    assert_eq!(trip.status, 503, "{trip:?}\n{}", gw.logs());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let metrics = support::prometheus::scrape(gw.admin).await;
    for outcome in [
        "ok",
        "delegation_refused",
        "unknown_user",
        "kdc_unavailable",
    ] {
        assert!(
            metrics.contains(&format!("outcome=\"{outcome}\"")),
            "no {outcome} in\n{metrics}"
        );
    }
    // Back up: dave gets in.
    realm.start_kdc().await;
    let trip = dave.follow(&gw.app_url(INTRANET, "/")).await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", gw.logs());
    assert_eq!(trip.headers["x-remote-user"], "dave@CORP.EXAMPLE");
    assert!(realm.kdc_log().contains("CONSTRAINED-DELEGATION"));

    // Renewal: dave's credential is reused while it lasts, then fetched again before it ends
    // (his tickets last 8 s; the gateway renews with a quarter of the life left).
    let fetched = || {
        gw.logs()
            .matches("outcome=\"ok\" app=\"intranet\" user=dave@corp.example")
            .count()
    };
    assert_eq!(fetched(), 1, "{}", gw.logs());
    let again = dave.follow(&gw.app_url(INTRANET, "/")).await;
    assert_eq!(again.status, 200);
    assert_eq!(fetched(), 1, "reused while it lasts");
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    let renewed = dave.follow(&gw.app_url(INTRANET, "/")).await;
    assert_eq!(renewed.status, 200, "{renewed:?}\n{}", gw.logs());
    assert_eq!(renewed.headers["x-remote-user"], "dave@CORP.EXAMPLE");
    assert_eq!(fetched(), 2, "fetched again near its end\n{}", gw.logs());
}

/// `portcullis check` names Kerberos mistakes at their lines: a keytab that is not there, a
/// realm without KDCs, a malformed SPN, and an app that wants tickets on a gateway without
/// `[kerberos]`.
#[test]
fn kerberos_mistakes_are_named_by_check() {
    const IDP: &str = "[listen]\nhttp = \"127.0.0.1:18080\"\n\n[idp.corp]\nkind = \"oidc\"\nissuer = \"https://idp.corp.example\"\nclient_id = \"p\"\nclient_secret = \"TEST-ONLY\"\n";
    let check = |gateway: &str, spn: &str| -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("gw.keytab"), b"\x05\x02").unwrap();
        std::fs::write(
            dir.path().join("portcullis.toml"),
            format!("{IDP}{gateway}"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("policies/intranet.toml"),
            policy("intranet", "intranet.example", "http://127.0.0.1:9", spn),
        )
        .unwrap();
        let out = std::process::Command::new(support::gateway_binary())
            .args(["check", "-c"])
            .arg(dir.path().join("portcullis.toml"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        text
    };
    let text = check(
        "\n[kerberos]\nprincipal = \"HTTP/gw.corp.example@CORP.EXAMPLE\"\nkeytab_file = \"missing.keytab\"\nrealm = \"CORP.EXAMPLE\"\n",
        ALLOWED_SPN,
    );
    for want in [
        "portcullis.toml:12:15: [kerberos] keytab_file",
        "missing.keytab` cannot be read",
        "portcullis.toml:13:9: [kerberos] realm needs kdcs",
    ] {
        assert!(text.contains(want), "missing {want}:\n{text}");
    }
    let good = "\n[kerberos]\nprincipal = \"HTTP/gw.corp.example@CORP.EXAMPLE\"\nkeytab_file = \"gw.keytab\"\nrealm = \"CORP.EXAMPLE\"\nkdcs = [\"kdc.corp.example\"]\n";
    let text = check(good, "sharepoint.corp.example");
    assert!(
        text.contains("intranet.toml:")
            && text.contains("spn `sharepoint.corp.example` must be service/host"),
        "{text}"
    );
    let text = check("", ALLOWED_SPN);
    assert!(
        text.contains("[identity.kerberos] needs the gateway's service principal"),
        "{text}"
    );
}
