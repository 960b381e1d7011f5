//! Debian's Prometheus server and `promtool` (installed by `tests/run.sh`): a real server that
//! scrapes a gateway's admin listener, started on loopback and killed when dropped.

use super::ha::Process;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// A Prometheus server scraping one target every second.
pub struct Prometheus {
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    process: Process,
}

impl Prometheus {
    /// Starts a server scraping `target`'s `/metrics`; returns once it answers.
    pub async fn scraping(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
                 scrape_configs:\n  - job_name: portcullis\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = super::free_addr();
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn");
        let process = Process::spawn(command, dir.path().join("prometheus.log"));
        let server = Self {
            addr,
            _dir: dir,
            process,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = super::http_client()
                .get(format!("http://{addr}/-/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 20s:\n{}",
                server.process.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of an instant query that yields one sample, or `None` while it yields none.
    pub async fn query(&self, promql: &str) -> Option<f64> {
        let answer: serde_json::Value = super::http_client()
            .get(format!(
                "http://{}/api/v1/query?{}",
                self.addr,
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("query", promql)
                    .finish()
            ))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        assert_eq!(answer["status"], "success", "query {promql}: {answer}");
        let value = answer["data"]["result"].get(0)?["value"][1].as_str()?;
        value.parse().ok()
    }

    /// Waits (up to 15 s) until `promql` yields a value that `holds`; returns it.
    pub async fn wait_for(&self, promql: &str, holds: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let value = self.query(promql).await;
            if let Some(v) = value.filter(|v| holds(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{promql} is {value:?} after 15s; prometheus log:\n{}",
                self.process.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// What a gateway's admin listener at `admin` answers on `/metrics` (must be 200).
pub async fn scrape(admin: SocketAddr) -> String {
    let response = super::http_client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The value of the sample named exactly `series` (name and labels as exposed), if present.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Runs `promtool check metrics` on an exposition: its verdict and what it printed.
pub fn promtool_check(exposition: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package, installed by tests/run.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
