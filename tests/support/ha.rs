//! Real servers for the high-availability tests, started on loopback and killed when dropped:
//! Debian's `redis-server` (as master or replica), `redis-sentinel` and `haproxy`
//! (installed by `tests/run.sh`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server process, killed and reaped when dropped.
pub struct Process {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(mut command: Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = command
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?} (tests/run.sh installs it): {e}"));
        Self {
            child: Some(child),
            log,
        }
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What it printed.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends one inline Redis command and returns the raw reply (`+PONG\r\n`, …).
pub async fn redis_command(port: u16, command: &str) -> Option<String> {
    let mut stream = tokio::time::timeout(
        Duration::from_millis(500),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .ok()?
    .ok()?;
    stream
        .write_all(format!("{command}\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

async fn wait_for_pong(port: u16, what: &str, process: &Process) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if redis_command(port, "PING")
            .await
            .is_some_and(|r| r.starts_with("+PONG"))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{what} on port {port} never answered PING:\n{}",
        process.output()
    );
}

/// One `redis-server`, persisting to its own directory (so a restart keeps its data).
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    process: Process,
}

impl RedisServer {
    /// A master on `port`.
    pub async fn master(port: u16) -> Self {
        Self::start(port, None, tempfile::tempdir().unwrap()).await
    }

    /// A replica of the master on `master_port`.
    pub async fn replica(port: u16, master_port: u16) -> Self {
        Self::start(port, Some(master_port), tempfile::tempdir().unwrap()).await
    }

    async fn start(port: u16, master: Option<u16>, dir: tempfile::TempDir) -> Self {
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--protected-mode",
            "no",
        ]);
        command.arg("--dir").arg(dir.path());
        if let Some(m) = master {
            command.args(["--replicaof", "127.0.0.1", &m.to_string()]);
        }
        let process = Process::spawn(command, dir.path().join("redis.log"));
        wait_for_pong(port, "redis-server", &process).await;
        Self { port, dir, process }
    }

    /// SIGKILL (a crash: no shutdown save).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port and data, as a master.
    pub async fn restart_as_master(self) -> Self {
        let Self {
            port,
            dir,
            mut process,
        } = self;
        process.kill();
        Self::start(port, None, dir).await
    }

    /// `INFO <section>` as text.
    pub async fn info(&self, section: &str) -> String {
        redis_command(self.port, &format!("INFO {section}"))
            .await
            .unwrap_or_default()
    }

    /// Everything it wrote to disk (the append-only file records every write, as `MONITOR`
    /// would show it).
    pub fn persisted_bytes(&self) -> Vec<u8> {
        fn walk(dir: &std::path::Path, out: &mut Vec<u8>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_none_or(|e| e != "log") {
                    out.extend(std::fs::read(&path).unwrap_or_default());
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out
    }

    /// Number of keys.
    pub async fn dbsize(&self) -> u64 {
        redis_command(self.port, "DBSIZE")
            .await
            .and_then(|r| r.trim().trim_start_matches(':').parse().ok())
            .unwrap_or(0)
    }
}

/// A `redis-sentinel` watching one master under the name `portcullis`, quick to fail over.
pub struct Sentinel {
    pub port: u16,
    _dir: tempfile::TempDir,
    process: Process,
}

impl Sentinel {
    pub async fn start(port: u16, master_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                 sentinel monitor portcullis 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds portcullis 1000\n\
                 sentinel failover-timeout portcullis 10000\n\
                 sentinel parallel-syncs portcullis 1\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let mut command = Command::new("redis-sentinel");
        command.arg(&conf);
        let process = Process::spawn(command, dir.path().join("sentinel.log"));
        wait_for_pong(port, "redis-sentinel", &process).await;
        Self {
            port,
            _dir: dir,
            process,
        }
    }

    /// What Sentinel logged (failover events).
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// The port of the master Sentinel names now.
    pub async fn master_port(&self) -> Option<u16> {
        let reply = redis_command(self.port, "SENTINEL get-master-addr-by-name portcullis").await?;
        reply.lines().rev().find_map(|l| l.trim().parse().ok())
    }
}

/// HAProxy round-robin over the gateway nodes, no stickiness, each node health-checked on
/// its admin `/readyz`.
pub struct Haproxy {
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    process: Process,
}

impl Haproxy {
    /// Listens on `addr`; `nodes` are (traffic address, admin address) pairs.
    pub async fn start(addr: SocketAddr, nodes: &[(SocketAddr, SocketAddr)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let servers: String = nodes
            .iter()
            .enumerate()
            .map(|(i, (traffic, admin))| {
                format!(
                    "  server node{i} {traffic} check addr {} port {} inter 300ms fall 2 rise 2\n",
                    admin.ip(),
                    admin.port()
                )
            })
            .collect();
        let conf = dir.path().join("haproxy.cfg");
        std::fs::write(
            &conf,
            format!(
                "global\n  maxconn 2000\n\
                 defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n\
                 \x20 retries 3\n  option redispatch 1\n  retry-on conn-failure\n\
                 frontend gateway\n  bind {addr}\n  default_backend nodes\n\
                 backend nodes\n  balance roundrobin\n  option httpchk GET /readyz\n  http-check expect status 200\n{servers}"
            ),
        )
        .unwrap();
        let mut command = Command::new("haproxy");
        command.arg("-db").arg("-f").arg(&conf);
        let process = Process::spawn(command, dir.path().join("haproxy.log"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen:\n{}",
                process.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            addr,
            _dir: dir,
            process,
        }
    }

    pub fn output(&self) -> String {
        self.process.output()
    }
}
