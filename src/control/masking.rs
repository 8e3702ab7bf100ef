//! Secrets masked out of task log lines before they are stored or shown,
//! as OSMO does: every credential value of eight characters or more found
//! in a line becomes `[MASKED]`.
//!
//! The secrets are the credential values held in the WORKFLOW config (the
//! data, log and app store keys, the registry credential, the alert
//! tokens; opened when sealed, since a task prints the plaintext), and, for
//! a task's lines, the values of the user credentials its `credentials:`
//! names (as OSMO: every value of a mounted credential, the keys an
//! environment variable takes). A [`Masks`] caches the config's matcher per
//! config revision and a task's matcher per task, so the ingest path
//! rebuilds them only when the config changes or a task first logs.
//!
//! Invariants: masking happens once, on the node that takes a task's
//! lines, before they enter the live buffer or a chunk, so no reader and
//! no stored object ever sees a masked value; the longest secret wins where
//! two overlap.

use aho_corasick::{AhoCorasick, MatchKind};
use gantry_storage::config::workflow::{MASK, SECRET_POINTERS};
use gantry_storage::plan::CredentialUse;
use gantry_storage::{ConfigData, ConfigType, ReadView, StorageError, TaskKey};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Tasks whose credential matchers are kept; past this the cache starts
/// over (a matcher is rebuilt from the state in microseconds).
const TASK_MASKERS_MAX: usize = 4096;

/// Shorter values are not masked: they would hide ordinary words.
pub const SECRET_CHARS_MIN: usize = 8;

/// Replaces the secrets of one config revision.
pub struct Masker {
    matcher: Option<AhoCorasick>,
}

impl Masker {
    /// A masker for these secret values (short ones are ignored).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Masker {
        let secrets: Vec<String> = secrets
            .into_iter()
            .filter(|secret| secret.chars().count() >= SECRET_CHARS_MIN)
            .collect();
        let matcher = if secrets.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&secrets)
                .ok()
        };
        Masker { matcher }
    }

    /// The masker for a WORKFLOW config body.
    pub fn of_workflow_config(config: &Value) -> Masker {
        Masker::new(
            SECRET_POINTERS
                .iter()
                .filter_map(|pointer| config.pointer(pointer))
                .filter_map(Value::as_str)
                // Sealed at rest: the task sees, and may print, the plaintext.
                .map(|value| crate::secrets::open(value).unwrap_or_else(|_| value.to_string())),
        )
    }

    /// `text` with every secret replaced, or `None` when it holds none.
    pub fn mask(&self, text: &str) -> Option<String> {
        let matcher = self.matcher.as_ref()?;
        if !matcher.is_match(text) {
            return None;
        }
        Some(matcher.replace_all(text, &vec![MASK; matcher.patterns_len()]))
    }
}

/// The masker in force, rebuilt when the WORKFLOW config's revision
/// changes, and each task's credential masker.
#[derive(Default)]
pub struct Masks {
    cached: Mutex<Option<(Option<u64>, Arc<Masker>)>>,
    /// By task run; `None`: the task names no credential.
    tasks: Mutex<HashMap<TaskKey, Option<Arc<Masker>>>>,
}

