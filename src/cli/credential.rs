//! `gantry credential set|list|delete` (OSMO's `osmo credential`): a
//! user's registry, data and generic credentials.
//!
//! Invariants: values come from `--payload key=value` or, for secrets that
//! should stay off the command line and out of shell history,
//! `--payload-file key=path` (the file's contents, one trailing line break
//! dropped, as OSMO's CLI reads them); the body is OSMO's envelope
//! (`{registry_credential}`, `{data_credential}`,
//! `{generic_credential: {credential}}`); no value is ever printed.

use super::client::{encode_segment, Client};
use super::output::{self, print_json, text_field, with_spinner};
use super::{ClientArgs, FormatArg, OutputFormat};
use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum CredentialType {
    /// A container registry: registry, username, auth
    Registry,
    /// An object store: endpoint, access_key_id, access_key (region,
    /// override_url, addressing_style)
    Data,
    /// Any keys and values, for a task's `credentials:`
    Generic,
}

#[derive(clap::Subcommand, Debug)]
pub enum CredentialCommand {
    /// Create or replace a credential
    Set {
        /// Credential name: a letter, then letters, digits, '-' or '_'
        name: String,
        /// The credential's type (OSMO's default: GENERIC)
        #[arg(long = "type", value_enum, default_value = "GENERIC")]
        kind: CredentialType,
        /// key=value pairs
        #[arg(long, num_args = 1.., required_unless_present = "payload_file", conflicts_with = "payload_file")]
        payload: Vec<String>,
        /// key=path pairs: the value is the file's contents
        #[arg(long, num_args = 1..)]
        payload_file: Vec<String>,
        #[command(flatten)]
        output: FormatArg,
    },
    /// List your credentials (names, types and profiles; never values)
    List {
        #[command(flatten)]
        output: FormatArg,
    },
    /// Delete a credential
    Delete {
        name: String,
        #[command(flatten)]
        output: FormatArg,
    },
}

impl CredentialCommand {
    pub fn format(&self) -> OutputFormat {
        match self {
            CredentialCommand::Set { output, .. }
            | CredentialCommand::List { output }
            | CredentialCommand::Delete { output, .. } => output.format,
        }
    }
}

/// The payload's key=value pairs, values read from files for `from_files`.
fn payload(pairs: &[String], from_files: bool) -> anyhow::Result<Map<String, Value>> {
    let mut values = Map::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("payload '{pair}': use key=value pairs");
        };
        if key.is_empty() || value.is_empty() {
            bail!("payload '{key}': keys and values must not be empty");
        }
        let value = if from_files {
            let text = std::fs::read_to_string(value)
                .with_context(|| format!("payload {key}: reading {value}"))?;
            text.trim_end_matches(['\r', '\n']).to_string()
        } else {
            value.to_string()
        };
        values.insert(key.to_string(), Value::String(value));
    }
    Ok(values)
}

/// OSMO's request envelope for one credential.
fn envelope(kind: CredentialType, mut values: Map<String, Value>) -> Value {
    match kind {
        CredentialType::Data => {
            if let Some(Value::String(endpoint)) = values.get_mut("endpoint") {
                *endpoint = endpoint.trim_end_matches('/').to_string();
            }
            json!({ "data_credential": values })
        }
        CredentialType::Registry => json!({ "registry_credential": values }),
        CredentialType::Generic => json!({ "generic_credential": { "credential": values } }),
    }
}

pub async fn run_credential(args: &ClientArgs, command: CredentialCommand) -> anyhow::Result<()> {
    let client = Client::from_args(args)?;
    match command {
        CredentialCommand::Set {
            name,
            kind,
            payload: pairs,
            payload_file,
            ..
        } => {
            let values = if payload_file.is_empty() {
                payload(&pairs, false)?
            } else {
                payload(&payload_file, true)?
            };
            let path = format!("/api/credentials/{}", encode_segment(&name));
            let reply = client
                .call(Method::POST, &path, &[], Some(&envelope(kind, values)))
                .await?;
            if args.format == OutputFormat::Json {
                return print_json(&reply);
            }
            let kind = match kind {
                CredentialType::Registry => "REGISTRY",
                CredentialType::Data => "DATA",
                CredentialType::Generic => "GENERIC",
            };
            println!("Set {kind} credential {name}.");
        }
        CredentialCommand::List { .. } => {
            let reply = with_spinner(
                args.format,
                "Listing credentials",
                client.call(Method::GET, "/api/credentials", &[], None),
            )
            .await?;
            if args.format == OutputFormat::Json {
                return print_json(&reply);
            }
            print!("{}", render_credentials(&reply));
        }
        CredentialCommand::Delete { name, .. } => {
            let path = format!("/api/credentials/{}", encode_segment(&name));
            let reply = client.call(Method::DELETE, &path, &[], None).await?;
            if args.format == OutputFormat::Json {
                return print_json(&reply);
            }
            println!("Deleted credential {name}.");
        }
    }
    Ok(())
}

pub fn render_credentials(reply: &Value) -> String {
    let Some(list) = reply["credentials"]
        .as_array()
        .filter(|list| !list.is_empty())
    else {
        return "No credentials found.\n".to_string();
    };
    let mut table = output::table(&["Name", "Type", "Profile"]);
    for credential in list {
        table.add_row(vec![
            text_field(credential, "cred_name"),
            text_field(credential, "cred_type"),
            match &credential["profile"] {
                Value::Null => "-".to_string(),
                _ => text_field(credential, "profile"),
            },
        ]);
    }
    output::render_table(&table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_osmos() {
        let values = payload(&["token=abc=def".to_string()], false).unwrap();
        assert_eq!(
            envelope(CredentialType::Generic, values),
            json!({"generic_credential": {"credential": {"token": "abc=def"}}})
        );
        let values = payload(
            &[
                "endpoint=s3://b/".to_string(),
                "access_key_id=a".to_string(),
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            envelope(CredentialType::Data, values)["data_credential"]["endpoint"],
            "s3://b"
        );
        assert!(payload(&["novalue".to_string()], false).is_err());
        assert!(payload(&["k=".to_string()], false).is_err());
    }

    #[test]
    fn payload_files_lose_their_last_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "hf_secret\n").unwrap();
        let values = payload(&[format!("token={}", file.display())], true).unwrap();
        assert_eq!(values["token"], "hf_secret");
    }

    #[test]
    fn the_table_shows_no_values() {
        let text = render_credentials(&json!({"credentials": [
            {"cred_name": "hf", "cred_type": "GENERIC", "profile": null},
            {"cred_name": "ngc", "cred_type": "REGISTRY", "profile": "nvcr.io"},
        ]}));
        assert!(text.contains("hf") && text.contains("nvcr.io"), "{text}");
        assert_eq!(
            render_credentials(&json!({"credentials": []})),
            "No credentials found.\n"
        );
    }
}
