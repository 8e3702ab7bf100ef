//! Disk full: a one-node `gantry server --bootstrap` whose data directory
//! lives on a small tmpfs. Submits of large specs go on until the disk is
//! full; a refused submit must be an error answer (5xx, JSON message), the
//! process must keep serving reads with everything acknowledged intact,
//! must take writes again once space is freed, and must come back after a
//! SIGKILL with every acknowledged workflow (no corruption).
//!
//! Needs root (mount); skips with a message when mounting is not permitted.

mod common;

use common::{DevServer, Https};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TMPFS_SIZE: &str = "16m";
const FILLER_BYTES: usize = 3 * 1024 * 1024;
const FILE_BYTES: usize = 100 * 1024;
/// Far more than fit on the tmpfs: a guard against a server that never fails.
const SUBMITS_MAX: usize = 1_000;

/// A tmpfs mounted for this test; unmounted (lazily, if still busy) on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE}"), "tmpfs"])
            .arg(dir)
            .output();
        match output {
            Ok(output) if output.status.success() => Some(Tmpfs {
                dir: dir.to_path_buf(),
            }),
            Ok(output) => {
                eprintln!(
                    "skipping: cannot mount a tmpfs ({})",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(error) => {
                eprintln!("skipping: cannot run mount ({error})");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A spec whose file holds `FILE_BYTES` of content that does not compress
/// (so the stored size is what was sent), distinct for every `seed`.
fn big_spec(seed: u64) -> String {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let contents: String = (0..FILE_BYTES)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            alphabet[(state % alphabet.len() as u64) as usize] as char
        })
        .collect();
    format!(
        "workflow:\n  name: full\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [\"true\"]\n    files:\n    - path: /data/blob\n      contents: {contents}\n"
    )
}

fn start(data: &Path) -> DevServer {
    DevServer::start_with(
        data,
        &[
            "server",
            "--bootstrap",
            "--listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
        ],
    )
}

/// The submitted text of workflow `id`, or why it could not be read.
fn template_of(api: &Https, id: &str) -> Result<String, String> {
    let response = api
        .http
        .get(format!("{}/api/workflow/{id}/spec?use_template=true", api.url))
        .bearer_auth(&api.token)
        .send()
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.text().map_err(|e| e.to_string())?;
    if status == 200 {
        Ok(text)
    } else {
        Err(format!("{status}: {}", text.chars().take(300).collect::<String>()))
    }
}

/// Every acknowledged workflow is readable and holds exactly what was sent.
fn assert_intact(api: &Https, acknowledged: &[(String, u64)], when: &str) {
    for (id, seed) in acknowledged {
        let text = template_of(api, id).unwrap_or_else(|e| panic!("{when}: {id}: {e}"));
        assert!(text == big_spec(*seed), "{when}: {id} changed");
        let (status, body) = api.get(&format!("/api/workflow/{id}"));
        assert_eq!(status, 200, "{when}: {id}: {body}");
    }
}

#[test]
fn a_full_disk_refuses_writes_cleanly_and_recovers_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let mount_point = dir.path().join("small");
    let Some(tmpfs) = Tmpfs::mount(&mount_point) else {
        return;
    };
    // The data directory is the tmpfs itself (the server's log goes beside
    // it, off the tmpfs), with space the test can give back later.
    let data = tmpfs.dir.clone();
    let filler = data.join("filler");
    std::fs::write(&filler, vec![0x5a; FILLER_BYTES]).unwrap();

    let mut server = start(&data);
    let token = std::fs::read_to_string(data.join("bootstrap-admin-token")).unwrap();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let api = Https {
        http,
        url: server.url.clone(),
        token,
    };

    // Submit until the disk is full.
    let mut acknowledged: Vec<(String, u64)> = Vec::new();
    let mut seed = 0;
    let refusal = loop {
        seed += 1;
        assert!(
            (seed as usize) < SUBMITS_MAX,
            "{SUBMITS_MAX} submits of {FILE_BYTES} bytes fitted on a {TMPFS_SIZE} tmpfs"
        );
        let sent = Instant::now();
        let reply = api.try_submit(&big_spec(seed));
        let (status, body) =
            reply.unwrap_or_else(|e| panic!("submit {seed} got no answer (a hang?): {e}"));
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "submit {seed} took {:?}",
            sent.elapsed()
        );
        if status == 200 {
            acknowledged.push((body["name"].as_str().unwrap().to_string(), seed));
            continue;
        }
        break (status, body);
    };
    eprintln!(
        "{} submits acknowledged, then {} {}",
        acknowledged.len(),
        refusal.0,
        refusal.1
    );
    assert!(
        acknowledged.len() >= 10,
        "refused too early: {refusal:?}; log:\n{}",
        server.log()
    );
    let (status, body) = &refusal;
    assert!(
        (500..600).contains(status),
        "a full disk is a server fault: {status} {body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "the refusal carries no JSON message: {body}"
    );

    // Still alive, still serving reads; nothing acknowledged was damaged.
    assert!(server.alive(), "the server died; log:\n{}", server.log());
    assert_intact(&api, &acknowledged, "while the disk is full");
    let listed = api.listing().expect("list while full");
    for (id, _) in &acknowledged {
        assert!(
            listed.iter().any(|(name, _)| name == id),
            "{id} not listed"
        );
    }

    // Free space: writes are taken again.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let recovered = loop {
        seed += 1;
        match api.try_submit(&big_spec(seed)) {
            Ok((200, body)) => break body["name"].as_str().unwrap().to_string(),
            other => {
                assert!(
                    Instant::now() < deadline,
                    "submits still refused 30 s after space was freed: {other:?}; log tail:\n{}",
                    tail(&server.log())
                );
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    acknowledged.push((recovered, seed));
    assert!(server.alive());
    assert_intact(&api, &acknowledged, "after space was freed");

    // A SIGKILL and a restart on the same directory lose nothing.
    server.kill_now();
    drop(server);
    let server = start(&data);
    let api = Https {
        url: server.url.clone(),
        ..api
    };
    assert_intact(&api, &acknowledged, "after a restart");
    seed += 1;
    let spec = big_spec(seed);
    let (status, body) = api.try_submit(&spec).expect("submit after restart");
    assert_eq!(status, 200, "{body}");
    drop(server);
    drop(tmpfs);
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
