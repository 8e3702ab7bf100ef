//! Disk full: a one-node `gantry server --bootstrap` whose data directory
//! lives on a small tmpfs (with a filler file the test can delete to give
//! space back). Submits of large specs go on until the disk is full; a
//! refused submit must be an error answer (5xx, JSON message), not a hang
//! or a crash. The process must keep serving reads with everything
//! acknowledged intact, take writes again once space is freed, and come
//! back after a SIGKILL with every acknowledged workflow (no corruption).
//!
//! Needs root (mount); skips with a message when mounting is not permitted.

mod common;

use common::{DevServer, Https};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TMPFS_SIZE: &str = "32m";
/// Given back once the disk is full: room for the stores to grow again.
const FILLER_BYTES: usize = 12 * 1024 * 1024;
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
        .get(format!(
            "{}/api/workflow/{id}/spec?use_template=true",
            api.url
        ))
        .bearer_auth(&api.token)
        .send()
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.text().map_err(|e| e.to_string())?;
    if status == 200 {
        Ok(text)
    } else {
        Err(format!(
            "{status}: {}",
            text.chars().take(300).collect::<String>()
        ))
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

/// A server on a full tmpfs, with what it acknowledged before refusing.
struct Full {
    // Fields drop in order: the server goes before its tmpfs is unmounted.
    server: DevServer,
    api: Https,
    filler: PathBuf,
    /// Every `(id, seed)` answered 200.
    acknowledged: Vec<(String, u64)>,
    /// The last seed sent (seeds 1..=sent were submitted).
    sent: u64,
    tmpfs: Tmpfs,
    _dir: tempfile::TempDir,
}

impl Full {
    /// Mounts the tmpfs (`None`: not permitted), starts the server on it and
    /// submits until a submit is refused; checks the refusal is a clean one.
    fn fill() -> Option<Full> {
        let dir = tempfile::tempdir().unwrap();
        let tmpfs = Tmpfs::mount(&dir.path().join("small"))?;
        // The data directory is the tmpfs itself (the server's log goes
        // beside it, off the tmpfs), with space the test can give back.
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
        let mut acknowledged: Vec<(String, u64)> = Vec::new();
        let mut seed = 0;
        let (status, body) = loop {
            seed += 1;
            assert!(
                (seed as usize) < SUBMITS_MAX,
                "{SUBMITS_MAX} submits of {FILE_BYTES} bytes fitted on a {TMPFS_SIZE} tmpfs"
            );
            let reply = api.try_submit(&big_spec(seed));
            let (status, body) =
                reply.unwrap_or_else(|e| panic!("submit {seed} got no answer (a hang?): {e}"));
            if status != 200 {
                break (status, body);
            }
            acknowledged.push((body["name"].as_str().unwrap().to_string(), seed));
        };
        eprintln!(
            "{} submits acknowledged, then {status} {body}",
            acknowledged.len()
        );
        assert!(
            acknowledged.len() >= 5,
            "refused too early: {status} {body}; log:\n{}",
            tail(&server.log())
        );
        assert!(
            (500..600).contains(&status),
            "a full disk is a server fault: {status} {body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "the refusal carries no JSON message: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            server.alive(),
            "the server exited; log:\n{}",
            tail(&server.log())
        );
        Some(Full {
            server,
            api,
            filler,
            acknowledged,
            sent: seed,
            tmpfs,
            _dir: dir,
        })
    }

    /// Submits one more spec; its answer, or why none came.
    fn submit_next(&mut self) -> Result<(u16, serde_json::Value), String> {
        self.sent += 1;
        let seed = self.sent;
        let answer = self
            .api
            .try_submit(&big_spec(seed))
            .map_err(|e| e.to_string())?;
        if answer.0 == 200 {
            let id = answer.1["name"].as_str().unwrap().to_string();
            self.acknowledged.push((id, seed));
        }
        Ok(answer)
    }

    /// SIGKILL, then a start on the same directory.
    fn kill_and_restart(&mut self) {
        self.server.kill_now();
        // Gone (and reaped) before the next one opens the same stores.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.server.alive() {
            assert!(Instant::now() < deadline, "SIGKILL did not end the server");
            std::thread::sleep(Duration::from_millis(20));
        }
        let data = self.tmpfs.dir.clone();
        self.server = start(&data);
        self.api.url = self.server.url.clone();
    }

    /// Everything acknowledged is listed and intact; anything else listed
    /// is exactly one of the specs that were sent and refused (a write
    /// whose answer was an error may still have been committed), never a
    /// damaged or foreign record.
    fn assert_consistent(&self, when: &str) {
        assert_intact(&self.api, &self.acknowledged, when);
        let listed = self
            .api
            .listing()
            .unwrap_or_else(|e| panic!("{when}: list: {e}"));
        for (id, _) in &self.acknowledged {
            assert!(
                listed.iter().any(|(name, _)| name == id),
                "{when}: {id} not listed"
            );
        }
        let refused: Vec<String> = (1..=self.sent)
            .filter(|seed| self.acknowledged.iter().all(|(_, s)| s != seed))
            .map(big_spec)
            .collect();
        for (name, _) in &listed {
            if self.acknowledged.iter().any(|(id, _)| id == name) {
                continue;
            }
            let text = template_of(&self.api, name).unwrap_or_else(|e| panic!("{when}: {e}"));
            assert!(
                refused.contains(&text),
                "{when}: {name} holds a spec that was never sent"
            );
        }
    }
}

/// What works today: a full disk gets a clean 5xx (no hang, no crash);
/// after space is freed a SIGKILL and restart bring back every
/// acknowledged workflow intact, and writes are taken again.
#[test]
fn a_full_disk_refuses_writes_cleanly_and_a_restart_recovers_everything() {
    let Some(mut full) = Full::fill() else {
        return;
    };
    // The storage error stopped the Raft core: liveness says so, so a
    // supervisor restarts the node (which then recovers from its log).
    let (status, body) = full.api.get("/healthz");
    assert_eq!(status, 503, "healthz after a full disk: {body}");
    std::fs::remove_file(&full.filler).unwrap();
    full.kill_and_restart();
    let (status, body) = full.api.get("/healthz");
    assert_eq!(status, 200, "healthz after the restart: {body}");
    full.assert_consistent("after a restart");
    for _ in 0..3 {
        let answer = full.submit_next();
        assert!(
            matches!(answer, Ok((200, _))),
            "a submit after the restart: {answer:?}"
        );
    }
    full.assert_consistent("after new writes");
}

/// The full contract without a restart: while the disk is full the server
/// keeps serving reads of everything acknowledged, and once space is freed
/// it takes writes again by itself.
#[test]
#[ignore = "openraft stops its core on any storage error; recovery needs a restart (healthz answers 503 so a supervisor does it)"]
fn a_full_disk_keeps_serving_reads_and_takes_writes_again_once_space_is_freed() {
    let Some(mut full) = Full::fill() else {
        return;
    };
    full.assert_consistent("while the disk is full");
    std::fs::remove_file(&full.filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = full.submit_next();
        if matches!(answer, Ok((200, _))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "submits still refused 30 s after space was freed: {answer:?}; log:\n{}",
            tail(&full.server.log())
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(full.server.alive());
    full.assert_consistent("after space was freed");
    full.kill_and_restart();
    full.assert_consistent("after a restart");
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
