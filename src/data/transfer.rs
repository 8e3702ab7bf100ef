//! Moves one prefix to or from one local directory.
//!
//! A regex keeps only the files whose path relative to the prefix (or
//! directory) matches, as OSMO's `regex` on inputs and outputs does.
//! Progress goes to the caller's [`Say`] at most once per
//! [`PROGRESS_INTERVAL`], then one summary line (files, bytes, seconds).
//!
//! Invariants: a download writes only below its target directory (each
//! key's parts are checked; files are created new, never through an
//! existing link); an upload reads only regular files below the output
//! directory (symlinks are skipped and counted, never followed); large files
//! are streamed, never held whole in memory.

use super::beneath::TreeFile;
use super::store::Location;
use super::{DataError, Say};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, PutPayload, WriteMultipart};
use regex::Regex;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Files up to this size are uploaded in one request; larger ones in parts
/// of this size.
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT_MAX: usize = 4;
const READ_BUFFER_BYTES: usize = 1024 * 1024;

/// What one transfer moved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transferred {
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Symlinks in an output directory, not uploaded.
    pub skipped_links: u64,
}

/// Counts and rate-limits progress lines of one transfer.
struct Progress<'a> {
    say: Say<'a>,
    label: &'a str,
    started: Instant,
    last_said: Instant,
    files: u64,
    bytes: u64,
}

impl<'a> Progress<'a> {
    fn new(say: Say<'a>, label: &'a str) -> Progress<'a> {
        let now = Instant::now();
        Progress {
            say,
            label,
            started: now,
            last_said: now,
            files: 0,
            bytes: 0,
        }
    }

    fn add_bytes(&mut self, bytes: u64) {
        self.bytes += bytes;
        if self.last_said.elapsed() >= PROGRESS_INTERVAL {
            self.last_said = Instant::now();
            (self.say)(format!(
                "{}: {} files, {} so far",
                self.label,
                self.files,
                human_bytes(self.bytes)
            ));
        }
    }

    fn finish(self, skipped_links: u64) -> Transferred {
        let seconds = self.started.elapsed().as_secs_f64();
        let links = if skipped_links > 0 {
            format!(" ({skipped_links} symlinks skipped)")
        } else {
            String::new()
        };
        (self.say)(format!(
            "{}: {} files, {} in {seconds:.2} s{links}",
            self.label,
            self.files,
            human_bytes(self.bytes)
        ));
        Transferred {
            files: self.files,
            bytes: self.bytes,
            seconds,
            skipped_links,
        }
    }
}

/// `1.2 MiB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn store_error(location: &Location) -> impl Fn(object_store::Error) -> DataError + '_ {
    move |source| DataError::Store {
        url: location.url.clone(),
        source,
        note: location.credential_note.clone(),
    }
}

/// Every object below `location`, or the object it names when it names one
/// (a URL may point at a single file). `None` when nothing is there.
async fn list(location: &Location) -> Result<Option<Vec<ObjectMeta>>, DataError> {
    let mut objects = Vec::new();
    let mut listing = location.store.list(Some(&location.prefix));
    while let Some(meta) = listing.next().await {
        objects.push(meta.map_err(store_error(location))?);
    }
    if !objects.is_empty() {
        return Ok(Some(objects));
    }
    if location.prefix.as_ref().is_empty() {
        return Ok(None);
    }
    match location.store.head(&location.prefix).await {
        Ok(meta) => Ok(Some(vec![meta])),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(source) => Err(store_error(location)(source)),
    }
}

/// The key's path relative to the prefix, as checked local path parts.
fn relative_parts(location: &Location, key: &ObjectPath) -> Result<Vec<String>, DataError> {
    let unsafe_key = || DataError::UnsafeKey {
        url: location.url.clone(),
        key: key.to_string(),
    };
    let parts: Vec<String> = if key == &location.prefix {
        // A single object named by the URL lands under its own name.
        key.filename()
            .map(|name| vec![name.to_string()])
            .ok_or_else(unsafe_key)?
    } else {
        key.prefix_match(&location.prefix)
            .ok_or_else(unsafe_key)?
            .map(|part| part.as_ref().to_string())
            .collect()
    };
    let safe = !parts.is_empty()
        && parts.iter().all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && !part.contains('/')
                && !part.contains('\0')
        });
    if safe {
        Ok(parts)
    } else {
        Err(unsafe_key())
    }
}

