//! Snapshot files through the CLI: `gantry snapshot save` writes a tar +
//! zstd archive (`meta.json`, `state.bin`); `gantry snapshot restore`
//! seeds a new data directory from it, and refuses a truncated, corrupted
//! or foreign file with a clear error, leaving the directory untouched.

mod common;

use common::{cli, DevServer};
use std::io::Read;
use std::path::Path;

const HELLO: &str =
    "workflow:\n  name: saved\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [echo, hi]\n";

fn restore(file: &Path, data_dir: &Path) -> (i32, String, String) {
    cli(
        "http://127.0.0.1:9",
        &[
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
    )
}

#[test]
fn snapshot_files_are_tar_zstd_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let id = server.client().submit_ok(HELLO);

    let file = dir.path().join("state.snap");
    let (code, stdout, stderr) = cli(&server.url, &["snapshot", "save", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let bytes = std::fs::read(&file).unwrap();

    // A tar archive inside zstd: meta.json first, then state.bin.
    let tar_bytes = zstd::decode_all(bytes.as_slice()).expect("zstd");
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut members = Vec::new();
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("tar member");
        let name = entry.path().unwrap().display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        members.push((name, data));
    }
    assert_eq!(
        members.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["meta.json", "state.bin"]
    );
    let meta: serde_json::Value = serde_json::from_slice(&members[0].1).expect("meta.json");
    assert_eq!(meta["format"], "gantry-snapshot", "{meta}");
    assert_eq!(meta["version"], 1, "{meta}");
    assert!(meta["last_log_id"].is_object(), "{meta}");
    assert_eq!(
        meta["state_bytes"].as_u64(),
        Some(members[1].1.len() as u64),
        "{meta}"
    );

    // Bad files: each refused, naming why, and nothing is written.
    let truncated = dir.path().join("truncated.snap");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let mut flipped_bytes = bytes.clone();
    let middle = flipped_bytes.len() / 2;
    flipped_bytes[middle] ^= 0xff;
    let flipped = dir.path().join("flipped.snap");
    std::fs::write(&flipped, &flipped_bytes).unwrap();
    let foreign = dir.path().join("foreign.snap");
    std::fs::write(&foreign, b"{\"not\": \"a snapshot\"}\n").unwrap();
    for (bad, expected) in [
        (&truncated, "truncated or corrupt"),
        (&flipped, "truncated or corrupt"),
        (&foreign, "not a Gantry snapshot"),
    ] {
        let target = dir
            .path()
            .join(format!("from-{}", bad.display().to_string().len()));
        let (code, stdout, stderr) = restore(bad, &target);
        assert_ne!(code, 0, "{} restored: {stdout}", bad.display());
        assert!(
            stderr.contains(expected) && stderr.contains(&bad.display().to_string()),
            "{}: {stderr}",
            bad.display()
        );
        assert!(
            !target.join("raft").join("state.redb").exists(),
            "a refused restore wrote state"
        );
    }

    // The good file restores, and the restored node holds the workflow.
    let restored = dir.path().join("restored");
    let (code, stdout, stderr) = restore(&file, &restored);
    assert_eq!(code, 0, "{stdout}{stderr}");
    server.stop();
    let server = DevServer::start(&restored);
    let workflow = server.client().workflow(&id);
    assert_eq!(workflow["name"], id.as_str(), "{workflow}");
}
