//! The credential vault: per-user, per-app passwords for backends that only trust their own
//! login (form-fill, HTTP Basic replay), encrypted at rest.
//!
//! Each entry is sealed with AES-256-GCM under the current key, with the app and user as
//! associated data (an entry copied to another user's slot does not open). Keys have ids, so
//! old entries stay readable after a new key is added, and `rotate` re-seals everything under
//! the current key. The file is replaced atomically (write, fsync, rename) and kept 0600.
//! Passwords are [`Secret`]s: never logged, never shown.

use crate::secret::{Secret, SecretBytes};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use thiserror::Error;

/// Why the vault could not do what was asked.
#[derive(Debug, Error)]
pub enum VaultError {
    /// Reading or writing the store failed.
    #[error("vault file `{0}`: {1}")]
    Io(PathBuf, std::io::Error),
    /// The store is not a vault file.
    #[error("vault file `{0}` is not a Portcullis vault: {1}")]
    Format(PathBuf, String),
    /// A key is not 32 bytes.
    #[error("vault key `{0}` must be 32 bytes (e.g. `openssl rand -out vault.key 32`)")]
    BadKey(String),
    /// An entry was sealed with a key that is not configured.
    #[error("entry sealed with key `{0}`, which is not configured")]
    UnknownKey(String),
    /// Decryption failed (wrong key, tampered entry, or moved between users).
    #[error("entry does not open (tampered, moved, or wrong key)")]
    Corrupt,
    /// Encryption failed.
    #[error("cannot seal entry: {0}")]
    Crypto(String),
}

/// A stored credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The backend account name.
    pub username: String,
    /// Its password.
    pub password: Secret,
}

#[derive(Serialize, Deserialize, Default)]
struct StoreFile {
    version: u32,
    /// `app` → `user` → sealed entry.
    entries: BTreeMap<String, BTreeMap<String, Sealed>>,
}

#[derive(Serialize, Deserialize, Clone)]
struct Sealed {
    kid: String,
    nonce: String,
    /// Ciphertext followed by the 16-byte tag, base64.
    data: String,
}

/// The vault: its keys and its file.
pub struct Vault {
    path: PathBuf,
    /// Key id → key; the first is current (seals new entries).
    keys: Vec<(String, SecretBytes)>,
    lock: Mutex<()>,
}

impl Vault {
    /// A vault over `path` with `keys` (id, 32 bytes), the first current.
    pub fn new(path: &Path, keys: Vec<(String, SecretBytes)>) -> Result<Self, VaultError> {
        for (id, key) in &keys {
            if key.expose().len() != 32 {
                return Err(VaultError::BadKey(id.clone()));
            }
        }
        if keys.is_empty() {
            return Err(VaultError::BadKey("(none)".into()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            keys,
            lock: Mutex::new(()),
        })
    }

    fn read(&self) -> Result<StoreFile, VaultError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| VaultError::Format(self.path.clone(), e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StoreFile {
                version: 1,
                ..StoreFile::default()
            }),
            Err(e) => Err(VaultError::Io(self.path.clone(), e)),
        }
    }

    fn write(&self, store: &StoreFile) -> Result<(), VaultError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e| VaultError::Io(self.path.clone(), e);
        let dir = self.path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(store)
            .map_err(|e| VaultError::Format(self.path.clone(), e.to_string()))?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    fn key(&self, kid: &str) -> Result<&SecretBytes, VaultError> {
        self.keys
            .iter()
            .find(|(id, _)| id == kid)
            .map(|(_, k)| k)
            .ok_or_else(|| VaultError::UnknownKey(kid.to_string()))
    }

    fn seal(&self, app: &str, user: &str, credential: &Credential) -> Result<Sealed, VaultError> {
        let (kid, key) = self
            .keys
            .first()
            .ok_or(VaultError::BadKey("(none)".into()))?;
        let mut nonce = [0u8; 12];
        openssl::rand::rand_bytes(&mut nonce).map_err(|e| VaultError::Crypto(e.to_string()))?;
        let plain = serde_json::json!({
            "username": credential.username,
            "password": credential.password.expose(),
        })
        .to_string();
        let mut tag = [0u8; 16];
        let mut data = encrypt_aead(
            Cipher::aes_256_gcm(),
            key.expose(),
            Some(&nonce),
            aad(app, user).as_bytes(),
            plain.as_bytes(),
            &mut tag,
        )
        .map_err(|e| VaultError::Crypto(e.to_string()))?;
        data.extend_from_slice(&tag);
        Ok(Sealed {
            kid: kid.clone(),
            nonce: B64.encode(nonce),
            data: B64.encode(data),
        })
    }

    fn open(&self, app: &str, user: &str, sealed: &Sealed) -> Result<Credential, VaultError> {
        let key = self.key(&sealed.kid)?;
        let nonce = B64.decode(&sealed.nonce).map_err(|_| VaultError::Corrupt)?;
        let data = B64.decode(&sealed.data).map_err(|_| VaultError::Corrupt)?;
        let split = data.len().checked_sub(16).ok_or(VaultError::Corrupt)?;
        let (ciphertext, tag) = data.split_at(split);
        let plain = decrypt_aead(
            Cipher::aes_256_gcm(),
            key.expose(),
            Some(&nonce),
            aad(app, user).as_bytes(),
            ciphertext,
            tag,
        )
        .map_err(|_| VaultError::Corrupt)?;
        let value: serde_json::Value =
            serde_json::from_slice(&plain).map_err(|_| VaultError::Corrupt)?;
        let text = |k: &str| value.get(k).and_then(|v| v.as_str()).map(str::to_string);
        Ok(Credential {
            username: text("username").ok_or(VaultError::Corrupt)?,
            password: Secret::new(text("password").ok_or(VaultError::Corrupt)?),
        })
    }

    /// The credential `user` stored for `app`, if any.
    pub fn get(&self, app: &str, user: &str) -> Result<Option<Credential>, VaultError> {
        let _guard = self.lock.lock();
        let store = self.read()?;
        store
            .entries
            .get(app)
            .and_then(|users| users.get(user))
            .map(|sealed| self.open(app, user, sealed))
            .transpose()
    }

    /// Stores (or replaces) `user`'s credential for `app`.
    pub fn put(&self, app: &str, user: &str, credential: &Credential) -> Result<(), VaultError> {
        let _guard = self.lock.lock();
        let mut store = self.read()?;
        let sealed = self.seal(app, user, credential)?;
        store
            .entries
            .entry(app.to_string())
            .or_default()
            .insert(user.to_string(), sealed);
        store.version = 1;
        self.write(&store)
    }

    /// Re-seals every entry under the current key; returns how many were re-sealed.
    pub fn rotate(&self) -> Result<usize, VaultError> {
        self.rotate_with(|_| crate::progress::Progress::hidden())
    }

    /// [`Vault::rotate`], reporting each entry to the progress `start` makes from the count.
    pub fn rotate_with(
        &self,
        start: impl FnOnce(u64) -> crate::progress::Progress,
    ) -> Result<usize, VaultError> {
        let _guard = self.lock.lock();
        let mut store = self.read()?;
        let total: usize = store.entries.values().map(BTreeMap::len).sum();
        let progress = start(u64::try_from(total).unwrap_or(u64::MAX));
        let current = self
            .keys
            .first()
            .map(|(id, _)| id.clone())
            .unwrap_or_default();
        let mut count = 0;
        for (app, users) in store.entries.iter_mut() {
            for (user, sealed) in users.iter_mut() {
                if sealed.kid != current {
                    let credential = self.open(app, user, sealed)?;
                    *sealed = self.seal(app, user, &credential)?;
                    count += 1;
                }
                progress.step();
            }
        }
        self.write(&store)?;
        progress.finish();
        Ok(count)
    }
}

