//! A user's credentials (OSMO's `/api/credentials`): set, list, delete.
//!
//! Invariants: a credential's values are sealed with the cluster key here,
//! before they are proposed, and never leave the control plane through this
//! API (list and delete answer only the name, type and profile); a server
//! without a cluster key refuses to store one; a name holds one type, and a
//! registry or endpoint one credential of its user (the one a pull or a URL
//! then uses is never ambiguous); every field of the body is checked before
//! anything is proposed, and an error names it.

use super::auth::Caller;
use super::error::ApiError;
use super::workflow::{propose_gated, read_body};
use super::AppState;
use crate::clock::now_ms;
use crate::image_ref::registry_scope;
use crate::secrets::SecretError;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use gantry_storage::config::workflow::DataCredential;
use gantry_storage::{
    is_credential_name, Command, CredentialKind, CredentialRecord, Outcome,
    CREDENTIAL_KEY_BYTES_MAX, CREDENTIAL_NAME_BYTES_MAX, CREDENTIAL_SEALED_BYTES_MAX,
};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Largest plaintext of one credential's values, in bytes.
pub const CREDENTIAL_VALUES_BYTES_MAX: usize = 64 * 1024;
/// The largest request body this route reads.
const BODY_BYTES_MAX: usize = 2 * CREDENTIAL_VALUES_BYTES_MAX;

fn usage(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("USER", message)
}

/// One row of OSMO's `CredentialGetResponse`.
fn credential_view(name: &str, credential: &CredentialRecord) -> Value {
    let profile = match credential.kind {
        CredentialKind::Generic => Value::Null,
        _ => Value::String(credential.profile.clone()),
    };
    json!({"cred_name": name, "cred_type": credential.kind.as_str(), "profile": profile})
}

/// OSMO's order: DATA, then REGISTRY, then GENERIC, each by name.
fn type_order(kind: CredentialKind) -> u8 {
    match kind {
        CredentialKind::Data => 0,
        CredentialKind::Registry => 1,
        CredentialKind::Generic => 2,
    }
}

/// `GET /api/credentials`: the caller's credentials, without values.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let mut credentials = state.node.read().await?.credentials(&caller.user)?;
    credentials.sort_by(|(a_name, a), (b_name, b)| {
        (type_order(a.kind), a_name).cmp(&(type_order(b.kind), b_name))
    });
    let rows: Vec<Value> = credentials
        .iter()
        .map(|(name, credential)| credential_view(name, credential))
        .collect();
    Ok(Json(json!({ "credentials": rows })))
}

/// `DELETE /api/credentials/{cred_name}`: answers the credential removed.
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(existing) = state.node.read().await?.credential(&caller.user, &name)? else {
        return Err(ApiError::not_found(format!(
            "Credential {name} does not exist"
        )));
    };
    let command = Command::DeleteCredential {
        user: caller.user.clone(),
        name: name.clone(),
    };
    match propose_gated(&state, "user credentials", command).await? {
        Outcome::Applied => Ok(Json(
            json!({ "credentials": [credential_view(&name, &existing)] }),
        )),
        Outcome::Rejected(rejection) => Err(ApiError::from_rejection(rejection)),
        other => Err(unexpected(other)),
    }
}

fn unexpected(outcome: Outcome) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "SERVER",
        format!("Internal server error: unexpected outcome {outcome:?}"),
    )
}

/// A credential as the body of a set gives it, checked, values still clear.
#[derive(Debug)]
struct Submitted {
    kind: CredentialKind,
    profile: String,
    values: BTreeMap<String, String>,
}

