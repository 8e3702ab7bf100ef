//! `PutUser`, `RemoveUserRole`, `DeleteUser` and `RevokeUserSessions`:
//! the users Gantry knows and the roles given to them directly.
//!
//! Invariants: a user holds each role at most once, roles sorted by name,
//! at most [`USER_ROLES_MAX`]; a role given again keeps its first grant
//! (who and when); deleting a user takes its access tokens, credentials
//! and profile with it, so nothing of a deleted user signs a request or
//! reaches a task; a revocation time only moves forward.

use crate::command::{Outcome, RejectionKind};
use crate::error::StorageError;
use crate::record::{Millis, RoleGrant, UserRecord, UserWrite, USER_ROLES_MAX};
use crate::tables::Tables;

/// Longest user or role name, in bytes.
const NAME_BYTES_MAX: usize = 256;

fn refused(kind: RejectionKind, message: String) -> Result<Outcome, StorageError> {
    Ok(Outcome::rejected(kind, message))
}

/// Why `name` cannot name a user or role (`what`), if it cannot.
fn bad_name(what: &str, name: &str) -> Option<String> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Some(format!("a {what} name has 1 to {NAME_BYTES_MAX} bytes"));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some(format!(
            "{what} '{}' holds a space or control character",
            name.escape_debug()
        ));
    }
    None
}

pub(super) fn apply_user_put(
    tables: &Tables,
    now: Millis,
    (user, by): (&str, &str),
    roles: &[String],
    mode: UserWrite,
) -> Result<Outcome, StorageError> {
    use RejectionKind::{Conflict, Invalid, NotFound};
    if let Some(reason) = bad_name("user", user) {
        return refused(Invalid, reason);
    }
    if let Some(reason) = roles.iter().find_map(|role| bad_name("role", role)) {
        return refused(Invalid, reason);
    }
    let existing = tables.user(user)?;
    let mut record = match (existing, mode) {
        (Some(_), UserWrite::Create) => {
            return refused(Conflict, format!("user '{user}' already exists"))
        }
        (None, UserWrite::Existing) => {
            return refused(NotFound, format!("user '{user}' does not exist"))
        }
        (Some(record), _) => record,
        (None, _) => UserRecord {
            created: now,
            created_by: by.to_string(),
            roles: Vec::new(),
            sessions_valid_from: None,
        },
    };
    for role in roles {
        if let Err(at) = record
            .roles
            .binary_search_by(|grant| grant.role.as_str().cmp(role))
        {
            record.roles.insert(
                at,
                RoleGrant {
                    role: role.clone(),
                    assigned_by: by.to_string(),
                    assigned_at: now,
                },
            );
        }
    }
    if record.roles.len() > USER_ROLES_MAX {
        return refused(
            Invalid,
            format!("user '{user}' would hold more than {USER_ROLES_MAX} roles"),
        );
    }
    tables.put_user(user, &record)?;
    Ok(Outcome::Applied)
}

pub(super) fn apply_user_role_remove(
    tables: &Tables,
    user: &str,
    role: &str,
) -> Result<Outcome, StorageError> {
    let Some(mut record) = tables.user(user)? else {
        return refused(
            RejectionKind::NotFound,
            format!("user '{user}' does not exist"),
        );
    };
    let before = record.roles.len();
    record.roles.retain(|grant| grant.role != role);
    if record.roles.len() == before {
        return refused(
            RejectionKind::NotFound,
            format!("user '{user}' does not hold role '{role}'"),
        );
    }
    tables.put_user(user, &record)?;
    Ok(Outcome::Applied)
}

pub(super) fn apply_user_delete(tables: &Tables, user: &str) -> Result<Outcome, StorageError> {
    let had_record = tables.remove_user(user)?;
    let tokens = tables.remove_tokens_of(user)?;
    let credentials = tables.remove_credentials_of(user)?;
    let had_profile = tables.remove_user_profile(user)?;
    if !had_record && tokens == 0 && credentials == 0 && !had_profile {
        return refused(
            RejectionKind::NotFound,
            format!("user '{user}' does not exist"),
        );
    }
    Ok(Outcome::Applied)
}

pub(super) fn apply_user_sessions_revoke(
    tables: &Tables,
    now: Millis,
    user: &str,
) -> Result<Outcome, StorageError> {
    let Some(mut record) = tables.user(user)? else {
        return refused(
            RejectionKind::NotFound,
            format!("user '{user}' does not exist"),
        );
    };
    record.sessions_valid_from = Some(record.sessions_valid_from.map_or(now, |at| at.max(now)));
    tables.put_user(user, &record)?;
    Ok(Outcome::Applied)
}
