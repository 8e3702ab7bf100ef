//! `gantry user list|get|roles|create|update|delete|revoke` (OSMO's `osmo
//! user`): the users Gantry knows and the roles given to them (admins).
//!
//! Invariants: every verb is one or a few calls of `/api/auth/user...`;
//! `update` adds before it removes, so a role both added and removed ends
//! removed; nothing secret is printed (users and roles hold none).

use super::client::{encode_segment, Client};
use super::output::{self, print_json, text_field, with_spinner};
use super::{ClientArgs, FormatArg, OutputFormat};
use reqwest::Method;
use serde_json::{json, Value};

#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// List users, by name prefix and role
    List {
        /// Only users whose name starts with this
        #[arg(long, short = 'p')]
        id_prefix: Option<String>,
        /// Only users given any of these roles
        #[arg(long, short = 'r', num_args = 1..)]
        roles: Vec<String>,
        /// Users per page
        #[arg(long, short = 'c', default_value_t = 100)]
        count: u64,
        #[command(flatten)]
        output: FormatArg,
    },
    /// A user with the roles given to it
    Get {
        user: String,
        #[command(flatten)]
        output: FormatArg,
    },
    /// The roles given to a user
    Roles {
        user: String,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Create a user (a service account, or someone before their first sign-in)
    Create {
        user: String,
        /// Roles to give it
        #[arg(long, short = 'r', num_args = 1..)]
        roles: Vec<String>,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Give a user roles, or take them away
    Update {
        user: String,
        #[arg(long, short = 'a', num_args = 1..)]
        add_roles: Vec<String>,
        #[arg(long, short = 'r', num_args = 1..)]
        remove_roles: Vec<String>,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Delete a user with its access tokens, credentials and profile
    Delete {
        user: String,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Refuse every sign-in of a user issued until now (ID tokens and JWTs;
    /// its access tokens stay until deleted)
    Revoke {
        user: String,
        #[command(flatten)]
        output: FormatArg,
    },
}

impl UserCommand {
    pub fn format(&self) -> OutputFormat {
        match self {
            UserCommand::List { output, .. }
            | UserCommand::Get { output, .. }
            | UserCommand::Roles { output, .. }
            | UserCommand::Create { output, .. }
            | UserCommand::Update { output, .. }
            | UserCommand::Delete { output, .. }
            | UserCommand::Revoke { output, .. } => output.format,
        }
    }
}

fn user_path(user: &str) -> String {
    format!("/api/auth/user/{}", encode_segment(user))
}

pub async fn run_user(args: &ClientArgs, command: UserCommand) -> anyhow::Result<()> {
    let client = Client::from_args(args)?;
    let json_out = args.format == OutputFormat::Json;
    match command {
        UserCommand::List {
            id_prefix,
            roles,
            count,
            ..
        } => {
            let mut query = vec![("count", count.to_string())];
            query.extend(id_prefix.map(|prefix| ("id_prefix", prefix)));
            query.extend(roles.into_iter().map(|role| ("roles", role)));
            let reply = with_spinner(
                args.format,
                "Listing users",
                client.call(Method::GET, "/api/auth/user", &query, None),
            )
            .await?;
            if json_out {
                return print_json(&reply);
            }
            print!("{}", render_users(&reply));
        }
        UserCommand::Get { user, .. } => {
            let reply = client
                .call(Method::GET, &user_path(&user), &[], None)
                .await?;
            if json_out {
                return print_json(&reply);
            }
            print!("{}", render_user(&reply));
        }
        UserCommand::Roles { user, .. } => {
            let path = format!("{}/roles", user_path(&user));
            let reply = client.call(Method::GET, &path, &[], None).await?;
            if json_out {
                return print_json(&reply);
            }
            print!("{}", render_roles(&reply["roles"]));
        }
        UserCommand::Create { user, roles, .. } => {
            let mut body = json!({ "id": user });
            if !roles.is_empty() {
                body["roles"] = json!(roles);
            }
            let reply = client
                .call(Method::POST, "/api/auth/user", &[], Some(&body))
                .await?;
            if json_out {
                return print_json(&reply);
            }
            println!("User created: {}", text_field(&reply, "id"));
            if !roles.is_empty() {
                println!("Roles assigned: {}", roles.join(", "));
            }
        }
        UserCommand::Update {
            user,
            add_roles,
            remove_roles,
            ..
        } => {
            if add_roles.is_empty() && remove_roles.is_empty() {
                anyhow::bail!("nothing to update: give --add-roles and/or --remove-roles");
            }
            let roles_path = format!("{}/roles", user_path(&user));
            for role in &add_roles {
                let body = json!({ "role_name": role });
                client
                    .call(Method::POST, &roles_path, &[], Some(&body))
                    .await?;
                if !json_out {
                    println!("Added role: {role}");
                }
            }
            for role in &remove_roles {
                let path = format!("{roles_path}/{}", encode_segment(role));
                client.call(Method::DELETE, &path, &[], None).await?;
                if !json_out {
                    println!("Removed role: {role}");
                }
            }
            if json_out {
                let reply = client
                    .call(Method::GET, &user_path(&user), &[], None)
                    .await?;
                return print_json(&reply);
            }
        }
        UserCommand::Delete { user, .. } => {
            let reply = client
                .call(Method::DELETE, &user_path(&user), &[], None)
                .await?;
            if json_out {
                return print_json(&reply);
            }
            println!("User deleted: {user}");
        }
        UserCommand::Revoke { user, .. } => {
            let path = format!("{}/sessions/revoke", user_path(&user));
            let reply = client.call(Method::POST, &path, &[], None).await?;
            if json_out {
                return print_json(&reply);
            }
            println!(
                "Sign-ins of {user} issued before {} are refused.",
                text_field(&reply, "sessions_valid_from")
            );
        }
    }
    Ok(())
}

fn render_users(reply: &Value) -> String {
    let Some(users) = reply["users"].as_array().filter(|users| !users.is_empty()) else {
        return "No users found.\n".to_string();
    };
    let mut table = output::table(&["User", "Created", "Created By"]);
    for user in users {
        table.add_row(vec![
            text_field(user, "id"),
            text_field(user, "created_at"),
            text_field(user, "created_by"),
        ]);
    }
    format!(
        "Total users: {}\n{}",
        text_field(reply, "total_results"),
        output::render_table(&table)
    )
}

fn render_roles(roles: &Value) -> String {
    let Some(roles) = roles.as_array().filter(|roles| !roles.is_empty()) else {
        return "No roles given directly.\n".to_string();
    };
    let mut table = output::table(&["Role", "Assigned By", "Assigned At"]);
    for role in roles {
        table.add_row(vec![
            text_field(role, "role_name"),
            text_field(role, "assigned_by"),
            text_field(role, "assigned_at"),
        ]);
    }
    output::render_table(&table)
}

fn render_user(user: &Value) -> String {
    format!(
        "User: {}\nCreated: {} by {}\n{}",
        text_field(user, "id"),
        text_field(user, "created_at"),
        text_field(user, "created_by"),
        render_roles(&user["roles"])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_roles_render_as_tables() {
        let text = render_users(&json!({"total_results": 1, "users": [
            {"id": "alice", "created_at": "2026-12-07T10:00:00.000000", "created_by": "idp"}
        ]}));
        assert!(text.contains("alice") && text.contains("idp"), "{text}");
        assert_eq!(render_users(&json!({"users": []})), "No users found.\n");
        let text = render_user(
            &json!({"id": "bob", "created_at": "t", "created_by": "admin",
            "roles": [{"role_name": "team-a", "assigned_by": "admin", "assigned_at": "t"}]}),
        );
        assert!(text.contains("team-a") && text.contains("bob"), "{text}");
    }
}
