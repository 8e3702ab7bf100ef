//! The test registry itself (tests/common/registry.rs: Debian's
//! `docker-registry` on loopback) and the images the tests build: what is
//! pushed is served back byte for byte under its digests (manifest, config,
//! each layer; the layers' tars hold what was put in them, and busybox runs
//! from an unpacked one); htpasswd auth turns away requests without the
//! credentials and lets a push with them through; an OCI index lists its
//! platforms; a corrupted blob is served as it now is. Skips (saying so)
//! where docker-registry or busybox-static is missing, unless `CI=true`.

mod common;

use common::registry::{
    busybox_layer, corrupt_blob, foreign_architecture, gzip, have_busybox, host_architecture,
    push_image, push_index, sha256_digest, start_registry, Compression, Entry, ImageConfig, Layer,
    Registry, OCI_INDEX, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD, OCI_MANIFEST,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

struct Got {
    status: u16,
    content_type: String,
    digest: Option<String>,
    body: Vec<u8>,
}

fn get(url: &str, auth: Option<(&str, &str)>, accept: Option<&str>) -> Got {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let mut request = http.get(url);
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request
        .send()
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type").unwrap_or_default();
    let digest = header("docker-content-digest");
    let status = response.status().as_u16();
    let body = response.bytes().expect("body").to_vec();
    Got {
        status,
        content_type,
        digest,
        body,
    }
}

/// `gzip -dc` (gzip is essential in Debian): an independent reader of the
/// harness's gzip streams.
fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gzip");
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("gzip output");
    writer.join().unwrap().expect("feed gzip");
    assert!(
        output.status.success(),
        "gzip -dc: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `tar -tv` of GNU tar (essential in Debian): an independent reader of
/// the harness's archives.
fn gnu_tar_listing(tar: &[u8]) -> String {
    let mut child = Command::new("tar")
        .args(["-tv", "--numeric-owner", "-f", "-"])
        .env("TZ", "UTC")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tar");
    let mut stdin = child.stdin.take().unwrap();
    let input = tar.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("tar output");
    writer.join().unwrap().expect("feed tar");
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "tar -tv: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 listing")
}

fn decompress(media_type: &str, blob: &[u8]) -> Vec<u8> {
    match media_type {
        OCI_LAYER_TAR => blob.to_vec(),
        OCI_LAYER_GZIP => gunzip(blob),
        OCI_LAYER_ZSTD => zstd::decode_all(blob).expect("zstd layer"),
        other => panic!("unexpected layer media type {other}"),
    }
}

#[derive(Debug)]
struct TarEntry {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
}

/// The entries of a tar by path (directories with their trailing `/`).
fn tar_entries(tar: &[u8]) -> BTreeMap<String, TarEntry> {
    let mut archive = tar::Archive::new(tar);
    let mut found = BTreeMap::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let path = String::from_utf8(entry.path_bytes().into_owned()).expect("UTF-8 path");
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap();
        let uid = header.uid().unwrap();
        let gid = header.gid().unwrap();
        let mtime = header.mtime().unwrap();
        let link = entry
            .link_name_bytes()
            .map(|name| String::from_utf8(name.into_owned()).expect("UTF-8 link"));
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("tar data");
        found.insert(
            path,
            TarEntry {
                kind,
                mode,
                uid,
                gid,
                mtime,
                link,
                data,
            },
        );
    }
    found
}