/// Downloads every object below `location` whose relative path matches
/// `regex` (all without one) into `dir`. `skip` names relative paths that
/// are bookkeeping, not data. Fails with [`DataError::Missing`] when
/// nothing at all is stored there.
pub async fn download(
    location: &Location,
    dir: &Path,
    regex: Option<&Regex>,
    skip: &[&str],
    label: &str,
    say: Say<'_>,
) -> Result<Transferred, DataError> {
    let objects = list(location).await?.ok_or_else(|| DataError::Missing {
        url: location.url.clone(),
    })?;
    let mut progress = Progress::new(say, label);
    for meta in objects {
        let parts = relative_parts(location, &meta.location)?;
        let relative = parts.join("/");
        if skip.contains(&relative.as_str()) || regex.is_some_and(|r| !r.is_match(&relative)) {
            continue;
        }
        let target: PathBuf = parts.iter().fold(dir.to_path_buf(), |p, part| p.join(part));
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| DataError::io("cannot create", parent, e))?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .await
            .map_err(|e| DataError::io("cannot create", &target, e))?;
        let mut stream = location
            .store
            .get(&meta.location)
            .await
            .map_err(store_error(location))?
            .into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(store_error(location))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| DataError::io("cannot write", &target, e))?;
            progress.add_bytes(chunk.len() as u64);
        }
        file.flush()
            .await
            .map_err(|e| DataError::io("cannot write", &target, e))?;
        progress.files += 1;
    }
    Ok(progress.finish(0))
}

/// Uploads the regular files below `dir` whose relative path matches
/// `regex` (all without one) to `location`.
pub async fn upload(
    dir: &Path,
    location: &Location,
    regex: Option<&Regex>,
    label: &str,
    say: Say<'_>,
) -> Result<Transferred, DataError> {
    let mut progress = Progress::new(say, label);
    let mut skipped_links = 0;
    // walkdir does not follow links by default: a link to a directory is
    // an entry of its own, never descended into.
    for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|error| {
            let path = error.path().unwrap_or(dir).to_path_buf();
            DataError::io("cannot list", path, error.into())
        })?;
        let file_type = entry.file_type();
        if file_type.is_symlink() {
            skipped_links += 1;
            continue;
        }
        if !file_type.is_file() {
            continue;
        }
        let relative = entry
            .path()
            .strip_prefix(dir)
            .ok()
            .and_then(Path::to_str)
            .ok_or_else(|| {
                DataError::io(
                    "cannot name",
                    entry.path(),
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
                )
            })?
            .to_string();
        if regex.is_some_and(|r| !r.is_match(&relative)) {
            continue;
        }
        let key = relative
            .split('/')
            .fold(location.prefix.clone(), |key, part| key.child(part));
        put_file(location, entry.path(), &key, &mut progress).await?;
        progress.files += 1;
    }
    Ok(progress.finish(skipped_links))
}

/// Writes a small bookkeeping object `name` directly below `location`.
pub async fn put_marker(location: &Location, name: &str, body: Vec<u8>) -> Result<(), DataError> {
    location
        .store
        .put(&location.prefix.child(name), PutPayload::from(body))
        .await
        .map_err(store_error(location))?;
    Ok(())
}

async fn put_file(
    location: &Location,
    path: &Path,
    key: &ObjectPath,
    progress: &mut Progress<'_>,
) -> Result<(), DataError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| DataError::io("cannot open", path, e))?;
    put_open_file(location, file, path, key, progress).await
}

