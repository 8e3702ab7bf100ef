//! A data store as a launch carries it, and opening a URL against it.
//!
//! Invariants: the secret never leaves through `Debug`; static keys are used
//! only for URLs under the data store's root (its bucket and prefix; any
//! other S3 URL gets the same endpoint and region with the environment's
//! default credential chain), so a workflow cannot aim the service's keys
//! at objects the admin did not give it; a `file://` URL is opened only
//! when the root is a directory and the URL lies inside it, so a workflow
//! can never read or write the host's files (the executor moves data
//! outside the task's sandbox).

use super::DataError;
use crate::object_storage::{s3_store, ObjectStorage, S3Settings};
use gantry_storage::config::workflow::{DataCredential, WorkflowConfig, DATA_CREDENTIAL, MASK};
use gantry_storage::ReadView;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Where task data lives and how to reach it: OSMO's `workflow_data`
/// credential, or the server's own object store under `data/`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataStore {
    /// `s3://bucket[/prefix]` or `file:///abs/dir`; a workflow's data is
    /// under `<root>/<workflow_id>/<task>/`.
    pub root: String,
    #[serde(default)]
    pub region: Option<String>,
    /// An S3-compatible service's URL (OSMO's `override_url`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Path-style requests (`<endpoint>/<bucket>/key`).
    #[serde(default)]
    pub path_style: bool,
    /// Static keys; `None` uses the environment's default chain (`AWS_*`).
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub access_key: Option<String>,
}

impl std::fmt::Debug for DataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStore")
            .field("root", &self.root)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("access_key", &self.access_key.as_ref().map(|_| MASK))
            .finish()
    }
}

