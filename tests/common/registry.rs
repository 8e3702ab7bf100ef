//! A real OCI registry for the tests, and images the tests build and push
//! themselves.
//!
//! The registry is Debian's `docker-registry` package (the CNCF
//! distribution registry v2, `/usr/bin/docker-registry`), started by
//! [`start_registry`] on 127.0.0.1 over plain HTTP, with its storage in a
//! directory of the test's and, when asked, htpasswd (HTTP Basic) auth.
//! Where it is missing, [`start_registry`] panics under `CI=true` and
//! otherwise prints `SKIPPED: ...` and returns `None`.
//!
//! Images are built here, not pulled: [`Layer`]s are tar archives written
//! with the `tar` crate (deterministic: mtime 0, entries in the order
//! given), uncompressed, gzip or zstd; [`busybox_layer`] is a small root
//! filesystem around Debian's static `/bin/busybox` (package
//! `busybox-static`). [`push_image`] uploads the layers, an OCI image
//! config and an OCI image manifest with the registry's HTTP API only;
//! [`push_index`] a multi-platform OCI image index; [`corrupt_blob`]
//! changes a stored blob's bytes so the registry serves content that no
//! longer matches its digest.
//!
//! htpasswd entries are bcrypt hashes, made with the system's libcrypt
//! (libxcrypt, `libcrypt.so.1`, loaded with dlopen: no link-time
//! dependency), or `htpasswd -nbB` (apache2-utils) where that libcrypt has
//! no bcrypt.

use super::wait_for;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Where Debian's `docker-registry` package puts the registry.
const REGISTRY_BINARY: &str = "docker-registry";
/// Where Debian's `busybox-static` package puts busybox.
pub const BUSYBOX: &str = "/bin/busybox";

/// A tool the test needs is missing: panics under `CI=true`, otherwise
/// prints `SKIPPED: <why>` (the caller then returns).
fn skip(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{why} (CI=true: the test must run)"
    );
    println!("SKIPPED: {why}");
}

fn registry_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(REGISTRY_BINARY))
            .find(|path| path.is_file())
    });
    on_path.or_else(|| {
        let fixed = Path::new("/usr/bin").join(REGISTRY_BINARY);
        fixed.is_file().then_some(fixed)
    })
}

/// A running `docker-registry serve`; killed when the handle drops.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`: an image reference's registry part.
    pub host: String,
    /// The storage driver's root directory (`docker/registry/v2/...` below).
    pub dir: PathBuf,
    log_path: PathBuf,
}

impl Registry {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// The registry's output (its request log and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Where the registry keeps the bytes of blob `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
        self.dir
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a registry keeping its files in `dir` (config.yml, the log, the
/// htpasswd file, storage in `dir/storage`) on a free loopback port, and
/// waits until `GET /v2/` answers (200; 401 with `auth`). With `auth` =
/// (user, password), only that user may pull or push (HTTP Basic).
/// `None` (after printing SKIPPED) when `docker-registry` is not installed
/// and `CI` is not `true`.
pub fn start_registry(dir: &Path, auth: Option<(&str, &str)>) -> Option<Registry> {
    let Some(binary) = registry_binary() else {
        skip("docker-registry is not installed (Debian package docker-registry)");
        return None;
    };
    std::fs::create_dir_all(dir).expect("create registry dir");
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage).expect("create registry storage");
    let auth_section = match auth {
        Some((user, password)) => {
            let htpasswd = dir.join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{}\n", bcrypt_hash(password)))
                .expect("write htpasswd");
            format!(
                "auth:\n  htpasswd:\n    realm: gantry-test\n    path: {}\n",
                htpasswd.display()
            )
        }
        None => String::new(),
    };
    let log_path = dir.join("registry.log");
    // A port taken between choosing it and the registry binding it: try
    // another.
    for _attempt in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: gantry-test-registry\n\
             {auth_section}",
            storage.display()
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open registry log");
        let child = Command::new(&binary)
            .arg("serve")
            .arg(&config_path)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("registry log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let mut registry = Registry {
            child,
            host: format!("127.0.0.1:{port}"),
            dir: storage.clone(),
            log_path: log_path.clone(),
        };
        let http = client();
        let url = format!("{}/v2/", registry.url());
        let wanted = if auth.is_some() { 401 } else { 200 };
        let child = &mut registry.child;
        let exited = wait_for(
            Duration::from_secs(20),
            "docker-registry to serve /v2/",
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    return Ok(Some(status));
                }
                let status = http
                    .get(&url)
                    .send()
                    .map_err(|error| error.to_string())?
                    .status()
                    .as_u16();
                if status == wanted {
                    Ok(None)
                } else {
                    Err(format!("GET /v2/ answered {status}, not {wanted}"))
                }
            },
        );
        let Some(status) = exited else {
            return Some(registry);
        };
        let text = registry.log();
        assert!(
            text.contains("address already in use"),
            "docker-registry exited ({status}); log:\n{text}"
        );
    }
    panic!(
        "docker-registry found no free port; log:\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    )
}

