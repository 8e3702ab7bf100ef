//! A task's credentials for its launch: the user's credentials its
//! `credentials:` names, opened with the cluster key, and on Kubernetes the
//! user's registry credentials that cover its image.
//!
//! Invariants: values are opened here, at dispatch, and travel only in the
//! launch (never into the state: stored extras refuse them); a task gets
//! only the keys it uses (every key for a mount directory, the named keys
//! for environment variables); a credential deleted or changed since the
//! submit fails the task with the reason instead of launching it without;
//! registry auths are most specific first.

use crate::image_ref::{image_scope, scope_covers};
use gantry_storage::extras::{LaunchCredential, RegistryAuth, UserDataCredential};
use gantry_storage::plan::{CredentialUse, TaskPlan};
use gantry_storage::{CredentialKind, CredentialRecord, ReadView};
use std::collections::BTreeMap;

/// One user's credentials, read once per launch and opened when used.
pub(super) struct UserCredentials {
    stored: BTreeMap<String, CredentialRecord>,
    opened: BTreeMap<String, BTreeMap<String, String>>,
}

impl UserCredentials {
    pub(super) fn read(view: &ReadView, user: &str) -> Result<UserCredentials, String> {
        Ok(UserCredentials {
            stored: view
                .credentials(user)
                .map_err(|error| error.to_string())?
                .into_iter()
                .collect(),
            opened: BTreeMap::new(),
        })
    }

    fn open(&mut self, name: &str) -> Result<&BTreeMap<String, String>, String> {
        if !self.opened.contains_key(name) {
            let stored = self.stored.get(name).ok_or_else(|| {
                format!("Could not find the credential: {name} (deleted since the submit?)")
            })?;
            let values = crate::secrets::open_values(&stored.sealed)
                .map_err(|error| format!("credential {name}: {error}"))?;
            self.opened.insert(name.to_string(), values);
        }
        self.opened
            .get(name)
            .ok_or_else(|| format!("credential {name} did not open"))
    }

    /// The task's `credentials:` with the values it uses.
    pub(super) fn for_task(&mut self, plan: &TaskPlan) -> Result<Vec<LaunchCredential>, String> {
        let mut launched = Vec::with_capacity(plan.credentials.len());
        for (name, usage) in &plan.credentials {
            let at = format!("task '{}': credentials.{name}", plan.name);
            let values = self.open(name).map_err(|error| format!("{at}: {error}"))?;
            let credential = match usage {
                CredentialUse::Mount(dir) => LaunchCredential {
                    name: name.clone(),
                    mount: Some(dir.clone()),
                    env: BTreeMap::new(),
                    values: values.clone(),
                },
                CredentialUse::Env(env) => {
                    let mut used = BTreeMap::new();
                    for (variable, key) in env {
                        let value = values.get(key).ok_or_else(|| {
                            format!(
                                "{at}.{variable}: {key} is not a valid credential key please choose from [{}]",
                                values.keys().cloned().collect::<Vec<_>>().join(", ")
                            )
                        })?;
                        used.insert(key.clone(), value.clone());
                    }
                    LaunchCredential {
                        name: name.clone(),
                        mount: None,
                        env: env.clone(),
                        values: used,
                    }
                }
            };
            launched.push(credential);
        }
        Ok(launched)
    }

    /// The user's DATA credentials whose endpoints cover any of `urls`
    /// (OSMO chooses a user's data credential by the URL's bucket).
    pub(super) fn data_credentials(
        &mut self,
        urls: &[String],
    ) -> Result<Vec<UserDataCredential>, String> {
        let covering: Vec<String> = self
            .stored
            .iter()
            // Only object stores: a user's store is opened by the executor
            // on its host, never a host directory.
            .filter(|(_, stored)| {
                stored.kind == CredentialKind::Data && stored.profile.starts_with("s3://")
            })
            .filter(|(_, stored)| {
                let probe = UserDataCredential {
                    endpoint: stored.profile.clone(),
                    ..UserDataCredential::default()
                };
                urls.iter().any(|url| probe.covers(url))
            })
            .map(|(name, _)| name.clone())
            .collect();
        let mut launched = Vec::with_capacity(covering.len());
        for name in covering {
            let values = self.open(&name)?;
            let text = |key: &str| values.get(key).cloned().filter(|value| !value.is_empty());
            launched.push(UserDataCredential {
                endpoint: text("endpoint").unwrap_or_default(),
                region: text("region"),
                override_url: text("override_url"),
                // OSMO: path style unless `virtual` is asked for.
                path_style: text("addressing_style").as_deref() != Some("virtual"),
                access_key_id: text("access_key_id").unwrap_or_default(),
                access_key: text("access_key").unwrap_or_default(),
            });
        }
        Ok(launched)
    }

    /// The registry credentials that cover `image`, most specific first.
    pub(super) fn registry_auths(&mut self, image: &str) -> Result<Vec<RegistryAuth>, String> {
        let scope = image_scope(image);
        // (name, scope), most specific scope first.
        let mut covering: Vec<(String, String)> = self
            .stored
            .iter()
            .filter(|(_, stored)| {
                stored.kind == CredentialKind::Registry && scope_covers(&stored.profile, &scope)
            })
            .map(|(name, stored)| (name.clone(), stored.profile.clone()))
            .collect();
        covering.sort_by_key(|(_, scope)| std::cmp::Reverse(scope.len()));
        let mut auths = Vec::with_capacity(covering.len());
        for (name, scope) in covering {
            let values = self.open(&name)?;
            auths.push(RegistryAuth {
                scope,
                username: values.get("username").cloned().unwrap_or_default(),
                password: values.get("auth").cloned().unwrap_or_default(),
            });
        }
        Ok(auths)
    }
}
