//! Corruption is detected, never served, through the real binary: a copy of
//! a live data directory with one bit flipped, or one page zeroed, in
//! `state.redb` or `raft-log.redb` does not start; the server exits with a
//! message naming the file and what to do, and the pristine copy still
//! starts and serves the same workflow.

mod common;

use common::{DevServer, BINARY};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SPEC: &str = "workflow:\n  name: kept\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [sh, -c, 'echo done']\n";

/// Runs `gantry dev` on `data_dir` expecting it to refuse to start; returns
/// what it wrote to stderr.
fn refused_start(data_dir: &Path) -> String {
    let mut child = Command::new(BINARY)
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("GANTRY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gantry dev");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "a corrupt data directory started");
            let output = child.wait_with_output().expect("output");
            return String::from_utf8_lossy(&output.stderr).into_owned();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "a corrupt data directory kept running; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Where `needle` first occurs in `file`.
fn offset_of(file: &Path, needle: &[u8]) -> usize {
    let bytes = std::fs::read(file).expect("read");
    bytes
        .windows(needle.len())
        .position(|window| window == needle)
        .unwrap_or_else(|| panic!("{needle:?} is not in {}", file.display()))
}

fn damage(file: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(file).expect("read");
    change(&mut bytes);
    std::fs::write(file, bytes).expect("write");
}

#[test]
fn a_flipped_bit_or_a_zeroed_page_in_a_data_directory_stops_the_start() {
    let root = tempfile::tempdir().expect("tempdir");
    let live = root.path().join("live");
    let server = DevServer::start(&live);
    let api = server.client();
    let id = api.submit_ok(SPEC);
    let done = api.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "COMPLETED", "{done}");
    server.stop();

    const PAGE: usize = 4096;
    /// Damages the file's bytes around an offset.
    type Damage = fn(&mut Vec<u8>, usize);
    let cases: [(&str, &str, Damage); 3] = [
        ("state.redb", "a flipped bit", |bytes, at| bytes[at] ^= 0x08),
        ("state.redb", "a zeroed page", |bytes, at| {
            let start = at / PAGE * PAGE;
            let end = (start + PAGE).min(bytes.len());
            bytes[start..end].fill(0);
        }),
        ("raft-log.redb", "a flipped bit", |bytes, at| {
            bytes[at] ^= 0x08
        }),
    ];
    for (n, (file, case, change)) in cases.into_iter().enumerate() {
        let copy = root.path().join(format!("copy-{n}"));
        copy_dir(&live, &copy);
        let path = copy.join("raft").join(file);
        // The workflow's ID is in its rows and in the log's status entries,
        // so the damage hits live data.
        let at = offset_of(&path, b"kept-1");
        damage(&path, |bytes| change(bytes, at));
        let stderr = refused_start(&copy);
        assert!(
            stderr.contains(file) && stderr.contains("corrupt"),
            "{file}, {case}: {stderr}"
        );
    }

    // The undamaged directory still starts and serves the workflow.
    let server = DevServer::start(&live);
    let again = server.client().workflow(&id);
    assert_eq!(again["status"], "COMPLETED", "{again}");
    server.stop();
}