/// Whether Debian's static busybox is there for [`busybox_layer`]: `false`
/// (after printing SKIPPED) when it is not and `CI` is not `true`.
pub fn have_busybox() -> bool {
    let why = match std::fs::read(BUSYBOX) {
        Ok(bytes) if is_static_elf(&bytes) => return true,
        Ok(_) => format!("{BUSYBOX} is dynamically linked; install Debian's busybox-static"),
        Err(_) => format!("{BUSYBOX} is missing; install Debian's busybox-static"),
    };
    skip(&why);
    false
}

/// An ELF executable without a program interpreter (`PT_INTERP`).
fn is_static_elf(bytes: &[u8]) -> bool {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return false;
    }
    let wide = bytes[4] == 2;
    let little = bytes[5] == 1;
    let read = |at: usize, len: usize| -> u64 {
        let slice = &bytes[at..at + len];
        let mut value = 0u64;
        for (index, byte) in slice.iter().enumerate() {
            let shift = if little { index } else { len - 1 - index };
            value |= u64::from(*byte) << (8 * shift);
        }
        value
    };
    let (phoff, phentsize, phnum) = if wide {
        (read(0x20, 8), read(0x36, 2), read(0x38, 2))
    } else {
        (read(0x1c, 4), read(0x2a, 2), read(0x2c, 2))
    };
    (0..phnum).all(|index| {
        let at = (phoff + index * phentsize) as usize;
        at + 4 > bytes.len() || read(at, 4) != 3
    })
}

// ---------------------------------------------------------------- bcrypt

/// A bcrypt hash (`$2b$04$...`, cost 4: the tests' registries need no
/// strength) of `password`, as the registry's htpasswd file wants: from the
/// system's libcrypt (libxcrypt) where it does bcrypt, else from
/// `htpasswd -nbB`.
pub fn bcrypt_hash(password: &str) -> String {
    if let Some(hash) = libcrypt_bcrypt(password) {
        return hash;
    }
    let output = Command::new("htpasswd")
        .args(["-nbBC", "4", "user", password])
        .output()
        .unwrap_or_else(|error| {
            panic!("no bcrypt: libcrypt.so.1 has none and htpasswd (apache2-utils) fails: {error}")
        });
    assert!(output.status.success(), "htpasswd -nbB failed: {output:?}");
    let text = String::from_utf8(output.stdout).expect("htpasswd output");
    text.trim()
        .strip_prefix("user:")
        .expect("htpasswd line")
        .to_string()
}

/// crypt(3) and crypt_gensalt(3) keep their results in static buffers.
static LIBCRYPT: Mutex<()> = Mutex::new(());

fn libcrypt_bcrypt(password: &str) -> Option<String> {
    use std::ffi::{c_char, c_int, c_ulong, CStr, CString};
    type Gensalt =
        unsafe extern "C" fn(*const c_char, c_ulong, *const c_char, c_int) -> *mut c_char;
    type Crypt = unsafe extern "C" fn(*const c_char, *const c_char) -> *mut c_char;
    let _guard = LIBCRYPT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let phrase = CString::new(password).expect("password without NUL");
    // SAFETY: dlopen/dlsym with NUL-terminated names; the symbols have the
    // libxcrypt signatures above; the returned strings are copied before
    // the lock is released (they live in libcrypt's static buffers). The
    // library stays loaded (never dlclosed).
    unsafe {
        let handle = libc::dlopen(c"libcrypt.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if handle.is_null() {
            return None;
        }
        let gensalt = libc::dlsym(handle, c"crypt_gensalt".as_ptr());
        let crypt = libc::dlsym(handle, c"crypt".as_ptr());
        if gensalt.is_null() || crypt.is_null() {
            return None;
        }
        let gensalt: Gensalt = std::mem::transmute::<*mut libc::c_void, Gensalt>(gensalt);
        let crypt: Crypt = std::mem::transmute::<*mut libc::c_void, Crypt>(crypt);
        // No random bytes given: libxcrypt takes them from the kernel.
        let setting = gensalt(c"$2b$".as_ptr(), 4, std::ptr::null(), 0);
        if setting.is_null() {
            return None;
        }
        let setting = CStr::from_ptr(setting).to_owned();
        if !setting.to_bytes().starts_with(b"$2b$") {
            return None;
        }
        let hash = crypt(phrase.as_ptr(), setting.as_ptr());
        if hash.is_null() {
            return None;
        }
        let hash = CStr::from_ptr(hash).to_str().ok()?.to_string();
        // Failure is "*0" or "*1", never a "$2b$" string.
        (hash.starts_with("$2b$") && hash.len() == 60).then_some(hash)
    }
}

