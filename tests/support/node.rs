//! A Node.js service from `tests/idp/` (a real IdP) as a child process: started with a JSON
//! config, ready when it prints `READY`, killed when dropped.

use super::repo_root;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running Node script.
pub struct NodeService {
    child: Option<Child>,
    log: PathBuf,
}

impl NodeService {
    /// Runs `tests/idp/<script> <config>`; a start that stalls is retried (with what it
    /// printed, so the cause is on record) rather than failing the test that needed it.
    pub async fn start(script: &str, config: &Path, log: PathBuf) -> Self {
        let script = repo_root().join("tests/idp").join(script);
        assert!(
            repo_root().join("tests/idp/node_modules/samlify").is_dir(),
            "tests/idp/node_modules is missing: run ./tests/run.sh (or `npm ci --prefix tests/idp`)"
        );
        let mut service = Self { child: None, log };
        for attempt in 1..=3 {
            let child = Command::new("node")
                .arg(&script)
                .arg(config)
                .stdout(std::fs::File::create(&service.log).unwrap())
                .stderr(std::fs::File::create(service.log.with_extension("err")).unwrap())
                .spawn()
                .expect("node must be installed (tests/run.sh installs it)");
            service.child = Some(child);
            match service.wait_ready().await {
                Ok(()) => return service,
                Err(why) if attempt < 3 => {
                    eprintln!(
                        "{} start {attempt} failed ({why}); retrying:\n{}",
                        script.display(),
                        service.output()
                    );
                    service.stop();
                }
                Err(why) => panic!(
                    "{} did not start ({why}):\n{}",
                    script.display(),
                    service.output()
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if std::fs::read_to_string(&self.log)
                .unwrap_or_default()
                .contains("READY")
            {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("exited: {status}"));
            }
            if Instant::now() > deadline {
                return Err("not ready in 15 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills and reaps the process.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the service printed (stdout, then stderr).
    pub fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "{}{}",
            read(&self.log),
            read(&self.log.with_extension("err"))
        )
    }
}

impl Drop for NodeService {
    fn drop(&mut self) {
        self.stop();
    }
}
