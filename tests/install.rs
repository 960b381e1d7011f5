//! Installing Portcullis like any other service: the Debian package (`cargo deb`, installed on
//! this machine with `apt-get install ./portcullis_*.deb`, started as its system user with the
//! configuration it ships, then purged), and the container recipe and Kubernetes manifests
//! under `deploy/` (parsed, and every port, path and file they reference checked against the
//! configuration they ship).

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Where cargo puts builds: the directory holding this test build's `debug/`.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_portcullis"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        said(&out)
    );
    said(&out)
}

/// Purges the package when the test ends, however it ends, so the machine is left as found.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("pkill", &["-TERM", "-u", "portcullis", "-x", "portcullis"]);
        let _ = run("apt-get", &["purge", "-y", "-q", "portcullis"]);
        let _ = std::fs::remove_dir_all("/run/portcullis");
    }
}

/// A backend on the port the shipped example policy names, answering every request.
async fn status_backend() -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8081")
        .await
        .expect("port 8081 (the example policy's backend) is taken");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = stream.read(&mut buf).await;
                let body = "status: all systems working\n";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    })
}

#[tokio::test]
async fn the_debian_package_installs_starts_as_its_own_user_and_purges_clean() {
    let release = target_dir().join("release/portcullis");
    assert!(
        release.exists(),
        "{} is missing: the package is built from the release binary (`cargo build --release`, as tests/run.sh does first)",
        release.display()
    );
    assert!(
        run("cargo", &["deb", "--version"]).status.success(),
        "cargo-deb is not installed (tests/run.sh installs it: `cargo install --locked cargo-deb`)"
    );
    // A package left by an interrupted run would hide what this one installs.
    let _ = run("apt-get", &["purge", "-y", "-q", "portcullis"]);

    let out_dir = target_dir().join("tmp/deb");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();
    let manifest = support::repo_root().join("Cargo.toml");
    ok(
        "cargo",
        &[
            "deb",
            "--no-build",
            "--manifest-path",
            manifest.to_str().unwrap(),
            "--output",
            out_dir.to_str().unwrap(),
        ],
    );
    let deb = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("portcullis_") && n.ends_with(".deb"))
        })
        .expect("cargo deb wrote no portcullis_*.deb");

    // What is inside, before installing it.
    let contents = ok("dpkg-deb", &["--contents", deb.to_str().unwrap()]);
    for path in [
        "./usr/bin/portcullis",
        "./etc/portcullis/portcullis.toml",
        "./etc/portcullis/policies/example.toml",
        "./usr/share/doc/portcullis/README.md",
    ] {
        assert!(
            contents.contains(path),
            "{path} not in the package:\n{contents}"
        );
    }
    // cargo-deb puts units under /usr/lib on newer releases and /lib on older ones.
    assert!(
        contents.contains("./usr/lib/systemd/system/portcullis.service")
            || contents.contains("./lib/systemd/system/portcullis.service"),
        "no systemd unit in the package:\n{contents}"
    );
    assert!(
        contents.contains("./usr/share/man/man1/portcullis.1"),
        "no man page in the package:\n{contents}"
    );

    let installed = Installed;
    ok("apt-get", &["install", "-y", "-q", deb.to_str().unwrap()]);
    let status = ok("dpkg-query", &["-W", "-f=${Status}", "portcullis"]);
    assert_eq!(status, "install ok installed");

    // The system user: no login shell, no home of its own, a system uid.
    let passwd = ok("getent", &["passwd", "portcullis"]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "portcullis is not a system user: {passwd}");
    assert!(fields[6].ends_with("nologin"), "{passwd}");

    // Secrets generated at install, readable by root and the service's group only.
    for secret in ["/etc/portcullis/cookie.key", "/etc/portcullis/admin.token"] {
        let stat = ok("stat", &["-c", "%a %U %G %s", secret]);
        let parts: Vec<&str> = stat.split_whitespace().collect();
        assert_eq!(
            &parts[..3],
            ["640", "root", "portcullis"],
            "{secret}: {stat}"
        );
        assert!(parts[3].parse::<u64>().unwrap() >= 64, "{secret}: {stat}");
    }
    // Installing again (a reconfigure) keeps them: sessions and tokens survive an upgrade.
    let key_before = std::fs::read("/etc/portcullis/cookie.key").unwrap();
    ok("dpkg-reconfigure", &["portcullis"]);
    assert_eq!(
        std::fs::read("/etc/portcullis/cookie.key").unwrap(),
        key_before
    );

    // The installed unit verifies against the installed binary.
    let unit = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .map(|dir| format!("{dir}/portcullis.service"))
        .find(|path| std::path::Path::new(path).exists())
        .expect("the unit was not installed");
    let verify = ok("systemd-analyze", &["verify", "--man=no", &unit]);
    assert!(!verify.contains("portcullis.service:"), "{verify}");
    // The man page and --help name the same commands.
    let help = ok("/usr/bin/portcullis", &["--help"]);
    let man =
        std::fs::read_to_string(support::repo_root().join("deploy/debian/portcullis.1")).unwrap();
    for command in [
        "run", "check", "policy", "sessions", "vault", "audit", "idp",
    ] {
        assert!(
            help.contains(&format!("  {command} ")),
            "--help lacks {command}:\n{help}"
        );
        assert!(
            man.contains(&format!(".B {command}"))
                || man.contains(&format!("portcullis {command}")),
            "the man page lacks {command}"
        );
    }

    // Started as systemd would start it: as the portcullis user, with the shipped config,
    // its runtime directory made for it.
    ok(
        "install",
        &[
            "-d",
            "-o",
            "portcullis",
            "-g",
            "portcullis",
            "-m",
            "0750",
            "/run/portcullis",
        ],
    );
    let as_service = [
        "--reuid=portcullis",
        "--regid=portcullis",
        "--init-groups",
        "--",
        "/usr/bin/portcullis",
    ];
    let check = [
        &as_service[..],
        &["check", "-c", "/etc/portcullis/portcullis.toml"],
    ]
    .concat();
    ok("setpriv", &check);
    let _backend = status_backend().await;
    let serve = [
        &as_service[..],
        &["run", "-c", "/etc/portcullis/portcullis.toml"],
    ]
    .concat();
    let mut gateway = Command::new("setpriv")
        .args(&serve)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = support::http_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        if let Ok(r) = client.get("http://127.0.0.1:9090/readyz").send().await {
            if r.status() == 200 {
                break r.text().await.unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the installed gateway never became ready"
        );
        if let Some(exit) = gateway.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            gateway
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the installed gateway exited ({exit}):\n{err}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(ready.contains("apps serving: 1"), "{ready}");
    let status = client
        .get("http://127.0.0.1:8080/status")
        .header("host", "status.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    assert!(status.text().await.unwrap().contains("all systems working"));
    // Default deny holds in the shipped example: nothing but the status page.
    let other = client
        .get("http://127.0.0.1:8080/admin")
        .header("host", "status.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
    // The generated admin token opens the admin API; no token does not.
    let token = std::fs::read_to_string("/etc/portcullis/admin.token").unwrap();
    let listed = client
        .get("http://127.0.0.1:9090/sessions?all=yes")
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let refused = client
        .get("http://127.0.0.1:9090/sessions?all=yes")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // It runs as the portcullis user, and writes its audit trail where the package says.
    let owner = ok("ps", &["-o", "user=", "-p", &gateway.id().to_string()]);
    assert_eq!(owner.trim(), "portcullis");
    assert!(Path::new("/var/log/portcullis/audit.jsonl").exists());

    ok("kill", &["-TERM", &gateway.id().to_string()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while gateway.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the gateway did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    drop(installed);
    let gone = run("dpkg-query", &["-W", "-f=${Status}", "portcullis"]);
    assert!(
        !said(&gone).contains("install ok installed"),
        "still installed after purge"
    );
    assert!(!run("getent", &["passwd", "portcullis"]).status.success());
    assert!(!Path::new("/usr/bin/portcullis").exists());
    assert!(!Path::new("/etc/portcullis").exists());
}

// ---- container and Kubernetes ----------------------------------------------------------------

/// Every YAML document in `deploy/kubernetes/<file>`, parsed by Debian's PyYAML (safe loader).
fn yaml_documents(file: &str) -> Vec<serde_json::Value> {
    let path = support::repo_root().join("deploy/kubernetes").join(file);
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None], sys.stdout)",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} does not parse:\n{}",
        path.display(),
        said(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn str_of<'a>(value: &'a serde_json::Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

fn find_kind<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The Containerfile's instructions (continuation lines joined), as (INSTRUCTION, arguments).
fn containerfile() -> Vec<(String, String)> {
    let text = support::read_repo_file("deploy/Containerfile");
    let mut joined = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() && joined.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                joined.push_str(part);
                joined.push(' ');
            }
            None => {
                joined.push_str(line);
                let (op, args) = joined.split_once(' ').unwrap_or((&joined, ""));
                out.push((op.to_ascii_uppercase(), args.trim().to_string()));
                joined.clear();
            }
        }
    }
    out
}

/// The container's settings, as the Containerfile says them.
struct Image {
    uid: u32,
    exposed: Vec<u16>,
    command: Vec<String>,
    volumes: Vec<String>,
}

#[test]
fn the_container_recipe_is_multi_stage_non_root_and_copies_files_that_exist() {
    let steps = containerfile();
    let stages: Vec<&String> = steps
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, a)| a)
        .collect();
    assert!(stages.len() >= 2, "not multi-stage: {stages:?}");
    assert!(stages[0].ends_with(" AS build"), "{stages:?}");
    // The final stage carries no compiler: it starts from a slim base, not the build image.
    assert!(stages.last().unwrap().contains("slim"), "{stages:?}");
    let last_from = steps.iter().rposition(|(op, _)| op == "FROM").unwrap();
    for (op, args) in &steps {
        if op != "COPY" || args.starts_with("--from=") {
            continue;
        }
        let parts: Vec<&str> = args.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            assert!(
                support::repo_root().join(source).exists(),
                "Containerfile copies `{source}`, which the repository does not have"
            );
        }
    }
    let image = image();
    assert!(image.uid >= 1000, "the image runs as uid {}", image.uid);
    // The USER line is in the final stage, so the runtime image is the one that is non-root.
    let user_at = steps.iter().rposition(|(op, _)| op == "USER").unwrap();
    assert!(user_at > last_from);
    assert_eq!(image.command[0], "run");
    assert!(image.volumes.contains(&"/run/portcullis".to_string()));
    // The config the image carries is the one the Kubernetes manifests ship, and it checks.
    let (listen, admin) = shipped_ports();
    assert!(
        image.exposed.contains(&listen) && image.exposed.contains(&admin),
        "{:?}",
        image.exposed
    );
}