// ---------------------------------------------------------------- layers

/// How a layer's tar archive is stored in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// `application/vnd.oci.image.layer.v1.tar`
    None,
    /// `application/vnd.oci.image.layer.v1.tar+gzip`
    Gzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`
    Zstd,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => OCI_LAYER_TAR,
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        }
    }

    pub fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => tar.to_vec(),
            Compression::Gzip => gzip(tar),
            Compression::Zstd => zstd::encode_all(tar, 3).expect("zstd"),
        }
    }
}

/// One entry of a layer's tar. Paths are inside the image (a leading `/`
/// is dropped). OCI whiteouts are empty regular files named `.wh.<name>`
/// (and `.wh..wh..opq` for an opaque directory): [`Entry::whiteout`],
/// [`Entry::opaque`].
#[derive(Clone, Debug)]
pub enum Entry {
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    Dir {
        path: String,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    /// `target` is stored as given (absolute or relative to the link's
    /// directory).
    Symlink { path: String, target: String },
    /// `target` is another path in the image (a leading `/` is dropped).
    HardLink { path: String, target: String },
}

impl Entry {
    /// A regular file owned by root.
    pub fn file(path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Entry {
        Entry::File {
            path: path.to_string(),
            data: data.into(),
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// A directory owned by root.
    pub fn dir(path: &str, mode: u32) -> Entry {
        Entry::Dir {
            path: path.to_string(),
            mode,
            uid: 0,
            gid: 0,
        }
    }

    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::Symlink {
            path: path.to_string(),
            target: target.to_string(),
        }
    }

    pub fn hard_link(path: &str, target: &str) -> Entry {
        Entry::HardLink {
            path: path.to_string(),
            target: target.to_string(),
        }
    }

    /// The whiteout deleting `path` (from the layers below): an empty file
    /// `.wh.<name>` beside it.
    pub fn whiteout(path: &str) -> Entry {
        let path = path.trim_end_matches('/');
        let (parent, name) = match path.rsplit_once('/') {
            Some((parent, name)) => (format!("{parent}/"), name),
            None => (String::new(), path),
        };
        Entry::file(&format!("{parent}.wh.{name}"), Vec::new(), 0o644)
    }

    /// The opaque whiteout of directory `dir`: what the layers below hold
    /// in it is hidden.
    pub fn opaque(dir: &str) -> Entry {
        Entry::file(
            &format!("{}/.wh..wh..opq", dir.trim_end_matches('/')),
            Vec::new(),
            0o644,
        )
    }

    /// The same file or directory with owner `uid`:`gid`.
    pub fn owned_by(self, new_uid: u64, new_gid: u64) -> Entry {
        match self {
            Entry::File {
                path, data, mode, ..
            } => Entry::File {
                path,
                data,
                mode,
                uid: new_uid,
                gid: new_gid,
            },
            Entry::Dir { path, mode, .. } => Entry::Dir {
                path,
                mode,
                uid: new_uid,
                gid: new_gid,
            },
            link => panic!("owned_by on a link: {link:?}"),
        }
    }
}

/// One image layer: its entries, in this order, and how it is compressed.
#[derive(Clone, Debug)]
pub struct Layer {
    pub entries: Vec<Entry>,
    pub compression: Compression,
}

fn archive_path(path: &str) -> &str {
    let relative = path.trim_start_matches('/');
    assert!(!relative.is_empty(), "an entry needs a path: {path:?}");
    relative
}

impl Layer {
    /// The uncompressed tar archive (its sha256 is the layer's diff ID).
    /// Deterministic: GNU headers, mtime 0, entries in order.
    pub fn tar(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            let mut header = tar::Header::new_gnu();
            // Every numeric field set: readers refuse empty ones.
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_device_major(0).expect("device major");
            header.set_device_minor(0).expect("device minor");
            match entry {
                Entry::File {
                    path,
                    data,
                    mode,
                    uid,
                    gid,
                } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_uid(*uid);
                    header.set_gid(*gid);
                    header.set_size(data.len() as u64);
                    builder
                        .append_data(&mut header, archive_path(path), data.as_slice())
                        .unwrap_or_else(|error| panic!("tar {path}: {error}"));
                }
                Entry::Dir {
                    path,
                    mode,
                    uid,
                    gid,
                } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_uid(*uid);
                    header.set_gid(*gid);
                    header.set_size(0);
                    let path = format!("{}/", archive_path(path).trim_end_matches('/'));
                    builder
                        .append_data(&mut header, &path, std::io::empty())
                        .unwrap_or_else(|error| panic!("tar {path}: {error}"));
                }
                Entry::Symlink { path, target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, archive_path(path), target)
                        .unwrap_or_else(|error| panic!("tar {path}: {error}"));
                }
                Entry::HardLink { path, target } => {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_mode(0o644);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, archive_path(path), archive_path(target))
                        .unwrap_or_else(|error| panic!("tar {path}: {error}"));
                }
            }
        }
        builder.into_inner().expect("finish tar")
    }

    /// The blob as pushed: the tar, compressed.
    pub fn blob(&self) -> Vec<u8> {
        self.compression.compress(&self.tar())
    }
}

/// The applets [`busybox_layer`] links to `/bin/busybox`.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "id", "pwd", "env", "nc", "nslookup", "sleep", "test", "wc",
    "touch", "mkdir", "rm",
];

/// `/bin/printenv` in [`busybox_layer`]: Debian's busybox has no such
/// applet, so a script with printenv's behaviour (all variables, or the
/// named ones; status 1 when one is unset).
const PRINTENV: &str = r#"#!/bin/sh
if [ $# -eq 0 ]; then exec env; fi
status=0
for name do
  if eval "[ -n \"\${$name+set}\" ]"; then eval "printf '%s\n' \"\$$name\""; else status=1; fi
done
exit $status
"#;

/// A root filesystem around Debian's static busybox: `/bin/busybox` and
/// symlinks to it ([`BUSYBOX_APPLETS`]), `/bin/printenv`, `/etc/passwd`
/// (root, and `runner` uid/gid 1234 with home `/home/runner`),
/// `/etc/group`, `/tmp` (1777), `/home/runner` (owned by 1234), `/root`,
/// and empty `/dev`, `/proc`, `/sys` to mount on. Zstd; change
/// `compression` for another. Check [`have_busybox`] first.
pub fn busybox_layer() -> Layer {
    let busybox = std::fs::read(BUSYBOX)
        .unwrap_or_else(|error| panic!("read {BUSYBOX} (Debian's busybox-static): {error}"));
    assert!(
        is_static_elf(&busybox),
        "{BUSYBOX} is dynamically linked: install Debian's busybox-static"
    );
    let mut entries = vec![
        Entry::dir("bin", 0o755),
        Entry::file("bin/busybox", busybox, 0o755),
    ];
    for applet in BUSYBOX_APPLETS {
        entries.push(Entry::symlink(&format!("bin/{applet}"), "busybox"));
    }
    entries.extend([
        Entry::file("bin/printenv", PRINTENV, 0o755),
        Entry::dir("dev", 0o755),
        Entry::dir("etc", 0o755),
        Entry::file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nrunner:x:1234:1234:runner:/home/runner:/bin/sh\n",
            0o644,
        ),
        Entry::file("etc/group", "root:x:0:\nrunner:x:1234:\n", 0o644),
        Entry::dir("home", 0o755),
        Entry::dir("home/runner", 0o755).owned_by(1234, 1234),
        Entry::dir("proc", 0o555),
        Entry::dir("root", 0o700),
        Entry::dir("sys", 0o555),
        Entry::dir("tmp", 0o1777),
    ]);
    Layer {
        entries,
        compression: Compression::Zstd,
    }
}

// ---------------------------------------------------------------- gzip

/// `data` as a gzip member (flate2).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

// ---------------------------------------------------------------- pushing

/// The image config's process settings (OCI image config `config`), and
/// the platform.
#[derive(Clone, Debug, Default)]
pub struct ImageConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group`, `uid:gid`.
    pub user: Option<String>,
    /// The config's `architecture` (`arm64`, or `arm64/v8` for a variant
    /// too) instead of the host's ([`host_architecture`]): for the other
    /// entry of a multi-platform index.
    pub architecture: Option<String>,
}