fn small_layer(compression: Compression, name: &str, text: &str) -> Layer {
    Layer {
        entries: vec![
            Entry::dir("data", 0o755),
            Entry::file(&format!("data/{name}"), text, 0o644),
        ],
        compression,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

fn tags(registry: &Registry, auth: Option<(&str, &str)>, repository: &str) -> Value {
    let got = get(
        &format!("{}/v2/{repository}/tags/list", registry.url()),
        auth,
        None,
    );
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    serde_json::from_slice(&got.body).expect("tags JSON")
}

#[test]
fn a_pushed_image_is_served_back_under_its_digests() {
    let dir = tempfile::tempdir().unwrap();
    let Some(registry) = start_registry(dir.path(), None) else {
        return;
    };
    if !have_busybox() {
        return;
    }
    let layers = [
        busybox_layer(),
        Layer {
            entries: vec![
                Entry::file("etc/motd", "layer two\n", 0o644),
                Entry::hard_link("etc/motd.link", "/etc/motd"),
                Entry::whiteout("root/.profile"),
                Entry::opaque("var/cache"),
            ],
            compression: Compression::None,
        },
        Layer {
            entries: vec![
                Entry::dir("home/runner/data", 0o750).owned_by(1234, 1234),
                Entry::file("home/runner/data/hello.txt", "hello\n", 0o600).owned_by(1234, 1234),
            ],
            compression: Compression::Gzip,
        },
    ];
    let config = ImageConfig {
        entrypoint: Some(strings(&["/bin/sh", "-c"])),
        cmd: Some(strings(&["echo $GREETING"])),
        env: strings(&["PATH=/bin", "GREETING=hello from the image"]),
        working_dir: Some("/home/runner".into()),
        user: Some("runner".into()),
        architecture: None,
    };
    let repository = "gantry/busybox";
    let pushed = push_image(&registry, None, repository, "v1", &layers, &config);
    assert_eq!(pushed.layer_digests.len(), 3);

    // The manifest, by tag and by digest, is exactly what was pushed.
    let base = format!("{}/v2/{repository}", registry.url());
    let by_tag = get(&format!("{base}/manifests/v1"), None, Some(OCI_MANIFEST));
    assert_eq!(
        by_tag.status,
        200,
        "{}",
        String::from_utf8_lossy(&by_tag.body)
    );
    assert_eq!(by_tag.content_type, OCI_MANIFEST);
    assert_eq!(
        by_tag.digest.as_deref(),
        Some(pushed.manifest_digest.as_str())
    );
    assert_eq!(sha256_digest(&by_tag.body), pushed.manifest_digest);
    assert_eq!(by_tag.body.len() as u64, pushed.manifest_size);
    let by_digest = get(
        &format!("{base}/manifests/{}", pushed.manifest_digest),
        None,
        Some(OCI_MANIFEST),
    );
    assert_eq!(by_digest.status, 200);
    assert_eq!(by_digest.body, by_tag.body);
    let manifest: Value = serde_json::from_slice(&by_tag.body).expect("manifest JSON");
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(manifest["config"]["digest"], pushed.config_digest.as_str());
    let media_types: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| layer["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(media_types, [OCI_LAYER_ZSTD, OCI_LAYER_TAR, OCI_LAYER_GZIP]);

    // The config: platform, process settings, diff IDs.
    let config_blob = get(
        &format!("{base}/blobs/{}", pushed.config_digest),
        None,
        None,
    );
    assert_eq!(config_blob.status, 200);
    assert_eq!(sha256_digest(&config_blob.body), pushed.config_digest);
    assert_eq!(
        manifest["config"]["size"].as_u64(),
        Some(config_blob.body.len() as u64)
    );
    let image_config: Value = serde_json::from_slice(&config_blob.body).expect("config JSON");
    assert_eq!(image_config["architecture"], host_architecture());
    assert_eq!(image_config["os"], "linux");
    assert_eq!(
        image_config["config"]["Entrypoint"],
        serde_json::json!(["/bin/sh", "-c"])
    );
    assert_eq!(
        image_config["config"]["Cmd"],
        serde_json::json!(["echo $GREETING"])
    );
    assert_eq!(
        image_config["config"]["Env"],
        serde_json::json!(["PATH=/bin", "GREETING=hello from the image"])
    );
    assert_eq!(image_config["config"]["WorkingDir"], "/home/runner");
    assert_eq!(image_config["config"]["User"], "runner");
    assert_eq!(image_config["rootfs"]["type"], "layers");
    assert_eq!(
        image_config["rootfs"]["diff_ids"],
        serde_json::json!(pushed.diff_ids)
    );

    // Each layer: served under its digest, its tar under its diff ID.
    let mut tars = Vec::new();
    for (index, descriptor) in manifest["layers"].as_array().unwrap().iter().enumerate() {
        let digest = descriptor["digest"].as_str().unwrap();
        assert_eq!(digest, pushed.layer_digests[index]);
        let blob = get(&format!("{base}/blobs/{digest}"), None, None);
        assert_eq!(blob.status, 200, "layer {digest}");
        assert_eq!(sha256_digest(&blob.body), digest);
        assert_eq!(descriptor["size"].as_u64(), Some(blob.body.len() as u64));
        let tar = decompress(descriptor["mediaType"].as_str().unwrap(), &blob.body);
        assert_eq!(sha256_digest(&tar), pushed.diff_ids[index]);
        tars.push(tar);
    }

    // The busybox root filesystem.
    let rootfs = tar_entries(&tars[0]);
    let busybox = &rootfs["bin/busybox"];
    assert_eq!(busybox.kind, tar::EntryType::Regular);
    assert_eq!(busybox.mode, 0o755);
    assert_eq!(busybox.data, std::fs::read("/bin/busybox").unwrap());
    for applet in [
        "sh", "echo", "cat", "ls", "id", "env", "nc", "nslookup", "sleep", "rm",
    ] {
        let link = &rootfs[&format!("bin/{applet}")];
        assert_eq!(link.kind, tar::EntryType::Symlink, "bin/{applet}");
        assert_eq!(link.link.as_deref(), Some("busybox"), "bin/{applet}");
    }
    assert_eq!(rootfs["bin/printenv"].mode, 0o755);
    let passwd = String::from_utf8(rootfs["etc/passwd"].data.clone()).unwrap();
    assert!(passwd.contains("root:x:0:0:"), "{passwd}");
    assert!(
        passwd.contains("runner:x:1234:1234:runner:/home/runner:/bin/sh"),
        "{passwd}"
    );
    assert!(String::from_utf8_lossy(&rootfs["etc/group"].data).contains("runner:x:1234:"));
    let home = &rootfs["home/runner/"];
    assert_eq!(
        (home.kind, home.uid, home.gid),
        (tar::EntryType::Directory, 1234, 1234)
    );
    assert_eq!(rootfs["tmp/"].mode, 0o1777);
    assert!(rootfs.contains_key("root/"));
    assert!(rootfs.values().all(|entry| entry.mtime == 0));

    // The second and third layers: a hard link, whiteouts, owners.
    let two = tar_entries(&tars[1]);
    assert_eq!(two["etc/motd"].data, b"layer two\n");
    assert_eq!(two["etc/motd.link"].kind, tar::EntryType::Link);
    assert_eq!(two["etc/motd.link"].link.as_deref(), Some("etc/motd"));
    assert!(two.contains_key("root/.wh..profile"), "{:?}", two.keys());
    assert!(
        two.contains_key("var/cache/.wh..wh..opq"),
        "{:?}",
        two.keys()
    );
    let three = tar_entries(&tars[2]);
    let hello = &three["home/runner/data/hello.txt"];
    assert_eq!((hello.uid, hello.gid, hello.mode), (1234, 1234, 0o600));
    assert_eq!(hello.data, b"hello\n");

    // Busybox runs from the unpacked layer (static: no loader needed).
    let unpacked = tempfile::tempdir().unwrap();
    tar::Archive::new(tars[0].as_slice())
        .unpack(unpacked.path())
        .expect("unpack the busybox layer");
    let shell = unpacked.path().join("bin/sh");
    let output = Command::new(&shell)
        .args(["-c", "echo $((6 * 7))"])
        .output()
        .expect("run bin/sh");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "42\n",
        "{output:?}"
    );
    let output = Command::new(&shell)
        .arg(unpacked.path().join("bin/printenv"))
        .args(["GREETING", "UNSET_HERE"])
        .env("GREETING", "hi")
        .env_remove("UNSET_HERE")
        .output()
        .expect("run bin/printenv");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hi\n",
        "{output:?}"
    );
    assert_eq!(output.status.code(), Some(1), "one variable was unset");

    assert_eq!(
        tags(&registry, None, repository),
        serde_json::json!({ "name": repository, "tags": ["v1"] })
    );
}

#[test]
fn htpasswd_auth_turns_away_requests_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = ("puller", "correct horse battery");
    let Some(registry) = start_registry(dir.path(), Some(credentials)) else {
        return;
    };
    let root = format!("{}/v2/", registry.url());
    let anonymous = reqwest::blocking::get(&root).expect("GET /v2/");
    assert_eq!(anonymous.status().as_u16(), 401);
    let challenge = anonymous
        .headers()
        .get("www-authenticate")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(challenge.starts_with("Basic "), "{challenge}");
    assert_eq!(get(&root, Some(credentials), None).status, 200);
    assert_eq!(get(&root, Some(("puller", "wrong")), None).status, 401);
    assert_eq!(
        get(&root, Some(("someone", credentials.1)), None).status,
        401
    );

    // Without credentials no upload starts.
    let upload = reqwest::blocking::Client::new()
        .post(format!("{}/v2/private/app/blobs/uploads/", registry.url()))
        .send()
        .expect("POST upload");
    assert_eq!(upload.status().as_u16(), 401);

    let layers = [small_layer(
        Compression::Zstd,
        "secret.txt",
        "only for puller\n",
    )];
    let pushed = push_image(
        &registry,
        Some(credentials),
        "private/app",
        "latest",
        &layers,
        &ImageConfig {
            cmd: Some(strings(&["/bin/true"])),
            ..ImageConfig::default()
        },
    );
    let manifest_url = format!("{}/v2/private/app/manifests/latest", registry.url());
    let with = get(&manifest_url, Some(credentials), Some(OCI_MANIFEST));
    assert_eq!(with.status, 200);
    assert_eq!(sha256_digest(&with.body), pushed.manifest_digest);
    assert_eq!(get(&manifest_url, None, Some(OCI_MANIFEST)).status, 401);
    let blob_url = format!(
        "{}/v2/private/app/blobs/{}",
        registry.url(),
        pushed.layer_digests[0]
    );
    assert_eq!(get(&blob_url, None, None).status, 401);
    let blob = get(&blob_url, Some(credentials), None);
    assert_eq!(blob.status, 200);
    assert_eq!(sha256_digest(&blob.body), pushed.layer_digests[0]);
    assert_eq!(
        tags(&registry, Some(credentials), "private/app")["tags"],
        serde_json::json!(["latest"])
    );
}

