//! Debian's `rsyslogd` (installed by `tests/run.sh`) as the SIEM's syslog receiver: one plain
//! TCP input and one TLS input (the dev CA's `gateway.crt`) on loopback, writing what arrives
//! to a file; can be stopped and started again on the same ports. Killed when dropped.

use super::ha::Process;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A syslog receiver.
pub struct Rsyslog {
    pub tcp: SocketAddr,
    pub tls: SocketAddr,
    dir: tempfile::TempDir,
    process: Option<Process>,
    starts: u32,
}

impl Rsyslog {
    /// Chooses ports and writes the configuration, without starting the receiver.
    pub fn configured() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tcp = super::free_addr();
        let tls = super::free_addr();
        std::fs::create_dir(dir.path().join("work")).unwrap();
        let cert = |name: &str| super::dev_cert(name).display().to_string();
        let config = format!(
            r#"global(workDirectory="{work}"
       DefaultNetstreamDriverCAFile="{ca}"
       DefaultNetstreamDriverCertFile="{crt}"
       DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}")
input(type="imtcp" address="127.0.0.1" port="{tls_port}"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
template(name="line" type="string" string="%pri% %app-name% %msgid% %msg%\n")
action(type="omfile" file="{out}" template="line")
"#,
            work = dir.path().join("work").display(),
            ca = cert("ca.crt"),
            crt = cert("gateway.crt"),
            key = cert("gateway.key"),
            tcp_port = tcp.port(),
            tls_port = tls.port(),
            out = dir.path().join("received.log").display(),
        );
        std::fs::write(dir.path().join("rsyslog.conf"), config).unwrap();
        Self {
            tcp,
            tls,
            dir,
            process: None,
            starts: 0,
        }
    }

    /// Starts a receiver on fresh ports; returns once both inputs accept connections.
    pub async fn start() -> Self {
        let mut receiver = Self::configured();
        receiver.run().await;
        receiver
    }

    /// Starts (again) on the configured ports.
    pub async fn run(&mut self) {
        self.starts += 1;
        let mut command = Command::new("rsyslogd");
        command
            .arg("-n")
            .arg("-f")
            .arg(self.dir.path().join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.path().join(format!("rsyslog-{}.pid", self.starts)));
        let log = self
            .dir
            .path()
            .join(format!("rsyslogd-{}.log", self.starts));
        let process = Process::spawn(command, log);
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in [self.tcp, self.tls] {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                assert!(
                    Instant::now() < deadline,
                    "rsyslogd did not listen on {addr}:\n{}",
                    process.output()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.process = Some(process);
    }

    /// Stops the receiver (its connections close).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    fn received_path(&self) -> PathBuf {
        self.dir.path().join("received.log")
    }

    /// Every message received so far: `PRI APP-NAME MSGID MSG`, one per line.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.received_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits (up to `limit`) until `holds` is true of the received lines; returns them.
    pub async fn wait_until(
        &self,
        limit: Duration,
        holds: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let lines = self.lines();
            if holds(&lines) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "not received in {limit:?}; got {} lines:\n{}",
                lines.len(),
                lines.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