/// An opened prefix: every key below it belongs to one input or output.
#[derive(Clone)]
pub struct Location {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) prefix: ObjectPath,
    /// The URL, for messages.
    pub url: String,
    /// How it is reached, when a failure may come from that (see
    /// [`DataError::Store`]).
    pub(crate) credential_note: String,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl DataStore {
    /// Task data's default home: `storage` under `data/`, reached with its
    /// settings and the environment's credentials.
    pub fn default_in(storage: &ObjectStorage) -> DataStore {
        let s3 = storage.s3.clone().unwrap_or_default();
        DataStore {
            root: storage.data_root.clone(),
            region: s3.region,
            endpoint: s3.endpoint,
            path_style: storage.s3.is_some() && s3.path_style.unwrap_or(true),
            access_key_id: None,
            access_key: None,
        }
    }

    /// The data store a WORKFLOW config's `workflow_data.credential` names:
    /// the config's own checks, then the store must open. Errors name the
    /// field (`configs.workflow_data.credential...`).
    pub fn from_credential(credential: &DataCredential) -> Result<DataStore, String> {
        credential.check(DATA_CREDENTIAL)?;
        let store = DataStore {
            root: credential.root().to_string(),
            region: credential.region.clone(),
            endpoint: credential.override_url.clone(),
            path_style: credential.path_style(),
            access_key_id: credential.access_key_id.clone(),
            // Sealed at rest with the cluster key (`secrets`): opened here,
            // where it is used.
            access_key: credential
                .access_key
                .as_deref()
                .map(crate::secrets::open)
                .transpose()
                .map_err(|error| format!("{DATA_CREDENTIAL}.access_key: {error}"))?,
        };
        store
            .open(&store.root)
            .map_err(|error| format!("{DATA_CREDENTIAL}.endpoint: {error}"))?;
        Ok(store)
    }

    /// The store a user's DATA credential opens (keys as launched).
    pub fn from_user_credential(
        credential: &gantry_storage::extras::UserDataCredential,
    ) -> DataStore {
        DataStore {
            root: credential.endpoint.trim_end_matches('/').to_string(),
            region: credential.region.clone(),
            endpoint: credential.override_url.clone(),
            path_style: credential.path_style,
            access_key_id: Some(credential.access_key_id.clone()),
            access_key: Some(credential.access_key.clone()),
        }
    }

    /// The data store of the WORKFLOW config in force, if it names one.
    pub fn from_workflow_config(view: &ReadView) -> Option<DataStore> {
        let credential = WorkflowConfig::in_force(view).workflow_data.credential?;
        DataStore::from_credential(&credential).ok()
    }

    /// The intermediate prefix of task `task` of workflow `workflow_id`.
    pub fn task_url(&self, workflow_id: &str, task: &str) -> String {
        format!("{}/{workflow_id}/{task}", self.root.trim_end_matches('/'))
    }

    /// Opens `url` (`s3://bucket/prefix` or `file:///abs/dir`) with this
    /// store's endpoint, region and (for its own bucket) keys.
    pub fn open(&self, url: &str) -> Result<Location, DataError> {
        let bad = |reason: &str| DataError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let parsed = url::Url::parse(url).map_err(|error| bad(&error.to_string()))?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("takes no query or fragment"));
        }
        let mut credential_note = String::new();
        let (store, path): (Arc<dyn ObjectStore>, String) = match parsed.scheme() {
            "file" => {
                if parsed.host_str().is_some_and(|host| !host.is_empty()) {
                    return Err(bad("a file URL takes no host (file:///abs/dir)"));
                }
                let path = parsed
                    .to_file_path()
                    .map_err(|()| bad("not an absolute path"))?;
                if !self.holds_file(&path) {
                    return Err(bad(&format!(
                        "file URLs are allowed only inside the data store {}",
                        self.root
                    )));
                }
                let text = path
                    .to_str()
                    .ok_or_else(|| bad("the path is not UTF-8"))?
                    .to_string();
                (Arc::new(LocalFileSystem::new()), text)
            }
            "s3" => {
                let bucket = parsed
                    .host_str()
                    .filter(|bucket| !bucket.is_empty())
                    .ok_or_else(|| bad("names no bucket (s3://bucket/prefix)"))?;
                let path = percent_decode(parsed.path()).ok_or_else(|| bad("bad escape"))?;
                let keys = match (&self.access_key_id, &self.access_key) {
                    (Some(id), Some(secret)) if self.holds_key(bucket, &path) => {
                        Some((id.clone(), secret.clone()))
                    }
                    _ => None,
                };
                let settings = S3Settings {
                    endpoint: self.endpoint.clone(),
                    region: self.region.clone(),
                    path_style: Some(self.path_style),
                    keys,
                };
                // Without the data credential's keys, the host's own AWS
                // credentials are all there is: said with a failure, whose
                // bare text (an instance-metadata error, say) hides why.
                if settings.keys.is_none() {
                    credential_note = format!(
                        " (bucket '{bucket}' is outside the data credential's, so it is reached with this host's default AWS credentials; a DATA credential of your own for it: `gantry credential set NAME --type DATA`)"
                    );
                }
                let store = s3_store(bucket, &settings).map_err(|source| DataError::Store {
                    url: url.to_string(),
                    source,
                    note: credential_note.clone(),
                })?;
                (Arc::new(store), path)
            }
            other => return Err(bad(&format!("unsupported scheme '{other}' (s3, file)"))),
        };
        let prefix = ObjectPath::parse(path.trim_matches('/')).map_err(|error| {
            bad(&format!(
                "the path must be plain segments without '.', '..' or '//': {error}"
            ))
        })?;
        Ok(Location {
            store,
            prefix,
            url: url.to_string(),
            credential_note,
        })
    }

    /// Whether `path` lies inside a `file://` root: no `.`/`..` parts
    /// (a percent-encoded `/` can smuggle them past URL parsing) and below
    /// the root directory.
    fn holds_file(&self, path: &std::path::Path) -> bool {
        use std::path::Component;
        let Some(root) = url::Url::parse(&self.root)
            .ok()
            .filter(|root| root.scheme() == "file")
            .and_then(|root| root.to_file_path().ok())
        else {
            return false;
        };
        let plain = path
            .components()
            .all(|part| matches!(part, Component::RootDir | Component::Normal(_)));
        plain && path.starts_with(root)
    }

    /// Whether `url` is an `s3://` URL inside this store's root, exactly as
    /// [`DataStore::open`] decides whether its keys go with a request: a
    /// user's store is used only for such URLs, so its endpoint never sees
    /// a request signed with anything but its own keys.
    pub fn holds_url(&self, url: &str) -> bool {
        let Ok(parsed) = url::Url::parse(url) else {
            return false;
        };
        let Some(bucket) = parsed.host_str().filter(|_| parsed.scheme() == "s3") else {
            return false;
        };
        percent_decode(parsed.path()).is_some_and(|path| self.holds_key(bucket, &path))
    }

    /// Whether `bucket` and key prefix `path` lie under an `s3://` root.
    fn holds_key(&self, bucket: &str, path: &str) -> bool {
        let Some(rest) = self.root.strip_prefix("s3://") else {
            return false;
        };
        let (root_bucket, root_prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let root_parts = root_prefix.split('/').filter(|part| !part.is_empty());
        let mut parts = path.split('/').filter(|part| !part.is_empty());
        root_bucket == bucket
            && root_parts
                .into_iter()
                .all(|want| parts.next() == Some(want))
    }
}

