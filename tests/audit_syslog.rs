//! Audit records to a SIEM over syslog, against Debian's real rsyslogd: RFC 5424 over TLS with
//! octet counting, the versioned JSON schema, a receiver restart that loses no record, and an
//! overflowing queue that drops records, counts them and says so; the OCSF mapping over TCP.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use serde_json::Value;
use std::time::Duration;
use support::rsyslog::Rsyslog;
use support::{echo_backend, Backend, GatewaySpec, RunningGateway};

const APP: &str = "wiki.localhost";

async fn gateway(syslog: &str) -> (Backend, RunningGateway) {
    let backend = echo_backend("wiki").await;
    let gw = GatewaySpec::new()
        .policy(
            "wiki.toml",
            support::open_policy("wiki", &[APP], &[(&backend.url(), 1)], ""),
        )
        .gateway_toml(&format!("[audit.syslog]\n{syslog}"))
        .start()
        .await;
    (backend, gw)
}

/// Makes a request and returns its request id (every request's access record carries it).
async fn request(gw: &RunningGateway, path: &str) -> String {
    let response = gw.get(APP, path).await;
    assert_eq!(response.status(), 200);
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// The JSON body of a received line (`PRI APP-NAME MSGID MSG`).
fn body(line: &str) -> Value {
    let json = line.splitn(4, ' ').nth(3).unwrap_or_default().trim();
    serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn received_ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| body(l))
        .filter_map(|b| b["request_id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_rsyslog_over_tls_and_a_receiver_restart_loses_none() {
    let mut rsyslog = Rsyslog::start().await;
    let ca = support::dev_cert("ca.crt");
    let (_backend, gw) = gateway(&format!(
        "address = \"{}\"\ntransport = \"tls\"\nca_file = \"{}\"\nserver_name = \"localhost\"\nfacility = \"local3\"\n",
        rsyslog.tls,
        ca.display()
    ))
    .await;

    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(request(&gw, &format!("/before/{i}")).await);
    }
    let lines = rsyslog
        .wait_until(Duration::from_secs(10), |l| {
            sent.iter().all(|id| received_ids(l).contains(id))
        })
        .await;
    let line = lines.iter().find(|l| l.contains(sent[0].as_str())).unwrap();
    // local3 (19) * 8 + informational (6); APP-NAME; MSGID is the event.
    assert!(line.starts_with("158 portcullis access {"), "{line}");
    let record = body(line);
    assert_eq!(record["schema"], "portcullis.audit/1");
    assert_eq!(record["event"], "access");
    assert_eq!(record["decision"], "public");
    assert_eq!(record["app"], "wiki");
    assert_eq!(record["path"], "/before/0");
    assert!(record["time"].as_str().unwrap().ends_with('Z'));

    // The receiver goes away: records made meanwhile wait, and arrive once it is back.
    rsyslog.stop();
    for i in 0..5 {
        sent.push(request(&gw, &format!("/during/{i}")).await);
    }
    gw.wait_for_log("audit syslog delivery failed").await;
    rsyslog.run().await;
    for i in 0..5 {
        sent.push(request(&gw, &format!("/after/{i}")).await);
    }
    let lines = rsyslog
        .wait_until(Duration::from_secs(20), |l| {
            let got = received_ids(l);
            sent.iter().all(|id| got.contains(id))
        })
        .await;
    let got = received_ids(&lines);
    for id in &sent {
        assert_eq!(
            got.iter().filter(|g| *g == id).count(),
            1,
            "record {id} arrived exactly once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_counts_and_reports_and_ocsf_events_go_over_tcp() {
    // The receiver's ports are chosen, but it does not run yet.
    let mut rsyslog = Rsyslog::configured();
    let (_backend, gw) = gateway(&format!(
        "address = \"{}\"\ntransport = \"tcp\"\nformat = \"ocsf\"\nqueue = 100\n",
        rsyslog.tcp
    ))
    .await;
    for i in 0..130 {
        request(&gw, &format!("/flood/{i}")).await;
    }
    let metrics = support::prometheus::scrape(gw.admin).await;
    let value = |series: &str| support::prometheus::sample(&metrics, series).unwrap_or(-1.0);
    let dropped = value(r#"portcullis_audit_dropped_total{sink="syslog"}"#);
    // One record held by the writer, a hundred queued, the rest dropped.
    assert!(dropped >= 29.0, "dropped {dropped}:\n{metrics}");
    assert_eq!(
        value(r#"portcullis_audit_queue_depth{sink="syslog"}"#),
        100.0,
        "{metrics}"
    );

    rsyslog.run().await;
    let lines = rsyslog
        .wait_until(Duration::from_secs(20), |l| l.len() >= 101)
        .await;
    let report = gw.wait_for_log("audit records dropped").await;
    assert!(report.contains(&format!("dropped={dropped}")), "{report}");
    let event = body(&lines[0]);
    assert_eq!(event["class_uid"], 3003, "an access decision: {event}");
    assert_eq!(event["type_uid"], 300301);
    assert_eq!(event["status"], "Success");
    assert_eq!(event["metadata"]["product"]["name"], "Portcullis");
    assert_eq!(event["service"]["name"], "wiki");
    assert_eq!(event["unmapped"]["decision"], "public");
    assert!(event["time"].as_i64().unwrap() > 1_700_000_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_not_sent_to_a_receiver_whose_certificate_names_another_host() {
    let rsyslog = Rsyslog::start().await;
    let ca = support::dev_cert("ca.crt");
    let (_backend, gw) = gateway(&format!(
        "address = \"{}\"\ntransport = \"tls\"\nca_file = \"{}\"\nserver_name = \"siem.corp.example\"\n",
        rsyslog.tls,
        ca.display()
    ))
    .await;
    request(&gw, "/secret-report").await;
    let refused = gw.wait_for_log("audit syslog delivery failed").await;
    assert!(refused.contains("TLS handshake"), "{refused}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !rsyslog.lines().iter().any(|l| l.contains("secret-report")),
        "a record reached an unverified receiver"
    );
}
