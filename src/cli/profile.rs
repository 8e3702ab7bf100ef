//! `gantry profile list|set` (OSMO's `osmo profile`): who you are, your
//! roles and pools, and your saved preferences (the default pool that
//! `workflow submit` and `validate` use without `--pool`).

use super::client::Client;
use super::output::print_json;
use super::{ClientArgs, FormatArg, OutputFormat};
use reqwest::Method;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileSetting {
    /// The default pool
    Pool,
    /// Email or Slack notifications (Gantry sends none: only `false`)
    Notifications,
}

#[derive(clap::Subcommand, Debug)]
pub enum ProfileCommand {
    /// Show your profile
    List {
        #[command(flatten)]
        output: FormatArg,
    },
    /// Save a preference: `pool NAME`, or `notifications email|slack false`
    Set {
        #[arg(value_enum)]
        setting: ProfileSetting,
        /// The pool's name, or the kind of notification
        value: String,
        /// For notifications: true or false
        enabled: Option<bool>,
        #[command(flatten)]
        output: FormatArg,
    },
}

impl ProfileCommand {
    pub fn format(&self) -> OutputFormat {
        match self {
            ProfileCommand::List { output } | ProfileCommand::Set { output, .. } => output.format,
        }
    }
}

/// The body of a `set`, as OSMO's CLI sends it.
fn set_body(setting: ProfileSetting, value: &str, enabled: Option<bool>) -> anyhow::Result<Value> {
    Ok(match setting {
        ProfileSetting::Pool => json!({ "pool": value }),
        ProfileSetting::Notifications => match value {
            "email" => json!({ "email_notification": enabled.unwrap_or(true) }),
            "slack" => json!({ "slack_notification": enabled.unwrap_or(true) }),
            other => anyhow::bail!("invalid type of notification: {other}; must be email or slack"),
        },
    })
}

pub async fn run_profile(args: &ClientArgs, command: ProfileCommand) -> anyhow::Result<()> {
    let client = Client::from_args(args)?;
    match command {
        ProfileCommand::List { .. } => {
            let profile = client
                .call(Method::GET, "/api/profile/settings", &[], None)
                .await?;
            if args.format == OutputFormat::Json {
                return print_json(&profile);
            }
            print!("{}", render_profile(&profile));
        }
        ProfileCommand::Set {
            setting,
            value,
            enabled,
            ..
        } => {
            let body = set_body(setting, &value, enabled)?;
            let reply = client
                .call(Method::POST, "/api/profile/settings", &[], Some(&body))
                .await?;
            if args.format == OutputFormat::Json {
                return print_json(&reply);
            }
            println!("Profile set");
        }
    }
    Ok(())
}

/// OSMO's `profile list` text.
pub fn render_profile(profile: &Value) -> String {
    let saved = &profile["profile"];
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let mut out = format!(
        "user:\n  name: {}\nnotifications:\n  email: {}\n  slack: {}\npool:\n  default: {}\n  accessible:\n",
        text(&saved["username"]),
        text(&saved["email_notification"]),
        text(&saved["slack_notification"]),
        text(&saved["pool"]),
    );
    for pool in profile["pools"].as_array().into_iter().flatten() {
        out.push_str(&format!("    - {}\n", text(pool)));
    }
    if let Some(token) = profile["token"].as_object() {
        out.push_str(&format!(
            "token: {}\n  expires_at: {}\n",
            text(&token["name"]),
            text(&token["expires_at"])
        ));
    }
    out.push_str("roles:\n");
    for role in profile["roles"].as_array().into_iter().flatten() {
        out.push_str(&format!("  - {}\n", text(role)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_text_are_osmos() {
        assert_eq!(
            set_body(ProfileSetting::Pool, "robots", None).unwrap(),
            json!({"pool": "robots"})
        );
        assert_eq!(
            set_body(ProfileSetting::Notifications, "email", Some(false)).unwrap(),
            json!({"email_notification": false})
        );
        assert!(set_body(ProfileSetting::Notifications, "pager", None).is_err());
        let text = render_profile(&json!({
            "profile": {"username": "ann", "email_notification": false, "slack_notification": false, "pool": "robots"},
            "roles": ["user"], "pools": ["default", "robots"], "token": null,
        }));
        assert!(
            text.contains("default: robots\n  accessible:\n    - default\n    - robots\n"),
            "{text}"
        );
        assert!(text.contains("roles:\n  - user\n"), "{text}");
    }
}
