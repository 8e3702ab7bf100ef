//! Access-token secrets: how a new one is made, the only form of it that
//! is ever stored or compared, and how one is read back from text a user
//! saved (an operator's token file).
//!
//! Invariants: a secret is 32 bytes from the operating system's random
//! source; state holds only its lower-case hex SHA-256, so a copy of the
//! state (a snapshot, a backup) lets no one call the API. Saved text is
//! taken only when it holds exactly one secret (the secret alone, or the
//! `{"token": ...}` JSON the CLI prints); a refusal describes what was
//! found without repeating it.

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

/// What saved token text may hold, for messages that refuse other text.
pub const SAVED_TOKEN_EXPECTED: &str = "the token's secret alone (as `gantry token set NAME` prints it) or the JSON that `gantry token set NAME -t json` prints ({\"token\": \"...\"})";

/// Why saved text is not one token secret: a description of what it holds
/// that never repeats the text itself (it may be a secret).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnreadableToken(String);

/// The token secret in `text` as a user may have saved it: the secret
/// alone, with any surrounding whitespace or newlines, or the JSON that
/// `gantry token set -t json` prints (an object whose `"token"` is the
/// secret). Anything else is refused, saying what it holds.
pub fn secret_from_saved_text(text: &str) -> Result<String, UnreadableToken> {
    let refuse = |found: String| Err(UnreadableToken(found));
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        return refuse("nothing but whitespace".into());
    }
    if text.starts_with('{') || text.starts_with('[') || text.starts_with('"') {
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(error) => {
                return refuse(format!(
                    "text that starts like JSON but is not JSON (line {} column {})",
                    error.line(),
                    error.column()
                ))
            }
        };
        return match value.get("token") {
            Some(serde_json::Value::String(secret)) => match check_secret(secret) {
                Ok(()) => Ok(secret.clone()),
                Err(problem) => refuse(format!("JSON whose \"token\" {problem}")),
            },
            Some(_) => refuse("JSON whose \"token\" is not a string".into()),
            None if value.is_object() => {
                let keys: Vec<&str> = value
                    .as_object()
                    .into_iter()
                    .flat_map(|object| object.keys().map(String::as_str))
                    .collect();
                refuse(format!(
                    "a JSON object without \"token\" (its keys: {})",
                    if keys.is_empty() {
                        "none".to_string()
                    } else {
                        keys.join(", ")
                    }
                ))
            }
            None => refuse("JSON that is not an object with a \"token\"".into()),
        };
    }
    let lines = text.lines().count();
    if lines > 1 {
        let printed = text.starts_with("Token '");
        return refuse(format!(
            "{lines} lines{}",
            if printed {
                " (all that `gantry token set` printed; keep only the secret on its last line)"
            } else {
                ""
            }
        ));
    }
    match check_secret(text) {
        Ok(()) => Ok(text.to_string()),
        Err(problem) => refuse(format!("a line that {problem}")),
    }
}

/// Whether `secret` can be sent as a bearer token: non-empty visible ASCII
/// without spaces (what an HTTP header value takes unquoted).
fn check_secret(secret: &str) -> Result<(), String> {
    if secret.is_empty() {
        return Err("is empty".into());
    }
    match secret.chars().position(|c| !c.is_ascii_graphic()) {
        None => Ok(()),
        Some(position) => {
            let what = match secret.chars().nth(position) {
                Some(c) if c.is_whitespace() => "a space",
                Some(c) if c.is_control() => "a control character",
                _ => "a character that is not ASCII",
            };
            Err(format!(
                "holds {what} at character {} (a secret has none)",
                position + 1
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_secrets_are_read_as_users_save_them() {
        let secret = new_secret().expect("random");
        let printed_json = format!("{{\n  \"token\": \"{secret}\"\n}}\n");
        for text in [
            secret.clone(),
            format!("{secret}\n"),
            format!("  {secret}  \r\n\n"),
            format!("\u{feff}{secret}\n"),
            printed_json,
            format!("{{\"token\":\"{secret}\"}}"),
        ] {
            assert_eq!(
                secret_from_saved_text(&text).as_ref(),
                Ok(&secret),
                "{text:?}"
            );
        }
    }

    #[test]
    fn other_saved_text_is_refused_without_repeating_it() {
        let secret = "s3cr3t-value";
        for (text, found) in [
            ("", "nothing but whitespace"),
            (" \n\t", "nothing but whitespace"),
            ("{\"token\": ", "starts like JSON but is not JSON"),
            (
                "{\"name\": \"s3cr3t-value\"}",
                "without \"token\" (its keys: name)",
            ),
            ("{\"token\": 42}", "\"token\" is not a string"),
            (
                "{\"token\": \"s3cr3t value\"}",
                "holds a space at character 7",
            ),
            ("[\"s3cr3t-value\"]", "not an object"),
            ("s3cr3t-value\nsecond", "2 lines"),
            (
                "Token 'edge' (shown once; keep it safe):\ns3cr3t-value\n",
                "keep only the secret",
            ),
            ("Bearer s3cr3t-value", "holds a space at character 7"),
            ("s3cr3t\u{7}value", "a control character"),
            ("s3cr3t-välue", "not ASCII"),
        ] {
            let refusal = secret_from_saved_text(text).expect_err(text).to_string();
            assert!(refusal.contains(found), "{text:?}: {refusal}");
            assert!(!refusal.contains(secret), "{text:?} repeated: {refusal}");
        }
    }

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
