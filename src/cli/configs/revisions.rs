//! The config verbs on revisions, as OSMO's CLI has them: a revision is
//! named `TYPE:REV` (`POOL:3`), and a TYPE alone means its latest
//! revision. `show TYPE:REV [NAME...]`, `tag TYPE[:REV] --set/--delete`,
//! `diff TYPE[:REV] [TYPE[:REV]]`, `delete TYPE:REV`, `list`, and
//! `set ROLE NAME pool|backend`.
//!
//! Invariant: a reference is checked (type, revision from 1, both sides of
//! a diff of one type) before any request.

use super::unified_diff;
use crate::cli::client::Client;
use crate::cli::output::{self, print_json, text_field, NONE};
use crate::cli::{ClientArgs, OutputFormat};
use gantry_storage::ConfigType;
use reqwest::Method;
use serde_json::{json, Value};

/// `TYPE` or `TYPE:REV`.
pub fn parse_ref(text: &str) -> anyhow::Result<(ConfigType, Option<u64>)> {
    let (type_text, revision) = match text.split_once(':') {
        Some((type_text, revision)) => (type_text, Some(revision)),
        None => (text, None),
    };
    let config_type = type_text
        .parse::<ConfigType>()
        .map_err(anyhow::Error::msg)?;
    let revision = revision
        .map(|revision| match revision.parse::<u64>() {
            Ok(number) if number > 0 => Ok(number),
            _ => Err(anyhow::anyhow!(
                "'{text}': the revision after ':' must be a whole number from 1 (e.g. {}:3)",
                config_type.as_str()
            )),
        })
        .transpose()?;
    Ok((config_type, revision))
}

/// `/api/configs/history/<type>/revision/<rev>`, as OSMO's CLI spells it.
fn revision_path(config_type: ConfigType, revision: u64) -> String {
    format!(
        "/api/configs/history/{}/revision/{revision}",
        config_type.as_str().to_ascii_lowercase()
    )
}

/// The newest revision of `config_type` (OSMO's "current revision" of a type).
async fn latest_revision(client: &Client, config_type: ConfigType) -> anyhow::Result<u64> {
    let query = [
        ("config_types", config_type.as_str().to_string()),
        ("order", "DESC".to_string()),
        ("limit", "1".to_string()),
        ("omit_data", "true".to_string()),
    ];
    let history = client
        .call(Method::GET, "/api/configs/history", &query, None)
        .await?;
    history["configs"][0]["revision"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("{config_type} has no revisions yet"))
}

async fn resolve(
    client: &Client,
    config_type: ConfigType,
    revision: Option<u64>,
) -> anyhow::Result<u64> {
    match revision {
        Some(revision) => Ok(revision),
        None => latest_revision(client, config_type).await,
    }
}

/// `show TYPE:REV [NAME...]`: the revision's data, indexed by NAMEs (a
/// first NAME that is the revision's config is its data itself).
pub async fn show(
    client: &Client,
    config_type: ConfigType,
    revision: u64,
    names: &[String],
) -> anyhow::Result<()> {
    let query = [
        ("config_types", config_type.as_str().to_string()),
        ("revision", revision.to_string()),
        ("omit_data", "false".to_string()),
    ];
    let history = client
        .call(Method::GET, "/api/configs/history", &query, None)
        .await?;
    let Some(entry) = history["configs"].get(0) else {
        anyhow::bail!("{config_type} has no revision {revision}");
    };
    let mut names = names;
    if names.first().map(String::as_str) == entry["name"].as_str().filter(|n| !n.is_empty()) {
        names = &names[1..];
    }
    print_json(&index_into(entry["data"].clone(), names)?)
}

/// OSMO's `config show` indexing: object keys, list indexes, and a list of
/// named objects by name.
pub fn index_into(mut data: Value, names: &[String]) -> anyhow::Result<Value> {
    for name in names {
        data = match data {
            Value::Object(mut map) => match map.remove(name) {
                Some(value) => value,
                None => anyhow::bail!("'{name}' is not a key here (keys: {})", {
                    let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                    keys.join(", ")
                }),
            },
            Value::Array(mut items) => {
                if let Some(at) = items.iter().position(|item| item["name"] == name.as_str()) {
                    items.swap_remove(at)
                } else {
                    let index: usize = name.parse().map_err(|_| {
                        anyhow::anyhow!("expected an index into a list, got '{name}'")
                    })?;
                    let len = items.len();
                    if index >= len {
                        anyhow::bail!("index {index} out of range for a list of length {len}");
                    }
                    items.swap_remove(index)
                }
            }
            other => anyhow::bail!("cannot index into {other} with '{name}'"),
        };
    }
    Ok(data)
}

