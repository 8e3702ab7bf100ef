//! Object storage for logs and task data: one place that turns a store URL
//! into an `object_store` client.
//!
//! URLs: `file:///abs/dir` (a local directory, created if missing; the
//! default is `<data-dir>/objects`) or `s3://bucket[/prefix]` with optional
//! query parameters `endpoint=URL`, `region=R`, `path_style=true`. S3
//! credentials come from the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, …), never from the URL, so they stay out of process
//! listings. Invariants: every key is relative to the store's prefix; a
//! cluster's members must share one store (S3, or a shared directory) for
//! logs written on one node to be read on another (checked by
//! `control::store_probe`). Task data defaults to
//! the same store under `data/` (see [`ObjectStorage::data_root`]).

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ObjectStorageError {
    #[error("object store URL '{url}': {reason}")]
    BadUrl { url: String, reason: String },
    #[error("object store directory {path}: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("object store: cannot sync '{key}' to disk: {source}")]
    Sync { key: String, source: std::io::Error },
}

/// Syncs `file` and every directory from its parent up to `root`: the put
/// may have created any of them. (A directory with nothing new is cheap to sync.)
fn sync_file_and_directories(file: &Path, root: &Path) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    let mut directory = file.parent();
    while let Some(dir) = directory {
        std::fs::File::open(dir)?.sync_all()?;
        if dir == root {
            break;
        }
        directory = dir.parent();
    }
    Ok(())
}

/// A store and the prefix every key lives under.
#[derive(Clone)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// The directory of a `file://` store: its writes are fsynced, since
    /// `object_store` only renames a temporary file into place.
    local_root: Option<std::path::PathBuf>,
    /// The URL it was opened from, without query parameters (for messages).
    pub display: String,
    /// Task data's default home: the URL of this store's `data/` prefix.
    pub data_root: String,
    /// How an S3 store is reached (`None` for a directory).
    pub s3: Option<S3Settings>,
}

/// How to reach an S3-compatible service; `None` leaves the environment's
/// (`AWS_*`) or the crate's default.
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    /// Static (access key id, secret); `None` uses the environment's chain.
    pub keys: Option<(String, String)>,
}

/// An S3 client for `bucket`. Static keys replace the environment's
/// credentials entirely (a stray `AWS_SESSION_TOKEN` must not ride along).
pub fn s3_store(
    bucket: &str,
    settings: &S3Settings,
) -> Result<object_store::aws::AmazonS3, object_store::Error> {
    let mut builder = match &settings.keys {
        Some((id, secret)) => AmazonS3Builder::new()
            .with_access_key_id(id)
            .with_secret_access_key(secret),
        None => AmazonS3Builder::from_env(),
    }
    .with_bucket_name(bucket);
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_allow_http(endpoint.starts_with("http://"))
            .with_endpoint(endpoint);
    } else if std::env::var_os("AWS_ENDPOINT_URL")
        .is_some_and(|e| e.to_string_lossy().starts_with("http://"))
    {
        builder = builder.with_allow_http(true);
    }
    if let Some(region) = &settings.region {
        builder = builder.with_region(region);
    }
    if let Some(path_style) = settings.path_style {
        builder = builder.with_virtual_hosted_style_request(!path_style);
    }
    builder.build()
}

impl ObjectStorage {
    /// Opens the store named by `url`, or `<data_dir>/objects` without one.
    pub fn open(url: Option<&str>, data_dir: &Path) -> Result<ObjectStorage, ObjectStorageError> {
        match url {
            Some(url) => ObjectStorage::open_url(url),
            None => ObjectStorage::open_dir(&data_dir.join("objects")),
        }
    }

    fn open_dir(dir: &Path) -> Result<ObjectStorage, ObjectStorageError> {
        std::fs::create_dir_all(dir).map_err(|source| ObjectStorageError::Directory {
            path: dir.display().to_string(),
            source,
        })?;
        let dir = dir
            .canonicalize()
            .map_err(|source| ObjectStorageError::Directory {
                path: dir.display().to_string(),
                source,
            })?;
        let store = LocalFileSystem::new_with_prefix(&dir)?;
        Ok(ObjectStorage {
            store: Arc::new(store),
            prefix: String::new(),
            local_root: Some(dir.clone()),
            display: format!("file://{}", dir.display()),
            // Percent-encoded by `url`: a `#`, `?` or `%` in the path must
            // not change what the root means when parsed again.
            data_root: url::Url::from_directory_path(dir.join("data"))
                .map_err(|()| ObjectStorageError::BadUrl {
                    url: dir.display().to_string(),
                    reason: "not an absolute directory".into(),
                })?
                .to_string(),
            s3: None,
        })
    }

