//! The image cache: blobs by digest, each image's root filesystem unpacked
//! once, shared by every task that runs it.
//!
//! Layout under the cache directory: `blobs/sha256/<hex>` (a blob, checked
//! against its digest when fetched and again when unpacked),
//! `images/<manifest hex>/` (the unpacked root) beside
//! `images/<manifest hex>.json` (its run config), `tags/<reference>` (the
//! manifest a tag resolved to last), and `tmp/` (downloads and unpacks in
//! progress).
//!
//! Invariants: a blob or root reaches its final name only complete and
//! checked (written under `tmp/`, then renamed), so a half-pulled layer is
//! never used, and a SIGKILL leaves only `tmp/` to clear (done at start);
//! one pull of an image runs at a time, others wait for it and share its
//! result; a tag (other than `latest`) or digest already unpacked is used
//! without asking the registry (Kubernetes' `IfNotPresent`) unless it was
//! pulled with credentials: then every use asks the registry with the
//! user's own credentials first, so no user runs another's private image
//! from the cache; a registry
//! named with `--insecure-registry` is reached over unverified TLS, then
//! plain HTTP, any other over verified HTTPS only.

use super::layers::{self, Compression};
use super::run_config::{ImageConfigBlob, ImageRunConfig};
use crate::image_ref::{image_scope, scope_covers};
use gantry_storage::extras::RegistryAuth as LaunchRegistryAuth;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An image ready to run.
#[derive(Clone, Debug)]
pub struct PulledImage {
    /// The unpacked root filesystem (read-only lower layer of a task's root).
    pub rootfs: PathBuf,
    pub config: ImageRunConfig,
    /// `sha256:<hex>` of its manifest.
    pub digest: String,
    /// Whether it was already in the cache.
    pub cached: bool,
}

/// Where pulls go and which registries are insecure.
pub struct ImageStore {
    root: PathBuf,
    insecure: Vec<String>,
    /// One lock per image reference: concurrent pulls of one image wait
    /// for the first.
    pulls: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn client(protocol: ClientProtocol, accept_invalid_certificates: bool) -> Client {
    Client::new(ClientConfig {
        protocol,
        accept_invalid_certificates,
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        platform_resolver: Some(Box::new(oci_client::client::current_platform_resolver)),
        ..ClientConfig::default()
    })
}

fn hex_of(digest: &str) -> Result<&str, String> {
    digest
        .strip_prefix("sha256:")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| format!("digest '{digest}' is not sha256:<64 hex digits>"))
}

/// Progress for the task's log: `[image] ...` lines.
pub type Progress<'a> = &'a (dyn Fn(String) + Send + Sync);

