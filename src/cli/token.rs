//! `gantry token set|list|delete` and `gantry login`.
//!
//! Invariants: a new token's secret is printed once (`-t json`:
//! `{"token": ...}`, as OSMO's CLI) and never stored by the CLI; `login`
//! checks the URL, CA and token against the server before it writes the
//! config file (mode 0600).

use super::client::{encode_segment, Client};
use super::config::{default_config_path, write_config_file, ConfigFile, UrlList};
use super::output::{self, print_json, text_field, with_spinner};
use super::{ClientArgs, FormatArg, OutputFormat};
use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Create (or replace) an access token; its secret is shown once
    Set {
        /// Token name
        name: String,
        /// When it expires: YYYY-MM-DD (UTC) or an RFC 3339 time, or
        /// `never`; default: 31 days from today, as OSMO's CLI (a --service
        /// token: never)
        #[arg(short = 'e', long)]
        expires_at: Option<String>,
        #[arg(short = 'd', long, default_value = "")]
        description: String,
        /// A service account's token (e.g. for a backend operator); its user
        /// is --user, or the token's name
        #[arg(long)]
        service: bool,
        /// Roles (admin, user, backend or ROLE configs): comma-separated,
        /// several after one flag or the flag repeated; default: the
        /// caller's roles for its own tokens, `user` otherwise
        #[arg(short = 'r', long, value_delimiter = ',', num_args = 1..)]
        roles: Vec<String>,
        /// Create the token for this user (admins)
        #[arg(short = 'u', long)]
        user: Option<String>,
        #[command(flatten)]
        output: FormatArg,
    },
    /// List your tokens (with --service: every service token; admins)
    List {
        #[arg(long)]
        service: bool,
        /// List the tokens of this user (admins)
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Delete a token
    Delete {
        name: String,
        /// Delete a token of this user (admins)
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        output: FormatArg,
    },
}

impl TokenCommand {
    pub fn format(&self) -> OutputFormat {
        match self {
            TokenCommand::Set { output, .. }
            | TokenCommand::List { output, .. }
            | TokenCommand::Delete { output, .. } => output.format,
        }
    }
}

/// OSMO's CLI gives a personal token 31 days unless told otherwise.
const PERSONAL_TOKEN_DAYS: i64 = 31;

/// The `expires_at` to send: as given, none for `never`, else 31 days from
/// `today` for a personal token and none for a service account's (an
/// operator's token must not lapse unattended).
fn expiry(
    given: Option<String>,
    service: bool,
    today: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    match given {
        Some(text) if text.eq_ignore_ascii_case("never") => None,
        Some(text) => Some(text),
        None if service => None,
        None => Some(
            (today + chrono::Duration::days(PERSONAL_TOKEN_DAYS))
                .format("%Y-%m-%d")
                .to_string(),
        ),
    }
}

fn user_path(user: Option<&str>, rest: &str) -> String {
    match user {
        Some(user) => format!("/api/auth/user/{}/access_token{rest}", encode_segment(user)),
        None => format!("/api/auth/access_token{rest}"),
    }
}

pub async fn run_token(args: &ClientArgs, command: TokenCommand) -> anyhow::Result<()> {
    let client = Client::from_args(args)?;
    match command {
        TokenCommand::Set {
            name,
            expires_at,
            description,
            service,
            roles,
            user,
            ..
        } => {
            let user = user.or_else(|| service.then(|| name.clone()));
            let mut query = vec![("description", description)];
            if let Some(expires_at) = expiry(expires_at, service, chrono::Utc::now()) {
                query.push(("expires_at", expires_at));
            }
            if service {
                query.push(("service", "true".to_string()));
            }
            query.extend(roles.into_iter().map(|role| ("roles", role)));
            let path = user_path(user.as_deref(), &format!("/{}", encode_segment(&name)));
            let secret = client.call(Method::POST, &path, &query, None).await?;
            let secret = secret
                .as_str()
                .context("the server did not answer with the token")?;
            if args.format == OutputFormat::Json {
                return print_json(&json!({ "token": secret }));
            }
            println!("Token '{name}' (shown once; keep it safe):\n{secret}");
        }
        TokenCommand::List { service, user, .. } => {
            let query = if service {
                vec![("service", "true".to_string())]
            } else {
                Vec::new()
            };
            let tokens = with_spinner(
                args.format,
                "Listing tokens",
                client.call(Method::GET, &user_path(user.as_deref(), ""), &query, None),
            )
            .await?;
            if args.format == OutputFormat::Json {
                return print_json(&tokens);
            }
            print!("{}", render_tokens(&tokens));
        }
        TokenCommand::Delete { name, user, .. } => {
            let path = user_path(user.as_deref(), &format!("/{}", encode_segment(&name)));
            let reply = client.call(Method::DELETE, &path, &[], None).await?;
            if args.format == OutputFormat::Json {
                return print_json(&reply);
            }
            println!("Token '{name}' deleted");
        }
    }
    Ok(())
}

