//! Container image references and registry scopes, as OSMO matches a
//! user's registry credentials to a task's images.
//!
//! Invariants: a scope is `host[:port]/path` without a scheme, a trailing
//! `/` or the default port 443; Docker Hub is `registry-1.docker.io`
//! (an image without a registry host is Docker Hub's, under `library/`
//! when it has no namespace); a credential's scope covers an image when it
//! equals the image's scope or is a prefix of it ending at a `/`.

/// Docker Hub's registry host, as OSMO names it.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// The scope a registry credential's `registry` field names: scheme,
/// trailing `/` and `:443` dropped; empty or `docker.io` is Docker Hub.
pub fn registry_scope(registry: &str) -> String {
    let text = registry.trim();
    let text = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .unwrap_or(text)
        .trim_end_matches('/');
    let (host, path) = match text.split_once('/') {
        Some((host, path)) => (host, Some(path)),
        None => (text, None),
    };
    let host = host.strip_suffix(":443").unwrap_or(host);
    let host = match host {
        "" | "docker.io" | "index.docker.io" => DOCKER_HUB,
        other => other,
    };
    match path {
        Some(path) if !path.is_empty() => format!("{host}/{path}"),
        _ => host.to_string(),
    }
}

/// The scope of `image`: its registry host and repository path, without
/// tag or digest (`nvcr.io/nvidia/pytorch:24.01` → `nvcr.io/nvidia/pytorch`,
/// `ubuntu` → `registry-1.docker.io/library/ubuntu`).
pub fn image_scope(image: &str) -> String {
    let image = image.trim();
    let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
    // A tag is after the last `:` that follows the last `/`.
    let last_slash = without_digest.rfind('/').map_or(0, |at| at + 1);
    let name = match without_digest[last_slash..].rfind(':') {
        Some(colon) => &without_digest[..last_slash + colon],
        None => without_digest,
    };
    let (first, rest) = match name.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (name, None),
    };
    // The first part is a registry host when it looks like one.
    let is_host =
        rest.is_some() && (first.contains('.') || first.contains(':') || first == "localhost");
    match (is_host, rest) {
        (true, Some(rest)) => format!("{}/{rest}", registry_scope(first)),
        (false, Some(_)) => format!("{DOCKER_HUB}/{name}"),
        (_, None) => format!("{DOCKER_HUB}/library/{name}"),
    }
}

/// The registry host of a scope (what a Docker config's `auths` is keyed by
/// for a pull from it).
pub fn scope_host(scope: &str) -> &str {
    scope.split_once('/').map_or(scope, |(host, _)| host)
}

/// Whether a credential for `credential_scope` covers an image of
/// `image_scope`.
pub fn scope_covers(credential_scope: &str, image_scope: &str) -> bool {
    match image_scope.strip_prefix(credential_scope) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_have_osmo_scopes() {
        for (image, scope) in [
            ("ubuntu", "registry-1.docker.io/library/ubuntu"),
            ("ubuntu:24.04", "registry-1.docker.io/library/ubuntu"),
            ("nvidia/cuda:12.4", "registry-1.docker.io/nvidia/cuda"),
            ("nvcr.io/nvidia/pytorch:24.01-py3", "nvcr.io/nvidia/pytorch"),
            (
                "localhost:5000/team/app@sha256:abc",
                "localhost:5000/team/app",
            ),
            ("registry.example.com:443/a/b:1", "registry.example.com/a/b"),
            (
                "docker.io/library/alpine",
                "registry-1.docker.io/library/alpine",
            ),
        ] {
            assert_eq!(image_scope(image), scope, "{image}");
        }
    }

    #[test]
    fn registry_fields_normalise_and_cover_by_path_segments() {
        assert_eq!(registry_scope(""), DOCKER_HUB);
        assert_eq!(registry_scope("https://nvcr.io/"), "nvcr.io");
        assert_eq!(registry_scope("docker.io"), DOCKER_HUB);
        assert_eq!(registry_scope("ghcr.io:443/team"), "ghcr.io/team");
        assert!(scope_covers("nvcr.io", "nvcr.io/nvidia/pytorch"));
        assert!(scope_covers("nvcr.io/nvidia", "nvcr.io/nvidia/pytorch"));
        assert!(!scope_covers("nvcr.io/nvid", "nvcr.io/nvidia/pytorch"));
        assert!(!scope_covers("nvcr.io", "nvcr.io.evil.example/x"));
        assert_eq!(scope_host("nvcr.io/nvidia/pytorch"), "nvcr.io");
    }
}