impl ImageStore {
    /// The cache at `root` (made if missing; downloads a SIGKILL left
    /// behind are removed).
    pub fn open(root: &Path, insecure: Vec<String>) -> Result<ImageStore, String> {
        for dir in ["blobs/sha256", "images", "tags"] {
            std::fs::create_dir_all(root.join(dir))
                .map_err(|e| format!("image cache {}: {e}", root.join(dir).display()))?;
        }
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .map_err(|e| format!("image cache {}: {e}", tmp.display()))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| format!("image cache {}: {e}", tmp.display()))?;
        Ok(ImageStore {
            root: root.to_path_buf(),
            insecure,
            pulls: Default::default(),
        })
    }

    fn lock_for(&self, image: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut pulls = self
            .pulls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pulls.entry(image.to_string()).or_default().clone()
    }

    fn temporary(&self, what: &str) -> PathBuf {
        let mut bytes = [0u8; 8];
        let _ = getrandom::fill(&mut bytes);
        self.root
            .join("tmp")
            .join(format!("{what}-{}", hex::encode(bytes)))
    }

    /// The run config and root of an unpacked manifest, if complete.
    fn unpacked(&self, manifest_hex: &str) -> Option<(PathBuf, ImageRunConfig)> {
        let rootfs = self.root.join("images").join(manifest_hex);
        let config = std::fs::read(
            self.root
                .join("images")
                .join(format!("{manifest_hex}.json")),
        )
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())?;
        rootfs.is_dir().then_some((rootfs, config))
    }

    fn tag_file(&self, reference: &Reference) -> PathBuf {
        let name: String = reference
            .whole()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.root.join("tags").join(name)
    }

    /// The image `image`, pulled and unpacked unless the cache holds it.
    pub async fn ensure(
        &self,
        image: &str,
        auths: &[LaunchRegistryAuth],
        progress: Progress<'_>,
    ) -> Result<PulledImage, String> {
        let reference: Reference = image
            .parse()
            .map_err(|error| format!("image '{image}' is not an image reference: {error}"))?;
        let lock = self.lock_for(&reference.whole());
        let _held = lock.lock().await;
        // IfNotPresent: a digest, or a tag other than latest, once unpacked.
        let pinned = reference.digest().map(str::to_string).or_else(|| {
            (reference.tag() != Some("latest") && reference.tag().is_some())
                .then(|| std::fs::read_to_string(self.tag_file(&reference)).ok())
                .flatten()
        });
        if let Some(digest) = pinned {
            let hex = hex_of(digest.trim())?;
            // An image pulled with credentials is checked with the
            // registry for every user (as Kubernetes' AlwaysPullImages), so
            // the cache never hands one user's private image to another.
            let private = self
                .root
                .join("images")
                .join(format!("{hex}.private"))
                .exists();
            if let Some((rootfs, config)) = self.unpacked(hex).filter(|_| !private) {
                return Ok(PulledImage {
                    rootfs,
                    config,
                    digest: digest.trim().to_string(),
                    cached: true,
                });
            }
        }
        let auth = self.auth_for(image, auths);
        let registry = reference.resolve_registry().to_string();
        let insecure = self.insecure.contains(&registry);
        let clients: Vec<Client> = if insecure {
            vec![
                client(ClientProtocol::Https, true),
                client(ClientProtocol::HttpsExcept(vec![registry.clone()]), false),
            ]
        } else {
            vec![client(ClientProtocol::Https, false)]
        };
        let mut last_error = String::new();
        for client in &clients {
            match client.pull_image_manifest(&reference, &auth).await {
                Ok((manifest, digest)) => {
                    let private = !matches!(auth, RegistryAuth::Anonymous);
                    return self
                        .complete(client, &reference, manifest, digest, private, progress)
                        .await;
                }
                Err(error) => last_error = describe(&error),
            }
        }
        Err(format!("image '{image}': {last_error}"))
    }

    /// The user's registry credential that covers `image` (the most
    /// specific first, as the dispatcher sorted them).
    fn auth_for(&self, image: &str, auths: &[LaunchRegistryAuth]) -> RegistryAuth {
        let scope = image_scope(image);
        auths
            .iter()
            .find(|auth| scope_covers(&auth.scope, &scope))
            .map_or(RegistryAuth::Anonymous, |auth| {
                RegistryAuth::Basic(auth.username.clone(), auth.password.clone())
            })
    }

    async fn complete(
        &self,
        client: &Client,
        reference: &Reference,
        manifest: oci_client::manifest::OciImageManifest,
        digest: String,
        private: bool,
        progress: Progress<'_>,
    ) -> Result<PulledImage, String> {
        let image = reference.whole();
        let manifest_hex = hex_of(&digest)?.to_string();
        let remember_tag = || {
            if reference.digest().is_none() {
                let _ = std::fs::write(self.tag_file(reference), &digest);
            }
            if private {
                let marker = self
                    .root
                    .join("images")
                    .join(format!("{manifest_hex}.private"));
                let _ = std::fs::write(marker, b"");
            }
        };
        if let Some((rootfs, config)) = self.unpacked(&manifest_hex) {
            remember_tag();
            return Ok(PulledImage {
                rootfs,
                config,
                digest,
                cached: true,
            });
        }
        let mut config_bytes = Vec::new();
        client
            .pull_blob(reference, &manifest.config, &mut config_bytes)
            .await
            .map_err(|error| format!("image '{image}': its config: {}", describe(&error)))?;
        let config: ImageConfigBlob = serde_json::from_slice(&config_bytes).map_err(|error| {
            format!("image '{image}': its config is not an image config: {error}")
        })?;
        let total = manifest.layers.len();
        let mut fetched_bytes: u64 = 0;
        for (index, layer) in manifest.layers.iter().enumerate() {
            let hex = hex_of(&layer.digest)?;
            let blob = self.root.join("blobs/sha256").join(hex);
            if !blob.is_file() {
                let partial = self.temporary("blob");
                let mut file = tokio::fs::File::create(&partial)
                    .await
                    .map_err(|error| format!("image cache {}: {error}", partial.display()))?;
                let pulled = client.pull_blob(reference, layer, &mut file).await;
                let synced = match pulled {
                    Ok(()) => file.sync_all().await.map_err(|error| error.to_string()),
                    Err(error) => Err(describe(&error)),
                };
                drop(file);
                if let Err(error) = synced {
                    let _ = tokio::fs::remove_file(&partial).await;
                    return Err(format!("image '{image}': layer {}: {error}", layer.digest));
                }
                tokio::fs::rename(&partial, &blob)
                    .await
                    .map_err(|error| format!("image cache {}: {error}", blob.display()))?;
                fetched_bytes += u64::try_from(layer.size).unwrap_or(0);
            }
            progress(format!(
                "[image] pulling {image}: {}/{total} layers, {:.1} MiB",
                index + 1,
                fetched_bytes as f64 / (1024.0 * 1024.0)
            ));
        }
        let layers: Vec<(PathBuf, Compression, String)> = manifest
            .layers
            .iter()
            .map(|layer| {
                Ok((
                    self.root.join("blobs/sha256").join(hex_of(&layer.digest)?),
                    Compression::of_media_type(&layer.media_type)?,
                    layer.digest.clone(),
                ))
            })
            .collect::<Result<_, String>>()?;
        let unpacking = self.temporary("rootfs");
        let run_config = config.config.unwrap_or_default();
        let final_root = self.root.join("images").join(&manifest_hex);
        let unpacked_root = final_root.clone();
        let final_config = self
            .root
            .join("images")
            .join(format!("{manifest_hex}.json"));
        let config_text = serde_json::to_vec(&RunConfigFile::from(&run_config))
            .map_err(|error| error.to_string())?;
        let unpacked = tokio::task::spawn_blocking(move || -> Result<(), String> {
            std::fs::create_dir_all(&unpacking).map_err(|e| e.to_string())?;
            let result = (|| {
                for (blob, compression, digest) in &layers {
                    let file = std::fs::File::open(blob)
                        .map_err(|error| format!("{}: {error}", blob.display()))?;
                    if let Err(error) = layers::apply(
                        &unpacking,
                        std::io::BufReader::new(file),
                        *compression,
                        digest,
                    ) {
                        // A blob that no longer matches is dropped, so the
                        // next pull fetches it again.
                        if error.contains("does not match its digest") {
                            let _ = std::fs::remove_file(blob);
                        }
                        return Err(error);
                    }
                }
                std::fs::write(&final_config, &config_text).map_err(|e| e.to_string())?;
                std::fs::rename(&unpacking, &unpacked_root).map_err(|e| e.to_string())
            })();
            if result.is_err() {
                let _ = std::fs::remove_dir_all(&unpacking);
            }
            result
        })
        .await
        .map_err(|error| format!("unpacking: {error}"))?;
        unpacked.map_err(|error| format!("image '{image}': {error}"))?;
        remember_tag();
        progress(format!("[image] {image} unpacked ({digest})"));
        Ok(PulledImage {
            rootfs: final_root,
            config: run_config,
            digest,
            cached: false,
        })
    }
}