pub fn render_tokens(tokens: &Value) -> String {
    let Some(list) = tokens.as_array().filter(|list| !list.is_empty()) else {
        return "No tokens found.\n".to_string();
    };
    let mut table = output::table(&["Name", "User", "Roles", "Expires", "Service", "Description"]);
    for token in list {
        let roles = token["roles"]
            .as_array()
            .map(|roles| {
                roles
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        table.add_row(vec![
            text_field(token, "token_name"),
            text_field(token, "user_name"),
            roles,
            text_field(token, "expires_at"),
            text_field(token, "service"),
            text_field(token, "description"),
        ]);
    }
    output::render_table(&table)
}

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// The server's URL (https://HOST:8470)
    pub url: String,
    /// An access token (from `gantry token set`, or the bootstrap admin token)
    // A token is URL-safe base64 and may begin with `-`.
    #[arg(long, env = "GANTRY_TOKEN", allow_hyphen_values = true)]
    pub token: Option<String>,
    /// How to sign in: token (with --token), pkce (a browser; the default
    /// without a token) or device (a code to enter on another device), the
    /// last two through the server's identity provider
    #[arg(long, value_enum)]
    pub method: Option<super::sign_in::Method>,
    /// The CA certificate that signed the server's certificate
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The CA certificate of the identity provider's HTTPS, besides the
    /// system's roots
    #[arg(long, env = "GANTRY_IDP_CA")]
    pub idp_ca: Option<PathBuf>,
    /// The scopes asked of the identity provider
    #[arg(long, default_value = super::sign_in::DEFAULT_SCOPE)]
    pub scope: String,
    /// The loopback port the browser comes back to (pkce; 0: any free one)
    #[arg(long, default_value_t = 0)]
    pub callback_port: u16,
}

fn absolute(path: Option<PathBuf>) -> Option<PathBuf> {
    path.map(|path| std::path::absolute(&path).unwrap_or(path))
        .filter(|path| !path.as_os_str().is_empty())
}

/// `gantry login URL --token T [--ca FILE]`, or `--method pkce|device`
/// through the server's identity provider: checks the sign-in against the
/// server, then writes `$XDG_CONFIG_HOME/gantry/config.json` (0600).
pub async fn run_login(args: LoginArgs) -> anyhow::Result<()> {
    use super::sign_in::Method as SignIn;
    let ca = absolute(args.ca);
    let method = match (args.method, &args.token) {
        (Some(SignIn::Token) | None, Some(_)) => SignIn::Token,
        (Some(SignIn::Token), None) => {
            anyhow::bail!("--method token needs --token (or GANTRY_TOKEN)")
        }
        (Some(method), Some(_)) => {
            anyhow::bail!("--token signs in by itself: drop it to sign in with --method {method:?}")
        }
        (Some(method), None) => method,
        (None, None) => SignIn::Pkce,
    };
    let (token, idp) = match (method, args.token) {
        (SignIn::Token, Some(token)) => (Some(token), None),
        _ => {
            let info = Client::for_login(&args.url, "", ca.as_deref())?
                .without_token()
                .call(Method::GET, "/api/auth/login", &[], None)
                .await
                .with_context(|| format!("asking {} where to sign in", args.url))?;
            let login = super::sign_in::sign_in(
                method,
                &info,
                absolute(args.idp_ca),
                &args.scope,
                args.callback_port,
            )
            .await?;
            (None, Some(login))
        }
    };
    let bearer = token
        .clone()
        .or_else(|| idp.as_ref().map(|login| login.id_token.clone()))
        .unwrap_or_default();
    let client = Client::for_login(&args.url, &bearer, ca.as_deref())?;
    let profile = client
        .call(Method::GET, "/api/profile/settings", &[], None)
        .await
        .with_context(|| format!("logging in to {}", args.url))?;
    let path = default_config_path(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
    .context("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the login")?;
    write_config_file(
        &path,
        &ConfigFile {
            url: Some(UrlList::One(args.url.clone())),
            token,
            ca,
            idp,
        },
    )
    .with_context(|| format!("writing {}", path.display()))?;
    let roles = profile["roles"]
        .as_array()
        .map(|roles| {
            roles
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    println!(
        "Logged in to {} as {} (roles: {roles}); saved in {}",
        args.url,
        text_field(&profile["profile"], "username"),
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_token_that_begins_with_a_hyphen_is_a_token_not_a_flag() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            login: LoginArgs,
        }
        let parsed = <Cli as clap::Parser>::try_parse_from([
            "login",
            "https://gantry:8470",
            "--token",
            "-jq3b_Xy",
        ])
        .map(|cli| cli.login.token);
        assert_eq!(parsed.ok().flatten().as_deref(), Some("-jq3b_Xy"));
    }

    #[test]
    fn personal_tokens_last_31_days_unless_told_service_tokens_never() {
        let today = chrono::Utc.with_ymd_and_hms(2026, 12, 7, 10, 0, 0).unwrap();
        assert_eq!(expiry(None, false, today).as_deref(), Some("2027-01-07"));
        assert_eq!(expiry(None, true, today), None);
        assert_eq!(expiry(Some("never".into()), false, today), None);
        assert_eq!(
            expiry(Some("2030-01-01".into()), true, today).as_deref(),
            Some("2030-01-01")
        );
    }

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        token: TokenCommand,
    }

    #[test]
    fn osmos_short_flags_and_several_roles_after_one_flag() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "token",
            "set",
            "laptop",
            "-e",
            "2099-01-31",
            "-d",
            "mine",
            "-u",
            "bob",
            "-r",
            "a",
            "b",
            "-r",
            "c,d",
        ])
        .expect("parses");
        let TokenCommand::Set {
            name,
            expires_at,
            description,
            roles,
            user,
            ..
        } = cli.token
        else {
            panic!("not set");
        };
        assert_eq!(name, "laptop");
        assert_eq!(expires_at.as_deref(), Some("2099-01-31"));
        assert_eq!(description, "mine");
        assert_eq!(user.as_deref(), Some("bob"));
        assert_eq!(roles, ["a", "b", "c", "d"]);
    }
}
