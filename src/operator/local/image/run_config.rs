//! What runs in an image, as Kubernetes decides it: the task's `command`
//! replaces the image's entrypoint, its `args` the image's cmd; the image's
//! environment under the task's; the image's working directory; the
//! image's user, looked up in the image's own `passwd` and `group`.
//!
//! Invariants: pure apart from reading the image's `/etc/passwd` and
//! `/etc/group` (never following a link out of the image); a user that
//! names no entry is refused unless numeric; an image and a task that
//! together name no command are refused, naming both.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The parts of an OCI image config a run uses (`config` of the image's
/// config blob).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ImageRunConfig {
    #[serde(rename = "Entrypoint")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir")]
    pub working_dir: Option<String>,
    #[serde(rename = "User")]
    pub user: Option<String>,
}

/// The image config blob: its `config`, if any.
#[derive(Debug, Default, Deserialize)]
pub struct ImageConfigBlob {
    #[serde(default)]
    pub config: Option<ImageRunConfig>,
}

/// The command line: the task's `command` (already `$(VAR)`-expanded)
/// over the image's entrypoint, its `args` over the image's cmd.
pub fn argv(
    image: &ImageRunConfig,
    command: &[String],
    args: &[String],
) -> Result<Vec<String>, String> {
    let argv: Vec<String> = match (command.is_empty(), args.is_empty()) {
        (false, _) => command.iter().chain(args).cloned().collect(),
        (true, false) => image
            .entrypoint
            .iter()
            .flatten()
            .chain(args)
            .cloned()
            .collect(),
        (true, true) => image
            .entrypoint
            .iter()
            .flatten()
            .chain(image.cmd.iter().flatten())
            .cloned()
            .collect(),
    };
    if argv.is_empty() {
        return Err(
            "the task gives no command and its image names no entrypoint or cmd".to_string(),
        );
    }
    Ok(argv)
}

/// The image's environment as a map (`NAME=value`; a later entry wins).
pub fn environment(image: &ImageRunConfig) -> BTreeMap<String, String> {
    image
        .env
        .iter()
        .flatten()
        .filter_map(|entry| entry.split_once('='))
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// The user a task runs as in its image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// The user's home in the image (`HOME`), `/` when it has none.
    pub home: String,
}

/// One `name:x:id:...` file of the image's `/etc`, as (name, id, gid, home)
/// rows; empty when the image has none. Read without following a link.
fn rows(rootfs: &Path, file: &str) -> Vec<Vec<String>> {
    let path = rootfs.join("etc").join(file);
    let is_regular = std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_file());
    if !is_regular {
        return Vec::new();
    }
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(|line| line.split(':').map(str::to_string).collect())
        .collect()
}

