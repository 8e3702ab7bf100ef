//! `gantry pool list`: the pools the caller can submit to.
//!
//! Owns the rendering of OSMO's `MinimalPoolConfig {pools: {name: PoolMinimal}}`.
//! Invariant: rows are sorted by pool name, whatever order the server's JSON
//! object has, so the table is stable between calls.

use serde_json::Value;

use super::client::Client;
use super::output::{self, text_field, with_spinner};
use super::{ClientArgs, OutputFormat};

#[derive(clap::Subcommand, Debug)]
pub enum PoolCommand {
    /// List pools with their status and backend
    List {
        #[command(flatten)]
        output: super::FormatArg,
    },
}

pub async fn run_pool(args: &ClientArgs, command: PoolCommand) -> anyhow::Result<()> {
    let client = Client::from_args(args)?;
    match command {
        PoolCommand::List { .. } => {
            let response = with_spinner(args.format, "Listing pools", client.pools()).await?;
            if args.format == OutputFormat::Json {
                return output::print_json(&response);
            }
            print!("{}", render_pools(&response));
        }
    }
    Ok(())
}

pub fn render_pools(response: &Value) -> String {
    let Some(pools) = response.get("pools").and_then(Value::as_object) else {
        return "No pools found.\n".to_owned();
    };
    if pools.is_empty() {
        return "No pools found.\n".to_owned();
    }
    let mut entries: Vec<(&String, &Value)> = pools.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut table = output::table(&["Pool", "Status", "Backend", "Description"]);
    for (key, pool) in entries {
        // `name` defaults to "" in PoolMinimal; the map key is authoritative.
        let name = match pool.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => key.clone(),
        };
        table.add_row(vec![
            name,
            text_field(pool, "status"),
            text_field(pool, "backend"),
            text_field(pool, "description"),
        ]);
    }
    output::render_table(&table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pool_table_sorted_by_name() {
        let r = json!({"pools": {
            "gpu-h100": {"name": "gpu-h100", "description": "H100 nodes", "status": "ONLINE",
                         "backend": "k8s-prod", "default_platform": "dgx", "platforms": {}},
            "default": {"name": "", "description": "", "status": null, "backend": "local",
                        "platforms": {}}
        }});
        let expected = "\
Pool      Status  Backend   Description
---------------------------------------
default   -       local     -
gpu-h100  ONLINE  k8s-prod  H100 nodes
";
        assert_eq!(render_pools(&r), expected);
        assert_eq!(render_pools(&json!({"pools": {}})), "No pools found.\n");
    }
}