#[test]
fn an_index_lists_an_image_per_platform() {
    let dir = tempfile::tempdir().unwrap();
    let Some(registry) = start_registry(dir.path(), None) else {
        return;
    };
    let repository = "multi/arch";
    let host = push_image(
        &registry,
        None,
        repository,
        "host",
        &[small_layer(Compression::Zstd, "arch", host_architecture())],
        &ImageConfig::default(),
    );
    let foreign_platform = match foreign_architecture() {
        "arm64" => "arm64/v8".to_string(),
        other => other.to_string(),
    };
    let foreign = push_image(
        &registry,
        None,
        repository,
        "foreign",
        &[small_layer(
            Compression::None,
            "arch",
            foreign_architecture(),
        )],
        &ImageConfig {
            architecture: Some(foreign_platform.clone()),
            ..ImageConfig::default()
        },
    );
    let index_digest = push_index(
        &registry,
        None,
        repository,
        "latest",
        &[
            (
                foreign.manifest_digest.clone(),
                foreign.manifest_size,
                foreign_platform.as_str(),
            ),
            (
                host.manifest_digest.clone(),
                host.manifest_size,
                host_architecture(),
            ),
        ],
    );

    let base = format!("{}/v2/{repository}", registry.url());
    let got = get(&format!("{base}/manifests/latest"), None, Some(OCI_INDEX));
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.content_type, OCI_INDEX);
    assert_eq!(got.digest.as_deref(), Some(index_digest.as_str()));
    assert_eq!(sha256_digest(&got.body), index_digest);
    let index: Value = serde_json::from_slice(&got.body).expect("index JSON");
    assert_eq!(index["mediaType"], OCI_INDEX);
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let (foreign_architecture_name, foreign_variant) = foreign_platform
        .split_once('/')
        .map(|(architecture, variant)| (architecture, Some(variant)))
        .unwrap_or((foreign_platform.as_str(), None));
    assert_eq!(entries[0]["digest"], foreign.manifest_digest.as_str());
    assert_eq!(
        entries[0]["platform"]["architecture"],
        foreign_architecture_name
    );
    assert_eq!(entries[0]["platform"]["variant"].as_str(), foreign_variant);
    assert_eq!(entries[1]["digest"], host.manifest_digest.as_str());
    assert_eq!(entries[1]["platform"]["architecture"], host_architecture());
    assert_eq!(entries[1]["platform"]["os"], "linux");

    // Each entry resolves to its manifest and its config's platform.
    for (entry, pushed, architecture) in [
        (&entries[0], &foreign, foreign_architecture_name),
        (&entries[1], &host, host_architecture()),
    ] {
        let manifest = get(
            &format!("{base}/manifests/{}", entry["digest"].as_str().unwrap()),
            None,
            Some(OCI_MANIFEST),
        );
        assert_eq!(manifest.status, 200);
        assert_eq!(entry["size"].as_u64(), Some(manifest.body.len() as u64));
        let config = get(
            &format!("{base}/blobs/{}", pushed.config_digest),
            None,
            None,
        );
        let config: Value = serde_json::from_slice(&config.body).expect("config JSON");
        assert_eq!(config["architecture"], architecture);
    }
    let mut listed: Vec<String> =
        serde_json::from_value(tags(&registry, None, repository)["tags"].clone()).expect("tags");
    listed.sort();
    assert_eq!(listed, ["foreign", "host", "latest"]);
}

