//! Access-token secrets: how a new one is made and the only form of it
//! that is ever stored or compared.
//!
//! Invariants: a secret is 32 bytes from the operating system's random
//! source; state holds only its lower-case hex SHA-256, so a copy of the
//! state (a snapshot, a backup) lets no one call the API.

use base64::Engine;
use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256 of a token secret.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new token secret: 32 random bytes, base64url without padding.
pub fn new_secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| std::io::Error::other(error.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_lower_case_hex_sha256() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn secrets_are_new_each_time() {
        let (a, b) = (new_secret().expect("random"), new_secret().expect("random"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }
}