/// The run config as kept beside an unpacked root (the image config's own
/// field names, so it reads back as an [`ImageRunConfig`]).
#[derive(serde::Serialize)]
struct RunConfigFile<'a> {
    #[serde(rename = "Entrypoint")]
    entrypoint: &'a Option<Vec<String>>,
    #[serde(rename = "Cmd")]
    cmd: &'a Option<Vec<String>>,
    #[serde(rename = "Env")]
    env: &'a Option<Vec<String>>,
    #[serde(rename = "WorkingDir")]
    working_dir: &'a Option<String>,
    #[serde(rename = "User")]
    user: &'a Option<String>,
}

impl<'a> From<&'a ImageRunConfig> for RunConfigFile<'a> {
    fn from(config: &'a ImageRunConfig) -> Self {
        RunConfigFile {
            entrypoint: &config.entrypoint,
            cmd: &config.cmd,
            env: &config.env,
            working_dir: &config.working_dir,
            user: &config.user,
        }
    }
}

/// A registry error in a sentence (the innermost cause included).
fn describe(error: &oci_client::errors::OciDistributionError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_hex_only() {
        assert!(hex_of(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(hex_of("sha256:../../etc").is_err());
        assert!(hex_of(&format!("sha512:{}", "a".repeat(64))).is_err());
    }

    #[test]
    fn a_run_config_reads_back_as_written() {
        let config = ImageRunConfig {
            entrypoint: Some(vec!["/bin/sh".into()]),
            cmd: None,
            env: Some(vec!["A=1".into()]),
            working_dir: Some("/w".into()),
            user: Some("runner".into()),
        };
        let text = serde_json::to_vec(&RunConfigFile::from(&config)).unwrap();
        assert_eq!(
            serde_json::from_slice::<ImageRunConfig>(&text).unwrap(),
            config
        );
    }
}
