//! Header hygiene, attack by attack: each spoofing variant is sent by a real client through the
//! real gateway, and the echoing backend proves what arrived.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use serde_json::Value;
use support::*;

const HOST: &str = APP_HOST;

async fn gateway_with(extra: &str) -> (Backend, RunningGateway) {
    echo_app(GatewaySpec::new().gateway_toml(extra)).await
}

/// Sends `GET /` with the given raw header lines and returns what the backend saw.
async fn through(gw: &RunningGateway, header_lines: &str) -> Value {
    let request =
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n{header_lines}Connection: close\r\n\r\n");
    let raw = raw_exchange(gw.http, request.as_bytes()).await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    raw_json(&raw)
}

/// Header names as a CGI backend would see them: upper case, `-` and `_` alike.
fn cgi_names(echo: &Value) -> Vec<String> {
    received_headers(echo)
        .into_iter()
        .map(|(k, _)| k.to_ascii_uppercase().replace('-', "_"))
        .collect()
}

#[tokio::test]
async fn client_identity_headers_never_reach_the_backend_in_any_spelling() {
    let (app, gw) = gateway_with("").await;
    let spoofs = [
        "X-Remote-User: admin\r\n",
        "x_remote_user: admin\r\n",
        "X-REMOTE-USER: admin\r\n",
        "x-remote-user: admin\r\nX-Remote-User: admin2\r\n",
        "X_REMOTE-USER: admin\r\n",
        "Remote-User: admin\r\n",
        "REMOTE_USER: admin\r\n",
        "X-Forwarded-User: admin\r\n",
        "X-Forwarded-Email: admin@corp.example\r\n",
        "X-Forwarded-Groups: admins\r\n",
        "x_forwarded_groups: admins\r\n",
        "X-Portcullis-User: admin\r\n",
        "x_portcullis_jwt_assertion: forged\r\n",
    ];
    for spoof in spoofs {
        let echo = through(&gw, spoof).await;
        let names = cgi_names(&echo);
        let leaked: Vec<&String> = names
            .iter()
            .filter(|n| {
                [
                    "X_REMOTE_USER",
                    "REMOTE_USER",
                    "X_FORWARDED_USER",
                    "X_FORWARDED_EMAIL",
                    "X_FORWARDED_GROUPS",
                ]
                .contains(&n.as_str())
                    || n.starts_with("X_PORTCULLIS_")
            })
            .collect();
        assert!(leaked.is_empty(), "{spoof:?} leaked {leaked:?}");
        let values: Vec<String> = received_headers(&echo)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert!(
            !values.iter().any(|v| v.contains("admin") || v == "forged"),
            "{spoof:?}: {values:?}"
        );
    }
    assert_eq!(app.hits(), spoofs.len());
}

/// CGI-style environments (and some frameworks) map every character that is not a letter or
/// digit to `_`: `X.Remote.User` reaches them as `X_REMOTE_USER`, so it must be stripped too.
#[tokio::test]
async fn identity_headers_spelled_with_any_punctuation_are_stripped() {
    let (app, gw) = gateway_with("").await;
    let spoofs = [
        "X.Remote.User: admin\r\n",
        "x~remote~user: admin\r\n",
        "X!Remote!User: admin\r\n",
        "X+Remote.User: admin\r\n",
        "Remote.User: admin\r\n",
        "X.Forwarded.Groups: admins\r\n",
        "X.Portcullis.Jwt.Assertion: forged\r\n",
        "x-remote-user-: admin\r\n",
    ];
    for spoof in spoofs {
        let echo = through(&gw, spoof).await;
        let leaked: Vec<(String, String)> = received_headers(&echo)
            .into_iter()
            .filter(|(_, v)| v.contains("admin") || v == "forged")
            .collect();
        assert!(leaked.is_empty(), "{spoof:?} leaked {leaked:?}");
    }
    assert_eq!(app.hits(), spoofs.len());
    // Names that merely contain a protected one are the backend's business.
    let echo = through(&gw, "X-Remote-User-Agent-Hint: kept\r\n").await;
    assert_eq!(header_values(&echo, "x-remote-user-agent-hint"), ["kept"]);
}

#[tokio::test]
async fn configured_extra_identity_headers_are_stripped_too() {
    let (_app, gw) =
        gateway_with("[headers]\nstrip = [\"X-Employee-Id\"]\nstrip_prefixes = [\"X-Corp-Auth-\"]")
            .await;
    let echo = through(
        &gw,
        "X-Employee-Id: 1\r\nx_employee_id: 2\r\nX-Corp-Auth-Level: high\r\nX-Unrelated: kept\r\n",
    )
    .await;
    let names = cgi_names(&echo);
    assert!(
        !names
            .iter()
            .any(|n| n == "X_EMPLOYEE_ID" || n.starts_with("X_CORP_AUTH_")),
        "{names:?}"
    );
    assert_eq!(header_values(&echo, "x-unrelated"), vec!["kept"]);
}