fn percent_decode(path: &str) -> Option<String> {
    percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> DataStore {
        DataStore {
            root: "s3://data/root".into(),
            access_key_id: Some("AKIA".into()),
            access_key: Some("very-secret".into()),
            ..DataStore::default()
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let text = format!("{:?}", store());
        assert!(!text.contains("very-secret"), "{text}");
        assert!(text.contains("[MASKED]"), "{text}");
    }

    #[test]
    fn task_urls_sit_under_the_root() {
        assert_eq!(store().task_url("wf-1", "a"), "s3://data/root/wf-1/a");
    }

    #[test]
    fn bad_urls_name_the_reason() {
        for (url, reason) in [
            ("gs://b/p", "unsupported scheme 'gs'"),
            ("s3:///p", "names no bucket"),
            ("s3://b/p?x=1", "no query"),
            ("file://host/dir", "no host"),
            ("s3://b/a//b", "plain segments"),
        ] {
            let error = store().open(url).err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.contains(reason)),
                "{url}: {error:?}"
            );
        }
        assert!(store().open("s3://other/x").is_ok());
    }

    #[test]
    fn a_url_reached_without_the_credential_says_so_in_its_failures() {
        let own = store().open("s3://data/root/wf-1/a").expect("own bucket");
        assert!(own.credential_note.is_empty());
        let other = store().open("s3://my-bucket/data/").expect("other bucket");
        assert!(
            other
                .credential_note
                .contains("bucket 'my-bucket' is outside the data credential's")
                && other.credential_note.contains("default AWS credentials"),
            "{}",
            other.credential_note
        );
        let failure = DataError::Store {
            url: other.url.clone(),
            source: object_store::Error::NotImplemented,
            note: other.credential_note.clone(),
        };
        assert!(failure
            .to_string()
            .ends_with("`gantry credential set NAME --type DATA`)"));
    }

    #[test]
    fn keys_go_only_to_urls_under_the_root() {
        let store = store();
        assert!(store.holds_key("data", "/root/wf-1/a"));
        assert!(store.holds_key("data", "/root"));
        assert!(!store.holds_key("data", "/rootless/x"));
        assert!(!store.holds_key("data", "/other/root"));
        assert!(!store.holds_key("other", "/root/x"));
    }

    #[test]
    fn file_urls_must_stay_inside_a_directory_root() {
        let local = DataStore {
            root: "file:///srv/gantry/objects/data".into(),
            ..DataStore::default()
        };
        assert!(local
            .open("file:///srv/gantry/objects/data/exports/run-1")
            .is_ok());
        for url in [
            "file:///etc/gantry",
            "file:///srv/gantry/objects/wf-1/logs",
            "file:///srv/gantry/objects/data/../../etc",
            "file:///srv/gantry/objects/data/a%2F..%2F..%2F..%2Fetc",
            "file:///srv/gantry/objects/database",
        ] {
            let error = local.open(url).err().map(|e| e.to_string());
            assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.contains("only inside the data store")),
                "{url}: {error:?}"
            );
        }
        // An S3 root never opens local files.
        assert!(store().open("file:///tmp/x").is_err());
    }

    #[test]
    fn a_workflow_data_credential_is_checked_then_opened() {
        let credential = |value: serde_json::Value| -> DataCredential {
            serde_json::from_value(value).expect("a credential")
        };
        let store = DataStore::from_credential(&credential(serde_json::json!({
            "endpoint": "s3://bucket/pre/", "region": "eu-1",
            "override_url": "http://127.0.0.1:9000", "addressing_style": "auto",
            "access_key_id": "id", "access_key": "secret"})))
        .expect("opens");
        assert_eq!(store.root, "s3://bucket/pre");
        assert_eq!(store.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(store.path_style);
        assert_eq!(store.access_key.as_deref(), Some("secret"));
        for (value, error) in [
            // The config's own check.
            (
                serde_json::json!({"endpoint": "gs://b"}),
                "configs.workflow_data.credential.endpoint: 'gs://b' is not s3://",
            ),
            // Only opening finds these.
            (
                serde_json::json!({"endpoint": "s3:///p"}),
                "configs.workflow_data.credential.endpoint: ",
            ),
            (
                serde_json::json!({"endpoint": "s3://b/a//b"}),
                "plain segments",
            ),
        ] {
            let got = DataStore::from_credential(&credential(value.clone())).unwrap_err();
            assert!(got.contains(error), "{value}: {got}");
        }
    }
}
