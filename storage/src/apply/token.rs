//! `IssueToken` and `RevokeToken`.
//!
//! Invariants: a token is stored by its SHA-256 only (64 lower-case hex
//! digits); a token name belongs to one user.

use crate::command::{Outcome, RejectionKind};
use crate::error::StorageError;
use crate::record::TokenRecord;
use crate::tables::Tables;

pub(super) fn apply_token_issue(
    tables: &Tables,
    token: &TokenRecord,
) -> Result<Outcome, StorageError> {
    let well_formed_hash = token.hash.len() == 64
        && token
            .hash
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if token.name.trim().is_empty() || !well_formed_hash {
        return Ok(Outcome::rejected(
            RejectionKind::Invalid,
            "a token needs a name and a lower-case hex SHA-256 hash",
        ));
    }
    if let Some(existing) = tables.token(&token.name)? {
        if existing.user != token.user {
            return Ok(Outcome::rejected(
                RejectionKind::Conflict,
                format!(
                    "token name '{}' is taken by another user; choose another name",
                    token.name
                ),
            ));
        }
    }
    tables.put_token(token)?;
    Ok(Outcome::Applied)
}

pub(super) fn apply_token_revoke(tables: &Tables, name: &str) -> Result<Outcome, StorageError> {
    if tables.remove_token(name)? {
        Ok(Outcome::Applied)
    } else {
        Ok(Outcome::rejected(
            RejectionKind::NotFound,
            format!("token '{name}' does not exist"),
        ))
    }
}
