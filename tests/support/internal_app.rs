//! The sample app that knows only its internal name (`deploy/sample-apps/internal_name_app.py`)
//! as a real process, killed when dropped. Also the mutual-TLS backend of the upstream TLS
//! tests.

/// The internal name every instance believes it has.
pub const INTERNAL_ORIGIN: &str = "http://intranet-host:8080";

/// One running instance.
pub struct InternalApp {
    pub port: u16,
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl InternalApp {
    /// Plain HTTP on `port`.
    pub async fn start(port: u16) -> Self {
        Self::launch(port, Vec::new()).await
    }

    /// HTTPS with the test-only `backend.crt`, demanding a client certificate from the
    /// test-only CA when `client_ca`, and speaking at most TLS 1.2 when `tls12_only`.
    pub async fn start_tls(port: u16, client_ca: bool, tls12_only: bool) -> Self {
        let mut args = vec![
            "--tls".to_string(),
            super::dev_cert("backend.crt").display().to_string(),
            super::dev_cert("backend.key").display().to_string(),
        ];
        if client_ca {
            args.push("--client-ca".into());
            args.push(super::dev_cert("ca.crt").display().to_string());
        }
        if tls12_only {
            args.push("--max-tls".into());
            args.push("1.2".into());
        }
        Self::launch(port, args).await
    }

    async fn launch(port: u16, args: Vec<String>) -> Self {
        let mut app = Self {
            port,
            args,
            child: None,
        };
        app.spawn().await;
        app
    }

    async fn spawn(&mut self) {
        let child = std::process::Command::new("python3")
            .arg(super::repo_root().join("deploy/sample-apps/internal_name_app.py"))
            .arg(self.port.to_string())
            .arg(INTERNAL_ORIGIN)
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs the sample app");
        self.child = Some(child);
        super::wait_for_port(self.port, "sample internal-name app").await;
    }

    /// `http://127.0.0.1:<port>` (or `https://localhost:<port>` for a TLS instance).
    pub fn url(&self) -> String {
        if self.args.iter().any(|a| a == "--tls") {
            format!("https://localhost:{}", self.port)
        } else {
            format!("http://127.0.0.1:{}", self.port)
        }
    }

    /// Kills the process (its port refuses connections until [`Self::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for InternalApp {
    fn drop(&mut self) {
        self.stop();
    }
}
