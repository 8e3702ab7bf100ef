//! Credential values at rest: sealed with the cluster key before they are
//! proposed, so the Raft log, the state and every snapshot hold only
//! ciphertext; opened where they are used.
//!
//! Invariants: a sealed value is `gantry-sealed:1:<key id>:<base64 of
//! nonce, ciphertext and tag>` (AES-256-GCM with a random 96-bit nonce and
//! the key id as associated data, so a value cannot be moved under another
//! key); the key ring lives in a file outside the data directory's state
//! (the systemd unit loads it with `LoadCredential`), every member holds
//! the same file, its first key seals and any of its keys opens; a value
//! without the prefix was stored before sealing (or by a server without a
//! ring) and opens as itself; the ring is installed once, at start, before
//! any request or dispatch runs.

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;
use std::path::Path;
use std::sync::OnceLock;

/// What every sealed value starts with (format 1; the state machine
/// refuses a user credential without [`gantry_storage::SEALED_VALUE_PREFIX`]).
pub const SEALED_PREFIX: &str = "gantry-sealed:1:";
const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cluster key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error(
        "a credential is sealed with cluster key {0}, which this server's key file does not hold; \
         give every member the same key file (keep old keys in it until `gantry cluster key reseal` has run)"
    )]
    UnknownKey(String),
    #[error("a sealed credential does not open: {0}")]
    Corrupt(String),
    #[error("cannot seal a credential: {0}")]
    Seal(String),
    #[error(
        "this server has no cluster key, and user credentials are stored only sealed with one: \
         start every member with --cluster-key FILE (made by `gantry cluster key new`)"
    )]
    NoKey,
}

/// The cluster's keys, newest first.
pub struct KeyRing {
    keys: Vec<(String, LessSafeKey)>,
    /// Per key (same order and ids): the key that signs and checks
    /// Gantry's access JWTs, derived from it, so a token never shares a key
    /// with sealed values.
    jwt_keys: Vec<[u8; KEY_BYTES]>,
}

/// The key of a purpose derived from a cluster key (HMAC-SHA256 as a PRF).
fn derive(key: &[u8], purpose: &[u8]) -> [u8; KEY_BYTES] {
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), purpose);
    let mut out = [0u8; KEY_BYTES];
    out.copy_from_slice(&tag.as_ref()[..KEY_BYTES]);
    out
}

const JWT_PURPOSE: &[u8] = b"gantry access JWT v1";

/// The id of `key`: the first 12 hex digits of its SHA-256.
fn key_id(key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key);
    hex::encode(&digest.as_ref()[..6])
}

