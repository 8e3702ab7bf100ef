//! The `/etc` a task sees: written per task, never the host's.
//!
//! Invariants:
//! - Generated: `passwd` and `group` (root, the task user, nobody), `hosts`
//!   (localhost and the sandbox's host name), `nsswitch.conf` (files, then DNS), `resolv.conf` (the
//!   host's name servers and search list, nothing else), `hostname`.
//! - From the host, read-only and only when present: [`HOST_ENTRIES`],
//!   things programs need that hold no secret (CA certificates, the
//!   loader's cache, the alternatives links of `/usr/bin`, time zone, OS
//!   release, service and protocol names). Never `shadow`, `gshadow`,
//!   `sudoers`, `ssl/private` or any key.
//! - The mount point of each host entry exists in the generated tree, so
//!   bubblewrap can bind it over a read-only `/etc`.

use super::error::ExecError;
use std::fs;
use std::path::Path;

/// The task's user and group id inside the sandbox.
pub const TASK_UID: u32 = 1000;
pub const TASK_GID: u32 = 1000;
pub const TASK_USER: &str = "task";

/// Host paths under `/etc` a task may read.
pub const HOST_ENTRIES: [&str; 13] = [
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/pki/tls/certs",
    "/etc/pki/ca-trust",
    "/etc/ca-certificates",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/os-release",
    "/etc/services",
    "/etc/protocols",
];

/// Writes the generated files into `dir` (the task's `/etc` on the host)
/// and returns the host entries to bind over it, as (host, sandbox) paths.
/// Blocking.
pub fn write(dir: &Path, hostname: &str) -> Result<Vec<(String, String)>, ExecError> {
    let files = [
        (
            "passwd",
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\n\
                 {TASK_USER}:x:{TASK_UID}:{TASK_GID}:{TASK_USER}:/tmp:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        (
            "group",
            format!("root:x:0:\n{TASK_USER}:x:{TASK_GID}:\nnogroup:x:65534:\n"),
        ),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\n\
             protocols: files\nservices: files\n"
                .to_string(),
        ),
        ("resolv.conf", resolv_conf()),
        ("hostname", format!("{hostname}\n")),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|e| ExecError::io("cannot write", &path, e))?;
    }
    let mut binds = Vec::new();
    for entry in HOST_ENTRIES {
        let host = Path::new(entry);
        // Follow links: the target is what the task reads (a link into /usr
        // would do as well, but one into /etc would dangle).
        let Ok(meta) = fs::metadata(host) else {
            continue;
        };
        let relative = entry.trim_start_matches("/etc/");
        let point = dir.join(relative);
        if let Some(parent) = point.parent() {
            fs::create_dir_all(parent).map_err(|e| ExecError::io("cannot create", parent, e))?;
        }
        let made = if meta.is_dir() {
            fs::create_dir_all(&point)
        } else {
            fs::write(&point, b"")
        };
        made.map_err(|e| ExecError::io("cannot create", &point, e))?;
        binds.push((entry.to_string(), entry.to_string()));
    }
    Ok(binds)
}

/// Only `nameserver`, `search`, `domain` and `options` lines of the host's.
fn resolv_conf() -> String {
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    host.lines()
        .filter(|line| {
            let word = line.split_whitespace().next().unwrap_or("");
            matches!(word, "nameserver" | "search" | "domain" | "options")
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_secret_is_ever_bound() {
        for entry in HOST_ENTRIES {
            for secret in ["shadow", "sudoers", "private", "key", "gantry"] {
                assert!(!entry.contains(secret), "{entry}");
            }
        }
    }

    #[test]
    fn generated_files_name_the_task_user() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let binds = write(dir.path(), "train").unwrap_or_default();
        let passwd = fs::read_to_string(dir.path().join("passwd")).unwrap_or_default();
        assert!(passwd.contains("task:x:1000:1000:"), "{passwd}");
        assert!(!dir.path().join("shadow").exists());
        for (host, _) in binds {
            let point = dir.path().join(host.trim_start_matches("/etc/"));
            assert!(point.exists(), "{host} has its mount point");
        }
    }
}