/// The image's `User` (`name`, `uid`, `name:group`, `uid:gid`, empty for
/// root) resolved in its own `passwd` and `group`.
pub fn run_as(rootfs: &Path, user: Option<&str>) -> Result<RunAs, String> {
    let user = user.map(str::trim).unwrap_or("");
    let (user_part, group_part) = match user.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (user, None),
    };
    let passwd = rows(rootfs, "passwd");
    let entry = |matches: &dyn Fn(&Vec<String>) -> bool| {
        passwd
            .iter()
            .find(|row| row.len() >= 6 && matches(row))
            .cloned()
    };
    let (uid, mut gid, home) = if user_part.is_empty() {
        (0, 0, entry(&|row| row[2] == "0").map(|row| row[5].clone()))
    } else if let Ok(uid) = user_part.parse::<u32>() {
        let found = entry(&|row| row[2] == user_part);
        let gid = found
            .as_ref()
            .and_then(|row| row[3].parse().ok())
            .unwrap_or(uid);
        (uid, gid, found.map(|row| row[5].clone()))
    } else {
        let row = entry(&|row| row[0] == user_part).ok_or_else(|| {
            format!("the image's user '{user_part}' is not in the image's /etc/passwd")
        })?;
        let uid = row[2].parse().map_err(|_| {
            format!("the image's /etc/passwd gives user '{user_part}' no numeric id")
        })?;
        (uid, row[3].parse().unwrap_or(uid), Some(row[5].clone()))
    };
    if let Some(group) = group_part.filter(|group| !group.is_empty()) {
        gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => rows(rootfs, "group")
                .iter()
                .find(|row| row.len() >= 3 && row[0] == group)
                .and_then(|row| row[2].parse().ok())
                .ok_or_else(|| {
                    format!("the image's group '{group}' is not in the image's /etc/group")
                })?,
        };
    }
    Ok(RunAs {
        uid,
        gid,
        home: home
            .filter(|home| home.starts_with('/'))
            .unwrap_or_else(|| "/".to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    /// The table of "Define a Command and Arguments for a Container"
    /// (Kubernetes documentation): image Entrypoint and Cmd against the
    /// container's command and args.
    #[test]
    fn commands_follow_kubernetes_table() {
        let image = ImageRunConfig {
            entrypoint: Some(strings(&["/ep-1"])),
            cmd: Some(strings(&["foo", "bar"])),
            ..Default::default()
        };
        let none: [String; 0] = [];
        for (command, args, wanted) in [
            (&none[..], &none[..], strings(&["/ep-1", "foo", "bar"])),
            (&strings(&["/ep-2"])[..], &none[..], strings(&["/ep-2"])),
            (
                &none[..],
                &strings(&["zoo", "boo"])[..],
                strings(&["/ep-1", "zoo", "boo"]),
            ),
            (
                &strings(&["/ep-2"])[..],
                &strings(&["zoo", "boo"])[..],
                strings(&["/ep-2", "zoo", "boo"]),
            ),
        ] {
            assert_eq!(argv(&image, command, args).unwrap(), wanted);
        }
        let bare = ImageRunConfig::default();
        assert!(argv(&bare, &[], &[]).unwrap_err().contains("no command"));
        let cmd_only = ImageRunConfig {
            cmd: Some(strings(&["sh"])),
            ..Default::default()
        };
        assert_eq!(argv(&cmd_only, &[], &[]).unwrap(), strings(&["sh"]));
    }

    #[test]
    fn the_images_environment_is_read_in_order() {
        let image = ImageRunConfig {
            env: Some(strings(&[
                "PATH=/opt/bin:/bin",
                "A=1",
                "A=2",
                "EMPTY=",
                "=x",
                "NOEQ",
            ])),
            ..Default::default()
        };
        let env = environment(&image);
        assert_eq!(env.get("PATH").map(String::as_str), Some("/opt/bin:/bin"));
        assert_eq!(env.get("A").map(String::as_str), Some("2"));
        assert_eq!(env.get("EMPTY").map(String::as_str), Some(""));
        assert_eq!(env.len(), 3);
    }

    #[test]
    fn users_are_found_in_the_images_own_files() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nrunner:x:1234:1234::/home/runner:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(root.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let as_user = |user: Option<&str>| run_as(root.path(), user);
        assert_eq!(
            as_user(None).unwrap(),
            RunAs {
                uid: 0,
                gid: 0,
                home: "/root".into()
            }
        );
        assert_eq!(
            as_user(Some("runner")).unwrap(),
            RunAs {
                uid: 1234,
                gid: 1234,
                home: "/home/runner".into()
            }
        );
        assert_eq!(as_user(Some("runner:staff")).unwrap().gid, 50);
        assert_eq!(
            as_user(Some("4000:4001")).unwrap(),
            RunAs {
                uid: 4000,
                gid: 4001,
                home: "/".into()
            }
        );
        assert!(as_user(Some("ghost"))
            .unwrap_err()
            .contains("not in the image's /etc/passwd"));
        assert!(as_user(Some("runner:nogroup"))
            .unwrap_err()
            .contains("/etc/group"));
        // A passwd that is a link (maybe out of the image) is not read.
        std::fs::remove_file(root.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("etc/passwd")).unwrap();
        assert!(as_user(Some("root")).is_err());
    }
}