fn engine() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl KeyRing {
    /// Reads a key file: one base64 key of 32 bytes a line, newest first
    /// (blank lines and `#` comments skipped).
    pub fn load(path: &Path) -> Result<KeyRing, SecretError> {
        let bad = |reason: String| SecretError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|error| bad(error.to_string()))?;
        let mut keys = Vec::new();
        let mut jwt_keys = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = engine()
                .decode(line)
                .ok()
                .filter(|bytes| bytes.len() == KEY_BYTES)
                .ok_or_else(|| {
                    bad(format!(
                        "line {}: not a base64 key of {KEY_BYTES} bytes",
                        number + 1
                    ))
                })?;
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| bad(format!("line {}: not a usable key", number + 1)))?;
            keys.push((key_id(&bytes), LessSafeKey::new(unbound)));
            jwt_keys.push(derive(&bytes, JWT_PURPOSE));
        }
        if keys.is_empty() {
            return Err(bad("holds no key".into()));
        }
        Ok(KeyRing { keys, jwt_keys })
    }

    /// Writes a key file with one new key (mode 0600), refusing to replace
    /// a file; or, with `rotate`, puts a new key first in an existing one
    /// and keeps the others (they still open what they sealed).
    pub fn write_new_key(path: &Path, rotate: bool) -> Result<String, SecretError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let bad = |reason: String| SecretError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let mut key = [0u8; KEY_BYTES];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| bad("no randomness".into()))?;
        let existing = match rotate {
            true => std::fs::read_to_string(path).map_err(|error| bad(error.to_string()))?,
            false if path.exists() => return Err(bad("exists already; rotate it instead".into())),
            false => String::new(),
        };
        let text = format!("{}\n{existing}", engine().encode(key));
        // Written beside the file under a name of its own, created afresh
        // (never through a file or link already there), then renamed over it.
        let mut staged = path.as_os_str().to_owned();
        staged.push(".new");
        let staged = std::path::PathBuf::from(staged);
        match std::fs::remove_file(&staged) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(bad(format!("{}: {error}", staged.display())))
            }
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staged)
            .map_err(|error| bad(error.to_string()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&staged, path))
            .map_err(|error| bad(error.to_string()))?;
        Ok(key_id(&key))
    }

    /// The id of the key that seals.
    pub fn primary(&self) -> &str {
        &self.keys[0].0
    }

    /// The key that signs access JWTs now, with its id (the JWT's `kid`).
    pub fn jwt_signing_key(&self) -> (&str, &[u8]) {
        (&self.keys[0].0, &self.jwt_keys[0])
    }

    /// The JWT key of cluster key `id`, if the ring holds it.
    pub fn jwt_key(&self, id: &str) -> Option<&[u8]> {
        self.keys
            .iter()
            .position(|(known, _)| known == id)
            .map(|index| self.jwt_keys[index].as_slice())
    }

    /// `plaintext` sealed with the newest key.
    pub fn seal(&self, plaintext: &str) -> Result<String, SecretError> {
        let (id, key) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecretError::Seal("no randomness".into()))?;
        let mut sealed = plaintext.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(id.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| SecretError::Seal("encryption failed".into()))?;
        let mut payload = nonce.to_vec();
        payload.extend(sealed);
        Ok(format!("{SEALED_PREFIX}{id}:{}", engine().encode(payload)))
    }

    /// The plaintext of `value` (a value stored before sealing is its own).
    pub fn open(&self, value: &str) -> Result<String, SecretError> {
        let Some(rest) = value.strip_prefix(SEALED_PREFIX) else {
            return Ok(value.to_string());
        };
        let (id, payload) = rest
            .split_once(':')
            .ok_or_else(|| SecretError::Corrupt("no key id".into()))?;
        let (_, key) = self
            .keys
            .iter()
            .find(|(known, _)| known == id)
            .ok_or_else(|| SecretError::UnknownKey(id.to_string()))?;
        let payload = engine()
            .decode(payload)
            .map_err(|error| SecretError::Corrupt(error.to_string()))?;
        if payload.len() < NONCE_LEN {
            return Err(SecretError::Corrupt("shorter than its nonce".into()));
        }
        let (nonce, sealed) = payload.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| SecretError::Corrupt("bad nonce".into()))?;
        let mut sealed = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut sealed)
            .map_err(|_| SecretError::Corrupt("authentication failed".into()))?;
        String::from_utf8(plain.to_vec()).map_err(|error| SecretError::Corrupt(error.to_string()))
    }

    /// Seals, in place, every string at `pointers` that is not sealed yet
    /// and is not `keep` (a placeholder such as the API's mask); a sealed
    /// one under an older key is sealed again under the newest. Returns
    /// whether anything changed.
    pub fn seal_at(
        &self,
        value: &mut Value,
        pointers: &[&str],
        keep: &str,
    ) -> Result<bool, SecretError> {
        let mut changed = false;
        for pointer in pointers {
            let Some(slot) = value.pointer_mut(pointer) else {
                continue;
            };
            let Some(text) = slot.as_str() else {
                continue;
            };
            if text == keep {
                continue;
            }
            // Every value that looks sealed must open, the newest key's too
            // (a caller may send one); one that does not names its field.
            let plain = self.open(text).map_err(|error| match error {
                SecretError::Corrupt(reason) => {
                    SecretError::Corrupt(format!("configs{}: {reason}", pointer.replace('/', ".")))
                }
                other => other,
            })?;
            if text.starts_with(&format!("{SEALED_PREFIX}{}:", self.primary())) {
                continue;
            }
            *slot = Value::String(self.seal(&plain)?);
            changed = true;
        }
        Ok(changed)
    }
}

static RING: OnceLock<Option<KeyRing>> = OnceLock::new();

/// Installs this process's key ring (`None`: credentials are stored as
/// given). The first call wins.
pub fn install(ring: Option<KeyRing>) {
    let _ = RING.set(ring);
}

/// This process's key ring, if it has one.
pub fn ring() -> Option<&'static KeyRing> {
    RING.get().and_then(Option::as_ref)
}

/// The plaintext of a stored credential value.
pub fn open(value: &str) -> Result<String, SecretError> {
    match ring() {
        Some(ring) => ring.open(value),
        None if value.starts_with(SEALED_PREFIX) => Err(SecretError::UnknownKey(
            value[SEALED_PREFIX.len()..]
                .split(':')
                .next()
                .unwrap_or_default()
                .to_string(),
        )),
        None => Ok(value.to_string()),
    }
}