/// Uploads the files of a tree read with `beneath` (a running task's, not
/// trusted) whose relative path matches `regex` to `location`; `dir`
/// names the tree in messages.
pub async fn upload_tree(
    (files, skipped_links): (Vec<TreeFile>, u64),
    dir: &Path,
    location: &Location,
    regex: Option<&Regex>,
    (label, say): (&str, Say<'_>),
) -> Result<Transferred, DataError> {
    let mut progress = Progress::new(say, label);
    for file in files {
        if regex.is_some_and(|r| !r.is_match(&file.relative)) {
            continue;
        }
        let path = dir.join(&file.relative);
        let opened = file
            .open()
            .map_err(|e| DataError::io("cannot open", &path, e))?;
        let key = file
            .relative
            .split('/')
            .fold(location.prefix.clone(), |key, part| key.child(part));
        put_open_file(
            location,
            tokio::fs::File::from_std(opened),
            &path,
            &key,
            &mut progress,
        )
        .await?;
        progress.files += 1;
    }
    Ok(progress.finish(skipped_links))
}

/// Uploads an open file (`path` names it in messages).
async fn put_open_file(
    location: &Location,
    mut file: tokio::fs::File,
    path: &Path,
    key: &ObjectPath,
    progress: &mut Progress<'_>,
) -> Result<(), DataError> {
    let size = file
        .metadata()
        .await
        .map_err(|e| DataError::io("cannot inspect", path, e))?
        .len();
    if size <= PART_BYTES as u64 {
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes)
            .await
            .map_err(|e| DataError::io("cannot read", path, e))?;
        let length = bytes.len() as u64;
        location
            .store
            .put(key, PutPayload::from(bytes))
            .await
            .map_err(store_error(location))?;
        progress.add_bytes(length);
        return Ok(());
    }
    let upload = location
        .store
        .put_multipart(key)
        .await
        .map_err(store_error(location))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    loop {
        let read = match file.read(&mut buffer).await {
            Ok(read) => read,
            Err(error) => {
                let _ = writer.abort().await;
                return Err(DataError::io("cannot read", path, error));
            }
        };
        if read == 0 {
            break;
        }
        if let Err(source) = writer.wait_for_capacity(PARTS_IN_FLIGHT_MAX).await {
            let _ = writer.abort().await;
            return Err(store_error(location)(source));
        }
        writer.write(&buffer[..read]);
        progress.add_bytes(read as u64);
    }
    writer.finish().await.map_err(store_error(location))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DataStore;
    use std::sync::Mutex;

    fn lines() -> (Mutex<Vec<String>>,) {
        (Mutex::new(Vec::new()),)
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[tokio::test]
    async fn a_directory_round_trips_through_a_file_store_with_filters() {
        let temp = tempfile::tempdir().expect("tempdir");
        let out = temp.path().join("out");
        std::fs::create_dir_all(out.join("deep/er")).expect("dirs");
        std::fs::write(out.join("a.csv"), b"1,2\n").expect("write");
        std::fs::write(out.join("deep/er/b.csv"), b"3,4\n").expect("write");
        std::fs::write(out.join("notes.txt"), b"skip me").expect("write");
        // A big file goes up in parts.
        let big = vec![7u8; PART_BYTES * 2 + 5];
        std::fs::write(out.join("big.bin"), &big).expect("write");
        std::os::unix::fs::symlink("/etc/hostname", out.join("link")).expect("link");
        let store = DataStore {
            root: format!("file://{}/store", temp.path().display()),
            ..DataStore::default()
        };
        let location = store.open(&store.task_url("wf-1", "a")).expect("open");
        let (said,) = lines();
        let say = |line: String| said.lock().expect("lock").push(line);
        let up = upload(
            &out,
            &location,
            Some(&Regex::new(r"\.(csv|bin)$").expect("regex")),
            "[upload] output",
            &say,
        )
        .await
        .expect("upload");
        assert_eq!((up.files, up.skipped_links), (3, 1));
        assert_eq!(up.bytes, 8 + big.len() as u64);
        assert!(temp.path().join("store/wf-1/a/deep/er/b.csv").is_file());
        assert!(!temp.path().join("store/wf-1/a/notes.txt").exists());
        assert!(!temp.path().join("store/wf-1/a/link").exists());
        let summary = said
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .unwrap_or_default();
        assert!(
            summary.starts_with("[upload] output: 3 files, 16.0 MiB in ")
                && summary.ends_with("(1 symlinks skipped)"),
            "{summary}"
        );

        let input = temp.path().join("in");
        let down = download(
            &location,
            &input,
            Some(&Regex::new(r"^deep/").expect("regex")),
            &[],
            "[download] input 0",
            &say,
        )
        .await
        .expect("download");
        assert_eq!((down.files, down.bytes), (1, 4));
        assert_eq!(
            std::fs::read(input.join("deep/er/b.csv")).expect("read"),
            b"3,4\n"
        );
        assert!(!input.join("a.csv").exists());

        let missing = store.open(&store.task_url("wf-1", "never")).expect("open");
        let error = download(&missing, &input, None, &[], "x", &say)
            .await
            .expect_err("missing");
        assert!(matches!(error, DataError::Missing { .. }), "{error}");

        // A URL naming one object downloads that object.
        let single = store
            .open(&format!("{}/a.csv", store.task_url("wf-1", "a")))
            .expect("open");
        let one = temp.path().join("one");
        let got = download(&single, &one, None, &[], "x", &say)
            .await
            .expect("download");
        assert_eq!(got.files, 1);
        assert!(one.join("a.csv").is_file());
    }
}
