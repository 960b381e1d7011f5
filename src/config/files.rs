//! Files a configuration names: paths relative to the file that names them, CA bundles, and
//! secret files that others can read. Shared by the gateway, IdP and app compilers (so none of
//! them imports another for a helper).

use std::path::{Path, PathBuf};

/// Resolves a configured path against the config file's directory.
pub fn resolve(base: &Path, configured: &str) -> PathBuf {
    let p = Path::new(configured);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Reads a PEM file of CA certificates (`ca_file` of upstreams and IdPs): the PEM bytes and
/// the parsed certificates, or the message `check` shows.
pub fn load_ca_file(path: &Path) -> Result<(Vec<u8>, Vec<openssl::x509::X509>), String> {
    let cannot = |e: &dyn std::fmt::Display| {
        format!(
            "ca_file `{}` cannot be read as PEM certificates: {e}",
            path.display()
        )
    };
    let pem = std::fs::read(path).map_err(|e| cannot(&e))?;
    let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| cannot(&e))?;
    if certs.is_empty() {
        return Err(format!("ca_file `{}` holds no certificate", path.display()));
    }
    Ok((pem, certs))
}

/// A warning when a secret file (key, client secret) can be read by other users.
pub fn secret_file_exposure(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "secret file `{}` is readable by other users (mode {:o}); `chmod 600` it",
            path.display(),
            mode & 0o777
        )
    })
}

/// A password given as `<file key>` (a file, trimmed) or `<env key>` (an environment
/// variable), at most one of them: the secret, `None` when neither is set, or a problem naming
/// the key. `keys` are the full names for messages (`sessions.redis.password_file`, …).
pub(super) fn secret_from_file_or_env(
    src: &super::problem::SourceFile<'_>,
    base: &Path,
    (file, env): (
        Option<&toml::Spanned<String>>,
        Option<&toml::Spanned<String>>,
    ),
    (file_key, env_key): (&str, &str),
    problems: &mut Vec<super::problem::Problem>,
) -> Result<Option<crate::secret::Secret>, ()> {
    match (file, env) {
        (Some(f), Some(_)) => {
            problems.push(src.error(
                Some(f.span()),
                format!("set one of {file_key} and {env_key}"),
            ));
            Err(())
        }
        (Some(f), None) => {
            let path = resolve(base, f.get_ref());
            if let Some(warning) = secret_file_exposure(&path) {
                problems.push(src.warning(Some(f.span()), warning));
            }
            let message = match std::fs::read_to_string(&path) {
                Ok(text) if !text.trim().is_empty() => {
                    return Ok(Some(crate::secret::Secret::new(text.trim())))
                }
                Ok(_) => format!("{file_key} `{}` is empty", path.display()),
                Err(e) => format!("cannot read {file_key} `{}`: {e}", path.display()),
            };
            problems.push(src.error(Some(f.span()), message));
            Err(())
        }
        (None, Some(name)) => match std::env::var(name.get_ref()) {
            Ok(v) if !v.is_empty() => Ok(Some(crate::secret::Secret::new(v))),
            _ => {
                problems.push(src.error(
                    Some(name.span()),
                    format!(
                        "{env_key}: environment variable `{}` is not set or empty",
                        name.get_ref()
                    ),
                ));
                Err(())
            }
        },
        (None, None) => Ok(None),
    }
}