/// `POST /api/credentials/{cred_name}`: creates or replaces one of the
/// caller's credentials (OSMO's `CredentialOptions` body; answers `null`).
pub async fn set(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    if !is_credential_name(&name) {
        return Err(usage(format!(
            "cred_name: invalid name '{name}': follow the regex ^[a-zA-Z]([a-zA-Z0-9_-]*[a-zA-Z0-9])?$ (at most {CREDENTIAL_NAME_BYTES_MAX} characters)"
        )));
    }
    let bytes = read_body(body, BODY_BYTES_MAX.min(state.config.body_bytes_max)).await?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|error| usage(format!("the request body is not JSON: {error}")))?;
    let submitted = parse_options(&body)?;
    let view = state.node.read().await?;
    let owned = view.credentials(&caller.user)?;
    for (other_name, other) in &owned {
        if *other_name == name && other.kind != submitted.kind {
            return Err(usage(format!(
                "cred_name: credential '{name}' exists with type {}; delete it before setting it as {}",
                other.kind.as_str(),
                submitted.kind.as_str()
            )));
        }
        if *other_name != name
            && other.kind == submitted.kind
            && submitted.kind != CredentialKind::Generic
            && other.profile == submitted.profile
        {
            let field = match submitted.kind {
                CredentialKind::Registry => "registry_credential.registry",
                _ => "data_credential.endpoint",
            };
            return Err(usage(format!(
                "{field}: credential '{other_name}' is already for {}; a user has one credential per {}, so update or delete that one",
                submitted.profile,
                if submitted.kind == CredentialKind::Registry { "registry" } else { "endpoint" },
            )));
        }
    }
    drop(view);
    let sealed = crate::secrets::seal_values(&submitted.values).map_err(|error| match error {
        SecretError::NoKey => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SERVER", error.to_string())
        }
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER",
            other.to_string(),
        ),
    })?;
    if sealed.len() > CREDENTIAL_SEALED_BYTES_MAX {
        return Err(usage(format!(
            "its values take {} bytes once encoded and sealed, over the limit of {CREDENTIAL_SEALED_BYTES_MAX}: send fewer or shorter values",
            sealed.len()
        )));
    }
    let command = Command::PutCredential {
        now: now_ms(),
        user: caller.user.clone(),
        name,
        only_if_sealed: None,
        credential: CredentialRecord {
            kind: submitted.kind,
            profile: submitted.profile,
            keys: submitted.values.keys().cloned().collect(),
            sealed,
            updated: 0,
        },
    };
    match propose_gated(&state, "user credentials", command).await? {
        Outcome::Applied => Ok(Json(Value::Null)),
        Outcome::Rejected(rejection) => Err(ApiError::from_rejection(rejection)),
        other => Err(unexpected(other)),
    }
}

/// Every user credential not sealed under the newest cluster key, sealed
/// again under it (after `gantry cluster key rotate`); how many were.
pub async fn reseal_all(state: &AppState) -> Result<usize, ApiError> {
    let Some(ring) = crate::secrets::ring() else {
        return Ok(0);
    };
    let current = format!("{}{}:", crate::secrets::SEALED_PREFIX, ring.primary());
    let stored = state.node.read().await?.all_credentials()?;
    let mut resealed = 0;
    for (user, name, credential) in stored {
        if credential.sealed.starts_with(&current) {
            continue;
        }
        let server_error = |error: SecretError| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SERVER",
                format!("credential '{name}' of {user}: {error}"),
            )
        };
        let values = crate::secrets::open_values(&credential.sealed).map_err(server_error)?;
        let sealed = crate::secrets::seal_values(&values).map_err(server_error)?;
        // Only over the value read: one deleted or replaced meanwhile is
        // left as its user left it (its new value is sealed anew).
        let only_if_sealed = Some(credential.sealed.clone());
        let command = Command::PutCredential {
            now: now_ms(),
            user: user.clone(),
            name: name.clone(),
            only_if_sealed,
            credential: CredentialRecord {
                sealed,
                ..credential
            },
        };
        match propose_gated(state, "user credentials", command).await? {
            Outcome::Applied => resealed += 1,
            Outcome::Rejected(_) => {}
            other => return Err(unexpected(other)),
        }
    }
    Ok(resealed)
}

const OPTIONS: [&str; 3] = [
    "registry_credential",
    "data_credential",
    "generic_credential",
];

