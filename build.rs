//! Sets `GANTRY_GIT_HASH` for the binary (`gantry version`, `/api/version`,
//! `gantry_build_info`): the environment variable of that name if set (a
//! build from a source tarball), else `git rev-parse --short HEAD`, else
//! `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=GANTRY_GIT_HASH");
    let hash = std::env::var("GANTRY_GIT_HASH")
        .ok()
        .filter(|hash| !hash.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it
    // points at (a commit). `--git-path` resolves both inside worktrees.
    // A path that does not exist would make cargo rerun this every build.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
        watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    }
    for path in watched.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!(
        "cargo:rustc-env=GANTRY_GIT_HASH={}",
        hash.as_deref().unwrap_or("unknown")
    );
}