/// `tag TYPE[:REV] --set A B --delete C`.
pub async fn tag(
    args: &ClientArgs,
    client: &Client,
    reference: &str,
    set: Vec<String>,
    delete: Vec<String>,
) -> anyhow::Result<()> {
    let (config_type, revision) = parse_ref(reference)?;
    if set.is_empty() && delete.is_empty() {
        anyhow::bail!("nothing to do: give tags with --set and/or --delete");
    }
    let revision = resolve(client, config_type, revision).await?;
    let body = json!({ "set_tags": set, "delete_tags": delete });
    let path = format!("{}/tags", revision_path(config_type, revision));
    let reply = client.call(Method::POST, &path, &[], Some(&body)).await?;
    if args.format == OutputFormat::Json {
        return print_json(&reply);
    }
    let tags: Vec<&str> = reply["tags"]
        .as_array()
        .map(|tags| tags.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!(
        "{config_type}:{revision}{}: tags {}",
        named(&reply),
        if tags.is_empty() {
            NONE.to_string()
        } else {
            tags.join(", ")
        }
    );
    Ok(())
}

/// ` 'name'` for a named config's reply, nothing for a singleton's.
fn named(reply: &Value) -> String {
    match reply["name"].as_str() {
        Some(name) if !name.is_empty() => format!(" ('{name}')"),
        _ => String::new(),
    }
}

/// `delete TYPE:REV`: the revision leaves the history.
pub async fn delete(
    args: &ClientArgs,
    client: &Client,
    config_type: ConfigType,
    revision: u64,
) -> anyhow::Result<()> {
    let reply = client
        .call(
            Method::DELETE,
            &revision_path(config_type, revision),
            &[],
            None,
        )
        .await?;
    if args.format == OutputFormat::Json {
        return print_json(&reply);
    }
    println!(
        "Deleted revision {revision} of {config_type}{} from its history",
        named(&reply)
    );
    Ok(())
}

/// `diff TYPE[:REV] [TYPE[:REV]]`: the first revision against the second,
/// or against the type's latest.
pub async fn diff(
    args: &ClientArgs,
    client: &Client,
    first: &str,
    second: Option<&str>,
) -> anyhow::Result<()> {
    let (config_type, first_revision) = parse_ref(first)?;
    let second_revision = match second {
        None => None,
        Some(second) => {
            let (second_type, revision) = parse_ref(second)?;
            if second_type != config_type {
                anyhow::bail!(
                    "config type mismatch: {second_type} != {config_type}; diff two revisions of one type"
                );
            }
            revision
        }
    };
    let first_revision = resolve(client, config_type, first_revision).await?;
    let second_revision = resolve(client, config_type, second_revision).await?;
    let query = [
        ("config_type", config_type.as_str().to_string()),
        ("first_revision", first_revision.to_string()),
        ("second_revision", second_revision.to_string()),
    ];
    let reply = client
        .call(Method::GET, "/api/configs/diff", &query, None)
        .await?;
    if args.format == OutputFormat::Json {
        return print_json(&json!({
            "config_type": config_type.as_str(),
            "first_revision": first_revision,
            "second_revision": second_revision,
            "first_data": reply["first_data"],
            "second_data": reply["second_data"],
        }));
    }
    let pretty = |value: &Value| serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
    match unified_diff::unified(
        &format!("{config_type}:{first_revision}"),
        &pretty(&reply["first_data"]),
        &format!("{config_type}:{second_revision}"),
        &pretty(&reply["second_data"]),
    ) {
        Some(text) => print!("{}", colour(&text)),
        None => println!("No differences were found between the two revisions"),
    }
    Ok(())
}

/// Removed lines red, added green, hunk headers cyan — on a terminal only.
fn colour(text: &str) -> String {
    use std::io::IsTerminal;
    if !crate::cli::colour_wanted(std::io::stdout().is_terminal()) {
        return text.to_string();
    }
    text.lines()
        .map(|line| {
            let code = match line.as_bytes().first() {
                _ if line.starts_with("---") || line.starts_with("+++") => "1",
                Some(b'-') => "31",
                Some(b'+') => "32",
                Some(b'@') => "36",
                _ => return format!("{line}\n"),
            };
            format!("\x1b[{code}m{line}\x1b[0m\n")
        })
        .collect()
}

/// `list`: the revision in force of every config, by type.
pub async fn list(args: &ClientArgs, client: &Client) -> anyhow::Result<()> {
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string();
    let mut query: Vec<(&str, String)> = ConfigType::ALL
        .iter()
        .map(|config_type| ("config_types", config_type.as_str().to_string()))
        .collect();
    query.extend([
        ("omit_data", "true".to_string()),
        ("at_timestamp", now),
        ("limit", "1000".to_string()),
    ]);
    let reply = client
        .call(Method::GET, "/api/configs/history", &query, None)
        .await?;
    if args.format == OutputFormat::Json {
        return print_json(&reply);
    }
    let mut entries: Vec<&Value> = reply["configs"].as_array().into_iter().flatten().collect();
    if entries.is_empty() {
        println!("No configs have been set.");
        return Ok(());
    }
    entries.sort_by_key(|entry| (text_field(entry, "config_type"), text_field(entry, "name")));
    let mut table = output::table(&["Type", "Name", "Revision", "User", "Time"]);
    for entry in entries {
        table.add_row(super::revision_cells(entry));
    }
    print!("{}", output::render_table(&table));
    Ok(())
}

/// `set ROLE NAME pool|backend [--field BACKEND]`: OSMO's generated roles.
/// A pool role is named `osmo-<pool>` and allows `workflow:*` on the pool;
/// a backend role allows what an operator of that backend needs (Gantry's
/// `backend:Connect` for OSMO's `internal:Operator`).
pub fn generated_role(
    config_type: ConfigType,
    name: &str,
    role_type: &str,
    field: Option<&str>,
) -> anyhow::Result<Value> {
    if config_type != ConfigType::Role {
        anyhow::bail!("setting a {config_type} config is not supported (only ROLE)");
    }
    match (role_type.to_ascii_lowercase().as_str(), field) {
        ("pool", Some(_)) => {
            anyhow::bail!("--field: a pool role names its pool in NAME (osmo-<pool>)")
        }
        ("pool", None) => {
            let Some(pool) = name.strip_prefix("osmo-").filter(|pool| !pool.is_empty()) else {
                anyhow::bail!("a pool role's name must start with 'osmo-' (osmo-<pool>)");
            };
            Ok(json!({
                "name": name,
                "description": format!("Generated Role for pool {pool}"),
                "policies": [{"actions": ["workflow:*"], "resources": [format!("pool/{pool}*")]}],
            }))
        }
        ("backend", None) => anyhow::bail!("--field: a backend role needs the backend's name"),
        ("backend", Some(backend)) => Ok(json!({
            "name": name,
            "description": format!("Generated Role for backend {backend}"),
            "policies": [{
                "actions": ["backend:Connect", "pool:List", "config:Read"],
                "resources": [format!("backend/{backend}")],
            }],
        })),
        (other, _) => anyhow::bail!("unknown role type '{other}' (pool or backend)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_a_type_and_maybe_a_revision() {
        assert_eq!(parse_ref("pool:3").unwrap(), (ConfigType::Pool, Some(3)));
        assert_eq!(parse_ref("SERVICE").unwrap(), (ConfigType::Service, None));
        let error = parse_ref("POOL:0").unwrap_err().to_string();
        assert!(error.contains("whole number from 1"), "{error}");
        assert!(parse_ref("POOL:x").is_err());
        let error = parse_ref("NODES:2").unwrap_err().to_string();
        assert!(error.contains("unknown config type"), "{error}");
    }

    #[test]
    fn indexing_follows_keys_names_and_positions() {
        let data = json!({"a": {"b": [{"name": "x", "v": 1}, {"name": "y", "v": 2}]}});
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            index_into(data.clone(), &names(&["a", "b", "y", "v"])).unwrap(),
            2
        );
        assert_eq!(
            index_into(data.clone(), &names(&["a", "b", "0", "v"])).unwrap(),
            1
        );
        assert!(index_into(data.clone(), &names(&["a", "b", "7"])).is_err());
        let error = index_into(data, &names(&["c"])).unwrap_err().to_string();
        assert!(error.contains("keys: a"), "{error}");
    }

    #[test]
    fn generated_roles_are_osmos() {
        let role = generated_role(ConfigType::Role, "osmo-gpu", "pool", None).unwrap();
        assert_eq!(role["policies"][0]["resources"][0], "pool/gpu*");
        assert!(generated_role(ConfigType::Role, "gpu", "pool", None).is_err());
        let role = generated_role(ConfigType::Role, "op", "backend", Some("b1")).unwrap();
        assert_eq!(role["policies"][0]["resources"][0], "backend/b1");
        assert!(generated_role(ConfigType::Role, "op", "backend", None).is_err());
        assert!(generated_role(ConfigType::Pool, "op", "backend", Some("b")).is_err());
    }
}