/// OSMO's `CredentialOptions`: exactly one of its three fields.
fn parse_options(body: &Value) -> Result<Submitted, ApiError> {
    let object = body
        .as_object()
        .ok_or_else(|| usage("the request body must be a JSON object"))?;
    if let Some(unknown) = object.keys().find(|key| !OPTIONS.contains(&key.as_str())) {
        return Err(usage(format!(
            "{unknown}: not a field of a credential (one of {})",
            OPTIONS.join(", ")
        )));
    }
    let set: Vec<(&String, &Value)> = object
        .iter()
        .filter(|(_, value)| !value.is_null())
        .collect();
    let [(field, value)] = set.as_slice() else {
        return Err(usage(format!(
            "exactly one of {} must be set",
            OPTIONS.join(", ")
        )));
    };
    let fields = value
        .as_object()
        .ok_or_else(|| usage(format!("{field}: must be an object")))?;
    let submitted = match field.as_str() {
        "registry_credential" => registry(fields)?,
        "data_credential" => data(fields)?,
        _ => generic(fields)?,
    };
    if let Some((key, _)) = submitted
        .values
        .iter()
        .find(|(_, value)| value.contains('\0'))
    {
        return Err(usage(format!("{field}.{key}: must not contain NUL")));
    }
    let size: usize = submitted
        .values
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if size > CREDENTIAL_VALUES_BYTES_MAX {
        return Err(usage(format!(
            "{field}: its values take {size} bytes, over the limit of {CREDENTIAL_VALUES_BYTES_MAX}"
        )));
    }
    Ok(submitted)
}

/// The string fields of `fields` (each of `allowed`), refusing others.
fn strings(
    at: &str,
    fields: &Map<String, Value>,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for (key, value) in fields {
        if !allowed.contains(&key.as_str()) {
            return Err(usage(format!(
                "{at}.{key}: not a field of {at} (one of {})",
                allowed.join(", ")
            )));
        }
        match value {
            Value::Null => {}
            Value::String(text) => {
                out.insert(key.clone(), text.clone());
            }
            _ => return Err(usage(format!("{at}.{key}: must be a string"))),
        }
    }
    Ok(out)
}

fn registry(fields: &Map<String, Value>) -> Result<Submitted, ApiError> {
    const AT: &str = "registry_credential";
    let mut values = strings(AT, fields, &["registry", "username", "auth"])?;
    if values.get("auth").is_none_or(String::is_empty) {
        return Err(usage(format!(
            "{AT}.auth: required (the registry's password or token)"
        )));
    }
    let profile = registry_scope(values.get("registry").map_or("", String::as_str));
    values.insert("registry".into(), profile.clone());
    values.entry("username".into()).or_default();
    Ok(Submitted {
        kind: CredentialKind::Registry,
        profile,
        values,
    })
}

fn data(fields: &Map<String, Value>) -> Result<Submitted, ApiError> {
    const AT: &str = "data_credential";
    let values = strings(
        AT,
        fields,
        &[
            "endpoint",
            "region",
            "override_url",
            "addressing_style",
            "access_key_id",
            "access_key",
        ],
    )?;
    for required in ["endpoint", "access_key_id", "access_key"] {
        if values.get(required).is_none_or(String::is_empty) {
            return Err(usage(format!("{AT}.{required}: required")));
        }
    }
    let credential: DataCredential = serde_json::from_value(Value::Object(fields.clone()))
        .map_err(|error| usage(format!("{AT}: {error}")))?;
    let profile = credential.root().to_string();
    // A user's store is reached by the executor on its host, outside the
    // task's sandbox: never a host directory. Checked before the config's
    // own check, whose message offers file:// URLs.
    if !profile.starts_with("s3://") {
        return Err(usage(format!(
            "{AT}.endpoint: '{profile}' is not s3://bucket[/prefix] (a user's data credential is for an object store)"
        )));
    }
    credential.check(AT).map_err(usage)?;
    if let Some(url) = &credential.override_url {
        check_override_url(url)?;
    }
    let mut values = values;
    values.insert("endpoint".into(), profile.clone());
    Ok(Submitted {
        kind: CredentialKind::Data,
        profile,
        values,
    })
}

/// An S3 service a user names is asked by the executor from its host:
/// never a link-local address (cloud metadata services answer there).
fn check_override_url(text: &str) -> Result<(), ApiError> {
    const AT: &str = "data_credential.override_url";
    let url = url::Url::parse(text).map_err(|error| usage(format!("{AT}: '{text}': {error}")))?;
    let refused = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_link_local() || ip.is_unspecified() || ip.is_broadcast(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_unspecified()
                || (ip.segments()[0] & 0xffc0) == 0xfe80
                || ip.segments()[0] == 0xfd00
        }
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("metadata.google.internal"),
        None => true,
    };
    if refused {
        return Err(usage(format!(
            "{AT}: '{text}' is a link-local or metadata address, which a user's credential may not name"
        )));
    }
    Ok(())
}

