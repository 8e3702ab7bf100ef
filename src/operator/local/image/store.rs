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
//! Each unpacked image has `images/<hex>.meta` (its layers and size) and
//! `images/<hex>.used` (touched at every use). Past the cache's size limit,
//! the least recently used images no run is using are evicted after a
//! pull, with the blobs no other image needs.
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

/// A run's hold on an unpacked image: while one exists the image is not
/// evicted.
#[derive(Debug)]
pub struct Lease {
    hex: String,
    in_use: Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = in_use.get_mut(&self.hex) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_use.remove(&self.hex);
            }
        }
    }
}

/// An unpacked image's layers and size on disk (the unpacked root; blobs
/// are counted apart, once each).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Meta {
    layers: Vec<String>,
    bytes: u64,
}

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
    /// Keeps the image in the cache while the run lasts.
    pub lease: Arc<Lease>,
}

/// Where pulls go and which registries are insecure.
pub struct ImageStore {
    root: PathBuf,
    insecure: Vec<String>,
    /// (registry, mirror): images of the registry are asked of the mirror
    /// first (air-gapped sites).
    mirrors: Vec<(String, String)>,
    /// The cache's size limit in bytes (blobs and unpacked roots).
    max_bytes: Option<u64>,
    /// Runs holding each image (manifest hex).
    in_use: Arc<std::sync::Mutex<HashMap<String, usize>>>,
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
    pub fn open(
        root: &Path,
        insecure: Vec<String>,
        mirrors: Vec<(String, String)>,
        max_bytes: Option<u64>,
    ) -> Result<ImageStore, String> {
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
            mirrors,
            max_bytes,
            in_use: Default::default(),
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

    /// A lease on `hex`, taken before the image is looked at, so eviction
    /// (which skips leased images) cannot remove it under the run.
    fn lease(&self, hex: &str) -> Arc<Lease> {
        let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        *in_use.entry(hex.to_string()).or_default() += 1;
        Arc::new(Lease {
            hex: hex.to_string(),
            in_use: self.in_use.clone(),
        })
    }

    /// The image `hex`, leased and marked used now, if unpacked.
    fn use_unpacked(&self, hex: &str, digest: &str, cached: bool) -> Option<PulledImage> {
        let lease = self.lease(hex);
        let (rootfs, config) = self.unpacked(hex)?;
        let _ = std::fs::write(self.root.join("images").join(format!("{hex}.used")), b"");
        Some(PulledImage {
            rootfs,
            config,
            digest: digest.to_string(),
            cached,
            lease,
        })
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
            if !private {
                if let Some(image) = self.use_unpacked(hex, digest.trim(), true) {
                    return Ok(image);
                }
            }
        }
        let mut errors = Vec::new();
        for source in self.sources(&reference) {
            let source_name = source.whole();
            let auth = self.auth_for(&source_name, auths);
            let registry = source.resolve_registry().to_string();
            let clients: Vec<Client> = if self.insecure.contains(&registry) {
                vec![
                    client(ClientProtocol::Https, true),
                    client(ClientProtocol::HttpsExcept(vec![registry.clone()]), false),
                ]
            } else {
                vec![client(ClientProtocol::Https, false)]
            };
            let mut last_error = String::new();
            for client in &clients {
                match client.pull_image_manifest(&source, &auth).await {
                    Ok((manifest, digest)) => {
                        if source_name != reference.whole() {
                            progress(format!("[image] {image} from the mirror {registry}"));
                        }
                        let private = !matches!(auth, RegistryAuth::Anonymous);
                        return self
                            .complete(
                                client,
                                (&source, &reference),
                                manifest,
                                digest,
                                private,
                                progress,
                            )
                            .await;
                    }
                    Err(error) => last_error = describe(&error),
                }
            }
            errors.push(if source_name == reference.whole() {
                last_error
            } else {
                format!("mirror {registry}: {last_error}")
            });
        }
        Err(format!("image '{image}': {}", errors.join("; ")))
    }

