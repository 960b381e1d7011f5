//! Test harness: the real `portcullis` binary on free loopback ports, in front of real HTTP
//! backends started by the test (an echoing "legacy app", plus ones that stall or hang up).
//!
//! Everything started here stops when its handle drops: backends are tasks of the test's own
//! runtime, and the gateway process is killed and reaped.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod audit_schema;
pub mod browser;
pub mod form_app;
pub mod ha;
pub mod idp;
pub mod internal_app;
pub mod kerberos;
pub mod ldap;
pub mod node;
pub mod prometheus;
pub mod rsyslog;
pub mod saml_idp;
pub mod ssf;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The repository root (for `certs/dev`, `policies/`, `deploy/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of a test-only file in `certs/dev`.
pub fn dev_cert(name: &str) -> PathBuf {
    repo_root().join("certs/dev").join(name)
}

/// A plain HTTP client for calls a test makes itself (no redirects followed, 10 s timeout).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Runs `portcullis sessions <args> -c <config>` as the operator `it-admin`; whether it
/// succeeded, and what it printed.
pub async fn sessions_cli(config: &Path, args: &[&str]) -> (bool, String) {
    let mut command = Command::new(gateway_binary());
    command
        .arg("sessions")
        .args(args)
        .arg("-c")
        .arg(config)
        .env("USER", "it-admin")
        .env_remove("SUDO_USER");
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Now in Unix seconds by the machine's clock: what the IdPs under test go by.
#[allow(clippy::disallowed_methods)]
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A loopback address for a listener started later (a gateway or IdP whose port must be known
/// in advance). Ports come from 20000-32767, below the kernel's ephemeral range (32768+), so no
/// outgoing connection or `:0` bind can take the port between this pick and the real bind; a
/// per-process counter keeps picks unique, and each is checked to be free right now.
pub fn free_addr() -> SocketAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    const FIRST: usize = 20_000;
    const SPAN: usize = 12_000;
    let seed = (std::process::id() as usize).wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = u16::try_from(FIRST + (seed + n) % SPAN).unwrap();
        if let Ok(l) = StdListener::bind(("127.0.0.1", port)) {
            return l.local_addr().unwrap();
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN);
}

/// FNV-1a, to compare large bodies without keeping them.
pub fn fnv1a(hash: u64, data: &[u8]) -> u64 {
    data.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Deterministic content for large-body tests.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

// ---- backends --------------------------------------------------------------------------------

/// A backend server owned by a test.
pub struct Backend {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Backend {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Requests (or connections, for raw backends) seen so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

/// The echoing "legacy app": answers every request with JSON describing what it received.
/// `GET /download/N` streams N bytes of [`pattern`] instead.
pub async fn echo_backend(name: &str) -> Backend {
    serve(name, None).await
}

/// The echo backend over TLS with the test-only `backend.crt`.
pub async fn echo_backend_tls(name: &str) -> Backend {
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acceptor
        .set_private_key_file(dev_cert("backend.key"), SslFiletype::PEM)
        .unwrap();
    acceptor
        .set_certificate_chain_file(dev_cert("backend.crt"))
        .unwrap();
    serve(name, Some(Arc::new(acceptor.build()))).await
}

async fn serve(name: &str, tls: Option<Arc<openssl::ssl::SslAcceptor>>) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let name: Arc<str> = Arc::from(name);
    let counter = hits.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let name = name.clone();
            let counter = counter.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    echo(req, name.clone())
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(acceptor) => {
                        let ssl = openssl::ssl::Ssl::new(acceptor.context()).unwrap();
                        let mut tls_stream = tokio_openssl::SslStream::new(ssl, stream).unwrap();
                        if std::pin::Pin::new(&mut tls_stream).accept().await.is_err() {
                            return;
                        }
                        let _ = builder
                            .serve_connection(TokioIo::new(tls_stream), service)
                            .await;
                    }
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    Backend { addr, hits, task }
}

/// A legacy app behind HTTP Basic: echoes (as [`echo_backend`]) only when the request carries
/// `user:password`, else 401 with a challenge. The expected password can be changed (as when
/// a user changes it at the app); `hits` counts every request.
pub struct BasicBackend {
    pub backend: Backend,
    password: Arc<std::sync::Mutex<String>>,
}

impl BasicBackend {
    /// The app's password changes.
    pub fn set_password(&self, password: &str) {
        *self.password.lock().unwrap() = password.to_string();
    }
}

pub async fn basic_backend(name: &str, user: &str, password: &str) -> BasicBackend {
    use base64::Engine;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let secret = Arc::new(std::sync::Mutex::new(password.to_string()));
    let (name, user): (Arc<str>, Arc<str>) = (Arc::from(name), Arc::from(user));
    let (counter, expected) = (hits.clone(), secret.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (name, user, counter, expected) = (
                name.clone(),
                user.clone(),
                counter.clone(),
                expected.clone(),
            );
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let want = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{user}:{}", expected.lock().unwrap()))
                    );
                    let ok = req
                        .headers()
                        .get("authorization")
                        .is_some_and(|v| v.as_bytes() == want.as_bytes());
                    let name = name.clone();
                    async move {
                        if ok {
                            echo(req, name).await
                        } else {
                            Ok(Response::builder()
                                .status(401)
                                .header("WWW-Authenticate", "Basic realm=\"legacy\"")
                                .body(Full::new(Bytes::from_static(b"login required")).boxed())
                                .unwrap())
                        }
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    BasicBackend {
        backend: Backend { addr, hits, task },
        password: secret,
    }
}

async fn echo(req: Request<Incoming>, name: Arc<str>) -> Result<Response<Body>, Infallible> {
    if let Some(n) = req.uri().path().strip_prefix("/download/") {
        let len: usize = n.parse().unwrap_or(0);
        let data = pattern(len);
        let chunks: Vec<Result<Frame<Bytes>, Infallible>> = data
            .chunks(64 * 1024)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = StreamBody::new(stream::iter(chunks)).boxed();
        return Ok(Response::builder()
            .header("X-Backend", &*name)
            .body(body)
            .unwrap());
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let version = format!("{:?}", req.version());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = req.into_body();
    let (mut len, mut hash) = (0usize, FNV_START);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            len += data.len();
            hash = fnv1a(hash, data);
        }
    }
    let payload = json!({
        "backend": &*name, "method": method, "uri": uri, "version": version,
        "headers": headers, "body_len": len, "body_hash": format!("{hash:016x}"),
    });
    let body = Full::new(Bytes::from(payload.to_string())).boxed();
    Ok(Response::builder()
        .header("Content-Type", "application/json")
        .header("X-Backend", &*name)
        .body(body)
        .unwrap())
}

/// Accepts connections and never answers (a hung backend).
pub async fn stalling_backend() -> Backend {
    raw_backend(|stream| async move {
        tokio::time::sleep(Duration::from_secs(300)).await;
        drop(stream);
    })
    .await
}

/// A port whose accept queue is full, so new connections are never completed (like a host that
/// drops packets): connecting to it runs into the connect timeout.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _queued: std::net::TcpStream,
}

pub async fn blackhole() -> Blackhole {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    // One connection fills a backlog of 0; it is never accepted.
    let queued = std::net::TcpStream::connect(addr).unwrap();
    Blackhole {
        addr,
        _listener: listener,
        _queued: queued,
    }
}

/// Accepts connections and closes them at once, without a response.
pub async fn closing_backend() -> Backend {
    raw_backend(|stream| async move { drop(stream) }).await
}

async fn raw_backend<F, Fut>(on_conn: F) -> Backend
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(on_conn(stream));
        }
    });
    Backend { addr, hits, task }
}

/// A backend that keeps every byte it receives (to see exactly what the gateway sent), answers
/// each connection's first request head with `answer`, then keeps reading until the client
/// closes (so whatever follows on the connection is recorded too).
pub struct RecordingBackend {
    pub backend: Backend,
    received: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl RecordingBackend {
    /// Everything received so far, on every connection, as text.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

/// A [`RecordingBackend`] that answers `200 ok` and closes.
pub async fn recording_backend() -> RecordingBackend {
    answering_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        false,
    )
    .await
}

/// A [`RecordingBackend`] that answers every request with `answer` and then, when
/// `keep_reading`, records what else arrives on the connection (like a tunnel would).
pub async fn answering_backend(answer: &'static [u8], keep_reading: bool) -> RecordingBackend {
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    let backend = raw_backend(move |mut stream| {
        let sink = sink.clone();
        async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            let mut answered = false;
            loop {
                let read =
                    tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
                let n = match read {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => break,
                };
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
                head.extend_from_slice(&buf[..n]);
                if !answered && head.windows(4).any(|w| w == b"\r\n\r\n") {
                    // Let a request body (if any) arrive before answering.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await
                    {
                        if n == 0 {
                            break;
                        }
                        sink.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = stream.write_all(answer).await;
                    answered = true;
                    if !keep_reading {
                        break;
                    }
                }
            }
        }
    })
    .await;
    RecordingBackend { backend, received }
}

/// Headers the echo backend received, as (name, value) pairs.
pub fn received_headers(echo: &Value) -> Vec<(String, String)> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// All values of a header the echo backend received (name compared exactly, lower-case).
pub fn header_values(echo: &Value, name: &str) -> Vec<String> {
    received_headers(echo)
        .into_iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v)
        .collect()
}

// ---- the gateway -----------------------------------------------------------------------------

/// The gateway binary under test: this build's, or `PORTCULLIS_TEST_BINARY` (to run the same
/// tests against another build, e.g. to show that a new test fails on an older release).
pub fn gateway_binary() -> PathBuf {
    std::env::var_os("PORTCULLIS_TEST_BINARY").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_portcullis")),
        PathBuf::from,
    )
}

/// Describes a gateway to start: its config extras and policy files.
#[derive(Default)]
pub struct GatewaySpec {
    policies: Vec<(String, String)>,
    https: bool,
    h2c: bool,
    json_logs: bool,
    gateway_extra: String,
    http_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    server_extra: String,
    idps_may_be_down: bool,
    admin_token: Option<String>,
    env: Vec<(String, String)>,
}

impl GatewaySpec {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds `policies/<file>` with this text.
    pub fn policy(mut self, file: &str, text: impl Into<String>) -> Self {
        self.policies.push((file.to_string(), text.into()));
        self
    }
    /// Also listen for HTTPS with the test-only gateway certificate.
    pub fn https(mut self) -> Self {
        self.https = true;
        self
    }
    /// Accept HTTP/2 prior-knowledge on the plain listener.
    pub fn h2c(mut self) -> Self {
        self.h2c = true;
        self
    }
    /// Listen for plain HTTP on this address (chosen beforehand, e.g. for IdP redirect URIs).
    pub fn http_addr(mut self, addr: SocketAddr) -> Self {
        self.http_addr = Some(addr);
        self
    }

    /// The admin listener's address, known in advance (e.g. for the console's redirect URI).
    pub fn admin_addr(mut self, addr: SocketAddr) -> Self {
        self.admin_addr = Some(addr);
        self
    }
    /// Also listen for HTTPS, on this address (chosen beforehand, e.g. for redirect URIs).
    pub fn https_addr(mut self, addr: SocketAddr) -> Self {
        self.https = true;
        self.https_addr = Some(addr);
        self
    }
    /// Log in JSON instead of text.
    pub fn json_logs(mut self) -> Self {
        self.json_logs = true;
        self
    }
    /// Start returns once the listeners accept, even while an IdP has not answered yet
    /// (`/readyz` stays 503 until every IdP has).
    pub fn idps_may_be_down(mut self) -> Self {
        self.idps_may_be_down = true;
        self
    }
    /// Extra `key = value` lines in the `[server]` table (e.g. `grace_period = "2s"`), replacing
    /// the harness's own value for the same key.
    pub fn server_setting(mut self, line: &str) -> Self {
        self.server_extra.push_str(line);
        self.server_extra.push('\n');
        self
    }
    /// An admin token (`[admin] token_file`, written beside the config) for the session API.
    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.to_string());
        self
    }
    /// Extra TOML appended to `portcullis.toml` (whole tables, e.g. `[headers]`).
    /// An environment variable for the gateway process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn gateway_toml(mut self, extra: &str) -> Self {
        self.gateway_extra.push_str(extra);
        self.gateway_extra.push('\n');
        self
    }

    /// Writes the files and starts the gateway; returns once `/readyz` says ready.
    pub async fn start(self) -> RunningGateway {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        for (file, text) in &self.policies {
            std::fs::write(policies.join(file), text).unwrap();
        }
        let http = self.http_addr.unwrap_or_else(free_addr);
        let admin = self.admin_addr.unwrap_or_else(free_addr);
        let https = self
            .https
            .then(|| self.https_addr.unwrap_or_else(free_addr));
        let https_line = https.map_or(String::new(), |a| {
            format!(
                "https = {{ addr = \"{a}\", cert = \"{}\", key = \"{}\" }}\n",
                dev_cert("gateway.crt").display(),
                dev_cert("gateway.key").display()
            )
        });
        let mut server = vec![
            "threads = 2".to_string(),
            "grace_period = \"0s\"".to_string(),
            "shutdown_timeout = \"1s\"".to_string(),
        ];
        for line in self.server_extra.lines() {
            let key = line.split('=').next().unwrap_or("").trim();
            server.retain(|l| l.split('=').next().unwrap_or("").trim() != key);
            server.push(line.to_string());
        }
        let token_line = self.admin_token.as_ref().map_or(String::new(), |token| {
            let file = dir.path().join("admin.token");
            std::fs::write(&file, format!("{token}\n")).unwrap();
            std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            format!("token_file = \"{}\"\n", file.display())
        });
        let config = format!(
            "policies = \"policies\"\n[listen]\nhttp = \"{http}\"\nh2c = {}\n{https_line}\
             [admin]\nlisten = \"{admin}\"\n{token_line}[server]\n{}\n\
             [log]\nlevel = \"info\"\nformat = \"{}\"\n{}",
            self.h2c,
            server.join("\n"),
            if self.json_logs { "json" } else { "text" },
            self.gateway_extra
        );
        let config_path = dir.path().join("portcullis.toml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("gateway.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(gateway_binary())
            .args(["run", "-c"])
            .arg(&config_path)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut gw = RunningGateway {
            child: Some(child),
            http,
            https,
            admin,
            dir,
            log_path,
        };
        gw.wait_ready(self.idps_may_be_down).await;
        gw
    }
}

/// A running gateway process; killed when dropped.
pub struct RunningGateway {
    child: Option<Child>,
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    log_path: PathBuf,
}

impl RunningGateway {
    async fn wait_ready(&mut self, idps_may_be_down: bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        loop {
            let url = format!("http://{}/readyz", self.admin);
            if let Ok(r) = client.get(&url).send().await {
                if r.status() == 200 {
                    return;
                }
                let body = r.text().await.unwrap_or_default();
                let listeners_up = body.contains("listener") && !body.contains(": down");
                if idps_may_be_down && listeners_up {
                    return;
                }
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "gateway exited ({status}) before ready; log:\n{}",
                    self.logs()
                );
            }
            if Instant::now() > deadline {
                panic!("gateway not ready in 30s; log:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the gateway logged so far (a log that cannot be read fails the test: an
    /// empty string would make every "never logged" check pass).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| {
            panic!(
                "cannot read the gateway log {}: {e}",
                self.log_path.display()
            )
        })
    }

    /// Waits until the log contains `needle` (access lines are written after the response),
    /// failing the test after 5 s.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        // Generous: it only runs out when something is wrong, or the machine has stalled.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            if Instant::now() > deadline {
                panic!("the gateway never logged `{needle}`; log:\n{logs}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The log once every request made so far has been logged: sends a marker request of
    /// its own and waits for the marker's access line, which is written after those of the
    /// requests answered before it. For "never logged" checks, which would pass on a log
    /// read too early.
    pub async fn settled_logs(&self) -> String {
        static MARKERS: AtomicUsize = AtomicUsize::new(0);
        let marker = format!(
            "/.portcullis/log-marker-{}-{}",
            std::process::id(),
            MARKERS.fetch_add(1, Ordering::Relaxed)
        );
        let mut stream = TcpStream::connect(self.http)
            .await
            .expect("connect for the marker");
        let request = format!(
            "GET {marker} HTTP/1.1\r\nHost: log-marker.invalid\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the marker");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        // The marker appears in its access line only.
        self.wait_for_log(&marker).await
    }

    /// The gateway's configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("portcullis.toml")
    }

    fn spawn(&self, upgrade: bool, log_path: &Path) -> Child {
        let log = std::fs::File::create(log_path).unwrap();
        let mut command = Command::new(gateway_binary());
        command.args(["run", "-c"]).arg(self.config_path());
        if upgrade {
            command.arg("--upgrade");
        }
        command
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// A systemd-style restart: SIGTERM, wait for the exit, start again on the same
    /// configuration (logging to a new file), wait until ready.
    pub async fn restart(&mut self) {
        self.signal("TERM");
        assert!(
            self.wait_exit(Duration::from_secs(15)).is_some(),
            "gateway did not stop for the restart; log:\n{}",
            self.logs()
        );
        self.restart_stopped().await;
    }

    /// Starts the gateway again after it stopped (logging to a new file); waits until ready.
    pub async fn restart_stopped(&mut self) {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let stamp = STARTS.fetch_add(1, Ordering::Relaxed);
        let generation = self.dir.path().join(format!("gateway-{stamp}.log"));
        self.log_path = generation;
        self.child = Some(self.spawn(false, &self.log_path));
        self.wait_ready(false).await;
    }

    /// A zero-downtime upgrade's first half: starts a new process with `run --upgrade` on the
    /// same configuration, which becomes this gateway (its log is [`RunningGateway::logs`]
    /// from now on). The old process is returned, still serving, to be sent SIGQUIT.
    pub fn begin_upgrade(&mut self) -> OldProcess {
        let old = OldProcess {
            child: self.child.take(),
            log_path: self.log_path.clone(),
        };
        self.log_path = self.dir.path().join("gateway-upgraded.log");
        self.child = Some(self.spawn(true, &self.log_path));
        old
    }

    /// Process id, to send signals.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal by name (`TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        send_signal(self.pid(), name);
    }

    /// Waits up to `limit` for the process to exit; returns its exit status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://<host>/...` through the plain listener, with the Host header set.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `http://<host>:<port>/...` on the plain listener, as a browser addresses an app (the
    /// test browsers resolve every app host to loopback).
    pub fn app_url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.http.port())
    }

    /// What `/readyz` answers now (its text, whatever the status).
    pub async fn readyz(&self) -> String {
        http_client()
            .get(format!("http://{}/readyz", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `GET path` on `host` through the plain listener (a fresh HTTP/1.1 client).
    pub async fn get(&self, host: &str, path: &str) -> reqwest::Response {
        self.client(&[host])
            .get(format!("http://{host}:{}{path}", self.http.port()))
            .send()
            .await
            .unwrap()
    }

    /// A client that sends every name in `hosts` to this gateway's listeners and trusts the
    /// test-only CA.
    pub fn client(&self, hosts: &[&str]) -> reqwest::Client {
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(dev_cert("ca.crt")).unwrap()).unwrap();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(30));
        for host in hosts {
            builder = builder.resolve(host, self.http);
        }
        builder.build().unwrap()
    }
}