    pub fn open_url(text: &str) -> Result<ObjectStorage, ObjectStorageError> {
        let bad = |reason: &str| ObjectStorageError::BadUrl {
            url: text.to_string(),
            reason: reason.to_string(),
        };
        let url = url::Url::parse(text).map_err(|error| bad(&error.to_string()))?;
        match url.scheme() {
            "file" => {
                if url.query().is_some() || url.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(bad(
                        "a file URL takes no host and no query (file:///abs/dir)",
                    ));
                }
                let path = url
                    .to_file_path()
                    .map_err(|()| bad("not an absolute directory path"))?;
                ObjectStorage::open_dir(&path)
            }
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| bad("names no bucket (s3://bucket/prefix)"))?;
                let mut settings = S3Settings::default();
                for (name, value) in url.query_pairs() {
                    match name.as_ref() {
                        "endpoint" => settings.endpoint = Some(value.into_owned()),
                        "region" => settings.region = Some(value.into_owned()),
                        "path_style" => {
                            settings.path_style = Some(match value.as_ref() {
                                "true" => true,
                                "false" => false,
                                _ => return Err(bad("path_style must be true or false")),
                            })
                        }
                        other => {
                            return Err(bad(&format!(
                                "unknown parameter '{other}' (endpoint, region, path_style)"
                            )))
                        }
                    }
                }
                let store = s3_store(bucket, &settings)?;
                let prefix = url.path().trim_matches('/').to_string();
                let data_root = if prefix.is_empty() {
                    format!("s3://{bucket}/data")
                } else {
                    format!("s3://{bucket}/{prefix}/data")
                };
                Ok(ObjectStorage {
                    store: Arc::new(store),
                    prefix,
                    local_root: None,
                    display: format!("s3://{bucket}{}", url.path()),
                    data_root,
                    s3: Some(settings),
                })
            }
            other => Err(bad(&format!("unsupported scheme '{other}' (file, s3)"))),
        }
    }

    /// The directory of a `file://` store (canonical); `None` for S3.
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Stores `bytes` under `key`; once this returns the object survives a
    /// crash (S3 acknowledges durable writes; a directory store fsyncs the
    /// file and its directory).
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), ObjectStorageError> {
        let path = self.path(key);
        self.store.put(&path, PutPayload::from(bytes)).await?;
        if let Some(root) = &self.local_root {
            let file = root.join(path.as_ref());
            let root = root.clone();
            tokio::task::spawn_blocking(move || sync_file_and_directories(&file, &root))
                .await
                .map_err(|error| ObjectStorageError::Sync {
                    key: key.to_string(),
                    source: std::io::Error::other(error),
                })?
                .map_err(|source| ObjectStorageError::Sync {
                    key: key.to_string(),
                    source,
                })?;
        }
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, ObjectStorageError> {
        Ok(self.store.get(&self.path(key)).await?.bytes().await?)
    }

    /// Keys (relative to the store's prefix) of every object under `prefix/`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectStorageError> {
        let root = self.path(prefix.trim_end_matches('/'));
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let metas: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&root)).try_collect().await?;
        Ok(metas
            .into_iter()
            .map(|meta| {
                let full = meta.location.to_string();
                full.strip_prefix(&strip).unwrap_or(&full).to_string()
            })
            .collect())
    }

    /// Deletes one object; one that is not there counts as deleted.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectStorageError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_name_the_reason() {
        for (url, reason) in [
            ("gs://b/p", "unsupported scheme 'gs'"),
            ("s3:///p", "names no bucket"),
            ("s3://b/p?colour=red", "unknown parameter 'colour'"),
            (
                "s3://b/p?path_style=maybe",
                "path_style must be true or false",
            ),
            ("file://host/dir", "no host"),
            ("not a url", "relative URL"),
        ] {
            let error = ObjectStorage::open_url(url).err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.contains(reason)),
                "{url}: {error:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_directory_store_round_trips_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}/objects", dir.path().display());
        let objects = ObjectStorage::open_url(&url).expect("open");
        objects
            .put("wf-1/logs/a/0/x.zst", b"hello".to_vec())
            .await
            .expect("put");
        assert_eq!(
            objects
                .get("wf-1/logs/a/0/x.zst")
                .await
                .expect("get")
                .as_ref(),
            b"hello"
        );
        assert!(dir.path().join("objects/wf-1/logs/a/0/x.zst").is_file());
        objects
            .put("wf-1/workflow_spec.yaml", b"spec".to_vec())
            .await
            .expect("put");
        objects
            .put("wf-10/logs/a/0/y.zst", b"other".to_vec())
            .await
            .expect("put");
        let mut keys = objects.list("wf-1/").await.expect("list");
        keys.sort();
        assert_eq!(keys, ["wf-1/logs/a/0/x.zst", "wf-1/workflow_spec.yaml"]);
        objects.delete("wf-1/logs/a/0/x.zst").await.expect("delete");
        objects
            .delete("wf-1/logs/a/0/x.zst")
            .await
            .expect("deleting a missing object is fine");
        assert!(objects.list("wf-1/logs").await.expect("list").is_empty());
        assert!(objects.list("nothing-here").await.expect("list").is_empty());
        assert_eq!(objects.list("wf-10").await.expect("list").len(), 1);
    }
}