impl Masks {
    pub fn current(&self, view: &ReadView) -> Result<Arc<Masker>, StorageError> {
        let revision = view.config_revision_in_force(ConfigType::Workflow, "")?;
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, masker)) = cached.as_ref() {
            if *seen == revision {
                return Ok(masker.clone());
            }
        }
        let masker = match view.config(ConfigType::Workflow, "")? {
            Some(gantry_storage::ConfigRevision {
                data: Some(ConfigData::Json(text)),
                ..
            }) => serde_json::from_str::<Value>(&text)
                .map(|config| Masker::of_workflow_config(&config))
                .unwrap_or_else(|_| Masker::new(Vec::new())),
            _ => Masker::new(Vec::new()),
        };
        let masker = Arc::new(masker);
        *cached = Some((revision, masker.clone()));
        Ok(masker)
    }

    /// The masker of the user credentials task run `key` names, built at
    /// its first lines from the values its launch received.
    pub fn for_task(
        &self,
        view: &ReadView,
        key: &TaskKey,
    ) -> Result<Option<Arc<Masker>>, StorageError> {
        if let Some(known) = self.known_task(key) {
            return Ok(known);
        }
        let built = task_secrets(view, key)?.map(|secrets| Arc::new(Masker::new(secrets)));
        let mut tasks = self.lock_tasks();
        if tasks.len() >= TASK_MASKERS_MAX {
            tasks.clear();
        }
        tasks.insert(key.clone(), built.clone());
        Ok(built)
    }

    /// The task's masker if it is built already (`Some(None)`: the task
    /// names no credential), without reading the state.
    pub fn known_task(&self, key: &TaskKey) -> Option<Option<Arc<Masker>>> {
        self.lock_tasks().get(key).cloned()
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, HashMap<TaskKey, Option<Arc<Masker>>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The values of the user credentials a task's `credentials:` names, as
/// far as they open (`None` when it names none).
fn task_secrets(view: &ReadView, key: &TaskKey) -> Result<Option<Vec<String>>, StorageError> {
    let Some(task) = view.task(&key.workflow_id, &key.task)? else {
        return Ok(None);
    };
    if task.plan.credentials.is_empty() {
        return Ok(None);
    }
    let Some(workflow) = view.workflow_core(&key.workflow_id)? else {
        return Ok(None);
    };
    let mut secrets = Vec::new();
    for (name, usage) in &task.plan.credentials {
        let Some(stored) = view.credential(&workflow.user, name)? else {
            continue;
        };
        let values = match crate::secrets::open_values(&stored.sealed) {
            Ok(values) => values,
            Err(error) => {
                // Every member needs the cluster key file; one without it
                // cannot mask what the task was given.
                tracing::warn!(workflow = %key.workflow_id, task = %key.task, credential = %name, %error, "a task's credential cannot be masked in its logs");
                continue;
            }
        };
        let used: Vec<String> = match usage {
            CredentialUse::Mount(_) => values.into_values().collect(),
            CredentialUse::Env(env) => env
                .values()
                .filter_map(|credential_key| values.get(credential_key).cloned())
                .collect(),
        };
        for value in used {
            // Logs arrive line by line: each line of a value of several
            // (a PEM key) is masked on its own too.
            if value.contains('\n') {
                secrets.extend(
                    value
                        .lines()
                        .map(|line| line.trim_end_matches('\r').to_string()),
                );
            }
            secrets.push(value);
        }
    }
    Ok(Some(secrets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credential_values_are_masked_and_short_ones_are_not() {
        let masker = Masker::of_workflow_config(&json!({
            "workflow_data": {"credential": {"endpoint": "s3://b", "access_key": "wJalrXUtnFEMI/K7MDENG"}},
            "backend_images": {"credential": {"auth": "short"}},
            "workflow_alerts": {"slack_token": "xoxb-1234567890"},
        }));
        assert_eq!(
            masker
                .mask("key=wJalrXUtnFEMI/K7MDENG token xoxb-1234567890!")
                .as_deref(),
            Some("key=[MASKED] token [MASKED]!")
        );
        assert_eq!(masker.mask("auth is short"), None);
        assert_eq!(masker.mask("nothing here"), None);
    }

    #[test]
    fn the_longest_overlapping_secret_wins() {
        let masker = Masker::new(["abcdefgh".to_string(), "abcdefghijkl".to_string()]);
        assert_eq!(masker.mask("xabcdefghijkly").as_deref(), Some("x[MASKED]y"));
    }

    #[test]
    fn no_secrets_masks_nothing() {
        assert_eq!(
            Masker::of_workflow_config(&json!({})).mask("anything"),
            None
        );
    }
}