fn image() -> Image {
    let steps = containerfile();
    let last = |op: &str| {
        steps
            .iter()
            .rev()
            .find(|(o, _)| o == op)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("no {op} in the Containerfile"))
    };
    let uid = last("USER")
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("USER must be a numeric uid");
    let exposed = last("EXPOSE")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let command: Vec<String> = serde_json::from_str(&last("CMD")).expect("CMD in exec form");
    let volumes: Vec<String> = serde_json::from_str(&last("VOLUME")).expect("VOLUME in JSON form");
    assert_eq!(last("ENTRYPOINT"), r#"["/usr/bin/portcullis"]"#);
    Image {
        uid,
        exposed,
        command,
        volumes,
    }
}

/// The traffic and admin ports of `deploy/kubernetes/portcullis.toml`.
fn shipped_ports() -> (u16, u16) {
    let config: toml::Table = support::read_repo_file("deploy/kubernetes/portcullis.toml")
        .parse()
        .unwrap();
    let port = |addr: &toml::Value| -> u16 {
        addr.as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (
        port(&config["listen"]["http"]),
        port(&config["admin"]["listen"]),
    )
}

#[test]
fn the_kubernetes_manifests_match_the_config_they_ship() {
    let kustomization = &yaml_documents("kustomization.yaml")[0];
    let mut docs = Vec::new();
    for resource in kustomization["resources"].as_array().unwrap() {
        docs.extend(yaml_documents(resource.as_str().unwrap()));
    }
    let generated: Vec<(String, Vec<String>)> = kustomization["configMapGenerator"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let files = g["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string());
            (g["name"].as_str().unwrap().to_string(), files.collect())
        })
        .collect();
    for (_, files) in &generated {
        for file in files {
            assert!(
                support::repo_root()
                    .join("deploy/kubernetes")
                    .join(file)
                    .exists(),
                "kustomization names {file}, which does not exist"
            );
        }
    }
    // SIGHUP-on-change needs the ConfigMaps to keep their names.
    assert_eq!(
        kustomization["generatorOptions"]["disableNameSuffixHash"],
        true
    );

    let deployment = find_kind(&docs, "Deployment", "portcullis");
    let pod = &deployment["spec"]["template"]["spec"];
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    let pdb = find_kind(&docs, "PodDisruptionBudget", "portcullis");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap();
    assert!(pdb["spec"]["minAvailable"].as_u64().unwrap() < replicas);
    let service = find_kind(&docs, "Service", "portcullis");
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the Service selects other pods");
    }

    // Non-root, read-only root, the same uid as the image.
    let image = image();
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["runAsUser"].as_u64().unwrap(),
        u64::from(image.uid)
    );
    let containers = pod["containers"].as_array().unwrap();
    let gateway = containers
        .iter()
        .find(|c| c["name"] == "portcullis")
        .unwrap();
    for c in containers {
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"], true,
            "{}",
            c["name"]
        );
        assert_eq!(
            c["securityContext"]["allowPrivilegeEscalation"], false,
            "{}",
            c["name"]
        );
    }

    // Ports: the container's ports are the config's listeners, and the probes hit the admin
    // listener's real endpoints.
    let (http_port, admin_port) = shipped_ports();
    let named_port = |name: &str| -> u16 {
        gateway["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .map(|p| u16::try_from(p).unwrap())
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    assert_eq!(named_port("http"), http_port);
    assert_eq!(named_port("admin"), admin_port);
    assert!(image.exposed.contains(&http_port) && image.exposed.contains(&admin_port));
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(str_of(gateway, &format!("/{probe}/httpGet/path")), path);
        assert_eq!(str_of(gateway, &format!("/{probe}/httpGet/port")), "admin");
    }
    let service_targets: Vec<&str> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["targetPort"].as_str().unwrap())
        .collect();
    assert!(
        !service_targets.contains(&"admin"),
        "the admin port must stay off the Service"
    );
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        str_of(annotations, "/prometheus.io~1port"),
        admin_port.to_string()
    );

    // Lay the pod's filesystem out as the kubelet would (ConfigMaps and Secret keys into their
    // mounts) and run `portcullis check` on it: every file the config names must arrive.
    let root = tempfile::tempdir().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    for mount in gateway["volumeMounts"].as_array().unwrap() {
        let at = root
            .path()
            .join(str_of(mount, "/mountPath").trim_start_matches('/'));
        std::fs::create_dir_all(&at).unwrap();
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
        if let Some(name) = volume.pointer("/configMap/name").and_then(|n| n.as_str()) {
            let (_, files) = generated
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("ConfigMap {name} is not generated"));
            for file in files {
                let source = support::repo_root().join("deploy/kubernetes").join(file);
                std::fs::copy(&source, at.join(source.file_name().unwrap())).unwrap();
            }
        } else if let Some(items) = volume.pointer("/secret/items").and_then(|i| i.as_array()) {
            for item in items {
                // Test-only stand-ins, long enough for every key the config reads.
                std::fs::write(at.join(str_of(item, "/path")), "0".repeat(64)).unwrap();
            }
        } else {
            assert!(
                volume.get("emptyDir").is_some(),
                "volume {} is neither config nor scratch",
                volume["name"]
            );
        }
    }
    let config_path = root.path().join(image.command[2].trim_start_matches('/'));
    assert_eq!(image.command[1], "-c");
    let args: Vec<&str> = gateway["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        image.command.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let check = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check")
        .arg("-c")
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the shipped config does not check in the pod's layout:\n{}",
        said(&check)
    );

    // Writable paths the config names (the upgrade socket) are on scratch volumes.
    let config: toml::Table = std::fs::read_to_string(&config_path)
        .unwrap()
        .parse()
        .unwrap();
    let sock = config["server"]["upgrade_sock"].as_str().unwrap();
    let scratch: Vec<&str> = gateway["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            volumes
                .iter()
                .any(|v| v["name"] == m["name"] && v.get("emptyDir").is_some())
        })
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(
        scratch
            .iter()
            .any(|dir| sock.starts_with(&format!("{dir}/"))),
        "{sock} is not on a writable volume: {scratch:?}"
    );

    // The Redis the config names is the Service the manifests define.
    let redis_url = config["sessions"]["redis"]["url"].as_str().unwrap();
    let redis = find_kind(&docs, "Service", "portcullis-redis");
    let redis_port = redis["spec"]["ports"][0]["port"].as_u64().unwrap();
    assert_eq!(redis_url, format!("redis://portcullis-redis:{redis_port}"));

    // The reload sidecar watches what the gateway mounts, and may signal it.
    assert_eq!(pod["shareProcessNamespace"], true);
    let reloader = containers
        .iter()
        .find(|c| c["name"] == "reload-on-change")
        .unwrap();
    let script = reloader["command"][2].as_str().unwrap();
    for watched in ["/etc/portcullis/config", "/etc/portcullis/policies"] {
        assert!(script.contains(watched));
        assert!(reloader["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == watched));
    }
    assert!(script.contains("kill -HUP"));
}

#[test]
fn the_reload_sidecar_signals_the_gateway_when_a_policy_changes() {
    // The sidecar's own script, run here against a real gateway with its paths pointed at it.
    let docs = yaml_documents("deployment.yaml");
    let pod = &find_kind(&docs, "Deployment", "portcullis")["spec"]["template"]["spec"];
    let reloader = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "reload-on-change")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config_dir, policies_dir) = (dir.path().join("config"), dir.path().join("policies"));
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::create_dir_all(&policies_dir).unwrap();
    std::fs::write(config_dir.join("x"), "1").unwrap();
    let script = reloader["command"][2]
        .as_str()
        .unwrap()
        .replace("/etc/portcullis/config", config_dir.to_str().unwrap())
        .replace("/etc/portcullis/policies", policies_dir.to_str().unwrap())
        .replace("sleep 10", "sleep 0.2")
        // Signal a stand-in process of our own, not any gateway a parallel test runs.
        .replace("= portcullis ]", "= hup-target ]");
    let target = dir.path().join("hup-target");
    std::fs::write(
        &target,
        "#!/bin/sh\ntrap 'echo hup; exit 0' HUP\nwhile :; do sleep 0.05; done\n",
    )
    .unwrap();
    ok("chmod", &["+x", target.to_str().unwrap()]);
    let mut signalled = Command::new(&target)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut sidecar = Command::new("/bin/sh")
        .args(["-c", &script])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        signalled.try_wait().unwrap().is_none(),
        "signalled before anything changed"
    );
    std::fs::write(policies_dir.join("new.toml"), "changed").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let exit = loop {
        if let Some(exit) = signalled.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = signalled.kill();
            let _ = sidecar.kill();
            panic!("the sidecar never sent SIGHUP after a policy changed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = sidecar.kill();
    let _ = sidecar.wait();
    assert!(exit.success());
    let mut out = String::new();
    use std::io::Read;
    signalled
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out.trim(), "hup");
}