/// A generic credential's keys become file names under a task's mount
/// directory, so they are plain names: no `/`, not `.` or `..`.
fn is_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= CREDENTIAL_KEY_BYTES_MAX
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn generic(fields: &Map<String, Value>) -> Result<Submitted, ApiError> {
    const AT: &str = "generic_credential";
    if let Some(unknown) = fields.keys().find(|key| key.as_str() != "credential") {
        return Err(usage(format!(
            "{AT}.{unknown}: not a field of {AT} (its keys and values go in {AT}.credential)"
        )));
    }
    let map = fields
        .get("credential")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            usage(format!(
                "{AT}.credential: required, an object of keys and values"
            ))
        })?;
    if map.is_empty() {
        return Err(usage(format!("{AT}.credential: needs at least one key")));
    }
    let mut values = BTreeMap::new();
    for (key, value) in map {
        if !is_key(key) {
            return Err(usage(format!(
                "{AT}.credential.{key}: a key is letters, digits, '.', '_' and '-' (at most {CREDENTIAL_KEY_BYTES_MAX}), not '.' or '..': it may become a file name"
            )));
        }
        let Value::String(text) = value else {
            return Err(usage(format!("{AT}.credential.{key}: must be a string")));
        };
        values.insert(key.clone(), text.clone());
    }
    Ok(Submitted {
        kind: CredentialKind::Generic,
        profile: String::new(),
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(body: Value) -> String {
        parse_options(&body).expect_err("refused").message
    }

    #[test]
    fn each_type_reads_with_its_profile() {
        let registry = parse_options(&json!({"registry_credential": {"registry": "https://nvcr.io/", "username": "$oauthtoken", "auth": "nvapi-123"}})).unwrap();
        assert_eq!(registry.kind, CredentialKind::Registry);
        assert_eq!(registry.profile, "nvcr.io");
        let data = parse_options(&json!({"data_credential": {"endpoint": "s3://bucket/", "access_key_id": "AKIA", "access_key": "secret"}, "registry_credential": null})).unwrap();
        assert_eq!(data.profile, "s3://bucket");
        assert_eq!(data.values["endpoint"], "s3://bucket");
        let generic = parse_options(
            &json!({"generic_credential": {"credential": {"token": "hf_abc", "user.name": "x"}}}),
        )
        .unwrap();
        assert_eq!(generic.profile, "");
        assert_eq!(generic.values.len(), 2);
    }

    #[test]
    fn bad_bodies_name_their_field() {
        for (body, wanted) in [
            (json!({}), "exactly one of"),
            (
                json!({"registry_credential": {"auth": "a"}, "generic_credential": {"credential": {"a": "b"}}}),
                "exactly one of",
            ),
            (json!({"ssh_credential": {}}), "ssh_credential: not a field"),
            (
                json!({"registry_credential": {"password": "p"}}),
                "registry_credential.password: not a field",
            ),
            (
                json!({"registry_credential": {"registry": "nvcr.io"}}),
                "registry_credential.auth: required",
            ),
            (
                json!({"data_credential": {"endpoint": "s3://b", "access_key_id": "a"}}),
                "data_credential.access_key: required",
            ),
            (
                json!({"data_credential": {"endpoint": "ftp://b", "access_key_id": "a", "access_key": "k"}}),
                "data_credential.endpoint",
            ),
            (
                json!({"generic_credential": {"credential": {}}}),
                "at least one key",
            ),
            (
                json!({"generic_credential": {"credential": {"../etc": "x"}}}),
                "generic_credential.credential.../etc",
            ),
            (
                json!({"generic_credential": {"credential": {"a": 1}}}),
                "generic_credential.credential.a: must be a string",
            ),
            (
                json!({"generic_credential": {"credential": {"a": "x\u{0}--bind"}}}),
                "generic_credential.a: must not contain NUL",
            ),
            (
                json!({"generic_credential": {"credential": {"a": "x".repeat(CREDENTIAL_VALUES_BYTES_MAX)}}}),
                "over the limit",
            ),
        ] {
            let message = error_of(body.clone());
            assert!(message.contains(wanted), "{body}: {message}");
        }
    }
}
