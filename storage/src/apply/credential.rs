//! `PutCredential` and `DeleteCredential`: a user's credentials; and
//! `SetUserProfile`, the user's saved preferences.
//!
//! Invariants: a credential's values are in the state only sealed (the
//! proposer seals them with the cluster key; a value without the sealed
//! prefix is refused, so no bug upstream can store one in clear); names
//! have OSMO's syntax (a letter first, then letters, digits, `-`, `_`, not
//! ending in `-` or `_`); a name holds one type (replacing it with another
//! is refused, as it would change what the tasks naming it receive); every
//! field is bounded and a user holds at most
//! [`CREDENTIALS_PER_USER_MAX`] credentials.

use crate::command::{Outcome, RejectionKind};
use crate::error::StorageError;
use crate::record::is_credential_name;
use crate::record::{
    CredentialRecord, Millis, CREDENTIALS_PER_USER_MAX, CREDENTIAL_KEYS_MAX,
    CREDENTIAL_KEY_BYTES_MAX, CREDENTIAL_NAME_BYTES_MAX, CREDENTIAL_PROFILE_BYTES_MAX,
    CREDENTIAL_SEALED_BYTES_MAX, SEALED_VALUE_PREFIX,
};
use crate::tables::Tables;

fn refused(kind: RejectionKind, message: String) -> Result<Outcome, StorageError> {
    Ok(Outcome::rejected(kind, message))
}

pub(super) fn apply_credential_put(
    tables: &Tables,
    now: Millis,
    (user, name): (&str, &str),
    only_if_sealed: Option<&str>,
    credential: &CredentialRecord,
) -> Result<Outcome, StorageError> {
    use RejectionKind::{Conflict, Invalid};
    if user.is_empty() {
        return refused(Invalid, "a credential needs a user".into());
    }
    if !is_credential_name(name) {
        return refused(
            Invalid,
            format!(
                "cred_name: '{name}' is not a credential name (a letter first, then letters, digits, '-' or '_', not ending in '-' or '_', at most {CREDENTIAL_NAME_BYTES_MAX} bytes)"
            ),
        );
    }
    if credential.keys.is_empty() || credential.keys.len() > CREDENTIAL_KEYS_MAX {
        return refused(
            Invalid,
            format!(
                "credential '{name}': needs 1 to {CREDENTIAL_KEYS_MAX} keys, got {}",
                credential.keys.len()
            ),
        );
    }
    if let Some(key) = credential
        .keys
        .iter()
        .find(|key| key.is_empty() || key.len() > CREDENTIAL_KEY_BYTES_MAX)
    {
        return refused(
            Invalid,
            format!(
                "credential '{name}': key of {} bytes is empty or over {CREDENTIAL_KEY_BYTES_MAX}",
                key.len()
            ),
        );
    }
    if !credential.keys.windows(2).all(|pair| pair[0] < pair[1]) {
        return refused(
            Invalid,
            format!("credential '{name}': keys must be sorted and distinct"),
        );
    }
    if credential.profile.len() > CREDENTIAL_PROFILE_BYTES_MAX {
        return refused(
            Invalid,
            format!(
                "credential '{name}': profile of {} bytes is over {CREDENTIAL_PROFILE_BYTES_MAX}",
                credential.profile.len()
            ),
        );
    }
    if !credential.sealed.starts_with(SEALED_VALUE_PREFIX) {
        return refused(
            Invalid,
            format!("credential '{name}': its values are not sealed"),
        );
    }
    if credential.sealed.len() > CREDENTIAL_SEALED_BYTES_MAX {
        return refused(
            Invalid,
            format!(
                "credential '{name}': sealed values of {} bytes are over {CREDENTIAL_SEALED_BYTES_MAX}",
                credential.sealed.len()
            ),
        );
    }
    let existing = tables.credential(user, name)?;
    if let Some(expected) = only_if_sealed {
        if existing
            .as_ref()
            .is_none_or(|stored| stored.sealed != expected)
        {
            return refused(
                Conflict,
                format!("credential '{name}' changed or was deleted meanwhile: left as it is"),
            );
        }
    }
    if credential.kind != crate::record::CredentialKind::Generic {
        if let Some(other) =
            tables.credential_with_profile(user, credential.kind, &credential.profile)?
        {
            if other != name {
                return refused(
                    Conflict,
                    format!(
                        "credential '{other}' is already for {}; a user has one credential per registry or endpoint",
                        credential.profile
                    ),
                );
            }
        }
    }
    match existing {
        Some(existing) if existing.kind != credential.kind => {
            return refused(
                Conflict,
                format!(
                    "credential '{name}' exists with type {}; delete it before setting it as {}",
                    existing.kind.as_str(),
                    credential.kind.as_str()
                ),
            )
        }
        Some(_) => {}
        None if tables.credential_count(user)? >= CREDENTIALS_PER_USER_MAX => {
            return refused(
                Invalid,
                format!(
                    "user '{user}' holds {CREDENTIALS_PER_USER_MAX} credentials, the most allowed; delete one first"
                ),
            )
        }
        None => {}
    }
    let stored = CredentialRecord {
        updated: now,
        ..credential.clone()
    };
    tables.put_credential(user, name, &stored)?;
    Ok(Outcome::Applied)
}

pub(super) fn apply_credential_delete(
    tables: &Tables,
    user: &str,
    name: &str,
) -> Result<Outcome, StorageError> {
    if tables.remove_credential(user, name)? {
        Ok(Outcome::Applied)
    } else {
        refused(
            RejectionKind::NotFound,
            format!("user '{user}' has no credential '{name}'"),
        )
    }
}

/// A profile text is stored as sent (a newer build's fields kept), once it
/// reads as a profile.
pub(super) fn apply_user_profile_set(
    tables: &Tables,
    user: &str,
    text: &str,
) -> Result<Outcome, StorageError> {
    if user.is_empty() {
        return refused(RejectionKind::Invalid, "a profile needs a user".into());
    }
    if let Err(message) = crate::record::UserProfile::from_text(text) {
        return refused(RejectionKind::Invalid, message);
    }
    tables.put_user_profile(user, text)?;
    Ok(Outcome::Applied)
}
