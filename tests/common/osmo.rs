//! OSMO's own CLI (`shared/osmo/client/osmo`, run from source) as a test
//! client: each instance has its own login file and state.

use super::osmo_reference;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one CLI call may take (the first ever run builds the virtual
/// environment, which `.ci/run` does before the tests).
pub const CALL_LIMIT: Duration = Duration::from_secs(120);
pub const FIRST_RUN_LIMIT: Duration = Duration::from_secs(600);

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The launcher with its own state: `XDG_CONFIG_HOME` and `XDG_STATE_HOME`
/// in a temporary directory, so its login file is this test's alone.
pub struct Osmo {
    pub launcher: PathBuf,
    pub home: tempfile::TempDir,
    /// Variables every run gets (a CA bundle for an IdP, a `BROWSER`).
    pub envs: Vec<(String, String)>,
}

impl Osmo {
    /// The CLI, or `None` (after saying why) when it cannot run here and
    /// `CI` is not `true`.
    pub fn find() -> Option<Osmo> {
        let launcher = osmo_reference("client/osmo");
        let osmo = Osmo {
            launcher,
            home: tempfile::tempdir().expect("tempdir"),
            envs: Vec::new(),
        };
        let help = osmo.run_within(&["--help"], FIRST_RUN_LIMIT);
        if help.code == 0 && help.stdout.contains("workflow") {
            return Some(osmo);
        }
        let why = format!(
            "OSMO's CLI ({}) does not run: exit {}; it needs Python >= 3.12 and makes its \
             virtual environment on the first run (.ci/run does that)\n{}{}",
            osmo.launcher.display(),
            help.code,
            help.stdout,
            help.stderr
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("SKIPPED: {why}");
        None
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_within(args, CALL_LIMIT)
    }

    /// Runs the launcher with `args`; killed after `limit`.
    pub fn run_within(&self, args: &[&str], limit: Duration) -> Output {
        let out = self.home.path().join("stdout");
        let err = self.home.path().join("stderr");
        let mut child = Command::new(&self.launcher)
            .args(args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("XDG_STATE_HOME", self.home.path().join("state"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            // Times the CLI is given and shows are local: UTC here.
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.launcher.display()));
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for osmo") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "osmo {args:?} still running after {limit:?}; stderr:\n{}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Output {
            code: status.code().unwrap_or(-1),
            stdout: std::fs::read_to_string(&out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        }
    }

    /// Runs `args`, panicking unless the exit code is 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert_eq!(
            output.code, 0,
            "osmo {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
            output.stdout, output.stderr
        );
        output.stdout
    }

    /// `osmo login URL --method dev --username USER`.
    pub fn login(&self, url: &str, user: &str) {
        let text = self.ok(&["login", url, "--method", "dev", "--username", user]);
        assert!(text.contains(&format!("Welcome {user}")), "{text}");
    }
}