/// The OCI (Go) name of this machine's architecture.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// An architecture that is not this machine's (for the other entry of an
/// index).
pub fn foreign_architecture() -> &'static str {
    if host_architecture() == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
}

/// `(architecture, variant)` from `arch` or `arch/variant`.
fn split_platform(platform: &str) -> (&str, Option<&str>) {
    match platform.split_once('/') {
        Some((architecture, variant)) => (architecture, Some(variant)),
        None => (platform, None),
    }
}

/// What [`push_image`] pushed.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// `sha256:<hex>` of the manifest: `<repo>@<digest>` pulls it.
    pub manifest_digest: String,
    /// The manifest's length, for an index entry ([`push_index`]).
    pub manifest_size: u64,
    pub layer_digests: Vec<String>,
    /// sha256 of each layer's uncompressed tar (the config's diff IDs).
    pub diff_ids: Vec<String>,
    pub config_digest: String,
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

fn request(
    http: &reqwest::blocking::Client,
    method: reqwest::Method,
    url: &str,
    auth: Option<(&str, &str)>,
) -> reqwest::blocking::RequestBuilder {
    let builder = http.request(method, url);
    match auth {
        Some((user, password)) => builder.basic_auth(user, Some(password)),
        None => builder,
    }
}

/// Uploads `bytes` as a blob of `repository` (unless the registry has it
/// there already); returns its digest. Monolithic upload: `POST
/// /v2/<repo>/blobs/uploads/`, then `PUT <Location>&digest=...`.
pub fn push_blob(
    registry: &Registry,
    auth: Option<(&str, &str)>,
    repository: &str,
    bytes: &[u8],
) -> String {
    let http = client();
    let digest = sha256_digest(bytes);
    let base = registry.url();
    let exists = request(
        &http,
        reqwest::Method::HEAD,
        &format!("{base}/v2/{repository}/blobs/{digest}"),
        auth,
    )
    .send()
    .expect("HEAD blob");
    if exists.status().as_u16() == 200 {
        return digest;
    }
    let started = request(
        &http,
        reqwest::Method::POST,
        &format!("{base}/v2/{repository}/blobs/uploads/"),
        auth,
    )
    .send()
    .expect("POST blob upload");
    let status = started.status().as_u16();
    let location = started
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    assert_eq!(
        status,
        202,
        "start upload to {repository}: {}",
        started.text().unwrap_or_default()
    );
    let location = location.expect("Location of the upload");
    // Absolute or relative, with or without a query (the registry's
    // `_state`): resolved against the registry, the digest appended.
    let mut url = url::Url::parse(&format!("{base}/"))
        .and_then(|base| base.join(&location))
        .unwrap_or_else(|error| panic!("upload location {location:?}: {error}"));
    url.query_pairs_mut().append_pair("digest", &digest);
    let finished = request(&http, reqwest::Method::PUT, url.as_str(), auth)
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .expect("PUT blob");
    let status = finished.status().as_u16();
    let answered = header(&finished, "docker-content-digest");
    assert_eq!(
        status,
        201,
        "finish upload of {digest} to {repository}: {}",
        finished.text().unwrap_or_default()
    );
    if let Some(answered) = answered {
        assert_eq!(answered, digest, "the registry's digest of the blob");
    }
    digest
}

