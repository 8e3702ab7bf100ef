//! Where the CLI finds its server and token.
//!
//! Owns the resolution order fixed by design §9:
//! URLs: `--url` / `GANTRY_URL` (both arrive through clap as one list), else the
//! `url` of `$XDG_CONFIG_HOME/gantry/config.json` (default `~/.config/gantry/`),
//! else [`DEFAULT_URL`]. Token: `GANTRY_TOKEN`, else the file's `token`.
//!
//! Invariants: [`resolve`] is pure apart from reading the one config file it is
//! handed, so tests pass every environment value as an argument instead of
//! mutating the process environment; the file is read only when a value is still
//! missing, and a missing file is not an error while a malformed one is (a typo
//! should not silently send requests to the default server).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::ClientError;

/// The API address `gantry server` and `gantry dev` listen on by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8470";

/// Environment variable holding the bearer token.
pub const TOKEN_ENV: &str = "GANTRY_TOKEN";

/// The file `gantry login` writes. Unknown fields are ignored so newer
/// files still load.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ConfigFile {
    #[serde(default)]
    pub url: Option<UrlList>,
    #[serde(default)]
    pub token: Option<String>,
    /// The CA that signed the server's certificate (https URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// A sign-in through the server's identity provider (used when there
    /// is no `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<IdpLogin>,
}

/// An identity provider's ID token, and what refreshes it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct IdpLogin {
    pub id_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    pub token_endpoint: String,
    pub client_id: String,
    /// The CA of the IdP's certificate, besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_ca: Option<PathBuf>,
}

/// `url` may be one string (possibly comma-separated) or a list, so a login
/// against a cluster can store every member.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum UrlList {
    One(String),
    Many(Vec<String>),
}

impl UrlList {
    fn into_vec(self) -> Vec<String> {
        match self {
            UrlList::One(s) => split_urls(&[s]),
            UrlList::Many(v) => split_urls(&v),
        }
    }
}

/// Server URLs and token after resolution; `urls` is never empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub urls: Vec<String>,
    pub token: Option<String>,
    /// From the config file, used when `--ca`/`GANTRY_CA` is not given.
    pub ca: Option<PathBuf>,
    /// The config file's IdP sign-in, and the file (to save a refresh), when
    /// `token` came from it.
    pub idp: Option<(IdpLogin, PathBuf)>,
}

/// `$XDG_CONFIG_HOME/gantry/config.json`, or `$HOME/.config/gantry/config.json`.
/// The XDG spec says relative values of `XDG_CONFIG_HOME` must be ignored.
pub fn default_config_path(
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let base = match xdg_config_home.map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        _ => PathBuf::from(home.filter(|h| !h.is_empty())?).join(".config"),
    };
    Some(base.join("gantry").join("config.json"))
}

/// Reads the config file; `Ok(None)` when it does not exist.
pub fn load_config_file(path: &Path) -> Result<Option<ConfigFile>, ClientError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ClientError::Config {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ClientError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Resolves URLs and token from already-read inputs.
///
/// `cli_urls` is what clap collected from `--url` or `GANTRY_URL`; `env_token`
/// is `GANTRY_TOKEN`; `config_path` is the file to consult (None: no file).
/// Empty strings count as unset, so `GANTRY_URL=` does not yield an empty URL.
pub fn resolve(
    cli_urls: &[String],
    env_token: Option<&str>,
    config_path: Option<&Path>,
) -> Result<Resolved, ClientError> {
    let mut urls = split_urls(cli_urls);
    let mut token = env_token
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);

    let mut ca = None;
    let mut idp = None;
    if urls.is_empty() || token.is_none() {
        let file = match config_path {
            Some(p) => load_config_file(p)?,
            None => None,
        };
        if let Some(file) = file {
            // The file's CA belongs to the file's server.
            if urls.is_empty() {
                urls = file.url.map(UrlList::into_vec).unwrap_or_default();
                ca = file.ca;
            }
            if token.is_none() {
                token = file.token.filter(|t| !t.trim().is_empty());
            }
            if token.is_none() {
                if let (Some(login), Some(path)) = (file.idp, config_path) {
                    token = Some(login.id_token.clone());
                    idp = Some((login, path.to_path_buf()));
                }
            }
        }
    }
    if urls.is_empty() {
        urls.push(DEFAULT_URL.to_owned());
    }
    Ok(Resolved {
        urls,
        token,
        ca,
        idp,
    })
}

/// [`resolve`] fed from the real process environment; the only impure entry.
pub fn resolve_from_env(cli_urls: &[String]) -> Result<Resolved, ClientError> {
    let path = default_config_path(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    );
    let token = std::env::var(TOKEN_ENV).ok();
    resolve(cli_urls, token.as_deref(), path.as_deref())
}