/// The vault slot of a signed-in user: stable across logins (IdP name and subject).
pub fn user_key(user: &crate::idp::Identity) -> String {
    format!("{}:{}", user.idp, user.subject)
}

/// Where a user stores or updates their password for `app`.
pub fn enrollment_path(app: &str) -> String {
    format!("{ENROLL_PREFIX}{app}")
}

/// Prefix of the enrollment pages.
pub const ENROLL_PREFIX: &str = "/.portcullis/credentials/";

/// Associated data binding an entry to its slot.
fn aad(app: &str, user: &str) -> String {
    format!("portcullis-vault-v1\u{0}{app}\u{0}{user}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(byte: u8) -> SecretBytes {
        SecretBytes::new(vec![byte; 32])
    }

    fn cred(password: &str) -> Credential {
        Credential {
            username: "asmith".into(),
            password: Secret::new(password),
        }
    }

    #[test]
    fn entries_round_trip_and_the_file_holds_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let vault = Vault::new(&path, vec![("k1".into(), key(1))]).unwrap();
        vault
            .put("ledger", "alice@corp.example", &cred("Tr0ub4dor&3-secret"))
            .unwrap();
        assert_eq!(
            vault.get("ledger", "alice@corp.example").unwrap(),
            Some(cred("Tr0ub4dor&3-secret"))
        );
        assert_eq!(vault.get("ledger", "bob@corp.example").unwrap(), None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("Tr0ub4dor") && !text.contains("asmith"),
            "{text}"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn an_entry_moved_to_another_user_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let vault = Vault::new(&path, vec![("k1".into(), key(1))]).unwrap();
        vault
            .put("ledger", "alice@corp.example", &cred("a"))
            .unwrap();
        vault.put("ledger", "eve@corp.example", &cred("e")).unwrap();
        let mut store: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let alice = store["entries"]["ledger"]["alice@corp.example"].clone();
        store["entries"]["ledger"]["eve@corp.example"] = alice;
        std::fs::write(&path, store.to_string()).unwrap();
        assert!(matches!(
            vault.get("ledger", "eve@corp.example"),
            Err(VaultError::Corrupt)
        ));
    }

    #[test]
    fn rotation_keeps_every_entry_readable_and_retires_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let old = Vault::new(&path, vec![("k1".into(), key(1))]).unwrap();
        for u in ["a@x.example", "b@x.example", "c@x.example"] {
            old.put("ledger", u, &cred(u)).unwrap();
        }
        // New key first, old key kept: old entries still open, then rotate.
        let both = Vault::new(&path, vec![("k2".into(), key(2)), ("k1".into(), key(1))]).unwrap();
        assert_eq!(
            both.get("ledger", "b@x.example").unwrap(),
            Some(cred("b@x.example"))
        );
        assert_eq!(both.rotate().unwrap(), 3);
        let only_new = Vault::new(&path, vec![("k2".into(), key(2))]).unwrap();
        for u in ["a@x.example", "b@x.example", "c@x.example"] {
            assert_eq!(only_new.get("ledger", u).unwrap(), Some(cred(u)));
        }
        let only_old = Vault::new(&path, vec![("k1".into(), key(1))]).unwrap();
        assert!(matches!(
            only_old.get("ledger", "a@x.example"),
            Err(VaultError::UnknownKey(_))
        ));
    }

    #[test]
    fn keys_must_be_32_bytes() {
        let short = SecretBytes::new(vec![0u8; 16]);
        assert!(matches!(
            Vault::new(Path::new("/tmp/x"), vec![("k".into(), short)]),
            Err(VaultError::BadKey(_))
        ));
    }
}