#[tokio::test]
async fn connection_header_cannot_remove_or_smuggle_forwarding_headers() {
    let (_app, gw) = gateway_with("").await;
    // The client tries to make the gateway drop its own X-Forwarded-For (so a spoofed one
    // would survive) or keep a spoofed one.
    for lines in [
        "Connection: close, X-Forwarded-For\r\nX-Forwarded-For: 6.6.6.6\r\n",
        "X-Forwarded-For: 6.6.6.6\r\nConnection: X-Forwarded-For, close\r\n",
        "Connection: x_forwarded_for, X-Real-IP, close\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\n",
    ] {
        let request = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n{lines}\r\n");
        let raw = raw_exchange(gw.http, request.as_bytes()).await;
        assert_eq!(raw_status(&raw), 200, "{lines:?}: {raw}");
        let echo = raw_json(&raw);
        assert_eq!(header_values(&echo, "x-forwarded-for"), vec!["127.0.0.1"], "{lines:?}");
        assert!(header_values(&echo, "x-real-ip").is_empty(), "{lines:?}");
        let all: String = received_headers(&echo).into_iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        assert!(!all.contains("6.6.6.6"), "{lines:?}: {all}");
    }
}

#[tokio::test]
async fn headers_named_in_connection_and_hop_by_hop_headers_are_dropped() {
    let (_app, gw) = gateway_with("").await;
    let echo = through(&gw, "Connection: X-Secret-Hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n").await;
    for name in [
        "x-secret-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
        "proxy-connection",
    ] {
        assert!(
            header_values(&echo, name).is_empty(),
            "{name} reached the backend"
        );
    }
}

#[tokio::test]
async fn untrusted_client_forwarding_headers_are_replaced_from_the_connection() {
    let (_app, gw) = gateway_with("").await;
    let echo = through(
        &gw,
        "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nForwarded: for=6.6.6.6;proto=https\r\nX-Real-IP: 6.6.6.6\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\nX-Request-Id: attacker-chosen\r\n",
    )
    .await;
    assert_eq!(header_values(&echo, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(header_values(&echo, "x-forwarded-proto"), vec!["http"]);
    assert_eq!(header_values(&echo, "x-forwarded-host"), vec![HOST]);
    for gone in ["forwarded", "x-real-ip", "x-original-url", "x-rewrite-url"] {
        assert!(header_values(&echo, gone).is_empty(), "{gone}");
    }
    let ids = header_values(&echo, "x-request-id");
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], "attacker-chosen");
    assert_eq!(ids[0].len(), 32);
}

#[tokio::test]
async fn trusted_proxy_forwarding_headers_are_kept_and_extended() {
    let (_app, gw) = gateway_with("[headers]\ntrusted_proxies = [\"127.0.0.1/32\"]").await;
    let echo = through(&gw, "X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: app.corp.example\r\nX-Request-Id: lb-42\r\n").await;
    assert_eq!(
        header_values(&echo, "x-forwarded-for"),
        vec!["198.51.100.7, 127.0.0.1"]
    );
    assert_eq!(header_values(&echo, "x-forwarded-proto"), vec!["https"]);
    assert_eq!(
        header_values(&echo, "x-forwarded-host"),
        vec!["app.corp.example"]
    );
    assert_eq!(header_values(&echo, "x-request-id"), vec!["lb-42"]);
    // Even a trusted proxy cannot vouch for a user.
    let echo = through(&gw, "X-Remote-User: admin\r\n").await;
    assert!(header_values(&echo, "x-remote-user").is_empty());
    // A malformed request id from a trusted proxy is replaced.
    let echo = through(&gw, "X-Request-Id: <script>\r\n").await;
    assert_ne!(header_values(&echo, "x-request-id"), vec!["<script>"]);
}

#[tokio::test]
async fn identity_spoofing_is_refused_over_http2_too() {
    let (_app, gw) = echo_app(GatewaySpec::new().https()).await;
    let https = gw.https.unwrap();
    let client = {
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(dev_cert("ca.crt")).unwrap()).unwrap();
        reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(ca)
            .resolve(HOST, https)
            .build()
            .unwrap()
    };
    let resp = client
        .get(format!("https://{HOST}:{}/", https.port()))
        .header("X-Remote-User", "admin")
        .header("x_remote_user", "admin")
        .header("X-Forwarded-For", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let echo: Value = resp.json().await.unwrap();
    assert!(
        !cgi_names(&echo).contains(&"X_REMOTE_USER".to_string()),
        "{echo}"
    );
    assert_eq!(header_values(&echo, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(header_values(&echo, "x-forwarded-proto"), vec!["https"]);
}
