//! The `portcullis` command: `run` the gateway, `check` its configuration, `audit verify` its
//! audit file, `policy test` / `policy explain` its access rules.

use anyhow::Context;
use clap::{Parser, Subcommand};
use portcullis::config::{self, Problem};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod idp_tool;
mod policy_report;
mod policy_tool;
mod sessions_tool;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Identity-aware access gateway for legacy web apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Gateway configuration file.
        #[arg(short, long, default_value = "portcullis.toml")]
        config: PathBuf,
        /// Take the listening sockets over from the running gateway (zero-downtime upgrade):
        /// start with this, then send the old process SIGQUIT.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate the gateway configuration and every policy file; exit 1 on any error.
    Check {
        /// Gateway configuration file.
        #[arg(short, long, default_value = "portcullis.toml")]
        config: PathBuf,
    },
    /// Work with the hash-chained audit file.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Work with the credential vault.
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
    /// Test and explain access policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// List or revoke signed-in sessions (through the running gateway's admin listener).
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Debug an identity provider integration.
    Idp {
        #[command(subcommand)]
        command: IdpCommand,
    },
}

#[derive(Subcommand)]
enum IdpCommand {
    /// Read a pasted SAMLResponse (base64 or XML) or ID token and print what it says and every
    /// check the gateway would make, with its verdict (InResponseTo and nonce left aside;
    /// signatures, nonces and token hashes not shown). Exit 0 when it would be accepted.
    Inspect {
        /// Gateway configuration file (for the IdP's settings).
        #[arg(short, long, default_value = "portcullis.toml")]
        config: PathBuf,
        /// The IdP's configured name.
        #[arg(long)]
        idp: String,
        /// For SAML: the app origin the response was meant for (`https://hr.corp.example`);
        /// default: the first app host that signs in with this IdP.
        #[arg(long)]
        origin: Option<String>,
        /// The file holding the message, or `-` for stdin.
        #[arg(default_value = "-")]
        input: PathBuf,
    },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// Show the sessions of a user, an app, or all.
    List {
        /// Gateway configuration file (its [admin] listen and token_file).
        #[arg(short, long, default_value = "portcullis.toml")]
        config: PathBuf,
        #[command(flatten)]
        which: sessions_tool::Which,
    },
    /// End the sessions of a user, an app, or all, on every node; audited.
    Revoke {
        /// Gateway configuration file (its [admin] listen and token_file).
        #[arg(short, long, default_value = "portcullis.toml")]
        config: PathBuf,
        #[command(flatten)]
        which: sessions_tool::Which,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run every policy file's `[[test]]` examples; exit 1 on any mismatch.
    Test {
        /// Gateway configuration file (for its identity providers).
        #[arg(short, long, default_value = "portcullis.toml")]
        config: PathBuf,
        /// Policy directory (default: the one the configuration names).
        dir: Option<PathBuf>,
    },
    /// Show, per app, which users gain or lose access to which requests between two policy
    /// directories (for change review); exit 1 when access changes, like `diff`.
    Diff {
        /// Gateway configuration file.
        #[arg(short, long, default_value = "portcullis.toml")]
        config: PathBuf,
        /// The policies as they are.
        old: PathBuf,
        /// The policies as proposed.
        new: PathBuf,
        /// Users (`[[user]]`) and requests (`[[request]]`) to compare; every literal path the
        /// rules name is probed too.
        #[arg(long)]
        fixtures: PathBuf,
    },
    /// Write the auditor's report: per app its owner, hosts, IdP, session limits, identity
    /// delivered, every rule in words, who gets what for the fixture users, the examples run
    /// now, and the policy file's hash; as printable HTML (`index.html`) and Markdown
    /// (`report.md`). Exit 1 when an example fails or a policy file has errors.
    Report {
        /// Gateway configuration file.
        #[arg(short, long, default_value = "portcullis.toml")]
        config: PathBuf,
        /// Users (`[[user]]`) and requests (`[[request]]`) to show decisions for (as for
        /// `policy diff`); every literal path the rules name is probed too.
        #[arg(long)]
        fixtures: Option<PathBuf>,
        /// Directory to write the report into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Show how an app's rules decide one request: the decision, the deciding rule, and each
    /// rule's conditions with whether they hold.
    Explain {
        /// Gateway configuration file.
        #[arg(short, long, default_value = "portcullis.toml")]
        config: PathBuf,
        /// App id.
        #[arg(long)]
        app: String,
        /// The user: an inline TOML table (`{ email = "a@corp.example", groups = ["staff"] }`),
        /// a file holding one, or nothing for an anonymous request.
        #[arg(long)]
        user: Option<String>,
        /// Client address.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Re-seal every entry under the current (first) key, so older keys can be retired.
    Rotate {
        /// Gateway configuration file.
        #[arg(short, long, default_value = "portcullis.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check that no record was edited, removed or reordered; exit 1 naming the first bad
    /// line. Give rotated files oldest first (`audit.jsonl.2 audit.jsonl.1 audit.jsonl`).
    Verify {
        /// Audit files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, upgrade } => run(&config, upgrade),
        Command::Check { config } => check(&config),
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => Ok(verify_audit(&files)),
        Command::Vault {
            command: VaultCommand::Rotate { config },
        } => rotate_vault(&config),
        Command::Idp {
            command:
                IdpCommand::Inspect {
                    config,
                    idp,
                    origin,
                    input,
                },
        } => inspect_idp(&config, &idp, origin.as_deref(), &input),
        Command::Sessions {
            command: SessionsCommand::List { config, which },
        } => sessions_tool::list(&config, &which),
        Command::Sessions {
            command: SessionsCommand::Revoke { config, which },
        } => sessions_tool::revoke(&config, &which),
        Command::Policy {
            command: PolicyCommand::Test { config, dir },
        } => policy_tool::test(&config, dir.as_deref()),
        Command::Policy {
            command:
                PolicyCommand::Diff {
                    config,
                    old,
                    new,
                    fixtures,
                },
        } => policy_tool::diff(&config, &old, &new, &fixtures),
        Command::Policy {
            command:
                PolicyCommand::Report {
                    config,
                    fixtures,
                    out,
                },
        } => policy_report::report(&config, fixtures.as_deref(), &out),
        Command::Policy {
            command:
                PolicyCommand::Explain {
                    config,
                    app,
                    user,
                    ip,
                    method,
                    path,
                },
        } => policy_tool::explain(&config, &app, user.as_deref(), ip, &method, &path),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let (gateway, gateway_warnings) = match config::load_gateway(path) {
        Ok(loaded) => loaded,
        Err(problems) => {
            print_problems(&problems);
            return Ok(ExitCode::from(1));
        }
    };
    let policies = config::load_policies(&gateway);
    print_problems(&gateway_warnings);
    print_problems(&policies.problems);
    let failed = policies.problems.iter().any(Problem::is_error);
    for app in &policies.apps {
        let hosts: Vec<String> = app.hosts().iter().map(ToString::to_string).collect();
        let prefix = if app.path_prefix().is_empty() {
            "/"
        } else {
            app.path_prefix()
        };
        println!(
            "ok   {}: {} {} -> {} upstream(s), {} rule(s), {}; owner {}; {}",
            app.id(),
            hosts.join(","),
            prefix,
            app.upstreams().len(),
            app.rules().len(),
            app.idp()
                .map_or_else(|| "no login".to_string(), |i| format!("login via {i}")),
            app.owner(),
            app.summary()
        );
    }
    for broken in &policies.broken {
        println!(
            "FAIL {}: disabled (see errors above)",
            broken.file.display()
        );
    }
    if failed {
        Ok(ExitCode::from(1))
    } else {
        println!("configuration ok: {} app(s)", policies.apps.len());
        Ok(ExitCode::SUCCESS)
    }
}

fn run(path: &Path, upgrade: bool) -> anyhow::Result<ExitCode> {
    let (gateway, warnings) = match config::load_gateway(path) {
        Ok(loaded) => loaded,
        Err(problems) => {
            print_problems(&problems);
            eprintln!("portcullis: gateway configuration has errors; not starting");
            return Ok(ExitCode::from(2));
        }
    };
    // Before any thread starts: the Kerberos library reads its settings from the environment.
    if let Some(kerberos) = &gateway.kerberos {
        let dir = std::env::var_os("RUNTIME_DIRECTORY")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::temp_dir().join(format!("portcullis-{}", std::process::id()))
            });
        std::fs::create_dir_all(&dir).context("creating the runtime directory for krb5.conf")?;
        portcullis::kerberos::configure_process(kerberos, &dir)
            .context("writing the Kerberos configuration")?;
    }
    portcullis::logging::init(
        gateway.log_format,
        &gateway.log_level,
        gateway.audit.as_ref(),
        gateway.audit_syslog.as_ref(),
    )
    .context("starting logging")?;
    for w in &warnings {
        tracing::warn!(problem = %w, "gateway configuration");
    }
    let policies = config::load_policies(&gateway);
    for p in &policies.problems {
        if p.is_error() {
            tracing::error!(problem = %p, "policy error: app disabled");
        } else {
            tracing::warn!(problem = %p, "policy warning");
        }
    }
    let start = if upgrade {
        portcullis::server::Start::Upgrade
    } else {
        portcullis::server::Start::Fresh
    };
    portcullis::server::run(path, gateway, policies, start).context("starting server")?;
    Ok(ExitCode::SUCCESS)
}

fn rotate_vault(path: &Path) -> anyhow::Result<ExitCode> {
    let gateway = match config::load_gateway(path) {
        Ok((g, _)) => g,
        Err(problems) => {
            print_problems(&problems);
            return Ok(ExitCode::from(1));
        }
    };
    let Some(settings) = gateway.vault else {
        eprintln!("no [vault] in {}", path.display());
        return Ok(ExitCode::from(1));
    };
    let vault = portcullis::delivery::vault::Vault::new(&settings.file, settings.keys)?;
    let count = vault
        .rotate_with(|n| portcullis::progress::Progress::new(n, "re-sealing vault entries"))?;
    println!(
        "re-sealed {count} entr{} under the current key",
        if count == 1 { "y" } else { "ies" }
    );
    Ok(ExitCode::SUCCESS)
}

fn inspect_idp(
    config: &Path,
    idp: &str,
    origin: Option<&str>,
    input: &Path,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    runtime.block_on(idp_tool::inspect(config, idp, origin, input))
}

fn verify_audit(files: &[PathBuf]) -> ExitCode {
    match portcullis::audit::chain::verify(files) {
        Ok(v) => {
            println!("ok: {} record(s), chain intact; head {}", v.records, v.head);
            if let Some(anchor) = v.starts_after {
                println!(
                    "note: the chain starts after record {anchor} (older, rotated files not given)"
                );
            }
            ExitCode::SUCCESS
        }
        Err(broken) => {
            eprintln!("{broken}");
            ExitCode::from(1)
        }
    }
}

fn print_problems(problems: &[Problem]) {
    for p in problems {
        eprintln!("{p}");
    }
}