    /// Where `reference` is asked for: its registry's mirrors first, then
    /// the registry itself.
    fn sources(&self, reference: &Reference) -> Vec<Reference> {
        let registry = reference.registry();
        let mut sources: Vec<Reference> = self
            .mirrors
            .iter()
            .filter(|(of, _)| of == registry || of == reference.resolve_registry())
            .map(|(_, mirror)| {
                let repository = reference.repository().to_string();
                match (reference.tag(), reference.digest()) {
                    (_, Some(digest)) => {
                        Reference::with_digest(mirror.clone(), repository, digest.to_string())
                    }
                    (tag, None) => Reference::with_tag(
                        mirror.clone(),
                        repository,
                        tag.unwrap_or("latest").to_string(),
                    ),
                }
            })
            .collect();
        sources.push(reference.clone());
        sources
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
        (source, reference): (&Reference, &Reference),
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
        if let Some(image) = self.use_unpacked(&manifest_hex, &digest, true) {
            remember_tag();
            return Ok(image);
        }
        let mut config_bytes = Vec::new();
        client
            .pull_blob(source, &manifest.config, &mut config_bytes)
            .await
            .map_err(|error| format!("image '{image}': its config: {}", describe(&error)))?;
        let config: ImageConfigBlob = serde_json::from_slice(&config_bytes).map_err(|error| {
            format!("image '{image}': its config is not an image config: {error}")
        })?;
        let total = manifest.layers.len();
        progress(format!("[image] pulling {image}: 0/{total} layers"));
        let mut fetched_bytes: u64 = 0;
        for (index, layer) in manifest.layers.iter().enumerate() {
            let hex = hex_of(&layer.digest)?;
            let blob = self.root.join("blobs/sha256").join(hex);
            if !blob.is_file() {
                let partial = self.temporary("blob");
                let mut file = tokio::fs::File::create(&partial)
                    .await
                    .map_err(|error| format!("image cache {}: {error}", partial.display()))?;
                let pulled = client.pull_blob(source, layer, &mut file).await;
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
        let final_meta = self
            .root
            .join("images")
            .join(format!("{manifest_hex}.meta"));
        let layer_digests: Vec<String> = manifest.layers.iter().map(|l| l.digest.clone()).collect();
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
                let meta = Meta {
                    layers: layer_digests,
                    bytes: tree_bytes(&unpacking),
                };
                std::fs::write(
                    &final_meta,
                    serde_json::to_vec(&meta).map_err(|e| e.to_string())?,
                )
                .map_err(|e| e.to_string())?;
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
        let pulled = self
            .use_unpacked(&manifest_hex, &digest, false)
            .ok_or_else(|| {
                format!(
                    "image '{image}': unpacked, then gone from {}",
                    final_root.display()
                )
            })?;
        if let Some(max) = self.max_bytes {
            for evicted in self.evict(max) {
                progress(format!(
                    "[image] evicted {evicted} from the cache (over its {max} byte limit)"
                ));
            }
        }
        Ok(pulled)
    }

    /// Evicts the least recently used images no run holds until the cache
    /// is within `max` bytes; the manifest digests evicted.
    fn evict(&self, max: u64) -> Vec<String> {
        let images = self.root.join("images");
        let blobs = self.root.join("blobs/sha256");
        let mut known: Vec<(String, Meta, std::time::SystemTime)> = std::fs::read_dir(&images)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let hex = name.strip_suffix(".meta")?.to_string();
                let meta: Meta = serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()?;
                let used = std::fs::metadata(images.join(format!("{hex}.used")))
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                Some((hex, meta, used))
            })
            .collect();
        let blob_size = |digest: &str| -> u64 {
            hex_of(digest)
                .ok()
                .and_then(|hex| std::fs::metadata(blobs.join(hex)).ok())
                .map_or(0, |meta| meta.len())
        };
        let all_blobs: std::collections::BTreeSet<String> = known
            .iter()
            .flat_map(|(_, meta, _)| meta.layers.clone())
            .collect();
        let mut total: u64 = known.iter().map(|(_, meta, _)| meta.bytes).sum::<u64>()
            + all_blobs
                .iter()
                .map(|digest| blob_size(digest))
                .sum::<u64>();
        known.sort_by_key(|(_, _, used)| *used);
        let mut evicted = Vec::new();
        let mut kept: Vec<usize> = Vec::new();
        for index in 0..known.len() {
            if total <= max {
                kept.extend(index..known.len());
                break;
            }
            let hex = known[index].0.clone();
            // Moved aside under the lease table's lock: a run leasing it
            // now finds it gone and pulls it again, never half-deleted.
            let aside = {
                let in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
                if in_use.get(&hex).copied().unwrap_or(0) > 0 {
                    kept.push(index);
                    continue;
                }
                let aside = self.temporary("evicted");
                let moved = std::fs::rename(images.join(&hex), &aside).is_ok();
                for suffix in ["meta", "json", "private", "used"] {
                    let _ = std::fs::remove_file(images.join(format!("{hex}.{suffix}")));
                }
                moved.then_some(aside)
            };
            if let Some(aside) = aside {
                let _ = std::fs::remove_dir_all(aside);
            }
            total = total.saturating_sub(known[index].1.bytes);
            // Blobs no other remaining image needs.
            let needed: std::collections::BTreeSet<&String> = known
                .iter()
                .enumerate()
                .filter(|(other, _)| *other > index || kept.contains(other))
                .flat_map(|(_, (_, meta, _))| meta.layers.iter())
                .collect();
            for digest in known[index].1.layers.iter().filter(|d| !needed.contains(d)) {
                let size = blob_size(digest);
                if let Ok(hex) = hex_of(digest) {
                    if std::fs::remove_file(blobs.join(hex)).is_ok() {
                        total = total.saturating_sub(size);
                    }
                }
            }
            self.forget_tags(&format!("sha256:{hex}"));
            evicted.push(format!("sha256:{hex}"));
        }
        evicted
    }

    /// Removes the tags that resolve to `digest`.
    fn forget_tags(&self, digest: &str) {
        for entry in std::fs::read_dir(self.root.join("tags"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::read_to_string(entry.path()).is_ok_and(|text| text.trim() == digest) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
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

/// Bytes of the files under `dir` (links counted as themselves).
fn tree_bytes(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
        .sum()
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
    fn what_a_kill_left_half_done_is_cleared_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        ImageStore::open(&root, Vec::new(), Vec::new(), None).unwrap();
        // A download and an unpack cut short by a SIGKILL.
        std::fs::write(root.join("tmp/blob-0011"), b"half a layer").unwrap();
        std::fs::create_dir_all(root.join("tmp/rootfs-0022/bin")).unwrap();
        let store = ImageStore::open(&root, Vec::new(), Vec::new(), None).unwrap();
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        // Nothing under the final names, so nothing half-made is used.
        assert!(store.unpacked(&"a".repeat(64)).is_none());
    }

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