#[test]
fn a_corrupted_blob_is_served_as_it_now_is() {
    let dir = tempfile::tempdir().unwrap();
    let Some(registry) = start_registry(dir.path(), None) else {
        return;
    };
    let pushed = push_image(
        &registry,
        None,
        "broken/image",
        "v1",
        &[small_layer(
            Compression::Gzip,
            "payload",
            &"x".repeat(10_000),
        )],
        &ImageConfig::default(),
    );
    let digest = &pushed.layer_digests[0];
    let url = format!("{}/v2/broken/image/blobs/{digest}", registry.url());
    let before = get(&url, None, None);
    assert_eq!(before.status, 200);
    assert_eq!(&sha256_digest(&before.body), digest);

    corrupt_blob(&registry, digest);
    let after = get(&url, None, None);
    assert_eq!(after.status, 200, "the registry still serves the blob");
    assert_eq!(after.body.len(), before.body.len(), "same length");
    assert_ne!(
        &sha256_digest(&after.body),
        digest,
        "the bytes no longer match"
    );
    assert_ne!(after.body, before.body);
    // The manifest still names the digest the bytes no longer have.
    let manifest = get(
        &format!("{}/v2/broken/image/manifests/v1", registry.url()),
        None,
        Some(OCI_MANIFEST),
    );
    let manifest: Value = serde_json::from_slice(&manifest.body).expect("manifest JSON");
    assert_eq!(manifest["layers"][0]["digest"], digest.as_str());
}

