//! TLS and HTTP/2: the HTTPS listener with the test-only certificate, HTTP/2 by ALPN and by
//! prior knowledge (h2c), and https upstreams with certificate verification.
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

fn tls_client(gw: &RunningGateway, http1_only: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dev_cert("ca.crt")).unwrap()).unwrap();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .resolve(HOST, gw.https.unwrap());
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

fn https_url(gw: &RunningGateway, path: &str) -> String {
    format!("https://{HOST}:{}{path}", gw.https.unwrap().port())
}

#[tokio::test]
async fn https_listener_serves_http1_and_http2_with_the_dev_certificate() {
    let (_app, gw) = echo_app(GatewaySpec::new().https()).await;

    let h2 = tls_client(&gw, false)
        .get(https_url(&gw, "/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    let echo: Value = h2.json().await.unwrap();
    assert_eq!(echo["backend"], "app");
    assert_eq!(header_values(&echo, "x-forwarded-proto"), vec!["https"]);

    let h1 = tls_client(&gw, true)
        .get(https_url(&gw, "/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    assert_eq!(h1.status(), 200);
}

#[tokio::test]
async fn http2_carries_large_bodies_both_ways() {
    let (_app, gw) = echo_app(GatewaySpec::new().https()).await;
    let client = tls_client(&gw, false);
    let size = 8 * 1024 * 1024 + 3;
    let data = pattern(size);
    let want = format!("{:016x}", fnv1a(FNV_START, &data));
    let up = client
        .post(https_url(&gw, "/upload"))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(up.version(), reqwest::Version::HTTP_2);
    let echo: Value = up.json().await.unwrap();
    assert_eq!(
        (
            echo["body_len"].as_u64().unwrap() as usize,
            echo["body_hash"].as_str().unwrap()
        ),
        (size, want.as_str())
    );
    let down = client
        .get(https_url(&gw, &format!("/download/{size}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(down.len(), size);
    assert_eq!(format!("{:016x}", fnv1a(FNV_START, &down)), want);
}

#[tokio::test]
async fn plain_listener_speaks_h2c_when_enabled() {
    let (_app, gw) = echo_app(GatewaySpec::new().h2c()).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .resolve(HOST, gw.http)
        .build()
        .unwrap();
    let resp = client
        .get(format!("http://{HOST}:{}/", gw.http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn https_upstream_is_verified_against_the_configured_ca() {
    let secure = echo_backend_tls("secure").await;
    let url = format!("https://127.0.0.1:{}", secure.addr.port());
    let ca = dev_cert("ca.crt");
    let gw = app_gateway(
        &[(&url, 1)],
        &format!(
            "[upstream_tls]\nca_file = \"{}\"\nsni = \"localhost\"",
            ca.display()
        ),
    )
    .await;
    let raw = raw_exchange(
        gw.http,
        format!("GET /x HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&raw), 200, "{raw}\n{}", gw.logs());
    assert_eq!(raw_json(&raw)["backend"], "secure");
}

#[tokio::test]
async fn https_upstream_with_an_untrusted_certificate_is_refused() {
    let secure = echo_backend_tls("secure").await;
    let url = format!("https://127.0.0.1:{}", secure.addr.port());
    // No ca_file: the system store does not trust the test-only CA, so the handshake must fail.
    let gw = app_gateway(&[(&url, 1)], "[upstream_tls]\nsni = \"localhost\"").await;
    let raw = raw_exchange(
        gw.http,
        format!("GET /x HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&raw), 502, "{raw}");
    assert!(
        !raw.contains("\"backend\""),
        "no backend response may pass: {raw}"
    );
}

#[tokio::test]
async fn https_upstream_with_the_wrong_name_is_refused() {
    let secure = echo_backend_tls("secure").await;
    let url = format!("https://127.0.0.1:{}", secure.addr.port());
    let ca = dev_cert("ca.crt");
    // The backend certificate names localhost and 127.0.0.1, not this SNI.
    let extra = format!(
        "[upstream_tls]\nca_file = \"{}\"\nsni = \"payroll.corp.example\"",
        ca.display()
    );
    let gw = app_gateway(&[(&url, 1)], &extra).await;
    let raw = raw_exchange(
        gw.http,
        format!("GET /x HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&raw), 502, "{raw}");
}