/// Sends the signal called `name` to process `pid`, failing the test if it cannot.
fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// The process a zero-downtime upgrade replaces; killed when dropped.
pub struct OldProcess {
    child: Option<Child>,
    pub log_path: PathBuf,
}

impl OldProcess {
    /// Sends a signal by name (`QUIT` hands the sockets over).
    pub fn signal(&self, name: &str) {
        send_signal(self.child.as_ref().map_or(0, Child::id), name);
    }

    /// Waits up to `limit` for the exit without blocking the test's runtime.
    pub async fn exited(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What it logged.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for OldProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends raw bytes to `addr` and returns everything the server answered until it closed the
/// connection (or 10 s passed).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP/1 response.
pub fn raw_status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The JSON body of a raw response from the echo backend.
pub fn raw_json(response: &str) -> Value {
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    // Responses may be chunked: take the JSON object between the first `{` and last `}`.
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |e| e + 1);
    serde_json::from_str(&body[start..end])
        .unwrap_or_else(|e| panic!("no JSON in {response:?}: {e}"))
}

/// Host of the app [`echo_app`] sets up.
pub const APP_HOST: &str = "app.portcullis.localhost";

/// The common setup: an echo backend named `app` behind one public app at [`APP_HOST`], on a
/// gateway started from `spec` (which may add HTTPS, h2c or gateway settings).
pub async fn echo_app(spec: GatewaySpec) -> (Backend, RunningGateway) {
    let app = echo_backend("app").await;
    let gw = spec
        .policy(
            "app.toml",
            open_policy("app", &[APP_HOST], &[(&app.url(), 1)], ""),
        )
        .start()
        .await;
    (app, gw)
}

/// A gateway with one public app at [`APP_HOST`] in front of `upstreams`, with `extra` policy
/// keys (e.g. `[timeouts]`).
pub async fn app_gateway(upstreams: &[(&str, u32)], extra: &str) -> RunningGateway {
    GatewaySpec::new()
        .policy(
            "app.toml",
            open_policy("app", &[APP_HOST], upstreams, extra),
        )
        .start()
        .await
}

/// A policy file text with one public allow-all rule, for tests about proxying itself.
/// The top of a test policy: its id, owner, one host, one upstream and (when given) the IdP
/// it signs in with. Every test's policy starts here.
pub fn policy_head(app: &str, host: &str, upstream: &str, idp: Option<&str>) -> String {
    let idp = idp.map_or(String::new(), |i| format!("idp = \"{i}\"\n"));
    format!(
        "schema = 1\napp = \"{app}\"\nowner = \"it@corp.example\"\nsummary = \"test app\"\n\
         hosts = [\"{host}\"]\nupstreams = [{{ url = \"{upstream}\" }}]\n{idp}"
    )
}

pub fn open_policy(app: &str, hosts: &[&str], upstreams: &[(&str, u32)], extra: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    let ups: Vec<String> = upstreams
        .iter()
        .map(|(u, w)| format!("{{ url = \"{u}\", weight = {w} }}"))
        .collect();
    format!(
        "schema = 1\napp = \"{app}\"\nowner = \"tests@example.test\"\nsummary = \"test app\"\n\
         hosts = [{}]\nupstreams = [{}]\n{extra}\n\
         [[allow]]\nid = \"everyone\"\nwhy = \"test\"\npublic = true\npaths = [\"/**\"]\n",
        hosts.join(", "),
        ups.join(", ")
    )
}

/// Waits until something listens on loopback `port` (a server the test started), or fails
/// naming `what`.
pub async fn wait_for_port(port: u16, what: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} is not listening on {port}");
}

/// Reads a file relative to the repository root.
pub fn read_repo_file(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap()
}
