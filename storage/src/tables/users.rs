//! The rows of users and what is theirs: access tokens (with their hash
//! index), user records, credentials and profiles.
//!
//! Invariant: a token and its hash index change together.

use super::*;

impl<'a> Tables<'a> {
    /// Stores a token, replacing one of the same name (and its hash index).
    pub fn put_token(&self, token: &crate::record::TokenRecord) -> Result<(), StorageError> {
        self.remove_token(&token.name)?;
        self.txn
            .open_table(TOKENS)?
            .insert(token.name.as_str(), encode_row(token)?.as_slice())?;
        self.txn
            .open_table(TOKENS_BY_HASH)?
            .insert(token.hash.as_str(), token.name.as_str())?;
        Ok(())
    }

    pub fn remove_token(&self, name: &str) -> Result<bool, StorageError> {
        let removed: Option<crate::record::TokenRecord> = {
            let mut table = self.txn.open_table(TOKENS)?;
            let row = table.remove(name)?;
            row.map(|v| decode_row(&TOKENS, &name, v.value()))
                .transpose()?
        };
        if let Some(token) = &removed {
            self.txn
                .open_table(TOKENS_BY_HASH)?
                .remove(token.hash.as_str())?;
        }
        Ok(removed.is_some())
    }

    pub fn token(&self, name: &str) -> Result<Option<crate::record::TokenRecord>, StorageError> {
        let table = self.txn.open_table(TOKENS)?;
        let row = table.get(name)?;
        row.map(|v| decode_row(&TOKENS, &name, v.value()))
            .transpose()
    }

    pub fn user(&self, name: &str) -> Result<Option<crate::record::UserRecord>, StorageError> {
        let table = self.txn.open_table(USERS)?;
        let row = table.get(name)?;
        row.map(|v| decode_row(&USERS, &name, v.value()))
            .transpose()
    }

    pub fn put_user(
        &self,
        name: &str,
        record: &crate::record::UserRecord,
    ) -> Result<(), StorageError> {
        self.txn
            .open_table(USERS)?
            .insert(name, encode_row(record)?.as_slice())?;
        Ok(())
    }

    pub fn remove_user(&self, name: &str) -> Result<bool, StorageError> {
        Ok(self.txn.open_table(USERS)?.remove(name)?.is_some())
    }

    /// Removes every access token of `user`; how many there were.
    pub fn remove_tokens_of(&self, user: &str) -> Result<usize, StorageError> {
        let mut names = Vec::new();
        {
            let table = self.txn.open_table(TOKENS)?;
            for row in table.iter()? {
                let (key, value) = row?;
                let token: crate::record::TokenRecord =
                    decode_row(&TOKENS, &key.value(), value.value())?;
                if token.user == user {
                    names.push(token.name);
                }
            }
        }
        for name in &names {
            self.remove_token(name)?;
        }
        Ok(names.len())
    }

    /// Removes every credential of `user`; how many there were.
    pub fn remove_credentials_of(&self, user: &str) -> Result<usize, StorageError> {
        let mut names = Vec::new();
        {
            let table = self.txn.open_table(USER_CREDENTIALS)?;
            for row in table.range((user, "")..)? {
                let (key, _) = row?;
                let (owner, name) = key.value();
                if owner != user {
                    break;
                }
                names.push(name.to_string());
            }
        }
        for name in &names {
            self.remove_credential(user, name)?;
        }
        Ok(names.len())
    }

    pub fn remove_user_profile(&self, user: &str) -> Result<bool, StorageError> {
        Ok(self.txn.open_table(USER_PROFILES)?.remove(user)?.is_some())
    }

    pub fn put_user_profile(&self, user: &str, text: &str) -> Result<(), StorageError> {
        self.txn
            .open_table(USER_PROFILES)?
            .insert(user, encode_row(&text)?.as_slice())?;
        Ok(())
    }

    /// A user's credential by name.
    pub fn credential(
        &self,
        user: &str,
        name: &str,
    ) -> Result<Option<CredentialRecord>, StorageError> {
        let table = self.txn.open_table(USER_CREDENTIALS)?;
        let row = table.get((user, name))?;
        row.map(|v| decode_row(&USER_CREDENTIALS, &(user, name), v.value()))
            .transpose()
    }

    /// The name of the user's credential of `kind` for `profile`, if any.
    pub fn credential_with_profile(
        &self,
        user: &str,
        kind: crate::record::CredentialKind,
        profile: &str,
    ) -> Result<Option<String>, StorageError> {
        let table = self.txn.open_table(USER_CREDENTIALS)?;
        for row in table.range((user, "")..)? {
            let (key, value) = row?;
            let (owner, name) = key.value();
            if owner != user {
                break;
            }
            let stored: CredentialRecord =
                decode_row(&USER_CREDENTIALS, &(owner, name), value.value())?;
            if stored.kind == kind && stored.profile == profile {
                return Ok(Some(name.to_string()));
            }
        }
        Ok(None)
    }

    /// How many credentials a user holds.
    pub fn credential_count(&self, user: &str) -> Result<usize, StorageError> {
        let table = self.txn.open_table(USER_CREDENTIALS)?;
        let mut count = 0;
        for row in table.range((user, "")..)? {
            let (key, _) = row?;
            if key.value().0 != user {
                break;
            }
            count += 1;
        }
        Ok(count)
    }

    pub fn put_credential(
        &self,
        user: &str,
        name: &str,
        credential: &CredentialRecord,
    ) -> Result<(), StorageError> {
        self.txn
            .open_table(USER_CREDENTIALS)?
            .insert((user, name), encode_row(credential)?.as_slice())?;
        Ok(())
    }

    pub fn remove_credential(&self, user: &str, name: &str) -> Result<bool, StorageError> {
        Ok(self
            .txn
            .open_table(USER_CREDENTIALS)?
            .remove((user, name))?
            .is_some())
    }
}
