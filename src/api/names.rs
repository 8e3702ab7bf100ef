//! The names a caller chooses that end up in policy resources: user names,
//! token names and backend names.
//!
//! Invariants: user and token names share one character set,
//! [`NAME_CHARS`]; a name outside it is refused with a 400 naming the
//! field, never stored. Backend names keep their narrower set (they are
//! also certificate and file names). None of these sets holds a policy
//! wildcard (`*`), `?`, `[` or a control character, so a name put into a
//! policy pattern (`${user}`, `${backend}`) can only match itself (the
//! matcher escapes it as well, for names stored before this check).

use super::error::ApiError;

/// The character set of user and token names, as documented.
pub const NAME_CHARS: &str =
    "1-128 characters: letters, digits, '.', '_', '-', '@' or '+', starting with a letter or digit";

/// Longest user or token name.
const NAME_CHARS_MAX: usize = 128;

/// Whether `name` is a valid user or token name.
pub fn is_name(name: &str) -> bool {
    name.len() <= NAME_CHARS_MAX
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'))
}

/// Refuses a user or token name outside [`NAME_CHARS`], naming `field`.
pub fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    if is_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "USAGE",
            format!("{field}: {name:?} is not a valid name ({NAME_CHARS})"),
        ))
    }
}

/// The character set of backend names.
pub const BACKEND_CHARS: &str = "1-64 letters, digits, '-', '_' or '.'";

/// Whether `name` is a valid backend name.
pub fn is_backend_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_one_character_set() {
        for good in ["ann", "alice@example.com", "a.b-c_d", "ci+nightly", "9"] {
            assert!(is_name(good), "{good}");
        }
        let long = "a".repeat(129);
        for bad in [
            "", "*", "a*", "a?b", "a[b]", "-x", ".x", "a b", "a/b", "zoë", "a\u{1}", &long,
        ] {
            assert!(!is_name(bad), "{bad:?}");
            let error = check_name("user", bad).unwrap_err();
            assert_eq!(error.status.as_u16(), 400);
            assert!(error.message.starts_with("user: "), "{}", error.message);
        }
        assert!(is_backend_name("local") && is_backend_name("gpu-east.2"));
        assert!(!is_backend_name("*") && !is_backend_name("") && !is_backend_name("a/b"));
    }
}
