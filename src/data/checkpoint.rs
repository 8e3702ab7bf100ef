//! OSMO's `checkpoint`: a directory of a running task uploaded every
//! `frequency` and once more after its command exits.
//!
//! Invariants (OSMO's `osmo-ctrl`): the wait is counted from the end of
//! one upload to the start of the next, so uploads of one checkpoint never
//! overlap; a checkpoint upload that fails is said in the task's log and
//! never fails the task (the outputs' upload decides that); each upload
//! moves the files below the directory whose relative path matches the
//! regex, skipping symlinks, as an output upload does.

use super::beneath::regular_files;
use super::task::compile;
use super::task::TaskData;
use super::transfer;
use super::{DataError, Say};
use gantry_storage::extras::CheckpointPlan;
use std::convert::Infallible;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

/// Where a checkpoint's `path` is read.
#[derive(Clone, Copy)]
pub enum TaskFiles<'a> {
    /// In this process's own file system (the in-pod runtime runs in the
    /// task's container).
    Own,
    /// In a running task's file system, which this process does not
    /// trust: the function opens the directory at a checkpoint's `path`
    /// with every lookup confined to that file system (`beneath`), and
    /// the walk below it is too.
    Beneath(&'a (dyn Fn(&str) -> std::io::Result<OwnedFd> + Sync)),
}

/// Uploads every checkpoint each `frequency_seconds`, forever (never
/// ends, with or without checkpoints): the caller drops the future once
/// the command has exited.
pub async fn checkpoint_periodically(
    data: &TaskData,
    checkpoints: &[CheckpointPlan],
    files: TaskFiles<'_>,
    say: Say<'_>,
) -> Infallible {
    let loops = checkpoints.iter().map(|checkpoint| async move {
        let every = Duration::from_secs(checkpoint.frequency_seconds.max(1));
        loop {
            tokio::time::sleep(every).await;
            upload_checkpoint(data, checkpoint, files, say).await;
        }
    });
    futures::future::join_all(loops).await;
    std::future::pending().await
}

/// The last upload of every checkpoint, after the command exited.
pub async fn checkpoint_finally(
    data: &TaskData,
    checkpoints: &[CheckpointPlan],
    files: TaskFiles<'_>,
    say: Say<'_>,
) {
    for checkpoint in checkpoints {
        upload_checkpoint(data, checkpoint, files, say).await;
    }
}

/// One upload of `checkpoint`; a failure is said, not returned.
async fn upload_checkpoint(
    data: &TaskData,
    checkpoint: &CheckpointPlan,
    files: TaskFiles<'_>,
    say: Say<'_>,
) {
    let label = format!("[checkpoint] {} to {}", checkpoint.path, checkpoint.url);
    let dir = Path::new(&checkpoint.path);
    let result = async {
        let regex = compile(checkpoint.regex.as_deref()).map_err(|e| e.to_string())?;
        let location = data
            .store_for(&checkpoint.url)
            .open(&checkpoint.url)
            .map_err(|e| e.to_string())?;
        let moved = match files {
            TaskFiles::Own => transfer::upload(dir, &location, regex.as_ref(), &label, say).await,
            TaskFiles::Beneath(open_dir) => {
                async {
                    let cannot_read = |e| DataError::io("cannot read", dir, e);
                    let top = open_dir(&checkpoint.path).map_err(cannot_read)?;
                    let tree = tokio::task::spawn_blocking(move || regular_files(top))
                        .await
                        .map_err(|e| cannot_read(std::io::Error::other(e)))?
                        .map_err(cannot_read)?;
                    transfer::upload_tree(tree, dir, &location, regex.as_ref(), (&label, say)).await
                }
                .await
            }
        };
        moved.map_err(|e| e.to_string())
    }
    .await;
    if let Err(error) = result {
        say(format!("{label} failed: {error}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn checkpoint(path: &Path, url: &str, regex: Option<&str>) -> CheckpointPlan {
        CheckpointPlan {
            path: path.display().to_string(),
            url: url.into(),
            frequency_seconds: 1,
            regex: regex.map(str::to_string),
        }
    }

    #[tokio::test]
    async fn uploads_repeat_while_the_command_runs_and_a_failure_is_only_said() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (work, store_dir) = (dir.path().join("ckpt"), dir.path().join("store"));
        std::fs::create_dir_all(work.join("sub")).expect("mkdir");
        std::fs::create_dir_all(&store_dir).expect("mkdir");
        std::fs::write(work.join("sub/epoch-1.pth"), b"weights").expect("write");
        std::fs::write(work.join("notes.txt"), b"skip me").expect("write");
        let storage =
            crate::object_storage::ObjectStorage::open(None, &store_dir).expect("local storage");
        let store = crate::data::DataStore::default_in(&storage);
        let url = store.task_url("wf-1", "ckpt");
        let data = TaskData {
            store: store.clone(),
            ..TaskData::default()
        };
        let said = Mutex::new(Vec::<String>::new());
        let say = |line: String| said.lock().expect("lock").push(line);
        let checkpoints = [
            checkpoint(&work, &url, Some(r".*\.pth")),
            checkpoint(Path::new("/nonexistent-dir"), &url, None),
        ];
        // Two periods pass while "the command runs".
        let _ = tokio::time::timeout(
            Duration::from_millis(2_500),
            checkpoint_periodically(&data, &checkpoints, TaskFiles::Own, &say),
        )
        .await;
        std::fs::write(work.join("sub/epoch-2.pth"), b"weights 2").expect("write");
        checkpoint_finally(&data, &checkpoints[..1], TaskFiles::Own, &say).await;
        let said = said.into_inner().expect("lock");
        let uploads = said
            .iter()
            .filter(|line| line.contains("1 files") || line.contains("2 files"))
            .count();
        assert!(uploads >= 3, "two periodic uploads and the last: {said:#?}");
        assert!(
            said.iter()
                .any(|line| line.contains("/nonexistent-dir") && line.contains("failed")),
            "{said:#?}"
        );
        let stored: Vec<String> = walkdir::WalkDir::new(&store_dir)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_file())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(stored.contains(&"epoch-1.pth".to_string()), "{stored:?}");
        assert!(stored.contains(&"epoch-2.pth".to_string()), "{stored:?}");
        assert!(!stored.contains(&"notes.txt".to_string()), "{stored:?}");
    }
}