#[test]
fn layers_are_deterministic_and_gzip_is_readable() {
    let layer = Layer {
        entries: vec![
            Entry::dir("/opt/app", 0o755),
            Entry::file("/opt/app/run", "#!/bin/sh\necho hi\n", 0o755),
            Entry::symlink("/opt/app/current", "run"),
            Entry::hard_link("/opt/app/again", "/opt/app/run"),
            Entry::dir("/home/user", 0o700).owned_by(1234, 1234),
            Entry::file(
                &format!("/opt/{}/long", "d".repeat(150)),
                "long path",
                0o644,
            ),
            Entry::whiteout("/opt/old"),
            Entry::whiteout("gone"),
        ],
        compression: Compression::Gzip,
    };
    assert_eq!(layer.tar(), layer.tar());
    assert_eq!(layer.blob(), layer.blob());
    assert_eq!(gunzip(&layer.blob()), layer.tar());
    let entries = tar_entries(&layer.tar());
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert!(names.contains(&"opt/app/"), "{names:?}");
    assert!(names.contains(&"opt/.wh.old"), "{names:?}");
    assert!(names.contains(&".wh.gone"), "{names:?}");
    let long = format!("opt/{}/long", "d".repeat(150));
    assert_eq!(entries[&long].data, b"long path");
    let listing = gnu_tar_listing(&layer.tar());
    for line in [
        "drwxr-xr-x 0/0               0 1970-01-01 00:00 opt/app/",
        "-rwxr-xr-x 0/0              18 1970-01-01 00:00 opt/app/run",
        "lrwxrwxrwx 0/0               0 1970-01-01 00:00 opt/app/current -> run",
        "hrw-r--r-- 0/0               0 1970-01-01 00:00 opt/app/again link to opt/app/run",
        "drwx------ 1234/1234         0 1970-01-01 00:00 home/user/",
    ] {
        assert!(listing.contains(line), "{line:?} not in:\n{listing}");
    }
    assert!(listing.contains(&long), "{listing}");
    // Empty, one-block and multi-block gzip streams.
    for size in [0, 1, 65_535, 65_536, 200_000] {
        let data: Vec<u8> = (0..size).map(|index| (index % 251) as u8).collect();
        assert_eq!(gunzip(&gzip(&data)), data, "{size} bytes");
    }
}