/// A user credential's values (names to strings) sealed as one JSON
/// object with this process's newest key; refused without a key ring (a
/// user credential is never stored in clear).
pub fn seal_values(
    values: &std::collections::BTreeMap<String, String>,
) -> Result<String, SecretError> {
    let ring = ring().ok_or(SecretError::NoKey)?;
    let text =
        serde_json::to_string(values).map_err(|error| SecretError::Seal(error.to_string()))?;
    ring.seal(&text)
}

/// The values [`seal_values`] sealed.
pub fn open_values(
    sealed: &str,
) -> Result<std::collections::BTreeMap<String, String>, SecretError> {
    if !sealed.starts_with(SEALED_PREFIX) {
        return Err(SecretError::Corrupt(
            "a user credential that is not sealed".into(),
        ));
    }
    let text = open(sealed)?;
    serde_json::from_str(&text).map_err(|error| SecretError::Corrupt(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_in(dir: &Path) -> KeyRing {
        let path = dir.join("cluster-key");
        KeyRing::write_new_key(&path, false).unwrap();
        KeyRing::load(&path).unwrap()
    }

    #[test]
    fn sealed_values_are_what_the_state_machine_takes_for_sealed() {
        assert!(SEALED_PREFIX.starts_with(gantry_storage::SEALED_VALUE_PREFIX));
    }

    #[test]
    fn a_sealed_value_opens_and_hides_its_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let ring = ring_in(dir.path());
        let sealed = ring.seal("xoxb-very-secret").unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX), "{sealed}");
        assert!(!sealed.contains("very-secret"));
        assert_ne!(
            sealed,
            ring.seal("xoxb-very-secret").unwrap(),
            "a fresh nonce"
        );
        assert_eq!(ring.open(&sealed).unwrap(), "xoxb-very-secret");
        assert_eq!(ring.open("stored-before").unwrap(), "stored-before");
    }

    #[test]
    fn a_tampered_value_or_another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ring = ring_in(dir.path());
        let sealed = ring.seal("secret").unwrap();
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(matches!(ring.open(&tampered), Err(SecretError::Corrupt(_))));
        let other = tempfile::tempdir().unwrap();
        assert!(matches!(
            ring_in(other.path()).open(&sealed),
            Err(SecretError::UnknownKey(_))
        ));
    }

    #[test]
    fn after_a_rotation_old_values_open_and_reseal_under_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster-key");
        KeyRing::write_new_key(&path, false).unwrap();
        let old = KeyRing::load(&path).unwrap();
        let mut config = serde_json::json!({"a": {"key": old.seal("s1").unwrap()}, "b": "plain", "c": "[MASKED]"});
        let new_id = KeyRing::write_new_key(&path, true).unwrap();
        let rotated = KeyRing::load(&path).unwrap();
        assert_eq!(rotated.primary(), new_id);
        assert!(rotated
            .seal_at(&mut config, &["/a/key", "/b", "/c", "/absent"], "[MASKED]")
            .unwrap());
        for pointer in ["/a/key", "/b"] {
            let text = config.pointer(pointer).unwrap().as_str().unwrap();
            assert!(
                text.starts_with(&format!("{SEALED_PREFIX}{new_id}:")),
                "{text}"
            );
        }
        assert_eq!(config["c"], "[MASKED]");
        assert_eq!(
            rotated.open(config["a"]["key"].as_str().unwrap()).unwrap(),
            "s1"
        );
        assert_eq!(
            rotated.open(config["b"].as_str().unwrap()).unwrap(),
            "plain"
        );
        // Sealed under the newest already: nothing to do.
        assert!(!rotated
            .seal_at(&mut config, &["/a/key", "/b"], "[MASKED]")
            .unwrap());
        assert!(
            KeyRing::write_new_key(&path, false).is_err(),
            "never replaced"
        );
    }

    /// A caller that sends a value dressed as sealed under the current key
    /// is refused, naming the field, instead of having it stored.
    #[test]
    fn a_forged_sealed_value_is_refused_naming_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let ring = ring_in(dir.path());
        let forged = format!("{SEALED_PREFIX}{}:AAAAAAAAAAAAAAAAAAAAAAAA", ring.primary());
        let mut config = serde_json::json!({"alerts": {"token": forged}});
        let error = ring
            .seal_at(&mut config, &["/alerts/token"], "[MASKED]")
            .expect_err("a forged value");
        assert!(matches!(error, SecretError::Corrupt(_)), "{error}");
        assert!(
            error.to_string().contains("configs.alerts.token"),
            "{error}"
        );
    }
}
