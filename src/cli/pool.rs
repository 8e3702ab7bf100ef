//! `gantry pool list` (OSMO's `GET /api/pool_quota`: status, GPU quota and
//! capacity and use of every pool) and `gantry resource list` (OSMO's
//! `GET /api/resources`: every node with its allocatable resources and use,
//! under OSMO's names `cpu`, `memory`, `storage`, `gpu`).
//!
//! Invariant: rows are sorted by pool (or node) name, whatever order the
//! server's JSON has, so tables are stable between calls.

use serde_json::Value;

use super::client::Client;
use super::output::{self, text_field, with_spinner};
use super::{ClientArgs, OutputFormat};
use reqwest::Method;

#[derive(clap::Subcommand, Debug)]
pub enum PoolCommand {
    /// List pools with their status, backend, and capacity and use
    List {
        /// Only these pools (comma-separated)
        #[arg(long, short = 'p', value_delimiter = ',')]
        pools: Vec<String>,
        #[command(flatten)]
        output: super::FormatArg,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum ResourceCommand {
    /// List nodes with their allocatable resources and what runs on them
    List {
        /// Only nodes of these pools (comma-separated)
        #[arg(long, short = 'p', value_delimiter = ',')]
        pools: Vec<String>,
        /// Only nodes of these platforms (comma-separated)
        #[arg(long, value_delimiter = ',')]
        platforms: Vec<String>,
        #[command(flatten)]
        output: super::FormatArg,
    },
}

pub async fn run_pool(args: &ClientArgs, command: PoolCommand) -> anyhow::Result<()> {
    let client = Client::from_args(args)?;
    let PoolCommand::List { pools, .. } = command;
    let query: Vec<(&str, String)> = pools.into_iter().map(|pool| ("pools", pool)).collect();
    let response = with_spinner(
        args.format,
        "Listing pools",
        client.call(Method::GET, "/api/pool_quota", &query, None),
    )
    .await?;
    if args.format == OutputFormat::Json {
        return output::print_json(&response);
    }
    print!("{}", render_pools(&response));
    Ok(())
}

pub async fn run_resource(args: &ClientArgs, command: ResourceCommand) -> anyhow::Result<()> {
    let client = Client::from_args(args)?;
    let ResourceCommand::List {
        pools, platforms, ..
    } = command;
    let mut query: Vec<(&str, String)> = pools.into_iter().map(|pool| ("pools", pool)).collect();
    query.extend(
        platforms
            .into_iter()
            .map(|platform| ("platforms", platform)),
    );
    let response = with_spinner(
        args.format,
        "Listing resources",
        client.call(Method::GET, "/api/resources", &query, None),
    )
    .await?;
    if args.format == OutputFormat::Json {
        return output::print_json(&response);
    }
    print!("{}", render_resources(&response));
    Ok(())
}

/// `used/capacity` of one kind from `usage` and `capacity` objects.
fn used_of(usage: &Value, capacity: &Value, key: &str) -> String {
    let field = |value: &Value| match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "-".to_string(),
    };
    format!("{}/{}", field(usage), field(capacity))
}

pub fn render_pools(response: &Value) -> String {
    let mut pools: Vec<&Value> = response["node_sets"]
        .as_array()
        .map(|sets| {
            sets.iter()
                .flat_map(|set| set["pools"].as_array().into_iter().flatten())
                .collect()
        })
        .unwrap_or_default();
    if pools.is_empty() {
        return "No pools found.\n".to_owned();
    }
    pools.sort_by_key(|pool| text_field(pool, "name"));
    let mut table = output::table(&[
        "Pool",
        "Status",
        "Backend",
        "Nodes",
        "GPU quota used/limit",
        "GPU used/total",
        "CPU used/total",
        "Memory used/total",
    ]);
    for pool in pools {
        let quota = &pool["resource_usage"];
        table.add_row(vec![
            text_field(pool, "name"),
            text_field(pool, "status"),
            text_field(pool, "backend"),
            text_field(pool, "nodes"),
            format!(
                "{}/{}",
                text_field(quota, "quota_used"),
                text_field(quota, "quota_limit")
            ),
            format!(
                "{}/{}",
                text_field(quota, "total_usage"),
                text_field(quota, "total_capacity")
            ),
            used_of(&pool["usage"], &pool["capacity"], "cpu"),
            used_of(&pool["usage"], &pool["capacity"], "memory"),
        ]);
    }
    output::render_table(&table)
}

pub fn render_resources(response: &Value) -> String {
    let mut nodes: Vec<&Value> = response["resources"]
        .as_array()
        .map(|list| list.iter().collect())
        .unwrap_or_default();
    if nodes.is_empty() {
        return "No nodes found (no operator has reported its nodes yet).\n".to_owned();
    }
    nodes.sort_by_key(|node| text_field(node, "hostname"));
    let mut table = output::table(&[
        "Node",
        "Backend",
        "Pools",
        "CPU used/total",
        "Memory used/total",
        "Storage used/total",
        "GPU used/total",
        "Conditions",
    ]);
    for node in nodes {
        let (usage, allocatable) = (&node["usage_fields"], &node["allocatable_fields"]);
        let pools = node["pool_platform_labels"]
            .as_object()
            .map(|pools| pools.keys().cloned().collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        let conditions = node["conditions"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        table.add_row(vec![
            text_field(node, "hostname"),
            text_field(node, "backend"),
            pools,
            used_of(usage, allocatable, "cpu"),
            used_of(usage, allocatable, "memory"),
            used_of(usage, allocatable, "storage"),
            used_of(usage, allocatable, "gpu"),
            conditions,
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
        let r = json!({"node_sets": [{"pools": [
            {"name": "gpu-h100", "status": "ONLINE", "backend": "k8s-prod", "nodes": 2,
             "resource_usage": {"quota_used": "8", "quota_limit": "16", "total_usage": "8", "total_capacity": "16"},
             "usage": {"cpu": "32", "memory": "100Ki"}, "capacity": {"cpu": "128", "memory": "2000Ki"}},
            {"name": "default", "status": "OFFLINE", "backend": "local", "nodes": 1,
             "resource_usage": {"quota_used": "0", "quota_limit": "-", "total_usage": "0", "total_capacity": "0"},
             "usage": {"cpu": "0", "memory": "0Ki"}, "capacity": {"cpu": "2", "memory": "1024Ki"}}
        ]}]});
        let text = render_pools(&r);
        let default = text.find("default").unwrap();
        let gpu = text.find("gpu-h100").unwrap();
        assert!(default < gpu, "{text}");
        assert!(text.contains("32/128"), "{text}");
        assert!(text.contains("8/16"), "{text}");
        assert_eq!(render_pools(&json!({"node_sets": []})), "No pools found.\n");
    }

    #[test]
    fn resource_table() {
        let r = json!({"resources": [{"hostname": "n1", "backend": "local",
            "pool_platform_labels": {"default": [""]},
            "usage_fields": {"cpu": "1", "memory": "0Ki", "storage": "0Ki", "gpu": "0"},
            "allocatable_fields": {"cpu": "4", "memory": "8Ki", "storage": "9Ki", "gpu": "2"},
            "conditions": ["Ready"]}]});
        let text = render_resources(&r);
        assert!(
            text.contains("n1")
                && text.contains("1/4")
                && text.contains("0Ki/9Ki")
                && text.contains("0/2")
                && text.contains("Ready"),
            "{text}"
        );
    }
}