fn header(response: &reqwest::blocking::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

/// PUTs `bytes` as a manifest (of `media_type`: an image manifest or an
/// index) under `reference` (a tag, or its digest); returns its digest.
pub fn push_manifest(
    registry: &Registry,
    auth: Option<(&str, &str)>,
    repository: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> String {
    let digest = sha256_digest(bytes);
    let response = request(
        &client(),
        reqwest::Method::PUT,
        &format!("{}/v2/{repository}/manifests/{reference}", registry.url()),
        auth,
    )
    .header("content-type", media_type)
    .body(bytes.to_vec())
    .send()
    .expect("PUT manifest");
    let status = response.status().as_u16();
    let answered = header(&response, "docker-content-digest");
    assert_eq!(
        status,
        201,
        "push manifest {repository}:{reference}: {}",
        response.text().unwrap_or_default()
    );
    if let Some(answered) = answered {
        assert_eq!(answered, digest, "the registry's digest of the manifest");
    }
    digest
}

/// Builds and pushes an image: the layers (bottom first), its OCI image
/// config (`linux`, the host's architecture unless `config.architecture`)
/// and its OCI image manifest, tagged `tag` in `repository`. Basic auth
/// with `auth`. Panics on any refusal.
pub fn push_image(
    registry: &Registry,
    auth: Option<(&str, &str)>,
    repository: &str,
    tag: &str,
    layers: &[Layer],
    config: &ImageConfig,
) -> Pushed {
    let mut layer_descriptors = Vec::new();
    let mut layer_digests = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in layers {
        let tar = layer.tar();
        diff_ids.push(sha256_digest(&tar));
        let blob = layer.compression.compress(&tar);
        let digest = push_blob(registry, auth, repository, &blob);
        layer_descriptors.push(json!({
            "mediaType": layer.compression.media_type(),
            "digest": digest,
            "size": blob.len(),
        }));
        layer_digests.push(digest);
    }
    let mut process = serde_json::Map::new();
    if let Some(entrypoint) = &config.entrypoint {
        process.insert("Entrypoint".into(), json!(entrypoint));
    }
    if let Some(cmd) = &config.cmd {
        process.insert("Cmd".into(), json!(cmd));
    }
    if !config.env.is_empty() {
        process.insert("Env".into(), json!(config.env));
    }
    if let Some(working_dir) = &config.working_dir {
        process.insert("WorkingDir".into(), json!(working_dir));
    }
    if let Some(user) = &config.user {
        process.insert("User".into(), json!(user));
    }
    let (architecture, variant) = split_platform(
        config
            .architecture
            .as_deref()
            .unwrap_or(host_architecture()),
    );
    let mut image_config = json!({
        "architecture": architecture,
        "os": "linux",
        "config": Value::Object(process),
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    if let Some(variant) = variant {
        image_config["variant"] = json!(variant);
    }
    let config_bytes = serde_json::to_vec(&image_config).expect("config JSON");
    let config_digest = push_blob(registry, auth, repository, &config_bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": layer_descriptors,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest JSON");
    let manifest_digest = push_manifest(
        registry,
        auth,
        repository,
        tag,
        OCI_MANIFEST,
        &manifest_bytes,
    );
    Pushed {
        manifest_digest,
        manifest_size: manifest_bytes.len() as u64,
        layer_digests,
        diff_ids,
        config_digest,
    }
}

/// Pushes an OCI image index under `tag`: one entry per (manifest digest,
/// manifest size, architecture — `arm64` or `arm64/v8`), all `linux`; the
/// manifests must be in `repository` already. Returns the index's digest.
pub fn push_index(
    registry: &Registry,
    auth: Option<(&str, &str)>,
    repository: &str,
    tag: &str,
    entries: &[(String, u64, &str)],
) -> String {
    let manifests: Vec<Value> = entries
        .iter()
        .map(|(digest, size, platform)| {
            let (architecture, variant) = split_platform(platform);
            let mut platform = json!({ "architecture": architecture, "os": "linux" });
            if let Some(variant) = variant {
                platform["variant"] = json!(variant);
            }
            json!({
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": size,
                "platform": platform,
            })
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    let bytes = serde_json::to_vec(&index).expect("index JSON");
    push_manifest(registry, auth, repository, tag, OCI_INDEX, &bytes)
}

/// Changes the stored bytes of blob `digest` (each of its first and last
/// 64 bytes inverted; the length kept), so the registry serves content
/// that no longer hashes to `digest` (it does not check on reads).
pub fn corrupt_blob(registry: &Registry, digest: &str) {
    let path = registry.blob_path(digest);
    let mut bytes =
        std::fs::read(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    assert!(!bytes.is_empty(), "blob {digest} is empty");
    let len = bytes.len();
    for (index, byte) in bytes.iter_mut().enumerate() {
        if index < 64 || index + 64 >= len {
            *byte = !*byte;
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap_or_else(|error| panic!("open {}: {error}", path.display()));
    file.write_all(&bytes).expect("write corrupted blob");
}
