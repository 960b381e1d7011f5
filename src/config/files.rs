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
