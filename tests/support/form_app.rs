//! The sample form-login app (`deploy/sample-apps/form_app.py`) as a real process, killed
//! when dropped.

/// The sample form-login app (`deploy/sample-apps/form_app.py`) as a real process.
pub struct FormApp {
    pub port: u16,
    users: std::path::PathBuf,
    tls: bool,
    child: Option<std::process::Child>,
}

impl FormApp {
    pub async fn start(port: u16, users: &std::path::Path) -> Self {
        Self::launch(port, users, false).await
    }
    /// The app over HTTPS with the test-only `backend.crt` (issued by the test-only CA, which
    /// no system store trusts).
    pub async fn start_tls(port: u16, users: &std::path::Path) -> Self {
        Self::launch(port, users, true).await
    }
    async fn launch(port: u16, users: &std::path::Path, tls: bool) -> Self {
        let mut app = Self {
            port,
            users: users.to_path_buf(),
            tls,
            child: None,
        };
        app.spawn().await;
        app
    }
    async fn spawn(&mut self) {
        let mut command = std::process::Command::new("python3");
        command
            .arg(super::repo_root().join("deploy/sample-apps/form_app.py"))
            .arg("forms")
            .arg(self.port.to_string())
            .arg(&self.users);
        if self.tls {
            command
                .arg("--tls")
                .arg(super::dev_cert("backend.crt"))
                .arg(super::dev_cert("backend.key"));
        }
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs the sample app");
        self.child = Some(child);
        super::wait_for_port(self.port, "sample form app").await;
    }
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
    pub async fn stats(&self) -> serde_json::Value {
        reqwest::get(format!("http://127.0.0.1:{}/_stats", self.port))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for FormApp {
    fn drop(&mut self) {
        self.stop();
    }
}
