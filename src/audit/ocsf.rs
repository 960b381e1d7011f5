//! The audit record as an OCSF 1.1 event, for SIEMs that ingest the Open Cybersecurity Schema
//! Framework: sign-ins, sign-outs and session ends as Authentication (3002), access decisions
//! as Authorize Session (3003), stored credentials and revocations as Account Change (3001).
//! Fields OCSF has no place for stay under `unmapped`, so nothing of the record is lost.

use serde_json::{json, Map, Value};

const AUTHENTICATION: u64 = 3002;
const AUTHORIZE_SESSION: u64 = 3003;
const ACCOUNT_CHANGE: u64 = 3001;
const OTHER: u64 = 99;

/// (class, activity, succeeded) for one of our events.
fn classify(event: &str, record: &Map<String, Value>) -> (u64, u64, bool) {
    match event {
        "login_success" | "step_up" | "backend_login" => (AUTHENTICATION, 1, true),
        "login_failure" | "login_throttled" => (AUTHENTICATION, 1, false),
        "logout" | "session_end" => (AUTHENTICATION, 2, true),
        "logout_failure" | "signal_refused" => (AUTHENTICATION, 2, false),
        "bearer_refused" => (AUTHENTICATION, OTHER, false),
        "kerberos_ticket" => (
            AUTHENTICATION,
            1,
            record.get("outcome").and_then(Value::as_str) == Some("ok"),
        ),
        "access" => {
            let admitted = matches!(
                record.get("decision").and_then(Value::as_str),
                Some("public" | "allow")
            );
            (AUTHORIZE_SESSION, 1, admitted)
        }
        // Account Change activity 3: Password Change (a form-fill credential was stored).
        "credential_stored" => (ACCOUNT_CHANGE, 3, true),
        "revocation" => (ACCOUNT_CHANGE, OTHER, true),
        _ => (AUTHENTICATION, OTHER, true),
    }
}

fn category(class: u64) -> u64 {
    class / 1000
}

/// Maps one record.
pub fn event(record: &Map<String, Value>) -> Value {
    let text = |key: &str| {
        record
            .get(key)
            .and_then(Value::as_str)
            .filter(|v| *v != "-")
    };
    let event_name = text("event").unwrap_or("unknown");
    let (class, activity, succeeded) = classify(event_name, record);
    let time_ms = text("time")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp_millis());
    let mut out = json!({
        "class_uid": class,
        "category_uid": category(class),
        "activity_id": activity,
        "type_uid": class * 100 + activity,
        "time": time_ms,
        "severity_id": if succeeded { 1 } else { 3 },
        "status_id": if succeeded { 1 } else { 2 },
        "status": if succeeded { "Success" } else { "Failure" },
        "message": text("msg").unwrap_or(event_name),
        "metadata": {
            "version": "1.1.0",
            "product": { "name": "Portcullis", "vendor_name": "Portcullis", "version": env!("CARGO_PKG_VERSION") },
            "log_name": "audit",
            "event_code": event_name,
            "uid": text("request_id"),
        },
    });
    let Some(obj) = out.as_object_mut() else {
        return out;
    };
    if let Some(user) = text("user") {
        let mut u = Map::new();
        u.insert("name".into(), user.into());
        if user.contains('@') {
            u.insert("email_addr".into(), user.into());
        }
        if let Some(subject) = text("subject") {
            u.insert("uid".into(), subject.into());
        }
        obj.insert("user".into(), Value::Object(u));
    }
    if let Some(ip) = text("client") {
        obj.insert("src_endpoint".into(), json!({ "ip": ip }));
    }
    if let Some(app) = text("app") {
        obj.insert("service".into(), json!({ "name": app }));
    }
    if let Some(reason) = text("reason") {
        obj.insert("status_detail".into(), reason.into());
    }
    if class == AUTHENTICATION && event_name == "step_up" {
        obj.insert("is_mfa".into(), true.into());
    }
    // Everything else the record says, as it says it.
    let mapped = [
        "time",
        "msg",
        "user",
        "subject",
        "client",
        "app",
        "reason",
        "request_id",
    ];
    let unmapped: Map<String, Value> = record
        .iter()
        .filter(|(k, _)| !mapped.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    obj.insert("unmapped".into(), Value::Object(unmapped));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), Value::from(*v)))
            .collect()
    }

    #[test]
    fn sign_ins_decisions_and_credentials_land_in_their_classes() {
        let login = event(&record(&[
            ("time", "2026-12-02T10:00:00.5Z"),
            ("event", "login_failure"),
            ("reason", "id token rejected: expired"),
            ("idp", "corp"),
            ("client", "192.0.2.7"),
        ]));
        assert_eq!(login["class_uid"], 3002);
        assert_eq!(login["type_uid"], 300201);
        assert_eq!(login["status_id"], 2);
        assert_eq!(login["time"], 1_796_205_600_500_i64);
        assert_eq!(login["src_endpoint"]["ip"], "192.0.2.7");
        assert_eq!(login["status_detail"], "id token rejected: expired");
        assert_eq!(login["unmapped"]["idp"], "corp");

        let denied = event(&record(&[("event", "access"), ("decision", "deny")]));
        assert_eq!(denied["class_uid"], 3003);
        assert_eq!(denied["status"], "Failure");
        let allowed = event(&record(&[
            ("event", "access"),
            ("decision", "allow"),
            ("user", "alice@corp.example"),
        ]));
        assert_eq!(allowed["status"], "Success");
        assert_eq!(allowed["user"]["email_addr"], "alice@corp.example");

        let stored = event(&record(&[("event", "credential_stored")]));
        assert_eq!(stored["class_uid"], 3001);
        assert_eq!(stored["activity_id"], 3);
        let ended = event(&record(&[("event", "session_end"), ("user", "-")]));
        assert_eq!(ended["activity_id"], 2);
        assert!(ended.get("user").is_none(), "'-' is no user");
    }
}