/// Writes the config file `gantry login` leaves: mode 0600 from its
/// creation (it holds a token), replacing the file atomically.
pub fn write_config_file(path: &Path, file: &ConfigFile) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(file).map_err(std::io::Error::other)?;
    let temporary = path.with_extension("json.tmp");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// Flattens comma-separated entries and drops blanks (clap already splits
/// `--url a,b`, but the config file and `Client::new` callers may not).
fn split_urls(raw: &[String]) -> Vec<String> {
    raw.iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("config.json");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn flag_urls_win_over_file_and_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), r#"{"url": "http://file:1", "token": "ft"}"#);
        let r = resolve(
            &["http://a:1,http://b:2".into(), "http://c:3".into()],
            None,
            Some(&path),
        )
        .unwrap();
        assert_eq!(r.urls, vec!["http://a:1", "http://b:2", "http://c:3"]);
        // The token still comes from the file: URL and token resolve independently.
        assert_eq!(r.token.as_deref(), Some("ft"));
    }

    #[test]
    fn file_used_when_no_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            r#"{"url": ["http://x:1", "http://y:2"], "token": "ft", "ca": "/ca.pem"}"#,
        );
        let r = resolve(&[], Some("envtok"), Some(&path)).unwrap();
        assert_eq!(r.urls, vec!["http://x:1", "http://y:2"]);
        assert_eq!(r.token.as_deref(), Some("envtok"));
    }

    #[test]
    fn default_when_file_absent() {
        let dir = tempfile::tempdir().unwrap();
        let r = resolve(&[], None, Some(&dir.path().join("missing.json"))).unwrap();
        assert_eq!(r.urls, vec![DEFAULT_URL]);
        assert_eq!(r.token, None);
        let r = resolve(&["".into()], Some(""), None).unwrap();
        assert_eq!(r.urls, vec![DEFAULT_URL]);
        assert_eq!(r.token, None);
    }

    #[test]
    fn malformed_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "{not json");
        let err = resolve(&[], None, Some(&path)).unwrap_err();
        assert!(matches!(err, ClientError::Config { .. }), "{err:?}");
        // Not consulted at all when flag and env already answer everything.
        assert!(resolve(&["http://a".into()], Some("t"), Some(&path)).is_ok());
    }

    #[test]
    fn an_idp_sign_in_gives_its_id_token_unless_a_token_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let login = IdpLogin {
            id_token: "id.token.jwt".into(),
            refresh_token: Some("r".into()),
            token_endpoint: "https://idp/token".into(),
            client_id: "gantry-cli".into(),
            idp_ca: None,
        };
        let file = ConfigFile {
            url: Some(UrlList::One("https://g:8470".into())),
            token: None,
            ca: None,
            idp: Some(login.clone()),
        };
        write_config_file(&path, &file).unwrap();
        let r = resolve(&[], None, Some(&path)).unwrap();
        assert_eq!(r.token.as_deref(), Some("id.token.jwt"));
        assert_eq!(r.idp, Some((login, path.clone())));
        let r = resolve(&[], Some("tok"), Some(&path)).unwrap();
        assert_eq!((r.token.as_deref(), r.idp), (Some("tok"), None));
    }

    #[test]
    fn written_file_is_private_and_reads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gantry").join("config.json");
        let file = ConfigFile {
            url: Some(UrlList::One("https://g:8470".into())),
            token: Some("secret".into()),
            ca: Some(PathBuf::from("/etc/gantry/ca.pem")),
            idp: None,
        };
        write_config_file(&path, &file).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let r = resolve(&[], None, Some(&path)).unwrap();
        assert_eq!(r.urls, vec!["https://g:8470"]);
        assert_eq!(r.token.as_deref(), Some("secret"));
        assert_eq!(r.ca, Some(PathBuf::from("/etc/gantry/ca.pem")));
        // A URL from the flag does not take the file's CA.
        let r = resolve(&["https://other".into()], None, Some(&path)).unwrap();
        assert_eq!(r.ca, None);
    }

    #[test]
    fn config_path_follows_xdg() {
        assert_eq!(
            default_config_path(Some("/xdg".into()), Some("/home/u".into())),
            Some(PathBuf::from("/xdg/gantry/config.json"))
        );
        assert_eq!(
            default_config_path(Some("relative".into()), Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.config/gantry/config.json"))
        );
        assert_eq!(
            default_config_path(None, Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.config/gantry/config.json"))
        );
        assert_eq!(default_config_path(None, None), None);
    }
}
